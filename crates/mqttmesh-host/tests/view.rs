//! `view::watch` against real brokers: the retained state of a large mesh arrives
//! whole (QoS 0 subscription: the embedded rumqttd replays only 100 retained messages
//! to a QoS 1 one), and the tree derived from it is the one published.
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mqttmesh_host::broker::EmbeddedBroker;
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::view::watch::{self, client_id, WatchOptions, Watcher};
use mqttmesh_host::view::MeshView;

const OUT: &str = "esp8266-out/";
const NODES: u32 = 60;
const WAIT: Duration = Duration::from_secs(20);

fn ap(i: u32) -> String {
    format!("02:00:00:00:{:02X}:{:02X}", i >> 8, i & 0xFF)
}

/// Retains a chain of `NODES` nodes, each below the previous one (the first on the
/// router): 420 retained messages.
async fn publish_chain(opts: &WatchOptions) {
    let mut client = Watcher::connect(opts, &[])
        .await
        .expect("publisher connects");
    for i in 0..NODES {
        let uplink = if i == 0 {
            "02:4D:45:53:48:01".to_string()
        } else {
            ap(i - 1)
        };
        for (sub, payload) in [
            ("available", "online".to_string()),
            ("reset_Reason", "Power on".to_string()),
            ("MAC", format!("06{}", &ap(i)[2..])),
            ("MAC_hosted_AP", ap(i)),
            ("IP_local", format!("10.0.{}.{}", i >> 8, i & 0xFF)),
            ("RSSI", "-60".to_string()),
            ("connectedTo", uplink),
        ] {
            let topic = format!("{OUT}{:06X}/info/{sub}", i + 1);
            client
                .publish(&topic, payload.as_bytes(), true)
                .await
                .expect("publish");
        }
    }
    client.flush(WAIT).await.expect("broker acknowledged");
    client.disconnect().await;
}

async fn chain_is_seen_whole(addr: SocketAddr) {
    let opts = |role| WatchOptions::new("127.0.0.1", addr.port(), &client_id(role));
    publish_chain(&opts("publisher")).await;
    let mut watcher = Watcher::connect(&opts("viewer"), &[format!("{OUT}#")])
        .await
        .expect("viewer connects");
    let mut view = MeshView::new(OUT);
    watch::settle(&mut watcher, &mut view, Duration::from_millis(500), WAIT)
        .await
        .expect("settles");
    let s = view.snapshot(Instant::now());
    assert_eq!(s.nodes, NODES as usize, "{:?}", s.stats);
    assert_eq!(s.stats.messages, u64::from(NODES) * 7);
    assert_eq!(s.online, NODES as usize);
    assert_eq!(s.max_depth as u32, NODES);
    for (i, n) in s.node_list.iter().enumerate() {
        let parent = if i == 0 {
            "router".to_string()
        } else {
            format!("{i:06X}")
        };
        assert_eq!(n.parent.as_deref(), Some(parent.as_str()), "{}", n.id);
        assert_eq!(n.depth, Some(i as u8 + 1));
        assert_eq!(n.last_seen_ms, None, "retained state is not a sighting");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_of_a_large_mesh_arrives_whole_from_the_embedded_broker() {
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("embedded broker starts");
    chain_is_seen_whole(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_state_of_a_large_mesh_arrives_whole_from_mosquitto() {
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    chain_is_seen_whole(broker.addr()).await;
}
