//! Hostile and broken input: loops, garbage frames, strangers, other meshes, half frames.

use mqttmesh_core::link::{Path, Reason};
use mqttmesh_core::node::{AssocError, LinkId, State};
use mqttmesh_core::MsgType;
use mqttmesh_sim::ROUTER;

use super::*;

#[test]
fn loop_is_refused() {
    let mut w = World::line(2, &config(), 7);
    hold_off(&mut w, &[1]);
    wait_for(&mut w, 10, "root online", |w| w.node(0).connected());
    w.revive(1);
    // Its join request and its proof sent: the parent's real JoinAccept is in flight.
    wait_for(&mut w, 10, "the child to prove itself to the parent", |w| {
        w.node(1).state() == State::Joining && w.node(1).counters().frames_out >= 2
    });

    // A parent whose path contains the child itself: accepting would make a loop.
    let mut path = Path::new();
    path.push(w.node(1).id().clone()).expect("room");
    path.push(w.node(0).id().clone()).expect("room");
    let bytes = encode(&Frame::JoinAccept { path });
    w.inject(1, LinkId::Parent, &bytes);

    check(
        &w,
        w.node(1).counters().refused_parents == 1,
        "loop counted as refused parent",
    );
    check(
        &w,
        !w.node(1).connected(),
        "the child did not go online through a loop",
    );
    check(
        &w,
        any_log(&w, 1, "joining node is on the parent's path"),
        "logged as a loop",
    );
    w.run_for(secs(1));
    assert_eq!(
        w.node(0).children().count(),
        0,
        "the parent saw the child leave"
    );
    wait_for(
        &mut w,
        60,
        "the child to join properly later",
        World::all_online,
    );
    assert_eq!(w.node(1).depth(), Some(2));
    assert_eq!(w.node(1).counters().refused_parents, 1);
}

#[test]
fn malformed_frames_close_the_link_and_are_counted() {
    let edges = [(ROUTER, 0, -50), (0, 1, -60), (0, 2, -60)];
    let mut w = World::from_edges(3, &config(), 9, &edges);
    wait_for(&mut w, 20, "all online", World::all_online);
    let b_connects = w.node(2).counters().connects;

    // Garbage: a well-delimited frame of unknown type.
    let link = w.child_link(0, 1).expect("A is linked to P");
    w.inject(0, link, &[0x00, 0x03, 0xEE, 0x01, 0x02]);
    check(&w, w.node(0).counters().malformed == 1, "garbage counted");
    wait_for(&mut w, 1, "A to lose its link", |w| !w.node(1).connected());
    wait_for(&mut w, 20, "A back", |w| w.node(1).connected());

    // An oversized header: refused before anything is buffered.
    let link = w.child_link(0, 1).expect("A is linked again");
    w.inject(0, link, &[0xFF, 0xFF, 0x00]);
    check(
        &w,
        w.node(0).counters().malformed == 2,
        "oversized header counted",
    );
    wait_for(&mut w, 1, "A to lose its link", |w| !w.node(1).connected());

    // A stranger that publishes before joining.
    let probe = w.connect_probe(0);
    let publish = encode(&Frame::Publish {
        id: 0,
        origin: "EVIL",
        msg_type: MsgType::Qos0,
        topic: "esp8266-out/evil",
        payload: b"x",
    });
    w.probe_send(probe, &publish);
    wait_for(&mut w, 1, "the stranger to be closed", |w| {
        w.probe_closed(probe)
    });
    check(
        &w,
        w.node(0).counters().malformed == 3,
        "out-of-protocol frame counted",
    );
    assert!(
        w.published("esp8266-out/evil").is_empty(),
        "nothing relayed for it"
    );

    // A stranger that says nothing is dropped once the join times out.
    let silent = w.connect_probe(0);
    check(&w, !w.probe_closed(silent), "accepted at first");
    wait_for(&mut w, 3, "the silent stranger to be dropped", |w| {
        w.probe_closed(silent)
    });
    check(
        &w,
        w.node(0).counters().rejected_joins >= 1,
        "stalled join counted",
    );

    wait_for(&mut w, 20, "all online again", World::all_online);
    let p = w.node(0);
    check(
        &w,
        p.connected() && p.counters().connects == 1,
        "P survived",
    );
    check(
        &w,
        w.node(2).counters().connects == b_connects,
        "B was never disturbed",
    );
    check(&w, w.child_link(0, 2).is_some(), "B still linked to P");
    w.broker_publish(&format!("{IN}{}/still", w.id(2)), b"ok", false);
    wait_for(&mut w, 1, "B still served", |w| !w.messages(2).is_empty());
}

#[test]
fn parent_vanishing_mid_frame_is_survived() {
    // P1=0 and P2=1 are roots; C=2 prefers P1.
    let edges = [(ROUTER, 0, -50), (ROUTER, 1, -50), (0, 2, -60), (1, 2, -70)];
    let mut w = World::from_edges(3, &config(), 10, &edges);
    hold_off(&mut w, &[2]);
    wait_for(&mut w, 10, "roots online", |w| {
        w.node(0).connected() && w.node(1).connected()
    });
    w.revive(2);
    wait_for(&mut w, 10, "C online", |w| w.node(2).connected());
    check(&w, w.tree()[&w.id(2)] == w.id(0), "C under P1");

    // P1 starts a large frame and dies after the first 50 bytes of it.
    let topic = format!("{IN}{}/big", w.id(2));
    let payload: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
    let frame = encode(&Frame::Deliver {
        topic: &topic,
        payload: &payload,
    });
    w.inject(2, LinkId::Parent, &frame[..50]);
    w.kill(0);
    wait_for(&mut w, 1, "C to lose P1", |w| !w.node(2).connected());
    wait_for(&mut w, 20, "C back through P2", |w| w.node(2).connected());
    check(&w, w.tree()[&w.id(2)] == w.id(1), "C under P2");

    w.broker_publish(&topic, &payload, false);
    wait_for(&mut w, 1, "the message through the new parent", |w| {
        !w.messages(2).is_empty()
    });
    assert_eq!(w.messages(2).len(), 1);
    assert_eq!(
        w.messages(2)[0].payload,
        payload,
        "no leftover bytes of the old frame"
    );
    assert_eq!(w.node(2).counters().malformed, 0);
}

#[test]
fn wrong_mesh_password_cannot_join() {
    let edges = [(ROUTER, 0, -50), (0, 1, -60)];
    let mut w = World::graph(11);
    for (a, b, rssi) in edges {
        w.set_rssi(a, b, Some(rssi));
    }
    let p = w.add_node(config());
    let stranger = w.add_node(
        builder()
            .mesh_password("othermeshpw")
            .build()
            .expect("valid"),
    );
    w.run_for(secs(30));
    check(&w, w.node(p).connected(), "P online");
    check(
        &w,
        w.node(stranger).counters().connects == 0,
        "the stranger never came online",
    );
    assert_eq!(w.node(p).children().count(), 0);
    // Its key does not recognise P's BSSID, and P's AP would not take its password.
    let bssid = w.node(p).ap_mac();
    assert_eq!(
        w.check_association(stranger, bssid, "othermeshpw"),
        Err(AssocError::AuthFailed)
    );
    assert!(w
        .check_association(stranger, bssid, "ESP8266MQTTMesh")
        .is_ok());

    // Bypassing WPA (a stranger on the link some other way): the join handshake itself
    // refuses a node proving with another password's key.
    let probe = w.connect_probe(p);
    let frames = probe_join(&mut w, probe, "0B0B0B", &join_key("othermeshpw"));
    let replies: Vec<Frame<'_>> = frames
        .iter()
        .map(|f| Frame::decode(f).expect("valid frame"))
        .collect();
    assert!(
        matches!(
            replies.as_slice(),
            [
                Frame::Challenge { .. },
                Frame::JoinReject {
                    reason: Reason::Auth
                }
            ]
        ),
        "{replies:?}"
    );
    wait_for(&mut w, 1, "the parent to close the link", |w| {
        w.probe_closed(probe)
    });
    assert_eq!(w.node(p).counters().auth_failures, 1);
    assert_eq!(w.node(p).counters().rejected_joins, 1);
    assert!(any_log(&w, p, "failed to prove the mesh password"));
    assert_eq!(w.node(p).children().count(), 0);
    // Whatever it sends next goes nowhere.
    w.probe_send(
        probe,
        &encode(&Frame::Publish {
            id: 0,
            origin: "0B0B0B",
            msg_type: MsgType::Qos0,
            topic: "esp8266-out/0B0B0B/x",
            payload: b"x",
        }),
    );
    w.run_for(secs(1));
    assert!(!w.publications().iter().any(|p| p.topic.contains("0B0B0B")));
}

/// Nothing from node `idx` (by its ID) reached the broker.
fn nothing_published_by(w: &World, idx: usize) -> bool {
    let id = w.id(idx);
    !w.publications().iter().any(|p| p.topic.contains(&id))
}

#[test]
fn node_of_another_mesh_with_the_same_password_is_refused_at_the_join() {
    // Same password (so WPA2 and the BSSID scheme let it through), another mesh SSID
    // base: another join key. In range of P only, it tries P again and again.
    let mut w = World::graph(31);
    w.set_rssi(ROUTER, 0, Some(-50));
    w.set_rssi(0, 1, Some(-60));
    let p = w.add_node(config());
    let stranger = w.add_node(
        builder()
            .mesh_ssid_base("other_mesh_")
            .build()
            .expect("valid"),
    );
    wait_for(&mut w, 20, "P to refuse the stranger", |w| {
        w.node(p).counters().auth_failures >= 1
    });
    // The stranger keeps P out of its ranking for a while after each refusal.
    w.run_for(secs(45));
    check(&w, w.node(p).connected(), "P online");
    check(
        &w,
        w.node(stranger).counters().connects == 0,
        "the stranger never joined",
    );
    assert_eq!(w.node(p).children().count(), 0);
    let (pc, sc) = (w.node(p).counters(), w.node(stranger).counters());
    // The parent proves first, so the stranger is the one to see the mismatch and
    // leave; both count it.
    assert!(sc.auth_failures >= 2 && sc.refused_parents >= 2, "{sc:?}");
    assert!(pc.rejected_joins >= pc.auth_failures, "{pc:?}");
    assert!(any_log(&w, stranger, "failed to prove the mesh password"));
    assert!(any_log(&w, p, "could not verify our challenge"));
    assert!(nothing_published_by(&w, stranger));
}

/// Two meshes on one router and one broker, every node in range of every other.
fn side_by_side(seed: u64, other: Builder) -> (World, [usize; 3], [usize; 3]) {
    let mut w = World::graph(seed);
    for i in 0..6 {
        for j in i + 1..6 {
            w.set_rssi(i, j, Some(-55));
        }
    }
    // One root each; the others can only reach the router through a node.
    w.set_rssi(ROUTER, 0, Some(-50));
    w.set_rssi(ROUTER, 3, Some(-50));
    // Each mesh's leaves hear the other mesh's root better than their own.
    w.set_rssi(0, 4, Some(-40));
    w.set_rssi(0, 5, Some(-40));
    w.set_rssi(3, 1, Some(-40));
    w.set_rssi(3, 2, Some(-40));
    let other = other.build().expect("valid");
    let a = [0, 1, 2].map(|_| w.add_node(config()));
    let b = [0, 1, 2].map(|_| w.add_node(other.clone()));
    wait_for(&mut w, 60, "both meshes online", World::all_online);
    (w, a, b)
}

/// No node of one mesh hangs below a node of the other.
fn assert_apart(w: &World, a: [usize; 3], b: [usize; 3]) {
    let tree = w.tree();
    for (mine, theirs) in [(a, b), (b, a)] {
        for &n in &mine {
            let parent = &tree[&w.id(n)];
            check(
                w,
                !theirs.iter().any(|&t| w.id(t) == *parent),
                "a node hangs below the other mesh",
            );
        }
    }
}

#[test]
fn two_meshes_with_different_passwords_do_not_mix() {
    let (mut w, a, b) = side_by_side(32, builder().mesh_password("second-mesh-pw"));
    assert_apart(&w, a, b);
    // Another password: neither side even recognises the other's APs.
    for n in a.into_iter().chain(b) {
        assert_eq!(w.node(n).counters().auth_failures, 0);
    }
    w.run_for(secs(10));
    assert_apart(&w, a, b);
    check(&w, World::all_online(&w), "all still online");
}

#[test]
fn two_meshes_with_one_password_but_different_ssid_bases_do_not_mix() {
    let (mut w, a, b) = side_by_side(33, builder().mesh_ssid_base("second_mesh_"));
    assert_apart(&w, a, b);
    // The leaves tried the other mesh's root first (the stronger signal) and were
    // refused by the join handshake.
    let failures: u64 = a
        .into_iter()
        .chain(b)
        .map(|n| w.node(n).counters().auth_failures)
        .sum();
    check(&w, failures > 0, "the handshake refused cross-mesh joins");
    w.run_for(secs(10));
    assert_apart(&w, a, b);
}
