//! A whole emulated mesh: the radio world, one node task per node, all against one
//! broker. This is what `mqttmesh sim` and the end-to-end tests run.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mqttmesh_core::config::Config;
use mqttmesh_core::Mac;
use serde::Serialize;

use crate::meshtls::{MeshTls, MeshTlsCounters};
use crate::mqtt_tls::{ClientTls, Trust};
use crate::radio::{Model, Placement, Radio, Router, Timing};
use crate::runtime::{Control, NodeHandle, NodeSpec, NodeStatus};
use crate::topology::SplitMix;

/// The emulated router's BSSID.
pub const ROUTER_BSSID: Mac = Mac([0x02, 0x4D, 0x45, 0x53, 0x48, 0x01]);

/// What to run.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// Where nodes and router are.
    pub placement: Placement,
    /// Radio model.
    pub model: Model,
    /// Radio timing.
    pub timing: Timing,
    /// Node configuration shared by all nodes (its first network is the router).
    pub config: Config,
    /// Broker the router leads to.
    pub broker: SocketAddr,
    /// Trust anchors when `config.mqtt_tls` is [`BrokerTls::Ca`](mqttmesh_core::config::BrokerTls::Ca)
    /// (unused otherwise); the certificate must name `config.broker_host`.
    pub mqtt_trust: Trust,
    /// TLS on every mesh link, from the files of `mqttmesh gen-cert` (`None`: plain
    /// TCP, the default, as the seed recommends).
    pub mesh_tls: Option<MeshTls>,
    /// Seed for chip IDs and node generators.
    pub seed: u64,
    /// Demo-app publication interval (zero: the app does not publish).
    pub publish_interval: Duration,
    /// Per-node flash, bootloader and OTA receivers (`None`: nodes have no flash and
    /// ignore OTA messages).
    pub ota: Option<crate::ota::OtaSpec>,
    /// Firmware IDs by node index, for meshes of mixed firmware (nodes past the end
    /// of the list, or all when it is empty, run `config.firmware_id`).
    pub firmware_ids: Vec<u32>,
}

impl MeshSpec {
    /// A spec with the defaults: the default radio model, realistic radio timing, no
    /// TLS anywhere, seed 0, the demo app silent, no flash, every node running
    /// `config.firmware_id`. Change fields with struct update syntax:
    ///
    /// ```
    /// # use mqttmesh_core::config::Config;
    /// # use mqttmesh_host::{mesh::MeshSpec, radio::Timing, topology};
    /// # let config = Config::builder().network("router", "password1")
    /// #     .broker("127.0.0.1", 1883).build().unwrap();
    /// let spec = MeshSpec {
    ///     timing: Timing::fast(),
    ///     seed: 7,
    ///     ..MeshSpec::new(topology::line(3), config, "127.0.0.1:1883".parse().unwrap())
    /// };
    /// assert_eq!(spec.placement.len(), 3);
    /// ```
    pub fn new(placement: Placement, config: Config, broker: SocketAddr) -> MeshSpec {
        MeshSpec {
            placement,
            model: Model::default(),
            timing: Timing::realistic(),
            config,
            broker,
            mqtt_trust: Trust::default(),
            mesh_tls: None,
            seed: 0,
            publish_interval: Duration::ZERO,
            ota: None,
            firmware_ids: Vec::new(),
        }
    }
}

/// A running mesh.
#[derive(Debug)]
pub struct Mesh {
    spec: MeshSpec,
    radio: Arc<Radio>,
    nodes: Vec<NodeHandle>,
    chip_ids: Vec<u32>,
    epoch: tokio::time::Instant,
    mqtt_tls: Option<ClientTls>,
}

/// One row of a mesh report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeRow {
    /// Node ID.
    pub id: String,
    /// `"router"`, a parent node ID, or null.
    pub parent: Option<String>,
    /// Depth (root = 1), or null.
    pub depth: Option<u8>,
    /// Path to the broker up.
    pub online: bool,
    /// Chip ID, hex.
    pub chip_id: String,
    /// Running (not killed).
    pub alive: bool,
    /// Joined children.
    pub children: Vec<String>,
}

impl Mesh {
    /// Starts every node.
    pub async fn start(spec: MeshSpec) -> std::io::Result<Mesh> {
        if let Some(ota) = &spec.ota {
            std::fs::create_dir_all(&ota.dir).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("flash directory {}: {e}", ota.dir.display()),
                )
            })?;
        }
        let network = spec.config.networks.first().ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the configuration has no router network",
            )
        })?;
        let router = Router {
            ssid: network.ssid.to_string(),
            bssid: network.bssid.unwrap_or(ROUTER_BSSID),
            password: network.password.to_string(),
            channel: 6,
        };
        let radio = Arc::new(Radio::new(
            spec.model,
            spec.timing,
            spec.placement.clone(),
            router,
        ));
        let mqtt_tls = ClientTls::new(
            spec.config.mqtt_tls,
            &spec.mqtt_trust,
            &spec.config.broker_host,
            spec.broker.port(),
        )
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let n = radio.len();
        let chip_ids = chip_ids(n, spec.seed);
        let epoch = tokio::time::Instant::now();
        let mut mesh = Mesh {
            spec,
            radio,
            nodes: Vec::with_capacity(n),
            chip_ids,
            epoch,
            mqtt_tls,
        };
        for i in 0..n {
            let handle = mesh.spawn(i).await?;
            mesh.nodes.push(handle);
        }
        Ok(mesh)
    }

    async fn spawn(&self, i: usize) -> std::io::Result<NodeHandle> {
        let mut config = self.spec.config.clone();
        if let Some(id) = self.spec.firmware_ids.get(i) {
            config.firmware_id = *id;
        }
        let spec = NodeSpec {
            index: i,
            chip_id: self.chip_ids[i],
            config,
            seed: self.spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9),
            broker: self.spec.broker,
            mqtt_tls: self.mqtt_tls.clone(),
            mesh_tls: self.spec.mesh_tls.clone(),
            publish_interval: self.spec.publish_interval,
            ota: self.spec.ota.clone(),
        };
        NodeHandle::start(spec, self.radio.clone(), self.epoch).await
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The radio world.
    pub fn radio(&self) -> &Radio {
        &self.radio
    }

    /// Chip ID of node `i`.
    pub fn chip_id(&self, i: usize) -> u32 {
        self.chip_ids[i]
    }

    /// Node ID of node `i` (the chip ID, unless the configuration overrides it).
    pub fn node_id(&self, i: usize) -> String {
        match &self.spec.config.node_id {
            Some(id) => id.to_string(),
            None => format!("{:06X}", self.chip_ids[i]),
        }
    }

    /// Snapshots of every node.
    pub fn statuses(&self) -> Vec<NodeStatus> {
        self.nodes.iter().map(|n| n.status()).collect()
    }

    /// Where node `i` serves its mesh port.
    pub fn mesh_addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].mesh_addr()
    }

    /// Mesh TLS counters summed over every node.
    pub fn mesh_tls_counters(&self) -> MeshTlsCounters {
        let mut total = MeshTlsCounters::default();
        for s in self.statuses() {
            total.add(&s.mesh_tls);
        }
        total
    }

    /// Nodes online.
    pub fn online(&self) -> usize {
        self.nodes.iter().filter(|n| n.status().online).count()
    }

    /// Every node alive is online.
    pub fn all_online(&self) -> bool {
        self.statuses().iter().filter(|s| s.alive).all(|s| s.online)
    }

    /// Demo-app publications accepted by all nodes.
    pub fn published(&self) -> u64 {
        self.statuses().iter().map(|s| s.published).sum()
    }

    /// Crashes node `i`.
    pub fn kill(&self, i: usize) {
        self.nodes[i].control(Control::Kill);
    }

    /// Sends a control command to node `i` (see [`Control`]).
    pub fn control(&self, i: usize, c: Control) {
        self.nodes[i].control(c);
    }

    /// Starts node `i` again after [`Mesh::kill`], as after a power cycle.
    pub async fn revive(&mut self, i: usize) -> std::io::Result<()> {
        self.nodes[i] = self.spawn(i).await?;
        Ok(())
    }

    /// Takes the router down (every node on it loses its association and its broker
    /// connection at once) or brings it back.
    pub fn set_router_up(&self, up: bool) {
        self.radio.set_router_up(up);
        if !up {
            for n in &self.nodes {
                n.control(Control::RouterLost);
            }
        }
    }

    /// Silently breaks every link between nodes `a` and `b` (see [`crate::air`]): both
    /// keep believing they are linked until their keep-alives notice. How many link
    /// ends it broke (0: they had no link).
    pub fn cut(&self, a: usize, b: usize) -> usize {
        self.radio.air().cut(a, b)
    }

    /// Moves node `i` to `(x, y)` metres (positional placements; `None` for a graph):
    /// later scans see the new RSSIs, and whatever it no longer hears is lost as on a
    /// real radio: the router (its broker connection drops at once, as its association
    /// takes the TCP connection with it) and links with nodes out of range (broken
    /// silently; keep-alives notice).
    pub fn move_node(&self, i: usize, x: f64, y: f64) -> Option<crate::radio::Moved> {
        let moved = self.radio.move_node(i, (x, y))?;
        if moved.lost_router {
            self.nodes[i].control(Control::RouterLost);
        }
        Some(moved)
    }

    /// Sets the probability that a mesh frame is lost on the air (and resent after
    /// the timing's `retransmit_delay`), for every link from now on.
    pub fn set_loss(&self, p: f64) {
        self.radio.air().set_loss(p);
    }

    /// Sets the per-hop latency of every mesh frame queued from now on (frames on a
    /// link stay in order).
    pub fn set_hop_latency(&self, d: Duration) {
        self.radio.air().set_hop_latency(d);
    }

    /// Stops or resumes the demo app's publications on every node.
    pub fn set_publishing(&self, on: bool) {
        for n in &self.nodes {
            n.control(Control::Publishing(on));
        }
    }

    /// Milliseconds since the mesh started.
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Waits until `cond` holds for the mesh, or `timeout` passes; whether it held.
    pub async fn wait_for(&self, timeout: Duration, cond: impl Fn(&Mesh) -> bool) -> bool {
        until(timeout, || cond(self)).await
    }

    /// The tree as report rows.
    pub fn rows(&self) -> Vec<NodeRow> {
        self.statuses()
            .into_iter()
            .map(|s| NodeRow {
                id: s.id,
                parent: s.parent,
                depth: s.depth,
                online: s.online,
                chip_id: format!("{:06X}", s.chip_id),
                alive: s.alive,
                children: s.children,
            })
            .collect()
    }

    /// Depth histogram of online nodes: depth → count.
    pub fn depth_histogram(&self) -> BTreeMap<u8, usize> {
        let mut h = BTreeMap::new();
        for s in self.statuses() {
            if let Some(d) = s.depth {
                *h.entry(d).or_default() += 1;
            }
        }
        h
    }

    /// Stops every node (crash semantics).
    pub fn shutdown(&self) {
        for n in &self.nodes {
            n.control(Control::Kill);
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; whether it held.
///
/// For tests and tools waiting on a condition with a deadline (never a bare sleep).
pub async fn until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` distinct non-zero 24-bit chip IDs from `seed`.
pub fn chip_ids(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix(seed ^ 0xC41B_1D5E);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let id = (rng.next() & 0x00FF_FFFF) as u32;
        if id != 0 && seen.insert(id) {
            out.push(id);
        }
    }
    out
}

/// Renders the tree under the router as indented text.
pub fn render_tree(rows: &[NodeRow]) -> String {
    let mut out = String::from("router\n");
    fn walk(
        rows: &[NodeRow],
        parent: &str,
        indent: usize,
        out: &mut String,
        seen: &mut HashSet<String>,
    ) {
        let mut kids: Vec<&NodeRow> = rows
            .iter()
            .filter(|r| r.online && r.parent.as_deref() == Some(parent))
            .collect();
        kids.sort_by(|a, b| a.id.cmp(&b.id));
        for k in kids {
            if !seen.insert(k.id.clone()) {
                continue;
            }
            out.push_str(&format!(
                "{}└─ {} (depth {})\n",
                "   ".repeat(indent),
                k.id,
                k.depth.unwrap_or(0)
            ));
            walk(rows, &k.id, indent + 1, out, seen);
        }
    }
    let mut seen = HashSet::new();
    walk(rows, "router", 0, &mut out, &mut seen);
    let offline: Vec<&str> = rows
        .iter()
        .filter(|r| !r.online)
        .map(|r| r.id.as_str())
        .collect();
    if !offline.is_empty() {
        out.push_str(&format!("offline: {}\n", offline.join(", ")));
    }
    out
}
