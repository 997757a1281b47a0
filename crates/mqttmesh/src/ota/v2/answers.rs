//! How the sender reads the nodes' answers (`docs/PROTOCOL.md` "OTA v2", "State
//! report", "Missing window"): state reports move a participant through the upload or
//! end it, missing windows become the next resend, and after `flash` an idle report
//! says whether the node runs the new version.

use mqttmesh_core::ota::v2::{
    Command, ManifestId, Missing, Phase, Reason, Report, MISSING_SUBTOPIC, STATE_SUBTOPIC,
};

use super::Sender;
use crate::ota::bus::{same_version, Msg};
use crate::ota::progress::Outcome;
use anyhow::Result;

impl Sender<'_> {
    /// Any answer, at any time of the transfer.
    pub(super) async fn on_message(&mut self, msg: &Msg) -> Result<()> {
        if !self.peers.contains_key(&msg.node) {
            return Ok(());
        }
        if msg.sub == STATE_SUBTOPIC {
            if let Some(report) = state(msg) {
                self.on_state(&msg.node, report).await?;
            }
        } else if msg.sub == MISSING_SUBTOPIC {
            if let Ok(window) = Missing::decode(&msg.payload) {
                self.on_window(&msg.node, &window).await?;
            }
        }
        Ok(())
    }

    async fn on_state(&mut self, node: &str, report: Report) -> Result<()> {
        let (id, total) = (self.id, self.total);
        if report.subject != id {
            // A checkpoint answer (subject 0): progress only.
            if let Some(peer) = self.peers.get_mut(node) {
                peer.round_answer = false;
                if report.held == id && report.result.is_none() {
                    peer.received = peer.received.max(report.received);
                    self.run.progress.set(node, u64::from(peer.received));
                }
            }
            return Ok(());
        }
        match report.result {
            None => {
                let Some(peer) = self.peers.get_mut(node) else {
                    return Ok(());
                };
                peer.round_answer = true;
                peer.received = report.received;
                self.run.progress.set(node, u64::from(report.received));
                match report.phase {
                    Phase::Verified | Phase::Installing => {
                        peer.verified = true;
                        peer.answered = true;
                        peer.missing.clear();
                        self.run.progress.set(node, u64::from(total));
                        self.run.progress.note(node, "verified");
                    }
                    Phase::Receiving if report.received >= total => peer.answered = true,
                    // Receiving: the missing window follows.
                    Phase::Receiving => {}
                    Phase::Idle => self.reannounce(node).await?,
                }
            }
            // The node lost the upload (restart without progress, abort): start over.
            Some(Reason::UnknownManifest) => self.reannounce(node).await?,
            Some(Reason::HashMismatch) => {
                let retries = self.run.opts.retries;
                let peer = self.peers.entry(node.to_string()).or_default();
                peer.hash_failures += 1;
                if peer.hash_failures > retries {
                    let why = "image SHA-256 mismatch on every attempt".to_string();
                    self.end(node, Outcome::Failed(why));
                } else {
                    self.reannounce(node).await?;
                }
            }
            // A stray chunk refusal is not worth ending a node for; the windows decide.
            Some(Reason::BadChunk) => {}
            Some(reason) => {
                let outcome = refusal(reason, &report);
                self.end(node, outcome);
            }
        }
        Ok(())
    }

    /// Sends the manifest again to one node, then asks its state.
    async fn reannounce(&mut self, node: &str) -> Result<()> {
        self.run.progress.note(node, "announcing again");
        let bytes = self.bytes.clone();
        self.publish(node, Command::Manifest, &bytes).await?;
        self.publish(node, Command::Status { id: Some(self.id) }, &[])
            .await
    }

    async fn on_window(&mut self, node: &str, window: &Missing<'_>) -> Result<()> {
        let total = self.total;
        let Some(peer) = self.peers.get_mut(node) else {
            return Ok(());
        };
        if window.id() != self.id || !peer.round_answer || peer.answered {
            return Ok(());
        }
        let before = peer.gathering.len();
        peer.gathering.extend(window.iter().filter(|&i| i < total));
        let lacking = total.saturating_sub(peer.received) as usize;
        let next = window.first().saturating_add(u32::from(window.count()));
        let grew = peer.gathering.len() > before;
        if window.count() == 0 || peer.gathering.len() >= lacking || !grew || next >= total {
            peer.missing = std::mem::take(&mut peer.gathering);
            peer.known = true;
            peer.answered = true;
            return Ok(());
        }
        // More is missing past this window: ask from where it ended.
        let status = Command::Status { id: Some(self.id) };
        self.publish(node, status, &next.to_be_bytes()).await
    }
}

/// What a state report after `flash` says about the outcome, if anything.
pub(super) fn after_flash(msg: &Msg, id: ManifestId, version: &str) -> Option<Outcome> {
    let report = state(msg)?;
    match report.result {
        None if report.phase == Phase::Idle => Some(if same_version(&report.version, version) {
            Outcome::Updated(report.version.to_string())
        } else {
            Outcome::Failed(format!("rolled back to v{}", report.version))
        }),
        None | Some(Reason::UnknownManifest) => None,
        Some(reason) if report.subject == id => {
            Some(Outcome::Failed(format!("flash refused: {reason}")))
        }
        Some(_) => None,
    }
}

/// A state report, if `msg` is one.
pub(super) fn state(msg: &Msg) -> Option<Report> {
    (msg.sub == STATE_SUBTOPIC)
        .then(|| Report::decode(&msg.payload).ok())
        .flatten()
}

/// The outcome of a refused manifest.
pub(super) fn refusal(reason: Reason, report: &Report) -> Outcome {
    match reason {
        Reason::Busy => Outcome::Refused(format!(
            "{reason} ({}, {}/{} chunks); abort it or let it finish",
            report.held, report.received, report.total
        )),
        Reason::Downgrade => Outcome::Refused(format!(
            "{reason}: it runs v{}; sign with --allow-downgrade to force",
            report.version
        )),
        Reason::Unsigned => Outcome::Refused(format!("{reason}; the node has a key: pass --key")),
        Reason::BadSignature => {
            Outcome::Refused(format!("{reason}; the node has another public key"))
        }
        Reason::WrongFirmware => Outcome::Refused(format!("{reason}; check --id")),
        _ => Outcome::Refused(reason.to_string()),
    }
}
