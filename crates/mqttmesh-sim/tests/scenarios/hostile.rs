//! Hostile and broken input: loops, garbage frames, strangers, other meshes, half frames.

use mqttmesh_core::identity::mesh_key;
use mqttmesh_core::link::{JoinRequest, Path, Reason, VERSION};
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
    wait_for(&mut w, 10, "the child to send its join", |w| {
        w.node(1).state() == State::Joining
    });

    // A parent whose path contains the child itself: accepting would make a loop.
    let mut path = Path::new();
    path.push(w.node(0).id().clone()).expect("room");
    path.push(w.node(1).id().clone()).expect("room");
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
    check(&w, any_log(&w, 1, "refusing parent"), "logged");
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

    // Bypassing WPA: the join handshake itself refuses the other mesh.
    let probe = w.connect_probe(p);
    let request = encode(&Frame::JoinRequest(JoinRequest {
        version: VERSION,
        mesh_tag: mesh_key("othermeshpw"),
        node_id: "0B0B0B",
        chip_id: 0x0B0B0B,
        firmware_id: 0x1337,
        firmware_version: "0.1",
        subtree_height: 0,
    }));
    w.probe_send(probe, &request);
    wait_for(&mut w, 1, "the refusal", |w| w.probe_closed(probe));
    let frames = w.probe_frames(probe);
    let reply = frames
        .first()
        .map(|f| Frame::decode(f).expect("valid frame"));
    assert_eq!(
        reply,
        Some(Frame::JoinReject {
            reason: Reason::WrongMesh
        })
    );
    assert_eq!(w.node(p).counters().rejected_joins, 1);
    assert_eq!(w.node(p).children().count(), 0);
}
