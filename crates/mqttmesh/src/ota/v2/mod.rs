//! The v2 sender (`docs/PROTOCOL.md` "OTA v2", "Sender"): announce the manifest, stream
//! every chunk once to all participants at a paced rate, then rounds of `status` →
//! missing windows → resend of their union, until every participant is verified; then
//! `flash`, and wait for each node to come back idle with the new version.
//!
//! Mid-stream checkpoints (every 2 s) ask `status` without an upload ID: their state
//! reports carry subject 0, which tells them (and the missing window that follows each)
//! apart from the answers of a round, which name the upload. Checkpoints only move the
//! bars. How answers are read is in [`answers`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Result};
use mqttmesh_core::ota::v2::{Command, Manifest, ManifestId, Phase};
use tokio::time::Instant;

use super::firmware::Firmware;
use super::progress::Outcome;
use super::run::{Run, Targets};
use answers::{after_flash, refusal, state};

mod answers;

/// A checkpoint `status` this often while streaming (for the bars).
const CHECKPOINT: Duration = Duration::from_secs(2);
/// Slowest the sender goes when nodes keep losing chunks.
const MIN_RATE: f64 = 5.0;
/// Loss (missing ÷ sent, worst node) above which the rate halves.
const LOSS_SLOWDOWN: f64 = 0.02;

/// What the sender knows about one participant.
#[derive(Debug, Default)]
struct Peer {
    received: u32,
    verified: bool,
    /// Chunks it reported missing (`known`), to send in the next burst.
    missing: BTreeSet<u32>,
    /// `missing` is current (from this round's windows).
    known: bool,
    /// Chunks sent to it in the last burst, for the loss estimate.
    sent: u32,
    /// The last state report named this upload (a window that follows belongs to a round).
    round_answer: bool,
    /// Windows of this round, gathered until they cover all it lacks.
    gathering: BTreeSet<u32>,
    answered: bool,
    silent: u32,
    stalled: u32,
    hash_failures: u32,
}

/// Runs the exchange; every participant ends with an outcome in `run`.
pub async fn upload(run: &mut Run, fw: &Firmware, manifest: Manifest) -> Result<()> {
    let mut s = Sender {
        id: manifest.id(),
        bytes: manifest.to_bytes().to_vec(),
        total: manifest.chunk_count(),
        rate: run.opts.rate,
        manifest,
        image: &fw.bytes,
        peers: BTreeMap::new(),
        participants: BTreeSet::new(),
        run,
    };
    s.announce(fw).await?;
    s.transfer().await?;
    s.flash().await
}

struct Sender<'a> {
    run: &'a mut Run,
    manifest: Manifest,
    bytes: Vec<u8>,
    id: ManifestId,
    total: u32,
    image: &'a [u8],
    peers: BTreeMap<String, Peer>,
    participants: BTreeSet<String>,
    rate: f64,
}

impl Sender<'_> {
    async fn publish(&mut self, level: &str, command: Command, payload: &[u8]) -> Result<()> {
        let topic = command
            .topic(&self.run.bus.in_prefix, level)
            .map_err(|e| anyhow::anyhow!("cannot address {level:?}: {e}"))?;
        self.run.bus.publish(&topic, payload).await
    }

    /// Where a command for all remaining participants goes: the firmware ID while every
    /// participant is still in, else each one's ID.
    fn levels(&self) -> Vec<String> {
        let left: BTreeSet<String> = self.peers.keys().cloned().collect();
        match &self.run.targets {
            Targets::Firmware(fw) if left == self.participants => vec![fw.clone()],
            _ => left.into_iter().collect(),
        }
    }

    fn end(&mut self, node: &str, outcome: Outcome) {
        self.peers.remove(node);
        self.run.end(node, outcome);
    }

    async fn announce(&mut self, fw: &Firmware) -> Result<()> {
        self.run.progress.phase("manifest");
        let (id, bytes, in_prefix) = (self.id, self.bytes.clone(), self.run.bus.in_prefix.clone());
        let peers = &mut self.peers;
        let joined = self
            .run
            .discover(
                async |bus, levels| {
                    for level in levels {
                        let topic = Command::Manifest
                            .topic(&in_prefix, level)
                            .map_err(|e| anyhow::anyhow!("cannot address {level:?}: {e}"))?;
                        bus.publish(&topic, &bytes).await?;
                    }
                    Ok(())
                },
                |run, msg| {
                    let report = state(msg).filter(|r| r.subject == id)?;
                    if let Some(reason) = report.result {
                        run.end(&msg.node, refusal(reason, &report));
                        return Some(false);
                    }
                    let peer = Peer {
                        received: report.received,
                        verified: matches!(report.phase, Phase::Verified | Phase::Installing),
                        ..Peer::default()
                    };
                    peers.insert(msg.node.clone(), peer);
                    Some(true)
                },
            )
            .await?;
        for node in &joined {
            let received = self.peers.get(node).map_or(0, |p| p.received);
            self.run.progress.add(node);
            self.run.progress.set(node, u64::from(received));
        }
        self.participants = joined;
        if self.participants.is_empty() && !self.run.any_ended() {
            bail!(
                "no node answered the manifest within {} s: is --id {} right? are the nodes \
                 online? try `mqttmesh topology`",
                self.run.opts.discover.as_secs(),
                fw.target()
            );
        }
        for peer in self.peers.values_mut() {
            if peer.received == 0 && !peer.verified {
                peer.missing = (0..self.total).collect();
                peer.known = true;
            }
        }
        Ok(())
    }

    async fn transfer(&mut self) -> Result<()> {
        let mut round = 0;
        loop {
            let to_send: BTreeSet<u32> = self
                .peers
                .values()
                .filter(|p| !p.verified && p.known)
                .flat_map(|p| p.missing.iter().copied())
                .collect();
            if self.peers.values().all(|p| p.verified) {
                return Ok(());
            }
            round += 1;
            if !to_send.is_empty() {
                let what = if round == 1 { "streaming" } else { "resending" };
                let phase = format!("{what} {} chunks at {:.0}/s", to_send.len(), self.rate);
                self.run.progress.phase(&phase);
                for peer in self.peers.values_mut() {
                    peer.sent = if peer.known {
                        peer.missing.len() as u32
                    } else {
                        0
                    };
                }
                self.stream(&to_send).await?;
            }
            self.run.progress.phase(&format!("status round {round}"));
            let before: BTreeMap<String, u32> = self
                .peers
                .iter()
                .map(|(n, p)| (n.clone(), p.received))
                .collect();
            self.status_round().await?;
            self.after_round(&before);
        }
    }

    /// Sends `chunks` at the current rate, reading answers in between.
    async fn stream(&mut self, chunks: &BTreeSet<u32>) -> Result<()> {
        let period = Duration::from_secs_f64(1.0 / self.rate);
        let levels = self.levels();
        let mut next = Instant::now();
        let mut last_checkpoint = next;
        for &index in chunks {
            // Read what came in, then wait for the chunk's turn (reading meanwhile).
            while let Some(msg) = self.run.bus.try_recv().await? {
                self.on_message(&msg).await?;
            }
            while let Some(msg) = self.run.bus.recv_until(next).await? {
                self.on_message(&msg).await?;
            }
            let Some(chunk) = self.manifest.chunk(self.image, index) else {
                continue;
            };
            let chunk = chunk.to_vec();
            for level in &levels {
                self.publish(level, Command::Chunk { id: self.id, index }, &chunk)
                    .await?;
            }
            if last_checkpoint.elapsed() >= CHECKPOINT {
                last_checkpoint = Instant::now();
                for level in &levels {
                    self.publish(level, Command::Status { id: None }, &[])
                        .await?;
                }
            }
            self.run.progress.tick();
            // Never catch up in a burst after a stall (the broker or our reader).
            next = (next + period).max(Instant::now() - period);
        }
        Ok(())
    }

    /// Asks every unverified participant for its state and missing chunks, and waits
    /// until each answered completely or `--timeout` passed.
    async fn status_round(&mut self) -> Result<()> {
        for peer in self.peers.values_mut() {
            peer.answered = peer.verified;
            peer.known = false;
            peer.gathering.clear();
        }
        // Verified nodes named by a firmware ID target answer too: harmless.
        let asked = self.levels();
        for level in &asked {
            self.publish(level, Command::Status { id: Some(self.id) }, &[])
                .await?;
        }
        let deadline = Instant::now() + self.run.opts.timeout;
        while self.peers.values().any(|p| !p.answered) {
            self.run.progress.tick();
            let Some(msg) = self.run.bus.recv_until(deadline).await? else {
                break;
            };
            self.on_message(&msg).await?;
        }
        Ok(())
    }

    /// Silence, stalls and the rate, after a round.
    fn after_round(&mut self, before: &BTreeMap<String, u32>) {
        let retries = self.run.opts.retries;
        let mut worst_loss: f64 = 0.0;
        let mut ended = Vec::new();
        for (node, peer) in self.peers.iter_mut() {
            if !peer.answered {
                peer.silent += 1;
                self.run
                    .progress
                    .note(node, &format!("silent {}", peer.silent));
                if peer.silent > retries {
                    let why = format!("no answer to {} status rounds", peer.silent);
                    ended.push((node.clone(), Outcome::Unreachable(why)));
                }
                continue;
            }
            peer.silent = 0;
            if peer.verified {
                continue;
            }
            if peer.sent > 0 {
                let lost = peer.missing.len() as f64 / f64::from(peer.sent);
                worst_loss = worst_loss.max(lost);
            }
            // Answering without getting anywhere (also bounds rounds with nothing to send).
            if before.get(node).is_some_and(|&b| peer.received <= b) {
                peer.stalled += 1;
                if peer.stalled > retries {
                    let why = format!("no progress in {} rounds of resends", peer.stalled);
                    ended.push((node.clone(), Outcome::Failed(why)));
                }
            } else {
                peer.stalled = 0;
            }
        }
        for (node, outcome) in ended {
            self.end(&node, outcome);
        }
        self.rate = if worst_loss > LOSS_SLOWDOWN {
            (self.rate / 2.0).max(MIN_RATE)
        } else if worst_loss == 0.0 {
            (self.rate * 1.25).min(self.run.opts.rate)
        } else {
            self.rate
        };
    }

    /// `flash` to every verified participant, then waits for each to come back idle
    /// with the new version. Until then each is asked again every 2 s: `flash` (a node
    /// that did not get it installs now; one that already restarted answers
    /// `UnknownManifest`, which is ignored) and `status`.
    async fn flash(&mut self) -> Result<()> {
        let verified: BTreeSet<String> = self.peers.keys().cloned().collect();
        if verified.is_empty() {
            return Ok(());
        }
        self.run
            .progress
            .phase("flash, waiting for the nodes to come back");
        for level in self.levels() {
            self.publish(&level, Command::Flash { id: self.id }, &[])
                .await?;
        }
        let (id, version) = (self.id, self.manifest.version.to_string());
        let in_prefix = self.run.bus.in_prefix.clone();
        self.run
            .await_boot(
                verified,
                &version,
                async |bus, waiting| {
                    for node in waiting {
                        for command in [Command::Flash { id }, Command::Status { id: None }] {
                            let topic = command
                                .topic(&in_prefix, node)
                                .map_err(|e| anyhow::anyhow!("cannot address {node:?}: {e}"))?;
                            bus.publish(&topic, &[]).await?;
                        }
                    }
                    Ok(())
                },
                |msg| after_flash(msg, id, &version),
            )
            .await
    }
}
