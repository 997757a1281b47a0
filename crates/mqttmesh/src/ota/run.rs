//! One upload in progress ([`Run`]): whom it addresses, the bus, the bars and how each
//! node ended, and the two waits both exchanges share: collecting the participants,
//! and waiting for each to come back running the new version after `flash`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use super::bus::{fw_version, same_version, Bus, Msg};
use super::progress::{Ended, Outcome, Progress};

/// With a firmware ID target, discovery ends this long after the last new answer, or as
/// long as the first answer took if that is longer (answers come after an erase, which
/// takes about as long on every node).
const DISCOVER_QUIET: Duration = Duration::from_secs(3);
/// While waiting for nodes to come back, ask them this often.
const POKE_EVERY: Duration = Duration::from_secs(2);

/// Whom an upload addresses.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Every node running the firmware ID (hex, the `<target>` topic level).
    Firmware(String),
    /// These nodes, each addressed by its ID.
    Nodes(BTreeSet<String>),
}

impl Targets {
    /// The `<target>` levels to publish a command for everyone to.
    pub fn levels(&self) -> Vec<String> {
        match self {
            Targets::Firmware(fw) => vec![fw.clone()],
            Targets::Nodes(ids) => ids.iter().cloned().collect(),
        }
    }

    /// Whether answers from `node` count.
    pub fn covers(&self, node: &str) -> bool {
        match self {
            Targets::Firmware(_) => true,
            Targets::Nodes(ids) => ids.contains(node),
        }
    }
}

/// Settings of the drivers.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Wait for an answer before asking again.
    pub timeout: Duration,
    /// Questions a silent node gets before it is unreachable.
    pub retries: u32,
    /// Longest discovery.
    pub discover: Duration,
    /// Longest wait for a node to come back after `flash`.
    pub boot_timeout: Duration,
    /// v2: most chunks per second.
    pub rate: f64,
}

/// One upload in progress: the bus, the display and how each node ended.
#[derive(Debug)]
pub struct Run {
    /// MQTT.
    pub bus: Bus,
    /// Bars.
    pub progress: Progress,
    /// Whom.
    pub targets: Targets,
    /// Settings.
    pub opts: Opts,
    ended: BTreeMap<String, Ended>,
}

impl Run {
    /// An upload with no outcome yet.
    pub fn new(bus: Bus, progress: Progress, targets: Targets, opts: Opts) -> Run {
        Run {
            bus,
            progress,
            targets,
            opts,
            ended: BTreeMap::new(),
        }
    }

    /// Whether any node has an outcome.
    pub fn any_ended(&self) -> bool {
        !self.ended.is_empty()
    }

    /// The bus, and how each node ended, by node ID.
    pub fn finish(self) -> (Bus, Vec<Ended>) {
        (self.bus, self.ended.into_values().collect())
    }

    /// Records how `node` ended (the first outcome stands).
    pub fn end(&mut self, node: &str, outcome: Outcome) {
        if self.ended.contains_key(node) {
            return;
        }
        self.progress.finish(node, &outcome);
        let after = self.progress.elapsed();
        let node = node.to_string();
        self.ended.insert(
            node.clone(),
            Ended {
                node,
                outcome,
                after,
            },
        );
    }

    /// Collects participants: `ask` publishes the opening command to the given target
    /// levels, `accept` reads an answer (`Some(true)`: takes part, `Some(false)`:
    /// answered but ended, `None`: not an answer). The opening command is repeated every
    /// 3 s to named nodes that have not answered; discovery ends when all named nodes
    /// answered, [`DISCOVER_QUIET`] after the last new answer, or after `--discover`.
    pub async fn discover<F, A>(&mut self, mut ask: A, mut accept: F) -> Result<BTreeSet<String>>
    where
        A: AsyncFnMut(&mut Bus, &[String]) -> Result<()>,
        F: FnMut(&mut Run, &Msg) -> Option<bool>,
    {
        let start = Instant::now();
        let end = start + self.opts.discover;
        let mut quiet_end = end;
        let mut first_answer = None;
        let mut next_ask = start;
        let mut asked = false;
        let mut answered = BTreeSet::new();
        let mut joined = BTreeSet::new();
        loop {
            let now = Instant::now();
            if now >= next_ask {
                // A firmware ID target is asked once: a repeated compat `start` would
                // erase the nodes that already answered.
                let levels: Vec<String> = match &self.targets {
                    Targets::Nodes(ids) => ids.difference(&answered).cloned().collect(),
                    Targets::Firmware(_) if !asked => self.targets.levels(),
                    Targets::Firmware(_) => Vec::new(),
                };
                asked = true;
                if !levels.is_empty() {
                    ask(&mut self.bus, &levels).await?;
                }
                next_ask = now + DISCOVER_QUIET;
            }
            let Some(msg) = self.bus.recv_until(next_ask.min(quiet_end)).await? else {
                if Instant::now() >= quiet_end {
                    break;
                }
                continue;
            };
            if !self.targets.covers(&msg.node) || answered.contains(&msg.node) {
                continue;
            }
            let Some(takes_part) = accept(self, &msg) else {
                continue;
            };
            answered.insert(msg.node.clone());
            if takes_part {
                joined.insert(msg.node.clone());
                self.progress.add(&msg.node);
            }
            quiet_end = match &self.targets {
                Targets::Nodes(ids) if ids.is_subset(&answered) => Instant::now(),
                Targets::Nodes(_) => end,
                Targets::Firmware(_) => {
                    let quiet = DISCOVER_QUIET.max(*first_answer.get_or_insert(start.elapsed()));
                    (Instant::now() + quiet).min(end)
                }
            };
        }
        if let Targets::Nodes(ids) = &self.targets {
            for id in ids.clone().difference(&answered) {
                let secs = self.opts.discover.as_secs();
                self.end(
                    id,
                    Outcome::Unreachable(format!("no answer within {secs} s")),
                );
            }
        }
        Ok(joined)
    }

    /// After `flash`: waits until each of `waiting` reports `version` in a `fw` answer
    /// (or `classify` decides from another answer), asking with `poke` every 2 s.
    /// Nodes still missing after `--boot-timeout` are unreachable.
    pub async fn await_boot<P, C>(
        &mut self,
        mut waiting: BTreeSet<String>,
        version: &str,
        mut poke: P,
        mut classify: C,
    ) -> Result<()>
    where
        P: AsyncFnMut(&mut Bus, &BTreeSet<String>) -> Result<()>,
        C: FnMut(&Msg) -> Option<Outcome>,
    {
        let end = Instant::now() + self.opts.boot_timeout;
        let mut next_poke = Instant::now() + POKE_EVERY;
        let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
        while !waiting.is_empty() && Instant::now() < end {
            if Instant::now() >= next_poke {
                self.bus.fw_query().await?;
                poke(&mut self.bus, &waiting).await?;
                next_poke = Instant::now() + POKE_EVERY;
            }
            self.progress.tick();
            let Some(msg) = self.bus.recv_until(next_poke.min(end)).await? else {
                continue;
            };
            if !waiting.contains(&msg.node) {
                continue;
            }
            let outcome = if msg.sub == "fw" {
                let seen = fw_version(&msg.payload);
                match seen {
                    Some(v) if same_version(&v, version) => Some(Outcome::Updated(v)),
                    Some(v) => {
                        last_seen.insert(msg.node.clone(), v);
                        None
                    }
                    None => None,
                }
            } else {
                classify(&msg)
            };
            if let Some(outcome) = outcome {
                waiting.remove(&msg.node);
                self.end(&msg.node, outcome);
            }
        }
        let secs = self.opts.boot_timeout.as_secs();
        for node in waiting {
            let outcome = match last_seen.get(&node) {
                Some(v) => Outcome::Failed(format!("still runs v{v} {secs} s after flash")),
                None => Outcome::Unreachable(format!("not back within {secs} s after flash")),
            };
            self.end(&node, outcome);
        }
        Ok(())
    }
}
