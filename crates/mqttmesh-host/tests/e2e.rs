//! End to end: an emulated mesh over real TCP on loopback against a real Mosquitto
//! started by the test on a free port, and the same suite against the embedded broker.
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::net::SocketAddr;
use std::time::Duration;

use mqttmesh_host::broker::EmbeddedBroker;
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::radio::Timing;
use mqttmesh_host::topology;
use mqttmesh_testkit as testkit;

const NODES: usize = 24;
const FORM: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);
const OUT: &str = "esp8266-out/";
const IN: &str = "esp8266-in/";

async fn start(broker: SocketAddr, seed: u64) -> (Mesh, Observer) {
    start_with(broker, seed, topology::grid(NODES), Timing::fast()).await
}

async fn start_with(
    broker: SocketAddr,
    seed: u64,
    placement: mqttmesh_host::radio::Placement,
    timing: Timing,
) -> (Mesh, Observer) {
    let observer = Observer::start(broker, OUT, &format!("e2e-observer-{seed}"))
        .await
        .expect("observer connects");
    let mesh = Mesh::start(MeshSpec {
        timing,
        seed,
        publish_interval: Duration::from_millis(500),
        ..MeshSpec::new(placement, testkit::config(broker), broker)
    })
    .await
    .expect("nodes start");
    (mesh, observer)
}

fn is_mac(s: &str) -> bool {
    s.len() == 17
        && s.split(':').count() == 6
        && s.split(':').all(|p| {
            p.len() == 2
                && p.chars()
                    .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
        })
}

fn text(v: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&v.unwrap_or_default()).into_owned()
}

/// The whole suite on one mesh, in order.
async fn suite(broker: SocketAddr, seed: u64) {
    let (mut mesh, obs) = start(broker, seed).await;
    let formed = mesh.wait_for(FORM, |m| m.all_online()).await;
    assert!(
        formed,
        "not every node came online:\n{}",
        render_tree(&mesh.rows())
    );
    let rows = mesh.rows();
    let max_depth = rows.iter().filter_map(|r| r.depth).max().unwrap_or(0);
    assert!(
        max_depth >= 4,
        "mesh should be at least 4 deep:\n{}",
        render_tree(&rows)
    );
    for s in mesh.statuses() {
        assert!(
            s.children.len() <= 4,
            "{} has {} children",
            s.id,
            s.children.len()
        );
    }

    // Retained info topics, in compat.md formats.
    let ids: Vec<String> = (0..NODES).map(|i| mesh.node_id(i)).collect();
    let all_info = obs
        .wait_for(WAIT, |o| {
            ids.iter()
                .all(|id| o.retained(&format!("{OUT}{id}/info/connectedTo")).is_some())
        })
        .await;
    assert!(all_info, "info topics missing for some nodes");
    for id in &ids {
        let get = |sub: &str| text(obs.retained(&format!("{OUT}{id}/info/{sub}")));
        assert_eq!(get("available"), "online", "{id}");
        assert_eq!(get("reset_Reason"), "Power on", "{id}");
        assert!(is_mac(&get("MAC")), "{id} MAC {:?}", get("MAC"));
        assert!(is_mac(&get("MAC_hosted_AP")), "{id}");
        assert!(is_mac(&get("connectedTo")), "{id}");
        assert!(
            get("IP_local").parse::<std::net::Ipv4Addr>().is_ok(),
            "{id} IP {:?}",
            get("IP_local")
        );
        let rssi: i32 = get("RSSI").parse().unwrap_or(0);
        assert!((-100..0).contains(&rssi), "{id} RSSI {rssi}");
    }
    let mesh_connects = obs.messages(|t| t == format!("{OUT}connect"));
    assert!(
        mesh_connects
            .iter()
            .any(
                |m| String::from_utf8_lossy(&m.payload).starts_with("Connected ChipID:")
                    && m.payload.ends_with(b" mesh")
            ),
        "no `connect` message from a mesh node"
    );

    // The deepest node's counter arrives.
    let deepest = rows
        .iter()
        .max_by_key(|r| r.depth)
        .map(|r| r.id.clone())
        .unwrap_or_default();
    let topic = format!("{OUT}{deepest}/counter");
    assert!(
        obs.wait_for(WAIT, |o| !o.messages(|t| t == topic).is_empty())
            .await,
        "no counter from the deepest node {deepest}"
    );

    // Addressed delivery reaches that node only.
    let before: Vec<u64> = mesh.statuses().iter().map(|s| s.received).collect();
    obs.publish(&format!("{IN}{deepest}/led"), b"on", false)
        .await
        .expect("publish");
    let led = format!("{OUT}{deepest}/led");
    assert!(
        obs.wait_for(WAIT, |o| o
            .messages(|t| t == led)
            .iter()
            .any(|m| m.payload == b"on"))
            .await,
        "{deepest} did not switch its LED on"
    );
    // Broadcast reaches everyone; once it has, the addressed message is known to be
    // counted wherever it was delivered (same path, earlier).
    obs.publish(&format!("{IN}broadcast/hello"), b"all", false)
        .await
        .expect("publish");
    let everyone = mesh
        .wait_for(WAIT, |m| {
            m.statuses()
                .iter()
                .zip(&before)
                .all(|(s, b)| s.received > *b)
        })
        .await;
    assert!(everyone, "broadcast did not reach every node");
    for (s, b) in mesh.statuses().iter().zip(&before) {
        let expected = if s.id == deepest { 2 } else { 1 };
        assert_eq!(
            s.received - b,
            expected,
            "{} received {} messages",
            s.id,
            s.received - b
        );
    }

    // `fw` is answered by every node.
    obs.publish(&format!("{IN}fw/query"), b"", false)
        .await
        .expect("publish");
    let answered = obs
        .wait_for(WAIT, |o| {
            ids.iter()
                .all(|id| !o.messages(|t| t == format!("{OUT}{id}/fw")).is_empty())
        })
        .await;
    assert!(answered, "not every node answered fw");
    for m in obs.messages(|t| t.ends_with("/fw")) {
        let line = String::from_utf8_lossy(&m.payload).into_owned();
        assert!(
            line.starts_with("ChipID:") && line.contains(" FirmwareID:1337 v0.1 IP:"),
            "fw line {line:?}"
        );
    }

    // Kill a relay below the root: its subtree re-attaches, it turns offline.
    let rows = mesh.rows();
    let relay = rows
        .iter()
        .filter(|r| r.depth >= Some(2) && !r.children.is_empty())
        .min_by_key(|r| r.depth)
        .expect("a relay below the root")
        .clone();
    let relay_index = (0..NODES)
        .find(|&i| mesh.node_id(i) == relay.id)
        .expect("relay index");
    mesh.kill(relay_index);
    let healed = mesh
        .wait_for(FORM, |m| {
            let st = m.statuses();
            !st[relay_index].alive
                && st.iter().all(|s| s.id == relay.id || s.online)
                && st
                    .iter()
                    .filter(|s| relay.children.contains(&s.id))
                    .all(|s| s.parent.as_deref() != Some(relay.id.as_str()))
        })
        .await;
    assert!(
        healed,
        "subtree of {} did not re-attach:\n{}",
        relay.id,
        render_tree(&mesh.rows())
    );
    let offline = format!("{OUT}{}/info/available", relay.id);
    assert!(
        obs.wait_for(WAIT, |o| text(o.retained(&offline)) == "offline")
            .await,
        "{} not reported offline",
        relay.id
    );
    for child in &relay.children {
        let row = mesh
            .rows()
            .into_iter()
            .find(|r| &r.id == child)
            .expect("child row");
        assert_ne!(
            row.parent.as_deref(),
            Some(relay.id.as_str()),
            "{child} still below the dead relay"
        );
    }

    // Power it back on: it rejoins and says so.
    mesh.revive(relay_index).await.expect("revive");
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "revived relay did not rejoin"
    );
    assert!(
        obs.wait_for(WAIT, |o| text(o.retained(&offline)) == "online")
            .await,
        "revived relay not online again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_end_to_end_on_mosquitto() {
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    suite(broker.addr(), 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_end_to_end_on_embedded_broker() {
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("embedded broker starts");
    suite(broker.addr(), 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_narrow_links_still_deliver_everything() {
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    let timing = Timing {
        loss: 0.3,
        bandwidth_bps: 200_000,
        ..Timing::fast()
    };
    let (mesh, obs) = start_with(broker.addr(), 21, topology::line(5), timing).await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "lossy line did not form:\n{}",
        render_tree(&mesh.rows())
    );
    assert!(
        mesh.wait_for(WAIT, |m| m.published() >= 20).await,
        "nodes did not publish"
    );
    mesh.set_publishing(false);
    // Everything the nodes accepted arrives (TCP resends what the air lost).
    let delivered = obs
        .wait_for(WAIT, |o| o.delivered() == mesh.published())
        .await;
    assert!(
        delivered,
        "published {}, delivered {}",
        mesh.published(),
        obs.delivered()
    );
    assert_eq!(obs.duplicates(), 0);
}
