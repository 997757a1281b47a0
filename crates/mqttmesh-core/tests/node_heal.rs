//! Healing after the parent dies (`docs/PROTOCOL.md` "Healing"): background scans keep
//! the candidate cache fresh without leaving the mesh; an orphan tries the cached
//! candidates the loss cannot have taken first, its own depth next, never deeper ones,
//! then scans at once; a stale cache is not trusted.

mod common;

use common::*;
use mqttmesh_core::node::{AssocError, CANDIDATE_MAX_AGE};

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
    let mut h = joining_child(timing, &[PARENT_CHIP, OTHER_PARENT_CHIP]);
    h.pass_challenge(PARENT_ID);
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinAccept {
            path: path(&[PARENT_ID]),
        }),
    );
    assert_eq!(h.node.state(), State::Mesh);
    assert_eq!(h.node.depth(), Some(2));
    h.clear();
    h
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
        if h.asked(&Action::Scan) {
            break;
        }
        h.step();
    }
    assert!(h.asked(&Action::Scan), "a background scan");
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
    assert!(h.asked(&Action::Scan), "a scan at once, no backoff");
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
            assert!(h.asked(&Action::Scan), "stale cache: a scan at once");
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
    assert!(h.asked(&Action::Scan), "a scan at once");
    h.clear();
    h.now += Duration::from_secs(1);
    // Its AP is back: no penalty keeps it out.
    h.node
        .handle_scan_done(h.now, &[entry(OTHER_PARENT_CHIP, -60, 2)]);
    h.drain();
    assert_eq!(h.associating_with(), Some(mac(OTHER_PARENT_CHIP)));
}
