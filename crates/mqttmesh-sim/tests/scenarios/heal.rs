//! Healing after a relay crash: an orphan holds its subtree and re-attaches to an
//! alternative its background scans found (`docs/PROTOCOL.md` "Healing").

use mqttmesh_core::node::{Parent, State};
use mqttmesh_sim::ROUTER;

use super::*;

/// R (root) has two children: relay A and B. C hangs off A (it hears B, weaker), G
/// off C (it hears nobody else).
const R: usize = 0;
const A: usize = 1;
const B: usize = 2;
const C: usize = 3;
const G: usize = 4;

fn world(refresh: Duration) -> World {
    let edges = [
        (ROUTER, R, -50),
        (R, A, -55),
        (R, B, -60),
        (A, C, -50),
        (B, C, -75),
        (C, G, -50),
    ];
    world_with(secs(6), refresh, &edges)
}

/// Five nodes heard as `edges` say, with this grace period and background scan interval.
fn world_with(grace: Duration, refresh: Duration, edges: &[(usize, usize, i8)]) -> World {
    let config = builder()
        .timing(Timing {
            uplink_grace: grace,
            candidate_refresh: refresh,
            ..timing()
        })
        .build()
        .expect("valid");
    World::from_edges(5, &config, 7, edges)
}

fn parent_of(w: &World, idx: usize) -> Option<usize> {
    match w.node(idx).parent() {
        Parent::Node { id, .. } => w.find(id.as_str()),
        _ => None,
    }
}

#[test]
fn orphan_reattaches_from_its_cache_with_its_subtree_and_loses_nothing() {
    let mut w = world(secs(10));
    wait_for(&mut w, 60, "formation", World::all_online);
    check(&w, parent_of(&w, C) == Some(A), "C joined A (the stronger)");
    check(&w, parent_of(&w, G) == Some(C), "G joined C");
    check(&w, parent_of(&w, B) == Some(R), "B joined R");
    w.start_app(secs(1));
    // Long enough for C's first background scan (10 s + up to 25 % jitter).
    w.run_for(secs(15));
    check(
        &w,
        any_log(&w, C, "background scan"),
        "C refreshed its cache",
    );
    let scans_before = w.logs(C).filter(|l| l.contains(" scan: ")).count();

    w.crash(A);
    wait_for(&mut w, 30, "C back through B, G through C", |w| {
        parent_of(w, C) == Some(B) && w.node(G).connected() && parent_of(w, G) == Some(C)
    });
    check(
        &w,
        w.logs(C).filter(|l| l.contains(" scan: ")).count() == scans_before,
        "C re-attached from its cache, without a scan",
    );
    check(&w, any_log(&w, C, "keeping children"), "C held its child");
    check(
        &w,
        any_log(&w, G, "parent resumed"),
        "G was resumed, not re-joined",
    );
    check(
        &w,
        w.node(G).counters().refused_parents == 0 && !any_log(&w, G, "re-joining"),
        "G never left C",
    );
    w.run_for(secs(5));
    w.set_publishing(false);
    w.run_for(secs(10));
    let stats = w.message_stats();
    // Only what the crashed relay itself had not delivered is gone.
    let survivors_lost = stats.lost - w.messages_lost_by(A);
    check(
        &w,
        survivors_lost == 0 && stats.duplicates == 0,
        &format!("no QoS 1 message of a survivor lost or duplicated: {stats:?}"),
    );
}

#[test]
fn orphan_with_a_stale_cache_scans_at_once_and_keeps_its_subtree() {
    // No background scans: C's cache is its formation scan, older than the age up to
    // which an orphan trusts it.
    let mut w = world(Duration::ZERO);
    wait_for(&mut w, 60, "formation", World::all_online);
    check(&w, parent_of(&w, C) == Some(A), "C joined A");
    // Past the cache's maximum age.
    w.run_for(mqttmesh_core::node::CANDIDATE_MAX_AGE + secs(1));
    w.crash(A);
    wait_for(&mut w, 30, "C back through B, G through C", |w| {
        parent_of(w, C) == Some(B) && w.node(G).connected() && parent_of(w, G) == Some(C)
    });
    check(
        &w,
        any_log(&w, C, "0 cached candidate(s)"),
        "the stale cache was not used",
    );
    check(
        &w,
        any_log(&w, G, "parent resumed"),
        "G was resumed, not re-joined",
    );
    check(&w, w.node(G).state() == State::Mesh, "G online");
}

#[test]
fn held_child_leaves_a_relay_that_cannot_get_back_for_an_ap_with_a_path() {
    // R (root) has children A and B; P hangs off A and hears nobody else; C hangs off
    // P and also hears B, weakly. When A dies, P has nowhere to go and holds C for its
    // whole grace period: C looks around and leaves for B instead of waiting it out.
    const P: usize = 3;
    const C: usize = 4;
    let edges = [
        (ROUTER, R, -50),
        (R, A, -55),
        (R, B, -60),
        (A, P, -50),
        (P, C, -50),
        (B, C, -80),
    ];
    let mut w = world_with(secs(20), secs(30), &edges);
    // C comes last, so it finds P's AP open.
    hold_off(&mut w, &[C]);
    wait_for(&mut w, 60, "R, A, B, P online", |w| {
        (0..C).all(|i| w.node(i).connected())
    });
    w.revive(C);
    wait_for(&mut w, 60, "formation", World::all_online);
    check(&w, parent_of(&w, C) == Some(P), "C joined P (the stronger)");
    w.crash(A);
    wait_for(&mut w, 10, "P holding C", |w| {
        w.node(C).state() == State::Held
    });
    let held_at = w.now();
    wait_for(&mut w, 10, "C online through B", |w| {
        w.node(C).connected() && parent_of(w, C) == Some(B)
    });
    let took = w.now().saturating_since(held_at);
    check(
        &w,
        took <= mqttmesh_core::node::HELD_SCAN_INTERVAL + secs(2),
        &format!("C left within a held scan and an association, not P's 20 s grace ({took})"),
    );
    check(&w, w.node(C).counters().escapes == 1, "one escape counted");
    check(&w, !w.node(P).connected(), "P is still stuck");
}
