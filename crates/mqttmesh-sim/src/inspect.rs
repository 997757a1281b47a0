//! What tests look at and poke: node getters, the tree, broker queries, application
//! input, invariant checks and a failure report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use mqttmesh_core::node::{Event, Node, Parent, PublishError};
use mqttmesh_core::MsgType;

use crate::broker::{Broker, Publication};
use crate::events::Ev;
use crate::radio::NodeIdx;
use crate::world::{Received, World};

/// How [`World::tree`] names a root's parent.
pub const ROUTER_PARENT: &str = "router";

impl World {
    /// Number of nodes (alive or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the world has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `idx` (read only: drive it through the world so its polls get drained).
    pub fn node(&self, idx: NodeIdx) -> &Node {
        &self.nodes[idx].node
    }

    /// Calls `f` on node `idx`, then drains its polls.
    pub fn with_node<R>(&mut self, idx: NodeIdx, f: impl FnOnce(&mut Node) -> R) -> R {
        let r = f(&mut self.nodes[idx].node);
        self.drain(idx);
        r
    }

    /// Node `idx`'s ID as text.
    pub fn id(&self, idx: NodeIdx) -> String {
        self.nodes[idx].node.id().as_str().to_owned()
    }

    /// The node with ID `id`.
    pub fn find(&self, id: &str) -> Option<NodeIdx> {
        (0..self.nodes.len()).find(|&i| self.nodes[i].node.id().as_str() == id)
    }

    /// Whether node `idx` is powered.
    pub fn is_alive(&self, idx: NodeIdx) -> bool {
        self.nodes[idx].alive
    }

    /// Restarts of node `idx` so far (by `Action::Restart` or [`World::restart`]).
    pub fn restarts(&self, idx: NodeIdx) -> u32 {
        self.nodes[idx].restarts
    }

    /// Application messages node `idx` received (`Event::Message`), over all its lives.
    pub fn messages(&self, idx: NodeIdx) -> &[Received] {
        &self.nodes[idx].received
    }

    /// Every application event of node `idx`, with its time.
    pub fn events(&self, idx: NodeIdx) -> &[(mqttmesh_core::Instant, Event)] {
        &self.nodes[idx].events
    }

    /// Node `idx`'s log (node lines and world notes), oldest first.
    pub fn logs(&self, idx: NodeIdx) -> impl Iterator<Item = &str> {
        self.nodes[idx].logs.iter().map(String::as_str)
    }

    /// Frames and publications the world had to drop (link gone, no session).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether every powered node has a path to the broker.
    pub fn all_online(&self) -> bool {
        self.online_count == self.alive_count
    }

    /// Powered nodes with a path to the broker (as they believe).
    pub fn online_count(&self) -> usize {
        self.online_count
    }

    /// Powered nodes.
    pub fn alive_count(&self) -> usize {
        self.alive_count
    }

    /// Frames the radio lost and had to resend (see [`crate::SimTiming::loss_ppm`]).
    pub fn resent(&self) -> u64 {
        self.resent
    }

    /// Connected nodes: ID → parent ID, or [`ROUTER_PARENT`] for roots.
    pub fn tree(&self) -> BTreeMap<String, String> {
        self.nodes
            .iter()
            .filter(|s| s.alive)
            .filter_map(|s| {
                let parent = match s.node.parent() {
                    Parent::None => return None,
                    Parent::Router { .. } => ROUTER_PARENT.to_owned(),
                    Parent::Node { id, .. } => id.as_str().to_owned(),
                };
                Some((s.node.id().as_str().to_owned(), parent))
            })
            .collect()
    }

    // ---- broker --------------------------------------------------------------------

    /// The broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Whether the broker keeps its observer log ([`World::publications`]); default on.
    /// Turning it off saves memory in big runs (message accounting does not need it).
    pub fn keep_broker_log(&mut self, on: bool) {
        self.broker.set_keep_log(on);
    }

    /// Every publication the broker accepted.
    pub fn publications(&self) -> &[Publication] {
        self.broker.log()
    }

    /// Publications on exactly `topic`.
    pub fn published(&self, topic: &str) -> Vec<&Publication> {
        self.broker
            .log()
            .iter()
            .filter(|p| p.topic == topic)
            .collect()
    }

    /// The retained payload of `topic`.
    pub fn retained(&self, topic: &str) -> Option<Vec<u8>> {
        self.broker.retained(topic).map(<[u8]>::to_vec)
    }

    /// An external MQTT client publishes now.
    pub fn broker_publish(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let publication = Publication {
            at: self.now,
            topic: topic.to_owned(),
            payload: payload.to_vec(),
            retain,
            from: None,
        };
        self.schedule(mqttmesh_core::Duration::ZERO, Ev::BrokerIn(publication));
    }

    // ---- application ---------------------------------------------------------------

    /// Node `idx`'s application publishes on `<out><ID>/<subtopic>`.
    pub fn publish(
        &mut self,
        idx: NodeIdx,
        subtopic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        self.with_node(idx, |n| n.publish(subtopic, payload, msg_type))
    }

    /// Node `idx`'s application sends to node `to` (`publish_node`).
    pub fn publish_node(
        &mut self,
        idx: NodeIdx,
        to: &str,
        subtopic: &str,
        payload: &[u8],
        msg_type: MsgType,
    ) -> Result<(), PublishError> {
        self.with_node(idx, |n| n.publish_node(to, subtopic, payload, msg_type))
    }

    // ---- checks --------------------------------------------------------------------

    /// Checks the mesh is a well-formed forest under the router: every connected node's
    /// parent is alive, connected, linked to it and lists it as a child; no loops;
    /// depths match paths; no node over `max_children` or `max_depth`.
    pub fn check_tree(&self) -> Result<(), String> {
        let tree = self.tree();
        for (idx, slot) in self.nodes.iter().enumerate() {
            if !slot.alive || !slot.node.connected() {
                continue;
            }
            let node = &slot.node;
            let id = node.id().as_str();
            let config = node.config();
            let children = node.children().count();
            if children > usize::from(config.max_children) {
                return Err(format!("{id} has {children} children"));
            }
            let depth = node.depth().unwrap_or(0);
            if depth == 0 || depth > config.max_depth {
                return Err(format!("{id} at depth {depth}"));
            }
            if let Parent::Node { id: parent, .. } = node.parent() {
                let p = self
                    .find(parent.as_str())
                    .filter(|&p| self.nodes[p].alive)
                    .ok_or_else(|| format!("{id}: parent {parent} is gone"))?;
                let pn = &self.nodes[p].node;
                if !pn.children().any(|c| c.as_str() == id) {
                    return Err(format!("{id}: parent {parent} does not list it"));
                }
                if self.child_link(p, idx).is_none() {
                    return Err(format!("{id}: no link to parent {parent}"));
                }
                if pn.depth().map(|d| d + 1) != Some(depth) {
                    return Err(format!("{id}: depth {depth}, parent at {:?}", pn.depth()));
                }
            }
            let mut at = id.to_owned();
            for _ in 0..=tree.len() {
                match tree.get(&at) {
                    Some(p) if p == ROUTER_PARENT => break,
                    Some(p) => at.clone_from(p),
                    None => return Err(format!("{id}: chain breaks at {at}")),
                }
            }
            if tree.get(&at).map(String::as_str) != Some(ROUTER_PARENT) {
                return Err(format!("{id}: loop"));
            }
        }
        Ok(())
    }

    /// A human-readable dump for failed assertions: seed, clock, tree, each node's
    /// state and counters and its last `log_lines` log lines.
    pub fn report(&self, log_lines: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "seed {} at {} after {} events; router {}",
            self.seed,
            self.now,
            self.steps(),
            if self.router_up { "up" } else { "down" }
        );
        let _ = writeln!(out, "tree: {:?}", self.tree());
        for (i, slot) in self.nodes.iter().enumerate() {
            let n = &slot.node;
            let _ = writeln!(
                out,
                "#{i} {} alive={} {:?} depth={:?} ap={} children={:?}\n   {:?}",
                n.id(),
                slot.alive,
                n.state(),
                n.depth(),
                n.ap_open(),
                n.children().map(|c| c.as_str()).collect::<Vec<_>>(),
                n.counters()
            );
            let skip = slot.logs.len().saturating_sub(log_lines);
            for line in slot.logs.iter().skip(skip) {
                let _ = writeln!(out, "   | {line}");
            }
        }
        out
    }
}
