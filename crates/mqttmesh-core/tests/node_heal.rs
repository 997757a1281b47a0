//! Healing after the parent dies (`docs/PROTOCOL.md` "Healing"): background scans keep
//! the candidate cache fresh without leaving the mesh; an orphan tries the cached
//! candidates the loss cannot have taken first, its own depth next, never deeper ones,
//! then scans at once; a stale cache is not trusted.

mod common;

use common::*;
use mqttmesh_core::node::{AssocError, CANDIDATE_MAX_AGE, HELD_SCAN_INTERVAL};

const SHALLOW_CHIP: u32 = 0x0B0001;
const SAME_DEPTH_CHIP: u32 = 0x0B0002;
const DEEP_CHIP: u32 = 0x0B0003;

fn entry(chip: u32, rssi: i8, depth: u8) -> ScanEntry {
    ScanEntry {
        depth: Some(depth),
        free: Some(2),
        ..mesh_entry(chip, rssi)
    }
}

fn mac(chip: u32) -> Mac {
    identity::ap_mac(chip, mesh_key())
}

/// A node at depth 2 below `PARENT_ID` with `timing`.
fn joined(timing: Timing) -> Harness {
    joined_child(timing, &[PARENT_CHIP, OTHER_PARENT_CHIP])
}

/// A joined node refreshing its candidates every 4 s, stepped until it asked for its
/// first background scan.
fn background_scanning() -> Harness {
    let timing = Timing {
        candidate_refresh: Duration::from_secs(4),
        ..short_timing()
    };
    let mut h = joined(timing);
    // The background scan comes within the refresh interval plus its jitter, while
    // the node stays online (the parent link's 9 s timeout is not reached).
    for _ in 0..20 {
        if h.asked_scan() {
            break;
        }
        h.step();
    }
    assert!(
        h.asked(&Action::ScanChannel(6)),
        "a background scan, of our channel only"
    );
    h
}

#[test]
fn orphan_tries_refreshed_candidates_shallow_first_then_scans_at_once() {
    let mut h = background_scanning();
    assert_eq!(h.node.state(), State::Mesh);
    let entries = [
        entry(DEEP_CHIP, -30, 3),
        entry(SAME_DEPTH_CHIP, -40, 2),
        entry(PARENT_CHIP, -45, 1),
        entry(SHALLOW_CHIP, -70, 1),
    ];
    h.node.handle_scan_done(h.now, &entries);
    h.drain();
    assert!(h.logged("background scan: 4 APs, 3 candidates"));
    assert_eq!(h.node.state(), State::Mesh, "still online");
    assert!(h.associating_with().is_none(), "no switch");
    h.clear();

    // The parent dies.
    h.node.handle_link_closed(h.now, LinkId::Parent);
    h.drain();
    assert!(h.logged("2 cached candidate(s) to try before scanning"));
    assert_eq!(
        h.associating_with(),
        Some(mac(SHALLOW_CHIP)),
        "the shallower candidate first, though weaker"
    );
    h.clear();
    h.node
        .handle_associated(h.now, mac(SHALLOW_CHIP), Err(AssocError::Full));
    h.drain();
    assert_eq!(
        h.associating_with(),
        Some(mac(SAME_DEPTH_CHIP)),
        "then our depth"
    );
    h.clear();
    h.node
        .handle_associated(h.now, mac(SAME_DEPTH_CHIP), Err(AssocError::NotFound));
    h.drain();
    assert!(h.associating_with().is_none(), "never the deeper one");
    assert!(
        h.asked(&Action::ScanChannel(6)),
        "a scan at once, no backoff, of our channel"
    );
    assert_eq!(h.node.state(), State::Scanning);
}

#[test]
fn orphan_trusts_its_cache_only_while_fresh() {
    // Slow keep-alives so the link outlives the cache without feeding it.
    let timing = Timing {
        keepalive_interval: Duration::from_secs(100),
        link_timeout: Duration::from_secs(200),
        ..short_timing()
    };
    for (age, cached) in [(Duration::from_secs(10), true), (CANDIDATE_MAX_AGE, false)] {
        let mut h = joined(timing);
        h.now += age;
        h.node.handle_link_closed(h.now, LinkId::Parent);
        h.drain();
        if cached {
            assert_eq!(h.associating_with(), Some(mac(OTHER_PARENT_CHIP)));
        } else {
            assert!(h.logged("0 cached candidate(s)"));
            assert!(h.associating_with().is_none());
            assert!(
                h.asked(&Action::ScanChannel(6)),
                "stale cache: a scan of our channel at once"
            );
        }
    }
}

#[test]
fn background_scan_result_after_going_offline_is_ignored() {
    let mut h = background_scanning();
    h.node.handle_link_closed(h.now, LinkId::Parent);
    h.drain();
    let state = h.node.state();
    h.node
        .handle_scan_done(h.now, &[entry(SHALLOW_CHIP, -40, 1)]);
    h.drain();
    assert_eq!(h.node.state(), state, "the late result changes nothing");
    assert!(!h.logged("background scan:"));
}

#[test]
fn an_ap_that_was_gone_is_a_candidate_again_once_a_scan_sees_it() {
    let mut h = joined(short_timing());
    h.node.handle_link_closed(h.now, LinkId::Parent);
    h.drain();
    assert_eq!(h.associating_with(), Some(mac(OTHER_PARENT_CHIP)));
    h.clear();
    // It had closed its AP to re-join elsewhere.
    h.node
        .handle_associated(h.now, mac(OTHER_PARENT_CHIP), Err(AssocError::NotFound));
    h.drain();
    assert!(h.asked(&Action::ScanChannel(6)), "a scan at once");
    h.clear();
    h.now += Duration::from_secs(1);
    // Its AP is back: no penalty keeps it out.
    h.node
        .handle_scan_done(h.now, &[entry(OTHER_PARENT_CHIP, -60, 2)]);
    h.drain();
    assert_eq!(h.associating_with(), Some(mac(OTHER_PARENT_CHIP)));
}

/// A node at depth 2 below `PARENT_ID` with child `A`, a grace period and background
/// scans, held by its parent (which lost its own uplink).
fn held_with_child() -> (Harness, LinkId) {
    let timing = Timing {
        uplink_grace: Duration::from_secs(6),
        candidate_refresh: Duration::from_secs(30),
        ..short_timing()
    };
    let mut h = joined(timing);
    let a = h.join(A);
    h.clear();
    h.feed(LinkId::Parent, &encode(&Frame::Hold));
    assert_eq!(h.node.state(), State::Held);
    assert_eq!(h.sent_to(a), [Frame::Hold], "our child is held too");
    assert!(
        h.asked(&Action::AdmitStations(false)),
        "our AP stays up for the child but admits nobody new"
    );
    h.clear();
    (h, a)
}

/// Steps a held node to its scan for an AP with a path (its parent and child `a` keep
/// their links alive meanwhile).
fn held_scan(h: &mut Harness, a: LinkId) {
    h.now += HELD_SCAN_INTERVAL;
    h.feed(LinkId::Parent, &encode(&Frame::KeepAlive));
    h.feed(a, &encode(&Frame::KeepAlive));
    h.node.handle_timeout(h.now);
    h.drain();
    assert!(
        h.asked(&Action::ScanChannel(6)),
        "a held node looks around, on its channel"
    );
    assert_eq!(h.node.state(), State::Held, "still held while it looks");
    h.clear();
}

#[test]
fn held_node_leaves_a_parent_that_cannot_get_back_for_an_ap_with_a_path() {
    let (mut h, a) = held_with_child();
    assert!(!h.asked_scan(), "the parent gets its chance first");
    held_scan(&mut h, a);
    let no_room = ScanEntry {
        free: Some(0),
        ..entry(SHALLOW_CHIP, -30, 1)
    };
    let no_hints = mesh_entry(DEEP_CHIP, -35);
    h.node.handle_scan_done(
        h.now,
        &[
            entry(PARENT_CHIP, -40, 1),
            no_room,
            no_hints,
            entry(SAME_DEPTH_CHIP, -70, 2),
        ],
    );
    h.drain();
    assert_eq!(h.counters().escapes, 1);
    assert_eq!(
        h.sent_to(LinkId::Parent),
        [Frame::Leave {
            reason: Reason::Going
        }],
        "the parent is told"
    );
    assert!(h.asked(&Action::CloseLink(LinkId::Parent)));
    assert_eq!(
        h.associating_with(),
        Some(mac(SAME_DEPTH_CHIP)),
        "the one AP that announces a path and room, though weakest"
    );
    assert!(h.sent_to(a).is_empty(), "our child stays held");
    assert!(!h.asked(&Action::CloseAp));
    h.clear();

    h.rejoin(mac(SAME_DEPTH_CHIP), "0B0002", &[PARENT_ID, "0B0002"]);
    assert_eq!(h.node.state(), State::Mesh);
    assert_eq!(
        h.sent_to(a),
        [Frame::Resume {
            path: path(&[PARENT_ID, "0B0002", OWN_ID])
        }],
        "the child comes along"
    );
    assert!(h.asked(&Action::OpenAp {
        ssid: identity::mesh_ssid(DEFAULT_MESH_SSID_BASE, &h.node.ap_mac()),
        bssid: h.node.ap_mac(),
        channel: 6,
        max_children: h.node.config().max_children,
        depth: 3,
    }));
}

#[test]
fn held_node_leaves_later_only_for_an_ap_that_kept_its_path_between_looks() {
    let (mut h, a) = held_with_child();
    held_scan(&mut h, a);
    let held_sibling = ScanEntry {
        depth: None,
        free: Some(0),
        ..entry(SAME_DEPTH_CHIP, -30, 2)
    };
    h.node
        .handle_scan_done(h.now, &[held_sibling, mesh_entry(SHALLOW_CHIP, -40)]);
    h.drain();
    assert_eq!(h.node.state(), State::Held, "nothing with a path: stay");
    assert!(h.sent_to(LinkId::Parent).is_empty());
    assert!(h.associating_with().is_none());
    h.clear();

    // The sibling is back (after a router outage, everyone is): it may be recovering
    // alongside our parent, which gets the same chance.
    held_scan(&mut h, a);
    h.node
        .handle_scan_done(h.now, &[entry(SAME_DEPTH_CHIP, -30, 2)]);
    h.drain();
    assert_eq!(h.node.state(), State::Held, "newly back: not yet");
    assert_eq!(h.counters().escapes, 0);
    h.clear();

    // Still there at the next look, and our parent still is not: leave for it.
    held_scan(&mut h, a);
    h.node
        .handle_scan_done(h.now, &[entry(SAME_DEPTH_CHIP, -30, 2)]);
    h.drain();
    assert_eq!(h.counters().escapes, 1);
    assert_eq!(h.associating_with(), Some(mac(SAME_DEPTH_CHIP)));
    assert!(h.sent_to(a).is_empty(), "our child stays held");
}

#[test]
fn held_node_resumes_with_its_parent_when_it_comes_back_first() {
    let (mut h, a) = held_with_child();
    held_scan(&mut h, a);
    h.feed(
        LinkId::Parent,
        &encode(&Frame::Resume {
            path: path(&["0B0009", PARENT_ID]),
        }),
    );
    assert_eq!(h.node.state(), State::Mesh);
    assert_eq!(h.node.depth(), Some(3));
    assert_eq!(
        h.sent_to(a),
        [Frame::Resume {
            path: path(&["0B0009", PARENT_ID, OWN_ID])
        }]
    );
    h.clear();
    // The look's late result is a background scan now: it moves nobody.
    h.node
        .handle_scan_done(h.now, &[entry(SAME_DEPTH_CHIP, -30, 2)]);
    h.drain();
    assert_eq!(h.node.state(), State::Mesh);
    assert!(h.associating_with().is_none());
    assert_eq!(h.counters().escapes, 0);
}

#[test]
fn an_orphan_scans_its_channel_quickly_then_every_channel_after_the_grace_period() {
    let timing = Timing {
        uplink_grace: Duration::from_secs(6),
        ..short_timing()
    };
    let mut h = joined(timing);
    h.now += CANDIDATE_MAX_AGE;
    h.node.handle_link_closed(h.now, LinkId::Parent);
    h.drain();
    assert!(
        h.asked(&Action::ScanChannel(6)),
        "a stale cache: our channel"
    );
    h.clear();
    let lost = h.now;
    // Nothing there yet (a sibling re-joining has closed its AP): look again soon.
    h.node.handle_scan_done(h.now, &[]);
    h.drain();
    let again = h.node.poll_timeout().expect("a next scan");
    assert!(
        again <= h.now + Duration::from_millis(450),
        "the next channel scan within 450 ms, not a backoff"
    );
    h.step();
    assert!(h.asked(&Action::ScanChannel(6)));
    h.clear();
    // Still nothing by the end of the grace period plus a link timeout: every channel.
    while h.now < lost + Duration::from_secs(6 + 9) {
        h.node.handle_scan_done(h.now, &[]);
        h.drain();
        h.clear();
        h.step();
    }
    assert!(
        h.asked(&Action::Scan),
        "the mesh may have moved: every channel"
    );
}
