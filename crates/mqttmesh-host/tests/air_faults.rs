//! Faults on the emulated air, end to end over real TCP on loopback: a cut parent link,
//! frame loss, added hop latency and a node moving (what `mqttmesh sim --fault` does in
//! the real-socket sim). In each the mesh heals and every QoS 1 demo message arrives;
//! the cut runs against a real Mosquitto started by the test, the others against the
//! embedded broker.
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use mqttmesh_core::config::{Config, Timing as NodeTiming};
use mqttmesh_core::Duration as CoreDuration;
use mqttmesh_host::broker::EmbeddedBroker;
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::radio::{Model, Timing};
use mqttmesh_host::topology;

const FORM: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(20);
const OUT: &str = "esp8266-out/";

async fn start(broker: SocketAddr, nodes: usize, name: &str) -> (Mesh, Observer) {
    let config = Config::builder()
        .firmware(0x1337, "0.1")
        .network("mqttmesh-router", "router-password")
        .broker(&broker.ip().to_string(), broker.port())
        // A silent link is noticed within 2 s.
        .timing(NodeTiming {
            link_timeout: CoreDuration::from_millis(2000),
            ..NodeTiming::fast()
        })
        .build()
        .expect("test configuration is valid");
    let observer = Observer::start(broker, OUT, &format!("air-faults-{name}"))
        .await
        .expect("observer connects");
    let mesh = Mesh::start(MeshSpec {
        // A line: node i's only parent candidate is node i - 1 (node 0 is the root).
        placement: topology::line(nodes),
        model: Model::default(),
        timing: Timing::fast(),
        config,
        broker,
        mqtt_trust: Default::default(),
        mesh_tls: None,
        seed: 5,
        publish_interval: Duration::from_millis(100),
        ota: None,
        firmware_ids: Vec::new(),
    })
    .await
    .expect("nodes start");
    assert!(
        mesh.wait_for(FORM, healed).await,
        "the line forms:\n{}",
        render_tree(&mesh.rows())
    );
    (mesh, observer)
}

/// Every node online over a consistent tree (each parent lists its child) whose links
/// all carry traffic.
fn healed(mesh: &Mesh) -> bool {
    let statuses = mesh.statuses();
    let by_id: HashMap<&str, usize> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    mesh.radio().air().broken_parents().is_empty()
        && statuses.iter().all(|s| {
            s.online
                && match s.parent.as_deref() {
                    Some("router") => true,
                    Some(p) => by_id
                        .get(p)
                        .is_some_and(|&i| statuses[i].children.contains(&s.id)),
                    None => false,
                }
        })
}

/// Waits until every node has published `more` demo messages beyond now.
async fn publishes(mesh: &Mesh, more: u64) {
    let from: Vec<u64> = mesh.statuses().iter().map(|s| s.published).collect();
    assert!(
        mesh.wait_for(WAIT, |m| m
            .statuses()
            .iter()
            .zip(&from)
            .all(|(s, f)| s.published >= f + more))
            .await,
        "every node publishes:\n{}",
        render_tree(&mesh.rows())
    );
}

/// Stops the demo app and waits until every message each node published has arrived.
async fn nothing_lost(mesh: &Mesh, observer: &Observer) {
    mesh.set_publishing(false);
    let missing = |o: &Observer| -> Vec<(String, u64, u64)> {
        mesh.statuses()
            .into_iter()
            .filter(|s| o.delivered_from(&s.id) != s.published)
            .map(|s| (s.id.clone(), s.published, o.delivered_from(&s.id)))
            .collect()
    };
    let arrived = observer.wait_for(WAIT, |o| missing(o).is_empty()).await;
    assert!(
        arrived,
        "QoS 1 messages lost (node, published, delivered): {:?}\n{}",
        missing(observer),
        render_tree(&mesh.rows())
    );
}

/// The index of the node with this ID.
fn index(mesh: &Mesh, id: &str) -> usize {
    mesh.statuses()
        .iter()
        .position(|s| s.id == id)
        .expect("a node with that ID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_link_goes_silent_then_the_child_rejoins_and_nothing_is_lost() {
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    let (mesh, observer) = start(broker.addr(), 4, "cut").await;
    publishes(&mesh, 3).await;
    let child = 2;
    let parent_id = mesh.statuses()[child].parent.clone().expect("a parent");
    let parent = index(&mesh, &parent_id);

    assert_eq!(mesh.cut(parent, child), 2, "both ends of the link break");
    assert!(
        !healed(&mesh),
        "a cut link carries nothing, though both ends still believe in it"
    );
    // Nothing tells the child: its keep-alives notice, it leaves and rejoins.
    assert!(
        mesh.wait_for(WAIT, |m| !m.statuses()[child].online).await,
        "the child notices the silent link"
    );
    assert!(
        mesh.wait_for(WAIT, healed).await,
        "the mesh heals:\n{}",
        render_tree(&mesh.rows())
    );
    publishes(&mesh, 3).await;
    nothing_lost(&mesh, &observer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_loss_delays_but_loses_no_message() {
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("embedded broker starts");
    let (mesh, observer) = start(broker.addr(), 4, "loss").await;
    let air = mesh.radio().air().clone();
    let resent = air.resent();
    mesh.set_loss(0.3);
    publishes(&mesh, 5).await;
    assert!(air.resent() > resent, "frames were lost and resent");
    mesh.set_loss(0.0);
    assert!(
        mesh.wait_for(WAIT, healed).await,
        "the mesh is whole:\n{}",
        render_tree(&mesh.rows())
    );
    nothing_lost(&mesh, &observer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_latency_keeps_order_and_loses_no_message() {
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("embedded broker starts");
    let (mesh, observer) = start(broker.addr(), 4, "latency").await;
    mesh.set_hop_latency(Duration::from_millis(120));
    assert_eq!(mesh.radio().air().hop_latency(), Duration::from_millis(120));
    publishes(&mesh, 5).await;
    // Back to the profile's latency while frames are still queued behind the slow ones:
    // none may overtake (a reordered link stream would be garbage to the node).
    mesh.set_hop_latency(Timing::fast().hop_latency);
    publishes(&mesh, 3).await;
    assert!(
        mesh.wait_for(WAIT, healed).await,
        "the mesh is whole:\n{}",
        render_tree(&mesh.rows())
    );
    let malformed: u64 = mesh.statuses().iter().map(|s| s.counters.malformed).sum();
    assert_eq!(malformed, 0, "frames arrived whole and in order");
    nothing_lost(&mesh, &observer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moved_node_loses_its_out_of_range_parent_and_joins_near_the_router() {
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("embedded broker starts");
    let (mesh, observer) = start(broker.addr(), 4, "move").await;
    publishes(&mesh, 3).await;
    // The last node of the line (depth 4) moves next to the router, out of range of
    // its parent: that link breaks; later scans see the router.
    let last = 3;
    assert_eq!(
        mesh.statuses()[last].depth,
        Some(4),
        "{}",
        render_tree(&mesh.rows())
    );
    let moved = mesh
        .move_node(last, 10.0, 0.0)
        .expect("a positional topology");
    assert!(!moved.lost_router);
    assert_eq!(moved.lost_peers, vec![2], "the parent is out of range");
    assert_eq!(mesh.radio().position(last), Some((10.0, 0.0)));
    assert!(mesh.radio().rssi_router(last).is_some());
    assert!(
        mesh.wait_for(WAIT, |m| healed(m)
            && m.statuses()[last].parent.as_deref() == Some("router"))
            .await,
        "the moved node joins the router directly:\n{}",
        render_tree(&mesh.rows())
    );
    // The first root moves just out of the router's range (35 m: -86 dBm): it loses
    // the router, and its broker connection, at once; it still hears its child and
    // the new root, and joins below that one, its child still below it.
    let root_id = mesh.statuses()[0].id.clone();
    let moved = mesh.move_node(0, 35.0, 0.0).expect("a positional topology");
    assert!(moved.lost_router, "the root no longer hears the router");
    assert!(moved.lost_peers.is_empty(), "its child is still in range");
    assert!(
        mesh.wait_for(WAIT, |m| healed(m)
            && m.statuses()[0].parent.as_deref()
                == Some(m.statuses()[last].id.as_str())
            && m.statuses()[1].parent.as_deref() == Some(root_id.as_str()))
            .await,
        "the old root joins below the new one:\n{}",
        render_tree(&mesh.rows())
    );
    publishes(&mesh, 3).await;
    nothing_lost(&mesh, &observer).await;
}
