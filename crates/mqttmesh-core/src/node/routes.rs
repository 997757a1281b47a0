//! Targeted downstream routing (`docs/PROTOCOL.md` "Downstream routing").
//!
//! A relay learns which node IDs live below which child from the `origin` of the
//! `Publish` frames its children send up (every node publishes its retained `info/*`
//! topics as soon as it is online, so a relay learns a node when it joins below it). A
//! message for `<in><ID>/…` and an acknowledgement for `ID` then go down that branch
//! only; an unknown destination is flooded to every child (counted as `route_flooded`).
//!
//! The table is bounded ([`ROUTES_LEN`]); when full, the least recently confirmed entry
//! is replaced. Entries of a child are forgotten when its link closes; a node seen
//! through another child moves there.

use heapless::Vec;

use super::{ChildState, LinkId, Node, CHILD_SLOTS};
use crate::identity::NodeId;
use crate::link::Frame;
use crate::time::Instant;

/// Descendants (beyond the direct children) a relay remembers.
pub const ROUTES_LEN: usize = 64;

#[derive(Debug)]
struct Route {
    id: NodeId,
    slot: u8,
    seen: Instant,
}

/// Node ID → child slot.
#[derive(Debug, Default)]
pub(super) struct Routes {
    entries: Vec<Route, ROUTES_LEN>,
}

impl Routes {
    /// `id` lives below child `slot` (seen at `now`).
    pub(super) fn learn(&mut self, id: &str, slot: u8, now: Instant) {
        if let Some(r) = self.entries.iter_mut().find(|r| r.id.as_str() == id) {
            r.slot = slot;
            r.seen = now;
            return;
        }
        let Ok(id) = NodeId::new(id) else {
            return;
        };
        let route = Route {
            id,
            slot,
            seen: now,
        };
        if self.entries.is_full() {
            // Replace the least recently confirmed entry.
            if let Some((i, _)) = self.entries.iter().enumerate().min_by_key(|(_, r)| r.seen) {
                self.entries[i] = route;
            }
            return;
        }
        // Cannot fail: fullness was checked above.
        let _ = self.entries.push(route);
    }

    pub(super) fn lookup(&self, id: &str) -> Option<u8> {
        self.entries
            .iter()
            .find(|r| r.id.as_str() == id)
            .map(|r| r.slot)
    }

    /// Child `slot` is gone, and everything below it.
    pub(super) fn forget_slot(&mut self, slot: u8) {
        self.entries.retain(|r| r.slot != slot);
    }

    /// The descendants learned below child `slot`.
    pub(super) fn ids_of(&self, slot: u8) -> impl Iterator<Item = &NodeId> {
        self.entries
            .iter()
            .filter(move |r| r.slot == slot)
            .map(|r| &r.id)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Node {
    /// The child slot whose branch holds `id`: a direct child, or a learned descendant.
    pub(super) fn route(&self, id: &str) -> Option<u8> {
        let direct = self
            .children
            .iter()
            .position(|c| matches!(&c.state, ChildState::Joined { id: c } if c.as_str() == id));
        // Cannot truncate: CHILD_SLOTS <= u8::MAX.
        direct.map(|s| s as u8).or_else(|| {
            self.routes.lookup(id).filter(|&s| {
                matches!(
                    self.children.get(usize::from(s)).map(|c| &c.state),
                    Some(ChildState::Joined { .. })
                )
            })
        })
    }

    /// Learns where `origin` of a child's upstream message lives.
    pub(super) fn learn_route(&mut self, origin: &str, slot: u8, now: Instant) {
        if origin == self.id.as_str() || self.path.iter().any(|p| p.as_str() == origin) {
            // Our own ID or an ancestor's from below: a loop or a liar; never route to it.
            return;
        }
        self.routes.learn(origin, slot, now);
    }

    /// Descendants the route table knows (beyond the direct children).
    pub fn routes_len(&self) -> usize {
        self.routes.len()
    }

    /// Sends `frame` to every joined child; how many took it.
    pub(super) fn flood(&mut self, frame: &Frame<'_>) -> usize {
        let mut sent = 0;
        for slot in 0..CHILD_SLOTS {
            if matches!(self.children[slot].state, ChildState::Joined { .. }) {
                // Cannot truncate: CHILD_SLOTS <= u8::MAX.
                if self.send_frame(LinkId::Child(slot as u8), frame).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    }

    /// A downstream message for node `id` (not us): down its branch, or everywhere
    /// when the branch is unknown.
    pub(super) fn forward_to(&mut self, id: &str, topic: &str, payload: &[u8]) {
        let frame = Frame::Deliver { topic, payload };
        match self.route(id) {
            Some(slot) => {
                if self.send_frame(LinkId::Child(slot), &frame).is_ok() {
                    self.counters.relayed_down += 1;
                }
            }
            None => {
                if self.children().next().is_some() {
                    self.counters.route_flooded += 1;
                }
                let n = self.flood(&frame);
                self.counters.relayed_down += n as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn learns_moves_and_forgets() {
        let mut r = Routes::default();
        r.learn("A", 1, at(0));
        r.learn("B", 1, at(0));
        assert_eq!(r.lookup("A"), Some(1));
        r.learn("A", 2, at(5));
        assert_eq!(r.lookup("A"), Some(2));
        r.forget_slot(1);
        assert_eq!(r.lookup("B"), None);
        assert_eq!(r.lookup("A"), Some(2));
        r.learn("bad id", 1, at(0));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn full_table_replaces_the_stalest_entry() {
        let mut r = Routes::default();
        for i in 0..ROUTES_LEN {
            let id = NodeId::from_chip_id(i as u32);
            r.learn(id.as_str(), 0, at(100 + i as u64));
        }
        let first = NodeId::from_chip_id(0);
        let second = NodeId::from_chip_id(1);
        r.learn(first.as_str(), 0, at(10_000)); // refreshed: no longer the stalest
        r.learn("NEW", 3, at(10_001));
        assert_eq!(r.len(), ROUTES_LEN);
        assert_eq!(r.lookup("NEW"), Some(3));
        assert_eq!(r.lookup(first.as_str()), Some(0));
        assert_eq!(r.lookup(second.as_str()), None);
    }
}
