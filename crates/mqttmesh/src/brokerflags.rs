//! The broker flags shared by the commands that talk to a running mesh through its
//! broker (`topology`, `forget`, `monitor`, `ota`), TLS included.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use mqttmesh_core::config;
use mqttmesh_host::view::watch::{client_id, WatchError, WatchOptions, Watcher};

use crate::tlsflags::{explain, TlsFlags};

/// The broker host when `--broker` is not given.
const DEFAULT_HOST: &str = "127.0.0.1";

/// Where the mesh's broker is and which topics the mesh uses.
#[derive(Debug, Clone, Args)]
pub struct BrokerFlags {
    /// MQTT broker the nodes publish to [default: 127.0.0.1:1883, or 127.0.0.1:8883
    /// with TLS]; without a port, 1883 (8883 with TLS).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub broker: Option<String>,
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
    #[command(flatten)]
    pub tls: TlsFlags,
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
        let (host, port) = self.host_port()?;
        let mut opts = WatchOptions::new(host, port, &client_id(role));
        if let Some(user) = &self.mqtt_username {
            opts.credentials = Some((user.clone(), self.mqtt_password.clone().unwrap_or_default()));
        }
        opts.tls = self.tls.client(host, port)?;
        Ok(opts)
    }

    /// The broker's host and port, the port defaulted by TLS.
    fn host_port(&self) -> Result<(&str, u16)> {
        let spec = self.broker.as_deref().unwrap_or(DEFAULT_HOST);
        let (host, port) = split_host_port(spec)?;
        Ok((host, port.unwrap_or(self.tls.default_port())))
    }

    /// `host:port` of the broker, for messages.
    pub fn address(&self) -> String {
        match self.host_port() {
            Ok((host, port)) => WatchOptions::new(host, port, "").address(),
            Err(_) => self.broker.clone().unwrap_or_default(),
        }
    }

    /// Connects as `role` and subscribes to `filters`, with an error that says what to
    /// check.
    pub async fn connect(&self, role: &str, filters: &[String]) -> Result<Watcher> {
        let opts = self.options(role)?;
        Watcher::connect(&opts, filters).await.map_err(|e| match e {
            WatchError::Connect(c) => explain(&c),
            WatchError::Refused { .. } => anyhow!("{e}; check the user's rights at the broker"),
            _ => anyhow!("{e}; is the broker running? check --broker"),
        })
    }
}

/// `HOST:PORT`, `[V6]:PORT`, or a host alone (`HOST`, `[V6]`, a bare IPv6 address).
pub fn split_host_port(s: &str) -> Result<(&str, Option<u16>)> {
    let bad = || anyhow!("--broker {s:?}: expected HOST[:PORT], e.g. 127.0.0.1:1883");
    let (host, port) = match s.rsplit_once(':') {
        // A bare IPv6 address has several colons and no brackets.
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => (host, Some(port)),
        _ => (s, None),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => Some(p),
            _ => return Err(bad()),
        },
        None => None,
    };
    if host.is_empty() {
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
            ("127.0.0.1", Some(1883))
        );
        assert_eq!(split_host_port("[::1]:8883").unwrap(), ("::1", Some(8883)));
        assert_eq!(
            split_host_port("broker.lan:1").unwrap(),
            ("broker.lan", Some(1))
        );
        assert_eq!(split_host_port("localhost").unwrap(), ("localhost", None));
        assert_eq!(split_host_port("[::1]").unwrap(), ("::1", None));
        assert_eq!(split_host_port("::1").unwrap(), ("::1", None));
        for bad in [":1883", "host:x", "host:0", "host:70000", ""] {
            let e = split_host_port(bad).unwrap_err().to_string();
            assert!(e.contains("HOST[:PORT]"), "{bad}: {e}");
        }
    }
}
