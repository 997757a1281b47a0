//! Invariants of a healthy mesh, checked as the world runs, and the violations found.
//!
//! After every drain of a node (that is, after every event that reached it) the world
//! checks what that node changed, in O(depth): its AP is open only while it believes it
//! is online; it has at most `max_children` children and sits at most `max_depth` deep;
//! following parent pointers from it reaches the router without coming back to it (no
//! loop in the parent graph).
//!
//! Whether an open AP really has a path to the broker depends on other nodes, which
//! can change without this node hearing of it (a parent crashes silently, a link is
//! cut). So once per [`SWEEP`] of virtual time the world walks the whole forest in O(n)
//! and flags a node whose AP has been open without a real path (every link up to a
//! root alive, the root on the router with a broker session) for longer than the grace
//! the core needs to notice: one link timeout and one keep-alive interval for the dead
//! link, plus one hop latency and one resend per level for the news to travel down, plus
//! one sweep (see [`World::invariant_grace`]).

use std::fmt;

use mqttmesh_core::node::{LinkId, Parent};
use mqttmesh_core::{Duration, Instant};

use crate::links::End;
use crate::radio::NodeIdx;
use crate::world::{Assoc, World};

/// How often the whole forest is checked for APs open without a path to the broker.
pub const SWEEP: Duration = Duration::from_millis(1000);
/// Violations kept in full (more are only counted).
pub const KEEP: usize = 100;

/// A broken invariant: when, which node, what; with the seed that replays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time of the check that found it.
    pub at: Instant,
    /// The world's seed.
    pub seed: u64,
    /// Index of the node concerned.
    pub node: NodeIdx,
    /// Its ID.
    pub id: String,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant violated at {} (seed {}): node #{} {}: {}",
            self.at, self.seed, self.node, self.id, self.what
        )
    }
}

impl World {
    /// Violations found so far (the first 100); see [`World::violation_count`].
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Number of violations found so far.
    pub fn violation_count(&self) -> u64 {
        self.violation_count
    }

    /// How long a node's AP may stay open without a real path to the broker before
    /// that is a violation: set explicitly, or derived from node `0`'s timers and the
    /// radio timing (link timeout + keep-alive interval + `max_depth` × (hop latency +
    /// resend delay) + one sweep).
    pub fn invariant_grace(&self) -> Duration {
        if let Some(grace) = self.grace {
            return grace;
        }
        let Some(slot) = self.nodes.first() else {
            return Duration::ZERO;
        };
        let config = slot.node.config();
        let per_hop = self.timing.hop_latency + self.timing.retransmit_delay;
        let travel = Duration::from_millis(per_hop.millis() * u64::from(config.max_depth));
        config.timing.link_timeout + config.timing.keepalive_interval + travel + SWEEP
    }

    /// Overrides [`World::invariant_grace`] (for cores with longer grace periods).
    pub fn set_invariant_grace(&mut self, grace: Duration) {
        self.grace = Some(grace);
    }

    fn violation(&mut self, node: NodeIdx, what: String) {
        self.violation_count += 1;
        if self.violations.len() < KEEP {
            let v = Violation {
                at: self.now,
                seed: self.seed,
                node,
                id: self.id(node),
                what,
            };
            self.violations.push(v);
        }
    }

    /// The node that `idx` names as its parent, if it names a node.
    fn parent_idx(&self, idx: NodeIdx) -> Option<Result<NodeIdx, String>> {
        match self.nodes[idx].node.parent() {
            Parent::Node { id, .. } => Some(
                self.by_id
                    .get(id.as_str())
                    .copied()
                    .ok_or_else(|| id.as_str().to_owned()),
            ),
            _ => None,
        }
    }

    /// The local checks, after node `idx` was drained.
    pub(crate) fn after_drain(&mut self, idx: NodeIdx) {
        let slot = &self.nodes[idx];
        if !slot.alive {
            return;
        }
        let node = &slot.node;
        let config = node.config();
        if node.ap_open() && !node.connected() {
            self.violation(idx, format!("AP open while {:?}", node.state()));
            return;
        }
        if !node.connected() {
            return;
        }
        let children = node.children().count();
        let depth = node.depth().unwrap_or(0);
        let (max_children, max_depth) = (config.max_children, config.max_depth);
        if children > usize::from(max_children) {
            self.violation(idx, format!("{children} children, capacity {max_children}"));
        }
        if depth > max_depth {
            self.violation(idx, format!("depth {depth} > max_depth {max_depth}"));
        }
        self.check_chain(idx, usize::from(max_depth) + 1);
    }

    /// Follows parent pointers from `idx` through connected nodes: a loop if it comes
    /// back to `idx` or goes on longer than `limit` hops.
    fn check_chain(&mut self, idx: NodeIdx, limit: usize) {
        let mut at = idx;
        for _ in 0..=limit {
            match self.parent_idx(at) {
                None => return,
                Some(Err(_)) => return,
                Some(Ok(p)) if p == idx => {
                    let what = format!("loop in the parent graph through #{at}");
                    self.violation(idx, what);
                    return;
                }
                Some(Ok(p)) => {
                    let slot = &self.nodes[p];
                    if !slot.alive || !slot.node.connected() {
                        return;
                    }
                    at = p;
                }
            }
        }
        self.violation(idx, format!("parent chain longer than {limit} hops"));
    }

    /// Whether node `p` holds the parent end of `idx`'s unbroken parent link.
    fn linked_to(&self, idx: NodeIdx, p: NodeIdx) -> bool {
        let Some(conn) = self.nodes[idx].links.get(&LinkId::Parent) else {
            return false;
        };
        self.conns.get(conn).is_some_and(|c| {
            !c.broken
                && c.open == [true, true]
                && matches!(c.ends[1], End::Node { idx, .. } if idx == p)
        })
    }

    /// For every node: whether it has a real path to the broker now — powered, online,
    /// and every link up to a root alive, the root on the router with a broker session
    /// (what a node believes can lag behind: a parent may have crashed silently).
    pub fn real_paths(&self) -> Vec<bool> {
        // 0: unknown, 1: on the stack, 2: no path, 3: path.
        let n = self.nodes.len();
        let mut mark = vec![0u8; n];
        let mut stack = Vec::new();
        for start in 0..n {
            let mut at = start;
            // Walk up until a known node (or a root, or a dead end), then unwind.
            let result = loop {
                if mark[at] >= 2 {
                    break mark[at] == 3;
                }
                if mark[at] == 1 {
                    break false; // a loop: nobody on it has a path
                }
                let slot = &self.nodes[at];
                if !slot.alive || !slot.node.connected() {
                    mark[at] = 2;
                    break false;
                }
                match slot.node.parent() {
                    Parent::Router { .. } => {
                        let ok = self.router_up
                            && slot.assoc == Some(Assoc::Router)
                            && self.broker.session(at).is_some();
                        mark[at] = if ok { 3 } else { 2 };
                        break ok;
                    }
                    Parent::Node { .. } => match self.parent_idx(at) {
                        Some(Ok(p)) if self.linked_to(at, p) => {
                            mark[at] = 1;
                            stack.push(at);
                            at = p;
                        }
                        _ => {
                            mark[at] = 2;
                            break false;
                        }
                    },
                    Parent::None => {
                        mark[at] = 2;
                        break false;
                    }
                }
            };
            for i in stack.drain(..) {
                mark[i] = if result { 3 } else { 2 };
            }
        }
        mark.into_iter().map(|m| m == 3).collect()
    }

    /// The periodic check: APs open without a real path for longer than the grace.
    pub(crate) fn sweep(&mut self) {
        let paths = self.real_paths();
        let grace = self.invariant_grace();
        let now = self.now;
        for (idx, has_path) in paths.into_iter().enumerate() {
            let slot = &mut self.nodes[idx];
            if !slot.alive || !slot.node.ap_open() || has_path {
                slot.orphan_since = None;
                slot.orphan_reported = false;
                continue;
            }
            let since = *slot.orphan_since.get_or_insert(now);
            if now.saturating_since(since) > grace && !slot.orphan_reported {
                slot.orphan_reported = true;
                let what = format!(
                    "AP open without a path to the broker for {} (grace {grace})",
                    now.saturating_since(since)
                );
                self.violation(idx, what);
            }
        }
    }

    /// Runs the periodic check now (tests call it at the end of a run).
    pub fn check_invariants(&mut self) -> Result<(), String> {
        self.sweep();
        match self.violations.first() {
            None => Ok(()),
            Some(first) => Err(format!(
                "{} invariant violation(s); first: {first}",
                self.violation_count
            )),
        }
    }
}
