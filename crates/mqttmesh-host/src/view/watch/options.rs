//! Where a [`super::Watcher`] connects, and why it may fail.

use std::time::Duration;

use rumqttc::ConnectionError;

use crate::mqtt_tls::{classify as classify_connect, ClientTls, ConnectError};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Broker host name or IP.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT user name and password.
    pub credentials: Option<(String, String)>,
    /// TLS to the broker (`None`: plain MQTT).
    pub tls: Option<ClientTls>,
    /// Client ID (see [`client_id`]).
    pub client_id: String,
    /// How long connecting and subscribing may take.
    pub connect_timeout: Duration,
}

impl WatchOptions {
    /// Options for `host:port` without credentials or TLS, a 5 s connect timeout.
    pub fn new(host: &str, port: u16, client_id: &str) -> WatchOptions {
        WatchOptions {
            host: host.to_string(),
            port,
            credentials: None,
            tls: None,
            client_id: client_id.to_string(),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A client ID unique to this process and call: `mqttmesh-<role>-<hex>`.
pub fn client_id(role: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tag = (std::process::id() << 20) ^ nanos;
    let role: String = role
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    format!("mqttmesh-{role}-{tag:08x}")
}

/// Why watching failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The connection failed: unreachable, login or TLS refused (see [`ConnectError`]).
    #[error(transparent)]
    Connect(ConnectError),
    /// The broker refused the subscription.
    #[error("the MQTT broker at {addr} refused {reason}")]
    Refused {
        /// `host:port`.
        addr: String,
        /// What was refused and the broker's code.
        reason: String,
    },
    /// No CONNACK/SUBACK or PUBACK in time.
    #[error("the MQTT broker at {addr} did not answer within {after:?}")]
    Timeout {
        /// `host:port`.
        addr: String,
        /// How long we waited.
        after: Duration,
    },
    /// The connection task ended.
    #[error("the connection to the MQTT broker at {addr} is closed")]
    Closed {
        /// `host:port`.
        addr: String,
    },
}

/// A failure of the first connection (before the subscription was acknowledged).
pub(super) fn classify(addr: &str, tls: bool, e: ConnectionError) -> WatchError {
    match e {
        ConnectionError::NetworkTimeout => WatchError::Timeout {
            addr: addr.to_string(),
            after: Duration::ZERO,
        },
        other => WatchError::Connect(classify_connect(&other, addr, tls, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_distinct_and_broker_safe() {
        let a = client_id("topology");
        let b = client_id("topo/+#logy");
        assert!(a.starts_with("mqttmesh-topology-"), "{a}");
        assert!(!b.contains(['/', '+', '#']), "{b}");
        assert_eq!(WatchOptions::new("::1", 1883, "x").address(), "[::1]:1883");
    }
}
