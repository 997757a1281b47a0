//! Messages through the mesh: relaying, built-in topics, broadcast, limits, bursts.

use mqttmesh_core::MsgType;
use mqttmesh_sim::ROUTER;

use super::*;

#[test]
fn relay_carries_messages_up_and_down_three_hops() {
    let mut w = World::line(3, &config(), 3);
    wait_for(&mut w, 30, "three nodes online", World::all_online);
    check(&w, w.node(2).depth() == Some(3), "node 2 at depth 3");

    let payload = b"up\x00bin\xff\n=".to_vec();
    w.publish(2, "x", &payload, MsgType::Qos1)
        .expect("publish accepted");
    let topic = out(&w, 2, "x");
    wait_for(&mut w, 1, "the publication at the broker", |w| {
        !w.published(&topic).is_empty()
    });
    let seen = w.published(&topic);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].payload, payload, "binary payload intact");
    assert_eq!(
        seen[0].from,
        Some(0),
        "published through the root's session"
    );
    assert!(w.node(1).counters().relayed_up >= 1);

    let down = format!("{IN}{}/x", w.id(2));
    w.broker_publish(&down, b"down\x00", false);
    wait_for(&mut w, 1, "delivery to node 2", |w| {
        !w.messages(2).is_empty()
    });
    w.run_for(secs(1));
    let got = w.messages(2);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].subtopic.as_str(), &got[0].payload[..]),
        ("x", &b"down\x00"[..])
    );
    assert!(
        w.messages(0).is_empty() && w.messages(1).is_empty(),
        "addressed to node 2 only"
    );

    // publish_node from the deepest node to the root goes up, through the broker, down.
    let root = w.id(0);
    w.publish_node(2, &root, "hello", b"from below", MsgType::Qos0)
        .expect("publish_node accepted");
    wait_for(&mut w, 1, "the root's application message", |w| {
        !w.messages(0).is_empty()
    });
    assert_eq!(w.messages(0)[0].subtopic, "hello");
    assert_eq!(w.messages(0)[0].payload, b"from below");
}

#[test]
fn largest_payload_travels_both_ways_and_larger_is_refused() {
    let mut w = World::line(3, &config(), 15);
    wait_for(&mut w, 30, "three nodes online", World::all_online);
    let big: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 256) as u8).collect();
    w.publish(2, "big", &big, MsgType::Qos0)
        .expect("1024 bytes fit");
    let up = out(&w, 2, "big");
    wait_for(&mut w, 1, "the big publication", |w| {
        !w.published(&up).is_empty()
    });
    assert_eq!(w.published(&up)[0].payload, big);
    w.broker_publish(&format!("{IN}{}/big", w.id(2)), &big, false);
    wait_for(&mut w, 1, "the big delivery", |w| !w.messages(2).is_empty());
    assert_eq!(w.messages(2)[0].payload, big);
    let too_big = vec![0u8; 1025];
    assert!(w.publish(2, "big", &too_big, MsgType::Qos0).is_err());
    w.broker_publish(&format!("{IN}{}/big", w.id(2)), &too_big, false);
    w.run_for(secs(1));
    assert_eq!(
        w.messages(2).len(),
        1,
        "an oversized broker message is dropped at the root"
    );
    check(&w, w.node(0).counters().malformed == 1, "and counted there");
    check(&w, w.all_online(), "nobody lost a link over it");
}

#[test]
fn burst_of_frames_in_one_read_is_relayed_without_loss() {
    let mut w = World::line(2, &config(), 16);
    wait_for(&mut w, 20, "both online", World::all_online);
    let topic = out(&w, 1, "burst");
    let payloads: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let mut stream = Vec::new();
    for payload in &payloads {
        stream.extend(encode(&Frame::Publish {
            id: 0,
            msg_type: MsgType::Qos1,
            topic: &topic,
            payload,
        }));
    }
    // 100 frames arrive in one read: the parent takes them as its queues allow.
    let link = w.child_link(0, 1).expect("linked");
    w.inject(0, link, &stream);
    wait_for(&mut w, 2, "every frame at the broker", |w| {
        w.published(&topic).len() == 100
    });
    let got: Vec<Vec<u8>> = w
        .published(&topic)
        .iter()
        .map(|p| p.payload.clone())
        .collect();
    assert_eq!(got, payloads, "in order, none lost");
    check(
        &w,
        w.node(0).counters().queue_dropped == 0,
        "no queue overflow",
    );
    check(&w, w.node(0).counters().relayed_up >= 100, "relayed");
}

#[test]
fn ping_fw_restart_builtins() {
    let mut w = World::line(2, &config(), 4);
    wait_for(&mut w, 20, "both nodes online", World::all_online);

    for idx in [0, 1] {
        w.broker_publish(&format!("{IN}{}/Ping", w.id(idx)), b"", false);
        let ping = out(&w, idx, "Ping");
        wait_for(&mut w, 1, "the Ping answer", |w| {
            !w.published(&ping).is_empty()
        });
        assert_eq!(w.published(&ping)[0].text(), "1");
        assert!(
            w.messages(idx).is_empty(),
            "Ping is not an application message"
        );
    }

    w.broker_publish(&format!("{IN}fw/all"), b"", false);
    let fw: Vec<String> = (0..2).map(|i| out(&w, i, "fw")).collect();
    wait_for(&mut w, 1, "both fw answers", |w| {
        fw.iter().all(|t| !w.published(t).is_empty())
    });
    for idx in [0, 1] {
        let line = w.published(&fw[idx])[0].text();
        let prefix = format!("ChipID:{:06X} FirmwareID:", w.node(idx).chip_id());
        assert!(line.starts_with(&prefix), "fw line {line}");
        let ip = w.node(idx).ip().expect("address").to_string();
        assert!(line.contains(&format!(" IP:{ip}")), "fw line {line}");
        assert_eq!(line.ends_with(" mesh"), idx == 1, "fw line {line}");
    }

    let root_connects = w.node(0).counters().connects;
    w.broker_publish(&format!("{IN}{}/Restart", w.id(1)), b"", false);
    wait_for(&mut w, 1, "the restart", |w| w.restarts(1) == 1);
    check(&w, !w.node(1).connected(), "a restarted node starts over");
    let available = out(&w, 1, "info/available");
    wait_for(&mut w, 1, "offline published by the parent", |w| {
        w.retained(&available).as_deref() == Some(b"offline")
    });
    wait_for(
        &mut w,
        20,
        "the restarted node back online",
        World::all_online,
    );
    w.run_for(secs(1));
    assert_eq!(retained_text(&w, &available).as_deref(), Some("online"));
    let reason = retained_text(&w, &out(&w, 1, "info/reset_Reason"));
    assert_eq!(reason.as_deref(), Some("Restart"));
    assert_eq!(
        w.node(0).counters().connects,
        root_connects,
        "the root was not disturbed"
    );
    assert_eq!(w.restarts(0), 0);
}

/// A root with two subtrees: 0 → {1 → 3, 2 → 4}.
fn small_tree(seed: u64) -> World {
    let edges = [
        (ROUTER, 0, -50),
        (0, 1, -60),
        (0, 2, -60),
        (1, 3, -60),
        (2, 4, -60),
    ];
    World::from_edges(5, &config(), seed, &edges)
}

#[test]
fn broadcast_reaches_every_node_addressed_reaches_one() {
    let mut w = small_tree(5);
    wait_for(&mut w, 40, "five nodes online", World::all_online);
    check(
        &w,
        w.node(3).depth() == Some(3) && w.node(4).depth() == Some(3),
        "two levels",
    );

    w.broker_publish(&format!("{IN}broadcast/hello"), b"all", false);
    wait_for(&mut w, 1, "the broadcast everywhere", |w| {
        (0..5).all(|i| !w.messages(i).is_empty())
    });
    w.run_for(secs(1));
    for i in 0..5 {
        let got = w.messages(i);
        assert_eq!(got.len(), 1, "node {i} got the broadcast exactly once");
        assert_eq!(
            (got[0].subtopic.as_str(), &got[0].payload[..]),
            ("hello", &b"all"[..])
        );
    }

    w.broker_publish(&format!("{IN}{}/only", w.id(3)), b"you", false);
    wait_for(&mut w, 1, "the addressed message", |w| {
        w.messages(3).len() == 2
    });
    w.run_for(secs(1));
    for i in [0, 1, 2, 4] {
        assert_eq!(w.messages(i).len(), 1, "node {i} got only the broadcast");
    }
    assert_eq!(w.messages(3)[1].subtopic, "only");
}
