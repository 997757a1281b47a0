//! Re-balancing (`node::rebalance`): a starved node knocks on a full AP, the full parent
//! asks a child to make room, the child moves to a free AP no deeper than its parent,
//! holding its own children; every step bounded and counted.

mod common;

use common::*;
use mqttmesh_core::node::{ASK_INTERVAL, FULL_FOR, MOVE_INTERVAL};

const OTHER_PARENT_ID: &str = "000002";
const DEEP_CHIP: u32 = 0x000003;

fn grace_timing() -> Timing {
    Timing {
        uplink_grace: Duration::from_secs(6),
        ..short_timing()
    }
}

fn entry(chip: u32, rssi: i8, depth: u8, free: u8) -> ScanEntry {
    ScanEntry {
        depth: Some(depth),
        free: Some(free),
        ..mesh_entry(chip, rssi)
    }
}

fn station(chip: u32) -> Mac {
    identity::station_mac(chip, mesh_key())
}

/// Long enough after filling up (and after any earlier ask), the same station is
/// turned away twice.
fn knock_twice_later(h: &mut Harness) {
    h.now += FULL_FOR + ASK_INTERVAL;
    for _ in 0..2 {
        h.node.handle_station_refused(h.now, station(0x00BEEF));
        h.drain();
    }
}

/// A starved station knocking twice gets no child asked to move.
fn assert_asks_nobody(h: &mut Harness) {
    knock_twice_later(h);
    assert!(make_room_sent(h).is_empty());
    assert_eq!(h.counters().rebalance_asks, 0);
}

fn make_room_sent(h: &Harness) -> Vec<LinkId> {
    h.transmits
        .iter()
        .filter(|(_, b)| matches!(Frame::decode(&b[HEADER_LEN..]), Ok(Frame::MakeRoom)))
        .map(|(l, _)| *l)
        .collect()
}

/// A root with four children (its `max_children`).
fn full_root() -> (Harness, Vec<LinkId>) {
    let mut h = root();
    let links = ["111111", "222222", "333333", "444444"]
        .iter()
        .map(|id| h.join(id))
        .collect();
    assert_eq!(h.children().len(), 4);
    (h, links)
}

#[test]
fn a_full_parent_asks_one_child_at_a_time_and_only_after_being_full_a_while() {
    let (mut h, links) = full_root();
    // Just filled up: a station refused now is a join race, not a starved neighbour.
    h.node.handle_station_refused(h.now, station(0x00BEEF));
    h.drain();
    h.now += Duration::from_secs(2);
    h.node.handle_station_refused(h.now, station(0x00BEEF));
    h.drain();
    assert!(make_room_sent(&h).is_empty());
    assert_eq!(h.counters().stations_refused, 2);

    // Full for a while, but a station refused only once may have raced for a slot with
    // a stale beacon: no request yet.
    h.now += FULL_FOR;
    h.node.handle_station_refused(h.now, station(0x00CAFE));
    h.drain();
    assert!(make_room_sent(&h).is_empty());
    h.node.handle_station_refused(h.now, station(0x00BEEF));
    h.drain();
    let first = make_room_sent(&h);
    assert_eq!(first.len(), 1, "one child asked");
    assert!(links.contains(&first[0]));
    assert_eq!(h.counters().rebalance_asks, 1);
    h.clear();

    // Rate limited.
    h.now += Duration::from_secs(1);
    h.node.handle_station_refused(h.now, station(0x00BEEF));
    h.drain();
    assert!(make_room_sent(&h).is_empty());

    // A stranger's station does not count at all.
    h.now += ASK_INTERVAL;
    h.node
        .handle_station_refused(h.now, Mac([0x10, 0x20, 0x30, 0x40, 0x50, 0x60]));
    h.drain();
    assert!(make_room_sent(&h).is_empty());
    assert_eq!(h.counters().stations_refused, 5);

    // Next time, the next child (round robin).
    h.node.handle_station_refused(h.now, station(0x00BEEF));
    h.drain();
    let second = make_room_sent(&h);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "another child is asked");
    assert_eq!(h.counters().rebalance_asks, 2);
    assert_eq!(h.children().len(), 4, "asking drops nobody");
}

#[test]
fn only_children_that_said_they_understand_make_room_are_asked() {
    // Three older children (no capability marker: they would close the link on the
    // unknown frame) and one current one.
    let mut h = root();
    h.child_caps = 0;
    for id in ["111111", "222222", "333333"] {
        h.join(id);
    }
    h.child_caps = mqttmesh_core::link::subtree::CAP_MAKE_ROOM;
    let current = h.join("444444");
    for round in 0..3 {
        knock_twice_later(&mut h);
        assert_eq!(make_room_sent(&h), vec![current], "round {round}");
        h.clear();
    }
    // With only older children, nobody is asked.
    let mut h = root();
    h.child_caps = 0;
    for id in ["111111", "222222", "333333", "444444"] {
        h.join(id);
    }
    assert_asks_nobody(&mut h);
}

#[test]
fn a_joining_node_marks_its_nonce_as_understanding_make_room() {
    let h = joining_child(grace_timing(), &[PARENT_CHIP]);
    let sent = h
        .join_request_sent
        .as_ref()
        .expect("a join request was sent");
    let Ok(Frame::JoinRequest(req)) = Frame::decode(&sent[HEADER_LEN..]) else {
        panic!("not a join request");
    };
    let caps = mqttmesh_core::link::subtree::caps_of(&req.nonce);
    assert_ne!(caps & mqttmesh_core::link::subtree::CAP_MAKE_ROOM, 0);
}

#[test]
fn a_parent_with_a_free_slot_asks_nobody() {
    let (mut h, _, _) = parent();
    assert_asks_nobody(&mut h);
}

/// A node at depth 2 below `PARENT_ID` (depth 1), with child `A`, grace period on.
fn mesh_child_with_child() -> (Harness, LinkId) {
    let mut h = joined_child(grace_timing(), &[PARENT_CHIP]);
    let a = h.join(A);
    (h, a)
}

#[test]
fn a_child_moves_to_a_free_ap_no_deeper_than_its_parent_and_holds_its_own_children() {
    let (mut h, a) = mesh_child_with_child();
    h.feed(LinkId::Parent, &encode(&Frame::MakeRoom));
    assert!(h.asked(&Action::Scan), "a background scan");
    assert_eq!(h.node.state(), State::Mesh, "still online while scanning");
    h.clear();

    let other = identity::ap_mac(OTHER_PARENT_CHIP, mesh_key());
    h.node.handle_scan_done(
        h.now,
        &[
            entry(PARENT_CHIP, -40, 1, 0),
            // Stronger, free, but deeper than us: could be in our subtree.
            entry(DEEP_CHIP, -30, 3, 3),
            // Free at our own depth: only if nothing shallower has room.
            entry(0x000004, -35, 2, 2),
            entry(OTHER_PARENT_CHIP, -60, 1, 1),
        ],
    );
    h.drain();
    assert_eq!(h.counters().rebalance_moves, 1);
    assert_eq!(
        h.sent_to(LinkId::Parent),
        [Frame::Leave {
            reason: Reason::Going
        }],
        "the old parent is told"
    );
    assert!(h.asked(&Action::CloseLink(LinkId::Parent)));
    assert_eq!(
        h.sent_to(a),
        [Frame::Hold],
        "our child is held, not dropped"
    );
    assert!(!h.asked(&Action::CloseAp));
    assert_eq!(h.associating_with(), Some(other));
    h.clear();

    h.rejoin(other, OTHER_PARENT_ID, &[OTHER_PARENT_ID]);
    assert_eq!(h.node.state(), State::Mesh);
    assert_eq!(h.node.depth(), Some(2), "no deeper than before");
    assert_eq!(
        h.sent_to(a),
        [Frame::Resume {
            path: path(&[OTHER_PARENT_ID, OWN_ID])
        }]
    );
    assert_eq!(h.children(), [A]);
    h.clear();

    // Asked again soon after: declines without scanning.
    h.feed(LinkId::Parent, &encode(&Frame::MakeRoom));
    assert!(!h.asked(&Action::Scan));
    assert_eq!(h.counters().rebalance_declined, 1);
    assert_eq!(h.counters().rebalance_moves, 1);
}

#[test]
fn a_child_with_nowhere_better_to_go_stays() {
    let (mut h, a) = mesh_child_with_child();
    h.feed(LinkId::Parent, &encode(&Frame::MakeRoom));
    assert!(h.asked(&Action::Scan));
    h.clear();
    h.node.handle_scan_done(
        h.now,
        &[
            entry(PARENT_CHIP, -40, 1, 0),
            entry(OTHER_PARENT_CHIP, -50, 1, 0),
            entry(DEEP_CHIP, -30, 3, 3),
        ],
    );
    h.drain();
    assert_eq!(h.counters().rebalance_declined, 1);
    assert_eq!(h.counters().rebalance_moves, 0);
    assert_eq!(h.node.state(), State::Mesh);
    assert!(h.sent_to(LinkId::Parent).is_empty());
    assert!(h.actions.is_empty(), "nothing closed, nothing associated");
    let topic = format!("{OUT}{A}/probe");
    h.feed(a, &publish(&topic, b"ping"));
    assert!(
        matches!(
            h.sent_to(LinkId::Parent).as_slice(),
            [Frame::Publish { .. }]
        ),
        "A's link still relays"
    );
    h.clear();

    // The limit on moves is per interval: after MOVE_INTERVAL a new request scans again.
    h.now += MOVE_INTERVAL;
    h.feed(LinkId::Parent, &encode(&Frame::MakeRoom));
    assert!(h.asked(&Action::Scan));
}

#[test]
fn a_starved_node_knocks_on_full_aps_in_turn_and_joins_once_one_has_room() {
    let mut h = Harness::new(short_timing());
    h.step();
    assert!(h.asked(&Action::Scan));
    h.clear();
    let first = identity::ap_mac(PARENT_CHIP, mesh_key());
    let second = identity::ap_mac(OTHER_PARENT_CHIP, mesh_key());
    let full = [
        entry(PARENT_CHIP, -40, 1, 0),
        entry(OTHER_PARENT_CHIP, -50, 1, 0),
    ];
    h.node.handle_scan_done(h.now, &full);
    h.drain();
    assert_eq!(h.associating_with(), Some(first), "knocks on the best");
    assert_eq!(h.counters().rebalance_knocks, 1);
    h.clear();
    h.node
        .handle_associated(h.now, first, Err(mqttmesh_core::node::AssocError::Full));
    h.drain();

    // Looks again soon (no growing backoff), and knocks on the other one.
    let knocked_at = h.now;
    for _ in 0..3 {
        h.step();
        if h.asked(&Action::Scan) {
            break;
        }
    }
    assert!(h.asked(&Action::Scan));
    assert!(h.now <= knocked_at + Duration::from_millis(1000));
    h.clear();
    h.node.handle_scan_done(h.now, &full);
    h.drain();
    assert_eq!(h.associating_with(), Some(second), "the first one rests");
    h.clear();
    h.node
        .handle_associated(h.now, second, Err(mqttmesh_core::node::AssocError::Full));
    h.drain();

    // Both knocked: the next scan finds nothing to knock on and waits as usual.
    for _ in 0..3 {
        h.step();
        if h.asked(&Action::Scan) {
            break;
        }
    }
    h.clear();
    h.node.handle_scan_done(h.now, &full);
    h.drain();
    assert_eq!(h.associating_with(), None, "both rest");
    assert_eq!(h.counters().rebalance_knocks, 2);

    // The first AP made room: its beacon shows a free slot, the node joins it at once
    // (a knock is no penalty).
    for _ in 0..5 {
        h.step();
        if h.asked(&Action::Scan) {
            break;
        }
    }
    assert!(h.asked(&Action::Scan));
    h.clear();
    h.node.handle_scan_done(
        h.now,
        &[
            entry(PARENT_CHIP, -40, 1, 1),
            entry(OTHER_PARENT_CHIP, -50, 1, 0),
        ],
    );
    h.drain();
    assert_eq!(h.associating_with(), Some(first));
    assert_eq!(
        h.counters().rebalance_knocks,
        2,
        "an ordinary join, not a knock"
    );
}
