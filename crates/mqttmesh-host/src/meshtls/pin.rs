//! The child's check of its parent's certificate: the SHA-1 of the leaf must be the
//! pinned fingerprint (`ssl/fingerprint`), as the seed's `mesh_secure` pins it. The
//! mesh certificate is self-signed and names no host, so there is no chain, name or
//! date to check; the handshake signatures are still verified (ring, `tls_leaf`), which proves
//! the parent holds the key of the pinned certificate.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, Error, OtherError};

use super::{colon_hex, sha1};
use crate::tls_leaf::LeafCheck;

/// The parent presented a certificate other than the pinned one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("certificate fingerprint (SHA-1) {} is not the pinned {}", colon_hex(.seen), colon_hex(.pinned))]
pub struct PinMismatch {
    /// SHA-1 of the certificate the parent presented.
    pub seen: [u8; 20],
    /// The fingerprint this node pins.
    pub pinned: [u8; 20],
}

/// Accepts exactly the certificate whose SHA-1 is the pin.
#[derive(Debug)]
pub(super) struct MeshPin(pub [u8; 20]);

impl LeafCheck for MeshPin {
    fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), Error> {
        let seen = sha1(leaf.as_ref());
        if seen == self.0 {
            return Ok(());
        }
        let mismatch = PinMismatch {
            seen,
            pinned: self.0,
        };
        Err(Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(mismatch)),
        )))
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
