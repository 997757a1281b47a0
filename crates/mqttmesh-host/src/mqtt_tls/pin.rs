//! Fingerprint pinning: the broker's leaf certificate must hash to the configured
//! SHA-1 (the original library's `mqtt_fingerprint`) or SHA-256. The handshake
//! signatures are still verified with the provider (`tls_leaf`), so the broker proves
//! it holds the key of the pinned certificate.

use std::fmt;
use std::sync::Arc;

use mqttmesh_core::config::{write_colon_hex, BrokerTls};
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, OtherError};
use sha1::Digest as _;

use crate::tls_leaf::LeafCheck;

/// The broker showed a certificate other than the pinned one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinMismatch {
    /// `SHA-1` or `SHA-256`.
    pub algorithm: &'static str,
    /// The pinned fingerprint.
    pub expected: Vec<u8>,
    /// The fingerprint of the certificate the broker showed.
    pub seen: Vec<u8>,
    /// Broker host, for the hint.
    pub host: String,
    /// Broker port, for the hint.
    pub port: u16,
}

impl fmt::Display for PinMismatch {
    /// `broker certificate fingerprint mismatch: expected SHA-1 AB:.., saw 12:..; run
    /// `mqttmesh fingerprint --host H --port P` to read it`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "broker certificate fingerprint mismatch: expected {} {}, saw {}; run \
             `mqttmesh fingerprint --host {} --port {}` to read it",
            self.algorithm,
            colon_hex(&self.expected),
            colon_hex(&self.seen),
            self.host,
            self.port
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Upper-case hex bytes joined by `:`, as `mqttmesh fingerprint` prints them.
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    // Writing into a String cannot fail.
    let _ = write_colon_hex(&mut s, bytes);
    s
}

/// Trusts exactly the certificate whose fingerprint is pinned.
#[derive(Debug)]
pub(super) struct BrokerPin {
    pin: BrokerTls,
    host: String,
    port: u16,
}

impl BrokerPin {
    /// `pin` is [`BrokerTls::PinSha1`] or [`BrokerTls::PinSha256`].
    pub(super) fn new(pin: BrokerTls, host: String, port: u16) -> BrokerPin {
        BrokerPin { pin, host, port }
    }

    /// The leaf's digest under the pin's algorithm.
    fn digest(&self, der: &[u8]) -> Vec<u8> {
        match self.pin {
            BrokerTls::PinSha1(_) => sha1::Sha1::digest(der).to_vec(),
            _ => sha2::Sha256::digest(der).to_vec(),
        }
    }
}

impl LeafCheck for BrokerPin {
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let seen = self.digest(leaf.as_ref());
        let expected = self.pin.pin().unwrap_or_default();
        if seen == expected {
            return Ok(());
        }
        let mismatch = PinMismatch {
            algorithm: self.pin.pin_algorithm().unwrap_or("SHA-256"),
            expected: expected.to_vec(),
            seen,
            host: self.host.clone(),
            port: self.port,
        };
        tracing::debug!(target: "mqttmesh::mqtt", "{mismatch}");
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
    }
}
