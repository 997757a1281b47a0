//! Faults: lost parents and relays, restarts, crashes, cut links, router outages, chaos.

use mqttmesh_core::node::Parent;
use mqttmesh_sim::ROUTER;

use super::*;

#[test]
fn restarted_relay_takes_its_subtree_back() {
    let mut w = World::line(4, &config(), 20);
    wait_for(&mut w, 40, "four nodes online", World::all_online);
    w.broker_publish(&format!("{IN}{}/Restart", w.id(1)), b"", false);
    wait_for(&mut w, 1, "the relay restart", |w| w.restarts(1) == 1);
    wait_for(&mut w, 1, "the subtree to drop", |w| !w.node(3).connected());
    wait_for(&mut w, 60, "the line back", World::all_online);
    check(&w, w.node(3).depth() == Some(4), "same shape again");
    check(&w, w.check_tree().is_ok(), "well-formed tree");
    for i in 1..4 {
        w.run_for(ms(100));
        let available = retained_text(&w, &out(&w, i, "info/available"));
        check(
            &w,
            available.as_deref() == Some("online"),
            "every node online again",
        );
    }
}

#[test]
fn ap_closes_on_upstream_loss_and_children_rejoin_elsewhere() {
    // A=0 and B=1 are roots; M=2 hears A well and B weakly; L=3 hears M, and B barely.
    let edges = [
        (ROUTER, 0, -50),
        (ROUTER, 1, -50),
        (0, 2, -60),
        (1, 2, -75),
        (2, 3, -60),
        (1, 3, -84),
    ];
    let (a, b, m, l) = (0, 1, 2, 3);
    let mut w = World::from_edges(4, &config(), 6, &edges);
    hold_off(&mut w, &[m, l]);
    wait_for(&mut w, 10, "roots online", |w| {
        w.node(a).connected() && w.node(b).connected()
    });
    w.revive(m);
    wait_for(&mut w, 10, "M online", |w| w.node(m).connected());
    w.revive(l);
    wait_for(&mut w, 10, "L online", |w| w.node(l).connected());
    let tree = w.tree();
    check(
        &w,
        tree[&w.id(m)] == w.id(a) && tree[&w.id(l)] == w.id(m),
        "A → M → L",
    );

    w.kill(a);
    let t0 = w.now();
    wait_for(&mut w, 1, "M to close its AP", |w| !w.node(m).ap_open());
    check(
        &w,
        w.now() - t0 <= ms(100),
        "M closed its AP as soon as its link closed",
    );
    wait_for(&mut w, 1, "L to lose its path", |w| !w.node(l).connected());
    check(
        &w,
        w.now() - t0 <= ms(100),
        "L noticed at once (its link closed)",
    );
    let a_available = out(&w, a, "info/available");
    wait_for(&mut w, 1, "A's last will", |w| {
        w.retained(&a_available).as_deref() == Some(b"offline")
    });
    wait_for(&mut w, 30, "the subtree to re-attach", World::all_online);
    let tree = w.tree();
    check(&w, tree[&w.id(m)] == w.id(b), "M moved to B");
    check(&w, w.check_tree().is_ok(), "well-formed tree");

    // Now lose the relay itself: its parent publishes `offline` on its behalf.
    w.kill(m);
    let m_available = out(&w, m, "info/available");
    wait_for(&mut w, 5, "offline for M", |w| {
        w.retained(&m_available).as_deref() == Some(b"offline")
    });
    let last = w
        .published(&m_available)
        .last()
        .cloned()
        .expect("published");
    assert_eq!(last.from, Some(b), "B's session published it");
    assert!(last.retain);
    wait_for(&mut w, 30, "L to re-attach to B", |w| {
        w.node(l).parent()
            == Parent::Node {
                id: w.node(b).id().clone(),
                bssid: w.node(b).ap_mac(),
            }
    });
    check(&w, w.check_tree().is_ok(), "well-formed tree");
}

#[test]
fn silently_cut_link_is_detected_by_keepalives() {
    let mut w = World::line(2, &config(), 12);
    wait_for(&mut w, 20, "both online", World::all_online);
    w.cut_link(0, 1);
    let t0 = w.now();
    wait_for(&mut w, 5, "the child to notice", |w| !w.node(1).connected());
    check(
        &w,
        w.now() - t0 >= ms(2000),
        "noticed by the link timeout, not by a close",
    );
    let available = out(&w, 1, "info/available");
    wait_for(&mut w, 5, "the parent to give the child up", |w| {
        w.retained(&available).as_deref() == Some(b"offline")
    });
    wait_for(&mut w, 30, "the child back", World::all_online);
    w.run_for(secs(1));
    assert_eq!(retained_text(&w, &available).as_deref(), Some("online"));
}

#[test]
fn router_outage_drops_roots_and_the_mesh_recovers() {
    let mut w = World::line(2, &config(), 13);
    wait_for(&mut w, 20, "both online", World::all_online);
    w.router_down();
    wait_for(&mut w, 1, "everyone offline", |w| {
        (0..2).all(|i| !w.node(i).connected())
    });
    let available = out(&w, 0, "info/available");
    wait_for(&mut w, 1, "the root's will", |w| {
        w.retained(&available).as_deref() == Some(b"offline")
    });
    w.run_for(secs(10));
    check(&w, !w.node(0).connected(), "no router, no root");
    w.router_up();
    wait_for(&mut w, 40, "everyone back", World::all_online);
    w.run_for(secs(1));
    let reason = retained_text(&w, &out(&w, 0, "info/reset_Reason"));
    assert_eq!(reason.as_deref(), Some("lost_Connection"));
    assert_eq!(retained_text(&w, &available).as_deref(), Some("online"));
}

#[test]
fn random_kills_and_revivals_always_reconverge() {
    random_kills_and_revivals(100..160, &config());
}

#[test]
fn random_kills_and_revivals_reconverge_with_children_held() {
    let held = builder()
        .timing(Timing {
            uplink_grace: secs(4),
            ..timing()
        })
        .build()
        .expect("valid");
    random_kills_and_revivals(200..240, &held);
}

fn random_kills_and_revivals(seeds: std::ops::Range<u64>, config: &Config) {
    for seed in seeds {
        let mut w = super::formation::grid(seed, config);
        wait_for(&mut w, 120, "initial formation", World::all_online);
        let mut rng = mqttmesh_core::rand::Rand::new(seed);
        for round in 0..10 {
            let victims: Vec<usize> = (0..1 + rng.below(6))
                .map(|_| rng.below(25) as usize)
                .collect();
            for &v in &victims {
                w.kill(v);
            }
            for _ in 0..rng.below(3) {
                let a = rng.below(25) as usize;
                if let mqttmesh_core::node::Parent::Node { id, .. } = w.node(a).parent() {
                    let p = w.find(id.as_str()).unwrap();
                    w.cut_link(a, p);
                }
            }
            if rng.below(4) == 0 {
                let r = rng.below(25) as usize;
                w.crash(r);
                w.revive(r);
            }
            if rng.below(4) == 0 {
                let r = rng.below(25) as usize;
                w.broker_publish(&format!("{IN}{}/Restart", w.id(r)), b"", false);
            }
            let outage = rng.below(6) == 0;
            if outage {
                w.router_down();
            }
            w.run_for(ms(rng.below(8000)));
            if outage {
                w.router_up();
            }
            for &v in &victims {
                w.revive(v);
            }
            wait_for(
                &mut w,
                120,
                &format!("seed {seed} round {round}: reconvergence"),
                World::all_online,
            );
            check(&w, w.check_tree().is_ok(), &format!("{:?}", w.check_tree()));
            w.run_for(secs(1));
            for i in 0..w.len() {
                let available = retained_text(&w, &out(&w, i, "info/available"));
                check(
                    &w,
                    available.as_deref() == Some("online"),
                    &format!("seed {seed} round {round}: node {i} retained {available:?}"),
                );
            }
        }
    }
}

#[test]
fn crashed_child_rejoins_its_full_parent_at_once() {
    // Realistic link timers: a rebooted child is back before its parent notices.
    let slow = Timing {
        keepalive_interval: secs(5),
        link_timeout: secs(15),
        ..timing()
    };
    let config = builder().timing(slow).build().expect("valid");
    let mut edges = vec![(ROUTER, 0, -50)];
    edges.extend((1..=4).map(|i| (0, i, -60)));
    let mut w = World::from_edges(5, &config, 21, &edges);
    wait_for(&mut w, 30, "P with four children", World::all_online);
    check(&w, w.node(0).children().count() == 4, "P is full");

    w.crash(4);
    w.revive(4);
    wait_for(&mut w, 10, "the rebooted child back", |w| {
        w.node(4).connected()
    });
    check(
        &w,
        w.node(4).counters().refused_parents == 0,
        "not refused by its own stale slot",
    );
    check(
        &w,
        w.node(0).children().count() == 4,
        "the stale slot was replaced",
    );
}

#[test]
fn rebooted_node_is_not_reported_offline_by_its_old_parent() {
    // Realistic link timers: a rebooted node is back long before its old parent notices.
    let slow = Timing {
        keepalive_interval: secs(5),
        link_timeout: secs(15),
        ..timing()
    };
    let config = builder().timing(slow).build().expect("valid");
    // P1=0 and P2=1 are roots; X=2 prefers P1.
    let edges = [(ROUTER, 0, -50), (ROUTER, 1, -50), (0, 2, -60), (1, 2, -70)];
    let (p1, p2, x) = (0, 1, 2);
    let mut w = World::from_edges(3, &config, 25, &edges);
    hold_off(&mut w, &[x]);
    wait_for(&mut w, 10, "roots online", |w| {
        w.node(p1).connected() && w.node(p2).connected()
    });
    w.revive(x);
    wait_for(&mut w, 10, "X online", |w| w.node(x).connected());
    check(&w, w.tree()[&w.id(x)] == w.id(p1), "X under P1");

    // X browns out and comes back out of P1's range.
    w.crash(x);
    w.set_rssi(p1, x, None);
    w.revive(x);
    wait_for(&mut w, 10, "X back under P2", |w| w.node(x).connected());
    check(&w, w.tree()[&w.id(x)] == w.id(p2), "X under P2");
    w.run_for(secs(30));
    check(&w, w.node(x).connected(), "X still online");
    let available = retained_text(&w, &out(&w, x, "info/available"));
    check(
        &w,
        available.as_deref() == Some("online"),
        &format!("broker says {available:?}"),
    );
}

#[test]
fn random_faults_with_realistic_link_timers_leave_a_truthful_broker() {
    let realistic = builder().timing(Timing::default()).build().expect("valid");
    for seed in 200..215u64 {
        let mut w = super::formation::grid(seed, &realistic);
        wait_for(&mut w, 300, "initial formation", World::all_online);
        let mut rng = mqttmesh_core::rand::Rand::new(seed);
        for round in 0..8 {
            let r = rng.below(25) as usize;
            match rng.below(3) {
                0 => {
                    w.crash(r);
                    w.run_for(ms(rng.below(3000)));
                    w.revive(r);
                }
                1 => {
                    w.kill(r);
                    w.run_for(ms(rng.below(3000)));
                    w.revive(r);
                }
                _ => {
                    if let Parent::Node { id, .. } = w.node(r).parent() {
                        let p = w.find(id.as_str()).expect("parent exists");
                        w.cut_link(r, p);
                    }
                }
            }
            // Silent faults take a link timeout to notice.
            w.run_for(secs(20));
            let what = format!("seed {seed} round {round}: reconvergence");
            wait_for(&mut w, 300, &what, |w| {
                w.all_online() && w.check_tree().is_ok()
            });
            // Within a link timeout or so, the broker tells the truth about everyone.
            let what = format!("seed {seed} round {round}: every node retained online");
            wait_for(&mut w, 30, &what, |w| {
                (0..w.len())
                    .all(|i| w.retained(&out(w, i, "info/available")).as_deref() == Some(b"online"))
            });
        }
    }
}
