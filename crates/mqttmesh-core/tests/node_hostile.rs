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

use std::net::Ipv4Addr;

use mqttmesh_core::config::{Timing, DEFAULT_MESH_PASSWORD};
use mqttmesh_core::identity::{self, Mac};
use mqttmesh_core::link::{Frame, JoinRequest, Path, Reason, HEADER_LEN, MAX_FRAME, VERSION};
use mqttmesh_core::node::{Counters, State};
use mqttmesh_core::uplink::ScanEntry;
use mqttmesh_core::{Action, Config, Duration, Event, Instant, LinkId, MsgType, Node, NodeId};

const CHIP: u32 = 0x00A1B2;
const OWN_ID: &str = "00A1B2";
const PARENT_CHIP: u32 = 0x000001;
const PARENT_ID: &str = "000001";
const OTHER_PARENT_CHIP: u32 = 0x000002;
const ROUTER: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
const ROUTER_2: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x66]);
const IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 2);
/// IDs of the two well-behaved children; they differ from `CULPRIT` in every byte, so
/// no single-byte corruption of the culprit's join turns it into one of them.
const A: &str = "111111";
const B: &str = "222222";
const CULPRIT: &str = "C0FFEE";
const OUT: &str = "esp8266-out/";
const IN: &str = "esp8266-in/";

fn short_timing() -> Timing {
    Timing {
        scan_timeout: Duration::from_secs(1),
        associate_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(2),
        keepalive_interval: Duration::from_secs(3),
        link_timeout: Duration::from_secs(9),
        retry_backoff: Duration::from_millis(500),
        mqtt_keepalive: Duration::from_secs(10),
        uplink_grace: Duration::ZERO,
    }
}

fn config(timing: Timing) -> Config {
    Config::builder()
        .firmware(0x1337, "0.1")
        .network("router", "routerpass")
        .timing(timing)
        .build()
        .expect("valid test config")
}

fn mesh_key() -> u32 {
    identity::mesh_key(DEFAULT_MESH_PASSWORD)
}

fn router_entry(bssid: Mac, rssi: i8) -> ScanEntry {
    ScanEntry {
        bssid,
        ssid: "router".try_into().expect("fits"),
        rssi,
        channel: 6,
        hidden: false,
        depth: None,
    }
}

fn mesh_entry(chip: u32, rssi: i8) -> ScanEntry {
    ScanEntry {
        bssid: identity::ap_mac(chip, mesh_key()),
        ssid: Default::default(),
        rssi,
        channel: 6,
        hidden: true,
        depth: None,
    }
}

fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = frame.encode(&mut buf).expect("valid test frame");
    buf[..n].to_vec()
}

fn join_request(id: &str, version: u8, mesh_tag: u32) -> Vec<u8> {
    encode(&Frame::JoinRequest(JoinRequest {
        version,
        mesh_tag,
        node_id: id,
        chip_id: 0x00C0_FFEE,
        firmware_id: 0x1337,
        firmware_version: "0.1",
        subtree_height: 0,
    }))
}

fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    encode(&Frame::Publish {
        id: 0,
        origin: CULPRIT,
        msg_type: MsgType::Qos1,
        topic,
        payload,
    })
}

fn path(ids: &[&str]) -> Path {
    ids.iter()
        .map(|s| NodeId::new(s).expect("valid ID"))
        .collect()
}

/// A node, a virtual clock, and everything the node asked for since the last `clear`.
struct Harness {
    node: Node,
    now: Instant,
    transmits: Vec<(LinkId, Vec<u8>)>,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl Harness {
    fn new(timing: Timing) -> Harness {
        let node = Node::new(config(timing), CHIP, 7, "Power on", Instant::ZERO);
        Harness {
            node,
            now: Instant::ZERO,
            transmits: Vec::new(),
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The run-loop contract: every poll until empty (bounded: the queues are).
    fn drain(&mut self) {
        let mut buf = [0u8; MAX_FRAME];
        for _ in 0..1000 {
            let mut idle = true;
            if let Some((link, n)) = self.node.poll_transmit(&mut buf) {
                self.transmits.push((link, buf[..n].to_vec()));
                idle = false;
            }
            if let Some(action) = self.node.poll_action() {
                self.actions.push(action);
                idle = false;
            }
            if let Some(event) = self.node.poll_event() {
                self.events.push(event);
                idle = false;
            }
            if self.node.poll_log().is_some() {
                idle = false;
            }
            if idle {
                return;
            }
        }
        panic!("the node's queues did not drain");
    }

    fn clear(&mut self) {
        self.transmits.clear();
        self.actions.clear();
        self.events.clear();
    }

    /// Offers `bytes` on `link` as a runtime would: drain whenever the node takes less.
    fn feed(&mut self, link: LinkId, bytes: &[u8]) {
        let mut offset = 0;
        for _ in 0..=bytes.len() {
            offset += self.node.handle_link_data(self.now, link, &bytes[offset..]);
            self.drain();
            if offset >= bytes.len() {
                return;
            }
        }
        panic!("the node stopped taking bytes on {link:?}");
    }

    /// Steps the clock to the node's next deadline and handles it.
    fn step(&mut self) {
        let deadline = self
            .node
            .poll_timeout()
            .expect("the node waits for something");
        self.now = self.now.max(deadline);
        self.node.handle_timeout(self.now);
        self.drain();
    }

    /// Frames sent on `link` since the last `clear`, decoded.
    fn sent_to(&self, link: LinkId) -> Vec<Frame<'_>> {
        self.transmits
            .iter()
            .filter(|(l, _)| *l == link)
            .map(|(_, bytes)| {
                assert_eq!(
                    usize::from(u16::from_be_bytes([bytes[0], bytes[1]])),
                    bytes.len() - HEADER_LEN
                );
                Frame::decode(&bytes[HEADER_LEN..]).expect("the node sends valid frames")
            })
            .collect()
    }

    fn asked(&self, wanted: &Action) -> bool {
        self.actions.contains(wanted)
    }

    fn published(&self, topic: &str) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Publish(p) if p.topic == topic))
    }

    fn associating_with(&self) -> Option<Mac> {
        self.actions.iter().find_map(|a| match a {
            Action::Associate { bssid, .. } => Some(*bssid),
            _ => None,
        })
    }

    fn counters(&self) -> Counters {
        *self.node.counters()
    }

    fn children(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.node.children().map(|id| id.to_string()).collect();
        ids.sort();
        ids
    }

    /// Connects a new child link and runs the join handshake for `id`.
    fn join(&mut self, id: &str) -> LinkId {
        let link = self
            .node
            .handle_child_connected(self.now)
            .expect("a free slot");
        self.feed(link, &join_request(id, VERSION, mesh_key()));
        assert!(
            matches!(self.sent_to(link).as_slice(), [Frame::JoinAccept { .. }]),
            "{id} is accepted"
        );
        self.clear();
        link
    }

    /// `link`, joined as `id`, still gets a publication through to the broker.
    fn assert_relays(&mut self, link: LinkId, id: &str) {
        let topic = format!("{OUT}{id}/probe");
        self.feed(link, &publish(&topic, b"ping"));
        assert!(self.published(&topic), "{id}'s link still relays");
        assert!(!self.asked(&Action::CloseLink(link)));
        self.clear();
    }

    /// The node closed `link` for breaking the protocol.
    fn assert_protocol_close(&self, link: LinkId) {
        assert!(self.asked(&Action::CloseLink(link)), "{link:?} is closed");
        assert_eq!(
            self.sent_to(link).last(),
            Some(&Frame::Leave {
                reason: Reason::Protocol
            }),
            "{link:?} is told why"
        );
    }

    /// The node refused the join on `link` with `reason`.
    fn assert_join_rejected(&self, link: LinkId, reason: Reason) {
        assert_eq!(self.sent_to(link), [Frame::JoinReject { reason }]);
        assert!(self.asked(&Action::CloseLink(link)));
    }

    /// Runs the uplink until the node asks to associate or to scan (bounded).
    fn assert_retries_uplink(&mut self) {
        for _ in 0..10 {
            if self.associating_with().is_some() || self.asked(&Action::Scan) {
                return;
            }
            self.step();
        }
        panic!("the node never tried to reconnect");
    }
}

/// Scan → router → associate → MQTT: a root with its AP open.
fn root() -> Harness {
    let mut h = Harness::new(short_timing());
    h.step();
    assert!(h.asked(&Action::Scan));
    h.node.handle_scan_done(h.now, &[router_entry(ROUTER, -50)]);
    h.drain();
    assert_eq!(h.associating_with(), Some(ROUTER));
    h.node.handle_associated(h.now, ROUTER, Ok(IP));
    h.drain();
    assert!(h
        .actions
        .iter()
        .any(|a| matches!(a, Action::ConnectMqtt { .. })));
    h.node.handle_mqtt_connected(h.now);
    h.drain();
    assert!(h.node.connected());
    assert_eq!(h.node.state(), State::Root);
    assert!(h.node.ap_open());
    assert!(h.actions.iter().any(|a| matches!(a, Action::OpenAp { .. })));
    h.clear();
    h
}

/// A root with children `A` and `B` joined.
fn parent() -> (Harness, LinkId, LinkId) {
    let mut h = root();
    let a = h.join(A);
    let b = h.join(B);
    assert_eq!(h.children(), [A, B]);
    (h, a, b)
}

/// Still online with `A` and `B`, and both still relay.
fn assert_family_intact(h: &mut Harness, a: LinkId, b: LinkId) {
    assert!(h.node.connected());
    assert!(h.node.ap_open());
    assert_eq!(h.children(), [A, B]);
    h.assert_relays(a, A);
    h.assert_relays(b, B);
}

// ---- as a parent ---------------------------------------------------------------------

#[test]
fn garbage_on_a_new_link_closes_only_that_link() {
    let (mut h, a, b) = parent();
    let garbage: [&[u8]; 5] = [
        &[0xff; 64],                                          // header 65535
        &[0x00; 8],                                           // header 0
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",                 // header 0x4745
        &[0x00, 0x05, 0x99, 1, 2, 3, 4],                      // unknown type
        &[0x00, 0x03, 0x01, 0x01, 0x28, 0x00, 0x01, 0x20, 9], // join request cut short
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
        (false, join_request(CULPRIT, VERSION, mesh_key())),
        (true, publish(&format!("{OUT}{CULPRIT}/t"), &[0, 1, 0xff])),
        (true, encode(&Frame::KeepAlive)),
    ]
}

/// Whether a joined (or, `joined == false`, a pending) child may send `frame`.
fn allowed(joined: bool, frame: &Frame<'_>) -> bool {
    match frame {
        Frame::JoinRequest(_) => !joined,
        Frame::Leave { .. } => true,
        Frame::Publish { .. } | Frame::KeepAlive | Frame::KeepAliveAck => joined,
        Frame::JoinAccept { .. }
        | Frame::JoinReject { .. }
        | Frame::Deliver { .. }
        | Frame::Ack { .. }
        | Frame::Hold
        | Frame::Resume { .. } => false,
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
    let rejoin = join_request(CULPRIT, VERSION, mesh_key());
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
fn join_request_with_wrong_mesh_tag_is_rejected() {
    let (mut h, a, b) = parent();
    let c = culprit(&mut h, false);
    let before = h.counters();
    h.feed(c, &join_request(CULPRIT, VERSION, mesh_key() ^ 1));
    h.assert_join_rejected(c, Reason::WrongMesh);
    assert_eq!(h.counters().rejected_joins, before.rejected_joins + 1);
    h.clear();
    assert_family_intact(&mut h, a, b);
}

#[test]
fn join_request_with_wrong_version_is_rejected() {
    let (mut h, a, b) = parent();
    let c = culprit(&mut h, false);
    let before = h.counters();
    h.feed(c, &join_request(CULPRIT, VERSION + 1, mesh_key()));
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
    h.feed(e, &join_request(CULPRIT, VERSION, mesh_key()));
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
    h.feed(c, &join_request(OWN_ID, VERSION, mesh_key()));
    h.assert_join_rejected(c, Reason::Loop);
    assert_eq!(h.counters().rejected_joins, before.rejected_joins + 1);
    h.clear();
    assert_family_intact(&mut h, a, b);
}

/// `A` comes back on a new link while its old one is dead but not yet noticed.
fn rejoin_over_stale_link(h: &mut Harness, stale: LinkId) -> LinkId {
    let fresh = h.node.handle_child_connected(h.now).expect("a free slot");
    h.feed(fresh, &join_request(A, VERSION, mesh_key()));
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

/// A node that found only mesh parents (`chips`, best first), associated with the first
/// and sent its join request.
fn joining_child(timing: Timing, chips: &[u32]) -> Harness {
    let mut h = Harness::new(timing);
    h.step();
    assert!(h.asked(&Action::Scan));
    let entries: Vec<ScanEntry> = chips
        .iter()
        .zip((0..).map(|i| -40 - 5 * i))
        .map(|(&chip, rssi)| mesh_entry(chip, rssi))
        .collect();
    h.node.handle_scan_done(h.now, &entries);
    h.drain();
    let parent_mac = identity::ap_mac(chips[0], mesh_key());
    assert_eq!(h.associating_with(), Some(parent_mac));
    h.node.handle_associated(h.now, parent_mac, Ok(IP));
    h.drain();
    assert!(h.asked(&Action::OpenParentLink));
    h.clear();
    h.node.handle_link_opened(h.now, LinkId::Parent);
    h.drain();
    assert_eq!(h.node.state(), State::Joining);
    match h.sent_to(LinkId::Parent).as_slice() {
        [Frame::JoinRequest(req)] => {
            assert_eq!(req.version, VERSION);
            assert_eq!(req.mesh_tag, mesh_key());
            assert_eq!(req.node_id, OWN_ID);
        }
        other => panic!("expected one join request, got {other:?}"),
    }
    h.clear();
    h
}

/// A node at depth 2 below `PARENT_ID`, its own AP open.
fn mesh_child() -> Harness {
    let mut h = joining_child(short_timing(), &[PARENT_CHIP]);
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinAccept {
            path: path(&[PARENT_ID]),
        }),
    );
    assert_eq!(h.node.state(), State::Mesh);
    assert_eq!(h.node.depth(), Some(2));
    assert!(h.node.ap_open());
    h.clear();
    h
}

/// The node left the mesh: offline, AP closed, and trying to get back.
fn assert_left_mesh(h: &mut Harness) {
    assert_ne!(h.node.state(), State::Mesh);
    assert!(!h.node.connected());
    assert!(!h.node.ap_open());
    assert!(h.asked(&Action::CloseAp));
    assert!(h.events.contains(&Event::Disconnected));
    h.assert_retries_uplink();
}

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
    h.node.handle_associated(h.now, parent_mac, Ok(IP));
    h.node.handle_link_opened(h.now, LinkId::Parent);
    h.drain();
    h.feed(
        LinkId::Parent,
        &encode(&Frame::JoinAccept {
            path: path(&[PARENT_ID]),
        }),
    );
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
