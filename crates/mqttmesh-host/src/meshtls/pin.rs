//! The child's check of its parent's certificate: the SHA-1 of the leaf must be the
//! pinned fingerprint (`ssl/fingerprint`), as the seed's `mesh_secure` pins it. The
//! mesh certificate is self-signed and names no host, so there is no chain, name or
//! date to check; the handshake signatures are still verified (ring), which proves
//! the parent holds the key of the pinned certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

use super::{colon_hex, sha1};

/// The parent presented a certificate other than the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("certificate fingerprint (SHA-1) {} is not the pinned {}", colon_hex(.seen), colon_hex(.pinned))]
pub struct PinMismatch {
    /// SHA-1 of the certificate the parent presented.
    pub seen: [u8; 20],
    /// The fingerprint this node pins.
    pub pinned: [u8; 20],
}

/// Accepts exactly the certificate whose SHA-1 is `pin`.
#[derive(Debug)]
pub(super) struct PinVerifier {
    pub pin: [u8; 20],
    pub provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let seen = sha1(end_entity.as_ref());
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            let mismatch = PinMismatch {
                seen,
                pinned: self.pin,
            };
            Err(Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(mismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
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
    ) -> Result<HandshakeSignatureValid, Error> {
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

/// The pin mismatch behind a failed client handshake, if that is why it failed.
pub(super) fn mismatch_in(e: &std::io::Error) -> Option<PinMismatch> {
    let rustls_error = e.get_ref()?.downcast_ref::<Error>()?;
    match rustls_error {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<PinMismatch>().copied()
        }
        _ => None,
    }
}
