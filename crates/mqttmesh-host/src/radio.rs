//! The emulated radio: who hears whom at what RSSI, which access points are open, who
//! is associated with whom, and how long radio operations take.
//!
//! Positions give RSSI by log-distance path loss; an explicit graph may replace them.
//! A node may open TCP only to what its association allows (the broker when on the
//! router, its parent's mesh port when on a node's AP): the runtime asks
//! [`Radio::broker_reachable`] and [`Radio::parent_addr`] before connecting.
//!
//! A full AP turns a station away ([`AssocError::Full`]) and its owner hears of it
//! through the sink registered with [`Radio::on_station_refused`]: what drives
//! re-balancing (`docs/PROTOCOL.md` "Re-balancing").

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use heapless::String as HString;
use mqttmesh_core::node::AssocError;
use mqttmesh_core::uplink::ScanEntry;
use mqttmesh_core::Mac;

use crate::air::Air;

/// Radio propagation model.
#[derive(Clone, Copy, Debug)]
pub struct Model {
    /// RSSI at 1 m, dBm.
    pub rssi_at_1m: f64,
    /// Path-loss exponent (2 free space, 3 indoors).
    pub exponent: f64,
    /// Weakest RSSI a scan reports, dBm.
    pub threshold: i8,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            rssi_at_1m: -40.0,
            exponent: 3.0,
            threshold: -85,
        }
    }
}

impl Model {
    /// RSSI at distance `d` metres.
    pub fn rssi(&self, d: f64) -> i8 {
        let d = d.max(1.0);
        let r = self.rssi_at_1m - 10.0 * self.exponent * d.log10();
        r.clamp(-127.0, 0.0).round() as i8
    }
}

/// How long radio operations take.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A scan of every channel.
    pub scan: Duration,
    /// A scan of one channel (`Action::ScanChannel`). At most `scan`.
    pub scan_channel: Duration,
    /// Association plus address.
    pub associate: Duration,
    /// How long an association that fails takes to say so (the AP is gone, or full):
    /// the 802.11 exchange alone, no address assignment follows. At most `associate`.
    pub associate_fail: Duration,
    /// Added to every frame on a mesh hop.
    pub hop_latency: Duration,
    /// Air-time budget of one node's radio, bits per second, shared by everything it
    /// sends on its uplink and its AP (0: unlimited).
    pub bandwidth_bps: u64,
    /// Probability that a frame is lost on the air and resent.
    pub loss: f64,
    /// What a resend costs (TCP's retransmission timeout on a mesh link).
    pub retransmit_delay: Duration,
}

impl Timing {
    /// ESP-like defaults: scan ≈2 s (one channel ≈200 ms), association ≈1 s (refused,
    /// or no AP: ≈300 ms), ≈10 ms per hop, 5 Mbit/s of air time per radio, no loss.
    pub fn realistic() -> Self {
        Timing {
            scan: Duration::from_millis(2000),
            scan_channel: Duration::from_millis(200),
            associate: Duration::from_millis(1000),
            associate_fail: Duration::from_millis(300),
            hop_latency: Duration::from_millis(10),
            bandwidth_bps: 5_000_000,
            loss: 0.0,
            retransmit_delay: Duration::from_millis(200),
        }
    }

    /// A fast profile for tests.
    pub fn fast() -> Self {
        Timing {
            scan: Duration::from_millis(150),
            scan_channel: Duration::from_millis(20),
            associate: Duration::from_millis(60),
            associate_fail: Duration::from_millis(20),
            hop_latency: Duration::from_millis(1),
            bandwidth_bps: 50_000_000,
            loss: 0.0,
            retransmit_delay: Duration::from_millis(20),
        }
    }
}

/// Where things are.
#[derive(Clone, Debug)]
pub enum Placement {
    /// Router and nodes at positions (metres); RSSI from [`Model`].
    Positions {
        /// Router position.
        router: (f64, f64),
        /// Node positions, by node index.
        nodes: Vec<(f64, f64)>,
    },
    /// An explicit graph with RSSI per edge.
    Graph {
        /// Number of nodes.
        nodes: usize,
        /// `(node, rssi)`: nodes that hear the router.
        router: Vec<(usize, i8)>,
        /// `(a, b, rssi)`: nodes that hear each other.
        edges: Vec<(usize, usize, i8)>,
    },
}

impl Placement {
    /// Number of nodes placed.
    pub fn len(&self) -> usize {
        match self {
            Placement::Positions { nodes, .. } => nodes.len(),
            Placement::Graph { nodes, .. } => *nodes,
        }
    }

    /// Whether no node is placed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The router as the radio sees it.
#[derive(Clone, Debug)]
pub struct Router {
    /// SSID.
    pub ssid: String,
    /// BSSID.
    pub bssid: Mac,
    /// Passphrase.
    pub password: String,
    /// Channel.
    pub channel: u8,
}

/// An open node AP.
#[derive(Clone, Debug)]
pub struct Ap {
    /// BSSID.
    pub bssid: Mac,
    /// Hidden SSID.
    pub ssid: String,
    /// Mesh password.
    pub password: String,
    /// Channel.
    pub channel: u8,
    /// Stations admitted.
    pub max_stations: u8,
    /// The owner's depth, announced in beacons.
    pub depth: u8,
    /// Where the owner serves its mesh port.
    pub addr: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Assoc {
    Router,
    Ap(usize),
}

#[derive(Debug, Default)]
struct State {
    aps: HashMap<usize, (Ap, HashSet<usize>)>,
    assoc: HashMap<usize, Assoc>,
    router_up: bool,
    /// APs that admit no new station and announce no free slot (their node holds its
    /// children without an uplink).
    no_room: HashSet<usize>,
}

/// Who hears of the stations a node's AP turns away: called with the station's MAC.
type RefusalSink = Arc<dyn Fn(Mac) + Send + Sync>;

/// The refusal sinks by AP owner.
#[derive(Default)]
struct Refusals(HashMap<usize, RefusalSink>);

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The shared radio of one emulated world.
#[derive(Debug)]
pub struct Radio {
    model: Model,
    timing: Timing,
    placement: RwLock<Placement>,
    router: Router,
    state: Mutex<State>,
    refusals: Mutex<Refusals>,
    air: Arc<Air>,
}

/// What a node lost by moving ([`Radio::move_node`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moved {
    /// It was on the router and no longer hears it: its association ended (its broker
    /// connection must go with it).
    pub lost_router: bool,
    /// Nodes it had links with and no longer hears: those links were broken silently
    /// and the association between the two ended.
    pub lost_peers: Vec<usize>,
}

impl Radio {
    /// A radio world.
    pub fn new(model: Model, timing: Timing, placement: Placement, router: Router) -> Radio {
        Radio {
            model,
            timing,
            placement: RwLock::new(placement),
            router,
            state: Mutex::new(State {
                router_up: true,
                ..State::default()
            }),
            refusals: Mutex::default(),
            air: Air::new(timing.loss, timing.hop_latency),
        }
    }

    /// Timing profile (as configured; faults change the loss and hop latency of the
    /// [`Radio::air`] in use).
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The air between nodes now: loss, hop latency and the open links.
    pub fn air(&self) -> &Arc<Air> {
        &self.air
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.placement().len()
    }

    /// Whether the world has no nodes.
    pub fn is_empty(&self) -> bool {
        self.placement().is_empty()
    }

    fn placement(&self) -> std::sync::RwLockReadGuard<'_, Placement> {
        self.placement.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Where node `node` stands (positional placements only).
    pub fn position(&self, node: usize) -> Option<(f64, f64)> {
        match &*self.placement() {
            Placement::Positions { nodes, .. } => nodes.get(node).copied(),
            Placement::Graph { .. } => None,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// RSSI at which node `node` hears the router, if at all.
    pub fn rssi_router(&self, node: usize) -> Option<i8> {
        let r = match &*self.placement() {
            Placement::Positions { router, nodes } => {
                self.model.rssi(dist(*router, *nodes.get(node)?))
            }
            Placement::Graph { router, .. } => router.iter().find(|(n, _)| *n == node)?.1,
        };
        (r >= self.model.threshold).then_some(r)
    }

    /// RSSI at which nodes `a` and `b` hear each other, if at all.
    pub fn rssi(&self, a: usize, b: usize) -> Option<i8> {
        if a == b {
            return None;
        }
        let r = match &*self.placement() {
            Placement::Positions { nodes, .. } => {
                self.model.rssi(dist(*nodes.get(a)?, *nodes.get(b)?))
            }
            Placement::Graph { edges, .. } => {
                edges
                    .iter()
                    .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))?
                    .2
            }
        };
        (r >= self.model.threshold).then_some(r)
    }

    /// What node `node` hears: the router (while up) and every open AP in range.
    pub fn scan(&self, node: usize) -> Vec<ScanEntry> {
        let state = self.state();
        let mut out = Vec::new();
        if state.router_up {
            if let Some(rssi) = self.rssi_router(node) {
                out.push(ScanEntry {
                    bssid: self.router.bssid,
                    ssid: hstr(&self.router.ssid),
                    rssi,
                    channel: self.router.channel,
                    hidden: false,
                    depth: None,
                    free: None,
                });
            }
        }
        let mut owners: Vec<_> = state.aps.keys().copied().collect();
        owners.sort_unstable();
        for owner in owners {
            let Some(rssi) = self.rssi(node, owner) else {
                continue;
            };
            let (ap, stations) = &state.aps[&owner];
            // A node holding its children without an uplink has no depth and no room.
            let admits = !state.no_room.contains(&owner);
            let used = match admits {
                true => u8::try_from(stations.len()).unwrap_or(u8::MAX),
                false => u8::MAX,
            };
            out.push(ScanEntry {
                bssid: ap.bssid,
                ssid: HString::new(),
                rssi,
                channel: ap.channel,
                hidden: true,
                depth: admits.then_some(ap.depth),
                free: Some(ap.max_stations.saturating_sub(used)),
            });
        }
        out
    }

    /// Associates `node`, whose station MAC is `station`, with `bssid` using
    /// `password`; its address on success. A node AP that is full turns the station
    /// away with [`AssocError::Full`] and tells its owner's refusal sink
    /// ([`Radio::on_station_refused`]).
    pub fn associate(
        &self,
        node: usize,
        station: Mac,
        bssid: Mac,
        password: &str,
    ) -> Result<Ipv4Addr, AssocError> {
        let result = self.try_associate(node, bssid, password);
        if result == Err(AssocError::Full) {
            self.report_refused(bssid, station);
        }
        result
    }

    /// Whether `node` is (still) associated with `bssid`.
    pub fn associated_with(&self, node: usize, bssid: Mac) -> bool {
        let state = self.state();
        match state.assoc.get(&node) {
            Some(Assoc::Router) => state.router_up && bssid == self.router.bssid,
            Some(Assoc::Ap(owner)) => state
                .aps
                .get(owner)
                .is_some_and(|(ap, _)| ap.bssid == bssid),
            None => false,
        }
    }

    /// Tells the owner of the AP `bssid` that it turned `station` away.
    fn report_refused(&self, bssid: Mac, station: Mac) {
        let owner = self
            .state()
            .aps
            .iter()
            .find(|(_, (ap, _))| ap.bssid == bssid)
            .map(|(o, _)| *o);
        // Outside the state lock: the sink must not block, but may take its own locks.
        let sink = owner.and_then(|o| lock(&self.refusals).0.get(&o).cloned());
        if let Some(sink) = sink {
            sink(station);
        }
    }

    fn try_associate(
        &self,
        node: usize,
        bssid: Mac,
        password: &str,
    ) -> Result<Ipv4Addr, AssocError> {
        let mut state = self.state();
        release(&mut state, node);
        if bssid == self.router.bssid {
            if !state.router_up || self.rssi_router(node).is_none() {
                return Err(AssocError::NotFound);
            }
            if password != self.router.password {
                return Err(AssocError::AuthFailed);
            }
            state.assoc.insert(node, Assoc::Router);
            return Ok(
                Ipv4Addr::new(10, 0, (node >> 8) as u8, (node & 0xFF) as u8).saturating_host()
            );
        }
        let Some(owner) = state
            .aps
            .iter()
            .find(|(_, (ap, _))| ap.bssid == bssid)
            .map(|(o, _)| *o)
        else {
            return Err(AssocError::NotFound);
        };
        if self.rssi(node, owner).is_none() {
            return Err(AssocError::NotFound);
        }
        let admits = !state.no_room.contains(&owner);
        let (ap, stations) = state.aps.get_mut(&owner).ok_or(AssocError::NotFound)?;
        if password != ap.password {
            return Err(AssocError::AuthFailed);
        }
        if stations.len() >= usize::from(ap.max_stations) || !admits {
            return Err(AssocError::Full);
        }
        stations.insert(node);
        let slot = stations.len() as u8 + 1;
        state.assoc.insert(node, Assoc::Ap(owner));
        Ok(Ipv4Addr::new(
            10,
            128 | ((owner >> 8) & 0x7F) as u8,
            (owner & 0xFF) as u8,
            slot,
        ))
    }

    /// Registers who hears of the stations node `node`'s AP turns away because it is
    /// full: `sink` gets each refused station's MAC, from the refused node's task, so
    /// it must not block (the runtime queues an input for the AP's node task). Replaces
    /// an earlier sink of `node` (a revived node's task registers anew).
    pub fn on_station_refused(&self, node: usize, sink: impl Fn(Mac) + Send + Sync + 'static) {
        lock(&self.refusals).0.insert(node, Arc::new(sink));
    }

    /// Ends `node`'s association, if any.
    pub fn disassociate(&self, node: usize) {
        release(&mut self.state(), node);
    }

    /// Whether `node` may open a connection to the broker (on the router, router up).
    pub fn broker_reachable(&self, node: usize) -> bool {
        let state = self.state();
        state.router_up && state.assoc.get(&node) == Some(&Assoc::Router)
    }

    /// The mesh port of the AP `node` is associated with.
    pub fn parent_addr(&self, node: usize) -> Option<SocketAddr> {
        let state = self.state();
        match state.assoc.get(&node)? {
            Assoc::Ap(owner) => state.aps.get(owner).map(|(ap, _)| ap.addr),
            Assoc::Router => None,
        }
    }

    /// `node` opens its AP.
    pub fn open_ap(&self, node: usize, ap: Ap) {
        let mut state = self.state();
        // Opened again while up (children kept through an uplink loss): a beacon
        // update; its stations stay associated.
        let stations = state
            .aps
            .remove(&node)
            .map(|(_, stations)| stations)
            .unwrap_or_default();
        state.aps.insert(node, (ap, stations));
        state.no_room.remove(&node);
    }

    /// Whether `node`'s AP admits new stations and its beacon announces its free slots
    /// (`Action::AdmitStations`): not while its node holds its children without an
    /// uplink. Its associated stations stay.
    pub fn admit_stations(&self, node: usize, admits: bool) {
        let mut state = self.state();
        if admits {
            state.no_room.remove(&node);
        } else if state.aps.contains_key(&node) {
            state.no_room.insert(node);
        }
    }

    /// `node` closes its AP; its stations are disassociated.
    pub fn close_ap(&self, node: usize) {
        let mut state = self.state();
        state.no_room.remove(&node);
        if let Some((_, stations)) = state.aps.remove(&node) {
            for s in stations {
                state.assoc.remove(&s);
            }
        }
    }

    /// `node` is gone (crashed or restarted): its AP and association vanish.
    pub fn remove_node(&self, node: usize) {
        self.close_ap(node);
        self.disassociate(node);
    }

    /// Moves node `node` to `to` (positional placements only: `None` for a graph or an
    /// unknown node).
    /// Later scans see the new RSSIs; what it no longer hears is lost silently, as on
    /// a real radio (and as the virtual simulator's `World::move_node` does): its
    /// router association, and its links and associations with nodes out of range.
    /// The caller drops the broker session when [`Moved::lost_router`].
    pub fn move_node(&self, node: usize, to: (f64, f64)) -> Option<Moved> {
        {
            let mut placement = self.placement.write().unwrap_or_else(|e| e.into_inner());
            match &mut *placement {
                Placement::Positions { nodes, .. } => *nodes.get_mut(node)? = to,
                Placement::Graph { .. } => return None,
            }
        }
        let mut moved = Moved::default();
        let mut state = self.state();
        if state.assoc.get(&node) == Some(&Assoc::Router) && self.rssi_router(node).is_none() {
            state.assoc.remove(&node);
            moved.lost_router = true;
        }
        for peer in self.air.peers(node) {
            if self.rssi(node, peer).is_some() {
                continue;
            }
            self.air.cut(node, peer);
            moved.lost_peers.push(peer);
            for (station, owner) in [(node, peer), (peer, node)] {
                if state.assoc.get(&station) == Some(&Assoc::Ap(owner)) {
                    release(&mut state, station);
                }
            }
        }
        Some(moved)
    }

    /// Takes the router down or brings it back. Down: every router association ends.
    pub fn set_router_up(&self, up: bool) {
        let mut state = self.state();
        state.router_up = up;
        if !up {
            state.assoc.retain(|_, a| *a != Assoc::Router);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock is a bug elsewhere; keep going with the data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn release(state: &mut State, node: usize) {
    if let Some(Assoc::Ap(owner)) = state.assoc.remove(&node) {
        if let Some((_, stations)) = state.aps.get_mut(&owner) {
            stations.remove(&node);
        }
    }
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

fn hstr<const N: usize>(s: &str) -> HString<N> {
    let mut out = HString::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

trait SaturatingHost {
    fn saturating_host(self) -> Self;
}

impl SaturatingHost for Ipv4Addr {
    /// Avoids `.0` and `.255` host parts.
    fn saturating_host(self) -> Self {
        let [a, b, c, d] = self.octets();
        Ipv4Addr::new(a, b, c, d.clamp(2, 254))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sta(node: usize) -> Mac {
        Mac([0x06, 0, 0, 0, 0, node as u8])
    }

    fn radio() -> Radio {
        Radio::new(
            Model::default(),
            Timing::fast(),
            Placement::Positions {
                router: (0.0, 0.0),
                nodes: vec![(10.0, 0.0), (35.0, 0.0), (200.0, 0.0)],
            },
            Router {
                ssid: "router".into(),
                bssid: Mac([0x02, 0, 0, 0, 0, 1]),
                password: "routerpass".into(),
                channel: 6,
            },
        )
    }

    /// A mesh AP on channel 6 that admits no station.
    fn full_ap() -> Ap {
        Ap {
            bssid: Mac([0xAA, 0, 0, 0, 0, 1]),
            ssid: "mesh".into(),
            password: "meshpass".into(),
            channel: 6,
            max_stations: 0,
            depth: 1,
            addr: "127.0.0.1:1".parse().unwrap(),
        }
    }

    #[test]
    fn rssi_falls_with_distance_and_threshold_hides() {
        let r = radio();
        assert_eq!(r.rssi_router(0), Some(-70));
        assert!(r.rssi_router(1).is_none());
        assert!(r.rssi(0, 1).is_some());
        assert!(r.rssi(0, 2).is_none());
        assert_eq!(r.scan(0).len(), 1);
        assert!(r.scan(2).is_empty());
    }

    #[test]
    fn a_move_changes_rssi_and_ends_what_is_out_of_range() {
        let r = radio();
        let bssid = r.router().bssid;
        assert!(r.associate(0, sta(0), bssid, "routerpass").is_ok());
        assert_eq!(r.move_node(1, (5.0, 0.0)), Some(Moved::default()));
        assert_eq!(r.position(1), Some((5.0, 0.0)));
        assert!(r.rssi_router(1).is_some(), "later scans see the router");
        let moved = r.move_node(0, (500.0, 0.0)).expect("positional");
        assert!(moved.lost_router);
        assert!(!r.broker_reachable(0), "the association ended");
        assert!(r.scan(0).is_empty());
        assert_eq!(r.move_node(9, (0.0, 0.0)), None, "no such node");
    }

    #[test]
    fn association_checks_password_range_and_capacity() {
        let r = radio();
        let bssid = r.router().bssid;
        assert_eq!(
            r.associate(0, sta(0), bssid, "wrong"),
            Err(AssocError::AuthFailed)
        );
        assert!(r.associate(0, sta(0), bssid, "routerpass").is_ok());
        assert!(r.broker_reachable(0));
        assert_eq!(
            r.associate(1, sta(1), bssid, "routerpass"),
            Err(AssocError::NotFound)
        );
        let ap = full_ap();
        r.open_ap(0, ap.clone());
        assert_eq!(
            r.associate(1, sta(1), ap.bssid, "meshpass"),
            Err(AssocError::Full)
        );
        r.open_ap(
            0,
            Ap {
                max_stations: 1,
                ..ap.clone()
            },
        );
        assert!(r.associate(1, sta(1), ap.bssid, "meshpass").is_ok());
        assert_eq!(r.parent_addr(1), Some(ap.addr));
        r.close_ap(0);
        assert_eq!(r.parent_addr(1), None);
        r.set_router_up(false);
        assert!(!r.broker_reachable(0));
    }

    #[test]
    fn a_holding_ap_keeps_its_stations_admits_nobody_and_announces_no_depth() {
        let r = radio();
        let ap = Ap {
            max_stations: 4,
            ..full_ap()
        };
        r.open_ap(0, ap.clone());
        assert!(r.associate(1, sta(1), ap.bssid, "meshpass").is_ok());
        r.admit_stations(0, false);
        assert!(r.associated_with(1, ap.bssid), "its station stays");
        let seen = r.scan(1).into_iter().find(|e| e.bssid == ap.bssid).unwrap();
        assert_eq!((seen.depth, seen.free), (None, Some(0)));
        r.disassociate(1);
        assert_eq!(
            r.associate(1, sta(1), ap.bssid, "meshpass"),
            Err(AssocError::Full),
            "a new station is turned away"
        );
        // Online again: `OpenAp` admits stations and announces its depth again.
        r.open_ap(0, ap.clone());
        let seen = r.scan(1).into_iter().find(|e| e.bssid == ap.bssid).unwrap();
        assert_eq!((seen.depth, seen.free), (Some(1), Some(4)));
        assert!(r.associate(1, sta(1), ap.bssid, "meshpass").is_ok());
        r.close_ap(0);
        assert!(!r.associated_with(1, ap.bssid), "gone with the AP");
    }

    #[test]
    fn a_full_ap_tells_its_owner_which_station_it_turned_away() {
        let r = radio();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let seen = refused.clone();
        r.on_station_refused(0, move |mac| lock(&seen).push(mac));
        let ap = full_ap();
        r.open_ap(0, ap.clone());
        assert_eq!(
            r.associate(1, sta(1), ap.bssid, "wrong"),
            Err(AssocError::AuthFailed)
        );
        assert!(
            lock(&refused).is_empty(),
            "only capacity refusals are reported"
        );
        assert_eq!(
            r.associate(1, sta(1), ap.bssid, "meshpass"),
            Err(AssocError::Full)
        );
        assert_eq!(*lock(&refused), vec![sta(1)]);
        r.open_ap(
            0,
            Ap {
                max_stations: 1,
                ..ap.clone()
            },
        );
        assert!(r.associate(1, sta(1), ap.bssid, "meshpass").is_ok());
        assert_eq!(
            lock(&refused).len(),
            1,
            "an admitted station is not reported"
        );
    }
}
