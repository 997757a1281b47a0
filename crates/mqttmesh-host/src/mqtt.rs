//! The broker session of a root node, over rumqttc.
//!
//! The node asks for a session with `Action::ConnectMqtt`; this module opens it with the
//! node's last will, forwards connection changes and messages into the node task as
//! [`Input::Mqtt`], and carries subscriptions and publications out. With TLS on
//! (`config.mqtt_tls`) it connects over the [`ClientTls`] the mesh built; a failed
//! connection is reported in the words of [`crate::mqtt_tls::ConnectError`].

use std::net::SocketAddr;
use std::time::Duration;

use mqttmesh_core::node::Publish;
use mqttmesh_core::Config;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, NetworkOptions, Packet, QoS};
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
                    Ok(_) => {}
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
        Session { gen, client, task }
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
        self.client
            .try_publish(
                p.topic.as_str(),
                qos,
                p.msg_type.retain(),
                p.payload.to_vec(),
            )
            .is_ok()
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
