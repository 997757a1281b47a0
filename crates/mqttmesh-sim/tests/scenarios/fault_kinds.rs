//! One test per fault kind of `mqttmesh sim --fault`: the mesh heals (every node the
//! radio connects to the router has a real path to the broker again), invariants hold
//! throughout, and the demo app's messages are accounted for.

use mqttmesh_core::node::Parent;
use mqttmesh_sim::{Pos, SimTiming};

use super::scale::random_world;
use super::*;

const N: usize = 40;

/// A formed 40-node mesh running the demo app.
fn formed(seed: u64) -> World {
    let mut w = random_world(N, seed, &config());
    w.start_app(secs(1));
    wait_for(&mut w, 120, "formation", World::all_online);
    w.run_for(secs(3));
    w
}

fn healed(w: &mut World) -> bool {
    let reach = w.reachable();
    w.all_online_of(&reach)
}

/// Waits for the heal, then checks the invariants.
#[track_caller]
fn heals(w: &mut World, within: u64, what: &str) {
    // `wait_for` checks the cheap believed state; the heal needs real paths.
    let deadline = w.within(secs(within));
    let mut ok = false;
    while w.now() < deadline {
        w.run_for(ms(100));
        if healed(w) {
            ok = true;
            break;
        }
    }
    check(w, ok, &format!("healed after {what}"));
    if let Err(e) = w.check_invariants() {
        panic!("{e}\n{}", w.report(LOG_LINES));
    }
}

/// A node with children and a node parent.
fn relay(w: &World) -> usize {
    (0..w.len())
        .find(|&i| {
            w.node(i).children().next().is_some()
                && matches!(w.node(i).parent(), Parent::Node { .. })
        })
        .expect("a relay below a root")
}

#[test]
fn crashed_relay_heals() {
    let mut w = formed(41);
    let r = relay(&w);
    w.crash(r);
    let h = healed(&mut w);
    check(&w, !h, "a silent crash leaves orphans at first");
    heals(&mut w, 30, "a relay crash");
    w.revive(r);
    heals(&mut w, 30, "the relay's return");
}

#[test]
fn restarted_relay_heals() {
    let mut w = formed(42);
    let r = relay(&w);
    w.restart(r, "Restart");
    heals(&mut w, 30, "a relay restart");
}

#[test]
fn cut_link_heals() {
    let mut w = formed(43);
    let r = relay(&w);
    let Parent::Node { id, .. } = w.node(r).parent() else {
        unreachable!("relay() picks nodes below a root");
    };
    let p = w.find(id.as_str()).expect("the parent exists");
    w.cut_link(p, r);
    let h = healed(&mut w);
    check(&w, !h, "a cut link leaves the subtree without a path");
    heals(&mut w, 30, "a cut link");
}

#[test]
fn router_outage_heals() {
    let mut w = formed(44);
    w.router_down();
    w.run_for(secs(10));
    check(
        &w,
        w.online_count() == 0,
        "nobody online without the router",
    );
    w.router_up();
    heals(&mut w, 60, "a router outage");
}

#[test]
fn broker_restart_heals() {
    let mut w = formed(45);
    let before = w.message_stats();
    w.broker_stop(false);
    w.run_for(secs(5));
    check(
        &w,
        w.online_count() == 0,
        "nobody online without the broker",
    );
    w.broker_start();
    heals(&mut w, 60, "a broker restart");
    w.run_for(secs(3));
    let after = w.message_stats();
    check(
        &w,
        after.delivered > before.delivered,
        "messages flow again",
    );
}

#[test]
fn loss_and_latency_slow_but_do_not_break_the_mesh() {
    let mut w = formed(46);
    let normal = w.timing();
    w.set_timing(SimTiming {
        loss_ppm: 100_000,
        hop_latency: ms(80),
        ..normal
    });
    w.run_for(secs(20));
    check(&w, w.resent() > 0, "frames were lost and resent");
    w.set_timing(normal);
    heals(&mut w, 30, "loss and latency");
    let stats = w.message_stats();
    w.set_publishing(false);
    w.run_for(secs(5));
    let settled = w.message_stats();
    check(
        &w,
        settled.delivered >= stats.delivered && settled.lost == 0,
        "lossy hops resend: nothing lost",
    );
}

#[test]
fn moved_node_heals() {
    let mut w = formed(47);
    let r = relay(&w);
    let far = Pos::new(-500.0, -500.0);
    w.move_node(r, far);
    heals(&mut w, 30, "a relay moving out of range");
    let reach = w.reachable();
    check(&w, !reach[r], "the moved node is out of reach");
    w.move_node(r, Pos::new(5.0, 0.0));
    heals(&mut w, 30, "the node moving back next to the router");
}

#[test]
fn invariant_sweep_flags_an_ap_left_open_without_a_path() {
    let mut w = World::line(2, &config(), 31);
    wait_for(&mut w, 30, "both online", World::all_online);
    // With no grace at all, a silently cut uplink leaves node 1's AP open without a
    // path until its keep-alives notice: the sweep must see that.
    w.set_invariant_grace(Duration::ZERO);
    w.cut_link(0, 1);
    w.run_for(secs(2));
    let v = w.violations().first().expect("a violation is reported");
    assert_eq!(v.node, 1, "{v}");
    assert!(v.what.contains("without a path"), "{v}");
    assert!(v.to_string().contains("seed 31"), "{v}");
}

/// Seeded random topologies and fault schedules: every fault heals and no invariant
/// breaks. A failure names the seed (in the world report) to replay it.
#[test]
fn random_fault_schedules_heal_without_violations() {
    use mqttmesh_core::rand::Rand;
    for seed in 100..106 {
        let mut w = random_world(50, seed, &config());
        w.start_app(secs(1));
        wait_for(&mut w, 120, "formation", World::all_online);
        let mut rng = Rand::new(seed);
        for step in 0..4 {
            let kind = rng.below(6);
            // Cannot truncate: below(len) < len.
            let node = rng.below(w.len() as u64) as usize;
            match kind {
                0 => w.crash(node),
                1 => w.restart(node, "Restart"),
                2 => {
                    if let Parent::Node { id, .. } = w.node(node).parent() {
                        if let Some(p) = w.find(id.as_str()) {
                            w.cut_link(p, node);
                        }
                    }
                }
                3 => {
                    w.router_down();
                    w.run_for(secs(5));
                    w.router_up();
                }
                4 => {
                    w.broker_stop(false);
                    w.run_for(secs(3));
                    w.broker_start();
                }
                _ => {
                    let to = Pos::new(rng.below(60) as f64 - 30.0, rng.below(60) as f64 - 30.0);
                    w.move_node(node, to);
                }
            }
            heals(
                &mut w,
                90,
                &format!("seed {seed}, step {step}, fault kind {kind}"),
            );
        }
    }
}
