//! A serialisable picture of a [`MeshView`] at one instant. Its `node_list` is shaped
//! like the simulator's report rows (`mesh::NodeRow`: `id`, `parent` as a node ID or
//! `"router"`, `depth`, `online`, `children`), plus what the broker tells about each
//! node.

use std::collections::HashMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::parse::FwLine;
use super::{tree, MeshView, NodeState, Stats};

/// A firmware as a node announces it in `fw` and `connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// Firmware ID, at least 4 upper-case hex digits (`1337`).
    pub id: String,
    /// Version string (`0.1`).
    pub version: String,
}

impl Firmware {
    pub(crate) fn of(line: &FwLine) -> Firmware {
        Firmware {
            id: format!("{:04X}", line.firmware_id),
            version: line.version.clone(),
        }
    }
}

/// One node as the broker shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Node ID (the topic level after the out prefix).
    pub id: String,
    /// `"router"`, the parent's node ID, or null (offline, or no `connectedTo`).
    pub parent: Option<String>,
    /// Depth below the router (root = 1); null when the path up is unknown.
    pub depth: Option<u8>,
    /// `info/available` is `online`.
    pub online: bool,
    /// Online nodes whose parent this node is, sorted.
    pub children: Vec<String>,
    /// `info/available` as last published: true, false, or null when never seen.
    pub available: Option<bool>,
    /// The last parent known, also while offline.
    pub last_parent: Option<String>,
    /// Chip ID, 6 hex digits, from `fw`/`connect`.
    pub chip_id: Option<String>,
    /// Firmware ID, hex, from `fw`/`connect`.
    pub firmware_id: Option<String>,
    /// Firmware version, from `fw`/`connect`.
    pub firmware_version: Option<String>,
    /// IP from `fw`/`connect`.
    pub ip: Option<String>,
    /// Joined through the mesh (the `mesh` word of `fw`/`connect`).
    pub via_mesh: Option<bool>,
    /// `info/IP_local`.
    pub ip_local: Option<String>,
    /// `info/RSSI`, dBm.
    pub rssi: Option<i32>,
    /// `info/MAC` (station MAC).
    pub mac: Option<String>,
    /// `info/MAC_hosted_AP`.
    pub ap_mac: Option<String>,
    /// `info/connectedTo` (uplink BSSID).
    pub connected_to: Option<String>,
    /// `info/reset_Reason`.
    pub reset_reason: Option<String>,
    /// Milliseconds since a live message of the node was seen; null when only its
    /// retained state is known.
    pub last_seen_ms: Option<u64>,
    /// Live messages per second over the last [`super::RATE_WINDOW_SECS`] seconds.
    pub msgs_per_sec: f64,
    /// Live messages seen in all.
    pub messages: u64,
    /// The last OTA answer, e.g. `check: MD5 Passed`.
    pub ota: Option<String>,
}

/// The whole mesh at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The out prefix watched.
    pub out_prefix: String,
    /// Nodes known.
    pub nodes: usize,
    /// Nodes online.
    pub online: usize,
    /// Deepest depth of an online node.
    pub max_depth: u8,
    /// Every node, sorted by ID.
    pub node_list: Vec<NodeEntry>,
    /// What the view was fed.
    pub stats: Stats,
}

impl Snapshot {
    /// The node with this ID.
    pub fn node(&self, id: &str) -> Option<&NodeEntry> {
        self.node_list.iter().find(|n| n.id == id)
    }
}

impl MeshView {
    /// The mesh as known now.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let links = self.links();
        let places = tree::derive(&links);
        let parents: Vec<Option<&str>> = places.iter().map(|p| p.up.name(&links)).collect();
        // Keys are visited in order, so each list of children comes out sorted.
        let mut children: HashMap<&str, Vec<String>> = HashMap::new();
        for (parent, kid) in parents.iter().zip(self.nodes.keys()) {
            if let Some(parent) = parent {
                children.entry(parent).or_default().push(kid.clone());
            }
        }
        let sec = self
            .epoch
            .map_or(0, |e| now.saturating_duration_since(e).as_secs());
        let node_list: Vec<NodeEntry> = self
            .nodes
            .iter()
            .zip(&places)
            .zip(&parents)
            .map(|(((id, n), place), parent)| {
                let mut e = entry(id, n, now, sec);
                e.parent = parent.map(str::to_string);
                e.depth = place.depth;
                e.children = children.remove(id.as_str()).unwrap_or_default();
                if e.parent.is_some() {
                    e.last_parent.clone_from(&e.parent);
                }
                e
            })
            .collect();
        Snapshot {
            out_prefix: self.out.clone(),
            nodes: node_list.len(),
            online: node_list.iter().filter(|n| n.online).count(),
            max_depth: node_list.iter().filter_map(|n| n.depth).max().unwrap_or(0),
            node_list,
            stats: self.stats,
        }
    }
}

fn entry(id: &str, n: &NodeState, now: Instant, sec: u64) -> NodeEntry {
    let fw = n.fw.as_ref();
    NodeEntry {
        id: id.to_string(),
        parent: None,
        depth: None,
        online: n.available == Some(true),
        children: Vec::new(),
        available: n.available,
        last_parent: n.last_parent.clone(),
        chip_id: fw.map(|f| format!("{:06X}", f.chip_id)),
        firmware_id: fw.map(|f| format!("{:04X}", f.firmware_id)),
        firmware_version: fw.map(|f| f.version.clone()),
        ip: fw.map(|f| f.ip.clone()),
        via_mesh: fw.map(|f| f.mesh),
        ip_local: n.ip_local.clone(),
        rssi: n.rssi,
        mac: n.mac.clone(),
        ap_mac: n.ap_mac.clone(),
        connected_to: n.connected_to.clone(),
        reset_reason: n.reset_reason.clone(),
        last_seen_ms: n
            .last_seen
            .map(|t| now.saturating_duration_since(t).as_millis() as u64),
        msgs_per_sec: n.rate.per_sec(sec),
        messages: n.messages,
        ota: n.ota.as_ref().map(|o| o.describe()),
    }
}
