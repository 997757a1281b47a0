//! The mesh node: one sans-IO state machine.
//!
//! A [`Node`] never reads a clock and never does I/O. The runtime (the tokio host, the
//! virtual-time simulator, the chip firmware) feeds it events and the current time
//! through `handle_*` calls and carries out what it asks through `poll_*` calls.
//!
//! # Run-loop contract
//!
//! After any `handle_*` call (or any application `publish*`), drain, in this order:
//!
//! 1. [`Node::poll_transmit`] until `None`: write each frame to its link (drop it if the
//!    link is gone);
//! 2. [`Node::poll_action`] until `None`: carry out each [`Action`];
//! 3. [`Node::poll_event`] until `None`: hand each [`Event`] to the application;
//! 4. [`Node::poll_log`] until `None` (optional): print each line.
//!
//! then sleep until [`Node::poll_timeout`] or the next input, and call
//! [`Node::handle_timeout`] when the deadline passes. [`Node::handle_link_data`] may
//! take fewer bytes than offered when its output queues are full: drain, then offer the
//! rest again.
//!
//! # Life cycle
//!
//! scan → rank → associate with the best candidate → router: MQTT session; mesh
//! parent: TCP link to its mesh port and the join handshake → online: open our own AP
//! (only while the path to the broker is up) → accept up to `max_children` children,
//! relay up and down → on uplink loss: close the AP and the child links, try the
//! remaining ranked candidates, then rescan with backoff.

mod builtins;
mod children;
mod heal;
mod io;
mod outbox;
mod parent;
mod rebalance;
mod routes;
mod subtree;
mod uplink;

use core::fmt::Write as _;
use core::net::Ipv4Addr;

use heapless::{Deque, String, Vec};

use crate::config::{Config, MAX_CHILDREN_LIMIT};
use crate::identity::{self, Mac, NodeId};
use crate::link::{
    self, Deframer, Frame, JoinKey, Nonce, Path, Transcript, MAX_FRAME, MAX_PAYLOAD,
};
use crate::rand::Rand;
use crate::time::Instant;
use crate::topic::{self, MsgType, Topic};
use crate::uplink::{Candidate, MAX_CANDIDATES, MAX_PENALTIES};

pub use builtins::{LOST_CONNECTION, OFFLINE, ONLINE};
pub use heal::{CANDIDATE_MAX_AGE, HELD_SCAN_INTERVAL};
pub use io::{
    Action, Counters, Event, Level, LinkId, LogLine, OtaExchange, Parent, Publish, PublishError,
    MAX_OTA_COMMAND,
};
pub use outbox::{INFLIGHT_LEN, RECENT_LEN};
pub use rebalance::{
    ASK_INTERVAL, FULL_FOR, KNOCKED_LEN, KNOCK_REST, MAX_MOVES, MOVE_INTERVAL, REPEAT_WINDOW,
};
pub use routes::ROUTES_LEN;
pub use subtree::{MAX_SUBTREE_FIRMWARE, MAX_SUBTREE_NODES, SUBTREE_DELAY};
pub use uplink::{AssocError, State};

/// Child link slots: `max_children` joined children plus one spare, so a surplus child
/// can be told `Full` instead of being dropped silently.
pub const CHILD_SLOTS: usize = MAX_CHILDREN_LIMIT as usize + 1;
/// Capacity of the action and transmit queues.
pub const QUEUE_LEN: usize = 32;
/// Capacity of the application event queue.
pub const EVENT_QUEUE_LEN: usize = 8;
/// Capacity of the log queue.
pub const LOG_QUEUE_LEN: usize = 16;
/// Longest log line.
pub const MAX_LOG_LEN: usize = 120;
/// Free queue slots required before another inbound frame is processed.
const HEADROOM: usize = 2 * CHILD_SLOTS + 4;

#[derive(Debug)]
struct Transmit {
    link: LinkId,
    frame: Vec<u8, MAX_FRAME>,
}

#[derive(Debug, Default)]
enum ChildState {
    #[default]
    Free,
    /// Link open, waiting for the JoinRequest.
    Pending,
    /// Challenge sent, waiting for the child's Proof.
    Challenged(Challenged),
    Joined {
        id: NodeId,
    },
}

/// What a parent keeps between its Challenge and the child's Proof.
#[derive(Debug)]
struct Challenged {
    id: NodeId,
    transcript: Transcript,
    subtree_height: u8,
    firmware_id: u32,
}

/// Where the child side of the join handshake is (while `State::Joining`).
#[derive(Debug, Default)]
enum Handshake {
    #[default]
    Idle,
    /// JoinRequest sent with this nonce; waiting for the Challenge.
    AwaitChallenge { nonce: Nonce },
    /// Proof sent to this parent; waiting for JoinAccept.
    AwaitAccept { parent_id: NodeId },
}

#[derive(Debug, Default)]
struct Child {
    state: ChildState,
    deframer: Deframer,
    since: Instant,
    last_rx: Instant,
    last_tx: Instant,
    /// What the child announced about its subtree.
    summary: subtree::Summary,
    /// The child's capability byte, from its JoinRequest nonce.
    caps: u8,
}

#[derive(Debug, Default)]
struct ParentLink {
    open: bool,
    handshake: Handshake,
    deframer: Deframer,
    last_rx: Instant,
    last_tx: Instant,
}

/// A mesh node. See the module documentation for the run-loop contract.
#[derive(Debug)]
pub struct Node {
    config: Config,
    chip_id: u32,
    id: NodeId,
    mesh_key: u32,
    join_key: JoinKey,
    ap_mac: Mac,
    sta_mac: Mac,
    rand: Rand,
    reset_reason: String<32>,
    ever_online: bool,

    state: State,
    deadline: Option<Instant>,
    candidates: Vec<Candidate, MAX_CANDIDATES>,
    cursor: usize,
    current: Option<Candidate>,
    ip: Option<Ipv4Addr>,
    backoff: u8,
    penalties: Vec<(Mac, Instant), MAX_PENALTIES>,
    path: Path,
    reassert_at: Option<Instant>,

    parent: ParentLink,
    children: [Child; CHILD_SLOTS],
    ap_open: bool,
    /// Whether the runtime's AP is up (`OpenAp` sent, no `CloseAp` since): it stays up
    /// for kept children while `ap_open` refuses new ones.
    ap_up: bool,
    /// While recovering from an uplink loss with children kept (or while held by our
    /// parent): when the grace period ends.
    grace_until: Option<Instant>,
    /// When the candidate list was last ranked from a scan.
    scanned_at: Option<Instant>,
    /// When the next background scan starts (while online).
    refresh_at: Option<Instant>,
    /// A background scan is running.
    bg_scan: bool,
    /// Lost the uplink and not back yet: when the candidates run out, scan at once.
    quick_rescan: bool,
    /// When we last lost the uplink (cleared once online again).
    lost_at: Option<Instant>,
    /// The channel of our last uplink (the mesh's channel): what background and
    /// recovery scans look at.
    channel: Option<u8>,
    /// The uplink scan running covers [`Node::channel`] only.
    channel_scan: bool,
    /// Re-balancing: knocks, `MakeRoom` requests and moves.
    rebalance: rebalance::Rebalance,

    /// The latest time handed in (the application's `publish` has no clock).
    now: Instant,
    outbox: outbox::Outbox,
    acks: outbox::Acks,
    routes: routes::Routes,
    /// The parent's capability byte from its Challenge nonce.
    parent_caps: u8,
    /// When to send our subtree announcement.
    subtree_at: Option<Instant>,
    /// The last announcement sent to the current parent.
    subtree_sent: Option<subtree::Sent>,

    actions: Deque<Action, QUEUE_LEN>,
    transmits: Deque<Transmit, QUEUE_LEN>,
    events: Deque<Event, EVENT_QUEUE_LEN>,
    logs: Deque<LogLine, LOG_QUEUE_LEN>,
    counters: Counters,
}

impl Node {
    /// A node for chip `chip_id` (low 24 bits), starting at `now`.
    ///
    /// `seed` feeds the node's jitter and the nonces of the join handshake: on the chip
    /// it must come from the hardware RNG at every boot (`docs/PROTOCOL.md` "Join
    /// handshake", "Nonces"). `reset_reason` is published once on the first
    /// connection (`info/reset_Reason`), e.g. `Power on` or `Restart`.
    pub fn new(config: Config, chip_id: u32, seed: u64, reset_reason: &str, now: Instant) -> Node {
        let chip_id = chip_id & 0x00FF_FFFF;
        let mesh_key = identity::mesh_key(&config.mesh_password);
        // Derived once: the join handshake only clones the keyed HMAC.
        let join_key = JoinKey::derive(&config.mesh_password, &config.mesh_ssid_base);
        let id = config
            .node_id
            .clone()
            .unwrap_or_else(|| NodeId::from_chip_id(chip_id));
        let mut reason = String::new();
        for c in reset_reason.chars() {
            if reason.push(c).is_err() {
                break;
            }
        }
        let mut rand = Rand::new(seed ^ u64::from(chip_id));
        // Cannot truncate: `below(u16::MAX)` < 2^16.
        let first_id = rand.below(u64::from(u16::MAX)) as u16;
        let mut node = Node {
            ap_mac: identity::ap_mac(chip_id, mesh_key),
            sta_mac: identity::station_mac(chip_id, mesh_key),
            config,
            chip_id,
            id,
            mesh_key,
            join_key,
            rand,
            reset_reason: reason,
            ever_online: false,
            state: State::Idle,
            deadline: None,
            candidates: Vec::new(),
            cursor: 0,
            current: None,
            ip: None,
            backoff: 0,
            penalties: Vec::new(),
            path: Vec::new(),
            reassert_at: None,
            parent: ParentLink::default(),
            children: Default::default(),
            ap_open: false,
            ap_up: false,
            grace_until: None,
            scanned_at: None,
            refresh_at: None,
            bg_scan: false,
            quick_rescan: false,
            lost_at: None,
            channel: None,
            channel_scan: false,
            rebalance: rebalance::Rebalance::default(),
            now,
            outbox: outbox::Outbox::new(first_id),
            acks: outbox::Acks::default(),
            routes: routes::Routes::default(),
            parent_caps: 0,
            subtree_at: None,
            subtree_sent: None,
            actions: Deque::new(),
            transmits: Deque::new(),
            events: Deque::new(),
            logs: Deque::new(),
            counters: Counters::default(),
        };
        // A little start-up jitter so a powered-on room of nodes does not scan in lockstep.
        let jitter = crate::time::Duration::from_millis(node.rand.below(200));
        node.deadline = Some(now + jitter);
        node
    }

    // ---- getters -------------------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// Our node ID.
    pub fn id(&self) -> &NodeId {
        &self.id
    }
    /// Our chip ID.
    pub fn chip_id(&self) -> u32 {
        self.chip_id
    }
    /// Our AP MAC (BSSID).
    pub fn ap_mac(&self) -> Mac {
        self.ap_mac
    }
    /// Our station MAC.
    pub fn station_mac(&self) -> Mac {
        self.sta_mac
    }
    /// The mesh key derived from the mesh password.
    pub fn mesh_key(&self) -> u32 {
        self.mesh_key
    }
    /// Whether the path to the broker is up (the original's `connected()`).
    pub fn connected(&self) -> bool {
        matches!(self.state, State::Root | State::Mesh)
    }
    /// Where we are in the life cycle.
    pub fn state(&self) -> State {
        self.state
    }
    /// Our depth (root = 1) while connected.
    pub fn depth(&self) -> Option<u8> {
        if self.connected() {
            u8::try_from(self.path.len()).ok()
        } else {
            None
        }
    }
    /// Our path to the root (root first, us last) while connected.
    pub fn path(&self) -> &[NodeId] {
        if self.connected() {
            &self.path
        } else {
            &[]
        }
    }
    /// Our uplink.
    pub fn parent(&self) -> Parent {
        match (&self.state, &self.current) {
            (State::Root, Some(c)) => Parent::Router { bssid: c.bssid },
            (State::Mesh, Some(c)) => match self
                .path
                .len()
                .checked_sub(2)
                .and_then(|i| self.path.get(i))
            {
                Some(id) => Parent::Node {
                    id: id.clone(),
                    bssid: c.bssid,
                },
                None => Parent::None,
            },
            _ => Parent::None,
        }
    }
    /// IDs of the joined children.
    pub fn children(&self) -> impl Iterator<Item = &NodeId> {
        self.children.iter().filter_map(|c| match &c.state {
            ChildState::Joined { id } => Some(id),
            _ => None,
        })
    }
    /// Whether our AP is open.
    pub fn ap_open(&self) -> bool {
        self.ap_open
    }
    /// Our address from the current association.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.ip
    }
    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    // ---- application API -----------------------------------------------------------

    /// Publishes `payload` on `<out><ID>/<subtopic>` (the original's `publish`).
    pub fn publish(
        &mut self,
        subtopic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        let topic = topic::out_node(&self.config.out_prefix, &self.id, subtopic)
            .map_err(|_| PublishError::BadTopic)?;
        self.publish_topic(&topic, payload, msg_type)
    }

    /// Publishes `payload` on `<in><node>/<subtopic>`: a message to another node, by way
    /// of the broker (the original's `publish_node`).
    pub fn publish_node(
        &mut self,
        node: &str,
        subtopic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        if NodeId::new(node).is_err() {
            return Err(PublishError::BadTopic);
        }
        let topic = topic::in_node(&self.config.in_prefix, node, subtopic)
            .map_err(|_| PublishError::BadTopic)?;
        self.publish_topic(&topic, payload, msg_type)
    }

    /// Publishes on a full topic, through the broker session or the parent; a QoS ≥ 1
    /// message goes through the outbox (and is accepted while offline).
    fn publish_topic(
        &mut self,
        topic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        let result = if payload.len() > MAX_PAYLOAD {
            Err(PublishError::TooLarge)
        } else if msg_type.qos() >= 1 {
            self.publish_reliable(topic, payload, msg_type)
        } else {
            self.send_up(topic, payload, msg_type)
        };
        if result.is_err() {
            self.counters.publish_rejected += 1;
        }
        result
    }

    /// Sends one of our own messages towards the broker without tracking it: directly
    /// when root, through the parent when in the mesh.
    fn send_up(
        &mut self,
        topic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        let origin = self.id.clone();
        self.relay_up(origin.as_str(), 0, topic, payload, msg_type)
    }

    /// Sends a message of `origin` (ours or a descendant's) towards the broker. A
    /// message with an ID asks for an acknowledgement: the root tracks it.
    fn relay_up(
        &mut self,
        origin: &str,
        id: u16,
        topic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(PublishError::TooLarge);
        }
        match self.state {
            State::Root if id != 0 && msg_type.qos() >= 1 => {
                self.publish_relayed_reliable(origin, id, topic, payload, msg_type)
            }
            State::Root => self.publish_action(topic, payload, msg_type, None),
            State::Mesh => self
                .send_frame(
                    LinkId::Parent,
                    &Frame::Publish {
                        id,
                        origin,
                        msg_type,
                        topic,
                        payload,
                    },
                )
                .map_err(|()| PublishError::QueueFull),
            _ => Err(PublishError::NotConnected),
        }
    }

    /// Asks the runtime to publish on the broker session.
    fn publish_action(
        &mut self,
        topic: &str,
        payload: &[u8],
        msg_type: MsgType,
        token: Option<u32>,
    ) -> Result<(), PublishError> {
        let mut t = Topic::new();
        t.push_str(topic).map_err(|_| PublishError::BadTopic)?;
        let mut p = Vec::new();
        p.extend_from_slice(payload)
            .map_err(|_| PublishError::TooLarge)?;
        self.push_action(Action::Publish(Publish {
            topic: t,
            payload: p,
            msg_type,
            token,
        }))
        .map_err(|()| PublishError::QueueFull)
    }

    // ---- outputs -------------------------------------------------------------------

    /// The next frame to write: copies it into `buf` (at least [`MAX_FRAME`] bytes) and
    /// returns its link and length.
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<(LinkId, usize)> {
        let t = self.transmits.pop_front()?;
        let len = t.frame.len();
        match buf.get_mut(..len) {
            Some(dst) => {
                dst.copy_from_slice(&t.frame);
                Some((t.link, len))
            }
            None => {
                self.counters.queue_dropped += 1;
                Some((t.link, 0))
            }
        }
    }

    /// The next action for the runtime.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next application event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next log line.
    pub fn poll_log(&mut self) -> Option<LogLine> {
        self.logs.pop_front()
    }

    /// When [`Node::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.deadline;
        if let Some(t) = self.reassert_at {
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        let mut consider = |t: Instant| {
            next = Some(next.map_or(t, |n| n.min(t)));
        };
        if let Some(t) = self.grace_until {
            consider(t);
        }
        if let Some(t) = self.refresh_at {
            consider(t);
        }
        if let Some(t) = self.subtree_at {
            consider(t);
        }
        if matches!(self.state, State::Root | State::Mesh) {
            if let Some(t) = self.outbox.next_due() {
                consider(t);
            }
        }
        if self.state == State::Root {
            if let Some(t) = self.acks.next_expiry(self.ack_timeout()) {
                consider(t);
            }
        }
        let timing = self.config.timing;
        if self.parent.open {
            if matches!(self.state, State::Mesh | State::Held) {
                consider(self.parent.last_tx + timing.keepalive_interval);
            }
            consider(self.parent.last_rx + timing.link_timeout);
        }
        for child in &self.children {
            match child.state {
                ChildState::Free => {}
                ChildState::Pending | ChildState::Challenged(_) => {
                    consider(child.since + timing.connect_timeout)
                }
                ChildState::Joined { .. } => {
                    consider(child.last_tx + timing.keepalive_interval);
                    consider(child.last_rx + timing.link_timeout);
                }
            }
        }
        next
    }

    // ---- inputs --------------------------------------------------------------------

    /// Time has reached [`Node::poll_timeout`] (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.grace_until.is_some_and(|t| t <= now) {
            self.grace_until = None;
            self.on_grace_over(now);
        }
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.on_uplink_timer(now);
        }
        if self.reassert_at.is_some_and(|t| t <= now) {
            self.reassert_at = None;
            self.reassert_online();
        }
        if self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            self.on_refresh_timer(now);
        }
        if self.subtree_at.is_some_and(|t| t <= now) {
            self.on_subtree_timer();
        }
        self.check_parent_link(now);
        self.check_children(now);
        self.flush_outbox();
    }

    /// Bytes arrived on `link`. Returns how many were taken; when fewer than offered,
    /// drain the polls and offer the rest again.
    pub fn handle_link_data(&mut self, now: Instant, link: LinkId, data: &[u8]) -> usize {
        self.tick(now);
        let mut consumed = 0;
        let mut body = [0u8; link::MAX_BODY];
        loop {
            let Some(deframer) = self.deframer(link) else {
                return data.len();
            };
            if let Some(frame) = deframer.frame() {
                let len = frame.len();
                body[..len].copy_from_slice(frame);
                deframer.consume();
                self.counters.frames_in += 1;
                self.on_frame_bytes(now, link, &body[..len]);
                continue;
            }
            let rest = &data[consumed..];
            if rest.is_empty() || !self.has_headroom() {
                return consumed;
            }
            let Some(deframer) = self.deframer(link) else {
                return data.len();
            };
            match deframer.feed(rest) {
                Ok(n) => consumed += n,
                Err(e) => {
                    self.counters.malformed += 1;
                    self.log(
                        Level::Warn,
                        format_args!("{link:?}: bad frame header ({e}); closing"),
                    );
                    self.protocol_close(now, link);
                    return data.len();
                }
            }
        }
    }

    /// A link closed (by the peer, the network, or a failed connect).
    pub fn handle_link_closed(&mut self, now: Instant, link: LinkId) {
        self.tick(now);
        match link {
            LinkId::Parent => self.on_parent_closed(now),
            LinkId::Child(slot) => self.on_child_closed(now, slot),
        }
    }

    // ---- internals shared by the submodules ----------------------------------------

    /// Remembers the latest time handed in.
    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn deframer(&mut self, link: LinkId) -> Option<&mut Deframer> {
        match link {
            LinkId::Parent if self.parent.open => Some(&mut self.parent.deframer),
            LinkId::Parent => None,
            LinkId::Child(slot) => self
                .children
                .get_mut(usize::from(slot))
                .filter(|c| !matches!(c.state, ChildState::Free))
                .map(|c| &mut c.deframer),
        }
    }

    fn on_frame_bytes(&mut self, now: Instant, link: LinkId, body: &[u8]) {
        match Frame::decode(body) {
            Ok(frame) => match link {
                LinkId::Parent => self.on_parent_frame(now, frame),
                LinkId::Child(slot) => self.on_child_frame(now, slot, frame),
            },
            Err(link::DecodeError::UnsupportedVersion(v)) if self.awaits_join_request(link) => {
                if let LinkId::Child(slot) = link {
                    self.log(
                        Level::Warn,
                        format_args!("child {slot}: link protocol version {v}; refusing join"),
                    );
                    self.reject(slot, link::Reason::Version);
                }
            }
            Err(e) => {
                self.counters.malformed += 1;
                self.log(
                    Level::Warn,
                    format_args!("{link:?}: malformed frame ({e}); closing"),
                );
                self.protocol_close(now, link);
            }
        }
    }

    /// Whether `link` is a child link that has not sent its JoinRequest yet.
    fn awaits_join_request(&self, link: LinkId) -> bool {
        match link {
            LinkId::Parent => false,
            LinkId::Child(slot) => self
                .children
                .get(usize::from(slot))
                .is_some_and(|c| matches!(c.state, ChildState::Pending)),
        }
    }

    /// A fresh handshake nonce from the node's generator (seeded by the runtime: on the
    /// chip from the hardware RNG, see `docs/PROTOCOL.md` "Join handshake").
    fn nonce(&mut self) -> Nonce {
        let mut nonce = [0u8; link::NONCE_LEN];
        for chunk in nonce.chunks_mut(8) {
            let bytes = self.rand.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        nonce
    }

    /// Closes a link whose peer broke the protocol.
    fn protocol_close(&mut self, now: Instant, link: LinkId) {
        let _ = self.send_frame(
            link,
            &Frame::Leave {
                reason: link::Reason::Protocol,
            },
        );
        let _ = self.push_action(Action::CloseLink(link));
        self.handle_link_closed(now, link);
    }

    /// Room for what one more inbound frame can produce: relays and actions, and one
    /// application event (a full event queue drops its oldest event).
    fn has_headroom(&self) -> bool {
        QUEUE_LEN - self.actions.len() >= HEADROOM
            && QUEUE_LEN - self.transmits.len() >= HEADROOM
            && !self.events.is_full()
    }

    /// Queues a frame for `link`. Fails (and counts) when the queue is full.
    fn send_frame(&mut self, link: LinkId, frame: &Frame<'_>) -> Result<(), ()> {
        let mut buf: Vec<u8, MAX_FRAME> = Vec::new();
        // Cannot fail: MAX_FRAME is the vector's capacity.
        let _ = buf.resize(MAX_FRAME, 0);
        let len = match frame.encode(&mut buf) {
            Ok(len) => len,
            Err(e) => {
                self.counters.queue_dropped += 1;
                self.log(
                    Level::Warn,
                    format_args!("cannot encode frame for {link:?}: {e}"),
                );
                return Err(());
            }
        };
        buf.truncate(len);
        if self
            .transmits
            .push_back(Transmit { link, frame: buf })
            .is_err()
        {
            self.counters.queue_dropped += 1;
            return Err(());
        }
        self.counters.frames_out += 1;
        Ok(())
    }

    fn push_action(&mut self, action: Action) -> Result<(), ()> {
        self.actions.push_back(action).map_err(|_| {
            self.counters.queue_dropped += 1;
        })
    }

    fn push_event(&mut self, event: Event) {
        if self.events.is_full() {
            self.events.pop_front();
            self.counters.queue_dropped += 1;
        }
        let _ = self.events.push_back(event);
    }

    fn log(&mut self, level: Level, args: core::fmt::Arguments<'_>) {
        let mut text = String::new();
        // Truncation of an over-long line is fine.
        let _ = text.write_fmt(args);
        if self.logs.is_full() {
            self.logs.pop_front();
        }
        let _ = self.logs.push_back(LogLine { level, text });
    }
}
