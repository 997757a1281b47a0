//! The per-node state of a [`MeshView`] and the handlers that update it, one per kind
//! of topic (`../shared/spec/compat.md`, "Topics a node publishes").

use std::time::Instant;

use super::parse::{self, FwLine, InfoField, OtaStep};
use super::{tree, Firmware, MeshView, ViewEvent, MAX_PENDING_CONNECTS, RATE_WINDOW_SECS};

/// Messages per second over the last [`RATE_WINDOW_SECS`], in one-second buckets.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rate {
    buckets: [u32; RATE_WINDOW_SECS as usize],
    /// The second (since the view's epoch) of the newest bucket.
    newest: u64,
}

impl Rate {
    pub(crate) fn record(&mut self, sec: u64) {
        self.advance(sec);
        let i = (sec % RATE_WINDOW_SECS) as usize;
        self.buckets[i] = self.buckets[i].saturating_add(1);
    }

    fn advance(&mut self, sec: u64) {
        if sec <= self.newest {
            return;
        }
        for s in (self.newest + 1)..=sec.min(self.newest + RATE_WINDOW_SECS) {
            self.buckets[(s % RATE_WINDOW_SECS) as usize] = 0;
        }
        self.newest = sec;
    }

    /// The rate at second `sec`, averaged over the window (or the view's age if less).
    pub(crate) fn per_sec(&self, sec: u64) -> f64 {
        let mut r = self.clone();
        r.advance(sec);
        let total: u64 = r.buckets.iter().map(|&b| u64::from(b)).sum();
        total as f64 / (sec + 1).min(RATE_WINDOW_SECS) as f64
    }
}

/// Everything known about one node.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeState {
    pub(crate) available: Option<bool>,
    pub(crate) reset_reason: Option<String>,
    pub(crate) mac: Option<String>,
    pub(crate) ap_mac: Option<String>,
    pub(crate) ip_local: Option<String>,
    pub(crate) rssi: Option<i32>,
    pub(crate) connected_to: Option<String>,
    pub(crate) fw: Option<FwLine>,
    pub(crate) ota: Option<OtaStep>,
    pub(crate) last_seen: Option<Instant>,
    pub(crate) messages: u64,
    pub(crate) rate: Rate,
    pub(crate) parent: Option<String>,
    pub(crate) last_parent: Option<String>,
    pub(crate) depth: Option<u8>,
}

impl NodeState {
    pub(crate) fn has_info(&self) -> bool {
        self.available.is_some()
            || self.reset_reason.is_some()
            || self.mac.is_some()
            || self.ap_mac.is_some()
            || self.ip_local.is_some()
            || self.rssi.is_some()
            || self.connected_to.is_some()
    }
}

impl MeshView {
    pub(crate) fn handle_info(
        &mut self,
        id: &str,
        field: InfoField,
        payload: &[u8],
        events: &mut Vec<ViewEvent>,
    ) -> bool {
        let Some(n) = self.nodes.get_mut(id) else {
            return false;
        };
        let tree_changed = match field {
            InfoField::Available => {
                let online = match parse::text(payload) {
                    Some("online") => true,
                    Some("offline") => false,
                    _ => return false,
                };
                if n.available != Some(online) {
                    n.available = Some(online);
                    let id = id.to_string();
                    events.push(if online {
                        ViewEvent::Online { id }
                    } else {
                        ViewEvent::Offline { id }
                    });
                }
                true
            }
            InfoField::MacHostedAp | InfoField::ConnectedTo => {
                let Some(mac) = parse::mac(payload) else {
                    return false;
                };
                let slot = match field {
                    InfoField::MacHostedAp => &mut n.ap_mac,
                    _ => &mut n.connected_to,
                };
                store(slot, mac)
            }
            InfoField::Mac => match parse::mac(payload) {
                Some(mac) => store(&mut n.mac, mac),
                None => return false,
            },
            InfoField::Rssi => match parse::rssi(payload) {
                Some(v) => store(&mut n.rssi, v),
                None => return false,
            },
            InfoField::ResetReason | InfoField::IpLocal => match parse::text(payload) {
                Some(t) if !t.is_empty() => {
                    let slot = match field {
                        InfoField::ResetReason => &mut n.reset_reason,
                        _ => &mut n.ip_local,
                    };
                    store(slot, t.to_string())
                }
                _ => return false,
            },
        };
        self.tree_dirty |= tree_changed;
        true
    }

    /// An empty retained payload cleared one `info/*` topic; when none is left the
    /// node is forgotten.
    pub(crate) fn handle_cleared(
        &mut self,
        id: &str,
        field: InfoField,
        events: &mut Vec<ViewEvent>,
    ) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        match field {
            InfoField::Available => n.available = None,
            InfoField::ResetReason => n.reset_reason = None,
            InfoField::Mac => n.mac = None,
            InfoField::MacHostedAp => n.ap_mac = None,
            InfoField::IpLocal => n.ip_local = None,
            InfoField::Rssi => n.rssi = None,
            InfoField::ConnectedTo => n.connected_to = None,
        }
        if !n.has_info() {
            self.nodes.remove(id);
            events.push(ViewEvent::Removed { id: id.to_string() });
        }
        self.tree_dirty = true;
    }

    pub(crate) fn handle_connect(
        &mut self,
        now: Instant,
        epoch: Instant,
        payload: &[u8],
        live: bool,
        events: &mut Vec<ViewEvent>,
    ) {
        let Some(line) = parse::fw_line(payload) else {
            self.stats.ignored += 1;
            return;
        };
        let by_chip = self
            .nodes
            .iter()
            .find(|(_, n)| n.fw.as_ref().is_some_and(|f| f.chip_id == line.chip_id))
            .map(|(id, _)| id.clone());
        let id = by_chip.or_else(|| {
            let id = format!("{:06X}", line.chip_id);
            self.nodes.contains_key(&id).then_some(id)
        });
        match id {
            Some(id) => {
                if live {
                    self.seen(&id, now, epoch);
                }
                self.set_fw(&id, line, events);
            }
            // Its info topics may still be on their way; a node with a custom ID
            // (the original's `setID`) is matched once its `fw` answer names the chip.
            None if self.pending_connects.len() < MAX_PENDING_CONNECTS => {
                self.pending_connects.insert(line.chip_id, line);
            }
            None => self.stats.ignored += 1,
        }
    }

    pub(crate) fn set_fw(&mut self, id: &str, line: FwLine, events: &mut Vec<ViewEvent>) {
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        let to = Firmware::of(&line);
        let from = n.fw.as_ref().map(Firmware::of);
        if from.as_ref() != Some(&to) {
            events.push(ViewEvent::Firmware {
                id: id.to_string(),
                from,
                to,
            });
        }
        n.fw = Some(line);
    }

    pub(crate) fn handle_ota(
        &mut self,
        id: &str,
        rest: &str,
        payload: &[u8],
        events: &mut Vec<ViewEvent>,
    ) -> bool {
        let (Some(step), Some(n)) = (parse::ota(rest, payload), self.nodes.get_mut(id)) else {
            return false;
        };
        n.ota = Some(step.clone());
        events.push(ViewEvent::Ota {
            id: id.to_string(),
            step,
        });
        true
    }

    /// What the tree needs of each node, in ID order.
    pub(crate) fn links(&self) -> Vec<tree::Links<'_>> {
        self.nodes
            .iter()
            .map(|(id, n)| tree::Links {
                id,
                online: n.available == Some(true),
                ap_mac: n.ap_mac.as_deref(),
                connected_to: n.connected_to.as_deref(),
            })
            .collect()
    }

    /// Derives every parent and depth again; reports parents that changed.
    pub(crate) fn update_tree(&mut self, events: &mut Vec<ViewEvent>) {
        self.tree_dirty = false;
        let links = self.links();
        let places = tree::derive(&links);
        // Allocate only for the nodes whose place changed.
        let changed: Vec<(usize, Option<String>, Option<u8>)> = self
            .nodes
            .values()
            .zip(&places)
            .enumerate()
            .filter(|(_, (n, p))| n.parent.as_deref() != p.up.name(&links) || n.depth != p.depth)
            .map(|(i, (_, p))| (i, p.up.name(&links).map(str::to_string), p.depth))
            .collect();
        drop(links);
        let mut changed = changed.into_iter().peekable();
        for (i, (id, n)) in self.nodes.iter_mut().enumerate() {
            let Some((_, parent, depth)) = changed.next_if(|c| c.0 == i) else {
                continue;
            };
            if let (Some(old), Some(new)) = (&n.last_parent, &parent) {
                if old != new {
                    events.push(ViewEvent::Reparented {
                        id: id.clone(),
                        from: old.clone(),
                        to: new.clone(),
                    });
                }
            }
            if parent.is_some() {
                n.last_parent.clone_from(&parent);
            }
            n.parent = parent;
            n.depth = depth;
        }
    }
}

/// Stores `v` in `slot`; whether it changed.
pub(crate) fn store<T: PartialEq>(slot: &mut Option<T>, v: T) -> bool {
    let changed = slot.as_ref() != Some(&v);
    *slot = Some(v);
    changed
}
