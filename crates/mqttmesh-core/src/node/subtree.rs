//! Subtree announcements and OTA filtering (`docs/PROTOCOL.md` "Subtree
//! announcements").
//!
//! Each node keeps, per child, what the child last announced about its subtree: the
//! firmware IDs (up to [`MAX_SUBTREE_FIRMWARE`]) and a 256-bit Bloom filter of the node
//! IDs. A child that never announced (an older peer, or one that has not yet) and a
//! list that overflowed are *unknown*: everything goes to that child, so mixed versions
//! still get every message. A node announces to its parent the union of itself and its
//! children's summaries whenever that changes, and on every (re-)attachment before
//! anything else (so its ancestors know its subtree before the broker sees it online).
//! A change that widens what was last announced (a new firmware ID or node, or a list
//! becoming unknown) goes up at once, ahead of anything the change's sender relays
//! after it, so a node's ancestors never filter it out once its `online` is published;
//! a change that only narrows it waits [`SUBTREE_DELAY`], so a burst of them costs one
//! announcement. An announcement's node IDs also fill the route table, so a relay routes
//! `<in><ID>/…` to a node before that node has published anything.
//!
//! OTA traffic (`<in>ota/<target>/…`, `<in>ota2/<target>/…`) then goes down a branch
//! only when the target's node ID may live there (the route table, else the branch's
//! filter) or, when the target reads as a firmware ID, when a node running that firmware
//! ID may live there. Every branch left out counts as `ota_filtered`.

use core::hash::{Hash, Hasher};

use super::{ChildState, LinkId, Node, State, CHILD_SLOTS};
use crate::link::subtree::{self, FirmwareSet, Subtree, CAP_SUBTREE};
use crate::link::Frame;
use crate::time::{Duration, Instant};
use crate::topic;

pub use crate::link::subtree::{MAX_SUBTREE_FIRMWARE, MAX_SUBTREE_NODES};

/// How long a narrowing change waits before it is announced, so a burst of them costs
/// one announcement.
pub const SUBTREE_DELAY: Duration = Duration::from_millis(250);

/// What a parent knows about one child's subtree.
#[derive(Clone, Debug, Default)]
pub(super) struct Summary {
    /// Firmware IDs in the subtree; `None`: unknown.
    firmware: Option<FirmwareSet>,
    /// Node IDs in the subtree as a Bloom filter; `None`: unknown.
    nodes: Option<Bloom>,
    /// How many node IDs the last announcement listed.
    node_count: u8,
}

impl Summary {
    fn may_run(&self, firmware_id: u32) -> bool {
        self.firmware
            .as_ref()
            .is_none_or(|f| f.contains(&firmware_id))
    }

    fn may_hold(&self, id: &str) -> bool {
        self.nodes.as_ref().is_none_or(|b| b.may_contain(id))
    }
}

/// A 256-bit Bloom filter over node IDs, three probes: no false negatives, about 5 %
/// false positives at 32 IDs (a false positive only sends a message down a branch that
/// did not need it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Bloom([u64; 4]);

impl Bloom {
    fn probes(id: &str) -> [u8; 3] {
        let h = fnv(id.as_bytes());
        // Cannot truncate: masked to one byte each.
        [h as u8, (h >> 8) as u8, (h >> 16) as u8]
    }

    fn insert(&mut self, id: &str) {
        for p in Self::probes(id) {
            self.0[usize::from(p >> 6)] |= 1 << (p & 63);
        }
    }

    fn may_contain(&self, id: &str) -> bool {
        Self::probes(id)
            .iter()
            .all(|&p| self.0[usize::from(p >> 6)] & (1 << (p & 63)) != 0)
    }
}

/// What we last announced to the current parent.
#[derive(Clone, Debug)]
pub(super) struct Sent {
    digest: u64,
    firmware: Option<FirmwareSet>,
    nodes: Option<Bloom>,
}

impl Sent {
    fn of(s: &Subtree) -> Sent {
        let mut nodes = Bloom::default();
        s.nodes.iter().for_each(|id| nodes.insert(id.as_str()));
        Sent {
            digest: digest(s),
            firmware: s.firmware_complete.then(|| s.firmware.clone()),
            nodes: s.nodes_complete.then_some(nodes),
        }
    }

    /// Whether `s` admits something this did not: the parent must hear it at once.
    fn widened_by(&self, s: &Subtree) -> bool {
        let firmware = self
            .firmware
            .as_ref()
            .is_some_and(|old| !s.firmware_complete || s.firmware.iter().any(|f| !old.contains(f)));
        let nodes = self.nodes.as_ref().is_some_and(|old| {
            !s.nodes_complete || s.nodes.iter().any(|id| !old.may_contain(id.as_str()))
        });
        firmware || nodes
    }
}

fn digest(s: &Subtree) -> u64 {
    let mut h = Fnv::default();
    s.hash(&mut h);
    h.finish()
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(bytes);
    h.finish()
}

/// FNV-1a, 64 bits: a digest of the last announcement and the Bloom hash.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Node {
    /// The parent's capabilities, from its Challenge nonce.
    pub(super) fn note_parent_caps(&mut self, parent_nonce: &crate::link::Nonce) {
        self.parent_caps = subtree::caps_of(parent_nonce);
    }

    /// Whether our parent accepts `SUBTREE` frames.
    pub fn parent_takes_subtree(&self) -> bool {
        self.parent_caps & CAP_SUBTREE != 0
    }

    /// The parent is about to accept (or resume) us: announce first, whatever we said
    /// before, so the announcement travels ahead of our `online`.
    pub(super) fn on_attaching(&mut self) {
        self.subtree_sent = None;
        self.subtree_at = None;
        if self.parent_takes_subtree() {
            let own = self.own_subtree();
            self.send_subtree(own);
        }
    }

    /// Something below us changed: a widening goes up now, a narrowing after
    /// [`SUBTREE_DELAY`].
    pub(super) fn subtree_changed(&mut self, now: Instant) {
        // A root, or a node below a parent that does not take announcements, has no one
        // to tell (a held node tells its parent when it resumes).
        if self.state != State::Mesh || !self.parent_takes_subtree() {
            return;
        }
        let own = self.own_subtree();
        match &self.subtree_sent {
            Some(sent) if sent.digest == digest(&own) => {}
            Some(sent) if !sent.widened_by(&own) => {
                if self.subtree_at.is_none() {
                    self.subtree_at = Some(now + SUBTREE_DELAY);
                }
            }
            _ => self.send_subtree(own),
        }
    }

    fn send_subtree(&mut self, own: Subtree) {
        let sent = Sent::of(&own);
        if self
            .send_frame(LinkId::Parent, &Frame::Subtree(own))
            .is_ok()
        {
            self.subtree_sent = Some(sent);
            self.counters.subtree_sent += 1;
        } else {
            // Queue full: try again shortly.
            self.subtree_at = Some(self.now + SUBTREE_DELAY);
        }
    }

    /// A child's slot is new or gone: forget what it announced.
    pub(super) fn forget_summary(&mut self, slot: u8) {
        if let Some(child) = self.children.get_mut(usize::from(slot)) {
            child.summary = Summary::default();
        }
    }

    /// A joined child's announcement.
    pub(super) fn on_child_subtree(&mut self, now: Instant, slot: u8, s: &Subtree) {
        if s.nodes_complete {
            // The whole truth about that branch: whoever is not listed has left it.
            self.routes.forget_slot(slot);
        }
        for id in &s.nodes {
            self.learn_route(id.as_str(), slot, now);
        }
        let nodes = s.nodes_complete.then(|| {
            let mut b = Bloom::default();
            s.nodes.iter().for_each(|id| b.insert(id.as_str()));
            b
        });
        let summary = Summary {
            firmware: s.firmware_complete.then(|| s.firmware.clone()),
            nodes,
            // Cannot truncate: at most MAX_SUBTREE_NODES (32) IDs.
            node_count: s.nodes.len() as u8,
        };
        if let Some(child) = self.children.get_mut(usize::from(slot)) {
            child.summary = summary;
        }
        self.subtree_changed(now);
    }

    /// The announcement timer: send ours if it differs from the last one sent.
    pub(super) fn on_subtree_timer(&mut self) {
        self.subtree_at = None;
        if self.state != State::Mesh || !self.parent_takes_subtree() {
            return;
        }
        let own = self.own_subtree();
        if self
            .subtree_sent
            .as_ref()
            .is_some_and(|s| s.digest == digest(&own))
        {
            return;
        }
        self.send_subtree(own);
    }

    /// Ourselves plus what each joined child announced.
    pub(super) fn own_subtree(&self) -> Subtree {
        let mut s = Subtree {
            firmware_complete: true,
            nodes_complete: true,
            ..Subtree::default()
        };
        // Cannot fail: both lists are empty.
        let _ = s.firmware.push(self.config.firmware_id);
        let _ = s.nodes.push(self.id.clone());
        for (slot, child) in self.children.iter().enumerate() {
            let ChildState::Joined { id } = &child.state else {
                continue;
            };
            match &child.summary.firmware {
                None => s.firmware_complete = false,
                Some(set) => {
                    for f in set {
                        if !s.firmware.contains(f) && s.firmware.push(*f).is_err() {
                            s.firmware_complete = false;
                        }
                    }
                }
            }
            if child.summary.nodes.is_none() {
                s.nodes_complete = false;
            }
            let mut have = 0usize;
            // Cannot truncate: CHILD_SLOTS <= u8::MAX.
            let below = self.routes.ids_of(slot as u8).filter(|r| *r != id);
            for node in core::iter::once(id).chain(below) {
                have += 1;
                if !s.nodes.contains(node) && s.nodes.push(node.clone()).is_err() {
                    s.nodes_complete = false;
                }
            }
            if have < usize::from(child.summary.node_count) {
                // The route table dropped some of them: we cannot list them all.
                s.nodes_complete = false;
            }
        }
        s.firmware.sort_unstable();
        s
    }

    /// An OTA message for `target` (not us): down every branch that may hold it.
    pub(super) fn forward_ota(&mut self, target: &str, topic: &str, payload: &[u8]) {
        let firmware = topic::parse_firmware_id(target);
        let route = self.route(target);
        let frame = Frame::Deliver { topic, payload };
        for slot in 0..CHILD_SLOTS {
            let child = &self.children[slot];
            if !matches!(child.state, ChildState::Joined { .. }) {
                continue;
            }
            // Cannot truncate: CHILD_SLOTS <= u8::MAX.
            let slot = slot as u8;
            let by_id = match route {
                Some(r) => r == slot,
                None => child.summary.may_hold(target),
            };
            let by_firmware = firmware.is_some_and(|f| child.summary.may_run(f));
            if !(by_id || by_firmware) {
                self.counters.ota_filtered += 1;
                continue;
            }
            if self.send_frame(LinkId::Child(slot), &frame).is_ok() {
                self.counters.relayed_down += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn bloom_has_no_false_negatives() {
        let mut b = Bloom::default();
        let ids: std::vec::Vec<_> = (0..32)
            .map(|i| crate::NodeId::from_chip_id(i * 7919))
            .collect();
        ids.iter().for_each(|id| b.insert(id.as_str()));
        assert!(ids.iter().all(|id| b.may_contain(id.as_str())));
        let strangers = (1000..2000)
            .map(|i| crate::NodeId::from_chip_id(i * 104_729))
            .filter(|id| b.may_contain(id.as_str()))
            .count();
        assert!(strangers < 150, "{strangers} false positives of 1000");
    }
}
