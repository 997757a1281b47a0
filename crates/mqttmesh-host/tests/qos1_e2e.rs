//! End-to-end QoS 1 against a real Mosquitto: a deep node's counters survive the crash
//! of the relay it publishes through (`docs/PROTOCOL.md` "Outbox and
//! acknowledgements").
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::time::Duration;

use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::radio::Timing;
use mqttmesh_host::topology;
use mqttmesh_testkit as testkit;

const FORM: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);
const OUT: &str = "esp8266-out/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_node_qos1_counters_survive_a_relay_kill() {
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    let addr = broker.addr();
    let config = testkit::config(addr);
    let obs = Observer::start(addr, OUT, "qos1-e2e-observer")
        .await
        .expect("observer connects");
    let mesh = Mesh::start(MeshSpec {
        // Slow hops and frequent publications: messages are always in flight.
        timing: Timing {
            hop_latency: Duration::from_millis(150),
            ..Timing::fast()
        },
        seed: 41,
        publish_interval: Duration::from_millis(50),
        ..MeshSpec::new(topology::grid(12), config, addr)
    })
    .await
    .expect("nodes start");
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "not every node came online:\n{}",
        render_tree(&mesh.rows())
    );

    // The deepest node and the relay above it.
    let statuses = mesh.statuses();
    let deep = statuses
        .iter()
        .max_by_key(|s| s.depth)
        .expect("nodes")
        .clone();
    assert!(
        deep.depth.unwrap_or(0) >= 3,
        "grid should put a node at depth 3:\n{}",
        render_tree(&mesh.rows())
    );
    let relay_id = deep.parent.clone().expect("a parent");
    let relay = statuses
        .iter()
        .position(|s| s.id == relay_id)
        .expect("the parent is a node");
    let deep_idx = statuses
        .iter()
        .position(|s| s.id == deep.id)
        .expect("the deep node");
    let before = mesh.statuses()[deep_idx].published;
    assert!(
        mesh.wait_for(WAIT, |m| m.statuses()[deep_idx].published >= before + 5)
            .await,
        "the deep node publishes"
    );

    let c = mesh.statuses()[deep_idx].counters;
    mesh.kill(relay);
    assert!(
        c.outbox_sent > c.acked + c.outbox_superseded,
        "messages in flight when the relay died: {c:?}"
    );
    assert!(
        mesh.wait_for(WAIT, |m| !m.statuses()[deep_idx].online)
            .await,
        "the deep node notices the relay is gone"
    );
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "the subtree re-attaches:\n{}",
        render_tree(&mesh.rows())
    );
    let after = mesh.statuses()[deep_idx].published;
    assert!(
        mesh.wait_for(WAIT, |m| m.statuses()[deep_idx].published >= after + 5)
            .await,
        "the deep node publishes again"
    );
    mesh.set_publishing(false);

    // Everything the deep node accepted arrives, including what was in flight through
    // the dead relay.
    let status = |m: &Mesh| m.statuses()[deep_idx].clone();
    let arrived = obs
        .wait_for(WAIT, |o| {
            let s = status(&mesh);
            o.delivered_from(&deep.id) == s.published && s.counters.outbox_sent > 0
        })
        .await;
    let s = status(&mesh);
    assert!(
        arrived,
        "{} published {}, delivered {}; counters {:?}",
        deep.id,
        s.published,
        obs.delivered_from(&deep.id),
        s.counters
    );
    eprintln!(
        "{}: {} published, all delivered; {} duplicates seen by the observer",
        deep.id,
        s.published,
        obs.duplicates()
    );
}
