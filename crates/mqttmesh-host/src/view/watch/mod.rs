//! The MQTT side of a [`MeshView`]: a rumqttc client that subscribes to the out prefix
//! at QoS 0 and hands every message over with its retain flag, and [`settle`], which
//! collects the retained state until it stops changing. The topics of commands to
//! nodes are in [`crate::view::command`].
//!
//! QoS 0 matters: the embedded rumqttd replays at most 100 retained messages to a QoS 1
//! subscription and up to 4096 to a QoS 0 one (see `broker.rs`).
//!
//! After the first connection, a lost connection is reported as
//! [`WatchEvent::Connection`] and retried; the subscription is renewed on every CONNACK.

use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, MqttOptions, NetworkOptions, Outgoing, Packet, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::view::MeshView;

mod options;

use options::classify;
pub use options::{client_id, WatchError, WatchOptions};

/// Pause before the event loop reconnects after a lost connection.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(500);
/// Messages buffered between the connection task and the reader.
const CHANNEL_DEPTH: usize = 1024;

/// One message as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Replayed from the broker's retained store on subscription.
    pub retained: bool,
}

/// What the connection task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A message under a subscribed filter.
    Message(Delivery),
    /// The connection was lost (`up: false`, with the error) or is back (`up: true`).
    Connection {
        /// Whether connected now.
        up: bool,
        /// What happened.
        detail: String,
    },
}

/// A connected, subscribed MQTT client.
#[derive(Debug)]
pub struct Watcher {
    client: AsyncClient,
    events: mpsc::Receiver<WatchEvent>,
    acks: watch::Receiver<u64>,
    published: u64,
    addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Connects and subscribes to `filters` at QoS 0; returns once the broker
    /// acknowledged the subscription.
    pub async fn connect(opts: &WatchOptions, filters: &[String]) -> Result<Watcher, WatchError> {
        let addr = opts.address();
        let mut options = MqttOptions::new(&opts.client_id, &opts.host, opts.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = &opts.credentials {
            options.set_credentials(user, password);
        }
        if let Some(tls) = &opts.tls {
            tls.apply(&mut options);
        }
        let secure = opts.tls.is_some();
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        net.set_connection_timeout(opts.connect_timeout.as_secs().max(1));
        eventloop.set_network_options(net);
        let (tx, events) = mpsc::channel(CHANNEL_DEPTH);
        let (ready_tx, ready_rx) = oneshot::channel();
        let (ack_tx, acks) = watch::channel(0u64);
        let filters: Vec<SubscribeFilter> = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtMostOnce))
            .collect();
        let task_client = client.clone();
        let task_addr = addr.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut up = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) if filters.is_empty() => {
                        if !report_up(&mut ready, &mut up, None, &tx).await {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = task_client.try_subscribe_many(filters.clone());
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let refused = ack.return_codes.contains(&SubscribeReasonCode::Failure);
                        let failure = refused.then(|| WatchError::Refused {
                            addr: task_addr.clone(),
                            reason: "the subscription (check the user's ACL)".into(),
                        });
                        if !report_up(&mut ready, &mut up, failure, &tx).await {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let d = Delivery {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retained: p.retain,
                        };
                        if tx.send(WatchEvent::Message(d)).await.is_err() {
                            break;
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        ack_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Some(classify(&task_addr, secure, e)));
                            break;
                        }
                        if up {
                            up = false;
                            let detail =
                                crate::mqtt_tls::classify(&e, &task_addr, secure, true).to_string();
                            if tx
                                .send(WatchEvent::Connection { up, detail })
                                .await
                                .is_err()
                            {
                                break;
                            }
                        }
                        tokio::time::sleep(RECONNECT_BACKOFF).await;
                    }
                }
            }
        });
        let outcome = tokio::time::timeout(opts.connect_timeout, ready_rx).await;
        let failure = match outcome {
            Ok(Ok(None)) => None,
            Ok(Ok(Some(e))) => Some(e),
            Ok(Err(_)) => Some(WatchError::Closed { addr: addr.clone() }),
            Err(_) => Some(WatchError::Timeout {
                addr: addr.clone(),
                after: opts.connect_timeout,
            }),
        };
        if let Some(e) = failure {
            task.abort();
            return Err(e);
        }
        Ok(Watcher {
            client,
            events,
            acks,
            published: 0,
            addr,
            task,
        })
    }

    /// `host:port` of the broker.
    pub fn address(&self) -> &str {
        &self.addr
    }

    /// The next message or connection change; `None` once the connection task ended.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }

    /// Publishes at QoS 1 (see [`Watcher::flush`]).
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Result<(), WatchError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .map_err(|_| WatchError::Closed {
                addr: self.addr.clone(),
            })?;
        self.published += 1;
        Ok(())
    }

    /// Waits until the broker acknowledged everything published so far.
    pub async fn flush(&mut self, timeout: Duration) -> Result<(), WatchError> {
        let want = self.published;
        let wait = self.acks.wait_for(|&n| n >= want);
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(WatchError::Closed {
                addr: self.addr.clone(),
            }),
            Err(_) => Err(WatchError::Timeout {
                addr: self.addr.clone(),
                after: timeout,
            }),
        }
    }

    /// Disconnects cleanly (waiting at most a second for the DISCONNECT to leave).
    pub async fn disconnect(mut self) {
        if self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reports that the connection is (again) up, or that the first subscription failed;
/// false when the connection task should end.
async fn report_up(
    ready: &mut Option<oneshot::Sender<Option<WatchError>>>,
    up: &mut bool,
    failure: Option<WatchError>,
    tx: &mpsc::Sender<WatchEvent>,
) -> bool {
    if let Some(r) = ready.take() {
        let failed = failure.is_some();
        let _ = r.send(failure);
        *up = !failed;
        return !failed;
    }
    if *up {
        return true;
    }
    *up = true;
    let detail = "reconnected".to_string();
    tx.send(WatchEvent::Connection { up: true, detail })
        .await
        .is_ok()
}

/// Feeds `view` with what `watcher` receives until no message about mesh state
/// ([`crate::view::Stats::state`]) arrived for `quiet`, or `max` passed. Application traffic
/// does not hold it open. The events of this phase are dropped: they describe the
/// state the broker replays, not changes.
pub async fn settle(
    watcher: &mut Watcher,
    view: &mut MeshView,
    quiet: Duration,
    max: Duration,
) -> Result<(), WatchError> {
    let end = Instant::now() + max;
    let mut last_change = Instant::now();
    loop {
        let deadline = (last_change + quiet).min(end);
        let event = tokio::select! {
            e = watcher.recv() => e,
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
        };
        match event {
            Some(WatchEvent::Message(d)) => {
                let before = view.stats().state;
                apply(view, &d);
                if view.stats().state != before {
                    last_change = Instant::now();
                }
            }
            Some(WatchEvent::Connection { .. }) => {}
            None => {
                return Err(WatchError::Closed {
                    addr: watcher.address().to_string(),
                })
            }
        }
    }
}

/// Feeds one delivery to `view` ([`MeshView::apply_retained`] for retained ones).
pub fn apply(view: &mut MeshView, d: &Delivery) -> Vec<crate::view::ViewEvent> {
    let now = std::time::Instant::now();
    if d.retained {
        view.apply_retained(now, &d.topic, &d.payload)
    } else {
        view.apply(now, &d.topic, &d.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt_tls::ConnectError;

    #[tokio::test]
    async fn an_unreachable_broker_is_named() {
        let port = crate::broker::free_port([127, 0, 0, 1].into()).unwrap();
        let opts = WatchOptions::new("127.0.0.1", port, "mqttmesh-test-unreachable");
        let err = Watcher::connect(&opts, &["x/#".into()]).await.unwrap_err();
        assert!(
            matches!(err, WatchError::Connect(ConnectError::Unreachable { .. })),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
