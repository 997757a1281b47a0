//! Faults in the real-socket `mqttmesh sim`, on the wall clock, with the meaning they
//! have in the virtual sim (`faults_virtual`): node crashes and restarts (the node task
//! dies, its sockets drop without goodbye), cut parent links (both ends silenced, see
//! `mqttmesh_host::air`), router outages, broker restarts (the Mosquitto process of
//! `--broker mosquitto` is killed and started again on its port), loss and per-hop
//! latency on the emulated air (every link writer reads them per frame), and nodes
//! moving (new RSSIs for later scans; the router and links out of range are lost).
//!
//! Heal is judged from the node statuses: every powered node the radio connects to the
//! router is online, and its parent chain runs through powered, online nodes that list
//! it as a child, over parent links that are not broken, up to a root associated with
//! the router (a node whose parent died or whose link was cut silently still believes
//! it is online until its keep-alives notice). Messages lost per fault are the demo
//! counters published from the fault until the heal that had not arrived when the run
//! ended; duplicates are the observer's repeats over that window. A crashed node that
//! comes back restarts its demo counter at 0, so its first messages after a
//! `crash ... for=` count as duplicates.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use mqttmesh_host::mesh::Mesh;
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::radio::{Placement, Radio};
use mqttmesh_host::runtime::NodeStatus;

use super::faults::{pick, Fault, FaultReport, Kind, Target};

struct Pending {
    index: usize,
    node: Option<usize>,
    start: Duration,
    end: Duration,
    ended: bool,
    healed: Option<Duration>,
    offline_peak: usize,
    /// Loss and hop latency to restore at the end (`loss`/`latency` with `for=`).
    restore: Option<(f64, Duration)>,
    /// Demo messages each node had published, and the observer's duplicates, when the
    /// fault happened and when it healed.
    at_start: (Vec<u64>, u64),
    at_heal: Option<(Vec<u64>, u64)>,
}

/// The fault schedule of one real-socket run.
pub(super) struct RealFaults {
    faults: Vec<Fault>,
    next: usize,
    pending: Vec<Pending>,
    seed: u64,
}

/// Rejects what the real-socket sim cannot do, before anything starts.
pub(super) fn check(faults: &[Fault], placement: &Placement, mosquitto: bool) -> Result<()> {
    let n = placement.len();
    for f in faults {
        match f.kind {
            Kind::Crash(Target::Index(i))
            | Kind::Restart(Target::Index(i))
            | Kind::Cut(Target::Index(i))
            | Kind::Move(Target::Index(i), ..)
                if i >= n =>
            {
                bail!(
                    "--fault {:?}: node {i} does not exist (nodes are 0..{n})",
                    f.spec
                )
            }
            Kind::Move(..) if matches!(placement, Placement::Graph { .. }) => bail!(
                "--fault {:?}: move needs a positional topology (line, grid, random or a positions file)",
                f.spec
            ),
            Kind::BrokerRestart if !mosquitto => bail!(
                "--fault {:?}: broker-restart in the real-socket sim needs --broker mosquitto (the sim then stops and restarts that process); or run it with --virtual",
                f.spec
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Demo messages published by each node so far, and the observer's duplicates.
fn totals(mesh: &Mesh, observer: &Observer) -> (Vec<u64>, u64) {
    (
        mesh.statuses().iter().map(|s| s.published).collect(),
        observer.duplicates(),
    )
}

/// Nodes with a real path to the broker: online, every parent up to the router powered,
/// online and listing its child over a link that is not broken, and the root on the
/// router.
fn with_path(statuses: &[NodeStatus], radio: &Radio) -> Vec<bool> {
    let by_id: HashMap<&str, usize> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let broken = radio.air().broken_parents();
    statuses
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (mut at, mut idx) = (s, i);
            for _ in 0..=statuses.len() {
                if !at.alive || !at.online {
                    return false;
                }
                match at.parent.as_deref() {
                    Some("router") => return radio.broker_reachable(idx),
                    Some(p) => match by_id.get(p).map(|&i| (i, &statuses[i])) {
                        Some((i, parent))
                            if parent.children.contains(&at.id) && !broken.contains(&idx) =>
                        {
                            (at, idx) = (parent, i);
                        }
                        _ => return false,
                    },
                    None => return false,
                }
            }
            false
        })
        .collect()
}

/// Powered nodes the radio connects to the router through powered nodes.
fn reachable(mesh: &Mesh, statuses: &[NodeStatus], router_up: bool) -> Vec<bool> {
    let radio = mesh.radio();
    let n = statuses.len();
    let mut seen = vec![false; n];
    if !router_up {
        return seen;
    }
    let mut queue: VecDeque<usize> = (0..n)
        .filter(|&i| statuses[i].alive && radio.rssi_router(i).is_some())
        .collect();
    for &i in &queue {
        seen[i] = true;
    }
    while let Some(i) = queue.pop_front() {
        for j in 0..n {
            if !seen[j] && statuses[j].alive && radio.rssi(i, j).is_some() {
                seen[j] = true;
                queue.push_back(j);
            }
        }
    }
    seen
}

impl RealFaults {
    pub(super) fn new(faults: Vec<Fault>, seed: u64) -> RealFaults {
        RealFaults {
            faults,
            next: 0,
            pending: Vec::new(),
            seed,
        }
    }

    /// When the last fault ends.
    pub(super) fn last_end(&self) -> Option<Duration> {
        self.faults.iter().map(Fault::end).max()
    }

    /// Whether every fault happened and healed.
    pub(super) fn done(&self) -> bool {
        self.next == self.faults.len() && self.pending.iter().all(|p| p.healed.is_some())
    }

    /// Injects due faults, ends finished ones, checks heals; call about every 100 ms.
    pub(super) async fn tick(
        &mut self,
        mesh: &mut Mesh,
        observer: &Observer,
        router_up: &mut bool,
        mut mosquitto: Option<&mut Mosquitto>,
        elapsed: Duration,
    ) -> Result<()> {
        for p in self
            .pending
            .iter_mut()
            .filter(|p| !p.ended && p.end <= elapsed)
        {
            match self.faults[p.index].kind {
                Kind::Crash(_) => {
                    if let Some(i) = p.node {
                        mesh.revive(i).await?;
                    }
                }
                Kind::RouterDown => {
                    mesh.set_router_up(true);
                    *router_up = true;
                }
                Kind::BrokerRestart => {
                    if let Some(m) = mosquitto.as_deref_mut() {
                        // Waits (up to a few seconds) until it answers MQTT again.
                        tokio::task::block_in_place(|| m.restart())
                            .map_err(|e| anyhow!("cannot restart Mosquitto: {e}"))?;
                    }
                }
                Kind::Loss(_) | Kind::Latency(_) => {
                    if let Some((loss, latency)) = p.restore {
                        mesh.set_loss(loss);
                        mesh.set_hop_latency(latency);
                    }
                }
                _ => {}
            }
            p.ended = true;
        }
        while let Some(f) = self.faults.get(self.next).filter(|f| f.at <= elapsed) {
            let statuses = mesh.statuses();
            let salt = self.next as u64 + 1;
            // A relay is a node with children; with `below_root`, one whose parent is a
            // node (a link to cut), as in the virtual sim.
            let pick_relay = |t: Target, below_root: bool| match t {
                Target::Index(i) => Some(i),
                Target::Relay => {
                    let relays: Vec<usize> = (0..statuses.len())
                        .filter(|&i| statuses[i].alive && statuses[i].online)
                        .filter(|&i| !statuses[i].children.is_empty())
                        .filter(|&i| {
                            !below_root
                                || statuses[i].parent.as_deref().is_some_and(|p| p != "router")
                        })
                        .collect();
                    (!relays.is_empty()).then(|| relays[pick(self.seed, salt, relays.len())])
                }
            };
            let pick_target = |t: Target| pick_relay(t, false);
            let air = mesh.radio().air().clone();
            let mut restore = None;
            let node = match f.kind {
                Kind::Crash(t) => {
                    let i = pick_target(t);
                    if let Some(i) = i {
                        mesh.kill(i);
                    }
                    i
                }
                Kind::Restart(t) => {
                    let i = pick_target(t);
                    if let Some(i) = i {
                        mesh.kill(i);
                        mesh.revive(i).await?;
                    }
                    i
                }
                Kind::RouterDown => {
                    mesh.set_router_up(false);
                    *router_up = false;
                    None
                }
                Kind::BrokerRestart => {
                    if let Some(m) = mosquitto.as_deref_mut() {
                        m.stop();
                    }
                    None
                }
                Kind::Cut(t) => {
                    let i = pick_relay(t, true);
                    let parent = i.and_then(|i| statuses[i].parent.as_deref());
                    let parent = parent.and_then(|p| statuses.iter().position(|s| s.id == p));
                    if let (Some(i), Some(p)) = (i, parent) {
                        mesh.cut(p, i);
                    }
                    i
                }
                Kind::Loss(p) => {
                    if f.duration.is_some() {
                        restore = Some((air.loss(), air.hop_latency()));
                    }
                    mesh.set_loss(p);
                    None
                }
                Kind::Latency(d) => {
                    if f.duration.is_some() {
                        restore = Some((air.loss(), air.hop_latency()));
                    }
                    mesh.set_hop_latency(d);
                    None
                }
                Kind::Move(t, x, y) => {
                    let i = pick_target(t);
                    if let Some(i) = i {
                        mesh.move_node(i, x, y);
                    }
                    i
                }
            };
            eprintln!(
                "[{:>6.1}s] fault: {}{}",
                elapsed.as_secs_f64(),
                f.spec,
                node.map(|i| format!(" (node {})", mesh.node_id(i)))
                    .unwrap_or_default()
            );
            self.pending.push(Pending {
                index: self.next,
                node,
                start: elapsed,
                end: elapsed + f.duration.unwrap_or(Duration::ZERO),
                ended: f.duration.is_none(),
                healed: None,
                offline_peak: 0,
                restore,
                at_start: totals(mesh, observer),
                at_heal: None,
            });
            self.next += 1;
        }
        if self.pending.iter().all(|p| p.healed.is_some()) {
            return Ok(());
        }
        let statuses = mesh.statuses();
        let path = with_path(&statuses, mesh.radio());
        let reach = reachable(mesh, &statuses, *router_up);
        let up = path.iter().filter(|p| **p).count();
        let all = reach.iter().zip(&path).all(|(r, p)| !r || *p);
        for p in self.pending.iter_mut().filter(|p| p.healed.is_none()) {
            p.offline_peak = p.offline_peak.max(statuses.len() - up);
            if p.ended && all {
                p.healed = Some(elapsed);
                p.at_heal = Some(totals(mesh, observer));
            }
        }
        Ok(())
    }

    /// The per-fault report (unhealed faults count until the end of the run). Call it
    /// once the messages in flight have had time to arrive.
    pub(super) fn reports(&self, mesh: &Mesh, observer: &Observer) -> Vec<FaultReport> {
        let end = totals(mesh, observer);
        self.pending
            .iter()
            .map(|p| {
                let (p1, u1) = p.at_heal.as_ref().unwrap_or(&end);
                let (p0, u0) = &p.at_start;
                // A node that crashed and came back in the window counts from 0 again.
                let lost = p0
                    .iter()
                    .zip(p1)
                    .enumerate()
                    .map(|(i, (&from, &to))| {
                        let from = if to >= from { from } else { 0 };
                        observer.missing_from(&mesh.node_id(i), from..to)
                    })
                    .sum();
                FaultReport {
                    fault: self.faults[p.index].spec.clone(),
                    node: p.node.map(|i| mesh.node_id(i)),
                    at_ms: p.start.as_millis() as u64,
                    end_ms: p.end.as_millis() as u64,
                    heal_ms: p.healed.map(|h| h.saturating_sub(p.end).as_millis() as u64),
                    offline_peak: p.offline_peak,
                    messages_lost: lost,
                    duplicates: u1 - u0,
                }
            })
            .collect()
    }
}
