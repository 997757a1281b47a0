//! Scenario tests: whole meshes in virtual time, named after the behaviour they pin.
//!
//! Every wait is a `run_until` with a virtual deadline; a failed wait or assertion prints
//! the seed, the tree and the last log lines of every node.

use mqttmesh_core::config::{Builder, Timing};
use mqttmesh_core::link::{Frame, MAX_FRAME};
use mqttmesh_core::{Config, Duration};
use mqttmesh_sim::{World, ROUTER_PASSWORD, ROUTER_SSID};

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
#[path = "scenarios/faults.rs"]
mod faults;
#[path = "scenarios/formation.rs"]
mod formation;
#[path = "scenarios/hostile.rs"]
mod hostile;
#[path = "scenarios/messaging.rs"]
mod messaging;
