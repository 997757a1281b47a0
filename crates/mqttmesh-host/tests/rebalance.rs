//! Re-balancing end to end over real TCP on loopback, against a real Mosquitto started
//! by the test: a latecomer that hears only a full AP knocks, the emulated radio turns
//! it away and tells the AP's node, which asks a child to move to another AP with room;
//! the latecomer then joins (docs/PROTOCOL.md "Re-balancing"). The placement is the one
//! of the virtual simulator's scenario (`crates/mqttmesh-sim/tests/scenarios/rebalance.rs`).
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::time::Duration;

use mqttmesh_core::config::{Config, Timing as NodeTiming};
use mqttmesh_core::Duration as CoreDuration;
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::radio::{Placement, Timing};

/// Roots.
const P: usize = 0;
const Q: usize = 1;
/// P's children; C1 also hears Q.
const C1: usize = 2;
const CHILDREN: [usize; 4] = [2, 3, 4, 5];
/// The latecomer: it hears nothing but P.
const S: usize = 6;

const WAIT: Duration = Duration::from_secs(30);

/// P and Q hear the router; C1..C4 hear P well (and C1 hears Q, weaker); S hears only P.
fn starved_by_a_full_parent() -> Placement {
    let mut edges = vec![(Q, C1, -65), (P, S, -60)];
    edges.extend(CHILDREN.iter().map(|&c| (P, c, -50)));
    Placement::Graph {
        nodes: 7,
        router: vec![(P, -50), (Q, -50)],
        edges,
    }
}

/// Kills `nodes` and waits until their tasks are gone (so a later revive cannot race
/// the old task's cleanup of the radio).
async fn hold_off(mesh: &Mesh, nodes: &[usize]) {
    for &i in nodes {
        mesh.kill(i);
    }
    assert!(
        mesh.wait_for(WAIT, |m| {
            let st = m.statuses();
            nodes.iter().all(|&i| !st[i].alive)
        })
        .await,
        "held-off nodes stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_hearing_only_a_full_ap_gets_in_when_a_child_makes_room() {
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    let config = Config::builder()
        .firmware(0x1337, "0.1")
        .network("mqttmesh-router", "router-password")
        .broker("127.0.0.1", broker.addr().port())
        // C1 holds no children: it need not wait long before re-joining.
        .timing(NodeTiming {
            uplink_grace: CoreDuration::from_secs(3),
            ..NodeTiming::fast()
        })
        .build()
        .expect("test configuration is valid");
    let spec = MeshSpec {
        timing: Timing::fast(),
        seed: 11,
        ..MeshSpec::new(starved_by_a_full_parent(), config, broker.addr())
    };
    assert_eq!(spec.config.max_children, 4, "C1..C4 fill P");
    let mut mesh = Mesh::start(spec).await.expect("nodes start");
    let tree = |m: &Mesh| render_tree(&m.rows());

    // P and Q first, then C1..C4 fill P, then S comes late.
    hold_off(&mesh, &[C1, 3, 4, 5, S]).await;
    assert!(
        mesh.wait_for(WAIT, |m| {
            let st = m.statuses();
            st[P].online && st[Q].online
        })
        .await,
        "P and Q online:\n{}",
        tree(&mesh)
    );
    // C1 first, so it holds P's first child slot: the one P asks first (round robin).
    // The others only hear P and would decline, costing an ask interval each.
    mesh.revive(C1).await.expect("revive");
    assert!(
        mesh.wait_for(WAIT, |m| m.statuses()[C1].online).await,
        "C1 under P:\n{}",
        tree(&mesh)
    );
    for c in &CHILDREN[1..] {
        mesh.revive(*c).await.expect("revive");
    }
    assert!(
        mesh.wait_for(WAIT, |m| {
            let st = m.statuses();
            st[P].children.len() == 4 && CHILDREN.iter().all(|&c| st[c].online)
        })
        .await,
        "C1..C4 under P:\n{}",
        tree(&mesh)
    );
    mesh.revive(S).await.expect("revive");

    // P must have been full for 10 s (FULL_FOR) and turn S away twice before it asks;
    // S knocks on P about every 10 s (KNOCK_REST): ≈11 s expected.
    assert!(
        mesh.wait_for(Duration::from_secs(60), |m| m.statuses()[S].online)
            .await,
        "S gets in:\n{}\nP {:?}\nS {:?}",
        tree(&mesh),
        mesh.statuses()[P].counters,
        mesh.statuses()[S].counters
    );
    let st = mesh.statuses();
    let (p, q) = (mesh.node_id(P), mesh.node_id(Q));
    assert_eq!(st[S].parent.as_deref(), Some(p.as_str()), "S joined P");
    assert_eq!(st[C1].parent.as_deref(), Some(q.as_str()), "C1 moved to Q");
    assert!(
        st[P].counters.stations_refused >= 2,
        "P turned S away twice: {:?}",
        st[P].counters
    );
    assert!(
        st[P].counters.rebalance_asks >= 1,
        "P asked a child to move"
    );
    assert!(st[S].counters.rebalance_knocks >= 2, "S knocked");
    assert_eq!(st[C1].counters.rebalance_moves, 1, "C1 moved once");
    let moves: u64 = st.iter().map(|s| s.counters.rebalance_moves).sum();
    assert_eq!(moves, 1, "nobody else moved");
    assert!(
        mesh.wait_for(WAIT, Mesh::all_online).await,
        "all seven online:\n{}",
        tree(&mesh)
    );
}
