//! Node configuration and its validation.
//!
//! Holds the seed's constructor parameters (`../shared/seed/000_c679d718dabd4f7e.txt`
//! "Library initialization") with the defaults of `../shared/spec/compat.md` "Defaults",
//! plus what the original lacked (several networks each with its own password, hidden
//! networks by BSSID, MQTT credentials, a depth limit, timers). Every value is checked by
//! [`Builder::build`], which names the offending field in its error.

use core::fmt;

use heapless::{String, Vec};

use crate::identity::{Mac, NodeId};
use crate::time::Duration;

/// Most router networks a node knows.
pub const MAX_NETWORKS: usize = 4;
/// Hard upper bound of `max_depth` (a join reply carries the whole path).
pub const MAX_DEPTH_LIMIT: u8 = 32;
/// Hard upper bound of `max_children`.
pub const MAX_CHILDREN_LIMIT: u8 = 8;

/// Default in-topic prefix.
pub const DEFAULT_IN_PREFIX: &str = "esp8266-in/";
/// Default out-topic prefix.
pub const DEFAULT_OUT_PREFIX: &str = "esp8266-out/";
/// Default MQTT port.
pub const DEFAULT_MQTT_PORT: u16 = 1883;
/// Default MQTT port with TLS.
pub const DEFAULT_MQTTS_PORT: u16 = 8883;
/// Default mesh port.
pub const DEFAULT_MESH_PORT: u16 = 1884;
/// Default mesh SSID base.
pub const DEFAULT_MESH_SSID_BASE: &str = "esp8266_mqtt_mesh";
/// Default mesh password.
pub const DEFAULT_MESH_PASSWORD: &str = "ESP8266MQTTMesh";
/// Default children per node.
pub const DEFAULT_MAX_CHILDREN: u8 = 4;
/// Default maximum depth (the root, on the router, has depth 1).
pub const DEFAULT_MAX_DEPTH: u8 = 16;

/// A router network the node may join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// SSID (1..=32 bytes; may be empty only when `bssid` is given for a hidden network).
    pub ssid: String<32>,
    /// WPA2 passphrase (8..=63 ASCII or 64 hex digits), or empty for an open network.
    pub password: String<64>,
    /// Match this BSSID (required for a hidden network, optional otherwise).
    pub bssid: Option<Mac>,
    /// The network hides its SSID; it is matched by BSSID.
    pub hidden: bool,
}

/// The node's timers. Defaults suit real radios; tests and simulations shorten them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Give up on a scan that has not reported after this long.
    pub scan_timeout: Duration,
    /// Give up on an association (and address) after this long.
    pub associate_timeout: Duration,
    /// Give up on an MQTT connection or a link handshake after this long.
    pub connect_timeout: Duration,
    /// Send a keep-alive on an idle link this often.
    pub keepalive_interval: Duration,
    /// Declare a link dead after this long without any frame.
    pub link_timeout: Duration,
    /// Wait this long before rescanning once every candidate failed (doubles up to 8x).
    pub retry_backoff: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            scan_timeout: Duration::from_secs(10),
            associate_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            link_timeout: Duration::from_secs(15),
            retry_backoff: Duration::from_secs(2),
        }
    }
}

/// A validated node configuration. Build one with [`Config::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Identifies the codebase (OTA targets it). Printed as at least 4 upper-case hex digits.
    pub firmware_id: u32,
    /// Free-form version string (1..=31 bytes).
    pub firmware_version: String<32>,
    /// Router networks, in order of preference (1..=[`MAX_NETWORKS`]).
    pub networks: Vec<Network, MAX_NETWORKS>,
    /// Mesh password: WPA2 passphrase of every node's AP and the mesh key's source (8..=63).
    pub mesh_password: String<64>,
    /// Base of every node's hidden AP SSID (1..=24 bytes).
    pub mesh_ssid_base: String<24>,
    /// Broker host name or address (1..=63 bytes).
    pub broker_host: String<64>,
    /// Broker port (non-zero).
    pub broker_port: u16,
    /// TLS to the broker.
    pub mqtt_tls: bool,
    /// MQTT user name.
    pub mqtt_username: Option<String<64>>,
    /// MQTT password (requires a user name).
    pub mqtt_password: Option<String<64>>,
    /// TCP port a node's AP serves children on (non-zero).
    pub mesh_port: u16,
    /// Prefix of topics to nodes (ends with `/`, 2..=16 bytes, no wildcards).
    pub in_prefix: String<16>,
    /// Prefix of topics from nodes (same rules, different from `in_prefix`).
    pub out_prefix: String<16>,
    /// Children a node's AP accepts (1..=[`MAX_CHILDREN_LIMIT`]).
    pub max_children: u8,
    /// Deepest a node may sit (root = 1; 1..=[`MAX_DEPTH_LIMIT`]).
    pub max_depth: u8,
    /// Node ID override (the original's `setID`); the chip ID is used otherwise.
    pub node_id: Option<NodeId>,
    /// Timers.
    pub timing: Timing,
}

impl Config {
    /// A builder holding the compat defaults.
    pub fn builder() -> Builder {
        todo!()
    }
}

/// The field a [`ConfigError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// `firmware_version`
    FirmwareVersion,
    /// `networks` (the list itself: empty or too long)
    Networks,
    /// `networks[i].ssid`
    NetworkSsid(usize),
    /// `networks[i].password`
    NetworkPassword(usize),
    /// `networks[i].bssid` (hidden network without BSSID)
    NetworkBssid(usize),
    /// `mesh_password`
    MeshPassword,
    /// `mesh_ssid_base`
    MeshSsidBase,
    /// `broker_host`
    BrokerHost,
    /// `broker_port`
    BrokerPort,
    /// `mqtt_username`
    MqttUsername,
    /// `mqtt_password`
    MqttPassword,
    /// `mesh_port`
    MeshPort,
    /// `in_prefix`
    InPrefix,
    /// `out_prefix`
    OutPrefix,
    /// `max_children`
    MaxChildren,
    /// `max_depth`
    MaxDepth,
    /// `node_id`
    NodeId,
    /// `timing`
    Timing,
}

/// A configuration value that cannot work, with the field it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending field.
    pub field: Field,
    /// What is wrong with it, for people.
    pub reason: &'static str,
}

impl fmt::Display for ConfigError {
    /// e.g. `invalid in_prefix: must end with '/'`, `invalid networks[1].password: WPA2 needs 8..=63 characters`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        {
            let _ = (self, f);
            todo!()
        }
    }
}

impl core::error::Error for ConfigError {}

/// Builds a [`Config`]; setters take `&str` and the first problem is reported by
/// [`Builder::build`]. Setters are chainable (`self -> Self`).
#[derive(Clone, Debug)]
pub struct Builder {
    _todo: (),
}

impl Builder {
    /// Firmware ID and version.
    pub fn firmware(self, id: u32, version: &str) -> Self {
        todo!("{id}{version}")
    }
    /// Adds a router network by SSID with its own password (empty for open).
    pub fn network(self, ssid: &str, password: &str) -> Self {
        todo!("{ssid}{password}")
    }
    /// Adds a hidden router network, matched by BSSID (`ssid` may be empty).
    pub fn hidden_network(self, ssid: &str, bssid: Mac, password: &str) -> Self {
        todo!("{ssid}{bssid}{password}")
    }
    /// Mesh password.
    pub fn mesh_password(self, password: &str) -> Self {
        todo!("{password}")
    }
    /// Mesh SSID base.
    pub fn mesh_ssid_base(self, base: &str) -> Self {
        todo!("{base}")
    }
    /// Broker host and port. Without this the port defaults to 1883 (8883 with TLS).
    pub fn broker(self, host: &str, port: u16) -> Self {
        todo!("{host}{port}")
    }
    /// Broker host only; the port follows the TLS default.
    pub fn broker_host(self, host: &str) -> Self {
        todo!("{host}")
    }
    /// TLS to the broker.
    pub fn mqtt_tls(self, on: bool) -> Self {
        todo!("{on}")
    }
    /// MQTT user name and password.
    pub fn mqtt_credentials(self, username: &str, password: &str) -> Self {
        todo!("{username}{password}")
    }
    /// Mesh port.
    pub fn mesh_port(self, port: u16) -> Self {
        todo!("{port}")
    }
    /// In-topic prefix.
    pub fn in_prefix(self, prefix: &str) -> Self {
        todo!("{prefix}")
    }
    /// Out-topic prefix.
    pub fn out_prefix(self, prefix: &str) -> Self {
        todo!("{prefix}")
    }
    /// Children per node.
    pub fn max_children(self, n: u8) -> Self {
        todo!("{n}")
    }
    /// Maximum depth.
    pub fn max_depth(self, n: u8) -> Self {
        todo!("{n}")
    }
    /// Node ID override.
    pub fn node_id(self, id: &str) -> Self {
        todo!("{id}")
    }
    /// Timers.
    pub fn timing(self, timing: Timing) -> Self {
        todo!("{timing:?}")
    }
    /// Validates everything; the first problem found, naming its field.
    pub fn build(self) -> Result<Config, ConfigError> {
        todo!()
    }
}
