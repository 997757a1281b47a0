//! Ready-made placements: line, grid, random, or a JSON file.
//!
//! With the default radio model (−40 dBm at 1 m, exponent 3, −85 dBm threshold) a
//! node hears others up to ≈31 m away. Line and grid spacings are chosen so a node
//! hears only its neighbours, and the router only the first node, which forces the
//! mesh to grow deep.

use std::path::Path;

use serde::Deserialize;

use crate::radio::Placement;

/// Node spacing on a line, metres: neighbours hear each other, the next-but-one not.
pub const LINE_SPACING: f64 = 25.0;
/// Node spacing on a grid, metres: orthogonal and diagonal neighbours hear each other.
pub const GRID_SPACING: f64 = 20.0;

/// Nodes on a line, the router before the first.
pub fn line(n: usize) -> Placement {
    Placement::Positions {
        router: (0.0, 0.0),
        nodes: (0..n)
            .map(|i| ((i + 1) as f64 * LINE_SPACING, 0.0))
            .collect(),
    }
}

/// Nodes on a square grid, the router off one corner.
pub fn grid(n: usize) -> Placement {
    let side = (n as f64).sqrt().ceil().max(1.0) as usize;
    Placement::Positions {
        router: (-15.0, -15.0),
        nodes: (0..n)
            .map(|i| {
                (
                    (i % side) as f64 * GRID_SPACING,
                    (i / side) as f64 * GRID_SPACING,
                )
            })
            .collect(),
    }
}

/// Random positions, each node within radio range of an earlier node or the router
/// (so every node can reach the router), seeded.
pub fn random(n: usize, seed: u64) -> Placement {
    let mut rng = SplitMix(seed);
    let router = (0.0, 0.0);
    let mut nodes: Vec<(f64, f64)> = Vec::with_capacity(n);
    for i in 0..n {
        let anchor = if i == 0 || rng.unit() < 0.1 {
            router
        } else {
            nodes[(rng.next() % i as u64) as usize]
        };
        let angle = rng.unit() * std::f64::consts::TAU;
        let dist = 8.0 + rng.unit() * 18.0;
        nodes.push((anchor.0 + dist * angle.cos(), anchor.1 + dist * angle.sin()));
    }
    Placement::Positions { router, nodes }
}

/// A topology file (JSON). Either positions:
/// `{"router": [0, 0], "nodes": [[10, 0], [30, 5]]}`
/// or a graph with RSSI per edge:
/// `{"nodes": 3, "router_links": [[0, -60]], "links": [[0, 1, -65], [1, 2, -70]]}`
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum File {
    Positions {
        router: (f64, f64),
        nodes: Vec<(f64, f64)>,
    },
    Graph {
        nodes: usize,
        router_links: Vec<(usize, i8)>,
        links: Vec<(usize, usize, i8)>,
    },
}

/// Reads a topology file.
pub fn from_file(path: &Path) -> Result<Placement, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: File = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}: not a topology file ({e}); expected {{\"router\": [x, y], \"nodes\": [[x, y], ...]}} \
             or {{\"nodes\": N, \"router_links\": [[node, rssi]], \"links\": [[a, b, rssi]]}}",
            path.display()
        )
    })?;
    Ok(match file {
        File::Positions { router, nodes } => Placement::Positions { router, nodes },
        File::Graph {
            nodes,
            router_links,
            links,
        } => {
            if let Some(bad) = links
                .iter()
                .map(|l| l.0.max(l.1))
                .chain(router_links.iter().map(|l| l.0))
                .find(|&i| i >= nodes)
            {
                return Err(format!(
                    "{}: link names node {bad}, but there are {nodes} nodes",
                    path.display()
                ));
            }
            Placement::Graph {
                nodes,
                router: router_links,
                edges: links,
            }
        }
    })
}

/// splitmix64, for placements and chip IDs.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next 64 bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::radio::{Model, Radio, Router, Timing};
    use mqttmesh_core::Mac;

    fn radio(p: Placement) -> Radio {
        let router = Router {
            ssid: "r".into(),
            bssid: Mac([2, 0, 0, 0, 0, 1]),
            password: "routerpass".into(),
            channel: 1,
        };
        Radio::new(Model::default(), Timing::fast(), p, router)
    }

    #[test]
    fn line_neighbours_only() {
        let r = radio(line(5));
        assert!(r.rssi_router(0).is_some() && r.rssi_router(1).is_none());
        assert!(r.rssi(1, 2).is_some() && r.rssi(1, 3).is_none());
    }

    #[test]
    fn random_is_connected_and_seeded() {
        let p = random(50, 7);
        let r = radio(p.clone());
        // Breadth-first from the router reaches everyone.
        let mut seen = [false; 50];
        let mut queue: Vec<usize> = (0..50).filter(|&i| r.rssi_router(i).is_some()).collect();
        for &i in &queue {
            seen[i] = true;
        }
        while let Some(i) = queue.pop() {
            for (j, s) in seen.iter_mut().enumerate() {
                if !*s && r.rssi(i, j).is_some() {
                    *s = true;
                    queue.push(j);
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
        let Placement::Positions { nodes: a, .. } = p else {
            unreachable!()
        };
        let Placement::Positions { nodes: b, .. } = random(50, 7) else {
            unreachable!()
        };
        assert_eq!(a, b);
    }
}
