//! The node configuration flags, shared by every command that configures nodes.

use anyhow::{anyhow, Result};
use clap::Args;
use mqttmesh_core::config::{self, Config, Field, Timing};

use crate::tlsflags::TlsFlags;

/// Node configuration (same names wherever a command configures nodes).
#[derive(Debug, Clone, Args)]
pub struct NodeFlags {
    /// Firmware ID, hex (with or without 0x).
    #[arg(long, default_value = "1337", value_name = "HEX")]
    pub firmware_id: String,
    /// Firmware version string.
    #[arg(long, default_value = "0.1", value_name = "STR")]
    pub firmware_version: String,
    /// Mesh password (WPA2 passphrase of every node's hidden AP).
    #[arg(long, default_value = config::DEFAULT_MESH_PASSWORD)]
    pub mesh_password: String,
    /// Base of the nodes' hidden SSIDs.
    #[arg(long, default_value = config::DEFAULT_MESH_SSID_BASE)]
    pub mesh_ssid_base: String,
    /// Prefix of topics to nodes.
    #[arg(long, default_value = config::DEFAULT_IN_PREFIX)]
    pub in_topic: String,
    /// Prefix of topics from nodes.
    #[arg(long, default_value = config::DEFAULT_OUT_PREFIX)]
    pub out_topic: String,
    /// Children per node.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CHILDREN)]
    pub max_children: u8,
    /// Deepest a node may sit (the root is depth 1).
    #[arg(long, default_value_t = config::DEFAULT_MAX_DEPTH)]
    pub max_depth: u8,
    /// Mesh port.
    #[arg(long, default_value_t = config::DEFAULT_MESH_PORT)]
    pub mesh_port: u16,
    /// SSID of the (emulated) router.
    #[arg(long, default_value = "mqttmesh-router")]
    pub router_ssid: String,
    /// Passphrase of the (emulated) router.
    #[arg(long, default_value = "router-password")]
    pub router_password: String,
    /// MQTT user name.
    #[arg(long)]
    pub mqtt_username: Option<String>,
    /// MQTT password.
    #[arg(long, requires = "mqtt_username")]
    pub mqtt_password: Option<String>,
    /// Ed25519 public key OTA v2 updates must be signed with (a file written by
    /// `mqttmesh keygen`: 32 raw bytes, or 64 hex digits).
    #[arg(long, value_name = "FILE")]
    pub ota_public_key: Option<std::path::PathBuf>,
    /// Refuse OTA v2 images older than the running version.
    #[arg(long)]
    pub ota_refuse_downgrade: bool,
    #[command(flatten)]
    pub tls: TlsFlags,
}

/// Reads an Ed25519 public key file: 32 raw bytes, or 64 hex digits.
pub fn read_public_key(path: &std::path::Path) -> Result<[u8; 32]> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow!("cannot read the OTA public key {}: {e}", path.display()))?;
    if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(key);
    }
    let text = String::from_utf8_lossy(&bytes);
    let hex = text.trim();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        return Ok(key);
    }
    Err(anyhow!(
        "{} is not an Ed25519 public key (expected 32 raw bytes or 64 hex digits, got {} bytes); make one with `mqttmesh keygen`",
        path.display(),
        bytes.len()
    ))
}

impl NodeFlags {
    /// A validated node configuration for `broker`, with `timing`.
    pub fn config(&self, broker_host: &str, broker_port: u16, timing: Timing) -> Result<Config> {
        let fw = mqttmesh_core::topic::parse_firmware_id(&self.firmware_id).ok_or_else(|| {
            anyhow!(
                "--firmware-id {:?} is not a hex number (e.g. 1337 or 0x1337)",
                self.firmware_id
            )
        })?;
        let mut b = Config::builder()
            .firmware(fw, &self.firmware_version)
            .network(&self.router_ssid, &self.router_password)
            .mesh_password(&self.mesh_password)
            .mesh_ssid_base(&self.mesh_ssid_base)
            .broker(broker_host, broker_port)
            .in_prefix(&self.in_topic)
            .out_prefix(&self.out_topic)
            .max_children(self.max_children)
            .max_depth(self.max_depth)
            .mesh_port(self.mesh_port)
            .timing(timing);
        if let Some(path) = &self.ota_public_key {
            b = b.ota_public_key(read_public_key(path)?);
        }
        b = b
            .ota_refuse_downgrade(self.ota_refuse_downgrade)
            .mqtt_tls(self.tls.mode()?);
        if let Some(user) = &self.mqtt_username {
            b = b.mqtt_credentials(user, self.mqtt_password.as_deref().unwrap_or(""));
        }
        b.build()
            .map_err(|e| anyhow!("{e} (set it with {})", flag_of(e.field)))
    }
}

/// The command-line flag that sets `field`.
fn flag_of(field: Field) -> &'static str {
    match field {
        Field::FirmwareVersion => "--firmware-version",
        Field::Networks | Field::NetworkSsid(_) | Field::NetworkBssid(_) => "--router-ssid",
        Field::NetworkPassword(_) => "--router-password",
        Field::MeshPassword => "--mesh-password",
        Field::MeshSsidBase => "--mesh-ssid-base",
        Field::BrokerHost | Field::BrokerPort => "--broker",
        Field::MqttUsername => "--mqtt-username",
        Field::MqttPassword => "--mqtt-password",
        Field::MqttTls => "--fingerprint",
        Field::MeshPort => "--mesh-port",
        Field::InPrefix => "--in-topic",
        Field::OutPrefix => "--out-topic",
        Field::MaxChildren => "--max-children",
        Field::MaxDepth => "--max-depth",
        _ => "the matching flag",
    }
}
