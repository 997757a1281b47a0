use std::io;
use std::sync::Arc;

use rumqttc::{ConnectReturnCode, ConnectionError, StateError, TlsError};
use rustls::{CertificateError, OtherError};

use super::*;

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mqttmesh-tls-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

fn mismatch() -> PinMismatch {
    PinMismatch {
        algorithm: "SHA-1",
        expected: vec![0xab, 0xcd],
        seen: vec![0x12, 0x34],
        host: "broker.lan".into(),
        port: 8883,
    }
}

#[test]
fn a_pin_mismatch_prints_both_fingerprints_and_the_command_to_read_it() {
    assert_eq!(
        mismatch().to_string(),
        "broker certificate fingerprint mismatch: expected SHA-1 AB:CD, saw 12:34; run \
         `mqttmesh fingerprint --host broker.lan --port 8883` to read it"
    );
}

#[test]
fn a_pin_mismatch_survives_rumqttc_error_wrapping() {
    let rustls_error = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
        Arc::new(mismatch()),
    )));
    // tokio-rustls hands the handshake error over as an io::Error.
    let io = io::Error::new(io::ErrorKind::InvalidData, rustls_error);
    let e = ConnectionError::Tls(TlsError::Io(io));
    let c = classify(&e, "broker.lan:8883", true, false);
    assert_eq!(c, ConnectError::PinMismatch(mismatch()));
    assert!(c.is_configuration());
}

#[test]
fn failures_are_told_apart() {
    let addr = "h:1";
    let unknown_ca = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
    );
    let c = classify(
        &ConnectionError::Tls(TlsError::Io(unknown_ca)),
        addr,
        true,
        false,
    );
    assert!(c.to_string().contains("unknown issuer"), "{c}");
    let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
    let c = classify(&ConnectionError::Tls(TlsError::Io(eof)), addr, true, false);
    assert!(matches!(c, ConnectError::NotTls { .. }), "{c:?}");
    let login = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
    let c = classify(&login, addr, true, false);
    assert!(matches!(c, ConnectError::BadLogin { .. }), "{c:?}");
    assert!(c.to_string().contains("user name or password"), "{c}");
    let closed = ConnectionError::MqttState(StateError::ConnectionAborted);
    let c = classify(&closed, addr, false, false);
    assert!(matches!(c, ConnectError::NoMqttAnswer { .. }), "{c:?}");
    assert!(c.to_string().contains("turn TLS on"), "{c}");
    // The same after a CONNACK is a lost connection, not a configuration problem.
    let c = classify(&closed, addr, false, true);
    assert!(!c.is_configuration(), "{c:?}");
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    let c = classify(&ConnectionError::Io(refused), addr, true, false);
    assert!(matches!(c, ConnectError::Unreachable { .. }), "{c:?}");
}

#[test]
fn ca_files_that_cannot_serve_are_refused_by_kind() {
    let missing = std::env::temp_dir().join("mqttmesh-no-such-ca.pem");
    let e = Trust::from_pem_file(&missing).unwrap_err();
    assert!(matches!(e, TlsSetupError::CaUnreadable { .. }), "{e:?}");
    assert!(e.to_string().contains("mqttmesh-no-such-ca.pem"), "{e}");
    let der = temp_file("ca.der", &[0x30, 0x82, 0x01, 0x00, 0x01]);
    let e = Trust::from_pem_file(&der).unwrap_err();
    assert!(matches!(e, TlsSetupError::CaNotPem { .. }), "{e:?}");
    let garbage = temp_file(
        "garbage.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let e = Trust::from_pem_file(&garbage).unwrap_err();
    assert!(
        matches!(e, TlsSetupError::CaInvalid { index: 1, .. }),
        "{e:?}"
    );
    let _ = std::fs::remove_dir_all(der.parent().expect("dir"));
}

#[test]
fn tls_off_needs_no_client_and_a_bad_host_name_is_named() {
    let none = ClientTls::new(BrokerTls::Off, &Trust::System, "h", 1883).expect("off");
    assert!(none.is_none());
    let roots = Trust::Roots(Arc::new(RootCertStore::empty()));
    let pin = ClientTls::new(BrokerTls::PinSha1([0; 20]), &roots, "h", 8883).expect("pin");
    assert_eq!(pin.map(|c| c.mode()), Some(BrokerTls::PinSha1([0; 20])));
    let e = ClientTls::new(BrokerTls::Ca, &roots, "bad host", 8883).unwrap_err();
    assert!(matches!(e, TlsSetupError::ServerName { .. }), "{e:?}");
}
