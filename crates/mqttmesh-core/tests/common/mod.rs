//! The node harness shared by the node tests: a `Node`, a virtual clock, the run-loop
//! drain, and the join handshake played by hand from either side.

#![allow(dead_code, unused_imports)]

pub use std::net::Ipv4Addr;

pub use mqttmesh_core::config::{Timing, DEFAULT_MESH_PASSWORD, DEFAULT_MESH_SSID_BASE};
pub use mqttmesh_core::identity::{self, Mac};
pub use mqttmesh_core::link::{
    Frame, JoinKey, JoinRequest, Nonce, Path, Reason, Tag, Transcript, HEADER_LEN, MAX_FRAME,
    VERSION,
};
pub use mqttmesh_core::node::{Counters, State};
pub use mqttmesh_core::uplink::ScanEntry;
pub use mqttmesh_core::{Action, Config, Duration, Event, Instant, LinkId, MsgType, Node, NodeId};

pub const CHIP: u32 = 0x00A1B2;
pub const OWN_ID: &str = "00A1B2";
pub const PARENT_CHIP: u32 = 0x000001;
pub const PARENT_ID: &str = "000001";
pub const OTHER_PARENT_CHIP: u32 = 0x000002;
pub const ROUTER: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
pub const ROUTER_2: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x66]);
pub const IP: Ipv4Addr = Ipv4Addr::new(10, 1, 1, 2);
/// IDs of the two well-behaved children; they differ from `CULPRIT` in every byte, so
/// no single-byte corruption of the culprit's join turns it into one of them.
pub const A: &str = "111111";
pub const B: &str = "222222";
pub const CULPRIT: &str = "C0FFEE";
pub const OUT: &str = "esp8266-out/";
pub const IN: &str = "esp8266-in/";

pub fn short_timing() -> Timing {
    Timing {
        scan_timeout: Duration::from_secs(1),
        associate_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(2),
        keepalive_interval: Duration::from_secs(3),
        link_timeout: Duration::from_secs(9),
        retry_backoff: Duration::from_millis(500),
        mqtt_keepalive: Duration::from_secs(10),
        uplink_grace: Duration::ZERO,
        candidate_refresh: Duration::ZERO,
    }
}

pub fn config(timing: Timing) -> Config {
    Config::builder()
        .firmware(0x1337, "0.1")
        .network("router", "routerpass")
        .timing(timing)
        .build()
        .expect("valid test config")
}

pub fn mesh_key() -> u32 {
    identity::mesh_key(DEFAULT_MESH_PASSWORD)
}

pub fn router_entry(bssid: Mac, rssi: i8) -> ScanEntry {
    ScanEntry {
        bssid,
        ssid: "router".try_into().expect("fits"),
        rssi,
        channel: 6,
        hidden: false,
        depth: None,
        free: None,
    }
}

pub fn mesh_entry(chip: u32, rssi: i8) -> ScanEntry {
    ScanEntry {
        bssid: identity::ap_mac(chip, mesh_key()),
        ssid: Default::default(),
        rssi,
        channel: 6,
        hidden: true,
        depth: None,
        free: None,
    }
}

pub fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = frame.encode(&mut buf).expect("valid test frame");
    buf[..n].to_vec()
}

/// The join key of the test mesh (default password and SSID base).
pub fn key() -> JoinKey {
    JoinKey::derive(DEFAULT_MESH_PASSWORD, DEFAULT_MESH_SSID_BASE)
}

/// The join request a test child sends.
pub fn request(id: &str, nonce: Nonce) -> JoinRequest<'_> {
    JoinRequest {
        nonce,
        node_id: id,
        chip_id: 0x00C0_FFEE,
        firmware_id: 0x1337,
        firmware_version: "0.1",
        subtree_height: 0,
    }
}

pub fn join_request(id: &str, nonce: Nonce) -> Vec<u8> {
    encode(&Frame::JoinRequest(request(id, nonce)))
}

/// A join request of another link protocol version (built by hand: the encoder always
/// writes [`VERSION`]).
pub fn join_request_version(id: &str, version: u8) -> Vec<u8> {
    let mut bytes = join_request(id, [0; 16]);
    bytes[HEADER_LEN + 1] = version;
    bytes
}

pub fn proof(tag: Tag) -> Vec<u8> {
    encode(&Frame::Proof { tag })
}

pub fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    encode(&Frame::Publish {
        id: 0,
        origin: CULPRIT,
        msg_type: MsgType::Qos1,
        topic,
        payload,
    })
}

pub fn path(ids: &[&str]) -> Path {
    ids.iter()
        .map(|s| NodeId::new(s).expect("valid ID"))
        .collect()
}

/// A node, a virtual clock, and everything the node asked for since the last `clear`.
pub struct Harness {
    /// Nonces handed to test children, so each join is fresh.
    pub next_nonce: u8,
    /// The capability byte test children mark their nonces with (default: they
    /// understand `MAKE_ROOM`, as a current node; 0 plays an older one).
    pub child_caps: u8,
    /// The last join request the node sent to its parent (kept across `clear`).
    pub join_request_sent: Option<Vec<u8>>,
    pub node: Node,
    pub now: Instant,
    pub transmits: Vec<(LinkId, Vec<u8>)>,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    /// Every log line since the start (kept across `clear`).
    pub logs: Vec<String>,
}

impl Harness {
    pub fn new(timing: Timing) -> Harness {
        let node = Node::new(config(timing), CHIP, 7, "Power on", Instant::ZERO);
        Harness {
            next_nonce: 1,
            child_caps: mqttmesh_core::link::subtree::CAP_MAKE_ROOM,
            join_request_sent: None,
            node,
            now: Instant::ZERO,
            transmits: Vec::new(),
            actions: Vec::new(),
            events: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// The run-loop contract: every poll until empty (bounded: the queues are).
    pub fn drain(&mut self) {
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
            if let Some(line) = self.node.poll_log() {
                self.logs.push(line.text.to_string());
                idle = false;
            }
            if idle {
                return;
            }
        }
        panic!("the node's queues did not drain");
    }

    pub fn clear(&mut self) {
        if let Some((_, bytes)) = self.transmits.iter().rev().find(|(l, b)| {
            *l == LinkId::Parent
                && matches!(Frame::decode(&b[HEADER_LEN..]), Ok(Frame::JoinRequest(_)))
        }) {
            self.join_request_sent = Some(bytes.clone());
        }
        self.transmits.clear();
        self.actions.clear();
        self.events.clear();
    }

    /// Offers `bytes` on `link` as a runtime would: drain whenever the node takes less.
    pub fn feed(&mut self, link: LinkId, bytes: &[u8]) {
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
    pub fn step(&mut self) {
        let deadline = self
            .node
            .poll_timeout()
            .expect("the node waits for something");
        self.now = self.now.max(deadline);
        self.node.handle_timeout(self.now);
        self.drain();
    }

    /// Frames sent on `link` since the last `clear`, decoded.
    pub fn sent_to(&self, link: LinkId) -> Vec<Frame<'_>> {
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

    /// Whether a log line so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.logs.iter().any(|l| l.contains(text))
    }

    pub fn asked(&self, wanted: &Action) -> bool {
        self.actions.contains(wanted)
    }

    /// Whether the node asked for a scan of any kind (every channel, or one).
    pub fn asked_scan(&self) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Scan | Action::ScanChannel(_)))
    }

    pub fn published(&self, topic: &str) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Publish(p) if p.topic == topic))
    }

    pub fn associating_with(&self) -> Option<Mac> {
        self.actions.iter().find_map(|a| match a {
            Action::Associate { bssid, .. } => Some(*bssid),
            _ => None,
        })
    }

    pub fn counters(&self) -> Counters {
        *self.node.counters()
    }

    pub fn children(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.node.children().map(|id| id.to_string()).collect();
        ids.sort();
        ids
    }

    /// Connects a new child link and runs the join handshake for `id`.
    pub fn join(&mut self, id: &str) -> LinkId {
        let link = self
            .node
            .handle_child_connected(self.now)
            .expect("a free slot");
        let t = self.challenge(link, id);
        self.feed(link, &proof(key().child_tag(&t)));
        assert!(
            matches!(self.sent_to(link).as_slice(), [Frame::JoinAccept { .. }]),
            "{id} is accepted"
        );
        self.clear();
        link
    }

    /// A fresh nonce for a test child.
    pub fn fresh_nonce(&mut self) -> Nonce {
        self.next_nonce = self.next_nonce.wrapping_add(1);
        let mut nonce = [self.next_nonce; 16];
        if self.child_caps != 0 {
            mqttmesh_core::link::subtree::mark_caps(&mut nonce, self.child_caps);
        }
        nonce
    }

    /// Sends `id`'s join request on `link` and checks the parent's Challenge (its tag
    /// proves the key); the transcript to prove ours over. Clears the record.
    pub fn challenge(&mut self, link: LinkId, id: &str) -> Transcript {
        let nonce = self.fresh_nonce();
        self.feed(link, &join_request(id, nonce));
        let t = match self.sent_to(link).as_slice() {
            [Frame::Challenge {
                nonce: parent_nonce,
                parent_id,
                tag,
            }] => {
                assert_eq!(*parent_id, self.node.id().as_str());
                let t = Transcript::new(&request(id, nonce), parent_nonce, parent_id)
                    .expect("valid request");
                assert!(key().verify_parent(&t, tag), "the parent proves the key");
                t
            }
            other => panic!("expected a challenge for {id}, got {other:?}"),
        };
        self.clear();
        t
    }

    /// As a child: answers the join request the node sent with a valid Challenge from
    /// `parent_id`, and checks the node's Proof. Clears the record.
    /// As the parent `parent_id`: challenges the node, checks its proof and accepts it
    /// with `path_ids` (root first, the parent last).
    pub fn accept_join(&mut self, parent_id: &str, path_ids: &[&str]) {
        self.pass_challenge(parent_id);
        self.feed(
            LinkId::Parent,
            &encode(&Frame::JoinAccept {
                path: path(path_ids),
            }),
        );
    }

    /// The association the node asked for with `bssid` succeeded: the link opens, and
    /// `parent_id` accepts the node with `path_ids` ([`Self::accept_join`]).
    pub fn rejoin(&mut self, bssid: Mac, parent_id: &str, path_ids: &[&str]) {
        self.node.handle_associated(self.now, bssid, Ok(IP));
        self.drain();
        self.node.handle_link_opened(self.now, LinkId::Parent);
        self.drain();
        self.clear();
        self.accept_join(parent_id, path_ids);
    }

    pub fn pass_challenge(&mut self, parent_id: &str) {
        let t = self.send_challenge(parent_id, &key());
        match self.sent_to(LinkId::Parent).as_slice() {
            [Frame::Proof { tag }] => {
                assert!(key().verify_child(&t, tag), "the child proves the key");
            }
            other => panic!("expected a proof, got {other:?}"),
        }
        self.clear();
    }

    /// As a child's parent: sends a Challenge from `parent_id` tagged with `key` for the
    /// join request the node sent last; the transcript.
    pub fn send_challenge(&mut self, parent_id: &str, key: &JoinKey) -> Transcript {
        let request_bytes = self
            .join_request_sent
            .clone()
            .expect("the node sent a join request");
        let Ok(Frame::JoinRequest(req)) = Frame::decode(&request_bytes[HEADER_LEN..]) else {
            panic!("not a join request");
        };
        let parent_nonce = [0x5a; 16];
        let t = Transcript::new(&req, &parent_nonce, parent_id).expect("valid request");
        let challenge = encode(&Frame::Challenge {
            nonce: parent_nonce,
            parent_id,
            tag: key.parent_tag(&t),
        });
        self.feed(LinkId::Parent, &challenge);
        t
    }

    /// `link`, joined as `id`, still gets a publication through to the broker.
    pub fn assert_relays(&mut self, link: LinkId, id: &str) {
        let topic = format!("{OUT}{id}/probe");
        self.feed(link, &publish(&topic, b"ping"));
        assert!(self.published(&topic), "{id}'s link still relays");
        assert!(!self.asked(&Action::CloseLink(link)));
        self.clear();
    }

    /// The node closed `link` for breaking the protocol.
    pub fn assert_protocol_close(&self, link: LinkId) {
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
    pub fn assert_join_rejected(&self, link: LinkId, reason: Reason) {
        assert_eq!(self.sent_to(link), [Frame::JoinReject { reason }]);
        assert!(self.asked(&Action::CloseLink(link)));
    }

    /// Runs the uplink until the node asks to associate or to scan (bounded).
    pub fn assert_retries_uplink(&mut self) {
        for _ in 0..10 {
            if self.associating_with().is_some() || self.asked_scan() {
                return;
            }
            self.step();
        }
        panic!("the node never tried to reconnect");
    }
}

/// Scan → router → associate → MQTT: a root with its AP open.
pub fn root() -> Harness {
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
pub fn parent() -> (Harness, LinkId, LinkId) {
    let mut h = root();
    let a = h.join(A);
    let b = h.join(B);
    assert_eq!(h.children(), [A, B]);
    (h, a, b)
}

/// Still online with `A` and `B`, and both still relay.
pub fn assert_family_intact(h: &mut Harness, a: LinkId, b: LinkId) {
    assert!(h.node.connected());
    assert!(h.node.ap_open());
    assert_eq!(h.children(), [A, B]);
    h.assert_relays(a, A);
    h.assert_relays(b, B);
}

/// A node that found only mesh parents (`chips`, best first), associated with the first
/// and sent its join request.
pub fn joining_child(timing: Timing, chips: &[u32]) -> Harness {
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
            assert_eq!(req.node_id, OWN_ID);
            assert_eq!(req.subtree_height, 0);
        }
        other => panic!("expected one join request, got {other:?}"),
    }
    h.clear();
    h
}

/// A node with `timing` that heard `chips` (best first) and joined the first,
/// `PARENT_ID`: online at depth 2.
pub fn joined_child(timing: Timing, chips: &[u32]) -> Harness {
    let mut h = joining_child(timing, chips);
    h.accept_join(PARENT_ID, &[PARENT_ID]);
    assert_eq!(h.node.state(), State::Mesh);
    assert_eq!(h.node.depth(), Some(2));
    h.clear();
    h
}

/// A node at depth 2 below `PARENT_ID`, its own AP open.
pub fn mesh_child() -> Harness {
    let h = joined_child(short_timing(), &[PARENT_CHIP]);
    assert!(h.node.ap_open());
    h
}

/// The node left the mesh: offline, AP closed, and trying to get back.
pub fn assert_left_mesh(h: &mut Harness) {
    assert_ne!(h.node.state(), State::Mesh);
    assert!(!h.node.connected());
    assert!(!h.node.ap_open());
    assert!(h.asked(&Action::CloseAp));
    assert!(h.events.contains(&Event::Disconnected));
    h.assert_retries_uplink();
}
