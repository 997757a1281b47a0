//! The uploader's MQTT side: one [`Watcher`] subscribed to the nodes' answers, messages
//! split into node ID and subtopic, and waiting with a deadline.

use anyhow::{anyhow, Result};
use mqttmesh_host::view::command::fw_query_topic;
use mqttmesh_host::view::watch::{WatchEvent, Watcher};
use tokio::time::Instant;

use crate::brokerflags::BrokerFlags;

/// An answer from a node: `<out><node>/<sub>`.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Node ID.
    pub node: String,
    /// What follows the node ID, e.g. `ota/erase`.
    pub sub: String,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Msg {
    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A connected uploader.
#[derive(Debug)]
pub struct Bus {
    watcher: Watcher,
    /// Prefix of topics to nodes.
    pub in_prefix: String,
    out_prefix: String,
}

impl Bus {
    /// Connects and subscribes to `<out>` + each of `filters`.
    pub async fn connect(flags: &BrokerFlags, role: &str, filters: &[&str]) -> Result<Bus> {
        let out = &flags.out_topic;
        let filters: Vec<String> = filters.iter().map(|f| format!("{out}{f}")).collect();
        let watcher = flags.connect(role, &filters).await?;
        Ok(Bus {
            watcher,
            in_prefix: flags.in_topic.clone(),
            out_prefix: out.clone(),
        })
    }

    /// Publishes (QoS 1, not retained).
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<()> {
        tracing::debug!(topic, len = payload.len(), "publish");
        self.watcher
            .publish(topic, payload, false)
            .await
            .map_err(|e| anyhow!("{e}; is the broker still running?"))
    }

    /// Asks every node for its firmware (`<in>fw/mqttmesh`; answers on `<out><ID>/fw`).
    pub async fn fw_query(&mut self) -> Result<()> {
        let topic = fw_query_topic(&self.in_prefix);
        self.publish(&topic, &[]).await
    }

    /// The next live answer, or `None` once `deadline` passed (even while messages
    /// keep coming, so a chatty mesh cannot hold a wait open). Retained messages are
    /// skipped: they describe the past, not answers to this upload.
    pub async fn recv_until(&mut self, deadline: Instant) -> Result<Option<Msg>> {
        self.next(Some(deadline)).await
    }

    /// An answer that has already arrived, if any (never waits).
    pub async fn try_recv(&mut self) -> Result<Option<Msg>> {
        self.next(None).await
    }

    async fn next(&mut self, deadline: Option<Instant>) -> Result<Option<Msg>> {
        loop {
            let event = match deadline {
                Some(deadline) if Instant::now() >= deadline => return Ok(None),
                Some(deadline) => tokio::select! {
                    biased;
                    e = self.watcher.recv() => e,
                    _ = tokio::time::sleep_until(deadline) => return Ok(None),
                },
                None => tokio::select! {
                    biased;
                    e = self.watcher.recv() => e,
                    _ = std::future::ready(()) => return Ok(None),
                },
            };
            match event {
                Some(WatchEvent::Message(d)) if !d.retained => {
                    if let Some(msg) = self.split(&d.topic, d.payload) {
                        return Ok(Some(msg));
                    }
                }
                Some(WatchEvent::Connection { up, detail }) => {
                    tracing::warn!(up, detail, "broker connection");
                }
                Some(_) => {}
                None => {
                    return Err(anyhow!(
                        "lost the connection to the broker at {}",
                        self.watcher.address()
                    ))
                }
            }
        }
    }

    fn split(&self, topic: &str, payload: Vec<u8>) -> Option<Msg> {
        let (node, sub) = topic.strip_prefix(&self.out_prefix)?.split_once('/')?;
        Some(Msg {
            node: node.to_string(),
            sub: sub.to_string(),
            payload,
        })
    }

    /// Waits (briefly) for the broker to take everything published, then disconnects.
    pub async fn close(mut self) {
        let _ = self.watcher.flush(std::time::Duration::from_secs(2)).await;
        self.watcher.disconnect().await;
    }
}

/// The version in a `fw` answer `ChipID:… FirmwareID:… v<version> IP:…[ mesh]`.
pub fn fw_version(payload: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(payload).ok()?;
    let (_, rest) = s.split_once(" FirmwareID:")?;
    let (_, rest) = rest.split_once(' ')?;
    let (version, _) = rest.strip_prefix('v')?.rsplit_once(" IP:")?;
    Some(version.to_string())
}

/// Whether two versions are the same (`1.2` = `v1.2.0`).
pub fn same_version(a: &str, b: &str) -> bool {
    mqttmesh_core::ota::v2::compare_versions(a, b) == Some(std::cmp::Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fw_answers_give_their_version() {
        let line = b"ChipID:00A1B2 FirmwareID:1337 v0.2 IP:10.1.1.2";
        assert_eq!(fw_version(line).as_deref(), Some("0.2"));
        let line = b"ChipID:00A1B2 FirmwareID:1337 v1.0 beta IP:10.1.1.2 mesh";
        assert_eq!(fw_version(line).as_deref(), Some("1.0 beta"));
        assert_eq!(fw_version(b"garbage"), None);
        assert!(same_version("0.2", "v0.2.0") && !same_version("0.2", "0.1"));
    }
}
