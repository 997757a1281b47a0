//! The broker session of a root node, over rumqttc.
//!
//! The node asks for a session with `Action::ConnectMqtt`; this module opens it with the
//! node's last will, forwards connection changes and messages into the node task as
//! [`Input::Mqtt`], and carries subscriptions and publications out. With TLS on
//! (`config.mqtt_tls`) it connects over the [`ClientTls`] the mesh built; a failed
//! connection is reported in the words of [`crate::mqtt_tls::ConnectError`].
//!
//! Acknowledgements: rumqttc reports no request handle for a publish, but its event
//! loop takes requests in the order they were queued and reports each QoS ≥ 1 one as
//! `Outgoing::Publish(pkid)` in that order (after an `Outgoing::AwaitAck(pkid)` when its
//! packet ID was still in use). [`Acks`] pairs the node's tokens with packet IDs by
//! that order and turns each `PubAck` (`PubComp` for QoS 2) back into its token. The
//! session never reconnects by itself (a failed poll ends it), so no request is
//! replayed out of order.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mqttmesh_core::node::Publish;
use mqttmesh_core::Config;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, NetworkOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::mqtt_tls::{classify, ClientTls};
use crate::runtime::{Input, MqttInput};

/// An open (or opening) broker session.
#[derive(Debug)]
pub(crate) struct Session {
    pub gen: u64,
    client: AsyncClient,
    task: JoinHandle<()>,
    acks: Arc<Mutex<Acks>>,
}

/// Tokens of QoS ≥ 1 publications, from request order to packet ID to PUBACK.
#[derive(Debug, Default)]
struct Acks {
    /// Queued towards the event loop, not yet given a packet ID (`None`: untracked).
    queued: VecDeque<Option<u32>>,
    /// A publication waiting on a packet ID still in use (rumqttc's collision).
    collided: Option<(u16, Option<u32>)>,
    /// Sent, by packet ID.
    sent: HashMap<u16, u32>,
}

impl Acks {
    fn on_event(&mut self, event: &Event) -> Option<u32> {
        match event {
            Event::Outgoing(Outgoing::Publish(0)) => None, // QoS 0
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                self.collided = Some((*pkid, self.queued.pop_front().flatten()));
                None
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                let token = match self.collided.take() {
                    Some((p, token)) if p == *pkid => token,
                    other => {
                        self.collided = other;
                        self.queued.pop_front().flatten()
                    }
                };
                if let Some(token) = token {
                    self.sent.insert(*pkid, token);
                }
                None
            }
            Event::Incoming(Packet::PubAck(ack)) => self.sent.remove(&ack.pkid),
            Event::Incoming(Packet::PubComp(ack)) => self.sent.remove(&ack.pkid),
            _ => None,
        }
    }
}

fn lock(acks: &Mutex<Acks>) -> MutexGuard<'_, Acks> {
    // A panic elsewhere while holding the lock leaves plain data behind: use it.
    acks.lock().unwrap_or_else(|e| e.into_inner())
}

/// Requests queued towards rumqttc before it pushes back.
const REQUEST_CAPACITY: usize = 1024;

impl Session {
    /// Opens a session to `broker` (over `tls` when given) as `client_id` with
    /// `will_topic` = `offline`.
    pub fn open(
        config: &Config,
        broker: SocketAddr,
        tls: Option<&ClientTls>,
        client_id: &str,
        will_topic: &str,
        gen: u64,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Session {
        let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        options
            .set_keep_alive(Duration::from_millis(
                config.timing.mqtt_keepalive.millis().max(1000),
            ))
            .set_clean_session(true)
            .set_max_packet_size(256 * 1024, 256 * 1024)
            .set_last_will(LastWill::new(
                will_topic,
                mqttmesh_core::node::OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &config.mqtt_username {
            let pass = config.mqtt_password.as_deref().unwrap_or("");
            options.set_credentials(user.as_str(), pass);
        }
        if let Some(tls) = tls {
            tls.apply(&mut options);
        }
        let secure = tls.is_some();
        let (client, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
        let acks = Arc::new(Mutex::new(Acks::default()));
        let loop_acks = acks.clone();
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(5);
        eventloop.set_network_options(net);
        let task = tokio::spawn(async move {
            let mut connected = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        let _ = inputs.send(Input::Mqtt(gen, MqttInput::Connected));
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let msg = MqttInput::Message(p.topic, p.payload.to_vec(), p.retain);
                        if inputs.send(Input::Mqtt(gen, msg)).is_err() {
                            return;
                        }
                    }
                    Ok(event) => {
                        let acked = lock(&loop_acks).on_event(&event);
                        if let Some(token) = acked {
                            if inputs
                                .send(Input::Mqtt(gen, MqttInput::Acked(token)))
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let why = classify(&e, &broker.to_string(), secure, connected);
                        tracing::debug!(target: "mqttmesh::mqtt", "session {gen} ended: {why}");
                        let _ =
                            inputs.send(Input::Mqtt(gen, MqttInput::Disconnected(why.to_string())));
                        return;
                    }
                }
            }
        });
        Session {
            gen,
            client,
            task,
            acks,
        }
    }

    /// Subscribes with QoS 1.
    pub fn subscribe(&self, filter: &str) -> bool {
        self.client.try_subscribe(filter, QoS::AtLeastOnce).is_ok()
    }

    /// Publishes; `false` when rumqttc's request queue is full.
    pub fn publish(&self, p: &Publish) -> bool {
        let qos = match p.msg_type.qos() {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        // Queued under the lock, so the event loop cannot report this publication
        // before its token is in line.
        let mut acks = lock(&self.acks);
        if qos != QoS::AtMostOnce {
            acks.queued.push_back(p.token);
        }
        let ok = self
            .client
            .try_publish(
                p.topic.as_str(),
                qos,
                p.msg_type.retain(),
                p.payload.to_vec(),
            )
            .is_ok();
        if !ok && qos != QoS::AtMostOnce {
            acks.queued.pop_back();
        }
        ok
    }

    /// Ends the session cleanly (no last will).
    pub fn close(self) {
        let _ = self.client.try_disconnect();
        // The event loop sends DISCONNECT, then ends when the client is dropped.
    }

    /// Drops the connection without DISCONNECT: the broker publishes the last will.
    pub fn abort(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::PubAck;

    use super::*;

    fn puback(pkid: u16) -> Event {
        Event::Incoming(Packet::PubAck(PubAck::new(pkid)))
    }

    #[test]
    fn tokens_follow_request_order_through_qos0_and_collisions() {
        let mut acks = Acks::default();
        acks.queued.extend([Some(10), None, Some(12), Some(13)]);
        let out = |pkid| Event::Outgoing(Outgoing::Publish(pkid));
        assert_eq!(acks.on_event(&out(1)), None);
        assert_eq!(acks.on_event(&out(0)), None, "QoS 0 takes no token");
        assert_eq!(acks.on_event(&out(2)), None, "an untracked QoS 1");
        // Packet ID 1 is still in use: the next publication waits for it.
        assert_eq!(acks.on_event(&Event::Outgoing(Outgoing::AwaitAck(1))), None);
        assert_eq!(acks.on_event(&puback(1)), Some(10));
        assert_eq!(acks.on_event(&out(1)), None);
        assert_eq!(acks.on_event(&out(3)), None);
        assert_eq!(acks.on_event(&puback(2)), None, "untracked");
        assert_eq!(acks.on_event(&puback(3)), Some(13));
        assert_eq!(acks.on_event(&puback(1)), Some(12), "the collided one");
        assert_eq!(acks.on_event(&puback(1)), None, "acknowledged once");
        assert!(acks.queued.is_empty() && acks.sent.is_empty());
    }
}
