//! Operation-sequence fuzzing of the mesh node (STYLE.md §6, after quinn's
//! `fuzz_targets/streams.rs`): the input is read as a sequence of runtime inputs — time,
//! scans, associations, broker events, child links, link bytes and valid frames,
//! application publications, and favourable answers to the node's last request — each
//! followed by the run-loop drain. After each, the node's invariants must hold (the same
//! as `crates/mqttmesh-core/tests/node_props.rs`): no panic, bounded queues, valid
//! frames out, `connected()` iff `Root`/`Mesh`, `ap_open()` only while connected, at
//! most `max_children` children, depth within `max_depth`, always a deadline while
//! offline and never one at or before `now` after `handle_timeout`, and `SUBTREE`
//! announcements only to a parent whose challenge asked for them.

#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use mqttmesh_core::config::{Timing, DEFAULT_MESH_PASSWORD, DEFAULT_MESH_SSID_BASE};
use mqttmesh_core::identity::{self, Mac};
use mqttmesh_core::link::subtree::{self, CAP_SUBTREE};
use mqttmesh_core::link::{
    Frame, JoinKey, JoinRequest, Path, Reason, Subtree, Transcript, HEADER_LEN, MAX_FRAME, VERSION,
};
use mqttmesh_core::node::{AssocError, State, CHILD_SLOTS};
use mqttmesh_core::uplink::ScanEntry;
use mqttmesh_core::{Action, Config, Duration, Instant, LinkId, MsgType, Node, NodeId};

const CHIP: u32 = 0x00A1B2;
const MESH_CHIPS: [u32; 4] = [CHIP, 0x000001, 0x000002, 0x000003];
const ROUTERS: [Mac; 2] = [
    Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]),
    Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x66]),
];
const IDS: [&str; 6] = ["00A1B2", "000001", "000002", "ROOT", "C0FFEE", "x"];
const TOPICS: [&str; 11] = [
    "esp8266-in/ota/1337/start",
    "esp8266-in/ota2/C0FFEE/status",
    "esp8266-in/ota/A1/0",
    "esp8266-in/broadcast/t",
    "esp8266-in/00A1B2/Ping",
    "esp8266-in/C0FFEE/t",
    "esp8266-in/fw/x",
    "esp8266-out/00A1B2/t",
    "esp8266-out/C0FFEE/t",
    "elsewhere/t",
    "esp8266-in/00A1B2/Restart",
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let (Some(children), Some(depth), Some(seed)) = (input.byte(), input.byte(), input.byte())
    else {
        return;
    };
    let config = Config::builder()
        .firmware(0x1337, "0.1")
        .network("router", "routerpass")
        .max_children(1 + children % 8)
        .max_depth(1 + depth % 6)
        .timing(Timing {
            scan_timeout: Duration::from_secs(2),
            associate_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_secs(4),
            link_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(700),
            mqtt_keepalive: Duration::from_secs(10),
            uplink_grace: Duration::from_secs(5),
            candidate_refresh: Duration::from_secs(15),
        })
        .build()
        .expect("valid fuzz config");
    let mut h = Harness {
        node: Node::new(config, CHIP, u64::from(seed), "Power on", Instant::ZERO),
        now: Instant::ZERO,
        children: Vec::new(),
        pending: None,
        ap_open: false,
        tokens: Vec::new(),
        key: JoinKey::derive(DEFAULT_MESH_PASSWORD, DEFAULT_MESH_SSID_BASE),
        parent_request: None,
        requests: Vec::new(),
        proofs: Vec::new(),
    };
    h.drain();
    h.check();
    while let Some(op) = input.byte() {
        h.apply(op, &mut input);
        h.check();
    }
});

/// The fuzz input, read front to back; `None` once used up.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte().unwrap_or(0), self.byte().unwrap_or(0)])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte().unwrap_or(0)) % from.len()]
    }

    fn reason(&mut self) -> Reason {
        Reason::from_u8(1 + self.byte().unwrap_or(0) % 9).expect("1..=9 are reasons")
    }
}

/// The node's last unanswered request.
#[derive(Clone, Copy)]
enum Pending {
    Scan,
    Associate(Mac),
    Mqtt,
    ParentLink,
    JoinAnswer,
}

struct Harness {
    node: Node,
    /// Tokens of publications not yet acknowledged.
    tokens: Vec<u32>,
    now: Instant,
    children: Vec<LinkId>,
    pending: Option<Pending>,
    ap_open: bool,
    key: JoinKey,
    /// The last join request the node sent to its parent.
    parent_request: Option<Vec<u8>>,
    /// Join requests the fuzzer sent on child links.
    requests: Vec<(LinkId, Vec<u8>)>,
    /// The valid proof for each child link the node challenged.
    proofs: Vec<(LinkId, Vec<u8>)>,
}

impl Harness {
    fn apply(&mut self, op: u8, input: &mut Input<'_>) {
        let now = self.now;
        match op % 15 {
            0 => {
                self.now = now + Duration::from_millis(u64::from(input.u16()) % 20_001);
                self.timeout();
            }
            1 => self.step(),
            2 => {
                let n = input.byte().unwrap_or(0) % 5;
                let entries: Vec<ScanEntry> = (0..n).map(|_| scan_entry(input)).collect();
                self.node.handle_scan_done(now, &entries);
            }
            3 => {
                let flags = input.byte().unwrap_or(0);
                let bssid = match self.pending {
                    Some(Pending::Associate(b)) if flags & 1 == 0 => b,
                    _ => ROUTERS[1],
                };
                let result = if flags & 2 == 0 {
                    Ok(Ipv4Addr::new(10, 0, 0, flags))
                } else {
                    Err(AssocError::Timeout)
                };
                self.node.handle_associated(now, bssid, result);
            }
            4 => {
                // Connect, or acknowledge a publication the broker may have taken.
                if self.tokens.is_empty() || input.byte().unwrap_or(0).is_multiple_of(2) {
                    self.node.handle_mqtt_connected(now)
                } else {
                    let i = usize::from(input.byte().unwrap_or(0)) % self.tokens.len();
                    let token = self.tokens.swap_remove(i);
                    self.node.handle_mqtt_acked(now, token);
                }
            }
            5 => self.node.handle_mqtt_disconnected(now),
            6 => {
                let n = usize::from(input.byte().unwrap_or(0));
                let topic = String::from_utf8_lossy(input.bytes(n)).into_owned();
                let topic = if topic.is_empty() {
                    input.pick(&TOPICS).to_owned()
                } else {
                    topic
                };
                let payload = vec![0x42; usize::from(input.u16()) % 1100];
                self.node.handle_mqtt_message(now, &topic, &payload);
            }
            7 => self.connect_child(),
            8 => {
                let link = self.link(input);
                let n = usize::from(input.byte().unwrap_or(0));
                let bytes = input.bytes(n).to_vec();
                self.feed(link, &bytes);
                return;
            }
            9 => {
                let link = self.link(input);
                let bytes = frame(input);
                if bytes.len() > HEADER_LEN
                    && matches!(
                        Frame::decode(&bytes[HEADER_LEN..]),
                        Ok(Frame::JoinRequest(_))
                    )
                {
                    self.requests.retain(|(l, _)| *l != link);
                    self.requests.push((link, bytes.clone()));
                }
                let split = usize::from(input.byte().unwrap_or(0)) % (bytes.len() + 1);
                self.feed(link, &bytes[..split]);
                self.feed(link, &bytes[split..]);
                return;
            }
            10 => {
                let link = self.link(input);
                self.node.handle_link_closed(now, link);
            }
            11 => {
                let link = self.link(input);
                self.node.handle_link_opened(now, link);
            }
            12 => {
                let n = usize::from(input.byte().unwrap_or(0) % 40);
                let sub = String::from_utf8_lossy(input.bytes(n)).into_owned();
                let payload = vec![0x17; usize::from(input.u16()) % 1100];
                let _ = match input.byte().unwrap_or(0) % 3 {
                    0 => self.node.publish(&sub, &payload, MsgType::Qos1),
                    _ => {
                        let to = input.pick(&IDS);
                        self.node.publish_node(to, &sub, &payload, MsgType::Qos0)
                    }
                };
            }
            13 => {
                // The valid proof for a challenged child link (the handshake's end).
                if !self.proofs.is_empty() {
                    let (link, proof) = self.proofs
                        [usize::from(input.byte().unwrap_or(0)) % self.proofs.len()]
                    .clone();
                    self.feed(link, &proof);
                    return;
                }
            }
            _ => return self.respond(input),
        }
        self.drain();
    }

    /// Answers the node's last request favourably, or steps time while it idles.
    fn respond(&mut self, input: &mut Input<'_>) {
        let now = self.now;
        if self.node.state() == State::Idle {
            return self.step();
        }
        match self.pending {
            None => {}
            Some(Pending::Scan) => {
                let n = 1 + input.byte().unwrap_or(0) % 4;
                let entries: Vec<ScanEntry> = (0..n).map(|_| scan_entry(input)).collect();
                self.node.handle_scan_done(now, &entries);
            }
            Some(Pending::Associate(bssid)) => {
                self.node
                    .handle_associated(now, bssid, Ok(Ipv4Addr::new(10, 0, 0, 9)))
            }
            Some(Pending::Mqtt) => self.node.handle_mqtt_connected(now),
            Some(Pending::ParentLink) => self.node.handle_link_opened(now, LinkId::Parent),
            Some(Pending::JoinAnswer) => {
                self.pending = None;
                let b = input.byte().unwrap_or(0);
                let n = 1 + usize::from(b % 3);
                let caps = if b & 4 != 0 { CAP_SUBTREE } else { 0 };
                let path: Path = (0..n)
                    .map(|_| NodeId::new(input.pick(&IDS[1..])).expect("valid ID"))
                    .collect();
                // A valid challenge from the path's last node, then the path.
                let parent_id = path.last().map_or("ROOT", |id| id.as_str());
                if let Some(challenge) = self.valid_challenge(parent_id, caps) {
                    self.feed(LinkId::Parent, &challenge);
                }
                return self.feed(LinkId::Parent, &encode(&Frame::JoinAccept { path }));
            }
        }
        self.drain();
    }

    /// A valid challenge from `parent_id`, its nonce marked with `caps` (0: unmarked, as
    /// from a parent that predates the announcements).
    fn valid_challenge(&self, parent_id: &str, caps: u8) -> Option<Vec<u8>> {
        let request = self.parent_request.as_ref()?;
        let Ok(Frame::JoinRequest(req)) = Frame::decode(&request[HEADER_LEN..]) else {
            return None;
        };
        let mut nonce = [0x5a; 16];
        if caps != 0 {
            subtree::mark_caps(&mut nonce, caps);
        }
        let t = Transcript::new(&req, &nonce, parent_id).ok()?;
        Some(encode(&Frame::Challenge {
            nonce,
            parent_id,
            tag: self.key.parent_tag(&t),
        }))
    }

    /// The node challenged `link`: remember the proof that answers it.
    fn on_challenge(&mut self, link: LinkId, challenge: &Frame<'_>) {
        let Frame::Challenge {
            nonce,
            parent_id,
            tag,
        } = challenge
        else {
            return;
        };
        let Some((_, request)) = self.requests.iter().find(|(l, _)| *l == link) else {
            return;
        };
        let Ok(Frame::JoinRequest(req)) = Frame::decode(&request[HEADER_LEN..]) else {
            return;
        };
        let t = Transcript::new(&req, nonce, parent_id).expect("a decoded request encodes");
        assert!(
            self.key.verify_parent(&t, tag),
            "the node's challenge proves the key"
        );
        let proof = encode(&Frame::Proof {
            tag: self.key.child_tag(&t),
        });
        self.proofs.retain(|(l, _)| *l != link);
        self.proofs.push((link, proof));
    }

    fn connect_child(&mut self) {
        if let Some(link) = self.node.handle_child_connected(self.now) {
            assert!(matches!(link, LinkId::Child(s) if usize::from(s) < CHILD_SLOTS));
            self.children.retain(|l| *l != link);
            self.children.push(link);
        }
    }

    fn link(&self, input: &mut Input<'_>) -> LinkId {
        let b = input.byte().unwrap_or(0);
        match b % 4 {
            0 => LinkId::Parent,
            3 => LinkId::Child((b >> 2) % (CHILD_SLOTS as u8 + 2)),
            _ if self.children.is_empty() => LinkId::Parent,
            _ => self.children[usize::from(b >> 2) % self.children.len()],
        }
    }

    fn step(&mut self) {
        if let Some(t) = self.node.poll_timeout() {
            self.now = self.now.max(t);
            self.timeout();
        }
    }

    fn timeout(&mut self) {
        self.node.handle_timeout(self.now);
        self.drain();
        if let Some(t) = self.node.poll_timeout() {
            assert!(t > self.now, "deadline {t} not after now {}", self.now);
        }
    }

    fn feed(&mut self, link: LinkId, bytes: &[u8]) {
        let mut offset = 0;
        for _ in 0..=bytes.len() {
            offset += self.node.handle_link_data(self.now, link, &bytes[offset..]);
            assert!(offset <= bytes.len());
            self.drain();
            if offset == bytes.len() {
                return;
            }
        }
        panic!("{link:?} stopped taking bytes");
    }

    fn drain(&mut self) {
        let mut buf = [0u8; MAX_FRAME];
        let mut rounds = 0;
        while let Some((link, n)) = self.node.poll_transmit(&mut buf) {
            rounds += 1;
            assert!(rounds < 1000, "transmit queue does not drain");
            assert!(n > HEADER_LEN);
            assert_eq!(
                usize::from(u16::from_be_bytes([buf[0], buf[1]])),
                n - HEADER_LEN
            );
            let frame = Frame::decode(&buf[HEADER_LEN..n]).expect("the node sends valid frames");
            if link == LinkId::Parent && matches!(frame, Frame::JoinRequest(_)) {
                self.pending = Some(Pending::JoinAnswer);
                self.parent_request = Some(buf[..n].to_vec());
            }
            if matches!(link, LinkId::Child(_)) {
                self.on_challenge(link, &frame);
            }
            if matches!(frame, Frame::Subtree(_)) {
                assert_eq!(link, LinkId::Parent, "announcements go up only");
                assert!(
                    self.node.parent_takes_subtree(),
                    "announced to a parent that did not ask"
                );
            }
        }
        while let Some(action) = self.node.poll_action() {
            rounds += 1;
            assert!(rounds < 1000, "action queue does not drain");
            match action {
                Action::Scan | Action::ScanChannel(_) => self.pending = Some(Pending::Scan),
                Action::Associate { bssid, .. } => self.pending = Some(Pending::Associate(bssid)),
                Action::ConnectMqtt { .. } => self.pending = Some(Pending::Mqtt),
                Action::OpenParentLink => self.pending = Some(Pending::ParentLink),
                // Again while open: a beacon update for children kept through a hold.
                Action::OpenAp { .. } => self.ap_open = true,
                Action::Publish(p) => {
                    if let Some(token) = p.token {
                        self.tokens.push(token);
                    }
                }
                Action::AdmitStations(_) => assert!(self.ap_open, "AdmitStations with no AP"),
                Action::CloseAp => {
                    assert!(self.ap_open, "CloseAp while closed");
                    self.ap_open = false;
                    self.children.clear();
                }
                Action::CloseLink(link) => self.children.retain(|l| *l != link),
                _ => {}
            }
        }
        while self.node.poll_event().is_some() {
            rounds += 1;
            assert!(rounds < 1000, "event queue does not drain");
        }
        while self.node.poll_log().is_some() {
            rounds += 1;
            assert!(rounds < 1000, "log queue does not drain");
        }
    }

    fn check(&self) {
        let node = &self.node;
        let config = node.config();
        let connected = node.connected();
        assert_eq!(connected, matches!(node.state(), State::Root | State::Mesh));
        assert!(!node.ap_open() || connected);
        // Admitting children needs the AP up; the AP may stay up without admitting
        // (children kept through an uplink loss).
        assert!(!node.ap_open() || self.ap_open);
        assert!(connected || node.poll_timeout().is_some());
        let children: Vec<&NodeId> = node.children().collect();
        assert!(children.len() <= usize::from(config.max_children));
        for (i, id) in children.iter().enumerate() {
            assert!(*id != node.id() && !children[..i].contains(id));
        }
        match node.depth() {
            Some(d) => {
                assert!(connected && d >= 1 && d <= config.max_depth);
                assert_eq!(node.path().len(), usize::from(d));
                assert_eq!(node.path().last(), Some(node.id()));
            }
            None => assert!(!connected && node.path().is_empty()),
        }
    }
}

fn scan_entry(input: &mut Input<'_>) -> ScanEntry {
    let kind = input.byte().unwrap_or(0);
    let rssi = -20 - (input.byte().unwrap_or(0) % 76) as i8;
    let depth = input.byte().unwrap_or(0);
    let depth = (depth < 8).then_some(depth);
    // From bits of `kind` the match below does not use: no extra input consumed.
    let free = (kind & 8 != 0).then_some((kind >> 4) & 3);
    let (bssid, ssid, hidden) = match kind % 3 {
        0 => (input.pick(&ROUTERS), "router", false),
        1 => (
            identity::ap_mac(
                input.pick(&MESH_CHIPS),
                identity::mesh_key(DEFAULT_MESH_PASSWORD),
            ),
            "",
            true,
        ),
        _ => {
            let mut mac = [0u8; 6];
            mac.iter_mut().for_each(|b| *b = input.byte().unwrap_or(0));
            (Mac(mac), "cafe", kind & 4 != 0)
        }
    };
    ScanEntry {
        bssid,
        ssid: ssid.try_into().expect("fits"),
        rssi,
        channel: 6,
        hidden,
        depth,
        free,
    }
}

fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    match frame.encode(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(_) => Vec::new(),
    }
}

/// A valid frame (or nothing, if the fuzzer's fields are refused by the encoder).
fn frame(input: &mut Input<'_>) -> Vec<u8> {
    let payload = vec![0x5a; usize::from(input.byte().unwrap_or(0))];
    match input.byte().unwrap_or(0) % 15 {
        0 => {
            let flags = input.byte().unwrap_or(0);
            let mut nonce = [input.byte().unwrap_or(0); 16];
            if flags & 2 != 0 {
                // A current child: it understands MAKE_ROOM (re-balancing asks it).
                subtree::mark_caps(&mut nonce, subtree::CAP_MAKE_ROOM);
            }
            let mut bytes = encode(&Frame::JoinRequest(JoinRequest {
                nonce,
                node_id: input.pick(&IDS),
                chip_id: 0x00C0_FFEE,
                firmware_id: 0x1337,
                firmware_version: "0.1",
                subtree_height: if flags & 4 == 0 { 0 } else { flags >> 3 },
            }));
            if flags & 1 != 0 {
                // Another version, by hand: the encoder always writes VERSION.
                bytes[HEADER_LEN + 1] = flags;
            } else {
                debug_assert_eq!(bytes[HEADER_LEN + 1], VERSION);
            }
            bytes
        }
        7 => encode(&Frame::Challenge {
            nonce: [input.byte().unwrap_or(0); 16],
            parent_id: input.pick(&IDS),
            tag: [input.byte().unwrap_or(0); 32],
        }),
        8 => encode(&Frame::Proof {
            tag: [input.byte().unwrap_or(0); 32],
        }),
        1 => {
            let n = usize::from(input.byte().unwrap_or(0) % 6);
            let path: Path = (0..n)
                .map(|_| NodeId::new(input.pick(&IDS)).expect("valid ID"))
                .collect();
            encode(&Frame::JoinAccept { path })
        }
        2 => encode(&Frame::JoinReject {
            reason: input.reason(),
        }),
        3 => encode(&Frame::Publish {
            id: input.u16(),
            origin: input.pick(&IDS),
            msg_type: MsgType::Qos1,
            topic: input.pick(&TOPICS),
            payload: &payload,
        }),
        4 => encode(&Frame::Deliver {
            topic: input.pick(&TOPICS),
            payload: &payload,
        }),
        5 => encode(&Frame::KeepAlive),
        10 => encode(&Frame::Ack {
            origin: input.pick(&IDS),
            id: input.u16(),
        }),
        11 => encode(&Frame::Hold),
        13 => encode(&Frame::MakeRoom),
        12 => {
            let n = usize::from(input.byte().unwrap_or(0) % 4);
            let path = (0..n)
                .map(|_| NodeId::new(input.pick(&IDS[1..])).expect("valid ID"))
                .collect();
            encode(&Frame::Resume { path })
        }
        6 => encode(&Frame::KeepAliveAck),
        14 => {
            let flags = input.byte().unwrap_or(0);
            let firmware = (0..flags % 10)
                .map(|i| 0x1337 + u32::from(i & input.byte().unwrap_or(0)))
                .take(subtree::MAX_SUBTREE_FIRMWARE)
                .collect();
            let nodes = (0..(flags >> 4))
                .map(|_| NodeId::new(input.pick(&IDS)).expect("valid ID"))
                .collect();
            encode(&Frame::Subtree(Subtree {
                firmware,
                firmware_complete: flags & 1 != 0,
                nodes,
                nodes_complete: flags & 2 != 0,
            }))
        }
        _ => encode(&Frame::Leave {
            reason: input.reason(),
        }),
    }
}
