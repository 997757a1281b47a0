//! An MQTT client that watches what the mesh publishes, as an outside user would:
//! subscribed to `<out>#` at the broker, it counts demo-app counters (each distinct
//! `(node, seq)` once) and keeps the retained state and a bounded message log.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};

use crate::mqtt_tls::{classify, ClientTls, ConnectError};

/// How a demo-app counter topic ends (`<out><ID>/counter`).
const COUNTER_SUFFIX: &str = "/counter";
const _: () = assert!(COUNTER_SUFFIX.len() == crate::app::COUNTER.len() + 1);

/// Most messages kept in the log.
pub const LOG_LIMIT: usize = 200_000;

/// One observed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Retain flag as delivered (set for retained messages sent on subscription).
    pub retain: bool,
}

#[derive(Debug, Default)]
struct State {
    counters: HashMap<String, HashSet<u64>>,
    duplicates: u64,
    retained: HashMap<String, Vec<u8>>,
    log: Vec<Message>,
    subscribed: bool,
    /// The last connection failure, and whether it needs a configuration change.
    failure: Option<ConnectError>,
}

/// A running observer.
#[derive(Debug)]
pub struct Observer {
    state: Arc<Mutex<State>>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Connects to `broker` and subscribes to `<out_prefix>#`; returns once subscribed
    /// (or after 10 s with an error).
    pub async fn start(
        broker: SocketAddr,
        out_prefix: &str,
        client_id: &str,
    ) -> Result<Observer, String> {
        Self::start_with_credentials(broker, out_prefix, client_id, None).await
    }

    /// [`Observer::start`] logging in with `(user, password)`.
    pub async fn start_with_credentials(
        broker: SocketAddr,
        out_prefix: &str,
        client_id: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Observer, String> {
        Self::start_secure(broker, out_prefix, client_id, credentials, None)
            .await
            .map_err(|e| e.to_string())
    }

    /// [`Observer::start_with_credentials`] over `tls` when given. A wrong login, pin or
    /// certificate, or TLS on the wrong kind of port, fails at once with its
    /// [`ConnectError`] text.
    pub async fn start_secure(
        broker: SocketAddr,
        out_prefix: &str,
        client_id: &str,
        credentials: Option<(&str, &str)>,
        tls: Option<&ClientTls>,
    ) -> Result<Observer, ConnectError> {
        let mut options = MqttOptions::new(client_id, broker.ip().to_string(), broker.port());
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(1 << 20, 1 << 20);
        if let Some((user, password)) = credentials {
            options.set_credentials(user, password);
        }
        if let Some(tls) = tls {
            tls.apply(&mut options);
        }
        let secure = tls.is_some();
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        eventloop.set_network_options(net);
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let out = out_prefix.to_string();
        let again = client.clone();
        let filter = format!("{out_prefix}#");
        let task = tokio::spawn(async move {
            let mut connected = false;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        connected = true;
                        // A reconnect after the broker restarted starts a clean session:
                        // subscribe again (the first subscription is made below).
                        if lock(&st).subscribed {
                            let _ = again.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => lock(&st).subscribed = true,
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        record(&st, &out, &p.topic, &p.payload, p.retain)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let why = classify(&e, &broker.to_string(), secure, connected);
                        tracing::debug!(target: "mqttmesh::observer", "connection: {why}; retrying");
                        lock(&st).failure = Some(why);
                        connected = false;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let other = |reason: String| ConnectError::Other {
            addr: broker.to_string(),
            reason,
        };
        client
            .subscribe(format!("{out_prefix}#"), QoS::AtLeastOnce)
            .await
            .map_err(|e| other(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !lock(&state).subscribed {
            let failure = lock(&state).failure.clone();
            if let Some(why) = failure.as_ref().filter(|f| f.is_configuration()) {
                task.abort();
                return Err(why.clone());
            }
            if tokio::time::Instant::now() > deadline {
                task.abort();
                return Err(match failure {
                    Some(last) => last,
                    None => other("no SUBACK within 10 s".into()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Observer {
            state,
            client,
            task,
        })
    }

    /// Distinct counter messages seen.
    pub fn delivered(&self) -> u64 {
        lock(&self.state)
            .counters
            .values()
            .map(|s| s.len() as u64)
            .sum()
    }

    /// Distinct counter messages seen from node `id`.
    pub fn delivered_from(&self, id: &str) -> u64 {
        lock(&self.state)
            .counters
            .get(id)
            .map_or(0, |s| s.len() as u64)
    }

    /// How many of node `id`'s counter messages numbered in `seqs` were not seen.
    pub fn missing_from(&self, id: &str, seqs: std::ops::Range<u64>) -> u64 {
        let st = lock(&self.state);
        let seen = st.counters.get(id);
        seqs.filter(|s| !seen.is_some_and(|set| set.contains(s)))
            .count() as u64
    }

    /// Counter messages seen more than once.
    pub fn duplicates(&self) -> u64 {
        lock(&self.state).duplicates
    }

    /// The last retained payload seen on `topic` (an empty one clears it).
    pub fn retained(&self, topic: &str) -> Option<Vec<u8>> {
        lock(&self.state).retained.get(topic).cloned()
    }

    /// Messages seen so far whose topic satisfies `pred`.
    pub fn messages(&self, pred: impl Fn(&str) -> bool) -> Vec<Message> {
        lock(&self.state)
            .log
            .iter()
            .filter(|m| pred(&m.topic))
            .cloned()
            .collect()
    }

    /// Publishes as an outside client.
    pub async fn publish(&self, topic: &str, payload: &[u8], retain: bool) -> Result<(), String> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits until `cond` holds on this observer, or `timeout` passes; whether it held.
    pub async fn wait_for(&self, timeout: Duration, cond: impl Fn(&Observer) -> bool) -> bool {
        crate::mesh::until(timeout, || cond(self)).await
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn record(state: &Mutex<State>, out: &str, topic: &str, payload: &[u8], retain: bool) {
    let mut st = lock(state);
    if let Some(id) = topic
        .strip_prefix(out)
        .and_then(|rest| rest.strip_suffix(COUNTER_SUFFIX))
    {
        if let Some(seq) = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            if !st.counters.entry(id.to_string()).or_default().insert(seq) {
                st.duplicates += 1;
            }
        }
    }
    if retain || topic.contains("/info/") {
        if payload.is_empty() {
            st.retained.remove(topic);
        } else {
            st.retained.insert(topic.to_string(), payload.to_vec());
        }
    }
    if st.log.len() < LOG_LIMIT {
        st.log.push(Message {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            retain,
        });
    }
}
