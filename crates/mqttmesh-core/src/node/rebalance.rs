//! Re-balancing: a full parent makes room for a node that hears nothing but full APs.
//!
//! In a dense placement the first nodes to join fill every AP a latecomer hears
//! (`max_children` each), and an online node never moves by itself, so the latecomer
//! would stay offline for good. Three steps, all bounded:
//!
//! 1. **Knock** (the starved node): a scan that yields no candidate but hears genuine
//!    mesh APs announcing no free slot tries the best of them anyway. The association
//!    fails ("AP full"), and the AP's runtime tells its node
//!    ([`Node::handle_station_refused`]). The knocked AP is left out of the next knocks
//!    for [`KNOCK_REST`] (so knocks go round all the full APs in range, up to
//!    [`KNOCKED_LEN`]), but not out of the ranking: the moment it announces a free
//!    slot, it is an ordinary candidate. The backoff does not grow: the node looks
//!    again about every `retry_backoff`.
//! 2. **Ask** (the full parent): a station refused a second time within
//!    [`REPEAT_WINDOW`] (a starved node knocking again, not a node that raced for the
//!    last slot with a stale beacon and joins elsewhere), while all `max_children`
//!    slots have been joined for at least [`FULL_FOR`], makes the parent send
//!    `MakeRoom` to one joined child, round robin, at most once per [`ASK_INTERVAL`].
//! 3. **Move** (the child): it scans in the background (still online) and moves only
//!    to a genuine mesh AP announcing a free slot and a depth no greater than its
//!    current parent's (its depth does not grow) or, when there is none, no greater
//!    than its own (one level deeper). Such an AP cannot be in its own subtree, whose
//!    nodes are all deeper than the child (the join handshake still refuses a loop). It tells its parent
//!    `Leave { Going }` and re-joins through the ordinary uplink-loss path, so its
//!    own children are held (`HOLD`/`RESUME`, grace period) and its unacknowledged
//!    QoS 1 messages go again on the new path. A node moves at most once per
//!    [`MOVE_INTERVAL`] and at most [`MAX_MOVES`] times per boot; otherwise, or with
//!    no usable AP, it declines (counted).
//!
//! The freed slot appears in the parent's beacon; the knocking node's next scan finds
//! it. Counters: `rebalance_knocks`, `stations_refused`, `rebalance_asks`,
//! `rebalance_moves`, `rebalance_declined`.

use super::{ChildState, Level, LinkId, Node, State, CHILD_SLOTS};
use crate::identity::{mesh_chip_id, Mac};
use crate::link::subtree::CAP_MAKE_ROOM;
use crate::link::{Frame, Reason};
use crate::time::{Duration, Instant};
use crate::uplink::{self, Candidate, Kind, ScanEntry};

use heapless::Vec;

/// How long a knocked (full) AP is left out of the next knocks.
pub const KNOCK_REST: Duration = Duration::from_secs(10);
/// Most recently knocked APs remembered.
pub const KNOCKED_LEN: usize = 16;
/// How long a parent must have been full before a refused station makes it ask a
/// child to move (joins racing for the last slot during formation do not).
pub const FULL_FOR: Duration = Duration::from_secs(10);
/// A parent asks only for a station it turned away twice within this window: a
/// starved node knocks again, a node that merely raced for the last slot (a stale
/// beacon after a crash, during formation) joins elsewhere and does not come back.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);
/// Refused stations a parent remembers.
const REFUSED_LEN: usize = 4;
/// Least time between two `MakeRoom` requests of one parent.
pub const ASK_INTERVAL: Duration = Duration::from_secs(5);
/// Least time between two moves of one node.
pub const MOVE_INTERVAL: Duration = Duration::from_secs(60);
/// Most moves of one node per boot.
pub const MAX_MOVES: u8 = 4;

/// Re-balancing state of a node (all three roles).
#[derive(Debug, Default)]
pub(super) struct Rebalance {
    /// Joiner: the current association attempt is a knock on a full AP.
    pub(super) knocking: bool,
    /// Joiner: APs knocked on recently, and until when they rest.
    knocked: Vec<(Mac, Instant), KNOCKED_LEN>,
    /// Parent: since when all `max_children` slots are joined.
    pub(super) full_since: Option<Instant>,
    /// Parent: stations turned away recently, and when.
    refused: Vec<(Mac, Instant), REFUSED_LEN>,
    /// Parent: when we last sent `MakeRoom`.
    last_ask: Option<Instant>,
    /// Parent: the child slot to ask next.
    next_slot: u8,
    /// Child: when the background scan for a new parent started.
    scan_started: Option<Instant>,
    /// Child: when we last moved.
    last_move: Option<Instant>,
    /// Child: moves since boot.
    moves: u8,
}

impl Node {
    /// The runtime turned a station away from our AP because it is full (an
    /// association refused for capacity). `station` is its MAC; only stations of this
    /// mesh count. May ask one of our children to move (see the module `rebalance`).
    pub fn handle_station_refused(&mut self, now: Instant, station: Mac) {
        self.tick(now);
        if mesh_chip_id(&station, self.mesh_key).is_none() {
            return;
        }
        self.counters.stations_refused += 1;
        if !self.connected() || !self.ap_up {
            return;
        }
        self.note_fullness(now);
        let refused = &mut self.rebalance.refused;
        refused.retain(|(_, at)| now < *at + REPEAT_WINDOW);
        let again = refused.iter().any(|(m, _)| *m == station);
        if !again {
            if refused.is_full() {
                refused.remove(0);
            }
            let _ = refused.push((station, now));
            return;
        }
        let Some(full_since) = self.rebalance.full_since else {
            return;
        };
        if now < full_since + FULL_FOR
            || self
                .rebalance
                .last_ask
                .is_some_and(|t| now < t + ASK_INTERVAL)
        {
            return;
        }
        // Round robin over the joined children.
        for i in 0..CHILD_SLOTS {
            let slot = (usize::from(self.rebalance.next_slot) + i) % CHILD_SLOTS;
            let child = &self.children[slot];
            // Only a child that said it understands MAKE_ROOM: an older one would
            // close the link on the unknown frame.
            if !matches!(child.state, ChildState::Joined { .. }) || child.caps & CAP_MAKE_ROOM == 0
            {
                continue;
            }
            // Cannot truncate: CHILD_SLOTS <= u8::MAX.
            self.rebalance.next_slot = ((slot + 1) % CHILD_SLOTS) as u8;
            if self
                .send_frame(LinkId::Child(slot as u8), &Frame::MakeRoom)
                .is_ok()
            {
                self.rebalance.last_ask = Some(now);
                self.counters.rebalance_asks += 1;
                self.log(
                    Level::Info,
                    format_args!(
                        "full and a station was refused: asking child {slot} to make room"
                    ),
                );
            }
            return;
        }
    }

    /// Keeps `full_since` in step with the joined children.
    pub(super) fn note_fullness(&mut self, now: Instant) {
        let full = self.children().count() >= usize::from(self.config.max_children);
        match (full, self.rebalance.full_since) {
            (true, None) => self.rebalance.full_since = Some(now),
            (false, Some(_)) => self.rebalance.full_since = None,
            _ => {}
        }
    }

    /// Our parent asks us to move (`MakeRoom`): scan in the background, unless we moved
    /// recently or too often.
    pub(super) fn on_make_room(&mut self, now: Instant) {
        let timing = self.config.timing;
        let scanning = self
            .rebalance
            .scan_started
            .is_some_and(|t| now < t + timing.scan_timeout);
        let recent = self
            .rebalance
            .last_move
            .is_some_and(|t| now < t + MOVE_INTERVAL);
        if scanning {
            return;
        }
        if recent || self.rebalance.moves >= MAX_MOVES {
            self.counters.rebalance_declined += 1;
            self.log(
                Level::Debug,
                format_args!("parent asks us to make room; moved recently, staying"),
            );
            return;
        }
        if self.push_action(super::Action::Scan).is_ok() {
            self.rebalance.scan_started = Some(now);
        }
    }

    /// A scan finished after the uplink was lost: a re-balancing scan still pending is
    /// moot (the node is re-joining anyway).
    pub(super) fn rebalance_scan_overtaken(&mut self) {
        self.rebalance.scan_started = None;
    }

    /// A scan finished while online: if it is the background scan `MakeRoom` asked for,
    /// move to a usable AP or decline. Returns whether the scan was ours.
    pub(super) fn rebalance_scan_done(&mut self, now: Instant, entries: &[ScanEntry]) -> bool {
        if self.rebalance.scan_started.take().is_none() {
            return false;
        }
        if self.state != State::Mesh {
            // The uplink changed meanwhile: nothing to move.
            return true;
        }
        let Some(target) = self.room_elsewhere(now, entries) else {
            self.counters.rebalance_declined += 1;
            self.log(
                Level::Debug,
                format_args!("parent asks us to make room; no other AP has a free slot"),
            );
            return true;
        };
        self.rebalance.moves = self.rebalance.moves.saturating_add(1);
        self.rebalance.last_move = Some(now);
        self.counters.rebalance_moves += 1;
        self.log(
            Level::Info,
            format_args!("making room: moving to {}", target.bssid),
        );
        // The target first, then whatever else the scan offers (not the old parent: it
        // announced no free slot).
        let own = self.ap_mac;
        let old = self.current.as_ref().map(|c| c.bssid);
        let penalties = &self.penalties;
        let ranked = uplink::rank(&self.config, self.mesh_key, self.chip_id, entries, |b| {
            *b == own
                || Some(*b) == old
                || *b == target.bssid
                || penalties.iter().any(|(p, _)| p == b)
        });
        self.candidates.clear();
        let _ = self.candidates.push(target);
        for c in ranked {
            if self.candidates.push(c).is_err() {
                break;
            }
        }
        self.cursor = 0;
        let _ = self.send_frame(
            LinkId::Parent,
            &Frame::Leave {
                reason: Reason::Going,
            },
        );
        self.lose_uplink(now, "moving to another parent to make room");
        true
    }

    /// The best AP to move to: a genuine mesh AP with a free slot, not our parent, not
    /// penalized, no deeper than our parent if possible, else at our own depth (never
    /// deeper: our subtree's nodes are all deeper than us, so neither can be in it).
    fn room_elsewhere(&self, now: Instant, entries: &[ScanEntry]) -> Option<Candidate> {
        let parent_depth = self.path.len().checked_sub(1)?;
        let old = self.current.as_ref().map(|c| c.bssid);
        entries
            .iter()
            .filter_map(|e| {
                let (chip_id, depth) = self.mesh_ap(e)?;
                if e.free? == 0
                    || usize::from(depth) > parent_depth + 1
                    || Some(e.bssid) == old
                    || self.penalized(now, &e.bssid)
                {
                    return None;
                }
                // Same depth as our parent or shallower first; our own depth (one
                // level deeper for us) only when there is nothing else.
                let deeper = usize::from(depth) > parent_depth;
                Some((
                    (deeper, uplink::mesh_score(e.rssi, Some(depth))),
                    e,
                    chip_id,
                    depth,
                ))
            })
            .min_by_key(|(key, ..)| *key)
            .map(|(_, e, chip_id, depth)| mesh_candidate(e, chip_id, depth))
    }

    /// A genuine AP of this mesh that is not ours, announcing a depth below
    /// `max_depth`: its chip ID and depth.
    fn mesh_ap(&self, e: &ScanEntry) -> Option<(u32, u8)> {
        let depth = e.depth?;
        let chip_id = mesh_chip_id(&e.bssid, self.mesh_key)?;
        (chip_id != self.chip_id & 0x00FF_FFFF && depth < self.config.max_depth)
            .then_some((chip_id, depth))
    }

    fn penalized(&self, now: Instant, bssid: &Mac) -> bool {
        self.penalties
            .iter()
            .any(|(b, until)| b == bssid && *until > now)
    }

    /// A scan found no candidate: knock on the best full mesh AP, if any (see the
    /// module doc). Returns whether a knock was started.
    pub(super) fn knock(&mut self, now: Instant, entries: &[ScanEntry]) -> bool {
        let best = entries
            .iter()
            .filter_map(|e| {
                let (chip_id, depth) = self.mesh_ap(e)?;
                let knocked = self
                    .rebalance
                    .knocked
                    .iter()
                    .any(|(b, until)| *b == e.bssid && *until > now);
                if e.free != Some(0) || knocked || self.penalized(now, &e.bssid) {
                    return None;
                }
                Some((uplink::mesh_score(e.rssi, Some(depth)), e, chip_id, depth))
            })
            .min_by_key(|(key, ..)| *key)
            .map(|(_, e, chip_id, depth)| mesh_candidate(e, chip_id, depth));
        let Some(target) = best else {
            return false;
        };
        self.counters.rebalance_knocks += 1;
        let knocked = &mut self.rebalance.knocked;
        knocked.retain(|(b, until)| *until > now && *b != target.bssid);
        if knocked.is_full() {
            knocked.remove(0);
        }
        let _ = knocked.push((target.bssid, now + KNOCK_REST));
        self.log(
            Level::Debug,
            format_args!("only full APs in range: knocking on {}", target.bssid),
        );
        self.candidates.clear();
        let _ = self.candidates.push(target);
        self.cursor = 0;
        self.rebalance.knocking = true;
        true
    }
}

/// A mesh AP as an uplink candidate.
fn mesh_candidate(e: &ScanEntry, chip_id: u32, depth: u8) -> Candidate {
    Candidate::from_entry(
        e,
        Kind::Mesh {
            chip_id,
            depth: Some(depth),
        },
    )
}
