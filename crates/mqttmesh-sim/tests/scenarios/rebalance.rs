//! Re-balancing: a node that hears only a full AP gets in when that AP's child moves.

use mqttmesh_core::node::Parent;
use mqttmesh_sim::ROUTER;

use super::*;

/// P=0 and Q=1 are roots. C1..C4 (2..=5) hear only P well and fill it; C1 also hears
/// Q (weaker). S=6 hears nothing but P. Without re-balancing S stays offline for good.
fn starved_by_a_full_parent(seed: u64) -> World {
    let mut edges = vec![(ROUTER, 0, -50), (ROUTER, 1, -50), (1, 2, -65), (0, 6, -60)];
    edges.extend((2..=5).map(|c| (0, c, -50)));
    let config = builder()
        .timing(Timing {
            uplink_grace: secs(3),
            ..timing()
        })
        .build()
        .expect("valid");
    let mut w = World::from_edges(7, &config, seed, &edges);
    hold_off(&mut w, &[2, 3, 4, 5, 6]);
    wait_for(&mut w, 20, "P and Q online", |w| {
        w.node(0).connected() && w.node(1).connected()
    });
    for c in 2..=5 {
        w.revive(c);
    }
    wait_for(&mut w, 30, "C1..C4 under P", |w| {
        w.node(0).children().count() == 4 && (2..=5).all(|c| w.node(c).connected())
    });
    w.revive(6);
    w
}

#[test]
fn a_node_hearing_only_a_full_ap_gets_in_when_a_child_makes_room() {
    for seed in [1, 2, 3] {
        let mut w = starved_by_a_full_parent(seed);
        wait_for(&mut w, 120, "S online", |w| w.node(6).connected());
        let p = w.node(0).id().clone();
        let q = w.node(1).id().clone();
        check(
            &w,
            matches!(w.node(6).parent(), Parent::Node { id, .. } if id == p),
            "S joined P",
        );
        check(
            &w,
            matches!(w.node(2).parent(), Parent::Node { id, .. } if id == q),
            "C1 moved to Q",
        );
        check(&w, w.node(2).counters().rebalance_moves == 1, "one move");
        check(&w, w.node(0).counters().rebalance_asks >= 1, "P asked");
        check(&w, w.node(6).counters().rebalance_knocks >= 1, "S knocked");
        let moves: u64 = (0..7).map(|i| w.node(i).counters().rebalance_moves).sum();
        check(&w, moves == 1, "nobody else moved");
        // Settles: everyone online, loop-free, nobody keeps moving.
        w.run_for(secs(120));
        check(&w, w.all_online(), "all seven online");
        check(
            &w,
            w.check_tree().is_ok(),
            &format!("loop-free tree: {:?}", w.check_tree()),
        );
        let invariants = w.check_invariants();
        check(
            &w,
            invariants.is_ok() && w.violation_count() == 0,
            &format!("invariants hold: {invariants:?}"),
        );
        let moves: u64 = (0..7).map(|i| w.node(i).counters().rebalance_moves).sum();
        check(&w, moves == 1, "no further moves once settled");
    }
}
