//! Optional TLS on the mesh link (the seed's `mesh_secure`; `docs/PROTOCOL.md` "Mesh
//! TLS"): the parent serves the mesh certificate and key from `ssl/server.cer` and
//! `ssl/server.key`; the child pins `ssl/fingerprint` (the SHA-1 of that certificate)
//! and refuses a parent presenting anything else. Children are not authenticated by
//! TLS (every node holds the same key); the join handshake does that.
//!
//! Both ends are ours, so only TLS 1.3 is offered. A handshake is bounded by
//! [`MeshTls::handshake_timeout`]; the link stream reaches the node only once it is
//! done, so a peer that stalls, speaks plaintext or presents the wrong certificate
//! never gets a frame to the core.

mod counters;
mod load;
mod pin;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use sha1::Digest as _;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::tls_leaf::LeafVerifier;

pub use counters::MeshTlsCounters;
pub use load::{LoadError, CERT_FILE, FINGERPRINT_FILE, KEY_FILE};
pub use pin::PinMismatch;

/// Default bound on a mesh TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The name a child asks for; the mesh certificate is not checked against it.
const SERVER_NAME: &str = "mqttmesh-mesh";

/// A node's mesh TLS identity and pin, shared by every node of an emulated mesh.
#[derive(Clone)]
pub struct MeshTls {
    dir: PathBuf,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    provider: Arc<CryptoProvider>,
    fingerprint: [u8; 20],
    pin: [u8; 20],
    handshake_timeout: Duration,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("dir", &self.dir)
            .field("fingerprint", &colon_hex(&self.fingerprint))
            .field("pin", &colon_hex(&self.pin))
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Why a mesh TLS handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer did not finish the handshake in time (stalled, or not speaking TLS and
    /// waiting for us).
    #[error("TLS handshake did not finish within {0:?}")]
    Timeout(Duration),
    /// The parent's certificate is not the pinned one.
    #[error("parent refused: {0}")]
    Pin(PinMismatch),
    /// Anything else: not TLS, a bad signature, a closed connection.
    #[error("TLS handshake failed: {0}")]
    Failed(std::io::Error),
}

impl MeshTls {
    /// Reads `DIR/ssl/{server.cer,server.key,fingerprint}` (as `mqttmesh gen-cert --out
    /// DIR` writes them), or the three files directly in `dir` when it has no `ssl/`.
    ///
    /// A fingerprint that is not the certificate's is an error, not a warning: every
    /// node gets the same three files, so with a mismatch no node could join another.
    pub fn load(dir: &Path) -> Result<MeshTls, LoadError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ssl = load::ssl_dir(dir);
        let files = load::read(&ssl, &provider)?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![files.cert.clone()], files.key.clone_key())
            })
            // `read` checked the key against the certificate already.
            .map_err(|e| LoadError::BadKey {
                path: ssl.join(KEY_FILE),
                reason: e.to_string(),
            })?;
        Ok(MeshTls {
            dir: ssl,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: connector(&provider, files.fingerprint),
            provider,
            fingerprint: files.fingerprint,
            pin: files.fingerprint,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    /// The same identity, pinning `pin` instead of its own fingerprint: for a node that
    /// trusts another certificate than it serves (tests of a wrong pin, a rotation).
    pub fn pinning(mut self, pin: [u8; 20]) -> MeshTls {
        self.connector = connector(&self.provider, pin);
        self.pin = pin;
        self
    }

    /// The same, with another bound on handshakes.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> MeshTls {
        self.handshake_timeout = timeout;
        self
    }

    /// Where the files were read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SHA-1 of the certificate this node serves.
    pub fn fingerprint(&self) -> [u8; 20] {
        self.fingerprint
    }

    /// The fingerprint a parent must present.
    pub fn pin(&self) -> [u8; 20] {
        self.pin
    }

    /// Bound on one handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The child's side: TLS over a connected TCP stream to the parent.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| {
            HandshakeError::Failed(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
        })?;
        match tokio::time::timeout(self.handshake_timeout, self.connector.connect(name, tcp)).await
        {
            Err(_) => Err(HandshakeError::Timeout(self.handshake_timeout)),
            Ok(Ok(s)) => Ok(TlsStream::Client(s)),
            Ok(Err(e)) => Err(match pin::mismatch_in(&e) {
                Some(m) => HandshakeError::Pin(m),
                None => HandshakeError::Failed(e),
            }),
        }
    }

    /// The parent's side: TLS over an accepted TCP stream from a child.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(tcp)).await {
            Err(_) => Err(HandshakeError::Timeout(self.handshake_timeout)),
            Ok(Ok(s)) => Ok(TlsStream::Server(s)),
            Ok(Err(e)) => Err(HandshakeError::Failed(e)),
        }
    }
}

fn connector(provider: &Arc<CryptoProvider>, pin: [u8; 20]) -> TlsConnector {
    let verifier = Arc::new(LeafVerifier::new(pin::MeshPin(pin), provider.clone()));
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        // The ring provider supports TLS 1.3: this cannot fail.
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

fn sha1(der: &[u8]) -> [u8; 20] {
    sha1::Sha1::digest(der).into()
}

/// `AB:CD:..`, as `mqttmesh gen-cert` and `openssl x509 -fingerprint` print it.
pub fn colon_hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    parts.join(":")
}

#[cfg(test)]
mod tests;
