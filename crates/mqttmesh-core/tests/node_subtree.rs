//! Subtree announcements and OTA filtering through the node's public run-loop API
//! (`docs/PROTOCOL.md` "Subtree announcements"): a child announces itself to a parent
//! that asks for it (and never to one that does not), a relay aggregates its children,
//! overflows and silent children make a list unknown, a leaving child's summary goes,
//! and OTA traffic only goes down the branches that may hold its target.

mod common;

use common::*;
use mqttmesh_core::link::subtree::{self, Subtree, CAP_SUBTREE, MAX_SUBTREE_FIRMWARE};

const FW: u32 = 0x1337;

fn subtree(firmware: &[u32], fw_complete: bool, nodes: &[&str], nodes_complete: bool) -> Subtree {
    Subtree {
        firmware: firmware.iter().copied().collect(),
        firmware_complete: fw_complete,
        nodes: nodes.iter().map(|s| NodeId::new(s).unwrap()).collect(),
        nodes_complete,
    }
}

fn announce(h: &mut Harness, link: LinkId, s: Subtree) {
    h.feed(link, &encode(&Frame::Subtree(s)));
    assert!(
        !h.asked(&Action::CloseLink(link)),
        "the announcement is accepted"
    );
}

/// The announcements sent to the parent since the last `clear`.
fn announced(h: &Harness) -> Vec<Subtree> {
    h.sent_to(LinkId::Parent)
        .into_iter()
        .filter_map(|f| match f {
            Frame::Subtree(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// Steps the clock until the node sends an announcement (bounded); the announcement.
fn next_announcement(h: &mut Harness) -> Subtree {
    h.clear();
    for _ in 0..10 {
        h.step();
        if let Some(s) = announced(h).pop() {
            h.clear();
            return s;
        }
    }
    panic!("no announcement");
}

/// A node at depth 2 below `PARENT_ID`, whose parent marked its Challenge nonce with
/// `caps`.
fn mesh_child_of(caps: u8) -> Harness {
    let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
    let request_bytes = h.join_request_sent.clone().expect("a join request");
    let Ok(Frame::JoinRequest(req)) = Frame::decode(&request_bytes[HEADER_LEN..]) else {
        panic!("not a join request");
    };
    let mut parent_nonce = [0x5a; 16];
    if caps != 0 {
        subtree::mark_caps(&mut parent_nonce, caps);
    }
    let t = Transcript::new(&req, &parent_nonce, PARENT_ID).unwrap();
    h.feed(
        LinkId::Parent,
        &encode(&Frame::Challenge {
            nonce: parent_nonce,
            parent_id: PARENT_ID,
            tag: key().parent_tag(&t),
        }),
    );
    h.clear();
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinAccept {
            path: path(&[PARENT_ID]),
        }),
    );
    assert_eq!(h.node.state(), State::Mesh);
    h
}

#[test]
fn a_joined_node_announces_itself_to_a_parent_that_asks() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    assert!(h.node.parent_takes_subtree());
    // Sent on the JoinAccept, ahead of the node's own `info/*` publications.
    let sent = h.sent_to(LinkId::Parent);
    assert!(matches!(sent.first(), Some(Frame::Subtree(_))), "{sent:?}");
    assert!(sent
        .iter()
        .skip(1)
        .any(|f| matches!(f, Frame::Publish { .. })));
    assert_eq!(announced(&h), [subtree(&[FW], true, &[OWN_ID], true)]);
    assert_eq!(h.counters().subtree_sent, 1);
    h.clear();
    // Nothing changed: nothing more is said.
    for _ in 0..5 {
        h.step();
    }
    assert!(announced(&h).is_empty());
}

#[test]
fn an_older_parent_never_gets_an_announcement() {
    let mut h = mesh_child_of(0);
    assert!(!h.node.parent_takes_subtree());
    let a = h.join(A);
    announce(&mut h, a, subtree(&[0xA], true, &[A], true));
    for _ in 0..5 {
        h.step();
    }
    assert!(announced(&h).is_empty());
    assert_eq!(h.counters().subtree_sent, 0);
}

#[test]
fn a_relay_announces_the_union_of_its_children() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    let a = h.join(A);
    announce(&mut h, a, subtree(&[0xA, FW], true, &[A, "A1"], true));
    let s = next_announcement(&mut h);
    assert_eq!(s, subtree(&[0xA, FW], true, &[OWN_ID, A, "A1"], true));
    // The announced descendant is routable before it ever published.
    assert_eq!(h.node.routes_len(), 2);
}

#[test]
fn a_widening_goes_up_at_once_ahead_of_what_follows_it() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    let a = h.join(A);
    announce(&mut h, a, subtree(&[FW], true, &[A], true));
    let settled = next_announcement(&mut h);
    assert_eq!(settled, subtree(&[FW], true, &[OWN_ID, A], true));
    // A2 joins below A with another firmware: A announces, then relays A2's `online`.
    h.feed(
        a,
        &encode(&Frame::Subtree(subtree(
            &[FW, 0xA2],
            true,
            &[A, "A2"],
            true,
        ))),
    );
    h.feed(a, &publish(&format!("{OUT}A2/info/available"), b"online"));
    let sent = h.sent_to(LinkId::Parent);
    assert!(
        matches!(
            sent.as_slice(),
            [Frame::Subtree(s), Frame::Publish { .. }]
                if s.firmware.contains(&0xA2) && s.nodes.iter().any(|n| n.as_str() == "A2")
        ),
        "{sent:?}"
    );
}

#[test]
fn a_joining_child_makes_the_lists_unknown_at_once() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    let link = h.node.handle_child_connected(h.now).expect("a free slot");
    let t = h.challenge(link, A);
    h.feed(link, &proof(key().child_tag(&t)));
    // No time passes: the join itself widened what the parent knew.
    let s = announced(&h).pop().expect("an announcement on the join");
    assert!(!s.firmware_complete && !s.nodes_complete);
}

#[test]
fn a_child_that_never_announced_makes_the_lists_unknown() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    let a = h.join(A);
    announce(&mut h, a, subtree(&[0xA], true, &[A], true));
    let _b = h.join(B);
    let s = next_announcement(&mut h);
    assert!(!s.firmware_complete && !s.nodes_complete, "{s:?}");
    assert!(s.firmware.contains(&0xA));
}

#[test]
fn too_many_firmware_ids_overflow_to_unknown() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    let a = h.join(A);
    let many: Vec<u32> = (1..=MAX_SUBTREE_FIRMWARE as u32).collect();
    announce(&mut h, a, subtree(&many, true, &[A], true));
    let s = next_announcement(&mut h);
    assert!(!s.firmware_complete, "9 firmware IDs do not fit in 8");
    assert_eq!(s.firmware.len(), MAX_SUBTREE_FIRMWARE);
    assert!(s.nodes_complete);
    // A child whose own list overflowed is unknown too.
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    let a = h.join(A);
    announce(&mut h, a, subtree(&[0xA], false, &[A], true));
    assert!(!next_announcement(&mut h).firmware_complete);
}

#[test]
fn a_leaving_child_takes_its_summary_with_it() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    let a = h.join(A);
    announce(&mut h, a, subtree(&[0xA], true, &[A, "A1"], true));
    let b = h.join(B);
    announce(&mut h, b, subtree(&[0xB], true, &[B], true));
    let s = next_announcement(&mut h);
    assert_eq!(
        s,
        subtree(&[0xA, 0xB, FW], true, &[OWN_ID, A, "A1", B], true)
    );
    h.node.handle_link_closed(h.now, a);
    h.drain();
    let s = next_announcement(&mut h);
    assert_eq!(s, subtree(&[0xB, FW], true, &[OWN_ID, B], true));
    assert_eq!(h.node.routes_len(), 1);
}

#[test]
fn a_complete_announcement_replaces_the_branch_routes() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    let a = h.join(A);
    announce(&mut h, a, subtree(&[0xA], true, &[A, "A1", "A2"], true));
    announce(&mut h, a, subtree(&[0xA], true, &[A, "A2"], true));
    let s = next_announcement(&mut h);
    assert_eq!(s, subtree(&[0xA, FW], true, &[OWN_ID, A, "A2"], true));
}

/// A root with children A (firmware 0xA, below it A1), B (firmware 0xB, below it B1)
/// and C, which never announces (an older node).
fn root_with_branches() -> (Harness, LinkId, LinkId, LinkId) {
    let mut h = root();
    let a = h.join(A);
    let b = h.join(B);
    let c = h.join(CULPRIT);
    announce(&mut h, a, subtree(&[0xA], true, &[A, "A1"], true));
    announce(&mut h, b, subtree(&[0xB], true, &[B, "B1"], true));
    h.clear();
    (h, a, b, c)
}

fn delivered(h: &Harness, link: LinkId, topic: &str) -> bool {
    h.sent_to(link)
        .iter()
        .any(|f| matches!(f, Frame::Deliver { topic: t, .. } if *t == topic))
}

#[test]
fn ota_for_a_firmware_goes_only_where_it_runs_or_may_run() {
    let (mut h, a, b, c) = root_with_branches();
    for topic in [
        format!("{IN}ota/A/start"),
        format!("{IN}ota/0xa/0"),
        format!("{IN}ota2/A/12345678/c/0"),
    ] {
        h.clear();
        let before = h.counters().ota_filtered;
        h.node.handle_mqtt_message(h.now, &topic, b"x");
        h.drain();
        assert!(delivered(&h, a, &topic), "{topic} reaches A's branch");
        assert!(!delivered(&h, b, &topic), "{topic} skips B's branch");
        assert!(
            delivered(&h, c, &topic),
            "{topic} reaches the unknown branch"
        );
        assert_eq!(h.counters().ota_filtered, before + 1);
    }
    // A firmware nobody announced: only the unknown branch.
    let topic = format!("{IN}ota/7777/start");
    h.clear();
    h.node.handle_mqtt_message(h.now, &topic, b"x");
    h.drain();
    assert!(!delivered(&h, a, &topic) && !delivered(&h, b, &topic));
    assert!(delivered(&h, c, &topic));
}

#[test]
fn ota_for_a_node_follows_its_route() {
    let (mut h, a, b, c) = root_with_branches();
    // `B1` is also firmware 0xB1, which runs nowhere that announced.
    let topic = format!("{IN}ota2/B1/status");
    h.node.handle_mqtt_message(h.now, &topic, b"");
    h.drain();
    assert!(
        delivered(&h, b, &topic),
        "B1 lives below B (announced, never published)"
    );
    assert!(!delivered(&h, a, &topic));
    assert!(
        delivered(&h, c, &topic),
        "0xB1 may run in the unknown branch"
    );
    // Not a firmware ID: the route alone decides.
    let topic = format!("{IN}ota/node-x/start");
    h.clear();
    h.node.handle_mqtt_message(h.now, &topic, b"");
    h.drain();
    assert!(!delivered(&h, a, &topic) && !delivered(&h, b, &topic));
    assert!(
        delivered(&h, c, &topic),
        "an unknown node may be in the unknown branch"
    );
}

#[test]
fn broadcast_fw_and_node_messages_are_not_filtered() {
    let (mut h, a, b, c) = root_with_branches();
    for topic in [format!("{IN}broadcast/x"), format!("{IN}fw/x")] {
        h.clear();
        h.node.handle_mqtt_message(h.now, &topic, b"");
        h.drain();
        for link in [a, b, c] {
            assert!(delivered(&h, link, &topic), "{topic} to every child");
        }
    }
    let topic = format!("{IN}A1/cmd");
    h.clear();
    h.node.handle_mqtt_message(h.now, &topic, b"");
    h.drain();
    assert!(delivered(&h, a, &topic));
    assert!(!delivered(&h, b, &topic) && !delivered(&h, c, &topic));
    assert_eq!(h.counters().ota_filtered, 0);
}

#[test]
fn a_parent_sending_an_announcement_breaks_the_protocol() {
    let mut h = mesh_child_of(CAP_SUBTREE);
    h.clear();
    h.feed(
        LinkId::Parent,
        &encode(&Frame::Subtree(subtree(&[1], true, &[A], true))),
    );
    h.assert_protocol_close(LinkId::Parent);
}
