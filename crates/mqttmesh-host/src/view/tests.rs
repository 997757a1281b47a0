//! [`MeshView`] fed byte fixtures: our nodes, a node of the original C++ library,
//! hostile payloads.

use std::time::{Duration, Instant};

use super::*;

const OUT: &str = "esp8266-out/";
const ROUTER_BSSID: &[u8] = b"02:4D:45:53:48:01";

/// The retained `info/*` topics of one node, as the broker replays them.
fn info(id: &str, ap: &str, uplink: &[u8], rssi: &str) -> Vec<(String, Vec<u8>)> {
    let station = format!("06{}", &ap[2..]);
    [
        ("available", b"online".to_vec()),
        ("reset_Reason", b"Power on".to_vec()),
        ("MAC", station.into_bytes()),
        ("MAC_hosted_AP", ap.as_bytes().to_vec()),
        ("IP_local", b"10.1.1.2".to_vec()),
        ("RSSI", rssi.as_bytes().to_vec()),
        ("connectedTo", uplink.to_vec()),
    ]
    .into_iter()
    .map(|(sub, payload)| (format!("{OUT}{id}/info/{sub}"), payload))
    .collect()
}

/// A node of the original library: same topics, its own reset reasons and MACs.
fn original_node() -> Vec<(String, Vec<u8>)> {
    let id = "1A2B3C";
    let mut t = info(id, "5E:CF:7F:1A:2B:3C", b"02:13:A0:00:C3:D4", "-70");
    t[1].1 = b"External System".to_vec();
    t.push((
        format!("{OUT}{id}/fw"),
        b"ChipID:1A2B3C FirmwareID:0042 v1.2 IP:192.168.4.3 mesh".to_vec(),
    ));
    t
}

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let mut all = info("00A1B2", "02:C9:F4:00:A1:B2", ROUTER_BSSID, "-61");
    all.extend(info(
        "00C3D4",
        "02:13:A0:00:C3:D4",
        b"02:c9:f4:00:a1:b2",
        "-67",
    ));
    all.extend(original_node());
    let mut dead = info("00EEEE", "02:11:22:00:EE:EE", ROUTER_BSSID, "-80");
    dead[0].1 = b"offline".to_vec();
    all.extend(dead);
    all.push((
        format!("{OUT}00A1B2/fw"),
        b"ChipID:00A1B2 FirmwareID:1337 v0.1 IP:10.1.1.2".to_vec(),
    ));
    all.push((format!("{OUT}we\"ird\\/counter"), b"1".to_vec()));
    all
}

fn fed(msgs: &[(String, Vec<u8>)]) -> (MeshView, Instant, Vec<ViewEvent>) {
    let mut view = MeshView::new(OUT);
    let t0 = Instant::now();
    let mut events = Vec::new();
    for (topic, payload) in msgs {
        events.extend(view.apply(t0, topic, payload));
    }
    (view, t0, events)
}

/// The snapshot the render tests draw.
pub(crate) fn sample() -> Snapshot {
    let (view, t0, _) = fed(&fixtures());
    view.snapshot(t0)
}

/// The snapshot without traffic counts and times.
fn without_traffic(mut s: Snapshot) -> Snapshot {
    s.stats = Stats::default();
    for n in &mut s.node_list {
        (n.messages, n.msgs_per_sec, n.last_seen_ms) = (0, 0.0, None);
    }
    s
}

fn place(s: &Snapshot, id: &str) -> (Option<String>, Option<u8>, bool) {
    let n = s.node(id).unwrap_or_else(|| panic!("{id} missing"));
    (n.parent.clone(), n.depth, n.online)
}

fn at(parent: &str, depth: u8) -> (Option<String>, Option<u8>, bool) {
    (Some(parent.into()), Some(depth), true)
}

#[test]
fn tree_from_connected_to_and_hosted_ap() {
    let s = sample();
    assert_eq!(s.nodes, 5);
    assert_eq!(place(&s, "00A1B2"), at("router", 1));
    assert_eq!(place(&s, "00C3D4"), at("00A1B2", 2));
    assert_eq!(place(&s, "1A2B3C"), at("00C3D4", 3));
    assert_eq!(place(&s, "00EEEE"), (None, None, false));
    assert_eq!(place(&s, "we\"ird\\"), (None, None, false));
    assert_eq!(s.node("00A1B2").unwrap().children, ["00C3D4"]);
    assert_eq!((s.online, s.max_depth), (3, 3));
}

#[test]
fn an_original_library_node_shows_its_firmware_and_info() {
    let s = sample();
    let n = s.node("1A2B3C").unwrap();
    assert_eq!(n.firmware_id.as_deref(), Some("0042"));
    assert_eq!(n.firmware_version.as_deref(), Some("1.2"));
    assert_eq!(n.ip.as_deref(), Some("192.168.4.3"));
    assert_eq!(n.via_mesh, Some(true));
    assert_eq!(n.reset_reason.as_deref(), Some("External System"));
    assert_eq!(n.rssi, Some(-70));
    assert_eq!(n.mac.as_deref(), Some("06:CF:7F:1A:2B:3C"));
    assert_eq!(n.connected_to.as_deref(), Some("02:13:A0:00:C3:D4"));
}

#[test]
fn first_sight_reports_appeared_online_and_firmware() {
    let (_, _, events) = fed(&original_node());
    let id = "1A2B3C".to_string();
    assert_eq!(events[0], ViewEvent::Appeared { id: id.clone() });
    assert_eq!(events[1], ViewEvent::Online { id: id.clone() });
    assert!(events.contains(&ViewEvent::Firmware {
        id,
        from: None,
        to: Firmware {
            id: "0042".into(),
            version: "1.2".into()
        }
    }));
}

#[test]
fn reparenting_offline_and_firmware_changes_are_events() {
    let (mut view, t0, _) = fed(&fixtures());
    let t = |topic: &str| format!("{OUT}{topic}");
    let ev = view.apply(t0, &t("00C3D4/info/connectedTo"), ROUTER_BSSID);
    assert_eq!(
        ev,
        [ViewEvent::Reparented {
            id: "00C3D4".into(),
            from: "00A1B2".into(),
            to: "router".into()
        }]
    );
    assert_eq!(place(&view.snapshot(t0), "1A2B3C"), at("00C3D4", 2));
    let ev = view.apply(t0, &t("00C3D4/info/available"), b"offline");
    assert_eq!(
        ev,
        [ViewEvent::Offline {
            id: "00C3D4".into()
        }]
    );
    let s = view.snapshot(t0);
    assert_eq!(place(&s, "00C3D4"), (None, None, false));
    assert_eq!(
        s.node("00C3D4").unwrap().last_parent.as_deref(),
        Some("router")
    );
    // Its child still names it until it re-attaches: parent known, no depth.
    assert_eq!(place(&s, "1A2B3C"), (Some("00C3D4".into()), None, true));
    let ev = view.apply(
        t0,
        &t("00A1B2/fw"),
        b"ChipID:00A1B2 FirmwareID:1337 v0.2 IP:10.1.1.2",
    );
    assert!(
        matches!(&ev[..], [ViewEvent::Firmware { from: Some(f), to, .. }]
        if f.version == "0.1" && to.version == "0.2")
    );
}

#[test]
fn a_retained_replay_derives_the_tree_once_and_reports_no_moves() {
    let mut view = MeshView::new(OUT);
    let t0 = Instant::now();
    // Children before parents: live, this would look like moves from the router.
    let mut msgs = fixtures();
    msgs.reverse();
    let mut events = Vec::new();
    for (topic, payload) in &msgs {
        events.extend(view.apply_retained(t0, topic, payload));
    }
    assert!(!events
        .iter()
        .any(|e| matches!(e, ViewEvent::Reparented { .. })));
    let replayed = view.snapshot(t0);
    assert!(replayed
        .node_list
        .iter()
        .all(|n| n.last_seen_ms.is_none() && n.messages == 0));
    assert_eq!(without_traffic(replayed), without_traffic(sample()));
}

#[test]
fn connect_lines_are_matched_by_chip_id_even_before_the_node_is_known() {
    let mut view = MeshView::new(OUT);
    let t0 = Instant::now();
    let line = b"Connected ChipID:00C3D4 FirmwareID:1337 v0.1 IP:10.1.1.3 mesh";
    assert!(view.apply(t0, &format!("{OUT}connect"), line).is_empty());
    let ev = view.apply(t0, &format!("{OUT}00C3D4/info/available"), b"online");
    assert!(matches!(ev.last(), Some(ViewEvent::Online { .. })));
    assert!(ev.iter().any(|e| matches!(e, ViewEvent::Firmware { .. })));
    let n = view.snapshot(t0).node("00C3D4").cloned().unwrap();
    assert_eq!(n.ip.as_deref(), Some("10.1.1.3"));
}

#[test]
fn ota_answers_and_pings_are_events() {
    let (mut view, t0, _) = fed(&fixtures());
    let ev = view.apply(t0, &format!("{OUT}00A1B2/ota/md5/300"), &[b'a'; 32]);
    assert!(matches!(
        &ev[..],
        [ViewEvent::Ota {
            step: OtaStep::Md5 { offset: 0x300, .. },
            ..
        }]
    ));
    let ev = view.apply(t0, &format!("{OUT}00A1B2/ota/check"), b"MD5 Passed");
    assert!(
        matches!(&ev[..], [ViewEvent::Ota { step: OtaStep::Check { result }, .. }] if result == "MD5 Passed")
    );
    let ev = view.apply(t0, &format!("{OUT}00A1B2/Ping"), b"1");
    assert_eq!(
        ev,
        [ViewEvent::Pong {
            id: "00A1B2".into()
        }]
    );
    assert_eq!(
        view.snapshot(t0).node("00A1B2").unwrap().ota.as_deref(),
        Some("check: MD5 Passed")
    );
}

#[test]
fn clearing_every_info_topic_forgets_the_node() {
    let (mut view, t0, _) = fed(&fixtures());
    let mut events = Vec::new();
    for (topic, _) in info("00EEEE", "02:11:22:00:EE:EE", ROUTER_BSSID, "-80") {
        events.extend(view.apply(t0, &topic, b""));
    }
    assert_eq!(
        events,
        [ViewEvent::Removed {
            id: "00EEEE".into()
        }]
    );
    assert!(view.snapshot(t0).node("00EEEE").is_none());
}

#[test]
fn hostile_payloads_are_counted_and_change_nothing() {
    let (mut view, t0, _) = fed(&fixtures());
    let before = view.snapshot(t0);
    let long_id = "X".repeat(200);
    let bad: Vec<(String, Vec<u8>)> = vec![
        (format!("{OUT}00A1B2/info/RSSI"), b"-99999".to_vec()),
        (format!("{OUT}00A1B2/info/RSSI"), vec![0xff, 0xfe]),
        (format!("{OUT}00A1B2/info/MAC"), b"not a mac".to_vec()),
        (format!("{OUT}00A1B2/info/connectedTo"), vec![b'A'; 5000]),
        (format!("{OUT}00A1B2/info/available"), b"maybe".to_vec()),
        (
            format!("{OUT}00A1B2/info/IP_local"),
            b"1.2.3.4\x1b[2J".to_vec(),
        ),
        (format!("{OUT}00A1B2/fw"), b"ChipID:zz".to_vec()),
        (format!("{OUT}00A1B2/ota/erase"), b"soon".to_vec()),
        (format!("{OUT}connect"), vec![0x80; 64]),
    ];
    for (topic, payload) in &bad {
        assert!(view.apply(t0, topic, payload).is_empty(), "{topic}");
    }
    assert_eq!(view.stats().ignored, bad.len() as u64);
    for topic in ["other/00A1B2/fw", &format!("{OUT}{long_id}/fw"), OUT] {
        assert!(view.apply(t0, topic, b"x").is_empty());
    }
    assert_eq!(view.stats().outside, 3);
    assert_eq!(without_traffic(view.snapshot(t0)), without_traffic(before));
}

#[test]
fn message_rate_and_last_seen_follow_live_traffic() {
    let mut view = MeshView::new(OUT);
    let t0 = Instant::now();
    view.apply_retained(t0, &format!("{OUT}00A1B2/info/available"), b"online");
    for i in 0..40u64 {
        let t = t0 + Duration::from_millis(i * 250);
        view.apply(t, &format!("{OUT}00A1B2/counter"), i.to_string().as_bytes());
    }
    let n = view.snapshot(t0 + Duration::from_secs(10)).node_list[0].clone();
    assert_eq!(n.messages, 40);
    assert_eq!(n.last_seen_ms, Some(250));
    assert!((3.5..=4.5).contains(&n.msgs_per_sec), "{}", n.msgs_per_sec);
    let later = view.snapshot(t0 + Duration::from_secs(60)).node_list[0].clone();
    assert_eq!(later.msgs_per_sec, 0.0);
}
