//! A model of the mesh built only from what nodes publish at the broker
//! (`../shared/spec/compat.md`, "Topics a node publishes"): the retained `info/*`
//! topics, `fw` answers, `connect` lines, `Ping` answers and OTA answers. It needs no
//! access to the nodes, so it works for our nodes and for nodes of the original C++
//! library alike. `mqttmesh topology` and `mqttmesh monitor` are built on it.
//!
//! [`MeshView`] is sans-IO like the node: feed it every message seen under the out
//! prefix with [`MeshView::apply`] (live messages) or [`MeshView::apply_retained`]
//! (retained state the broker replays on subscription), read the [`ViewEvent`]s each
//! call returns, and take a [`Snapshot`] when needed. [`watch::Watcher`] is the MQTT
//! client that feeds it.
//!
//! The tree: a node's parent is the node whose `info/MAC_hosted_AP` equals its
//! `info/connectedTo`, or the router when none does (`tree`). Only online nodes have a
//! parent and depth, as in the simulator's report.
//!
//! Bad input (non-UTF-8, malformed lines, absurd values, over-long IDs, too many
//! nodes) never panics: it is counted in [`Stats::ignored`] and dropped.

pub mod command;
mod parse;
pub mod render;
mod snapshot;
mod state;
mod svg;
mod tree;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use parse::OtaStep;
pub use snapshot::{Firmware, NodeEntry, Snapshot};
pub use tree::ROUTER;

use parse::{FwLine, NodeTopic, OutTopic};
use state::NodeState;

/// Most nodes a view tracks; messages of further IDs are ignored and counted.
pub const MAX_NODES: usize = 100_000;
/// Width of the messages-per-second window, seconds.
pub const RATE_WINDOW_SECS: u64 = 10;
/// `connect` lines kept for chip IDs no node has claimed yet.
const MAX_PENDING_CONNECTS: usize = 1024;

/// Something that changed in the mesh, as seen from the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ViewEvent {
    /// A node ID was seen for the first time.
    Appeared {
        /// Node ID.
        id: String,
    },
    /// `info/available` turned `online`.
    Online {
        /// Node ID.
        id: String,
    },
    /// `info/available` turned `offline` (its will, or its parent on its behalf).
    Offline {
        /// Node ID.
        id: String,
    },
    /// The node's parent changed from the last one known (`"router"` or a node ID).
    Reparented {
        /// Node ID.
        id: String,
        /// The previous parent.
        from: String,
        /// The new parent.
        to: String,
    },
    /// A `fw` answer or `connect` line named another firmware than known before.
    Firmware {
        /// Node ID.
        id: String,
        /// What it ran before, if known.
        from: Option<Firmware>,
        /// What it runs now.
        to: Firmware,
    },
    /// The node answered an OTA command.
    Ota {
        /// Node ID.
        id: String,
        /// Which answer.
        step: OtaStep,
    },
    /// The node answered a `Ping`.
    Pong {
        /// Node ID.
        id: String,
    },
    /// Every retained `info/*` topic of the node was cleared (`mqttmesh forget`).
    Removed {
        /// Node ID.
        id: String,
    },
}

/// Counts of what a view was fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Messages under the out prefix.
    pub messages: u64,
    /// Of those, messages about mesh state (`info/*`, `fw`, `connect`, `Ping`, OTA).
    pub state: u64,
    /// Messages dropped as malformed or absurd.
    pub ignored: u64,
    /// Messages not under the out prefix (or with no node ID), not counted above.
    pub outside: u64,
}

/// The mesh as seen from the broker. See the module doc.
#[derive(Debug, Clone)]
pub struct MeshView {
    out: String,
    epoch: Option<Instant>,
    nodes: BTreeMap<String, NodeState>,
    pending_connects: HashMap<u32, FwLine>,
    stats: Stats,
    /// The tree inputs changed since the parents were last derived.
    tree_dirty: bool,
}

impl MeshView {
    /// An empty view of the nodes publishing under `out_prefix` (e.g. `esp8266-out/`).
    pub fn new(out_prefix: &str) -> MeshView {
        MeshView {
            out: out_prefix.to_string(),
            epoch: None,
            nodes: BTreeMap::new(),
            pending_connects: HashMap::new(),
            stats: Stats::default(),
            tree_dirty: false,
        }
    }

    /// The out prefix.
    pub fn out_prefix(&self) -> &str {
        &self.out
    }

    /// Counts of what the view was fed.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Node IDs known, sorted.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Number of nodes known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Feeds a message published now: it also counts toward the node's last-seen time
    /// and message rate.
    pub fn apply(&mut self, now: Instant, topic: &str, payload: &[u8]) -> Vec<ViewEvent> {
        self.handle(now, topic, payload, true)
    }

    /// Feeds a retained message the broker replayed on subscription: it updates the
    /// state but says nothing about when the node was last heard from. Parents are
    /// derived again (and `Reparented` reported) by the next [`MeshView::apply`], so
    /// a replay of thousands of nodes costs one tree derivation, not one per message;
    /// [`MeshView::snapshot`] is always current.
    pub fn apply_retained(&mut self, now: Instant, topic: &str, payload: &[u8]) -> Vec<ViewEvent> {
        self.handle(now, topic, payload, false)
    }

    fn handle(&mut self, now: Instant, topic: &str, payload: &[u8], live: bool) -> Vec<ViewEvent> {
        let mut events = self.handle_message(now, topic, payload, live);
        if live && self.tree_dirty {
            self.update_tree(&mut events);
        }
        events
    }

    fn handle_message(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        live: bool,
    ) -> Vec<ViewEvent> {
        let epoch = *self.epoch.get_or_insert(now);
        let Some(parsed) = parse::out_topic(&self.out, topic) else {
            self.stats.outside += 1;
            return Vec::new();
        };
        self.stats.messages += 1;
        let mut events = Vec::new();
        let (id, kind) = match parsed {
            OutTopic::Connect => {
                self.stats.state += 1;
                self.handle_connect(now, epoch, payload, live, &mut events);
                return events;
            }
            OutTopic::Node { id, kind } => (id, kind),
        };
        if !matches!(kind, NodeTopic::App) {
            self.stats.state += 1;
        }
        if let (NodeTopic::Info(field), true) = (&kind, payload.is_empty()) {
            self.handle_cleared(id, *field, &mut events);
            return events;
        }
        if self.node_entry(id, &mut events).is_none() {
            self.stats.ignored += 1;
            return events;
        }
        if live {
            self.seen(id, now, epoch);
        }
        let ok = match kind {
            NodeTopic::Info(field) => self.handle_info(id, field, payload, &mut events),
            NodeTopic::Fw => match parse::fw_line(payload) {
                Some(line) => {
                    self.set_fw(id, line, &mut events);
                    true
                }
                None => false,
            },
            NodeTopic::Ping => {
                events.push(ViewEvent::Pong { id: id.to_string() });
                true
            }
            NodeTopic::Ota(rest) => self.handle_ota(id, rest, payload, &mut events),
            NodeTopic::App => true,
        };
        if !ok {
            self.stats.ignored += 1;
        }
        events
    }

    /// The node's state, created (with an `Appeared` event) on first sight; `None`
    /// when the view is full.
    fn node_entry(&mut self, id: &str, events: &mut Vec<ViewEvent>) -> Option<&mut NodeState> {
        if !self.nodes.contains_key(id) {
            if self.nodes.len() >= MAX_NODES {
                return None;
            }
            self.nodes.insert(id.to_string(), NodeState::default());
            events.push(ViewEvent::Appeared { id: id.to_string() });
            let chip = (id.len() == 6)
                .then(|| u32::from_str_radix(id, 16).ok())
                .flatten();
            if let Some(line) = chip.and_then(|c| self.pending_connects.remove(&c)) {
                self.set_fw(id, line, events);
            }
        }
        self.nodes.get_mut(id)
    }

    fn seen(&mut self, id: &str, now: Instant, epoch: Instant) {
        if let Some(n) = self.nodes.get_mut(id) {
            n.last_seen = Some(now);
            n.messages += 1;
            n.rate
                .record(now.saturating_duration_since(epoch).as_secs());
        }
    }
}

#[cfg(test)]
mod tests;
