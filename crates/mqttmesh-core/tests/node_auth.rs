//! The authenticated join (`docs/PROTOCOL.md` "Join handshake"), attacked from both
//! sides through the node's public run-loop API: wrong keys, replayed proofs and
//! challenges, stalls, frames out of order, reflection. Each is refused, logged and
//! counted, never panics, and nothing the peer sent is relayed.

mod common;

use common::*;

fn other_password() -> JoinKey {
    JoinKey::derive("not-the-mesh-password", DEFAULT_MESH_SSID_BASE)
}

fn other_ssid_base() -> JoinKey {
    JoinKey::derive(DEFAULT_MESH_PASSWORD, "another_mesh")
}

/// Nothing was relayed towards the broker since the last `clear`.
fn assert_nothing_relayed(h: &Harness) {
    assert!(
        !h.actions.iter().any(|a| matches!(a, Action::Publish(_))),
        "nothing relayed: {:?}",
        h.actions
    );
}

/// The culprit's publication after its refusal: the link is gone, nothing relayed.
fn publish_after_refusal(h: &mut Harness, link: LinkId) {
    h.clear();
    h.feed(link, &publish(&format!("{OUT}{CULPRIT}/t"), b"sneaky"));
    assert_nothing_relayed(h);
}

// ---- as a parent ---------------------------------------------------------------------

#[test]
fn child_with_another_key_is_refused_counted_and_not_relayed() {
    for wrong in [other_password(), other_ssid_base()] {
        let (mut h, a, b) = parent();
        let c = h.node.handle_child_connected(h.now).expect("a free slot");
        let before = h.counters();
        // The challenge does not verify under the wrong key, but a hostile child goes
        // on and proves with the key it has.
        let t = h.challenge(c, CULPRIT);
        h.feed(c, &proof(wrong.child_tag(&t)));
        h.assert_join_rejected(c, Reason::Auth);
        let after = h.counters();
        assert_eq!(after.auth_failures, before.auth_failures + 1);
        assert_eq!(after.rejected_joins, before.rejected_joins + 1);
        assert!(h.logged("failed to prove the mesh password"));
        assert_eq!(h.children(), [A, B]);
        publish_after_refusal(&mut h, c);
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn replayed_proof_fails_against_a_fresh_challenge() {
    let (mut h, a, b) = parent();
    // A legitimate join of CULPRIT, recorded by an eavesdropper.
    let first = h.node.handle_child_connected(h.now).expect("a free slot");
    let nonce = [0x77; 16];
    h.feed(first, &join_request(CULPRIT, nonce));
    let Some(Frame::Challenge {
        nonce: first_nonce, ..
    }) = h.sent_to(first).first().cloned()
    else {
        panic!("expected a challenge")
    };
    let first_nonce = first_nonce.to_owned();
    h.clear();
    let t = {
        let parent_id = h.node.id().clone();
        Transcript::new(&request(CULPRIT, nonce), &first_nonce, parent_id.as_str()).unwrap()
    };
    let recorded = proof(key().child_tag(&t));
    h.feed(first, &recorded);
    assert!(matches!(
        h.sent_to(first).as_slice(),
        [Frame::JoinAccept { .. }]
    ));
    h.clear();

    // The replay: the same join request and the same proof on a new link.
    let before = h.counters();
    let c = h.node.handle_child_connected(h.now).expect("a free slot");
    h.feed(c, &join_request(CULPRIT, nonce));
    match h.sent_to(c).as_slice() {
        [Frame::Challenge { nonce, .. }] => assert_ne!(*nonce, first_nonce, "a fresh nonce"),
        other => panic!("expected a challenge, got {other:?}"),
    }
    h.clear();
    h.feed(c, &recorded);
    h.assert_join_rejected(c, Reason::Auth);
    assert_eq!(h.counters().auth_failures, before.auth_failures + 1);
    // The genuine CULPRIT link was not replaced by the replay.
    assert!(!h.asked(&Action::CloseLink(first)));
    assert_eq!(h.children(), [A, B, CULPRIT]);
    publish_after_refusal(&mut h, c);
    h.clear();
    assert!(h.node.connected());
    h.assert_relays(a, A);
    h.assert_relays(b, B);
    h.assert_relays(first, CULPRIT);
}

#[test]
fn parents_own_tag_reflected_as_a_proof_is_refused() {
    let (mut h, a, b) = parent();
    let c = h.node.handle_child_connected(h.now).expect("a free slot");
    let nonce = h.fresh_nonce();
    h.feed(c, &join_request(CULPRIT, nonce));
    let Some(Frame::Challenge { tag, .. }) = h.sent_to(c).first().cloned() else {
        panic!("expected a challenge")
    };
    h.clear();
    h.feed(c, &proof(tag));
    h.assert_join_rejected(c, Reason::Auth);
    h.clear();
    assert_family_intact(&mut h, a, b);
}

#[test]
fn join_stalled_after_the_challenge_is_closed_and_counted() {
    let (mut h, a, b) = parent();
    let c = h.node.handle_child_connected(h.now).expect("a free slot");
    let _ = h.challenge(c, CULPRIT);
    let before = h.counters();
    // The handshake timeout (2 s) comes before A's and B's keep-alive (3 s).
    h.step();
    assert!(h.asked(&Action::CloseLink(c)), "the stalled link is closed");
    let after = h.counters();
    assert_eq!(after.handshake_failures, before.handshake_failures + 1);
    assert_eq!(after.rejected_joins, before.rejected_joins + 1);
    assert!(h.logged("join stalled before its proof"));
    // A late proof goes nowhere.
    publish_after_refusal(&mut h, c);
    assert_eq!(h.children(), [A, B]);
    assert_family_intact(&mut h, a, b);
}

#[test]
fn frames_out_of_order_in_the_handshake_close_the_link() {
    let (mut h, a, b) = parent();
    let topic = format!("{OUT}{CULPRIT}/t");
    let early: [(&str, bool, Vec<u8>); 7] = [
        // Before the join request.
        ("proof first", false, proof([1; 32])),
        (
            "challenge from a child",
            false,
            encode(&Frame::Challenge {
                nonce: [0; 16],
                parent_id: CULPRIT,
                tag: [0; 32],
            }),
        ),
        // After the challenge, before the proof.
        ("publish", true, publish(&topic, b"early")),
        ("keep-alive", true, encode(&Frame::KeepAlive)),
        ("second join request", true, join_request(CULPRIT, [3; 16])),
        (
            "join accept",
            true,
            encode(&Frame::JoinAccept { path: Path::new() }),
        ),
        (
            "deliver",
            true,
            encode(&Frame::Deliver {
                topic: "esp8266-in/broadcast/x",
                payload: b"x",
            }),
        ),
    ];
    for (what, challenged, bytes) in early {
        let c = h.node.handle_child_connected(h.now).expect("a free slot");
        if challenged {
            let _ = h.challenge(c, CULPRIT);
        }
        let before = h.counters();
        h.feed(c, &bytes);
        let after = h.counters();
        assert_eq!(after.malformed, before.malformed + 1, "{what}");
        assert_eq!(
            after.handshake_failures,
            before.handshake_failures + 1,
            "{what}"
        );
        h.assert_protocol_close(c);
        assert!(!h.published(&topic), "{what}");
        assert_eq!(h.children(), [A, B], "{what}");
        h.clear();
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn garbage_in_place_of_the_proof_closes_the_link() {
    let (mut h, a, b) = parent();
    for bytes in [
        vec![0x00, 0x05, 0x05, 1, 2, 3, 4], // a proof cut short
        vec![0xff, 0xff, 0x05],             // an oversized header
        b"HELO\r\n".to_vec(),
    ] {
        let c = h.node.handle_child_connected(h.now).expect("a free slot");
        let _ = h.challenge(c, CULPRIT);
        let before = h.counters();
        h.feed(c, &bytes);
        assert_eq!(h.counters().malformed, before.malformed + 1, "{bytes:?}");
        h.assert_protocol_close(c);
        h.clear();
        assert_family_intact(&mut h, a, b);
    }
}

#[test]
fn second_join_request_on_an_authenticated_link_is_refused() {
    let (mut h, a, b) = parent();
    let c = h.join(CULPRIT);
    let before = h.counters();
    h.feed(c, &join_request(CULPRIT, [4; 16]));
    assert_eq!(h.counters().malformed, before.malformed + 1);
    h.assert_protocol_close(c);
    assert!(h.logged("sent JoinRequest while joined"));
    assert!(!h
        .sent_to(c)
        .iter()
        .any(|f| matches!(f, Frame::Challenge { .. })));
    h.clear();
    assert_family_intact(&mut h, a, b);
}

// ---- as a child ----------------------------------------------------------------------

#[test]
fn parent_with_another_key_is_refused_counted_and_penalised() {
    for wrong in [other_password(), other_ssid_base()] {
        let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
        let before = h.counters();
        h.send_challenge(PARENT_ID, &wrong);
        assert_eq!(
            h.sent_to(LinkId::Parent),
            [Frame::Leave {
                reason: Reason::Auth
            }],
            "no proof for a parent that did not prove the key"
        );
        assert!(h.asked(&Action::CloseLink(LinkId::Parent)));
        let after = h.counters();
        assert_eq!(after.auth_failures, before.auth_failures + 1);
        assert_eq!(after.refused_parents, before.refused_parents + 1);
        assert!(h.logged("failed to prove the mesh password"));
        assert!(!h.node.connected());
        // Kept out of the ranking for a while, as other refusals are.
        h.clear();
        h.assert_retries_uplink();
        h.clear();
        h.node
            .handle_scan_done(h.now, &[mesh_entry(PARENT_CHIP, -30)]);
        h.drain();
        assert_eq!(h.associating_with(), None);
    }
}

#[test]
fn replayed_challenge_fails_against_a_fresh_request() {
    let mut h = joining_child(short_timing(), &[PARENT_CHIP, OTHER_PARENT_CHIP]);
    // A genuine challenge for the first request, recorded.
    let request_bytes = h.join_request_sent.clone().unwrap();
    let Ok(Frame::JoinRequest(req)) = Frame::decode(&request_bytes[HEADER_LEN..]) else {
        panic!("not a join request")
    };
    let t = Transcript::new(&req, &[0x5a; 16], PARENT_ID).unwrap();
    let recorded = encode(&Frame::Challenge {
        nonce: [0x5a; 16],
        parent_id: PARENT_ID,
        tag: key().parent_tag(&t),
    });
    // The link drops before it is used; the node joins the next parent afresh.
    h.node.handle_link_closed(h.now, LinkId::Parent);
    h.drain();
    let next = identity::ap_mac(OTHER_PARENT_CHIP, mesh_key());
    assert_eq!(h.associating_with(), Some(next));
    h.node.handle_associated(h.now, next, Ok(IP));
    h.node.handle_link_opened(h.now, LinkId::Parent);
    h.drain();
    h.clear();
    let second = h.join_request_sent.clone().unwrap();
    assert_ne!(second, request_bytes, "a fresh nonce");
    let before = h.counters();
    h.feed(LinkId::Parent, &recorded);
    assert_eq!(
        h.sent_to(LinkId::Parent),
        [Frame::Leave {
            reason: Reason::Auth
        }]
    );
    assert_eq!(h.counters().auth_failures, before.auth_failures + 1);
    assert!(!h.node.connected());
}

#[test]
fn parent_skipping_the_challenge_is_a_protocol_error() {
    let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
    let before = h.counters();
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinAccept {
            path: path(&[PARENT_ID]),
        }),
    );
    let after = h.counters();
    assert_eq!(after.malformed, before.malformed + 1);
    assert_eq!(after.handshake_failures, before.handshake_failures + 1);
    h.assert_protocol_close(LinkId::Parent);
    assert!(!h.node.connected());
}

#[test]
fn frames_out_of_order_from_the_parent_close_the_link() {
    let deliver = encode(&Frame::Deliver {
        topic: "esp8266-in/broadcast/x",
        payload: b"x",
    });
    let cases: [(&str, bool, Vec<u8>); 5] = [
        ("deliver before the challenge", false, deliver.clone()),
        (
            "keep-alive before the challenge",
            false,
            encode(&Frame::KeepAlive),
        ),
        ("proof from a parent", false, proof([0; 32])),
        ("deliver after the challenge", true, deliver),
        (
            "second challenge",
            true,
            encode(&Frame::Challenge {
                nonce: [1; 16],
                parent_id: PARENT_ID,
                tag: [0; 32],
            }),
        ),
    ];
    for (what, challenged, bytes) in cases {
        let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
        if challenged {
            h.pass_challenge(PARENT_ID);
        }
        let before = h.counters();
        h.feed(LinkId::Parent, &bytes);
        let after = h.counters();
        assert_eq!(after.malformed, before.malformed + 1, "{what}");
        assert_eq!(
            after.handshake_failures,
            before.handshake_failures + 1,
            "{what}"
        );
        h.assert_protocol_close(LinkId::Parent);
        assert!(h.events.is_empty(), "{what}: nothing delivered");
        assert!(!h.node.connected(), "{what}");
    }
}

#[test]
fn join_accept_from_another_parent_than_the_challenger_is_refused() {
    let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
    h.pass_challenge(PARENT_ID);
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinAccept {
            path: path(&["ROOT", "IMPOSTOR"]),
        }),
    );
    assert_eq!(
        h.sent_to(LinkId::Parent),
        [Frame::Leave {
            reason: Reason::Protocol
        }]
    );
    assert!(!h.node.connected());
}

#[test]
fn parent_refusing_our_proof_is_counted() {
    let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
    h.pass_challenge(PARENT_ID);
    let before = h.counters();
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinReject {
            reason: Reason::Auth,
        }),
    );
    let after = h.counters();
    assert_eq!(after.auth_failures, before.auth_failures + 1);
    assert_eq!(after.refused_parents, before.refused_parents + 1);
    assert!(h.asked(&Action::CloseLink(LinkId::Parent)));
    assert!(!h.node.connected());
}

#[test]
fn join_stalled_by_the_parent_times_out_and_is_counted() {
    for challenged in [false, true] {
        let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
        if challenged {
            h.pass_challenge(PARENT_ID);
        }
        let before = h.counters();
        while h.node.state() == State::Joining {
            h.step();
        }
        assert_eq!(
            h.counters().handshake_failures,
            before.handshake_failures + 1
        );
        assert!(h.asked(&Action::CloseLink(LinkId::Parent)));
        assert!(h.logged("Joining timed out"));
    }
}

#[test]
fn child_leaving_because_our_challenge_failed_is_counted() {
    let (mut h, a, b) = parent();
    let c = h.node.handle_child_connected(h.now).expect("a free slot");
    let _ = h.challenge(c, CULPRIT);
    let before = h.counters();
    h.feed(
        c,
        &encode(&Frame::Leave {
            reason: Reason::Auth,
        }),
    );
    let after = h.counters();
    assert_eq!(after.auth_failures, before.auth_failures + 1);
    assert_eq!(after.rejected_joins, before.rejected_joins + 1);
    assert!(h.asked(&Action::CloseLink(c)));
    assert!(h.logged("could not verify our challenge"));
    publish_after_refusal(&mut h, c);
    assert_family_intact(&mut h, a, b);
}
