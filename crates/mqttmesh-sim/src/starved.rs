//! Why offline nodes are offline: for every powered node without a path to the broker,
//! how many mesh APs it hears, how many of those are full, and whether the children of
//! those full APs could move elsewhere to make room (the re-balancing diagnosis).

use std::fmt::Write as _;

use crate::radio::{Endpoint, NodeIdx};
use crate::world::{Assoc, World};

/// The starved-node analysis of [`World::starved`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Starved {
    /// Powered nodes without a path to the broker.
    pub offline: usize,
    /// Of those, nodes that hear no open mesh AP and not the router.
    pub hear_nothing: usize,
    /// Of those, nodes that hear open APs but every one of them is full or at the
    /// maximum depth.
    pub only_full: usize,
    /// Of those, nodes that hear an AP with a free slot (they should get in by
    /// themselves: a timing matter).
    pub hear_free: usize,
    /// Mean number of open mesh APs an offline node hears.
    pub mean_heard: f64,
    /// Mean number of full APs an offline node hears.
    pub mean_full: f64,
    /// Of the `only_full` nodes, those hearing at least one full AP with a child that
    /// could move: it hears another AP with a free slot, no deeper than its current
    /// parent (so not in its own subtree).
    pub with_movable_child: usize,
    /// Across the distinct full APs the `only_full` nodes hear: how many.
    pub full_aps: usize,
    /// Of `full_aps`, how many have at least one movable child.
    pub full_aps_movable: usize,
    /// Re-balancing so far, summed over all nodes: knocks, `MakeRoom` requests, moves,
    /// declined requests.
    pub rebalancing: [u64; 4],
}

impl Starved {
    /// A few lines for a person.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "offline: {} (hear nothing: {}, only full APs: {}, hear a free AP: {})",
            self.offline, self.hear_nothing, self.only_full, self.hear_free
        );
        let _ = writeln!(
            s,
            "an offline node hears {:.1} open APs, {:.1} of them full",
            self.mean_heard, self.mean_full
        );
        let _ = writeln!(
            s,
            "starved by full APs: {} hear a full AP with a child that could move; \
             full APs they hear: {}, {} with a movable child",
            self.with_movable_child, self.full_aps, self.full_aps_movable
        );
        let [knocks, asks, moves, declined] = self.rebalancing;
        let _ = write!(
            s,
            "re-balancing (all nodes): {knocks} knocks, {asks} MakeRoom requests, \
             {moves} moves, {declined} declined"
        );
        s
    }
}

impl World {
    /// Analyses why the powered, offline nodes are offline (noise-free radio, current
    /// APs and associations). Meant for diagnosis after a formation run.
    pub fn starved(&mut self) -> Starved {
        let mut out = Starved::default();
        let mut heard_total = 0usize;
        let mut full_total = 0usize;
        let mut full_seen = std::collections::BTreeMap::<NodeIdx, bool>::new();
        for idx in 0..self.nodes.len() {
            if !self.nodes[idx].alive || self.nodes[idx].node.connected() {
                continue;
            }
            out.offline += 1;
            let router = self.router_up && self.hears(idx, Endpoint::Router);
            let mut heard = 0;
            let mut full = Vec::new();
            let mut free = 0;
            for j in self.candidates(idx) {
                let Some(ap) = self.open_ap(j) else { continue };
                if !self.hears(idx, Endpoint::Node(j)) {
                    continue;
                }
                heard += 1;
                let max_depth = self.nodes[j].node.config().max_depth;
                if ap.depth >= max_depth {
                    continue;
                }
                if self.stations(j).len() >= usize::from(ap.max_children) {
                    full.push(j);
                } else {
                    free += 1;
                }
            }
            heard_total += heard;
            full_total += full.len();
            if router || free > 0 {
                out.hear_free += 1;
            } else if full.is_empty() {
                out.hear_nothing += 1;
            } else {
                out.only_full += 1;
                let mut any = false;
                for &ap in &full {
                    let movable = match full_seen.get(&ap) {
                        Some(&m) => m,
                        None => {
                            let m = self.has_movable_child(ap);
                            full_seen.insert(ap, m);
                            m
                        }
                    };
                    any |= movable;
                }
                if any {
                    out.with_movable_child += 1;
                }
            }
        }
        if out.offline > 0 {
            out.mean_heard = heard_total as f64 / out.offline as f64;
            out.mean_full = full_total as f64 / out.offline as f64;
        }
        out.full_aps = full_seen.len();
        for slot in &self.nodes {
            let c = slot.node.counters();
            out.rebalancing[0] += c.rebalance_knocks;
            out.rebalancing[1] += c.rebalance_asks;
            out.rebalancing[2] += c.rebalance_moves;
            out.rebalancing[3] += c.rebalance_declined;
        }
        out.full_aps_movable = full_seen.values().filter(|&&m| m).count();
        out
    }

    fn hears(&self, idx: NodeIdx, other: Endpoint) -> bool {
        self.radio
            .rssi(Endpoint::Node(idx), other)
            .is_some_and(|r| r >= self.threshold)
    }

    fn open_ap(&self, j: NodeIdx) -> Option<crate::world::ApState> {
        self.nodes[j].ap.filter(|_| self.nodes[j].alive)
    }

    /// Whether one of full AP `ap`'s children hears another AP with a free slot that is
    /// no deeper than `ap`.
    fn has_movable_child(&mut self, ap: NodeIdx) -> bool {
        let Some(parent_ap) = self.open_ap(ap) else {
            return false;
        };
        for child in self.stations(ap) {
            if self.nodes[child].assoc != Some(Assoc::Ap(ap)) {
                continue;
            }
            for j in self.candidates(child) {
                if j == ap {
                    continue;
                }
                let Some(other) = self.open_ap(j) else {
                    continue;
                };
                if other.depth <= parent_ap.depth
                    && self.stations(j).len() < usize::from(other.max_children)
                    && self.hears(child, Endpoint::Node(j))
                {
                    return true;
                }
            }
        }
        false
    }
}
