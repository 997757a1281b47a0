//! Faults in the real-socket `mqttmesh sim`: node crashes and restarts (the node task
//! dies, its sockets drop without goodbye), router outages, and broker restarts (the
//! Mosquitto process of `--broker mosquitto` is killed and started again on its port),
//! on the wall clock.
//!
//! Heal is judged from the node statuses: every powered node the radio connects to the
//! router is online, and its parent chain runs through powered, online nodes that list
//! it as a child up to the router (a node whose parent died silently still believes it
//! is online until its keep-alives notice). Messages lost and duplicates per fault are
//! the observer's totals over the fault's window (published minus delivered, and repeats);
//! a crashed node that comes back restarts its demo counter at 0, so its first messages
//! after a `crash ... for=` count as duplicates.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use mqttmesh_host::mesh::Mesh;
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
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
    at_start: (u64, u64, u64),
    at_heal: Option<(u64, u64, u64)>,
}

/// The fault schedule of one real-socket run.
pub(super) struct RealFaults {
    faults: Vec<Fault>,
    next: usize,
    pending: Vec<Pending>,
    seed: u64,
}

/// Rejects what the real-socket sim cannot do (yet), before anything starts.
pub(super) fn check(faults: &[Fault], n: usize, mosquitto: bool) -> Result<()> {
    for f in faults {
        match f.kind {
            Kind::Crash(t) | Kind::Restart(t) => {
                if let Target::Index(i) = t {
                    if i >= n {
                        bail!("--fault {:?}: node {i} does not exist (nodes are 0..{n})", f.spec);
                    }
                }
            }
            Kind::RouterDown => {}
            Kind::BrokerRestart if mosquitto => {}
            Kind::BrokerRestart => bail!(
                "--fault {:?}: broker-restart in the real-socket sim needs --broker mosquitto (the sim then stops and restarts that process); or run it with --virtual",
                f.spec
            ),
            _ => bail!(
                "--fault {:?}: the real-socket sim does crash, restart, router-down and broker-restart; run the other kinds with --virtual",
                f.spec
            ),
        }
    }
    Ok(())
}

fn totals(mesh: &Mesh, observer: &Observer) -> (u64, u64, u64) {
    (
        mesh.published(),
        observer.delivered(),
        observer.duplicates(),
    )
}

/// Nodes with a believable path to the broker: online, and every parent up to the
/// router powered, online and listing its child.
fn with_path(statuses: &[NodeStatus]) -> Vec<bool> {
    let by_id: HashMap<&str, usize> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    statuses
        .iter()
        .map(|s| {
            let mut at = s;
            for _ in 0..=statuses.len() {
                if !at.alive || !at.online {
                    return false;
                }
                match at.parent.as_deref() {
                    Some("router") => return true,
                    Some(p) => match by_id.get(p).map(|&i| &statuses[i]) {
                        Some(parent) if parent.children.contains(&at.id) => at = parent,
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
                _ => {}
            }
            p.ended = true;
        }
        while let Some(f) = self.faults.get(self.next).filter(|f| f.at <= elapsed) {
            let statuses = mesh.statuses();
            let salt = self.next as u64 + 1;
            let pick_target = |t: Target| match t {
                Target::Index(i) => Some(i),
                Target::Relay => {
                    let relays: Vec<usize> = (0..statuses.len())
                        .filter(|&i| statuses[i].alive && statuses[i].online)
                        .filter(|&i| !statuses[i].children.is_empty())
                        .collect();
                    (!relays.is_empty()).then(|| relays[pick(self.seed, salt, relays.len())])
                }
            };
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
                _ => None,
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
                at_start: totals(mesh, observer),
                at_heal: None,
            });
            self.next += 1;
        }
        if self.pending.iter().all(|p| p.healed.is_some()) {
            return Ok(());
        }
        let statuses = mesh.statuses();
        let path = with_path(&statuses);
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

    /// The per-fault report (`end`: totals at the end of the run, for unhealed faults).
    pub(super) fn reports(&self, mesh: &Mesh, observer: &Observer) -> Vec<FaultReport> {
        let end = totals(mesh, observer);
        self.pending
            .iter()
            .map(|p| {
                let (p1, d1, u1) = p.at_heal.unwrap_or(end);
                let (p0, d0, u0) = p.at_start;
                FaultReport {
                    fault: self.faults[p.index].spec.clone(),
                    node: p.node.map(|i| mesh.node_id(i)),
                    at_ms: p.start.as_millis() as u64,
                    end_ms: p.end.as_millis() as u64,
                    heal_ms: p.healed.map(|h| h.saturating_sub(p.end).as_millis() as u64),
                    offline_peak: p.offline_peak,
                    messages_lost: (p1 - p0).saturating_sub(d1 - d0),
                    duplicates: u1 - u0,
                }
            })
            .collect()
    }
}
