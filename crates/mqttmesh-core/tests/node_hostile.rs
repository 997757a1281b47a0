//! Hostile input for the mesh node, through its public run-loop API only
//! (`docs/PROTOCOL.md` "Errors", "Join handshake"; STYLE.md §3: a panic means a bug,
//! never bad input).
//!
//! As a parent: a root with two joined children, `A` and `B`, takes garbage, bad
//! headers, truncated and corrupted frames, frames out of state or direction, refused
//! joins and refused publications from a third link or from `A`. After each, the node is
//! still online, the culprit's link is closed (or, for a refused publication, still
//! usable), the right counter moved, and the innocent child still gets its messages to
//! the broker. As a child: a parent that sends garbage, offers a looping path, or
//! vanishes mid-frame. On the broker side: oversized messages and a refused session.

mod common;

use common::*;
use mqttmesh_core::link::DecodeError;

// ---- as a parent ---------------------------------------------------------------------

#[test]
fn garbage_on_a_new_link_closes_only_that_link() {
    let (mut h, a, b) = parent();
    let garbage: [&[u8]; 5] = [
        &[0xff; 64],                                          // header 65535
        &[0x00; 8],                                           // header 0
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                 // header 0x4745
        &[0x00, 0x05, 0x99, 1, 2, 3, 4],                      // unknown type
        &[0x00, 0x03, 0x01, 0x02, 0x28, 0x00, 0x01, 0x20, 9], // join request cut short
    ];
    for bytes in garbage {
        let before = h.counters();
        let c = h.node.handle_child_connected(h.now).expect("a free slot");
        h.feed(c, bytes);
        assert_eq!(h.counters().malformed, before.malformed + 1, "{bytes:?}");
        h.assert_protocol_close(c);
        h.clear();
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn garbage_from_a_joined_child_closes_its_link_and_reports_it_offline() {
    let (mut h, a, b) = parent();
    let before = h.counters();
    h.feed(a, &[0x00, 0x04, 0xee, 0xee, 0xee, 0xee]);
    assert_eq!(h.counters().malformed, before.malformed + 1);
    h.assert_protocol_close(a);
    assert!(h.published(&format!("{OUT}{A}/info/available")));
    assert_eq!(h.children(), [B]);
    h.clear();
    h.assert_relays(b, B);
}

#[test]
fn oversized_length_header_is_refused_before_any_body() {
    let (mut h, a, b) = parent();
    for header in [[0x05, 0x01], [0xff, 0xff]] {
        let before = h.counters();
        let c = h.node.handle_child_connected(h.now).expect("a free slot");
        // Only the header: the node must not wait for 1281+ bytes of body.
        h.feed(c, &header);
        assert_eq!(h.counters().malformed, before.malformed + 1);
        h.assert_protocol_close(c);
        h.clear();
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn truncated_frame_then_close_frees_the_slot() {
    let (mut h, a, b) = parent();
    let c = h.join(CULPRIT);
    let frame = publish(&format!("{OUT}{CULPRIT}/t"), &[7; 100]);
    h.feed(c, &frame[..frame.len() / 2]);
    assert!(h.actions.is_empty() && h.transmits.is_empty());
    h.node.handle_link_closed(h.now, c);
    h.drain();
    assert!(!h.published(&format!("{OUT}{CULPRIT}/t")));
    assert!(h.published(&format!("{OUT}{CULPRIT}/info/available")));
    h.clear();
    assert_family_intact(&mut h, a, b);
    // The slot is reusable, with an empty deframer.
    let c = h.join(CULPRIT);
    h.assert_relays(c, CULPRIT);
}

/// Valid frames a culprit sends: the join request on a new link, then, joined, a
/// publication and a keep-alive.
fn culprit_frames() -> [(bool, Vec<u8>); 3] {
    [
        (false, join_request(CULPRIT, [9; 16])),
        (true, publish(&format!("{OUT}{CULPRIT}/t"), &[0, 1, 0xff])),
        (true, encode(&Frame::KeepAlive)),
    ]
}

/// Whether a joined (or, `joined == false`, a pending) child may send `frame`.
fn allowed(joined: bool, frame: &Frame<'_>) -> bool {
    match frame {
        Frame::JoinRequest(_) => !joined,
        Frame::Leave { .. } => true,
        Frame::Publish { .. } | Frame::Subtree(_) | Frame::KeepAlive | Frame::KeepAliveAck => {
            joined
        }
        Frame::JoinAccept { .. }
        | Frame::JoinReject { .. }
        | Frame::Deliver { .. }
        | Frame::Ack { .. }
        | Frame::Hold
        | Frame::MakeRoom
        | Frame::Resume { .. }
        | Frame::Challenge { .. }
        | Frame::Proof { .. } => false,
    }
}

/// A fresh culprit link, joined first if `joined`.
fn culprit(h: &mut Harness, joined: bool) -> LinkId {
    if joined {
        h.join(CULPRIT)
    } else {
        h.node.handle_child_connected(h.now).expect("a free slot")
    }
}

/// Feeds `bytes` on a fresh culprit link, then the peer closes it. With `expect_violation`
/// (`None`: unknown) checks that the node counted and closed the link, or not.
fn attack(h: &mut Harness, joined: bool, bytes: &[u8], expect_violation: Option<bool>) {
    let c = culprit(h, joined);
    let before = h.counters();
    h.feed(c, bytes);
    match expect_violation {
        Some(true) => {
            assert_eq!(h.counters().malformed, before.malformed + 1, "{bytes:02x?}");
            h.assert_protocol_close(c);
        }
        Some(false) => assert_eq!(h.counters().malformed, before.malformed, "{bytes:02x?}"),
        None => {}
    }
    h.node.handle_link_closed(h.now, c);
    h.drain();
    h.clear();
}

#[test]
fn every_truncation_of_a_valid_frame_is_harmless() {
    let (mut h, a, b) = parent();
    for (joined, frame) in culprit_frames() {
        // The stream stops early, then the peer closes: nothing happens but the close.
        for len in 0..frame.len() {
            attack(&mut h, joined, &frame[..len], Some(false));
            assert_family_intact(&mut h, a, b);
        }
        // The body is cut short under a header that says so: a decode error.
        let body = &frame[HEADER_LEN..];
        for len in 0..body.len() {
            let mut bytes = u16::try_from(len).unwrap().to_be_bytes().to_vec();
            bytes.extend_from_slice(&body[..len]);
            attack(&mut h, joined, &bytes, Some(true));
            assert_family_intact(&mut h, a, b);
        }
    }
}

#[test]
fn every_single_byte_corruption_of_a_valid_frame_is_harmless() {
    let (mut h, a, b) = parent();
    for (joined, frame) in culprit_frames() {
        for at in 0..frame.len() {
            for flip in 1..=255u8 {
                let mut bytes = frame.clone();
                bytes[at] ^= flip;
                let expect = if at >= HEADER_LEN {
                    // Header intact: exactly one frame, judged by the decoder and the
                    // handshake rules.
                    Some(match Frame::decode(&bytes[HEADER_LEN..]) {
                        Ok(f) => !allowed(joined, &f),
                        // Refused with `JoinReject { Version }` before joining.
                        Err(DecodeError::UnsupportedVersion(_)) => joined,
                        Err(_) => true,
                    })
                } else {
                    // A header that now declares 0 or > 1280 bytes is refused at once;
                    // any other length reframes the stream: no claim beyond no harm.
                    let len = u16::from_be_bytes([bytes[0], bytes[1]]);
                    (len == 0 || len > 1280).then_some(true)
                };
                attack(&mut h, joined, &bytes, expect);
                assert!(h.node.connected());
                assert_eq!(h.children(), [A, B], "after {bytes:02x?}");
            }
        }
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn publish_or_keepalive_before_join_request_closes_the_link() {
    let (mut h, a, b) = parent();
    let topic = format!("{OUT}{CULPRIT}/t");
    for bytes in [publish(&topic, b"early"), encode(&Frame::KeepAlive)] {
        let c = culprit(&mut h, false);
        let before = h.counters();
        h.feed(c, &bytes);
        assert_eq!(h.counters().malformed, before.malformed + 1);
        assert!(!h.published(&topic));
        h.assert_protocol_close(c);
        h.clear();
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn deliver_or_second_join_from_a_child_closes_its_link() {
    let (mut h, a, b) = parent();
    let deliver = encode(&Frame::Deliver {
        topic: "esp8266-in/broadcast/x",
        payload: b"down?",
    });
    let rejoin = join_request(CULPRIT, [9; 16]);
    for bytes in [deliver, rejoin] {
        let c = h.join(CULPRIT);
        let before = h.counters();
        h.feed(c, &bytes);
        assert_eq!(h.counters().malformed, before.malformed + 1);
        h.assert_protocol_close(c);
        assert!(h.published(&format!("{OUT}{CULPRIT}/info/available")));
        h.clear();
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn join_request_with_wrong_version_is_rejected() {
    let (mut h, a, b) = parent();
    let c = culprit(&mut h, false);
    let before = h.counters();
    h.feed(c, &join_request_version(CULPRIT, VERSION + 1));
    h.assert_join_rejected(c, Reason::Version);
    assert_eq!(h.counters().rejected_joins, before.rejected_joins + 1);
    h.clear();
    assert_family_intact(&mut h, a, b);
}

#[test]
fn fifth_child_is_rejected_as_full() {
    let (mut h, a, b) = parent();
    let c = h.join("333333");
    let d = h.join("444444");
    assert_eq!(h.node.children().count(), 4);
    let e = culprit(&mut h, false);
    let before = h.counters();
    let t = h.challenge(e, CULPRIT);
    h.feed(e, &proof(key().child_tag(&t)));
    h.assert_join_rejected(e, Reason::Full);
    assert_eq!(h.counters().rejected_joins, before.rejected_joins + 1);
    assert_eq!(h.node.children().count(), 4);
    h.clear();
    h.assert_relays(a, A);
    h.assert_relays(b, B);
    h.assert_relays(c, "333333");
    h.assert_relays(d, "444444");
}

#[test]
fn join_request_with_the_parents_own_id_is_rejected_as_a_loop() {
    let (mut h, a, b) = parent();
    let c = culprit(&mut h, false);
    let before = h.counters();
    let t = h.challenge(c, OWN_ID);
    h.feed(c, &proof(key().child_tag(&t)));
    h.assert_join_rejected(c, Reason::Loop);
    assert_eq!(h.counters().rejected_joins, before.rejected_joins + 1);
    h.clear();
    assert_family_intact(&mut h, a, b);
}

/// `A` comes back on a new link while its old one is dead but not yet noticed.
fn rejoin_over_stale_link(h: &mut Harness, stale: LinkId) -> LinkId {
    let fresh = h.node.handle_child_connected(h.now).expect("a free slot");
    let t = h.challenge(fresh, A);
    h.feed(fresh, &proof(key().child_tag(&t)));
    assert!(
        matches!(h.sent_to(fresh).as_slice(), [Frame::JoinAccept { .. }]),
        "{A} rejoining got {:?}",
        h.sent_to(fresh)
    );
    assert!(
        h.asked(&Action::CloseLink(stale)),
        "the stale link is closed"
    );
    h.clear();
    fresh
}

#[test]
fn child_rejoining_over_its_stale_link_replaces_it() {
    let (mut h, a, b) = parent();
    let fresh = rejoin_over_stale_link(&mut h, a);
    assert_eq!(h.children(), [A, B]);
    h.assert_relays(fresh, A);
    h.assert_relays(b, B);
}

#[test]
fn child_rejoining_over_its_stale_link_is_accepted_when_the_parent_is_full() {
    let (mut h, a, b) = parent();
    h.join("333333");
    h.join("444444");
    let fresh = rejoin_over_stale_link(&mut h, a);
    assert_eq!(h.node.children().count(), 4);
    h.assert_relays(fresh, A);
    h.assert_relays(b, B);
}

#[test]
fn silent_connections_cannot_hold_the_slots() {
    let (mut h, a, b) = parent();
    let before = h.counters();
    let mut idle = Vec::new();
    while let Some(link) = h.node.handle_child_connected(h.now) {
        idle.push(link);
        assert!(idle.len() < 64, "the node keeps handing out slots");
    }
    assert_eq!(h.counters().rejected_joins, before.rejected_joins + 1);
    // The handshake timeout (2 s) comes before A's and B's keep-alive (3 s).
    h.step();
    for link in &idle {
        assert!(h.asked(&Action::CloseLink(*link)), "{link:?} is dropped");
    }
    assert_eq!(
        h.counters().rejected_joins,
        before.rejected_joins + 1 + idle.len() as u64
    );
    h.clear();
    assert_family_intact(&mut h, a, b);
    let c = h.join(CULPRIT);
    h.assert_relays(c, CULPRIT);
}

#[test]
fn child_publish_outside_the_mesh_topics_is_dropped_but_the_link_kept() {
    let (mut h, a, b) = parent();
    for topic in ["elsewhere/x", "esp8266-outx/y", "$SYS/broker/load"] {
        let before = h.counters();
        h.feed(a, &publish(topic, b"sneaky"));
        assert_eq!(
            h.counters().publish_rejected,
            before.publish_rejected + 1,
            "{topic}"
        );
        assert!(!h.actions.iter().any(|a| matches!(a, Action::Publish(_))));
        assert!(!h.asked(&Action::CloseLink(a)));
        h.clear();
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn child_publish_with_oversized_payload_is_refused_by_the_codec() {
    let (mut h, a, b) = parent();
    let c = h.join(CULPRIT);
    let topic = format!("{OUT}{CULPRIT}/big");
    // Built by hand: the encoder refuses a 1025-byte payload.
    let mut body = vec![0x10, 0x00, 0x00, MsgType::Qos0.to_u8()];
    body.push(u8::try_from(topic.len()).unwrap());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1025u16.to_be_bytes());
    body.extend_from_slice(&[0xab; 1025]);
    let mut bytes = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let before = h.counters();
    h.feed(c, &bytes);
    assert_eq!(h.counters().malformed, before.malformed + 1);
    assert!(!h.published(&topic));
    h.assert_protocol_close(c);
    h.clear();
    assert_family_intact(&mut h, a, b);
}

// ---- as a child ----------------------------------------------------------------------

#[test]
fn parent_sending_garbage_makes_the_child_leave_and_rescan() {
    let mut h = mesh_child();
    let before = h.counters();
    h.feed(
        LinkId::Parent,
        &[0x00, 0x06, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42],
    );
    assert_eq!(h.counters().malformed, before.malformed + 1);
    h.assert_protocol_close(LinkId::Parent);
    assert_eq!(h.counters().disconnects, before.disconnects + 1);
    assert_left_mesh(&mut h);
}

#[test]
fn parent_sending_a_publish_makes_the_child_leave() {
    let mut h = mesh_child();
    let before = h.counters();
    h.feed(LinkId::Parent, &publish("esp8266-in/broadcast/x", b"up?"));
    assert_eq!(h.counters().malformed, before.malformed + 1);
    h.assert_protocol_close(LinkId::Parent);
    assert_left_mesh(&mut h);
}

#[test]
fn join_accept_containing_own_id_is_refused_as_a_loop() {
    let next = identity::ap_mac(OTHER_PARENT_CHIP, mesh_key());
    let mut h = joining_child(short_timing(), &[PARENT_CHIP, OTHER_PARENT_CHIP]);
    h.pass_challenge(PARENT_ID);
    let before = h.counters();
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinAccept {
            path: path(&["ROOT", OWN_ID, PARENT_ID]),
        }),
    );
    assert_eq!(
        h.sent_to(LinkId::Parent),
        [Frame::Leave {
            reason: Reason::Loop
        }]
    );
    assert_eq!(h.counters().refused_parents, before.refused_parents + 1);
    assert!(h.asked(&Action::CloseLink(LinkId::Parent)));
    assert!(!h.node.connected());
    assert!(!h.node.ap_open());
    // The next candidate, at once.
    assert_eq!(h.associating_with(), Some(next));
    assert_eq!(h.node.state(), State::Associating);
}

#[test]
fn join_accept_loop_with_no_other_candidate_rescans_without_that_parent() {
    let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
    h.pass_challenge(PARENT_ID);
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinAccept {
            path: path(&[OWN_ID, PARENT_ID]),
        }),
    );
    assert_eq!(
        h.sent_to(LinkId::Parent),
        [Frame::Leave {
            reason: Reason::Loop
        }]
    );
    assert_eq!(h.node.state(), State::Idle);
    h.clear();
    h.assert_retries_uplink();
    assert!(h.asked(&Action::Scan));
    h.clear();
    // The looping parent is kept out of the ranking for a while.
    h.node
        .handle_scan_done(h.now, &[mesh_entry(PARENT_CHIP, -30)]);
    h.drain();
    assert_eq!(h.associating_with(), None);
    assert_eq!(h.node.state(), State::Idle);
}

#[test]
fn parent_vanishing_mid_frame_makes_the_child_leave_the_mesh() {
    let mut h = mesh_child();
    let grandchild = h.join(CULPRIT);
    let deliver = encode(&Frame::Deliver {
        topic: "esp8266-in/broadcast/x",
        payload: &[0x55; 300],
    });
    h.feed(LinkId::Parent, &deliver[..deliver.len() / 2]);
    assert!(h.events.is_empty() && h.transmits.is_empty());
    let before = h.counters();
    h.node.handle_link_closed(h.now, LinkId::Parent);
    h.drain();
    assert_eq!(h.counters().disconnects, before.disconnects + 1);
    // The subtree is told to re-form elsewhere.
    assert_eq!(
        h.sent_to(grandchild),
        [Frame::Leave {
            reason: Reason::Going
        }]
    );
    assert!(h.asked(&Action::CloseLink(grandchild)));
    assert_eq!(h.node.children().count(), 0);
    assert_left_mesh(&mut h);

    // Back to the same parent: the half frame must not leak into the new link.
    assert_eq!(h.node.state(), State::Scanning);
    h.clear();
    h.node
        .handle_scan_done(h.now, &[mesh_entry(PARENT_CHIP, -40)]);
    h.drain();
    let parent_mac = identity::ap_mac(PARENT_CHIP, mesh_key());
    assert_eq!(h.associating_with(), Some(parent_mac));
    h.rejoin(parent_mac, PARENT_ID, &[PARENT_ID]);
    assert_eq!(h.node.state(), State::Mesh);
    assert!(h.node.ap_open());
}

#[test]
fn joining_child_sends_nothing_but_its_join_request_until_answered() {
    // PROTOCOL.md "Join handshake" 1: the child sends nothing else until it has an
    // answer. With the default timers the keep-alive interval (5 s) is shorter than the
    // handshake timeout (10 s).
    let mut h = joining_child(Timing::default(), &[PARENT_CHIP]);
    let give_up = h.now + Timing::default().connect_timeout;
    while h.node.state() == State::Joining {
        let next = h.node.poll_timeout().expect("a handshake deadline");
        if next >= give_up {
            break;
        }
        h.step();
        assert_eq!(
            h.sent_to(LinkId::Parent),
            [],
            "sent before the join answer at {}",
            h.now
        );
    }
}

// ---- the broker side -----------------------------------------------------------------

#[test]
fn oversized_broker_messages_are_dropped_and_counted() {
    let (mut h, a, b) = parent();
    let broadcast = format!("{IN}broadcast/");
    let long_topic = format!("{broadcast}{}", "x".repeat(129 - broadcast.len()));
    assert_eq!(long_topic.len(), 129);
    let cases: [(&str, Vec<u8>); 3] = [
        (&long_topic, b"hi".to_vec()),
        ("esp8266-in/broadcast/x", vec![0; 1025]),
        (&long_topic, vec![0; 65536]),
    ];
    for (topic, payload) in &cases {
        let before = h.counters();
        h.node.handle_mqtt_message(h.now, topic, payload);
        h.drain();
        assert_eq!(h.counters().malformed, before.malformed + 1);
        assert!(h.transmits.is_empty() && h.actions.is_empty() && h.events.is_empty());
        assert_family_intact(&mut h, a, b);
    }
    // Exactly at the limits: delivered here and relayed to both children.
    let max_topic = &long_topic[..128];
    h.node.handle_mqtt_message(h.now, max_topic, &[1; 1024]);
    h.drain();
    assert_eq!(h.events.len(), 1);
    for link in [a, b] {
        assert!(matches!(
            h.sent_to(link).as_slice(),
            [Frame::Deliver { topic, payload }] if *topic == max_topic && payload.len() == 1024
        ));
    }
}

#[test]
fn broker_messages_with_wildcards_or_odd_shapes_do_no_harm() {
    let (mut h, a, b) = parent();
    for topic in [
        "",
        IN,
        "esp8266-in/broadcast/a+b",
        "esp8266-in/broadcast/#",
        "esp8266-in/00A1B2/\0",
        "esp8266-in/ota//",
        "esp8266-out/00A1B2/Ping",
        "elsewhere",
    ] {
        h.node.handle_mqtt_message(h.now, topic, b"x");
        h.drain();
        assert!(
            h.sent_to(a)
                .iter()
                .chain(&h.sent_to(b))
                .all(|f| matches!(f, Frame::Deliver { .. })),
            "{topic:?}"
        );
        h.clear();
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn broker_refusing_the_session_moves_to_the_next_candidate_then_rescans() {
    let mut h = Harness::new(short_timing());
    h.step();
    h.node.handle_scan_done(
        h.now,
        &[router_entry(ROUTER, -50), router_entry(ROUTER_2, -60)],
    );
    h.drain();
    for (bssid, next) in [(ROUTER, Some(ROUTER_2)), (ROUTER_2, None)] {
        assert_eq!(h.associating_with(), Some(bssid));
        h.clear();
        h.node.handle_associated(h.now, bssid, Ok(IP));
        h.drain();
        assert_eq!(h.node.state(), State::MqttConnecting);
        h.clear();
        h.node.handle_mqtt_disconnected(h.now);
        h.drain();
        assert!(h.asked(&Action::DisconnectMqtt));
        assert!(!h.node.connected());
        assert!(!h.node.ap_open());
        assert_eq!(h.associating_with(), next);
    }
    // Every candidate refused: back off, then scan again.
    assert_eq!(h.node.state(), State::Idle);
    assert!(h.node.poll_timeout().is_some_and(|t| t > h.now));
    h.clear();
    h.step();
    assert!(h.asked(&Action::Scan));
    assert_eq!(h.node.state(), State::Scanning);
}
