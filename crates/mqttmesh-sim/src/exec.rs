//! The run loop around each node: drain its polls after every input (the contract in
//! `mqttmesh_core::node`), carry out its actions against the simulated radio, network
//! and broker, and dispatch scheduled events back to it.

use mqttmesh_core::link::MAX_FRAME;
use mqttmesh_core::node::{Action, Event, LinkId, Publish};
use mqttmesh_core::uplink::ScanEntry;
use mqttmesh_core::{Duration, Instant};

use crate::broker::Publication;
use crate::links::End;
use crate::radio::{Endpoint, NodeIdx};
use crate::world::{ApState, Assoc, Ev, Received, World, LOG_KEEP, ROUTER_BSSID, ROUTER_SSID};

/// What carrying out an action did to the node.
#[derive(PartialEq, Eq)]
enum Flow {
    Continue,
    /// The node was replaced (restart): stop draining the old one.
    Replaced,
}

impl World {
    /// Drains node `idx`'s polls in contract order until all are empty, then schedules
    /// its next timeout.
    pub(crate) fn drain(&mut self, idx: NodeIdx) {
        let mut buf = [0u8; MAX_FRAME];
        loop {
            let mut busy = false;
            while let Some((link, len)) = self.nodes[idx].node.poll_transmit(&mut buf) {
                busy = true;
                if len > 0 {
                    self.transmit(idx, link, buf[..len].to_vec());
                }
            }
            while let Some(action) = self.nodes[idx].node.poll_action() {
                busy = true;
                if self.execute(idx, action) == Flow::Replaced {
                    return;
                }
            }
            let now = self.now;
            while let Some(event) = self.nodes[idx].node.poll_event() {
                busy = true;
                let slot = &mut self.nodes[idx];
                if let Event::Message { subtopic, payload } = &event {
                    slot.received.push(Received {
                        at: now,
                        subtopic: subtopic.as_str().to_owned(),
                        payload: payload.to_vec(),
                    });
                }
                slot.events.push((now, event));
            }
            while let Some(line) = self.nodes[idx].node.poll_log() {
                busy = true;
                let text = format!("{now} {:?} {}", line.level, line.text);
                self.push_log(idx, text);
            }
            if !busy {
                break;
            }
        }
        self.schedule_timer(idx);
    }

    fn push_log(&mut self, idx: NodeIdx, text: String) {
        let logs = &mut self.nodes[idx].logs;
        if logs.len() == LOG_KEEP {
            logs.pop_front();
        }
        logs.push_back(text);
    }

    /// A line in the node's log written by the world itself.
    pub(crate) fn log_world(&mut self, idx: NodeIdx, what: &str) {
        let text = format!("{} world: {what}", self.now);
        self.push_log(idx, text);
    }

    fn schedule_timer(&mut self, idx: NodeIdx) {
        let now = self.now;
        let slot = &mut self.nodes[idx];
        if !slot.alive {
            return;
        }
        let Some(mut at) = slot.node.poll_timeout() else {
            slot.timer = None;
            return;
        };
        if at <= now {
            // A deadline the node did not clear when handed `now` must not spin.
            at = if slot.last_timeout == Some(now) {
                now + Duration::from_millis(1)
            } else {
                now
            };
        }
        if slot.timer != Some(at) {
            slot.timer = Some(at);
            let inc = slot.incarnation;
            self.schedule_at(at, Ev::Timer { node: idx, inc });
        }
    }

    fn execute(&mut self, idx: NodeIdx, action: Action) -> Flow {
        let t = self.timing;
        match action {
            Action::Scan => {
                let inc = self.nodes[idx].incarnation;
                self.schedule(t.scan, Ev::ScanDone { node: idx, inc });
            }
            Action::Associate {
                bssid, password, ..
            } => {
                self.leave_association(idx);
                let epoch = self.nodes[idx].sta_epoch;
                let password = password.as_str().to_owned();
                let ev = Ev::Associated {
                    node: idx,
                    epoch,
                    bssid,
                    password,
                };
                self.schedule(t.associate, ev);
            }
            Action::Disassociate => self.leave_association(idx),
            Action::ConnectMqtt {
                client_id,
                will_topic,
            } => {
                let slot = &mut self.nodes[idx];
                slot.mqtt_epoch += 1;
                slot.pending_mqtt = Some((client_id.as_str().into(), will_topic.as_str().into()));
                let epoch = slot.mqtt_epoch;
                self.schedule(t.mqtt_connect, Ev::MqttConnect { node: idx, epoch });
            }
            Action::DisconnectMqtt => {
                self.nodes[idx].mqtt_epoch += 1;
                self.broker.close(idx, true);
            }
            Action::Subscribe { filter } => {
                if let Some(session) = self.broker.session(idx).map(|s| s.id) {
                    for (topic, payload) in self.broker.subscribe(idx, &filter) {
                        let ev = Ev::MqttDeliver {
                            node: idx,
                            session,
                            topic,
                            payload,
                        };
                        self.schedule(t.broker_delivery, ev);
                    }
                }
            }
            Action::Publish(publish) => self.publish_from(idx, publish),
            Action::OpenParentLink => {
                let slot = &self.nodes[idx];
                let parent = match slot.assoc {
                    Some(Assoc::Ap(p)) => Some(p),
                    _ => None,
                };
                let epoch = slot.sta_epoch;
                let ev = Ev::LinkConnect {
                    node: idx,
                    epoch,
                    parent,
                };
                self.schedule(t.tcp_connect, ev);
            }
            Action::CloseLink(link) => {
                if let Some(conn) = self.nodes[idx].links.get(&link).copied() {
                    self.close_end(conn, idx, link, true);
                }
            }
            Action::OpenAp {
                channel,
                max_children,
                depth,
                ..
            } => {
                self.nodes[idx].ap = Some(ApState {
                    depth,
                    max_children,
                    channel,
                });
            }
            Action::CloseAp => self.close_ap(idx),
            Action::Restart => {
                self.restart(idx, "Restart");
                return Flow::Replaced;
            }
        }
        Flow::Continue
    }

    /// Drops the station's association: its parent link and its broker session go too.
    fn leave_association(&mut self, idx: NodeIdx) {
        let slot = &mut self.nodes[idx];
        slot.sta_epoch += 1;
        slot.mqtt_epoch += 1;
        slot.assoc = None;
        if let Some(conn) = slot.links.get(&LinkId::Parent).copied() {
            self.close_end(conn, idx, LinkId::Parent, true);
        }
        self.drop_session(idx);
    }

    /// Ends `idx`'s broker session uncleanly: the broker publishes its will.
    pub(crate) fn drop_session(&mut self, idx: NodeIdx) {
        if let Some(will) = self.broker.close(idx, false) {
            let will = Publication {
                at: self.now,
                topic: will,
                payload: crate::broker::WILL_PAYLOAD.to_vec(),
                retain: true,
                from: None,
            };
            self.schedule(self.timing.broker_delivery, Ev::BrokerIn(will));
        }
    }

    /// Closes `idx`'s AP: its child links close and its stations are dropped.
    pub(crate) fn close_ap(&mut self, idx: NodeIdx) {
        self.nodes[idx].ap = None;
        self.close_all_links(idx, true);
        for slot in &mut self.nodes {
            if slot.assoc == Some(Assoc::Ap(idx)) {
                slot.assoc = None;
            }
        }
    }

    fn publish_from(&mut self, idx: NodeIdx, publish: Publish) {
        if self.broker.session(idx).is_none() {
            self.dropped += 1;
            self.log_world(idx, "publish without a broker session dropped");
            return;
        }
        let publication = Publication {
            at: self.now,
            topic: publish.topic.as_str().to_owned(),
            payload: publish.payload.to_vec(),
            retain: publish.msg_type.retain(),
            from: Some(idx),
        };
        self.schedule(self.timing.broker_delivery, Ev::BrokerIn(publication));
    }

    /// What node `idx` hears now.
    pub fn scan(&mut self, idx: NodeIdx) -> Vec<ScanEntry> {
        let me = Endpoint::Node(idx);
        let mut out = Vec::new();
        if self.router_up {
            if let Some(rssi) = self.audible(me, Endpoint::Router) {
                let mut ssid = heapless::String::new();
                let _ = ssid.push_str(ROUTER_SSID);
                out.push(ScanEntry {
                    bssid: ROUTER_BSSID,
                    ssid,
                    rssi,
                    channel: 1,
                    hidden: false,
                    depth: None,
                });
            }
        }
        for j in 0..self.nodes.len() {
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

    pub(crate) fn dispatch(&mut self, at: Instant, ev: Ev) {
        let now = self.now;
        match ev {
            Ev::Timer { node, inc } => {
                let slot = &mut self.nodes[node];
                if slot.alive && slot.incarnation == inc && slot.timer == Some(at) {
                    slot.timer = None;
                    slot.last_timeout = Some(now);
                    slot.node.handle_timeout(now);
                    self.drain(node);
                }
            }
            Ev::ScanDone { node, inc } => {
                if self.live(node, inc) {
                    let entries = self.scan(node);
                    self.nodes[node].node.handle_scan_done(now, &entries);
                    self.drain(node);
                }
            }
            Ev::Associated {
                node,
                epoch,
                bssid,
                password,
            } => self.on_associated(node, epoch, bssid, &password),
            Ev::MqttConnect { node, epoch } => self.on_mqtt_connect(node, epoch),
            Ev::MqttLost { node, inc } => {
                if self.live(node, inc) {
                    self.nodes[node].node.handle_mqtt_disconnected(now);
                    self.drain(node);
                }
            }
            Ev::LinkConnect {
                node,
                epoch,
                parent,
            } => self.on_link_connect(node, epoch, parent),
            Ev::Data { conn, to, bytes } => self.on_data(conn, to, bytes),
            Ev::Closed { conn, to } => self.on_closed(conn, to),
            Ev::BrokerIn(publication) => self.on_broker_in(publication),
            Ev::MqttDeliver {
                node,
                session,
                topic,
                payload,
            } => {
                let current = self.broker.session(node).map(|s| s.id);
                if self.nodes[node].alive && current == Some(session) {
                    self.nodes[node]
                        .node
                        .handle_mqtt_message(now, &topic, &payload);
                    self.drain(node);
                }
            }
        }
    }

    fn live(&self, idx: NodeIdx, inc: u64) -> bool {
        let slot = &self.nodes[idx];
        slot.alive && slot.incarnation == inc
    }

    fn on_broker_in(&mut self, mut publication: Publication) {
        publication.at = self.now;
        let topic = publication.topic.clone();
        let payload = publication.payload.clone();
        for (node, session) in self.broker.publish(publication) {
            let ev = Ev::MqttDeliver {
                node,
                session,
                topic: topic.clone(),
                payload: payload.clone(),
            };
            self.schedule(self.timing.broker_delivery, ev);
        }
    }

    fn on_mqtt_connect(&mut self, idx: NodeIdx, epoch: u64) {
        let now = self.now;
        let slot = &mut self.nodes[idx];
        if !slot.alive || slot.mqtt_epoch != epoch {
            return;
        }
        let pending = slot.pending_mqtt.take();
        match pending {
            Some((client_id, will)) if slot.assoc == Some(Assoc::Router) && self.router_up => {
                self.broker.open(idx, &client_id, &will);
                self.nodes[idx].node.handle_mqtt_connected(now);
            }
            _ => self.nodes[idx].node.handle_mqtt_disconnected(now),
        }
        self.drain(idx);
    }

    fn on_link_connect(&mut self, idx: NodeIdx, epoch: u64, parent: Option<NodeIdx>) {
        let now = self.now;
        let slot = &self.nodes[idx];
        if !slot.alive || slot.sta_epoch != epoch {
            return;
        }
        let reachable = parent.filter(|&p| {
            slot.assoc == Some(Assoc::Ap(p)) && self.nodes[p].alive && self.nodes[p].ap.is_some()
        });
        let child_link = match reachable {
            Some(p) => {
                let link = self.nodes[p].node.handle_child_connected(now);
                if let Some(link) = link {
                    let child = End::Node {
                        idx,
                        link: LinkId::Parent,
                    };
                    self.new_conn([child, End::Node { idx: p, link }]);
                }
                self.drain(p);
                link
            }
            None => None,
        };
        if child_link.is_some() {
            self.nodes[idx].node.handle_link_opened(now, LinkId::Parent);
        } else {
            self.nodes[idx].node.handle_link_closed(now, LinkId::Parent);
        }
        self.drain(idx);
    }
}
