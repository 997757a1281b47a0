//! Stations and power: association with the router or a node's hidden AP (range,
//! password, capacity), and the faults that take nodes or the router away.

use std::net::Ipv4Addr;

use mqttmesh_core::node::{AssocError, Node};
use mqttmesh_core::uplink::ScanEntry;
use mqttmesh_core::{Duration, Mac};

use crate::events::Ev;
use crate::radio::{Endpoint, NodeIdx};
use crate::world::{ApState, Assoc, World, ROUTER_BSSID};

impl World {
    /// What associating node `idx` with `bssid` using `password` would give now:
    /// the address, or why not (out of range or gone, wrong password, AP full).
    pub fn check_association(
        &self,
        idx: NodeIdx,
        bssid: Mac,
        password: &str,
    ) -> Result<Ipv4Addr, AssocError> {
        self.association(idx, bssid, password)
            .map(|assoc| self.address(idx, assoc))
    }

    fn association(&self, idx: NodeIdx, bssid: Mac, password: &str) -> Result<Assoc, AssocError> {
        let me = Endpoint::Node(idx);
        let in_range = |other: Endpoint| {
            self.radio
                .rssi(me, other)
                .is_some_and(|r| r >= self.threshold)
        };
        if bssid == ROUTER_BSSID {
            if !self.router_up || !in_range(Endpoint::Router) {
                return Err(AssocError::NotFound);
            }
            if password != self.router_password {
                return Err(AssocError::AuthFailed);
            }
            return Ok(Assoc::Router);
        }
        let target = self.by_bssid.get(&bssid).copied().filter(|&j| {
            let slot = &self.nodes[j];
            j != idx && slot.alive && slot.ap.is_some()
        });
        let Some(ap) = target.filter(|&j| in_range(Endpoint::Node(j))) else {
            return Err(AssocError::NotFound);
        };
        let slot = &self.nodes[ap];
        if password != slot.node.config().mesh_password.as_str() {
            return Err(AssocError::AuthFailed);
        }
        let (max, admits) = slot
            .ap
            .map_or((0, false), |a| (usize::from(a.max_children), a.admits));
        // A node holding its children without an uplink admits nobody new.
        if !admits || (self.enforce_capacity && self.stations(ap).len() >= max) {
            return Err(AssocError::Full);
        }
        Ok(Assoc::Ap(ap))
    }

    /// The AP's answer to an association: a failure is reported now, a success goes on
    /// to address assignment (the rest of `SimTiming::associate`).
    pub(crate) fn on_assoc_answer(
        &mut self,
        idx: NodeIdx,
        epoch: u64,
        bssid: Mac,
        password: String,
    ) {
        let slot = &self.nodes[idx];
        if !slot.alive || slot.sta_epoch != epoch {
            return;
        }
        if self.association(idx, bssid, &password).is_err() {
            self.on_associated(idx, epoch, bssid, &password);
            return;
        }
        let t = self.timing;
        let rest = Duration::from_millis(
            t.associate
                .millis()
                .saturating_sub(t.associate_fail.millis()),
        );
        let ev = Ev::Associated {
            node: idx,
            epoch,
            bssid,
            password,
        };
        self.schedule(rest, ev);
    }

    pub(crate) fn on_associated(&mut self, idx: NodeIdx, epoch: u64, bssid: Mac, password: &str) {
        let slot = &self.nodes[idx];
        if !slot.alive || slot.sta_epoch != epoch {
            return;
        }
        let result = self.association(idx, bssid, password);
        let now = self.now;
        let answer = match result {
            Ok(assoc) => {
                self.set_assoc(idx, Some(assoc));
                Ok(self.address(idx, assoc))
            }
            Err(e) => {
                self.log_world(idx, &format!("association with {bssid} failed: {e}"));
                Err(e)
            }
        };
        self.nodes[idx].node.handle_associated(now, bssid, answer);
        self.drain(idx);
        if answer == Err(AssocError::Full) {
            // The AP turned a station away for capacity: its node hears of it (what
            // drives re-balancing).
            if let Some(ap) = self.by_bssid.get(&bssid).copied() {
                let station = self.nodes[idx].node.station_mac();
                self.nodes[ap].node.handle_station_refused(now, station);
                self.drain(ap);
            }
        }
    }

    /// Free child slots node `idx` announces in its beacon (`max_children` minus its
    /// associated stations; none while it holds its children without an uplink), or no
    /// hint when capacity is not enforced.
    fn free_slots(&self, idx: NodeIdx, ap: ApState) -> Option<u8> {
        if !ap.admits {
            return Some(0);
        }
        if !self.enforce_capacity {
            return None;
        }
        let used = u8::try_from(self.stations(idx).len()).unwrap_or(u8::MAX);
        Some(ap.max_children.saturating_sub(used))
    }

    /// Nodes associated with node `ap`'s access point.
    pub fn stations(&self, ap: NodeIdx) -> Vec<NodeIdx> {
        self.nodes[ap]
            .stations
            .iter()
            .copied()
            .filter(|&j| self.nodes[j].alive)
            .collect()
    }

    /// Everything a powered-off node holds goes: links (peers are told), AP, association,
    /// broker session (its will is published), timers.
    fn power_off(&mut self, idx: NodeIdx, silent: bool) {
        if silent {
            self.break_links(idx);
        }
        self.set_assoc(idx, None);
        let slot = &mut self.nodes[idx];
        slot.alive = false;
        slot.incarnation += 1;
        slot.sta_epoch += 1;
        slot.mqtt_epoch += 1;
        slot.pending_mqtt = None;
        slot.timer = None;
        self.alive_count -= 1;
        self.update_online(idx);
        self.close_all_links(idx, false);
        self.close_ap(idx);
        self.drop_session(idx);
    }

    fn power_on(&mut self, idx: NodeIdx, reason: &str) {
        let incarnation = self.nodes[idx].incarnation;
        let seed = self.node_seed(idx, incarnation);
        let slot = &mut self.nodes[idx];
        let config = slot.node.config().clone();
        let chip_id = slot.node.chip_id();
        slot.node = Node::new(config, chip_id, seed, reason, self.now);
        slot.alive = true;
        slot.last_timeout = None;
        self.alive_count += 1;
        self.drain(idx);
        self.schedule_app_tick(idx);
    }

    /// Pulls node `idx`'s plug: its peers see its links close, the broker publishes its
    /// will if it was a root. Its `Node` stays readable until [`World::revive`].
    pub fn kill(&mut self, idx: NodeIdx) {
        if self.nodes[idx].alive {
            self.log_world(idx, "killed");
            self.power_off(idx, false);
        }
    }

    /// Like [`World::kill`], but its links die silently, as when a chip browns out:
    /// peers only notice through their keep-alives. Its broker session still drops at
    /// once (the model has no broker keep-alive).
    pub fn crash(&mut self, idx: NodeIdx) {
        if self.nodes[idx].alive {
            self.log_world(idx, "crashed");
            self.power_off(idx, true);
        }
    }

    /// Powers a killed node on again: a fresh `Node`, reset reason `Power on`.
    pub fn revive(&mut self, idx: NodeIdx) {
        if !self.nodes[idx].alive {
            self.log_world(idx, "revived");
            self.power_on(idx, "Power on");
        }
    }

    /// Restarts node `idx` (what `Action::Restart` does): off, then a fresh `Node`
    /// with reset reason `reason`.
    pub fn restart(&mut self, idx: NodeIdx, reason: &str) {
        self.log_world(idx, &format!("restart ({reason})"));
        self.power_off(idx, false);
        self.nodes[idx].restarts += 1;
        self.power_on(idx, reason);
    }

    /// The router goes away: it vanishes from scans, its stations lose their
    /// association, and the roots' broker sessions drop (wills are published).
    pub fn router_down(&mut self) {
        self.router_up = false;
        for idx in 0..self.nodes.len() {
            if self.nodes[idx].assoc != Some(Assoc::Router) {
                continue;
            }
            self.set_assoc(idx, None);
            if self.broker.session(idx).is_some() {
                self.drop_session(idx);
                let inc = self.nodes[idx].incarnation;
                self.schedule(
                    mqttmesh_core::Duration::ZERO,
                    Ev::MqttLost { node: idx, inc },
                );
            }
        }
    }

    /// The router is back.
    pub fn router_up(&mut self) {
        self.router_up = true;
    }

    /// The broker restarts: every session ends (a shutting-down broker publishes no
    /// wills), publications in flight to it are lost unacknowledged, and the roots see
    /// their sessions drop. The retained store survives (a persistent broker).
    pub fn broker_restart(&mut self) {
        self.broker_epoch += 1;
        for idx in 0..self.nodes.len() {
            if self.broker.session(idx).is_some() {
                self.broker.close(idx, true);
                let inc = self.nodes[idx].incarnation;
                self.schedule(
                    mqttmesh_core::Duration::ZERO,
                    Ev::MqttLost { node: idx, inc },
                );
            }
        }
    }

    /// What node `idx` hears now.
    pub fn scan(&mut self, idx: NodeIdx) -> Vec<ScanEntry> {
        let me = Endpoint::Node(idx);
        let mut out = Vec::new();
        if self.router_up {
            if let Some(rssi) = self.audible(me, Endpoint::Router) {
                let mut ssid = heapless::String::new();
                let _ = ssid.push_str(&self.router_ssid);
                out.push(ScanEntry {
                    bssid: ROUTER_BSSID,
                    ssid,
                    rssi,
                    channel: 1,
                    hidden: false,
                    depth: None,
                    free: None,
                });
            }
        }
        for j in self.candidates(idx) {
            let Some(ap) = self.nodes[j].ap.filter(|_| self.nodes[j].alive && j != idx) else {
                continue;
            };
            if let Some(rssi) = self.audible(me, Endpoint::Node(j)) {
                out.push(ScanEntry {
                    bssid: self.nodes[j].node.ap_mac(),
                    ssid: heapless::String::new(),
                    rssi,
                    channel: ap.channel,
                    hidden: true,
                    depth: Some(ap.depth),
                    free: self.free_slots(j, ap),
                });
            }
        }
        out
    }

    /// RSSI as a scan reports it (with noise), if above the threshold.
    fn audible(&mut self, a: Endpoint, b: Endpoint) -> Option<i8> {
        let rssi = self.radio.rssi(a, b).filter(|r| *r >= self.threshold)?;
        let noise = i16::from(self.rssi_noise);
        let jitter = if noise > 0 {
            // Cannot truncate: below(2n+1) - n is within ±n <= ±255.
            self.rng.below(2 * noise as u64 + 1) as i16 - noise
        } else {
            0
        };
        // Cannot truncate: clamped to the i8 range.
        Some((i16::from(rssi) + jitter).clamp(-127, 0) as i8)
    }
}
