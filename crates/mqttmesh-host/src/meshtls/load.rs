//! Reading the three mesh TLS files `mqttmesh gen-cert` writes, with one error per way
//! they can be wrong, each naming the file and what to do.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;

use super::{colon_hex, sha1};

/// The certificate the parent serves, DER.
pub const CERT_FILE: &str = "server.cer";
/// Its private key, DER (PKCS#8 from `mqttmesh gen-cert`; SEC1 and PKCS#1 also load).
pub const KEY_FILE: &str = "server.key";
/// The 20 raw bytes of the SHA-1 of [`CERT_FILE`]: what a child pins.
pub const FINGERPRINT_FILE: &str = "fingerprint";

const REGENERATE: &str = "make a matching set with `mqttmesh gen-cert --out DIR --force` and \
                          give every node the same DIR";

/// Why the mesh TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file is not there.
    #[error(
        "{} is missing; run `mqttmesh gen-cert --out DIR` to make the mesh TLS files \
         (DIR/ssl/{CERT_FILE}, {KEY_FILE}, {FINGERPRINT_FILE}) and pass that DIR",
        path.display()
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file is there but cannot be read.
    #[error("cannot read {}: {source}; check its permissions", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate is not a DER X.509 certificate (corrupt, truncated, or PEM).
    #[error(
        "{} is not a usable DER certificate ({reason}); it is corrupt, truncated or PEM \
         (the PEM copy is {CERT_FILE}.pem); {REGENERATE}",
        path.display()
    )]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The key is not a DER private key (corrupt, truncated, PEM, or an unsupported type).
    #[error(
        "{} is not a usable DER private key ({reason}); it is corrupt, truncated or PEM \
         (the PEM copy is {KEY_FILE}.pem); {REGENERATE}",
        path.display()
    )]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error(
        "{} is not the private key of {}: they come from different `mqttmesh gen-cert` runs; \
         {REGENERATE}",
        key.display(), cert.display()
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The fingerprint file is not 20 bytes.
    #[error(
        "{} holds {len} bytes; the fingerprint file is exactly 20 raw bytes (the SHA-1 of \
         {CERT_FILE}, not hex text); {REGENERATE}",
        path.display()
    )]
    FingerprintLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The fingerprint is not the certificate's: this node's children would refuse it.
    #[error(
        "{} pins {} but {} has SHA-1 {}: the files come from different `mqttmesh gen-cert` \
         runs, and nodes serving this certificate would be refused by nodes pinning this \
         fingerprint; {REGENERATE}",
        path.display(), colon_hex(pinned), cert.display(), colon_hex(actual)
    )]
    FingerprintMismatch {
        /// The fingerprint file.
        path: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// What the file pins.
        pinned: [u8; 20],
        /// The certificate's SHA-1.
        actual: [u8; 20],
    },
}

/// The checked contents of the three files.
pub(super) struct Files {
    pub cert: CertificateDer<'static>,
    pub key: PrivateKeyDer<'static>,
    pub fingerprint: [u8; 20],
}

/// Where the files are: `dir/ssl/` when it exists (the layout `gen-cert --out dir`
/// writes), else `dir` itself.
pub(super) fn ssl_dir(dir: &Path) -> PathBuf {
    let ssl = dir.join("ssl");
    if ssl.is_dir() {
        ssl
    } else {
        dir.to_path_buf()
    }
}

/// Reads and checks the files in `ssl` against each other.
pub(super) fn read(ssl: &Path, provider: &Arc<CryptoProvider>) -> Result<Files, LoadError> {
    let cert_path = ssl.join(CERT_FILE);
    let key_path = ssl.join(KEY_FILE);
    let fp_path = ssl.join(FINGERPRINT_FILE);
    let cert_bytes = read_file(&cert_path)?;
    let key_bytes = read_file(&key_path)?;
    let fp_bytes = read_file(&fp_path)?;

    let cert = CertificateDer::from(cert_bytes);
    ParsedCertificate::try_from(&cert).map_err(|e| LoadError::BadCertificate {
        path: cert_path.clone(),
        reason: e.to_string(),
    })?;
    let bad_key = |reason: String| LoadError::BadKey {
        path: key_path.clone(),
        reason,
    };
    let key = PrivateKeyDer::try_from(key_bytes).map_err(|e| bad_key(e.to_string()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| bad_key(e.to_string()))?;
    match CertifiedKey::new(vec![cert.clone()], signing_key).keys_match() {
        Ok(()) => {}
        // A key type that cannot tell its public half: the handshake will show.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(LoadError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            })
        }
    }

    let fingerprint: [u8; 20] =
        fp_bytes
            .as_slice()
            .try_into()
            .map_err(|_| LoadError::FingerprintLength {
                path: fp_path.clone(),
                len: fp_bytes.len(),
            })?;
    let actual = sha1(cert.as_ref());
    if fingerprint != actual {
        return Err(LoadError::FingerprintMismatch {
            path: fp_path,
            cert: cert_path,
            pinned: fingerprint,
            actual,
        });
    }
    Ok(Files {
        cert,
        key,
        fingerprint,
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => LoadError::Missing {
            path: path.to_path_buf(),
        },
        _ => LoadError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })
}
