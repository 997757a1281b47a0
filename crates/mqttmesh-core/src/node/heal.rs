//! Fast re-attachment after the uplink dies (`docs/PROTOCOL.md` "Healing").
//!
//! A node keeps its uplink candidates fresh with background scans of its channel while
//! online (`Timing::candidate_refresh`). When its parent dies it holds its own children
//! (see `lose_uplink`) and tries, from that cache, first the candidates the loss cannot
//! have taken with it (routers, mesh APs shallower than itself), then those at its own
//! depth (each may be a sibling, held below the dead parent and refusing joins); deeper
//! ones may sit below the dead parent or below us, and are left to a fresh scan. When
//! none is left, or the cache is stale, it scans at once instead of backing off first,
//! only its channel for a while, and again 100–150 ms after a scan that found nothing.
//! While it holds children, the backoff between scans stays at its base: a whole
//! subtree is waiting on it.
//!
//! A held node (its parent lost its uplink) looks around too: if its parent is not
//! back within [`HELD_SCAN_INTERVAL`] and an AP with a path is in range, it leaves for
//! it with its own subtree (`on_escape_scan`).

use super::{Action, Level, LinkId, Node, State};
use crate::identity::{Mac, NodeId};
use crate::link::{self, Frame};
use crate::time::{Duration, Instant};
use crate::uplink::{self, Candidate, Kind, ScanEntry};

/// How old a cached candidate list may be for an orphan to use it without scanning
/// first, when background scans are off.
pub const CANDIDATE_MAX_AGE: Duration = Duration::from_secs(120);

/// An orphan's first choice is random among the cached mesh candidates ranked within
/// this many dB of the best (see `spread_first_choice`).
const SPREAD_DB: i16 = 12;

/// What a held node saw at its previous look for an AP with a path.
#[derive(Clone, Debug, Default)]
pub(super) struct Escape {
    /// Looks since the `HOLD`.
    looks: u8,
    /// The APs with a path the last look found, best first.
    live: heapless::Vec<Mac, ESCAPE_MEMORY>,
}

/// How many APs with a path a held node remembers from one look to the next.
const ESCAPE_MEMORY: usize = 8;

/// A held node looks for an AP with a path this long after the `HOLD`, and again this
/// long after each such scan while still held (see `on_escape_scan`). Long enough for a
/// parent that can get back to have done so: one cached candidate takes it about a
/// second, a failed one and a scan about four more.
pub const HELD_SCAN_INTERVAL: Duration = Duration::from_secs(4);

impl Node {
    /// Schedules the next background scan (on going online, and after each one).
    pub(super) fn schedule_refresh(&mut self, now: Instant) {
        let every = self.config.timing.candidate_refresh;
        if every == Duration::ZERO {
            self.refresh_at = None;
            return;
        }
        let jitter = Duration::from_millis(self.rand.below(every.millis() / 4 + 1));
        self.refresh_at = Some(now + every + jitter);
    }

    /// The background scan timer fired (while held: the escape scan timer).
    pub(super) fn on_refresh_timer(&mut self, now: Instant) {
        if self.state == State::Held {
            self.background_scan();
            self.refresh_at = Some(now + HELD_SCAN_INTERVAL);
            return;
        }
        if !self.connected() {
            return;
        }
        self.background_scan();
        self.schedule_refresh(now);
    }

    /// Starts a scan while linked (online or held), on our channel when we know it,
    /// unless one is running.
    fn background_scan(&mut self) {
        if self.bg_scan {
            return;
        }
        self.bg_scan = true;
        let _ = self.push_action(match self.channel {
            Some(channel) => Action::ScanChannel(channel),
            None => Action::Scan,
        });
    }

    /// The channel a recovery scan should look at: ours, within the grace period plus a
    /// link timeout after losing the uplink (when held subtrees may be waiting, and
    /// what we lost, and our siblings, come back on the same channel); afterwards, or
    /// without a channel, every channel.
    pub(super) fn recovery_channel(&self, now: Instant) -> Option<u8> {
        let timing = self.config.timing;
        let window = timing.uplink_grace + timing.link_timeout;
        self.channel
            .filter(|_| self.lost_at.is_some_and(|t| now < t + window))
    }

    /// A scan finished while we were not looking for an uplink: when it is our
    /// background scan and we are still online, it becomes the candidate cache.
    pub(super) fn on_background_scan(&mut self, now: Instant, entries: &[ScanEntry]) {
        if !core::mem::take(&mut self.bg_scan) {
            return;
        }
        if self.state == State::Held {
            self.on_escape_scan(now, entries);
            return;
        }
        if !self.connected() {
            return;
        }
        let ranked = self.rank_alternatives(now, entries);
        let n = ranked.len();
        self.candidates = ranked;
        self.cursor = 0;
        self.scanned_at = Some(now);
        self.log(
            Level::Debug,
            format_args!("background scan: {} APs, {n} candidates", entries.len()),
        );
    }

    /// APs in `entries` we could move to, best first: not our own, not our current
    /// uplink, not penalised, and not one of our descendants (those we know of).
    fn rank_alternatives(
        &mut self,
        now: Instant,
        entries: &[ScanEntry],
    ) -> heapless::Vec<Candidate, { uplink::MAX_CANDIDATES }> {
        self.penalties.retain(|(_, until)| *until > now);
        let own = self.ap_mac;
        let parent = self.current.as_ref().map(|c| c.bssid);
        let penalties = &self.penalties;
        let mut ranked = uplink::rank(&self.config, self.mesh_key, self.chip_id, entries, |b| {
            *b == own || Some(*b) == parent || penalties.iter().any(|(p, _)| p == b)
        });
        ranked.retain(|c| match c.kind {
            Kind::Mesh { chip_id, .. } => {
                let id = NodeId::from_chip_id(chip_id);
                self.routes.lookup(id.as_str()).is_none()
                    && !self.children().any(|child| *child == id)
            }
            Kind::Router { .. } => true,
        });
        ranked
    }

    /// Our parent told us to hold (it lost its uplink): with background scans on, look
    /// for an AP that still has a path if it is not back within [`HELD_SCAN_INTERVAL`],
    /// and again after every such interval while held.
    pub(super) fn start_escape_scans(&mut self, now: Instant) {
        self.bg_scan = false;
        self.escape = Escape::default();
        self.refresh_at = match self.config.timing.candidate_refresh {
            Duration::ZERO => None,
            _ => Some(now + HELD_SCAN_INTERVAL),
        };
    }

    /// A scan while held. Our parent may never get back (nothing it hears has a path),
    /// and would keep us for its whole grace period: if an AP in range has one (a
    /// router, or a mesh AP announcing its depth and a free slot: a held AP announces
    /// neither and admits nobody, see [`Action::AdmitStations`]), leave the parent for
    /// it, keeping our own children held. Without beacon hints only a router
    /// qualifies.
    ///
    /// On the first look any such AP will do: our parent has had [`HELD_SCAN_INTERVAL`].
    /// On later looks only one that had a path at the previous look as well: an AP that
    /// has just come back (the router returning after an outage, say) is most likely
    /// recovering alongside our parent, which deserves the same chance.
    fn on_escape_scan(&mut self, now: Instant, entries: &[ScanEntry]) {
        let mut ranked = self.rank_alternatives(now, entries);
        ranked.retain(|c| match c.kind {
            Kind::Router { .. } => true,
            Kind::Mesh { depth, .. } => depth.is_some(),
        });
        let first = self.escape.looks == 0;
        self.escape.looks = self.escape.looks.saturating_add(1);
        let before = core::mem::take(&mut self.escape.live);
        for c in &ranked {
            // The best ones; the rest cannot fit.
            let _ = self.escape.live.push(c.bssid);
        }
        ranked.retain(|c| first || before.contains(&c.bssid));
        let Some(best) = ranked.first().map(|c| c.bssid) else {
            self.log(
                Level::Debug,
                format_args!("held: none of {} APs has a path; waiting", entries.len()),
            );
            return;
        };
        self.log(
            Level::Info,
            format_args!("held: leaving our recovering parent for {best}, which has a path"),
        );
        self.counters.escapes += 1;
        let _ = self.send_frame(
            LinkId::Parent,
            &Frame::Leave {
                reason: link::Reason::Going,
            },
        );
        // Our children stay held (the grace period from the `HOLD` runs on).
        self.leave_uplink();
        self.refresh_at = None;
        self.quick_rescan = true;
        self.lost_at = Some(now);
        self.candidates = ranked;
        self.cursor = 0;
        self.scanned_at = Some(now);
        self.try_next_candidate(now);
    }

    /// The uplink is gone (`depth`: ours before the loss; the uplink is already left):
    /// try the cached candidates the loss cannot have taken, or scan at once.
    pub(super) fn recover_uplink(&mut self, now: Instant, depth: usize) {
        self.bg_scan = false;
        self.refresh_at = None;
        self.quick_rescan = true;
        self.lost_at = Some(now);
        let lost = self.current.as_ref().map(|c| c.bssid);
        let max_age = match self.config.timing.candidate_refresh {
            Duration::ZERO => CANDIDATE_MAX_AGE,
            every => every.mul_div(2, 1),
        };
        let fresh = self.scanned_at.is_some_and(|t| now < t + max_age);
        let cached = core::mem::take(&mut self.candidates);
        let mut first_tier = 0;
        if fresh {
            // Tier 0: cannot be below the dead parent (routers, shallower APs); tier 1:
            // at our own depth, so possibly a sibling held below the dead parent.
            // Deeper ones may be our cousins' or our own subtree: a scan is better.
            let tier = |c: &Candidate| match c.kind {
                _ if Some(c.bssid) == lost => None,
                Kind::Router { .. } => Some(0),
                Kind::Mesh { depth: Some(d), .. } if usize::from(d) < depth => Some(0),
                // A root's peers at depth 1 hang off the same router: when it went,
                // they went too.
                Kind::Mesh { .. } if depth <= 1 => None,
                Kind::Mesh { depth: Some(d), .. } if usize::from(d) == depth => Some(1),
                Kind::Mesh { depth: None, .. } => Some(1),
                Kind::Mesh { .. } => None,
            };
            for want in 0..2 {
                for c in cached.iter().filter(|c| tier(c) == Some(want)) {
                    // Cannot fail: a subset of a list of the same capacity.
                    let _ = self.candidates.push(c.clone());
                }
                if want == 0 {
                    first_tier = self.candidates.len();
                }
            }
        }
        self.spread_first_choice(first_tier);
        self.cursor = 0;
        let n = self.candidates.len();
        self.log(
            Level::Info,
            format_args!("{n} cached candidate(s) to try before scanning"),
        );
        self.try_next_candidate(now);
    }

    /// Siblings orphaned by the same crash hear much the same APs and would all pick
    /// the same best one, which then fills up under them (1 s lost per refused
    /// association): start at a random one of the first `tier` mesh candidates ranked
    /// within [`SPREAD_DB`] of the best, so they spread out.
    fn spread_first_choice(&mut self, tier: usize) {
        let score = |c: &Candidate| match c.kind {
            Kind::Mesh { depth, .. } => Some(uplink::mesh_score(c.rssi, depth)),
            Kind::Router { .. } => None,
        };
        let Some(best) = self.candidates.first().and_then(score) else {
            return;
        };
        let close = self
            .candidates
            .iter()
            .take(tier)
            .take_while(|c| score(c).is_some_and(|s| s <= best + SPREAD_DB))
            .count();
        if close > 1 {
            // Cannot truncate: close <= MAX_CANDIDATES.
            let pick = self.rand.below(close as u64) as usize;
            self.candidates[..=pick].rotate_right(1);
        }
    }

    /// Every candidate failed: whether to scan at once (the first time after a loss)
    /// rather than back off.
    pub(super) fn take_quick_rescan(&mut self) -> bool {
        core::mem::take(&mut self.quick_rescan)
    }

    /// Largest backoff shift now: none while children wait on us, or while subtrees
    /// held elsewhere may still be waiting for the uplink we lost (the grace period
    /// plus a link timeout after the loss; a router outage takes every root at once).
    pub(super) fn backoff_cap(&self, now: Instant, max: u8) -> u8 {
        let timing = self.config.timing;
        let window = timing.uplink_grace + timing.link_timeout;
        let recent = self.lost_at.is_some_and(|t| now < t + window);
        if recent || (self.grace_until.is_some() && self.state != State::Held) {
            0
        } else {
            max
        }
    }
}
