//! Why a broker connection failed, told apart from rumqttc's error wrapping: the
//! rustls error sits inside an `io::Error` inside `rumqttc::TlsError` inside
//! `ConnectionError`, and a pin mismatch inside that as a [`PinMismatch`].

use std::io;

use rumqttc::{mqttbytes, ConnectReturnCode, ConnectionError, StateError, TlsError};
use rustls::CertificateError;

use super::PinMismatch;

/// A failed broker connection, for people. `addr` is `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// No TCP connection (nothing listens there, the name does not resolve, …).
    #[error("cannot reach the MQTT broker at {addr}: {reason}")]
    Unreachable {
        /// `host:port`.
        addr: String,
        /// What the network said.
        reason: String,
    },
    /// CONNACK "bad user name or password" or "not authorised".
    #[error(
        "the MQTT broker at {addr} refused the login ({code}): wrong user name or password, \
         or none given where the broker needs one"
    )]
    BadLogin {
        /// `host:port`.
        addr: String,
        /// The CONNACK code.
        code: String,
    },
    /// Another CONNACK refusal.
    #[error("the MQTT broker at {addr} refused the connection ({code})")]
    Refused {
        /// `host:port`.
        addr: String,
        /// The CONNACK code.
        code: String,
    },
    /// The broker's certificate is not the pinned one.
    #[error("{0}")]
    PinMismatch(PinMismatch),
    /// The broker's certificate did not verify (unknown CA, wrong name, expired, …).
    #[error("the broker at {addr} showed a certificate that does not verify: {reason}")]
    Certificate {
        /// `host:port`.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS was spoken to a port that does not speak it.
    #[error(
        "TLS handshake with {addr} failed: the port does not speak TLS ({reason}); is it the \
         plain MQTT port? TLS brokers usually listen on 8883"
    )]
    NotTls {
        /// `host:port`.
        addr: String,
        /// What was seen.
        reason: String,
    },
    /// Plain MQTT got no MQTT answer to CONNECT.
    #[error(
        "the broker at {addr} closed the connection without answering CONNECT ({reason}); if \
         that port speaks TLS (usually 8883), turn TLS on"
    )]
    NoMqttAnswer {
        /// `host:port`.
        addr: String,
        /// What was seen.
        reason: String,
    },
    /// Another TLS failure.
    #[error("TLS with the broker at {addr} failed: {reason}")]
    Tls {
        /// `host:port`.
        addr: String,
        /// What rustls said.
        reason: String,
    },
    /// Anything else (a lost connection, a protocol error).
    #[error("connection to the MQTT broker at {addr}: {reason}")]
    Other {
        /// `host:port`.
        addr: String,
        /// What rumqttc said.
        reason: String,
    },
}

impl ConnectError {
    /// Whether retrying cannot help without a change of configuration (credentials,
    /// certificates, TLS on or off).
    pub fn is_configuration(&self) -> bool {
        !matches!(
            self,
            ConnectError::Unreachable { .. } | ConnectError::Other { .. }
        )
    }
}

/// Classifies `e` from a connection to `addr` that used TLS (`tls`) and had (`connected`)
/// or had not yet received its CONNACK.
pub fn classify(e: &ConnectionError, addr: &str, tls: bool, connected: bool) -> ConnectError {
    let addr = addr.to_string();
    let other = |reason: String| ConnectError::Other {
        addr: addr.clone(),
        reason,
    };
    match e {
        ConnectionError::ConnectionRefused(code) => refused(addr, *code),
        ConnectionError::Tls(TlsError::TLS(r)) => rustls_failure(addr, r),
        ConnectionError::Tls(TlsError::Io(io)) => match inner_rustls(io) {
            Some(r) => rustls_failure(addr, r),
            None if is_closed(io) => ConnectError::NotTls {
                addr,
                reason: "the peer closed the connection on our TLS hello".into(),
            },
            None => ConnectError::Tls {
                addr,
                reason: io.to_string(),
            },
        },
        ConnectionError::Io(io) if !connected && !is_closed(io) => ConnectError::Unreachable {
            addr,
            reason: io.to_string(),
        },
        // Plain MQTT to a TLS port: the broker's TLS layer drops our CONNECT (or answers
        // it with a TLS alert, which is no MQTT packet).
        ConnectionError::Io(_) | ConnectionError::MqttState(_) | ConnectionError::NotConnAck(_)
            if !connected && !tls =>
        {
            ConnectError::NoMqttAnswer {
                addr,
                reason: state_reason(e),
            }
        }
        other_error => other(other_error.to_string()),
    }
}

fn refused(addr: String, code: ConnectReturnCode) -> ConnectError {
    let text = match code {
        ConnectReturnCode::BadUserNamePassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorised",
        ConnectReturnCode::RefusedProtocolVersion => "protocol version refused",
        ConnectReturnCode::BadClientId => "client ID refused",
        ConnectReturnCode::ServiceUnavailable => "service unavailable",
        ConnectReturnCode::Success => "accepted",
    };
    let code_text = text.to_string();
    match code {
        ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
            ConnectError::BadLogin {
                addr,
                code: code_text,
            }
        }
        _ => ConnectError::Refused {
            addr,
            code: code_text,
        },
    }
}

fn rustls_failure(addr: String, r: &rustls::Error) -> ConnectError {
    match r {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<PinMismatch>() {
                Some(m) => ConnectError::PinMismatch(m.clone()),
                None => ConnectError::Certificate {
                    addr,
                    reason: other.to_string(),
                },
            }
        }
        rustls::Error::InvalidCertificate(c) => ConnectError::Certificate {
            addr,
            reason: certificate_reason(c),
        },
        rustls::Error::InvalidMessage(m) => ConnectError::NotTls {
            addr,
            reason: format!("the peer answered with bytes that are not TLS: {m:?}"),
        },
        rustls::Error::AlertReceived(alert) => ConnectError::Tls {
            addr,
            reason: format!("the broker refused the handshake with alert {alert:?}"),
        },
        other => ConnectError::Tls {
            addr,
            reason: other.to_string(),
        },
    }
}

fn certificate_reason(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => "it is not signed by a CA this client trusts \
            (unknown issuer); give the CA that signed it, or pin the certificate's fingerprint"
            .into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("it does not name the broker host ({c}); connect by a name it lists")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("it has expired ({c})")
        }
        other => other.to_string(),
    }
}

/// The rustls error tokio-rustls wrapped into `io`, if any.
fn inner_rustls(io: &io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

fn is_closed(io: &io::Error) -> bool {
    matches!(
        io.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

fn state_reason(e: &ConnectionError) -> String {
    match e {
        ConnectionError::MqttState(StateError::ConnectionAborted) => {
            "it closed the connection".into()
        }
        ConnectionError::MqttState(StateError::Deserialization(mqttbytes::Error::Io(io)))
        | ConnectionError::MqttState(StateError::Io(io))
        | ConnectionError::Io(io) => format!("it dropped the connection: {io}"),
        ConnectionError::MqttState(StateError::Deserialization(d)) => {
            format!("it answered with bytes that are not MQTT: {d}")
        }
        ConnectionError::NotConnAck(p) => format!("it answered with {p:?} instead of CONNACK"),
        other => other.to_string(),
    }
}
