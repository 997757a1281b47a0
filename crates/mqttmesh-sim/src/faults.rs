//! Faults beyond power and the router (`station`): the broker going away, nodes moving,
//! and the question a heal time needs answered — which nodes could reach the router at
//! all right now.

use std::collections::VecDeque;

use mqttmesh_core::node::LinkId;
use mqttmesh_core::Duration;

use crate::events::{Ev, SimTiming};
use crate::links::End;
use crate::radio::{Endpoint, NodeIdx, Pos};
use crate::world::{Assoc, World};

impl World {
    /// The simulated latencies and radio budget.
    pub fn timing(&self) -> SimTiming {
        self.timing
    }

    /// The broker process stops: every session ends without a will (a dead broker
    /// publishes nothing), roots see their connection drop, and connects fail until
    /// [`World::broker_start`]. With `keep_retained` false the retained store is lost too
    /// (a broker without persistence, Mosquitto's default).
    pub fn broker_stop(&mut self, keep_retained: bool) {
        self.broker_up = false;
        if !keep_retained {
            self.broker.clear_retained();
        }
        for idx in self.broker.close_all() {
            let inc = self.nodes[idx].incarnation;
            self.schedule(Duration::ZERO, Ev::MqttLost { node: idx, inc });
        }
    }

    /// The broker accepts connections again.
    pub fn broker_start(&mut self) {
        self.broker_up = true;
    }

    /// Whether the broker is running.
    pub fn broker_running(&self) -> bool {
        self.broker_up
    }

    /// Moves node `idx` (positional radio only). Whatever it is now out of range of is
    /// lost silently, as on a real radio: its association (a root also loses its broker
    /// connection), and links to peers it can no longer hear (keep-alives notice).
    pub fn move_node(&mut self, idx: NodeIdx, to: Pos) {
        self.radio.place(idx, to);
        self.invalidate_neighbours();
        self.log_world(idx, &format!("moved to ({:.1}, {:.1})", to.x, to.y));
        let me = Endpoint::Node(idx);
        let hears =
            |w: &World, other: Endpoint| w.radio.rssi(me, other).is_some_and(|r| r >= w.threshold);
        match self.nodes[idx].assoc {
            Some(Assoc::Router) if !hears(self, Endpoint::Router) => {
                self.set_assoc(idx, None);
                if self.broker.session(idx).is_some() {
                    self.drop_session(idx);
                    let inc = self.nodes[idx].incarnation;
                    self.schedule(Duration::ZERO, Ev::MqttLost { node: idx, inc });
                }
            }
            _ => {}
        }
        let links: Vec<_> = self.nodes[idx].links.values().copied().collect();
        for conn in links {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let peer = c.ends.iter().find_map(|e| match e {
                End::Node { idx: p, .. } if *p != idx => Some(*p),
                _ => None,
            });
            if let Some(p) = peer {
                if !hears(self, Endpoint::Node(p)) {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.broken = true;
                    }
                    if self.nodes[idx].assoc == Some(Assoc::Ap(p)) {
                        self.set_assoc(idx, None);
                    }
                    if self.nodes[p].assoc == Some(Assoc::Ap(idx)) {
                        self.set_assoc(p, None);
                    }
                }
            }
        }
    }

    /// Where node `idx` stands (positional radio).
    pub fn position(&self, idx: NodeIdx) -> Option<Pos> {
        match &self.radio {
            crate::radio::Radio::Positions { nodes, .. } => nodes.get(idx).copied(),
            crate::radio::Radio::Graph { .. } => None,
        }
    }

    /// Powered nodes the radio connects to the router (up) through powered nodes: the
    /// ones a healed mesh must have online. Empty while the router or broker is down.
    pub fn reachable(&mut self) -> Vec<bool> {
        let n = self.nodes.len();
        let mut seen = vec![false; n];
        if !self.router_up || !self.broker_up {
            return seen;
        }
        let mut queue = VecDeque::new();
        for (i, s) in seen.iter_mut().enumerate() {
            let hears = self
                .radio
                .rssi(Endpoint::Node(i), Endpoint::Router)
                .is_some_and(|r| r >= self.threshold);
            if self.nodes[i].alive && hears {
                *s = true;
                queue.push_back(i);
            }
        }
        while let Some(i) = queue.pop_front() {
            for j in self.candidates(i) {
                if seen[j] || !self.nodes[j].alive {
                    continue;
                }
                let hears = self
                    .radio
                    .rssi(Endpoint::Node(i), Endpoint::Node(j))
                    .is_some_and(|r| r >= self.threshold);
                if hears {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        seen
    }

    /// Whether every node in `reachable` has a real path to the broker
    /// ([`World::real_paths`]); O(n).
    pub fn all_online_of(&self, reachable: &[bool]) -> bool {
        let paths = self.real_paths();
        reachable.iter().zip(paths).all(|(r, p)| !r || p)
    }

    /// Node `idx`'s child links' peers (for picking a relay to crash).
    pub fn child_count(&self, idx: NodeIdx) -> usize {
        self.nodes[idx]
            .links
            .keys()
            .filter(|l| matches!(l, LinkId::Child(_)))
            .count()
    }
}
