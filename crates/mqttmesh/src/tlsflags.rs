//! The broker TLS flags, defined once and flattened into every command that talks to a
//! broker: [`crate::brokerflags::BrokerFlags`] (`topology`, `monitor`, `forget`, `ota`)
//! and [`crate::nodeflags::NodeFlags`] (`sim`'s nodes and observer).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use mqttmesh_core::config::{BrokerTls, DEFAULT_MQTTS_PORT, DEFAULT_MQTT_PORT};
use mqttmesh_host::mqtt_tls::{ClientTls, ConnectError, Trust};

/// TLS to the MQTT broker.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsFlags {
    /// Connect to the broker over TLS (port 8883 unless --broker gives one). Its
    /// certificate must chain to the system's CA certificates, unless --ca-file or
    /// --fingerprint say otherwise.
    #[arg(long)]
    pub tls: bool,
    /// Trust only the CA certificate(s) in this PEM file to have signed the broker's
    /// certificate (implies --tls).
    #[arg(long, value_name = "PATH", conflicts_with = "fingerprint")]
    pub ca_file: Option<PathBuf>,
    /// Pin the broker's certificate by its fingerprint instead of checking its chain:
    /// SHA-1 (40 hex digits, the original library's form) or SHA-256 (64), colons
    /// allowed, as `mqttmesh fingerprint` prints them (implies --tls).
    #[arg(long, value_name = "HEX")]
    pub fingerprint: Option<String>,
}

impl TlsFlags {
    /// Whether any flag turns TLS on.
    pub fn is_on(&self) -> bool {
        self.tls || self.ca_file.is_some() || self.fingerprint.is_some()
    }

    /// The broker port when `--broker` names none: 8883 with TLS, else 1883.
    pub fn default_port(&self) -> u16 {
        if self.is_on() {
            DEFAULT_MQTTS_PORT
        } else {
            DEFAULT_MQTT_PORT
        }
    }

    /// How the broker's certificate is verified.
    pub fn mode(&self) -> Result<BrokerTls> {
        if let Some(hex) = &self.fingerprint {
            return BrokerTls::from_hex(hex).map_err(|e| {
                anyhow!("--fingerprint {hex:?}: {e}; `mqttmesh fingerprint --host H --port P` prints it")
            });
        }
        Ok(if self.is_on() {
            BrokerTls::Ca
        } else {
            BrokerTls::Off
        })
    }

    /// Where CA certificates come from: `--ca-file`, else the system's.
    pub fn trust(&self) -> Result<Trust> {
        match &self.ca_file {
            Some(path) => Trust::from_pem_file(path).map_err(|e| anyhow!("--ca-file: {e}")),
            None => Ok(Trust::System),
        }
    }

    /// Refuses TLS against the plain MQTT port given explicitly.
    pub fn check_port(&self, port: u16) -> Result<()> {
        if self.is_on() && port == DEFAULT_MQTT_PORT {
            bail!(
                "--broker names port 1883, the plain MQTT port, but TLS is on (--tls, --ca-file \
                 or --fingerprint); TLS brokers listen on 8883: give the TLS port, or leave the \
                 port out"
            );
        }
        Ok(())
    }

    /// The TLS client for the broker at `host:port`, `None` without TLS.
    pub fn client(&self, host: &str, port: u16) -> Result<Option<ClientTls>> {
        self.check_port(port)?;
        let mode = self.mode()?;
        if !mode.is_on() {
            return Ok(None);
        }
        ClientTls::new(mode, &self.trust()?, host, port).map_err(|e| anyhow!("{e}"))
    }
}

/// `e` with what to check on the command line.
pub fn explain(e: &ConnectError) -> anyhow::Error {
    let hint = match e {
        ConnectError::PinMismatch(_) => "then pass it with --fingerprint",
        ConnectError::Certificate { .. } => {
            "pass the CA that signed the broker's certificate with --ca-file, or pin the \
             certificate with --fingerprint"
        }
        ConnectError::BadLogin { .. } => "check --mqtt-username and --mqtt-password",
        ConnectError::NotTls { .. } => {
            "give the broker's TLS port in --broker, or drop --tls/--ca-file/--fingerprint"
        }
        ConnectError::NoMqttAnswer { .. } => "add --tls (or --ca-file/--fingerprint)",
        ConnectError::Tls { .. } => "check --tls, --ca-file and --fingerprint",
        ConnectError::Unreachable { .. } => "is the broker running? check --broker",
        _ => "check --broker",
    };
    anyhow!("{e}; {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(tls: bool, ca: Option<&str>, fingerprint: Option<&str>) -> TlsFlags {
        TlsFlags {
            tls,
            ca_file: ca.map(PathBuf::from),
            fingerprint: fingerprint.map(String::from),
        }
    }

    #[test]
    fn any_tls_flag_turns_tls_on_and_moves_the_default_port() {
        assert_eq!(flags(false, None, None).default_port(), 1883);
        assert_eq!(flags(false, None, None).mode().unwrap(), BrokerTls::Off);
        assert_eq!(flags(true, None, None).default_port(), 8883);
        assert_eq!(
            flags(false, Some("ca.pem"), None).mode().unwrap(),
            BrokerTls::Ca
        );
        let pin = flags(false, None, Some(&"ab:".repeat(20))).mode().unwrap();
        assert_eq!(pin, BrokerTls::PinSha1([0xab; 20]));
    }

    #[test]
    fn bad_settings_name_their_flag() {
        let e = flags(false, None, Some("abcd")).mode().unwrap_err();
        assert!(e.to_string().starts_with("--fingerprint"), "{e}");
        let e = flags(false, Some("/nonexistent/ca.pem"), None)
            .trust()
            .unwrap_err();
        assert!(e.to_string().starts_with("--ca-file: cannot read"), "{e}");
        let e = flags(true, None, None).check_port(1883).unwrap_err();
        assert!(e.to_string().contains("8883"), "{e}");
        assert!(flags(false, None, None).check_port(1883).is_ok());
    }
}
