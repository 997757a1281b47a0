//! Messages through the mesh: relaying, built-in topics, broadcast, limits, bursts.

use mqttmesh_core::link::Path;
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
            origin: w.node(1).id().as_str(),
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

#[test]
fn custom_prefixes_and_node_id_shape_every_topic() {
    let custom = |id: Option<&str>| {
        let b = builder().in_prefix("home/in/").out_prefix("home/out/");
        match id {
            Some(id) => b.node_id(id),
            None => b,
        }
        .build()
        .expect("valid")
    };
    let mut w = World::graph(22);
    w.set_rssi(ROUTER, 0, Some(-50));
    w.set_rssi(0, 1, Some(-60));
    w.add_node(custom(None));
    let kitchen = w.add_node(custom(Some("kitchen")));
    wait_for(&mut w, 20, "both online", World::all_online);
    assert_eq!(w.id(kitchen), "kitchen");
    w.run_for(secs(1));
    let available = w.retained("home/out/kitchen/info/available");
    assert_eq!(available.as_deref(), Some(&b"online"[..]));
    assert!(
        w.publications()
            .iter()
            .all(|p| p.topic.starts_with("home/out/")),
        "nothing under the default prefixes"
    );
    assert_eq!(
        w.broker().session(0).map(|s| s.filters.clone()),
        Some(vec!["home/in/#".into()])
    );
    w.broker_publish("home/in/kitchen/light", b"on", false);
    w.broker_publish("esp8266-in/kitchen/light", b"ignored", false);
    wait_for(&mut w, 1, "the kitchen message", |w| {
        !w.messages(kitchen).is_empty()
    });
    w.run_for(secs(1));
    assert_eq!(w.messages(kitchen).len(), 1);
    assert_eq!(w.messages(kitchen)[0].payload, b"on");
}

#[test]
fn retained_publication_from_deep_node_is_retained_at_the_broker() {
    let mut w = World::line(3, &config(), 23);
    wait_for(&mut w, 30, "three nodes online", World::all_online);
    w.publish(2, "state", b"42", MsgType::RetainedQos1)
        .expect("accepted");
    let topic = out(&w, 2, "state");
    wait_for(&mut w, 1, "the retained value", |w| {
        w.retained(&topic).is_some()
    });
    assert_eq!(w.retained(&topic).as_deref(), Some(&b"42"[..]));
    w.publish(2, "state", b"", MsgType::RetainedQos1)
        .expect("accepted");
    wait_for(&mut w, 1, "the retained value cleared", |w| {
        w.retained(&topic).is_none()
    });
}

#[test]
fn a_joined_child_may_only_publish_into_the_mesh_topics() {
    let mut w = World::from_edges(1, &config(), 24, &[(ROUTER, 0, -50)]);
    wait_for(&mut w, 10, "root online", World::all_online);
    let probe = w.connect_probe(0);
    let key = join_key(mqttmesh_core::config::DEFAULT_MESH_PASSWORD);
    let frames = probe_join(&mut w, probe, "0C0C0C", &key);
    assert_eq!(frames.len(), 2, "a challenge, then the answer");
    let mut path = Path::new();
    path.push(w.node(0).id().clone()).expect("room");
    assert_eq!(Frame::decode(&frames[1]), Ok(Frame::JoinAccept { path }));
    assert!(w.node(0).children().any(|c| c.as_str() == "0C0C0C"));

    for topic in ["elsewhere/x", "esp8266-out/0C0C0C/ok"] {
        let publish = encode(&Frame::Publish {
            id: 0,
            origin: "0C0C0C",
            msg_type: MsgType::Qos0,
            topic,
            payload: b"p",
        });
        w.probe_send(probe, &publish);
    }
    w.run_for(secs(1));
    let relayed: Vec<&str> = w
        .publications()
        .iter()
        .filter(|p| p.topic.contains("0C0C0C") || p.topic.starts_with("elsewhere"))
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(relayed, ["esp8266-out/0C0C0C/ok"]);
    check(
        &w,
        w.node(0).counters().publish_rejected == 1,
        "one refused",
    );
    check(
        &w,
        !w.probe_closed(probe),
        "a refused publication does not cost the link",
    );

    // A wildcard topic is not even a valid frame: the link goes.
    let mut wildcard = encode(&Frame::Publish {
        id: 0,
        origin: "0C0C0C",
        msg_type: MsgType::Qos0,
        topic: "esp8266-out/0C0C0C/X",
        payload: b"p",
    });
    let at = wildcard
        .iter()
        .rposition(|&b| b == b'X')
        .expect("topic byte");
    wildcard[at] = b'#';
    w.probe_send(probe, &wildcard);
    wait_for(&mut w, 1, "the link to close", |w| w.probe_closed(probe));
    check(
        &w,
        w.node(0).counters().malformed == 1,
        "counted as malformed",
    );
    assert!(!w.publications().iter().any(|p| p.topic.contains('#')));
}
