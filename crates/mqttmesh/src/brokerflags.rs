//! The broker flags shared by the commands that talk to a running mesh through its
//! broker (`topology`, `forget`, `monitor`).

use anyhow::{anyhow, bail, Result};
use clap::Args;
use mqttmesh_core::config;
use mqttmesh_host::view::watch::{client_id, WatchOptions, Watcher};

/// Where the mesh's broker is and which topics the mesh uses.
#[derive(Debug, Clone, Args)]
pub struct BrokerFlags {
    /// MQTT broker the nodes publish to.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "HOST:PORT")]
    pub broker: String,
    /// Prefix of topics to nodes.
    #[arg(long, default_value = config::DEFAULT_IN_PREFIX)]
    pub in_topic: String,
    /// Prefix of topics from nodes.
    #[arg(long, default_value = config::DEFAULT_OUT_PREFIX)]
    pub out_topic: String,
    /// MQTT user name.
    #[arg(long)]
    pub mqtt_username: Option<String>,
    /// MQTT password.
    #[arg(long, requires = "mqtt_username")]
    pub mqtt_password: Option<String>,
}

impl BrokerFlags {
    /// Connection options for a client in `role` (part of its unique client ID).
    pub fn options(&self, role: &str) -> Result<WatchOptions> {
        for (flag, prefix) in [
            ("--in-topic", &self.in_topic),
            ("--out-topic", &self.out_topic),
        ] {
            if !prefix.ends_with('/') || prefix.len() < 2 || prefix.contains(['+', '#']) {
                bail!("{flag} {prefix:?} must end with '/' and hold no '+' or '#' (e.g. esp8266-out/)");
            }
        }
        let (host, port) = split_host_port(&self.broker)?;
        let mut opts = WatchOptions::new(host, port, &client_id(role));
        if let Some(user) = &self.mqtt_username {
            opts.credentials = Some((user.clone(), self.mqtt_password.clone().unwrap_or_default()));
        }
        Ok(opts)
    }

    /// Connects as `role` and subscribes to `filters`, with an error that says what to
    /// check.
    pub async fn connect(&self, role: &str, filters: &[String]) -> Result<Watcher> {
        let opts = self.options(role)?;
        Watcher::connect(&opts, filters).await.map_err(|e| {
            let hint = match e {
                mqttmesh_host::view::watch::WatchError::Refused { .. } => {
                    "check --mqtt-username and --mqtt-password"
                }
                _ => "is the broker running? check --broker",
            };
            anyhow!("{e}; {hint}")
        })
    }
}

/// `HOST:PORT`, `[V6]:PORT`.
fn split_host_port(s: &str) -> Result<(&str, u16)> {
    let bad = || anyhow!("--broker {s:?}: expected HOST:PORT, e.g. 127.0.0.1:1883");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split() {
        assert_eq!(
            split_host_port("127.0.0.1:1883").unwrap(),
            ("127.0.0.1", 1883)
        );
        assert_eq!(split_host_port("[::1]:8883").unwrap(), ("::1", 8883));
        assert_eq!(split_host_port("broker.lan:1").unwrap(), ("broker.lan", 1));
        for bad in ["localhost", ":1883", "host:x", "host:0", "host:70000"] {
            let e = split_host_port(bad).unwrap_err().to_string();
            assert!(e.contains("HOST:PORT"), "{bad}: {e}");
        }
    }
}
