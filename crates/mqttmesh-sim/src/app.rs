//! The demo application of `mqttmesh sim`, in virtual time, and the accounting of its
//! messages: every node publishes a counter (`<out><ID>/counter`, payload the decimal
//! sequence number, QoS 1) every interval while online; the broker side records which
//! `(node, seq)` arrived, so a run can tell how many were lost and how many arrived more
//! than once, and when.
//!
//! The sequence number survives restarts (the model keeps it outside the node), so a
//! restarted node never reuses one and duplicates are real duplicates.

use mqttmesh_core::{Duration, Instant, MsgType};

use crate::events::Ev;
use crate::radio::NodeIdx;
use crate::world::World;

/// Subtopic of the counter (as in `mqttmesh_host::app`).
pub const COUNTER: &str = "counter";

/// Per-node accounting.
#[derive(Clone, Debug, Default)]
struct Track {
    /// Publication time of every sequence number the node accepted, by seq.
    published: Vec<Instant>,
    /// Seqs that reached the broker (bit set).
    arrived: Vec<u64>,
}

/// The app's state and message accounting.
#[derive(Clone, Debug)]
pub(crate) struct App {
    interval: Duration,
    enabled: bool,
    tracks: Vec<Track>,
    delivered: u64,
    /// Arrival times of duplicates.
    duplicates: Vec<Instant>,
    /// Counter payloads that were not a sequence number the node published.
    unexpected: u64,
}

/// Message totals of the demo app.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageStats {
    /// Counter publications the nodes accepted.
    pub published: u64,
    /// Distinct ones that reached the broker.
    pub delivered: u64,
    /// Ones that reached the broker again.
    pub duplicates: u64,
    /// Accepted but not (yet) at the broker.
    pub lost: u64,
}

impl World {
    /// Starts the demo app on every node: a counter every `interval` while online.
    pub fn start_app(&mut self, interval: Duration) {
        self.app = Some(App {
            interval,
            enabled: true,
            tracks: vec![Track::default(); self.nodes.len()],
            delivered: 0,
            duplicates: Vec::new(),
            unexpected: 0,
        });
        for idx in 0..self.nodes.len() {
            self.schedule_app_tick(idx);
        }
    }

    /// Pauses or resumes the demo app's publications.
    pub fn set_publishing(&mut self, on: bool) {
        if let Some(app) = &mut self.app {
            app.enabled = on;
        }
    }

    pub(crate) fn schedule_app_tick(&mut self, idx: NodeIdx) {
        let Some(app) = &self.app else {
            return;
        };
        let inc = self.nodes[idx].incarnation;
        let interval = app.interval;
        if self.nodes[idx].alive && interval > Duration::ZERO {
            self.schedule(interval, Ev::AppTick { node: idx, inc });
        }
    }

    pub(crate) fn on_app_tick(&mut self, idx: NodeIdx, inc: u64) {
        let slot = &self.nodes[idx];
        if !slot.alive || slot.incarnation != inc {
            return;
        }
        let enabled = self.app.as_ref().is_some_and(|a| a.enabled);
        if enabled && slot.node.connected() {
            let now = self.now;
            let Some(app) = &mut self.app else {
                return;
            };
            if app.tracks.len() <= idx {
                app.tracks.resize(idx + 1, Track::default());
            }
            let seq = app.tracks[idx].published.len();
            let payload = seq.to_string();
            let node = &mut self.nodes[idx].node;
            if node
                .publish(COUNTER, payload.as_bytes(), MsgType::Qos1)
                .is_ok()
            {
                if let Some(app) = &mut self.app {
                    app.tracks[idx].published.push(now);
                }
            }
            self.drain(idx);
        }
        self.schedule_app_tick(idx);
    }

    /// The broker accepted `topic`/`payload` from a node: account for counters.
    pub(crate) fn observe(&mut self, topic: &str, payload: &[u8]) {
        let Some(rest) = topic
            .strip_suffix(COUNTER)
            .and_then(|t| t.strip_suffix('/'))
        else {
            return;
        };
        let Some(id) = rest.rsplit('/').next() else {
            return;
        };
        let Some(&idx) = self.by_id.get(id) else {
            return;
        };
        let now = self.now;
        let Some(app) = &mut self.app else {
            return;
        };
        let seq = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<usize>().ok());
        let Some(track) = app.tracks.get_mut(idx) else {
            return;
        };
        let Some(seq) = seq.filter(|&s| s < track.published.len()) else {
            app.unexpected += 1;
            return;
        };
        let (word, bit) = (seq / 64, 1u64 << (seq % 64));
        if track.arrived.len() <= word {
            track.arrived.resize(word + 1, 0);
        }
        if track.arrived[word] & bit != 0 {
            app.duplicates.push(now);
        } else {
            track.arrived[word] |= bit;
            app.delivered += 1;
        }
    }

    /// Totals of the demo app so far.
    pub fn message_stats(&self) -> MessageStats {
        let Some(app) = &self.app else {
            return MessageStats::default();
        };
        let published = app.tracks.iter().map(|t| t.published.len() as u64).sum();
        MessageStats {
            published,
            delivered: app.delivered,
            duplicates: app.duplicates.len() as u64,
            lost: published - app.delivered,
        }
    }

    /// Counters node `idx` published that have not reached the broker (a crashed
    /// node's unacknowledged ones die with it).
    pub fn messages_lost_by(&self, idx: NodeIdx) -> u64 {
        let Some(track) = self.app.as_ref().and_then(|a| a.tracks.get(idx)) else {
            return 0;
        };
        let arrived: u64 = track
            .arrived
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        track.published.len() as u64 - arrived
    }

    /// Counters published in `[from, to)` that have not reached the broker, and
    /// duplicates that arrived in `[from, to)`.
    pub fn messages_between(&self, from: Instant, to: Instant) -> (u64, u64) {
        let Some(app) = &self.app else {
            return (0, 0);
        };
        let mut lost = 0;
        for track in &app.tracks {
            for (seq, at) in track.published.iter().enumerate() {
                if *at < from || *at >= to {
                    continue;
                }
                let arrived = track
                    .arrived
                    .get(seq / 64)
                    .is_some_and(|w| w & (1 << (seq % 64)) != 0);
                if !arrived {
                    lost += 1;
                }
            }
        }
        let dups = app
            .duplicates
            .iter()
            .filter(|at| **at >= from && **at < to)
            .count() as u64;
        (lost, dups)
    }
}
