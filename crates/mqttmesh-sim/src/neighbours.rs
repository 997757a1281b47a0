//! Who might hear whom, without asking every node: a spatial grid over positions (cells
//! as wide as the radio range at the visibility threshold) or an adjacency list over an
//! explicit graph. Scans look only at these candidates, which keeps a scan O(local
//! density) instead of O(n) and lets worlds of 10,000 nodes run in minutes.
//!
//! The index is rebuilt lazily after anything that changes it (a node placed or moved,
//! an edge set, the threshold changed).

use std::collections::HashMap;

use crate::radio::{Endpoint, NodeIdx, Radio, PATH_LOSS_EXPONENT, RSSI_AT_1M};
use crate::world::World;

/// A neighbour index of a [`Radio`].
#[derive(Debug)]
pub(crate) enum Index {
    Grid {
        cell: f64,
        cells: HashMap<(i64, i64), Vec<NodeIdx>>,
    },
    Adjacency(Vec<Vec<NodeIdx>>),
}

/// Farthest distance, in metres, at which path loss still gives `threshold` dBm.
pub(crate) fn range_m(threshold: i8) -> f64 {
    // `path_loss_rssi` rounds, so anything within half a dB of the threshold counts.
    let db = RSSI_AT_1M - f64::from(threshold) + 0.5;
    10f64.powf(db / (10.0 * PATH_LOSS_EXPONENT)).max(1.0)
}

fn cell_of(x: f64, y: f64, cell: f64) -> (i64, i64) {
    // Cannot matter: positions are metres on a plane, far inside the i64 range.
    ((x / cell).floor() as i64, (y / cell).floor() as i64)
}

impl Index {
    fn build(radio: &Radio, n: usize, threshold: i8) -> Index {
        match radio {
            Radio::Positions { nodes, .. } => {
                let cell = range_m(threshold) + 0.01;
                let mut cells: HashMap<(i64, i64), Vec<NodeIdx>> = HashMap::new();
                for (i, p) in nodes.iter().enumerate().take(n) {
                    cells.entry(cell_of(p.x, p.y, cell)).or_default().push(i);
                }
                Index::Grid { cell, cells }
            }
            Radio::Graph { edges } => {
                let mut adj = vec![Vec::new(); n];
                for (a, b) in edges.keys() {
                    if let (Endpoint::Node(a), Endpoint::Node(b)) = (*a, *b) {
                        if a < n && b < n {
                            adj[a].push(b);
                            adj[b].push(a);
                        }
                    }
                }
                for list in &mut adj {
                    list.sort_unstable();
                    list.dedup();
                }
                Index::Adjacency(adj)
            }
        }
    }

    /// Nodes that may hear `idx` (a superset; the caller checks RSSI), ascending.
    fn candidates(&self, radio: &Radio, idx: NodeIdx) -> Vec<NodeIdx> {
        match (self, radio) {
            (Index::Grid { cell, cells }, Radio::Positions { nodes, .. }) => {
                let Some(p) = nodes.get(idx) else {
                    return Vec::new();
                };
                let (cx, cy) = cell_of(p.x, p.y, *cell);
                let mut out = Vec::new();
                for dx in -1..=1 {
                    for dy in -1..=1 {
                        if let Some(list) = cells.get(&(cx + dx, cy + dy)) {
                            out.extend(list.iter().copied().filter(|&j| j != idx));
                        }
                    }
                }
                out.sort_unstable();
                out
            }
            (Index::Adjacency(adj), _) => adj.get(idx).cloned().unwrap_or_default(),
            // The radio flavour never changes after construction; rebuild if it did.
            _ => Vec::new(),
        }
    }
}

impl World {
    /// Nodes that may hear node `idx`, ascending (a superset of those in range).
    pub(crate) fn candidates(&mut self, idx: NodeIdx) -> Vec<NodeIdx> {
        if self.neighbours.is_none() {
            self.neighbours = Some(Index::build(&self.radio, self.nodes.len(), self.threshold));
        }
        match &self.neighbours {
            Some(index) => index.candidates(&self.radio, idx),
            None => Vec::new(),
        }
    }

    /// Forgets the neighbour index: the radio changed.
    pub(crate) fn invalidate_neighbours(&mut self) {
        self.neighbours = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radio::path_loss_rssi;

    #[test]
    fn range_matches_path_loss_rounding() {
        let r = range_m(-85);
        assert!(path_loss_rssi(r - 0.01) >= -85);
        assert!(path_loss_rssi(r + 0.05) < -85);
    }
}
