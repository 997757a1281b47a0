//! Node configuration and its validation.
//!
//! Holds the seed's constructor parameters (`../shared/seed/000_c679d718dabd4f7e.txt`
//! "Library initialization") with the defaults of `../shared/spec/compat.md` "Defaults",
//! plus what the original lacked (several networks each with its own password, hidden
//! networks by BSSID, MQTT credentials, a depth limit, timers). Every value is checked by
//! [`Builder::build`], which names the offending field in its error.
//!
//! Setters never panic and never truncate: a string that does not fit its field is
//! remembered as an error for that field (cleared again if the setter is called later
//! with a value that fits), and [`Builder::build`] reports it.

use core::fmt;

use heapless::{String, Vec};

mod broker_tls;

pub use broker_tls::{write_colon_hex, BrokerTls, PinError, SHA1_LEN, SHA256_LEN};

use crate::identity::{IdError, Mac, NodeId};
use crate::time::Duration;

/// Most router networks a node knows.
pub const MAX_NETWORKS: usize = 4;
/// Hard upper bound of `max_depth` (a join reply carries the whole path).
pub const MAX_DEPTH_LIMIT: u8 = 32;
/// Hard upper bound of `max_children`.
pub const MAX_CHILDREN_LIMIT: u8 = 8;
/// Hard upper bound of `outbox_len`: the outbox's compiled-in capacity.
pub const MAX_OUTBOX_LEN: u8 = 8;
/// Default unacknowledged QoS ≥ 1 messages a node keeps.
pub const DEFAULT_OUTBOX_LEN: u8 = 8;

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
/// Default firmware ID (the original has none; set one with [`Builder::firmware`]).
pub const DEFAULT_FIRMWARE_ID: u32 = 0;
/// Default firmware version (set one with [`Builder::firmware`]).
pub const DEFAULT_FIRMWARE_VERSION: &str = "0.0.0";
/// Default broker host (the original has none; set one with [`Builder::broker_host`]).
pub const DEFAULT_BROKER_HOST: &str = "localhost";

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
    /// Wait this long before rescanning when a scan found nothing, or (doubling up to
    /// 8x) once every candidate failed.
    pub retry_backoff: Duration,
    /// MQTT keep-alive of a root's broker session; the broker declares a silent root
    /// dead (and publishes its last will) after 1.5 times this.
    pub mqtt_keepalive: Duration,
    /// How long a relay that lost its uplink keeps its children's links while it tries
    /// its cached alternatives; its children re-join elsewhere only after this.
    /// Zero tears the subtree down at once (the original's behaviour).
    pub uplink_grace: Duration,
    /// While online, scan in the background this often (with up to 25 % jitter) to keep
    /// the cached uplink candidates fresh, so a node whose parent dies re-attaches to a
    /// known alternative without a full scan (`docs/PROTOCOL.md` "Healing"). Zero turns
    /// background scans off: an orphan then tries what its last scan found, and scans
    /// at once when that is older than `CANDIDATE_MAX_AGE` (2 minutes).
    pub candidate_refresh: Duration,
}

impl Timing {
    /// Short timers for tests and quick simulations: keep-alive every second, a link
    /// dead after 4 s of silence, 3 s to associate or connect, 300 ms between scans.
    pub const fn fast() -> Timing {
        Timing {
            scan_timeout: Duration::from_secs(5),
            associate_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            keepalive_interval: Duration::from_millis(1000),
            link_timeout: Duration::from_millis(4000),
            retry_backoff: Duration::from_millis(300),
            mqtt_keepalive: Duration::from_secs(10),
            uplink_grace: Duration::from_secs(6),
            candidate_refresh: Duration::ZERO,
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            scan_timeout: Duration::from_secs(10),
            associate_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            // A silent link (a crashed parent or child) is noticed within 3 s, so an
            // orphan re-attaches within the 5 s ESP-WIFI-MESH documents. The cost: one
            // keep-alive frame (3 bytes on the link, under 100 on the air with the TCP/IP
            // and 802.11 headers) per second in each direction of an idle link: < 200 B/s
            // per link, against megabits of air time.
            keepalive_interval: Duration::from_secs(1),
            link_timeout: Duration::from_secs(3),
            mqtt_keepalive: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(1),
            uplink_grace: Duration::from_secs(20),
            // A scan (≈2 s of dwelling on other channels, between which the radio
            // returns to its own) every 30 s: about 7 % of air time in short slices,
            // as ESP-WIFI-MESH's own periodic parent scans.
            candidate_refresh: Duration::from_secs(30),
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
    /// TLS to the broker, and how its certificate is verified.
    pub mqtt_tls: BrokerTls,
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
    /// Unacknowledged QoS ≥ 1 messages the node keeps for re-sending
    /// (1..=[`MAX_OUTBOX_LEN`]; `docs/PROTOCOL.md` "Outbox").
    pub outbox_len: u8,
    /// Node ID override (the original's `setID`); the chip ID is used otherwise.
    pub node_id: Option<NodeId>,
    /// Timers.
    pub timing: Timing,
    /// Ed25519 public key that OTA v2 manifests must be signed with; `None` accepts
    /// unsigned updates (as the original did).
    pub ota_public_key: Option<[u8; 32]>,
    /// Refuse OTA v2 images whose version is older than the running one.
    pub ota_refuse_downgrade: bool,
}

impl Config {
    /// A builder holding the compat defaults.
    ///
    /// Only the router networks have no default: add at least one with
    /// [`Builder::network`] or [`Builder::hidden_network`].
    pub fn builder() -> Builder {
        Builder {
            config: Config {
                firmware_id: DEFAULT_FIRMWARE_ID,
                firmware_version: text(DEFAULT_FIRMWARE_VERSION),
                networks: Vec::new(),
                mesh_password: text(DEFAULT_MESH_PASSWORD),
                mesh_ssid_base: text(DEFAULT_MESH_SSID_BASE),
                broker_host: text(DEFAULT_BROKER_HOST),
                broker_port: DEFAULT_MQTT_PORT,
                mqtt_tls: BrokerTls::Off,
                mqtt_username: None,
                mqtt_password: None,
                mesh_port: DEFAULT_MESH_PORT,
                in_prefix: text(DEFAULT_IN_PREFIX),
                out_prefix: text(DEFAULT_OUT_PREFIX),
                max_children: DEFAULT_MAX_CHILDREN,
                max_depth: DEFAULT_MAX_DEPTH,
                outbox_len: DEFAULT_OUTBOX_LEN,
                node_id: None,
                timing: Timing::default(),
                ota_public_key: None,
                ota_refuse_downgrade: false,
            },
            broker_port: None,
            errors: Vec::new(),
        }
    }

    /// Checks every rule [`Builder::build`] checks (except string capacity, which the
    /// field types already enforce); for a `Config` assembled or edited by hand, since
    /// its fields are public.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate(self)
    }
}

/// A default that is known to fit its field.
fn text<const N: usize>(s: &str) -> String<N> {
    // Cannot lose anything: only called with the DEFAULT_* constants, each shorter than
    // its field (checked by the `defaults_fit` test).
    fit(s).unwrap_or_default()
}

/// `s` in a `String<N>`, or `None` when it is longer than `N` bytes.
fn fit<const N: usize>(s: &str) -> Option<String<N>> {
    let mut out = String::new();
    out.push_str(s).ok()?;
    Some(out)
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
    /// `mqtt_tls` (a pinned fingerprint)
    MqttTls,
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
    /// `outbox_len`
    OutboxLen,
    /// `node_id`
    NodeId,
    /// `timing`
    Timing,
}

impl fmt::Display for Field {
    /// The field's name as written in the docs: `in_prefix`, `networks[1].password`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Field::FirmwareVersion => "firmware_version",
            Field::Networks => "networks",
            Field::NetworkSsid(i) => return write!(f, "networks[{i}].ssid"),
            Field::NetworkPassword(i) => return write!(f, "networks[{i}].password"),
            Field::NetworkBssid(i) => return write!(f, "networks[{i}].bssid"),
            Field::MeshPassword => "mesh_password",
            Field::MeshSsidBase => "mesh_ssid_base",
            Field::BrokerHost => "broker_host",
            Field::BrokerPort => "broker_port",
            Field::MqttUsername => "mqtt_username",
            Field::MqttPassword => "mqtt_password",
            Field::MqttTls => "mqtt_tls",
            Field::MeshPort => "mesh_port",
            Field::InPrefix => "in_prefix",
            Field::OutPrefix => "out_prefix",
            Field::MaxChildren => "max_children",
            Field::MaxDepth => "max_depth",
            Field::OutboxLen => "outbox_len",
            Field::NodeId => "node_id",
            Field::Timing => "timing",
        };
        f.write_str(name)
    }
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
        write!(f, "invalid {}: {}", self.field, self.reason)
    }
}

impl core::error::Error for ConfigError {}

impl ConfigError {
    fn new(field: Field, reason: &'static str) -> Self {
        ConfigError { field, reason }
    }
}

/// Distinct fields a setter can record an error for: ten single fields, the network
/// list, and an SSID and a password per network.
const MAX_SETTER_ERRORS: usize = 10 + 1 + 2 * MAX_NETWORKS;

// Reasons, shared by the setters (value does not fit) and `build` (value out of range).
const FIRMWARE_VERSION_LEN: &str = "must be 1..=31 bytes";
const TOO_MANY_NETWORKS: &str = "at most 4 networks";
const NO_NETWORK: &str = "at least one network is needed";
const SSID_LEN: &str = "SSID must be 1..=32 bytes";
const HIDDEN_WITHOUT_BSSID: &str = "a hidden network needs a BSSID";
const WPA2_LEN: &str = "WPA2 needs 8..=63 printable ASCII characters or 64 hex digits";
const MESH_PASSWORD_LEN: &str = "WPA2 needs 8..=63 printable ASCII characters";
const SSID_BASE_LEN: &str = "must be 1..=24 bytes";
const SSID_BASE_CHARS: &str = "must not contain spaces or control characters";
const HOST_LEN: &str = "must be 1..=63 bytes";
const HOST_CHARS: &str = "must not contain whitespace or control characters";
const PORT_ZERO: &str = "must not be 0";
const TLS_ON_PLAIN_PORT: &str =
    "1883 is the plain MQTT port but TLS is on; TLS brokers listen on 8883 (the default \
     with TLS when no port is given)";
const PIN_LEN: &str =
    "a pinned fingerprint is 20 bytes (SHA-1) or 32 bytes (SHA-256) of the certificate";
const CREDENTIAL_LEN: &str = "must be at most 64 bytes";
const PASSWORD_WITHOUT_USER: &str = "a password needs a user name";
const PREFIX_LEN: &str = "must be 2..=16 bytes";
const PREFIX_END: &str = "must end with '/'";
const PREFIX_START: &str = "must not start with '/'";
const PREFIX_CHARS: &str = "must not contain '+', '#' or NUL";
const PREFIX_OVERLAP: &str = "must differ from in_prefix and neither may start with the other";
const CHILDREN_RANGE: &str = "must be 1..=8";
const DEPTH_RANGE: &str = "must be 1..=32";
const OUTBOX_RANGE: &str = "must be 1..=8";
const GRACE_ORDER: &str = "uplink_grace must be at most 10 times link_timeout";
const TIMING_ZERO: &str = "every duration must be non-zero";
const KEEPALIVE_ORDER: &str = "keepalive_interval must be shorter than link_timeout";
const REFRESH_FLOOR: &str =
    "candidate_refresh must be zero (background scans off) or at least 2 s (a scan takes about that long)";
/// Shortest non-zero [`Timing::candidate_refresh`]: an ESP32 scan of all channels
/// takes about 2 s, so anything shorter would keep the radio scanning.
pub const MIN_CANDIDATE_REFRESH: Duration = Duration::from_secs(2);

/// Builds a [`Config`]; setters take `&str` and the first problem is reported by
/// [`Builder::build`]. Setters are chainable (`self -> Self`).
#[derive(Clone, Debug)]
pub struct Builder {
    /// Values so far; `config.broker_port` is replaced in `build`.
    config: Config,
    /// The port given to [`Builder::broker`], if any.
    broker_port: Option<u16>,
    /// Values the setters could not store, at most one per field, oldest first.
    errors: Vec<ConfigError, MAX_SETTER_ERRORS>,
}

impl Builder {
    /// Firmware ID and version.
    pub fn firmware(mut self, id: u32, version: &str) -> Self {
        self.config.firmware_id = id;
        if let Some(v) = self.fit(Field::FirmwareVersion, version, FIRMWARE_VERSION_LEN) {
            self.config.firmware_version = v;
        }
        self
    }
    /// Adds a router network by SSID with its own password (empty for open).
    pub fn network(self, ssid: &str, password: &str) -> Self {
        self.add_network(ssid, None, password)
    }
    /// Adds a hidden router network, matched by BSSID (`ssid` may be empty).
    pub fn hidden_network(self, ssid: &str, bssid: Mac, password: &str) -> Self {
        self.add_network(ssid, Some(bssid), password)
    }
    /// Mesh password.
    pub fn mesh_password(mut self, password: &str) -> Self {
        if let Some(p) = self.fit(Field::MeshPassword, password, MESH_PASSWORD_LEN) {
            self.config.mesh_password = p;
        }
        self
    }
    /// Mesh SSID base.
    pub fn mesh_ssid_base(mut self, base: &str) -> Self {
        if let Some(b) = self.fit(Field::MeshSsidBase, base, SSID_BASE_LEN) {
            self.config.mesh_ssid_base = b;
        }
        self
    }
    /// Broker host and port. Without this the port defaults to 1883 (8883 with TLS).
    pub fn broker(self, host: &str, port: u16) -> Self {
        let mut b = self.broker_host(host);
        b.broker_port = Some(port);
        b
    }
    /// Broker host only; the port follows the TLS default (unless [`Builder::broker`]
    /// already gave one, which is kept).
    pub fn broker_host(mut self, host: &str) -> Self {
        if let Some(h) = self.fit(Field::BrokerHost, host, HOST_LEN) {
            self.config.broker_host = h;
        }
        self
    }
    /// TLS to the broker ([`BrokerTls::Off`] by default). With TLS on and no port given,
    /// the port is 8883; port 1883 given explicitly with TLS on is refused by `build`.
    pub fn mqtt_tls(mut self, tls: BrokerTls) -> Self {
        self.clear(Field::MqttTls);
        self.config.mqtt_tls = tls;
        self
    }
    /// TLS to the broker, pinning its certificate by fingerprint: the 20-byte SHA-1 of
    /// the original library, or a 32-byte SHA-256. Another length is an error for
    /// `mqtt_tls`, reported by `build`.
    pub fn mqtt_fingerprint(mut self, fingerprint: &[u8]) -> Self {
        match BrokerTls::from_fingerprint(fingerprint) {
            Ok(tls) => self = self.mqtt_tls(tls),
            Err(_) => self.record(Field::MqttTls, PIN_LEN),
        }
        self
    }
    /// MQTT user name and password. An empty string means "none".
    pub fn mqtt_credentials(mut self, username: &str, password: &str) -> Self {
        self.config.mqtt_username = self.fit_optional(Field::MqttUsername, username);
        self.config.mqtt_password = self.fit_optional(Field::MqttPassword, password);
        self
    }
    /// Mesh port.
    pub fn mesh_port(mut self, port: u16) -> Self {
        self.config.mesh_port = port;
        self
    }
    /// In-topic prefix.
    pub fn in_prefix(mut self, prefix: &str) -> Self {
        if let Some(p) = self.fit(Field::InPrefix, prefix, PREFIX_LEN) {
            self.config.in_prefix = p;
        }
        self
    }
    /// Out-topic prefix.
    pub fn out_prefix(mut self, prefix: &str) -> Self {
        if let Some(p) = self.fit(Field::OutPrefix, prefix, PREFIX_LEN) {
            self.config.out_prefix = p;
        }
        self
    }
    /// Children per node.
    pub fn max_children(mut self, n: u8) -> Self {
        self.config.max_children = n;
        self
    }
    /// Maximum depth.
    pub fn max_depth(mut self, n: u8) -> Self {
        self.config.max_depth = n;
        self
    }
    /// Unacknowledged QoS ≥ 1 messages kept for re-sending.
    pub fn outbox_len(mut self, n: u8) -> Self {
        self.config.outbox_len = n;
        self
    }
    /// Node ID override.
    pub fn node_id(mut self, id: &str) -> Self {
        match NodeId::new(id) {
            Ok(id) => {
                self.clear(Field::NodeId);
                self.config.node_id = Some(id);
            }
            Err(e) => self.record(Field::NodeId, id_reason(e)),
        }
        self
    }
    /// Only accept OTA v2 updates signed with this Ed25519 public key.
    pub fn ota_public_key(mut self, key: [u8; 32]) -> Self {
        self.config.ota_public_key = Some(key);
        self
    }
    /// Refuse OTA v2 downgrades.
    pub fn ota_refuse_downgrade(mut self, on: bool) -> Self {
        self.config.ota_refuse_downgrade = on;
        self
    }
    /// Timers.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.config.timing = timing;
        self
    }
    /// Validates everything; the first problem found, naming its field.
    ///
    /// Values a setter could not store are reported first (oldest first), then the
    /// fields are checked in the order [`Config`] declares them.
    pub fn build(self) -> Result<Config, ConfigError> {
        if let Some(e) = self.errors.first() {
            return Err(*e);
        }
        let mut config = self.config;
        config.broker_port = self.broker_port.unwrap_or(if config.mqtt_tls.is_on() {
            DEFAULT_MQTTS_PORT
        } else {
            DEFAULT_MQTT_PORT
        });
        validate(&config)?;
        Ok(config)
    }

    fn add_network(mut self, ssid: &str, bssid: Option<Mac>, password: &str) -> Self {
        let i = self.config.networks.len();
        if i == MAX_NETWORKS {
            self.record(Field::Networks, TOO_MANY_NETWORKS);
            return self;
        }
        // On a value that does not fit, the network is still added (with the field
        // empty) so later networks keep the index the user counts.
        let network = Network {
            ssid: self
                .fit(Field::NetworkSsid(i), ssid, SSID_LEN)
                .unwrap_or_default(),
            password: self
                .fit(Field::NetworkPassword(i), password, WPA2_LEN)
                .unwrap_or_default(),
            bssid,
            hidden: bssid.is_some(),
        };
        // Cannot fail: `i < MAX_NETWORKS` was checked above.
        let _ = self.config.networks.push(network);
        self
    }

    /// `value` in a `String<N>`; records `reason` for `field` if it does not fit.
    fn fit<const N: usize>(
        &mut self,
        field: Field,
        value: &str,
        reason: &'static str,
    ) -> Option<String<N>> {
        let fitted = fit(value);
        match fitted {
            Some(_) => self.clear(field),
            None => self.record(field, reason),
        }
        fitted
    }

    /// An optional credential: empty is `None`.
    fn fit_optional(&mut self, field: Field, value: &str) -> Option<String<64>> {
        if value.is_empty() {
            self.clear(field);
            return None;
        }
        self.fit(field, value, CREDENTIAL_LEN)
    }

    fn record(&mut self, field: Field, reason: &'static str) {
        self.clear(field);
        // Cannot fail: `clear` removed this field's entry and there is at most one entry
        // per distinct field, of which there are MAX_SETTER_ERRORS.
        let _ = self.errors.push(ConfigError::new(field, reason));
    }

    fn clear(&mut self, field: Field) {
        self.errors.retain(|e| e.field != field);
    }
}

fn id_reason(e: IdError) -> &'static str {
    match e {
        IdError::Empty => "must not be empty",
        IdError::TooLong => "must be at most 24 bytes",
        IdError::InvalidChar => "must be printable ASCII without spaces, '/', '+' or '#'",
    }
}

/// Every rule of the module doc, in field order; the first violation.
fn validate(c: &Config) -> Result<(), ConfigError> {
    let check = |ok: bool, field: Field, reason: &'static str| {
        if ok {
            Ok(())
        } else {
            Err(ConfigError::new(field, reason))
        }
    };
    let len = c.firmware_version.len();
    check(
        (1..=31).contains(&len),
        Field::FirmwareVersion,
        FIRMWARE_VERSION_LEN,
    )?;
    check(!c.networks.is_empty(), Field::Networks, NO_NETWORK)?;
    for (i, network) in c.networks.iter().enumerate() {
        validate_network(i, network)?;
    }
    let p = &c.mesh_password;
    let ok = (8..=63).contains(&p.len()) && p.bytes().all(is_printable);
    check(ok, Field::MeshPassword, MESH_PASSWORD_LEN)?;
    let base = &c.mesh_ssid_base;
    check(!base.is_empty(), Field::MeshSsidBase, SSID_BASE_LEN)?;
    let ok = !base.chars().any(|ch| ch == ' ' || ch.is_control());
    check(ok, Field::MeshSsidBase, SSID_BASE_CHARS)?;
    let host = &c.broker_host;
    check((1..=63).contains(&host.len()), Field::BrokerHost, HOST_LEN)?;
    let ok = !host.chars().any(|ch| ch.is_whitespace() || ch.is_control());
    check(ok, Field::BrokerHost, HOST_CHARS)?;
    check(c.broker_port != 0, Field::BrokerPort, PORT_ZERO)?;
    // With TLS on, 1883 can only come from an explicit port (the default is 8883).
    let ok = !(c.mqtt_tls.is_on() && c.broker_port == DEFAULT_MQTT_PORT);
    check(ok, Field::BrokerPort, TLS_ON_PLAIN_PORT)?;
    let ok = c.mqtt_password.is_none() || c.mqtt_username.is_some();
    check(ok, Field::MqttPassword, PASSWORD_WITHOUT_USER)?;
    check(c.mesh_port != 0, Field::MeshPort, PORT_ZERO)?;
    validate_prefix(&c.in_prefix, Field::InPrefix)?;
    validate_prefix(&c.out_prefix, Field::OutPrefix)?;
    // The root subscribes to `<in>#`: an out prefix under the in prefix (or the other
    // way round) would feed the nodes' own answers back to them.
    let (i, o) = (c.in_prefix.as_str(), c.out_prefix.as_str());
    let ok = !i.starts_with(o) && !o.starts_with(i);
    check(ok, Field::OutPrefix, PREFIX_OVERLAP)?;
    let ok = (1..=MAX_CHILDREN_LIMIT).contains(&c.max_children);
    check(ok, Field::MaxChildren, CHILDREN_RANGE)?;
    let ok = (1..=MAX_DEPTH_LIMIT).contains(&c.max_depth);
    check(ok, Field::MaxDepth, DEPTH_RANGE)?;
    let ok = (1..=MAX_OUTBOX_LEN).contains(&c.outbox_len);
    check(ok, Field::OutboxLen, OUTBOX_RANGE)?;
    validate_timing(&c.timing)
}

fn validate_network(i: usize, n: &Network) -> Result<(), ConfigError> {
    if n.hidden && n.bssid.is_none() {
        return Err(ConfigError::new(
            Field::NetworkBssid(i),
            HIDDEN_WITHOUT_BSSID,
        ));
    }
    if !n.hidden && n.ssid.is_empty() {
        return Err(ConfigError::new(Field::NetworkSsid(i), SSID_LEN));
    }
    let p = n.password.as_bytes();
    let passphrase = (8..=63).contains(&p.len()) && p.iter().copied().all(is_printable);
    let psk = p.len() == 64 && p.iter().all(u8::is_ascii_hexdigit);
    if !(p.is_empty() || passphrase || psk) {
        return Err(ConfigError::new(Field::NetworkPassword(i), WPA2_LEN));
    }
    Ok(())
}

fn validate_prefix(prefix: &str, field: Field) -> Result<(), ConfigError> {
    let reason = if !(2..=16).contains(&prefix.len()) {
        PREFIX_LEN
    } else if !prefix.ends_with('/') {
        PREFIX_END
    } else if prefix.starts_with('/') {
        PREFIX_START
    } else if prefix.bytes().any(|c| matches!(c, b'+' | b'#' | 0)) {
        PREFIX_CHARS
    } else {
        return Ok(());
    };
    Err(ConfigError::new(field, reason))
}

fn validate_timing(t: &Timing) -> Result<(), ConfigError> {
    let all = [
        t.scan_timeout,
        t.associate_timeout,
        t.connect_timeout,
        t.keepalive_interval,
        t.link_timeout,
        t.retry_backoff,
        t.mqtt_keepalive,
    ];
    if all.contains(&Duration::ZERO) {
        return Err(ConfigError::new(Field::Timing, TIMING_ZERO));
    }
    if t.keepalive_interval >= t.link_timeout {
        return Err(ConfigError::new(Field::Timing, KEEPALIVE_ORDER));
    }
    // A child holds its link for the grace period without a path to the broker; an
    // unbounded one would strand a subtree behind a relay that never recovers.
    if t.uplink_grace > t.link_timeout.mul_div(10, 1) {
        return Err(ConfigError::new(Field::Timing, GRACE_ORDER));
    }
    if t.candidate_refresh != Duration::ZERO && t.candidate_refresh < MIN_CANDIDATE_REFRESH {
        return Err(ConfigError::new(Field::Timing, REFRESH_FLOOR));
    }
    Ok(())
}

/// WPA2 passphrase characters: printable ASCII, space included.
fn is_printable(c: u8) -> bool {
    (0x20..=0x7E).contains(&c)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn defaults_fit() {
        assert!(fit::<32>(DEFAULT_FIRMWARE_VERSION).is_some());
        assert!(fit::<64>(DEFAULT_MESH_PASSWORD).is_some());
        assert!(fit::<24>(DEFAULT_MESH_SSID_BASE).is_some());
        assert!(fit::<64>(DEFAULT_BROKER_HOST).is_some());
        assert!(fit::<16>(DEFAULT_IN_PREFIX).is_some());
        assert!(fit::<16>(DEFAULT_OUT_PREFIX).is_some());
    }

    #[test]
    fn a_later_setter_call_clears_an_earlier_overflow() {
        let b = Config::builder()
            .network("home", "")
            .in_prefix(&"x".repeat(17));
        assert_eq!(b.clone().build().unwrap_err().field, Field::InPrefix);
        assert!(b.in_prefix("mesh-in/").build().is_ok());
    }

    #[test]
    fn setter_errors_come_oldest_first() {
        let err = Config::builder()
            .network("home", "")
            .out_prefix(&"o".repeat(17))
            .mesh_password(&"p".repeat(65))
            .build()
            .unwrap_err();
        assert_eq!(err.field, Field::OutPrefix);
    }

    #[test]
    fn every_field_can_hold_a_setter_error_at_once() {
        let long = "x".repeat(100);
        let mut b = Config::builder()
            .firmware(1, &long)
            .mesh_password(&long)
            .mesh_ssid_base(&long)
            .broker_host(&long)
            .mqtt_credentials(&long, &long)
            .mqtt_fingerprint(&[0; 5])
            .in_prefix(&long)
            .out_prefix(&long)
            .node_id(&long);
        for _ in 0..=MAX_NETWORKS {
            b = b.network(&long, &long);
        }
        assert_eq!(b.errors.len(), MAX_SETTER_ERRORS);
        assert_eq!(b.build().unwrap_err().field, Field::FirmwareVersion);
    }
}
