//! The run loop around each node: drain its polls after every input (the contract in
//! `mqttmesh_core::node`), carry out its actions against the simulated radio, network
//! and broker, and dispatch scheduled events back to it.

use mqttmesh_core::link::MAX_FRAME;
use mqttmesh_core::node::{Action, Event, LinkId, Publish};
use mqttmesh_core::Duration;

use crate::broker::Publication;
use crate::events::Ev;
use crate::radio::NodeIdx;
use crate::world::{ApState, Assoc, Received, World, LOG_KEEP};

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
        if !self.nodes[idx].alive {
            // A powered-off node does nothing: whatever a test made it queue is lost.
            let node = &mut self.nodes[idx].node;
            while node.poll_transmit(&mut buf).is_some() || node.poll_action().is_some() {}
            while node.poll_event().is_some() || node.poll_log().is_some() {}
            return;
        }
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
        self.update_online(idx);
        self.after_drain(idx);
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
                let ev = Ev::ScanDone {
                    node: idx,
                    inc,
                    channel: None,
                };
                self.schedule(t.scan, ev);
            }
            Action::ScanChannel(channel) => {
                let inc = self.nodes[idx].incarnation;
                let ev = Ev::ScanDone {
                    node: idx,
                    inc,
                    channel: Some(channel),
                };
                self.schedule(t.scan_channel.min(t.scan), ev);
            }
            Action::Associate {
                bssid, password, ..
            } => {
                self.leave_association(idx);
                let epoch = self.nodes[idx].sta_epoch;
                let password = password.as_str().to_owned();
                let ev = Ev::AssocAnswer {
                    node: idx,
                    epoch,
                    bssid,
                    password,
                };
                self.schedule(t.associate_fail.min(t.associate), ev);
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
                    admits: true,
                });
            }
            Action::AdmitStations(admits) => {
                if let Some(ap) = self.nodes[idx].ap.as_mut() {
                    ap.admits = admits;
                }
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
        self.set_assoc(idx, None);
        if let Some(conn) = self.nodes[idx].links.get(&LinkId::Parent).copied() {
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
        let stations = std::mem::take(&mut self.nodes[idx].stations);
        for station in stations {
            if self.nodes[station].assoc == Some(Assoc::Ap(idx)) {
                self.nodes[station].assoc = None;
            }
        }
    }

    fn publish_from(&mut self, idx: NodeIdx, publish: Publish) {
        let Some(session) = self.broker.session(idx).map(|s| s.id) else {
            self.dropped += 1;
            self.log_world(idx, "publish without a broker session dropped");
            return;
        };
        let publication = Publication {
            at: self.now,
            topic: publish.topic.as_str().to_owned(),
            payload: publish.payload.to_vec(),
            retain: publish.msg_type.retain(),
            from: Some(idx),
        };
        let ev = match publish.token {
            Some(token) if publish.msg_type.qos() >= 1 => Ev::BrokerInAck {
                publication,
                node: idx,
                session,
                token,
                epoch: self.broker_epoch,
            },
            _ => Ev::BrokerIn(publication),
        };
        self.schedule(self.timing.broker_delivery, ev);
    }
}
