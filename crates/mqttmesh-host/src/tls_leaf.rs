//! One rustls server-certificate verifier for certificates trusted by their own bytes:
//! a pinned fingerprint (the broker pin, the mesh pin) or none at all (`mqttmesh
//! fingerprint`, which only reads the certificate). What decides trust is a
//! [`LeafCheck`]; the handshake signatures are always verified with the provider, so
//! the peer proves it holds the key of the certificate that was checked.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Decides whether the peer's leaf certificate is trusted. No chain, name or date is
/// involved: only the leaf's own bytes.
pub trait LeafCheck: fmt::Debug + Send + Sync {
    /// `Ok` trusts `leaf`; an error is the handshake's error (put a typed error in
    /// `rustls::Error::InvalidCertificate(CertificateError::Other(..))` so the caller can
    /// find it again and tell the user what was seen).
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error>;
}

/// A [`ServerCertVerifier`] that asks a [`LeafCheck`] about the leaf and the provider
/// about the handshake signatures.
#[derive(Debug)]
pub struct LeafVerifier<C> {
    check: C,
    provider: Arc<CryptoProvider>,
}

impl<C: LeafCheck> LeafVerifier<C> {
    /// Trust decided by `check`, signatures verified with `provider`.
    pub fn new(check: C, provider: Arc<CryptoProvider>) -> Self {
        LeafVerifier { check, provider }
    }
}

impl<C: LeafCheck> ServerCertVerifier for LeafVerifier<C> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check
            .check(end_entity)
            .map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Trusts any leaf: for tools that only read the certificate to show it and never
/// trust the connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnyLeaf;

impl LeafCheck for AnyLeaf {
    fn check(&self, _leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        Ok(())
    }
}
