//! Scenario tests: whole meshes in virtual time, named after the behaviour they pin.
//!
//! Every wait is a `run_until` with a virtual deadline; a failed wait or assertion prints
//! the seed, the tree and the last log lines of every node.

use mqttmesh_core::config::{Builder, Timing};
use mqttmesh_core::link::{Frame, JoinKey, JoinRequest, Transcript, MAX_FRAME};
use mqttmesh_core::{Config, Duration};
use mqttmesh_sim::{ProbeId, World, ROUTER_PASSWORD, ROUTER_SSID};

const IN: &str = "esp8266-in/";
const OUT: &str = "esp8266-out/";
const LOG_LINES: usize = 15;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Short node timers; the radio keeps its realistic defaults.
fn timing() -> Timing {
    Timing {
        scan_timeout: secs(5),
        associate_timeout: secs(3),
        connect_timeout: secs(2),
        keepalive_interval: secs(1),
        link_timeout: secs(3),
        retry_backoff: ms(500),
        mqtt_keepalive: secs(10),
        uplink_grace: Duration::ZERO,
        candidate_refresh: Duration::ZERO,
    }
}

fn builder() -> Builder {
    Config::builder()
        .network(ROUTER_SSID, ROUTER_PASSWORD)
        .timing(timing())
}

fn config() -> Config {
    builder().build().expect("valid test config")
}

/// Runs `w` until `cond` or `within` virtual seconds pass; fails with the world report.
#[track_caller]
fn wait_for(w: &mut World, within: u64, what: &str, cond: impl FnMut(&World) -> bool) {
    let deadline = w.within(secs(within));
    if !w.run_until(deadline, cond) {
        panic!(
            "timed out after {within}s waiting for {what}\n{}",
            w.report(LOG_LINES)
        );
    }
    if let Some(v) = w.violations().first() {
        panic!("{v} (waiting for {what})\n{}", w.report(LOG_LINES));
    }
}

/// Asserts `cond`, printing the world report otherwise.
#[track_caller]
fn check(w: &World, cond: bool, what: &str) {
    assert!(cond, "{what}\n{}", w.report(LOG_LINES));
}

fn out(w: &World, idx: usize, sub: &str) -> String {
    format!("{OUT}{}/{sub}", w.id(idx))
}

fn retained_text(w: &World, topic: &str) -> Option<String> {
    w.retained(topic)
        .map(|p| String::from_utf8(p).expect("UTF-8 payload"))
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| {
            p.len() == 2
                && p.chars()
                    .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
        })
}

fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_FRAME];
    let len = frame.encode(&mut buf).expect("frame fits");
    buf.truncate(len);
    buf
}

/// Plays a joining child `id` on `probe` by hand, proving with `key` (whatever the
/// parent's challenge says): the frames the probe received, decoded bodies, the last
/// one the parent's answer to the proof (or its refusal of the request).
fn probe_join(w: &mut World, probe: ProbeId, id: &str, key: &JoinKey) -> Vec<Vec<u8>> {
    let request = JoinRequest {
        nonce: [0x42; 16],
        node_id: id,
        chip_id: 0x0C0C0C,
        firmware_id: 0x1337,
        firmware_version: "0.1",
        subtree_height: 0,
    };
    w.probe_send(probe, &encode(&Frame::JoinRequest(request)));
    wait_for(w, 1, "the parent's challenge", |w| {
        !w.probe_frames(probe).is_empty() || w.probe_closed(probe)
    });
    let frames = w.probe_frames(probe);
    let Some(Ok(Frame::Challenge {
        nonce, parent_id, ..
    })) = frames.first().map(|f| Frame::decode(f))
    else {
        return frames;
    };
    let t = Transcript::new(&request, &nonce, parent_id).expect("valid request");
    let proof = encode(&Frame::Proof {
        tag: key.child_tag(&t),
    });
    w.probe_send(probe, &proof);
    wait_for(w, 1, "the parent's answer to the proof", |w| {
        w.probe_frames(probe).len() > 1 || w.probe_closed(probe)
    });
    w.probe_frames(probe)
}

/// The join key of nodes built from [`builder`] with `password`.
fn join_key(password: &str) -> JoinKey {
    let config = builder()
        .mesh_password(password)
        .build()
        .expect("valid test config");
    JoinKey::derive(&config.mesh_password, &config.mesh_ssid_base)
}

fn any_log(w: &World, idx: usize, needle: &str) -> bool {
    w.logs(idx).any(|l| l.contains(needle))
}

/// Kills `idxs` now so a test can power them on later, in a chosen order.
fn hold_off(w: &mut World, idxs: &[usize]) {
    for &i in idxs {
        w.kill(i);
    }
}

#[path = "scenarios/delivery.rs"]
mod delivery;
#[path = "scenarios/fault_kinds.rs"]
mod fault_kinds;
#[path = "scenarios/faults.rs"]
mod faults;
#[path = "scenarios/formation.rs"]
mod formation;
#[path = "scenarios/heal.rs"]
mod heal;
#[path = "scenarios/hostile.rs"]
mod hostile;
#[path = "scenarios/messaging.rs"]
mod messaging;
#[path = "scenarios/ota_routing.rs"]
mod ota_routing;
#[path = "scenarios/rebalance.rs"]
mod rebalance;
#[path = "scenarios/scale.rs"]
mod scale;
