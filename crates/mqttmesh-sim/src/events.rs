//! The event queue: what can be scheduled, the (time, sequence) order that makes runs
//! deterministic, stepping the virtual clock, and dispatching each event to its node.

use mqttmesh_core::node::LinkId;
use mqttmesh_core::{Duration, Instant, Mac};

use crate::broker::Publication;
use crate::links::{ConnId, End};
use crate::radio::NodeIdx;
use crate::world::{Assoc, World};

/// How long the simulated radio, network and broker take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimTiming {
    /// A scan of every channel.
    pub scan: Duration,
    /// A scan of one channel (`Action::ScanChannel`). At most `scan`.
    pub scan_channel: Duration,
    /// Association plus address assignment.
    pub associate: Duration,
    /// How long an association that fails takes to say so (the AP is gone, or full):
    /// the 802.11 exchange alone, no address assignment follows. At most `associate`.
    pub associate_fail: Duration,
    /// TCP connect to a parent's mesh port.
    pub tcp_connect: Duration,
    /// One hop of link latency, per frame.
    pub hop_latency: Duration,
    /// MQTT connect to the broker.
    pub mqtt_connect: Duration,
    /// Node → broker and broker → node delivery.
    pub broker_delivery: Duration,
    /// Air-time budget of one node's radio, bits per second, shared by everything it
    /// sends on its uplink and its AP (0: unlimited).
    pub bandwidth_bps: u64,
    /// Probability, in parts per million, that a frame is lost on the air and resent.
    pub loss_ppm: u32,
    /// What a resend costs (TCP's retransmission timeout on a mesh link).
    pub retransmit_delay: Duration,
}

impl SimTiming {
    /// The host runtime's realistic profile (`mqttmesh_host::radio::Timing::realistic`):
    /// scan 2 s (one channel 200 ms), association 1 s (a refusal or a missing AP
    /// 300 ms), 10 ms per hop, 5 Mbit/s per radio, no loss, 200 ms per resend. The
    /// default.
    pub fn realistic() -> SimTiming {
        SimTiming::default()
    }

    /// The host runtime's fast profile (`Timing::fast`): scan 150 ms (one channel
    /// 20 ms), association 60 ms (failing: 20 ms), 1 ms per hop, 50 Mbit/s, 20 ms per resend.
    pub fn fast() -> SimTiming {
        SimTiming {
            scan: Duration::from_millis(150),
            scan_channel: Duration::from_millis(20),
            associate: Duration::from_millis(60),
            associate_fail: Duration::from_millis(20),
            tcp_connect: Duration::from_millis(1),
            hop_latency: Duration::from_millis(1),
            mqtt_connect: Duration::from_millis(5),
            broker_delivery: Duration::from_millis(1),
            bandwidth_bps: 50_000_000,
            loss_ppm: 0,
            retransmit_delay: Duration::from_millis(20),
        }
    }
}

impl Default for SimTiming {
    fn default() -> Self {
        SimTiming {
            scan: Duration::from_secs(2),
            scan_channel: Duration::from_millis(200),
            associate: Duration::from_secs(1),
            associate_fail: Duration::from_millis(300),
            tcp_connect: Duration::from_millis(10),
            hop_latency: Duration::from_millis(10),
            mqtt_connect: Duration::from_millis(50),
            broker_delivery: Duration::from_millis(5),
            bandwidth_bps: 5_000_000,
            loss_ppm: 0,
            retransmit_delay: Duration::from_millis(200),
        }
    }
}

/// A scheduled event.
#[derive(Debug)]
pub(crate) enum Ev {
    Timer {
        node: NodeIdx,
        inc: u64,
    },
    ScanDone {
        node: NodeIdx,
        inc: u64,
        /// One channel only (`Action::ScanChannel`).
        channel: Option<u8>,
    },
    /// The 802.11 stage of an association: a refusal (or no answer) is known now; a
    /// success goes on to address assignment (`Associated`).
    AssocAnswer {
        node: NodeIdx,
        epoch: u64,
        bssid: Mac,
        password: String,
    },
    Associated {
        node: NodeIdx,
        epoch: u64,
        bssid: Mac,
        password: String,
    },
    MqttConnect {
        node: NodeIdx,
        epoch: u64,
    },
    MqttLost {
        node: NodeIdx,
        inc: u64,
    },
    LinkConnect {
        node: NodeIdx,
        epoch: u64,
        parent: Option<NodeIdx>,
    },
    Data {
        conn: ConnId,
        to: usize,
        bytes: Vec<u8>,
    },
    Closed {
        conn: ConnId,
        to: usize,
    },
    BrokerIn(Publication),
    /// A QoS ≥ 1 publication of root `node`'s session `session`: the broker answers
    /// with a PUBACK for `token`, unless it restarted (`epoch`) meanwhile.
    BrokerInAck {
        publication: Publication,
        node: NodeIdx,
        session: u64,
        token: u32,
        epoch: u64,
    },
    MqttAck {
        node: NodeIdx,
        session: u64,
        token: u32,
    },
    AppTick {
        node: NodeIdx,
        inc: u64,
    },
    MqttDeliver {
        node: NodeIdx,
        session: u64,
        topic: String,
        payload: Vec<u8>,
    },
}

#[derive(Debug)]
pub(crate) struct Scheduled {
    pub(crate) at: Instant,
    pub(crate) seq: u64,
    pub(crate) ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so the max-heap pops the earliest (then the first scheduled).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl World {
    // ---- stepping ------------------------------------------------------------------

    pub(crate) fn schedule(&mut self, after: Duration, ev: Ev) {
        self.schedule_at(self.now + after, ev);
    }

    pub(crate) fn schedule_at(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        });
    }

    /// Processes the earliest event; `false` when nothing is scheduled.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(next.at);
        if self.now >= self.next_sweep {
            self.next_sweep = self.now + crate::invariants::SWEEP;
            self.sweep();
        }
        self.steps += 1;
        self.dispatch(next.at, next.ev);
        true
    }

    /// Runs every event up to `now + d`, then sets the clock there.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline, |_| false);
    }

    /// Runs until `cond` holds (checked before the first and after every event) or the
    /// clock would pass `deadline`; returns whether `cond` holds.
    pub fn run_until(&mut self, deadline: Instant, mut cond: impl FnMut(&World) -> bool) -> bool {
        loop {
            if cond(self) {
                return true;
            }
            match self.queue.peek() {
                Some(next) if next.at <= deadline => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(deadline);
                    return cond(self);
                }
            }
        }
    }

    /// `now + d`: a deadline for [`World::run_until`].
    pub fn within(&self, d: Duration) -> Instant {
        self.now + d
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The seed this world was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Events processed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The deterministic address a station gets from the router or from node `ap`'s AP.
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
            Ev::ScanDone { node, inc, channel } => {
                if self.live(node, inc) {
                    let mut entries = self.scan(node);
                    if let Some(channel) = channel {
                        entries.retain(|e| e.channel == channel);
                    }
                    self.nodes[node].node.handle_scan_done(now, &entries);
                    self.drain(node);
                }
            }
            Ev::AssocAnswer {
                node,
                epoch,
                bssid,
                password,
            } => self.on_assoc_answer(node, epoch, bssid, password),
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
            Ev::BrokerInAck {
                publication,
                node,
                session,
                token,
                epoch,
            } => {
                if epoch != self.broker_epoch {
                    // In flight when the broker went down: lost, never acknowledged.
                    self.dropped += 1;
                    return;
                }
                self.on_broker_in(publication);
                let ev = Ev::MqttAck {
                    node,
                    session,
                    token,
                };
                self.schedule(self.timing.broker_delivery, ev);
            }
            Ev::MqttAck {
                node,
                session,
                token,
            } => {
                let current = self.broker.session(node).map(|s| s.id);
                if self.nodes[node].alive && current == Some(session) {
                    self.nodes[node].node.handle_mqtt_acked(now, token);
                    self.drain(node);
                }
            }
            Ev::AppTick { node, inc } => self.on_app_tick(node, inc),
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
        if !self.broker_up {
            self.dropped += 1;
            return;
        }
        publication.at = self.now;
        if publication.from.is_some() && self.app.is_some() {
            self.observe(&publication.topic, &publication.payload);
        }
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
            Some((client_id, will))
                if slot.assoc == Some(Assoc::Router) && self.router_up && self.broker_up =>
            {
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
