//! The world: nodes, radio, router, broker and links under one virtual clock.
//!
//! A node slot holds the core `Node` plus what the world knows about it: power,
//! association, AP, links, timer, and what it told its application and its log.
//! Stepping lives in `events`, the run loop around a node in `exec`.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::Ipv4Addr;

use mqttmesh_core::node::{Event, LinkId, Node};
use mqttmesh_core::rand::Rand;
use mqttmesh_core::{Config, Instant, Mac};

use crate::broker::Broker;
use crate::events::{Scheduled, SimTiming};
use crate::links::{Conn, ConnId, Probe, Tapped};
use crate::radio::{Endpoint, NodeIdx, Pos, Radio, DEFAULT_THRESHOLD, ROUTER};

/// Log lines kept per node.
pub const LOG_KEEP: usize = 400;
/// Router SSID used by [`World::new`] and friends.
pub const ROUTER_SSID: &str = "router";
/// Router password used by [`World::new`] and friends.
pub const ROUTER_PASSWORD: &str = "routerpass";
/// The router's BSSID.
pub const ROUTER_BSSID: Mac = Mac([0x0C, 0x00, 0x5E, 0x10, 0x20, 0x30]);
/// First chip ID handed out by [`World::chip_id_for`].
pub const FIRST_CHIP_ID: u32 = 0x0A_0001;

/// What a station is associated with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Assoc {
    Router,
    Ap(NodeIdx),
}

/// A node's open access point.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApState {
    pub(crate) depth: u8,
    pub(crate) max_children: u8,
    pub(crate) channel: u8,
    /// Whether it admits new stations and its beacon announces free slots
    /// (`Action::AdmitStations`).
    pub(crate) admits: bool,
}

/// An application message a node received (`Event::Message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// When the application got it.
    pub at: Instant,
    /// Subtopic.
    pub subtopic: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Everything the world keeps about one node.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) node: Node,
    pub(crate) alive: bool,
    /// Bumped on every kill/restart: events for an older incarnation are dropped.
    pub(crate) incarnation: u64,
    pub(crate) assoc: Option<Assoc>,
    /// Bumped on every (dis)association: stale association/connect results are dropped.
    pub(crate) sta_epoch: u64,
    /// Bumped on every MQTT connect/disconnect.
    pub(crate) mqtt_epoch: u64,
    pub(crate) pending_mqtt: Option<(String, String)>,
    pub(crate) ap: Option<ApState>,
    pub(crate) links: BTreeMap<LinkId, ConnId>,
    pub(crate) timer: Option<Instant>,
    pub(crate) last_timeout: Option<Instant>,
    pub(crate) events: Vec<(Instant, Event)>,
    pub(crate) received: Vec<Received>,
    pub(crate) logs: VecDeque<String>,
    pub(crate) restarts: u32,
    /// When this node's radio is next free to send, microseconds.
    pub(crate) air_free_us: u64,
    /// Stations associated with this node's AP.
    pub(crate) stations: BTreeSet<NodeIdx>,
    /// Whether the node counted as online after its last drain.
    pub(crate) online: bool,
    /// Since when its AP has been open without a real path to the broker.
    pub(crate) orphan_since: Option<Instant>,
    /// Whether that was reported already.
    pub(crate) orphan_reported: bool,
}

/// A deterministic virtual-time world of mesh nodes, one router and one broker.
#[derive(Debug)]
pub struct World {
    pub(crate) now: Instant,
    pub(crate) seed: u64,
    pub(crate) rng: Rand,
    pub(crate) seq: u64,
    pub(crate) queue: BinaryHeap<Scheduled>,
    pub(crate) nodes: Vec<Slot>,
    pub(crate) radio: Radio,
    pub(crate) threshold: i8,
    pub(crate) rssi_noise: u8,
    pub(crate) router_up: bool,
    pub(crate) router_password: String,
    pub(crate) router_ssid: String,
    pub(crate) enforce_capacity: bool,
    pub(crate) timing: SimTiming,
    pub(crate) broker: Broker,
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    pub(crate) next_conn: u64,
    pub(crate) probes: Vec<Probe>,
    pub(crate) dropped: u64,
    /// AP MAC → node (fixed per node: chip ID and mesh password).
    pub(crate) by_bssid: BTreeMap<Mac, NodeIdx>,
    pub(crate) steps: u64,
    /// Bumped by [`World::broker_restart`]: publications in flight before are lost.
    pub(crate) broker_epoch: u64,
    /// Frames the radio lost and resent.
    pub(crate) resent: u64,
    /// Powered nodes.
    pub(crate) alive_count: usize,
    /// Powered nodes with a path to the broker (as they believe).
    pub(crate) online_count: usize,
    /// Who may hear whom; `None` until needed after a change.
    pub(crate) neighbours: Option<crate::neighbours::Index>,
    /// Node ID → index.
    pub(crate) by_id: HashMap<String, NodeIdx>,
    pub(crate) violations: Vec<crate::invariants::Violation>,
    pub(crate) violation_count: u64,
    pub(crate) grace: Option<mqttmesh_core::Duration>,
    pub(crate) next_sweep: Instant,
    pub(crate) app: Option<crate::app::App>,
    pub(crate) broker_up: bool,
    /// Frames between nodes, recorded while on (see [`World::tap_frames`]).
    pub(crate) tap: Option<Vec<Tapped>>,
    /// A frame type lost on every link (see [`World::drop_frame_type`]).
    pub(crate) drop_code: Option<u8>,
}

impl World {
    /// An empty world with positional radio, the router at the origin.
    pub fn new(seed: u64) -> World {
        World::with_radio(
            seed,
            Radio::Positions {
                router: Pos::default(),
                nodes: Vec::new(),
            },
        )
    }

    /// An empty world with an explicit neighbour graph (add edges with
    /// [`World::set_rssi`]).
    pub fn graph(seed: u64) -> World {
        World::with_radio(
            seed,
            Radio::Graph {
                edges: BTreeMap::new(),
            },
        )
    }

    fn with_radio(seed: u64, radio: Radio) -> World {
        World {
            now: Instant::ZERO,
            seed,
            rng: Rand::new(seed ^ 0x5151_5EED),
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            radio,
            threshold: DEFAULT_THRESHOLD,
            rssi_noise: 0,
            router_up: true,
            router_password: ROUTER_PASSWORD.to_owned(),
            router_ssid: ROUTER_SSID.to_owned(),
            enforce_capacity: true,
            timing: SimTiming::default(),
            broker: Broker::default(),
            conns: BTreeMap::new(),
            next_conn: 0,
            probes: Vec::new(),
            dropped: 0,
            by_bssid: BTreeMap::new(),
            steps: 0,
            broker_epoch: 0,
            resent: 0,
            alive_count: 0,
            online_count: 0,
            neighbours: None,
            by_id: HashMap::new(),
            violations: Vec::new(),
            violation_count: 0,
            grace: None,
            next_sweep: Instant::ZERO,
            app: None,
            broker_up: true,
            tap: None,
            drop_code: None,
        }
    }

    /// `n` nodes in a line: only node 0 hears the router; node `i` hears `i±1` (all at
    /// -60 dBm), so node `i` sits at depth `i + 1`.
    pub fn line(n: usize, config: &Config, seed: u64) -> World {
        let mut edges = vec![(ROUTER, 0, -60)];
        edges.extend((1..n).map(|i| (i - 1, i, -60)));
        World::from_edges(n, config, seed, &edges)
    }

    /// `n` nodes with `config` and an explicit graph: `(a, b, rssi)` edges, [`ROUTER`]
    /// standing for the router.
    pub fn from_edges(n: usize, config: &Config, seed: u64, edges: &[(usize, usize, i8)]) -> World {
        let mut world = World::graph(seed);
        for &(a, b, rssi) in edges {
            world.set_rssi(a, b, Some(rssi));
        }
        for _ in 0..n {
            world.add_node(config.clone());
        }
        world
    }

    /// Adds a node with the next chip ID (see [`World::chip_id_for`]), powered on now.
    pub fn add_node(&mut self, config: Config) -> NodeIdx {
        let idx = self.nodes.len();
        self.add_node_with_chip(config, World::chip_id_for(idx))
    }

    /// Adds a node at `pos` (positional radio), powered on now.
    pub fn add_node_at(&mut self, config: Config, pos: Pos) -> NodeIdx {
        let idx = self.nodes.len();
        self.radio.place(idx, pos);
        self.add_node(config)
    }

    /// Adds a node at `pos` (positional radio) with an explicit chip ID, powered on now.
    pub fn add_node_at_with_chip(&mut self, config: Config, pos: Pos, chip_id: u32) -> NodeIdx {
        let idx = self.nodes.len();
        self.radio.place(idx, pos);
        self.add_node_with_chip(config, chip_id)
    }

    /// Adds a node with an explicit chip ID, powered on now.
    pub fn add_node_with_chip(&mut self, config: Config, chip_id: u32) -> NodeIdx {
        let idx = self.nodes.len();
        let node = Node::new(
            config,
            chip_id,
            self.node_seed(idx, 0),
            "Power on",
            self.now,
        );
        self.by_bssid.insert(node.ap_mac(), idx);
        self.by_id.insert(node.id().as_str().to_owned(), idx);
        self.invalidate_neighbours();
        self.nodes.push(Slot {
            node,
            alive: true,
            incarnation: 0,
            assoc: None,
            sta_epoch: 0,
            mqtt_epoch: 0,
            pending_mqtt: None,
            ap: None,
            links: BTreeMap::new(),
            timer: None,
            last_timeout: None,
            events: Vec::new(),
            received: Vec::new(),
            logs: VecDeque::new(),
            restarts: 0,
            air_free_us: 0,
            stations: BTreeSet::new(),
            online: false,
            orphan_since: None,
            orphan_reported: false,
        });
        self.alive_count += 1;
        self.drain(idx);
        self.schedule_app_tick(idx);
        idx
    }

    /// The chip ID [`World::add_node`] gives node `idx`.
    pub fn chip_id_for(idx: NodeIdx) -> u32 {
        // Cannot truncate in practice: worlds have far fewer than 2^24 nodes.
        (FIRST_CHIP_ID + idx as u32) & 0x00FF_FFFF
    }

    pub(crate) fn node_seed(&self, idx: NodeIdx, incarnation: u64) -> u64 {
        let mut r = Rand::new(self.seed ^ ((idx as u64) << 20) ^ (incarnation << 48));
        r.next_u64()
    }

    // ---- settings ------------------------------------------------------------------

    /// Sets the RSSI of the radio edge `a`–`b` ([`ROUTER`] for the router), or removes it.
    pub fn set_rssi(&mut self, a: usize, b: usize, rssi: Option<i8>) {
        self.radio
            .set_edge(Endpoint::from(a), Endpoint::from(b), rssi);
        self.invalidate_neighbours();
    }

    /// Whether a full AP refuses further stations (default on). Off lets a surplus
    /// station reach the parent's own join logic.
    pub fn enforce_ap_capacity(&mut self, on: bool) {
        self.enforce_capacity = on;
    }

    /// Visibility threshold, dBm (default -85).
    pub fn set_threshold(&mut self, dbm: i8) {
        self.threshold = dbm;
        self.invalidate_neighbours();
    }

    /// Random ±`db` added to every RSSI a scan reports (default 0).
    pub fn set_rssi_noise(&mut self, db: u8) {
        self.rssi_noise = db;
    }

    /// The simulated latencies.
    pub fn set_timing(&mut self, timing: SimTiming) {
        self.timing = timing;
    }

    /// The router's WPA2 password (default `routerpass`).
    pub fn set_router_password(&mut self, password: &str) {
        self.router_password = password.to_owned();
    }

    /// The router's SSID (default `router`).
    pub fn set_router_ssid(&mut self, ssid: &str) {
        ssid.clone_into(&mut self.router_ssid);
    }

    /// Where the router stands (positional radio only; default the origin).
    pub fn set_router_position(&mut self, pos: Pos) {
        if let Radio::Positions { router, .. } = &mut self.radio {
            *router = pos;
        }
    }

    /// Changes what station `idx` is associated with, keeping the APs' station sets.
    pub(crate) fn set_assoc(&mut self, idx: NodeIdx, assoc: Option<Assoc>) {
        if let Some(Assoc::Ap(ap)) = self.nodes[idx].assoc {
            self.nodes[ap].stations.remove(&idx);
        }
        if let Some(Assoc::Ap(ap)) = assoc {
            self.nodes[ap].stations.insert(idx);
        }
        self.nodes[idx].assoc = assoc;
    }

    /// Re-counts node `idx` after anything that may have changed whether it is online.
    pub(crate) fn update_online(&mut self, idx: NodeIdx) {
        let slot = &mut self.nodes[idx];
        let on = slot.alive && slot.node.connected();
        if on != slot.online {
            slot.online = on;
            if on {
                self.online_count += 1;
            } else {
                self.online_count -= 1;
            }
        }
    }

    pub(crate) fn address(&self, idx: NodeIdx, assoc: Assoc) -> Ipv4Addr {
        let host = idx + 2;
        match assoc {
            // Cannot matter: the casts only wrap in worlds beyond 65k nodes.
            Assoc::Router => Ipv4Addr::new(10, 0, (host >> 8) as u8, host as u8),
            Assoc::Ap(ap) => Ipv4Addr::new(
                10,
                1u8.wrapping_add((ap >> 8) as u8),
                ap as u8,
                2 + (idx % 250) as u8,
            ),
        }
    }
}
