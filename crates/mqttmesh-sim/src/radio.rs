//! The radio model: who hears whom, and how loud.
//!
//! Two flavours. [`Radio::Positions`] places the router and every node on a plane and
//! derives RSSI from log-distance path loss; [`Radio::Graph`] is an explicit neighbour
//! graph with an RSSI per edge, for scenario tests that need an exact topology. Either
//! way an endpoint is visible when its RSSI is at or above the visibility threshold.

use std::collections::BTreeMap;

/// Index of a node in a [`crate::World`].
pub type NodeIdx = usize;

/// Stands for the router in edge lists (`World::from_edges`).
pub const ROUTER: NodeIdx = usize::MAX;

/// Default visibility threshold, dBm.
pub const DEFAULT_THRESHOLD: i8 = -85;
/// RSSI at one metre, dBm.
pub const RSSI_AT_1M: f64 = -40.0;
/// Path-loss exponent (indoors ≈ 3).
pub const PATH_LOSS_EXPONENT: f64 = 3.0;

/// One end of a radio hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// The router.
    Router,
    /// A mesh node.
    Node(NodeIdx),
}

impl From<NodeIdx> for Endpoint {
    /// [`ROUTER`] maps to the router, anything else to that node.
    fn from(idx: NodeIdx) -> Endpoint {
        if idx == ROUTER {
            Endpoint::Router
        } else {
            Endpoint::Node(idx)
        }
    }
}

/// A position on the plane, in metres.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pos {
    /// X, metres.
    pub x: f64,
    /// Y, metres.
    pub y: f64,
}

impl Pos {
    /// A position.
    pub const fn new(x: f64, y: f64) -> Pos {
        Pos { x, y }
    }

    /// Distance in metres.
    pub fn distance(self, other: Pos) -> f64 {
        ((self.x - other.x).powi(2) + (self.y - other.y).powi(2)).sqrt()
    }
}

/// Log-distance path loss: `-40 - 10 n log10(d)`, with `d` clamped to at least 1 m.
pub fn path_loss_rssi(distance_m: f64) -> i8 {
    let d = distance_m.max(1.0);
    let rssi = RSSI_AT_1M - 10.0 * PATH_LOSS_EXPONENT * d.log10();
    // Cannot truncate: clamped to the i8 range first.
    rssi.round().clamp(-127.0, 0.0) as i8
}

/// Who hears whom.
#[derive(Clone, Debug)]
pub enum Radio {
    /// Positions on a plane and log-distance path loss.
    Positions {
        /// Where the router stands.
        router: Pos,
        /// Where each node stands, by index.
        nodes: Vec<Pos>,
    },
    /// An explicit, symmetric neighbour graph with RSSI per edge.
    Graph {
        /// RSSI per edge, keyed by the ordered endpoint pair.
        edges: BTreeMap<(Endpoint, Endpoint), i8>,
    },
}

impl Radio {
    /// RSSI between two endpoints, whether or not it is above the threshold.
    pub fn rssi(&self, a: Endpoint, b: Endpoint) -> Option<i8> {
        if a == b {
            return None;
        }
        match self {
            Radio::Positions { router, nodes } => {
                let pos = |e: Endpoint| match e {
                    Endpoint::Router => Some(*router),
                    Endpoint::Node(i) => nodes.get(i).copied(),
                };
                Some(path_loss_rssi(pos(a)?.distance(pos(b)?)))
            }
            Radio::Graph { edges } => edges.get(&key(a, b)).copied(),
        }
    }

    /// Sets (or, with `None`, removes) the edge between `a` and `b`. Only meaningful for
    /// the graph flavour; positional radios ignore it.
    pub fn set_edge(&mut self, a: Endpoint, b: Endpoint, rssi: Option<i8>) {
        if let Radio::Graph { edges } = self {
            match rssi {
                Some(r) => {
                    edges.insert(key(a, b), r);
                }
                None => {
                    edges.remove(&key(a, b));
                }
            }
        }
    }

    /// Registers a node's position (positional flavour only).
    pub(crate) fn place(&mut self, idx: NodeIdx, at: Pos) {
        if let Radio::Positions { nodes, .. } = self {
            if nodes.len() <= idx {
                nodes.resize(idx + 1, Pos::default());
            }
            nodes[idx] = at;
        }
    }
}

fn key(a: Endpoint, b: Endpoint) -> (Endpoint, Endpoint) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_loss_follows_log_distance() {
        assert_eq!(path_loss_rssi(0.2), -40);
        assert_eq!(path_loss_rssi(1.0), -40);
        assert_eq!(path_loss_rssi(10.0), -70);
        assert_eq!(path_loss_rssi(100.0), -100);
    }

    #[test]
    fn graph_edges_are_symmetric() {
        let mut radio = Radio::Graph {
            edges: BTreeMap::new(),
        };
        radio.set_edge(Endpoint::Node(2), Endpoint::Router, Some(-60));
        assert_eq!(radio.rssi(Endpoint::Router, Endpoint::Node(2)), Some(-60));
        assert_eq!(radio.rssi(Endpoint::Node(2), Endpoint::Router), Some(-60));
        assert_eq!(radio.rssi(Endpoint::Node(1), Endpoint::Router), None);
        radio.set_edge(Endpoint::Router, Endpoint::Node(2), None);
        assert_eq!(radio.rssi(Endpoint::Router, Endpoint::Node(2)), None);
    }

    #[test]
    fn positions_give_distance_based_rssi() {
        let mut radio = Radio::Positions {
            router: Pos::new(0.0, 0.0),
            nodes: Vec::new(),
        };
        radio.place(1, Pos::new(10.0, 0.0));
        assert_eq!(radio.rssi(Endpoint::Router, Endpoint::Node(1)), Some(-70));
        assert_eq!(radio.rssi(Endpoint::Node(1), Endpoint::Node(1)), None);
    }
}
