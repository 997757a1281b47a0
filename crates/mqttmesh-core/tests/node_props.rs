//! Property tests for the mesh node: random sequences of runtime inputs (time, scans,
//! associations, broker events, child links, link bytes and frames, application
//! publications), each followed by the run-loop drain, must keep the node's invariants
//! (`node` module doc, `docs/PROTOCOL.md`):
//!
//! - no panic, and every poll drains to `None` within a bounded number of calls;
//! - `connected()` iff the state is `Root` or `Mesh`, with a path ending in our ID whose
//!   length is `depth()` ≤ `max_depth`;
//! - `ap_open()` implies `connected()`, and `OpenAp`/`CloseAp` alternate in step with it;
//! - at most `max_children` joined children, with distinct IDs, never our own;
//! - a node that is not connected always has a deadline, and handling a deadline never
//!   leaves one at or before `now` (no busy loop);
//! - every transmitted frame decodes; counters never go down.
//!
//! On failure proptest prints the shrunk operation sequence (with the config and seed),
//! which replays deterministically: the node takes no input but these.

use std::net::Ipv4Addr;

use mqttmesh_core::config::{Timing, DEFAULT_MESH_PASSWORD, DEFAULT_MESH_SSID_BASE};
use mqttmesh_core::identity::{self, Mac};
use mqttmesh_core::link::{
    Frame, JoinKey, JoinRequest, Path, Reason, Transcript, HEADER_LEN, MAX_FRAME, VERSION,
};
use mqttmesh_core::node::{AssocError, Counters, Parent, State, CHILD_SLOTS};
use mqttmesh_core::uplink::ScanEntry;
use mqttmesh_core::{Action, Config, Duration, Instant, LinkId, MsgType, Node, NodeId};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const CHIP: u32 = 0x00A1B2;
/// Chip IDs of mesh nodes a scan may show; the first is our own.
const MESH_CHIPS: [u32; 4] = [CHIP, 0x000001, 0x000002, 0x000003];
const ROUTERS: [Mac; 2] = [
    Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]),
    Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x66]),
];
/// Node IDs frames may carry: ours, the scanned mesh nodes', and strangers'.
const IDS: [&str; 7] = [
    "00A1B2", "000001", "000002", "000003", "ROOT", "C0FFEE", "x",
];
/// Topic heads frames, broker messages and publications may use.
const TOPICS: [&str; 10] = [
    "esp8266-in/broadcast/",
    "esp8266-in/00A1B2/",
    "esp8266-in/C0FFEE/",
    "esp8266-in/fw/",
    "esp8266-in/ota/1337/",
    "esp8266-out/00A1B2/",
    "esp8266-out/C0FFEE/",
    "esp8266-out/",
    "elsewhere/",
    "esp8266-in",
];
const SUBTOPICS: [&str; 6] = ["Ping", "Restart", "t", "a/b", "info/available", "check"];

fn timing() -> Timing {
    Timing {
        scan_timeout: Duration::from_secs(2),
        associate_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(3),
        keepalive_interval: Duration::from_secs(4),
        link_timeout: Duration::from_secs(10),
        retry_backoff: Duration::from_millis(700),
        mqtt_keepalive: Duration::from_secs(10),
        uplink_grace: Duration::ZERO,
        candidate_refresh: Duration::ZERO,
    }
}

fn mesh_key() -> u32 {
    identity::mesh_key(DEFAULT_MESH_PASSWORD)
}

fn join_key() -> JoinKey {
    JoinKey::derive(DEFAULT_MESH_PASSWORD, DEFAULT_MESH_SSID_BASE)
}

fn join_request(id: usize, nonce: [u8; 16], height: u8) -> JoinRequest<'static> {
    JoinRequest {
        nonce,
        node_id: IDS[id],
        chip_id: 0x00C0_FFEE,
        firmware_id: 0x1337,
        firmware_version: "0.1",
        subtree_height: height,
    }
}

// ---- the operations -----------------------------------------------------------------

/// One access point in a scan.
#[derive(Clone, Debug)]
enum Entry {
    Router {
        which: usize,
        rssi: i8,
    },
    Mesh {
        chip: usize,
        rssi: i8,
        depth: Option<u8>,
    },
    Stranger {
        mac: [u8; 6],
        hidden: bool,
        rssi: i8,
    },
}

/// A link, chosen among those the node handed out, or any slot at all.
#[derive(Clone, Debug)]
enum LinkSel {
    Parent,
    Known(usize),
    Slot(u8),
}

/// A frame with owned fields.
#[derive(Clone, Debug)]
enum OwnedFrame {
    JoinRequest {
        id: usize,
        version: u8,
        nonce: u8,
        height: u8,
    },
    /// A challenge with a random tag (not a valid proof of the key).
    Challenge {
        nonce: u8,
        parent: usize,
        tag: u8,
    },
    /// A proof with a random tag.
    Proof(u8),
    JoinAccept(Vec<usize>),
    JoinReject(Reason),
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    Deliver {
        topic: String,
        payload: Vec<u8>,
    },
    KeepAlive,
    KeepAliveAck,
    Leave(Reason),
}

#[derive(Clone, Debug)]
enum Data {
    Garbage(Vec<u8>),
    /// Valid frames, offered in two pieces split at `split` (mod the length).
    Frames(Vec<OwnedFrame>, usize),
}

#[derive(Clone, Debug)]
enum Op {
    Advance(u64),
    StepToDeadline,
    ScanDone(Vec<Entry>),
    Associated {
        ok: bool,
        right_bssid: bool,
        ip: u32,
    },
    MqttConnected,
    MqttDisconnected,
    MqttMessage {
        topic: String,
        payload: usize,
    },
    ChildConnected,
    LinkData(LinkSel, Data),
    LinkClosed(LinkSel),
    LinkOpened(LinkSel),
    Publish {
        sub: String,
        payload: usize,
        node: Option<usize>,
    },
    /// The runtime answers the node's last request favourably (see [`Pending`]), or,
    /// while the node idles, time passes to its deadline: so that random sequences
    /// reach the online states often.
    Respond {
        scan: Vec<Entry>,
        path: Vec<usize>,
    },
    /// A station connects to our mesh port and runs the join handshake: a valid join
    /// request, then a proof that is valid when `good` (else made with another key).
    ChildJoins {
        id: usize,
        height: u8,
        good: bool,
    },
}

/// The last request of the node's that the runtime has not answered yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    None,
    Scan,
    Associate(Mac),
    Mqtt,
    ParentLink,
    JoinAnswer,
}

fn rssi() -> impl Strategy<Value = i8> {
    -95i8..-20
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        3 => (0..ROUTERS.len(), rssi()).prop_map(|(which, rssi)| Entry::Router { which, rssi }),
        4 => (0..MESH_CHIPS.len(), rssi(), prop::option::of(0u8..6))
            .prop_map(|(chip, rssi, depth)| Entry::Mesh { chip, rssi, depth }),
        1 => (any::<[u8; 6]>(), any::<bool>(), rssi())
            .prop_map(|(mac, hidden, rssi)| Entry::Stranger { mac, hidden, rssi }),
    ]
}

/// A scan for `Op::Respond`: anything, or (to reach the mesh states) mesh nodes only.
fn scan() -> impl Strategy<Value = Vec<Entry>> {
    let mesh = (1..MESH_CHIPS.len(), rssi(), prop::option::of(0u8..3))
        .prop_map(|(chip, rssi, depth)| Entry::Mesh { chip, rssi, depth });
    prop_oneof![
        prop::collection::vec(entry(), 1..5),
        prop::collection::vec(mesh, 1..3),
    ]
}

/// A parent's path for `Op::Respond`: mostly short enough to be accepted.
fn accepted_path() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        3 => prop::collection::vec(1..IDS.len(), 1..3),
        1 => prop::collection::vec(0..IDS.len(), 0..6),
    ]
}

fn link_sel() -> impl Strategy<Value = LinkSel> {
    prop_oneof![
        3 => Just(LinkSel::Parent),
        4 => (0usize..16).prop_map(LinkSel::Known),
        1 => (0u8..=CHILD_SLOTS as u8 + 1).prop_map(LinkSel::Slot),
    ]
}

/// A topic: a known head and subtopic, or (rarely) arbitrary text, possibly too long.
fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::sample::select(&TOPICS[..]), prop::sample::select(&SUBTOPICS[..]))
            .prop_map(|(head, sub)| format!("{head}{sub}")),
        1 => "[a-z0-9/+#]{0,16}",
        1 => (0usize..200).prop_map(|n| format!("esp8266-in/broadcast/{}", "y".repeat(n))),
    ]
}

fn reason() -> impl Strategy<Value = Reason> {
    (1u8..=9).prop_map(|c| Reason::from_u8(c).expect("codes 1..=9 are reasons"))
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

fn owned_frame() -> impl Strategy<Value = OwnedFrame> {
    prop_oneof![
        3 => (0..IDS.len(), prop_oneof![4 => Just(VERSION), 1 => any::<u8>()],
              any::<u8>(), prop_oneof![3 => Just(0u8), 1 => any::<u8>()])
            .prop_map(|(id, version, nonce, height)| {
                OwnedFrame::JoinRequest { id, version, nonce, height }
            }),
        2 => (any::<u8>(), 0..IDS.len(), any::<u8>())
            .prop_map(|(nonce, parent, tag)| OwnedFrame::Challenge { nonce, parent, tag }),
        2 => any::<u8>().prop_map(OwnedFrame::Proof),
        3 => prop::collection::vec(0..IDS.len(), 0..5).prop_map(OwnedFrame::JoinAccept),
        1 => reason().prop_map(OwnedFrame::JoinReject),
        3 => (topic(), payload()).prop_map(|(topic, payload)| OwnedFrame::Publish { topic, payload }),
        3 => (topic(), payload()).prop_map(|(topic, payload)| OwnedFrame::Deliver { topic, payload }),
        2 => Just(OwnedFrame::KeepAlive),
        1 => Just(OwnedFrame::KeepAliveAck),
        1 => reason().prop_map(OwnedFrame::Leave),
    ]
}

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Data::Garbage),
        4 => (prop::collection::vec(owned_frame(), 1..3), any::<usize>())
            .prop_map(|(frames, split)| Data::Frames(frames, split)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u64..2_000).prop_map(Op::Advance),
        1 => (0u64..20_000).prop_map(Op::Advance),
        3 => Just(Op::StepToDeadline),
        3 => prop::collection::vec(entry(), 0..5).prop_map(Op::ScanDone),
        3 => (prop::bool::weighted(0.8), prop::bool::weighted(0.9), any::<u32>())
            .prop_map(|(ok, right_bssid, ip)| Op::Associated { ok, right_bssid, ip }),
        2 => Just(Op::MqttConnected),
        1 => Just(Op::MqttDisconnected),
        2 => (topic(), prop_oneof![4 => 0usize..64, 1 => Just(1024usize), 1 => Just(1025usize)])
            .prop_map(|(topic, payload)| Op::MqttMessage { topic, payload }),
        2 => Just(Op::ChildConnected),
        8 => (link_sel(), data()).prop_map(|(link, data)| Op::LinkData(link, data)),
        1 => link_sel().prop_map(Op::LinkClosed),
        2 => link_sel().prop_map(Op::LinkOpened),
        2 => ("[a-zA-Z/+#]{0,12}", prop_oneof![4 => 0usize..64, 1 => Just(1025usize)],
              prop::option::of(0..IDS.len()))
            .prop_map(|(sub, payload, node)| Op::Publish { sub, payload, node }),
        16 => (scan(), accepted_path()).prop_map(|(scan, path)| Op::Respond { scan, path }),
        4 => (0..IDS.len(), prop_oneof![4 => Just(0u8), 1 => 0u8..4], prop::bool::weighted(0.8))
            .prop_map(|(id, height, good)| Op::ChildJoins { id, height, good }),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (1u8..=8, prop_oneof![1 => 1u8..=2, 3 => 3u8..=6]).prop_map(|(children, depth)| {
        Config::builder()
            .firmware(0x1337, "0.1")
            .network("router", "routerpass")
            .max_children(children)
            .max_depth(depth)
            .timing(timing())
            .build()
            .expect("valid test config")
    })
}

// ---- the harness -------------------------------------------------------------------

impl OwnedFrame {
    fn encode(&self, out: &mut Vec<u8>) {
        let path: Path;
        let frame = match self {
            OwnedFrame::JoinRequest {
                id,
                version,
                nonce,
                height,
            } => {
                let frame = Frame::JoinRequest(join_request(*id, [*nonce; 16], *height));
                let mut buf = [0u8; MAX_FRAME];
                let n = frame.encode(&mut buf).expect("valid request");
                // The version byte by hand: the encoder always writes VERSION.
                buf[HEADER_LEN + 1] = *version;
                out.extend_from_slice(&buf[..n]);
                return;
            }
            OwnedFrame::Challenge { nonce, parent, tag } => Frame::Challenge {
                nonce: [*nonce; 16],
                parent_id: IDS[*parent],
                tag: [*tag; 32],
            },
            OwnedFrame::Proof(tag) => Frame::Proof { tag: [*tag; 32] },
            OwnedFrame::JoinAccept(ids) => {
                path = ids
                    .iter()
                    .map(|&i| NodeId::new(IDS[i]).expect("valid ID"))
                    .collect();
                Frame::JoinAccept { path }
            }
            OwnedFrame::JoinReject(reason) => Frame::JoinReject { reason: *reason },
            OwnedFrame::Publish { topic, payload } => Frame::Publish {
                id: 0,
                origin: IDS[0],
                msg_type: MsgType::Qos1,
                topic,
                payload,
            },
            OwnedFrame::Deliver { topic, payload } => Frame::Deliver { topic, payload },
            OwnedFrame::KeepAlive => Frame::KeepAlive,
            OwnedFrame::KeepAliveAck => Frame::KeepAliveAck,
            OwnedFrame::Leave(reason) => Frame::Leave { reason: *reason },
        };
        let mut buf = [0u8; MAX_FRAME];
        match frame.encode(&mut buf) {
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A topic the codec refuses (empty, wildcard, too long): its text as garbage.
            Err(_) => out.extend_from_slice(match self {
                OwnedFrame::Publish { topic, .. } | OwnedFrame::Deliver { topic, .. } => {
                    topic.as_bytes()
                }
                _ => unreachable!("only topics can be refused"),
            }),
        }
    }
}

/// The node, its clock, and what the test knows of the runtime's side.
struct Harness {
    node: Node,
    now: Instant,
    /// Child links the node handed out.
    children: Vec<LinkId>,
    /// The BSSID of the last `Associate`.
    associating: Option<Mac>,
    /// The AP as the runtime sees it from `OpenAp`/`CloseAp`.
    ap_open: bool,
    pending: Pending,
    counters: Counters,
    /// The last join request the node sent to its parent.
    parent_request: Option<Vec<u8>>,
    /// The last challenge the node sent on each child link.
    challenges: Vec<(LinkId, Vec<u8>)>,
}

impl Harness {
    fn new(config: Config, seed: u64) -> Harness {
        Harness {
            node: Node::new(config, CHIP, seed, "Power on", Instant::ZERO),
            now: Instant::ZERO,
            children: Vec::new(),
            associating: None,
            ap_open: false,
            pending: Pending::None,
            counters: Counters::default(),
            parent_request: None,
            challenges: Vec::new(),
        }
    }

    fn link(&self, sel: &LinkSel) -> LinkId {
        match *sel {
            LinkSel::Parent => LinkId::Parent,
            LinkSel::Known(i) if !self.children.is_empty() => {
                self.children[i % self.children.len()]
            }
            LinkSel::Known(i) => LinkId::Child((i % (CHILD_SLOTS + 1)) as u8),
            LinkSel::Slot(s) => LinkId::Child(s),
        }
    }

    fn scan_entries(entries: &[Entry]) -> Vec<ScanEntry> {
        entries
            .iter()
            .map(|e| match *e {
                Entry::Router { which, rssi } => ScanEntry {
                    bssid: ROUTERS[which],
                    ssid: "router".try_into().expect("fits"),
                    rssi,
                    channel: 1,
                    hidden: false,
                    depth: None,
                    free: None,
                },
                Entry::Mesh { chip, rssi, depth } => ScanEntry {
                    bssid: identity::ap_mac(MESH_CHIPS[chip], mesh_key()),
                    ssid: Default::default(),
                    rssi,
                    channel: 6,
                    hidden: true,
                    depth,
                    free: None,
                },
                Entry::Stranger { mac, hidden, rssi } => ScanEntry {
                    bssid: Mac(mac),
                    ssid: if hidden {
                        Default::default()
                    } else {
                        "cafe".try_into().expect("fits")
                    },
                    rssi,
                    channel: 11,
                    hidden,
                    depth: None,
                    free: None,
                },
            })
            .collect()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match op {
            Op::Advance(ms) => {
                self.now = now + Duration::from_millis(*ms);
                self.timeout()?;
            }
            Op::StepToDeadline => {
                if let Some(t) = self.node.poll_timeout() {
                    self.now = now.max(t);
                    self.timeout()?;
                }
            }
            Op::ScanDone(entries) => self
                .node
                .handle_scan_done(now, &Self::scan_entries(entries)),
            Op::Associated {
                ok,
                right_bssid,
                ip,
            } => {
                let bssid = match self.associating {
                    Some(b) if *right_bssid => b,
                    _ => ROUTERS[1],
                };
                let result = if *ok {
                    Ok(Ipv4Addr::from(*ip))
                } else {
                    Err(AssocError::AuthFailed)
                };
                self.node.handle_associated(now, bssid, result);
            }
            Op::MqttConnected => self.node.handle_mqtt_connected(now),
            Op::MqttDisconnected => self.node.handle_mqtt_disconnected(now),
            Op::MqttMessage { topic, payload } => {
                self.node
                    .handle_mqtt_message(now, topic, &vec![0x42; *payload]);
            }
            Op::ChildConnected => {
                if let Some(link) = self.node.handle_child_connected(now) {
                    prop_assert!(matches!(link, LinkId::Child(s) if usize::from(s) < CHILD_SLOTS));
                    self.children.retain(|l| *l != link);
                    self.children.push(link);
                }
            }
            Op::Respond { .. } if self.node.state() == State::Idle => {
                return self.apply(&Op::StepToDeadline);
            }
            Op::Respond { scan, path } => match self.pending {
                Pending::None => {}
                Pending::Scan => self.node.handle_scan_done(now, &Self::scan_entries(scan)),
                Pending::Associate(bssid) => {
                    self.node
                        .handle_associated(now, bssid, Ok(Ipv4Addr::new(10, 0, 0, 9)))
                }
                Pending::Mqtt => self.node.handle_mqtt_connected(now),
                Pending::ParentLink => self.node.handle_link_opened(now, LinkId::Parent),
                Pending::JoinAnswer => {
                    self.pending = Pending::None;
                    // A valid challenge from the path's last node, then the path.
                    let parent = path.last().map_or("ROOT", |&i| IDS[i]);
                    if let Some(challenge) = self.valid_challenge(parent) {
                        self.feed(LinkId::Parent, &challenge)?;
                    }
                    let mut bytes = Vec::new();
                    OwnedFrame::JoinAccept(path.clone()).encode(&mut bytes);
                    return self.feed(LinkId::Parent, &bytes);
                }
            },
            Op::ChildJoins { id, height, good } => {
                if let Some(link) = self.node.handle_child_connected(now) {
                    self.children.retain(|l| *l != link);
                    self.children.push(link);
                    let nonce = [self.counters.frames_in as u8; 16];
                    let request = join_request(*id, nonce, *height);
                    let mut bytes = [0u8; MAX_FRAME];
                    let n = Frame::JoinRequest(request)
                        .encode(&mut bytes)
                        .expect("valid request");
                    self.drain()?;
                    self.challenges.retain(|(l, _)| *l != link);
                    self.feed(link, &bytes[..n])?;
                    let Some((_, challenge)) = self.challenges.iter().find(|(l, _)| *l == link)
                    else {
                        return Ok(());
                    };
                    let Ok(Frame::Challenge {
                        nonce: parent_nonce,
                        parent_id,
                        tag,
                    }) = Frame::decode(&challenge[HEADER_LEN..])
                    else {
                        return Err(TestCaseError::fail("challenge does not decode"));
                    };
                    let t =
                        Transcript::new(&request, &parent_nonce, parent_id).expect("valid request");
                    prop_assert!(join_key().verify_parent(&t, &tag), "bad parent tag");
                    let key = if *good {
                        join_key()
                    } else {
                        JoinKey::derive("another-password", DEFAULT_MESH_SSID_BASE)
                    };
                    let mut proof = [0u8; MAX_FRAME];
                    let n = Frame::Proof {
                        tag: key.child_tag(&t),
                    }
                    .encode(&mut proof)
                    .expect("valid proof");
                    return self.feed(link, &proof[..n]);
                }
            }
            Op::LinkData(sel, data) => {
                let link = self.link(sel);
                let mut bytes = Vec::new();
                let split = match data {
                    Data::Garbage(g) => {
                        bytes.extend_from_slice(g);
                        bytes.len()
                    }
                    Data::Frames(frames, split) => {
                        frames.iter().for_each(|f| f.encode(&mut bytes));
                        split % (bytes.len() + 1)
                    }
                };
                self.feed(link, &bytes[..split])?;
                self.feed(link, &bytes[split..])?;
                return Ok(());
            }
            Op::LinkClosed(sel) => {
                let link = self.link(sel);
                self.node.handle_link_closed(now, link);
            }
            Op::LinkOpened(sel) => {
                let link = self.link(sel);
                self.node.handle_link_opened(now, link);
            }
            Op::Publish { sub, payload, node } => {
                let payload = vec![0x17; *payload];
                let _ = match node {
                    Some(i) => self
                        .node
                        .publish_node(IDS[*i], sub, &payload, MsgType::Qos0),
                    None => self.node.publish(sub, &payload, MsgType::RetainedQos1),
                };
            }
        }
        self.drain()
    }

    /// A valid challenge from `parent_id` for the join request the node sent last.
    fn valid_challenge(&self, parent_id: &str) -> Option<Vec<u8>> {
        let request = self.parent_request.as_ref()?;
        let Ok(Frame::JoinRequest(req)) = Frame::decode(&request[HEADER_LEN..]) else {
            return None;
        };
        let nonce = [0x5a; 16];
        let t = Transcript::new(&req, &nonce, parent_id).ok()?;
        let mut buf = [0u8; MAX_FRAME];
        let n = Frame::Challenge {
            nonce,
            parent_id,
            tag: join_key().parent_tag(&t),
        }
        .encode(&mut buf)
        .ok()?;
        Some(buf[..n].to_vec())
    }

    /// `handle_timeout`, which must leave no deadline at or before `now`.
    fn timeout(&mut self) -> Result<(), TestCaseError> {
        self.node.handle_timeout(self.now);
        self.drain()?;
        if let Some(t) = self.node.poll_timeout() {
            prop_assert!(t > self.now, "deadline {} not after now {}", t, self.now);
        }
        Ok(())
    }

    /// Offers `bytes` as a runtime does: drain whenever the node takes fewer.
    fn feed(&mut self, link: LinkId, bytes: &[u8]) -> Result<(), TestCaseError> {
        let mut offset = 0;
        for _ in 0..=bytes.len() {
            let n = self.node.handle_link_data(self.now, link, &bytes[offset..]);
            prop_assert!(n <= bytes.len() - offset);
            offset += n;
            self.drain()?;
            if offset == bytes.len() {
                return Ok(());
            }
        }
        Err(TestCaseError::fail(format!(
            "{link:?} stopped taking bytes at {offset}/{}",
            bytes.len()
        )))
    }

    /// Every poll until `None`, checking what comes out.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        let mut buf = [0u8; MAX_FRAME];
        let mut rounds = 0;
        while let Some((link, n)) = self.node.poll_transmit(&mut buf) {
            rounds += 1;
            prop_assert!(rounds < 1000, "transmit queue does not drain");
            prop_assert!(n > HEADER_LEN, "empty frame for {link:?}");
            let declared = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
            prop_assert_eq!(declared, n - HEADER_LEN);
            let decoded = Frame::decode(&buf[HEADER_LEN..n]);
            prop_assert!(decoded.is_ok(), "undecodable frame {:02x?}", &buf[..n]);
            if link == LinkId::Parent && matches!(decoded, Ok(Frame::JoinRequest(_))) {
                self.pending = Pending::JoinAnswer;
                self.parent_request = Some(buf[..n].to_vec());
            }
            if let (LinkId::Child(_), Ok(Frame::Challenge { .. })) = (link, &decoded) {
                self.challenges.retain(|(l, _)| *l != link);
                self.challenges.push((link, buf[..n].to_vec()));
            }
        }
        while let Some(action) = self.node.poll_action() {
            rounds += 1;
            prop_assert!(rounds < 1000, "action queue does not drain");
            match action {
                Action::Scan | Action::ScanChannel(_) => self.pending = Pending::Scan,
                Action::ConnectMqtt { .. } => self.pending = Pending::Mqtt,
                Action::OpenParentLink => self.pending = Pending::ParentLink,
                Action::Associate { bssid, .. } => {
                    self.associating = Some(bssid);
                    self.pending = Pending::Associate(bssid);
                }
                Action::OpenAp {
                    max_children,
                    depth,
                    ..
                } => {
                    prop_assert!(!self.ap_open, "OpenAp while open");
                    prop_assert_eq!(max_children, self.node.config().max_children);
                    prop_assert!(depth < self.node.config().max_depth);
                    self.ap_open = true;
                }
                Action::AdmitStations(_) => {
                    prop_assert!(self.ap_open, "AdmitStations with no AP");
                }
                Action::CloseAp => {
                    prop_assert!(self.ap_open, "CloseAp while closed");
                    self.ap_open = false;
                    self.children.clear();
                }
                Action::CloseLink(link) => self.children.retain(|l| *l != link),
                Action::Publish(p) => {
                    prop_assert!(!p.topic.is_empty() && p.payload.len() <= 1024);
                }
                _ => {}
            }
        }
        while self.node.poll_event().is_some() {
            rounds += 1;
            prop_assert!(rounds < 1000, "event queue does not drain");
        }
        while self.node.poll_log().is_some() {
            rounds += 1;
            prop_assert!(rounds < 1000, "log queue does not drain");
        }
        Ok(())
    }

    fn check_invariants(&mut self) -> Result<(), TestCaseError> {
        let node = &self.node;
        let config = node.config();
        let connected = node.connected();
        prop_assert_eq!(
            connected,
            matches!(node.state(), State::Root | State::Mesh),
            "state {:?}",
            node.state()
        );
        prop_assert!(!node.ap_open() || connected, "AP open while offline");
        prop_assert_eq!(node.ap_open(), self.ap_open, "AP state vs OpenAp/CloseAp");
        prop_assert!(
            connected || node.poll_timeout().is_some(),
            "offline in {:?} with nothing to wait for",
            node.state()
        );

        let children: Vec<&NodeId> = node.children().collect();
        prop_assert!(children.len() <= usize::from(config.max_children));
        for (i, id) in children.iter().enumerate() {
            prop_assert!(*id != node.id(), "our own ID joined as a child");
            prop_assert!(!children[..i].contains(id), "{} joined twice", id);
        }
        prop_assert!(
            children.is_empty() || node.ap_open(),
            "children with the AP closed"
        );

        match node.depth() {
            Some(d) => {
                prop_assert!(connected);
                prop_assert!(d >= 1 && d <= config.max_depth, "depth {}", d);
                prop_assert_eq!(node.path().len(), usize::from(d));
                prop_assert_eq!(node.path().last(), Some(node.id()));
            }
            None => {
                prop_assert!(!connected);
                prop_assert!(node.path().is_empty());
            }
        }
        match node.parent() {
            Parent::None => prop_assert!(!connected),
            Parent::Router { .. } => prop_assert_eq!(node.state(), State::Root),
            Parent::Node { id, .. } => {
                prop_assert_eq!(node.state(), State::Mesh);
                prop_assert_eq!(Some(&id), node.path().iter().rev().nth(1));
            }
        }

        let (old, new) = (self.counters, *node.counters());
        for (name, before, after) in [
            ("frames_in", old.frames_in, new.frames_in),
            ("frames_out", old.frames_out, new.frames_out),
            ("malformed", old.malformed, new.malformed),
            ("relayed_up", old.relayed_up, new.relayed_up),
            ("relayed_down", old.relayed_down, new.relayed_down),
            ("rejected_joins", old.rejected_joins, new.rejected_joins),
            ("auth_failures", old.auth_failures, new.auth_failures),
            (
                "handshake_failures",
                old.handshake_failures,
                new.handshake_failures,
            ),
            ("refused_parents", old.refused_parents, new.refused_parents),
            (
                "publish_rejected",
                old.publish_rejected,
                new.publish_rejected,
            ),
            ("queue_dropped", old.queue_dropped, new.queue_dropped),
            ("connects", old.connects, new.connects),
            ("disconnects", old.disconnects, new.disconnects),
        ] {
            prop_assert!(after >= before, "counter {} went down", name);
        }
        prop_assert!(new.connects >= new.disconnects);
        prop_assert!(new.connects - new.disconnects == u64::from(connected));
        self.counters = new;
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operation_sequences_keep_the_node_consistent(
        config in config(),
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut h = Harness::new(config, seed);
        h.drain()?;
        h.check_invariants()?;
        for op in &ops {
            h.apply(op)?;
            h.check_invariants()?;
        }
    }
}
