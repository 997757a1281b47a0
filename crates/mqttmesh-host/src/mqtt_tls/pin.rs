//! Fingerprint pinning: the broker's leaf certificate must hash to the configured
//! SHA-1 (the original library's `mqtt_fingerprint`) or SHA-256. The handshake
//! signatures are still verified with the provider, so the broker proves it holds the
//! key of the pinned certificate.

use std::fmt;
use std::sync::Arc;

use mqttmesh_core::config::{write_colon_hex, BrokerTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha1::Digest as _;

use super::signatures;

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
pub(super) struct PinVerifier {
    pin: BrokerTls,
    provider: Arc<CryptoProvider>,
    host: String,
    port: u16,
}

impl PinVerifier {
    /// `pin` is [`BrokerTls::PinSha1`] or [`BrokerTls::PinSha256`].
    pub(super) fn new(
        pin: BrokerTls,
        provider: Arc<CryptoProvider>,
        host: String,
        port: u16,
    ) -> PinVerifier {
        PinVerifier {
            pin,
            provider,
            host,
            port,
        }
    }

    /// The leaf's digest under the pin's algorithm.
    fn digest(&self, der: &[u8]) -> Vec<u8> {
        match self.pin {
            BrokerTls::PinSha1(_) => sha1::Sha1::digest(der).to_vec(),
            _ => sha2::Sha256::digest(der).to_vec(),
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = self.digest(end_entity.as_ref());
        let expected = self.pin.pin().unwrap_or_default();
        if seen == expected {
            return Ok(ServerCertVerified::assertion());
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

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, signatures(&self.provider))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, signatures(&self.provider))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signatures(&self.provider).supported_schemes()
    }
}
