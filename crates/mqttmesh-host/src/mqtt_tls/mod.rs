//! TLS to the MQTT broker (issue 4 §1), shared by every client this crate opens: the
//! nodes' broker sessions, the [`crate::observer::Observer`] and the view
//! [`crate::view::watch::Watcher`].
//!
//! The node configuration says how the broker is verified
//! ([`mqttmesh_core::config::BrokerTls`]); the host-only part, where the trust anchors
//! of [`BrokerTls::Ca`] come from, is a [`Trust`]. [`ClientTls::new`] turns both into a
//! rustls client configuration (ring provider) that rumqttc uses, and [`ConnectError`]
//! tells a failed connection's cause apart (wrong pin, unknown CA, wrong login, TLS
//! against a plain port and the other way round) in words a user can act on.

mod failure;
mod pin;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqttmesh_core::config::BrokerTls;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::tls_leaf::LeafVerifier;

pub use failure::{classify, ConnectError};
pub use pin::{colon_hex, PinMismatch};

/// Where the trust anchors of [`BrokerTls::Ca`] come from.
#[derive(Clone, Debug, Default)]
pub enum Trust {
    /// The operating system's CA certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR`
    /// override where they are read from).
    #[default]
    System,
    /// These CA certificates only (e.g. from [`Trust::from_pem_file`]).
    Roots(Arc<RootCertStore>),
}

impl Trust {
    /// The CA certificates of a PEM file (one or more `BEGIN CERTIFICATE` blocks).
    pub fn from_pem_file(path: &Path) -> Result<Trust, TlsSetupError> {
        let bytes = std::fs::read(path).map_err(|source| TlsSetupError::CaUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let not_pem = || TlsSetupError::CaNotPem {
            path: path.to_path_buf(),
        };
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| not_pem())?;
        if certs.is_empty() {
            return Err(not_pem());
        }
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| TlsSetupError::CaInvalid {
                path: path.to_path_buf(),
                index: i + 1,
                reason: e.to_string(),
            })?;
        }
        Ok(Trust::Roots(Arc::new(roots)))
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsSetupError> {
        match self {
            Trust::Roots(roots) => Ok(roots.clone()),
            Trust::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                // Unparsable system certificates are skipped, as browsers do.
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    let reason = match found.errors.first() {
                        Some(e) => e.to_string(),
                        None => "none installed".to_string(),
                    };
                    return Err(TlsSetupError::NoSystemRoots { reason });
                }
                Ok(Arc::new(roots))
            }
        }
    }
}

/// Why TLS to the broker cannot be set up (before any connection).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA file cannot be read.
    #[error("cannot read the CA file {}: {source}", path.display())]
    CaUnreadable {
        /// The file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error(
        "the CA file {} holds no PEM certificate (a -----BEGIN CERTIFICATE----- block); \
         convert a DER file with `openssl x509 -inform der -in ca.cer -out ca.pem`",
        path.display()
    )]
    CaNotPem {
        /// The file.
        path: PathBuf,
    },
    /// A certificate of the CA file cannot serve as a trust anchor.
    #[error("certificate {index} of the CA file {} is not usable: {reason}", path.display())]
    CaInvalid {
        /// The file.
        path: PathBuf,
        /// Which certificate, from 1.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// No system CA certificates.
    #[error(
        "no system CA certificates found ({reason}); give the broker's CA in a PEM file, \
         or pin the broker's certificate fingerprint"
    )]
    NoSystemRoots {
        /// What the loader said.
        reason: String,
    },
    /// The broker host cannot be checked against a certificate.
    #[error("{host:?} is not a DNS name or IP address a certificate can be checked against")]
    ServerName {
        /// The host.
        host: String,
    },
    /// The TLS library refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Rustls(String),
}

/// A ready TLS client configuration for one broker.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    mode: BrokerTls,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// The TLS client for the broker at `host:port`, or `None` when `mode` is
    /// [`BrokerTls::Off`]. With [`BrokerTls::Ca`] the certificate must chain to `trust`
    /// and name `host` (whatever address the connection goes to); with a pin, only the
    /// leaf's fingerprint counts. Handshake signatures are always verified.
    pub fn new(
        mode: BrokerTls,
        trust: &Trust,
        host: &str,
        port: u16,
    ) -> Result<Option<ClientTls>, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            BrokerTls::Off => return Ok(None),
            BrokerTls::Ca => {
                let name = ServerName::try_from(host.to_string()).map_err(|_| {
                    TlsSetupError::ServerName {
                        host: host.to_string(),
                    }
                })?;
                let inner =
                    WebPkiServerVerifier::builder_with_provider(trust.roots()?, provider.clone())
                        .build()
                        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?;
                Arc::new(Named { inner, name })
            }
            pinned => Arc::new(LeafVerifier::new(
                pin::BrokerPin::new(pinned, host.to_string(), port),
                provider.clone(),
            )),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(ClientTls {
            config: Arc::new(config),
            mode,
        }))
    }

    /// How the broker is verified.
    pub fn mode(&self) -> BrokerTls {
        self.mode
    }

    /// Makes `options` connect over this TLS configuration.
    pub(crate) fn apply(&self, options: &mut MqttOptions) {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            self.config.clone(),
        )));
    }
}

/// Chain verification against the configured host name rather than the address the
/// connection went to (the emulated nodes connect by IP to a broker named in their
/// configuration).
#[derive(Debug)]
struct Named {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for Named {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests;
