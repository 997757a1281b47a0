//! The ESP32-C3 firmware's broker TLS in pin mode (`firmware/esp32c3/src/tls_pin.rs`),
//! compiled for the host with the same no_std TLS 1.3 client the chip uses
//! (embedded-tls, blocking flavour here) and spoken to a real Mosquitto TLS listener
//! started by the test on a free port: a SHA-256 and a SHA-1 pin of the broker's leaf
//! open the session (then the firmware's MQTT codec logs in, subscribes and gets its own
//! QoS 1 message back through the broker); a wrong pin is refused before any MQTT byte.
//! The leaf-key extraction and the CertificateVerify check are also run on their own,
//! with a forged signature and hostile DER.
//!
//! Every wait is a blocking read with a deadline; nothing sleeps to synchronise.

#[allow(dead_code)]
#[path = "../../../firmware/esp32c3/src/mqtt_codec.rs"]
mod mqtt_codec;
#[allow(dead_code)]
#[path = "../../../firmware/esp32c3/src/tls_pin.rs"]
mod tls_pin;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use embedded_io_adapters::std::FromStd;
use embedded_tls::blocking::{Aes128GcmSha256, TlsConfig, TlsConnection, TlsContext};
use mqtt_codec::{self as codec, Connect, Incoming};
use mqttmesh_host::mosquitto::{Mosquitto, Secure, TlsListener};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;
use rand_core::OsRng;
use rcgen::{CertificateParams, DnType, KeyPair};
use sha2::Digest as _;
use tls_pin::{PinFailure, PinProvider, PinVerifier};

const MAX_PACKET: usize = 1536;
/// The chip's TLS read buffer (`firmware/esp32c3/src/mqtt.rs` `TLS_READ_BUF`).
const CHIP_TLS_READ_BUF: usize = 8_192 + 256;
/// The read deadline of every blocking read.
const WAIT: Duration = Duration::from_secs(10);
const USER: &str = "mesh";
const PASSWORD: &str = "s3cret-pass";

/// A self-signed ECDSA P-256 broker certificate (what `mqttmesh gen-cert` makes).
struct Leaf {
    der: Vec<u8>,
    key: KeyPair,
    listener: TlsListener,
}

fn leaf() -> Leaf {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "mqttmesh test broker");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    Leaf {
        der: cert.der().to_vec(),
        listener: TlsListener {
            cert_pem: cert.pem().into_bytes(),
            key_pem: key.serialize_pem().into_bytes(),
        },
        key,
    }
}

fn start_broker(leaf: &Leaf) -> Mosquitto {
    Mosquitto::start_secure(&Secure {
        tls: Some(leaf.listener.clone()),
        users: vec![(USER.into(), PASSWORD.into())],
    })
    .expect("mosquitto with a TLS listener starts")
}

type Tls<'a> = TlsConnection<'a, FromStd<TcpStream>, Aes128GcmSha256>;

/// TCP to `addr` and the firmware's TLS handshake with `pin`; the failure the verifier
/// recorded if it was refused.
fn open<'a>(
    addr: SocketAddr,
    pin: &[u8],
    read_buf: &'a mut [u8],
    write_buf: &'a mut [u8],
) -> Result<Tls<'a>, (embedded_tls::TlsError, Option<PinFailure>)> {
    let stream = TcpStream::connect(addr).expect("TCP to the TLS listener");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut tls = TlsConnection::new(FromStd::new(stream), read_buf, write_buf);
    let config = TlsConfig::new();
    let mut provider = PinProvider {
        rng: OsRng,
        verifier: PinVerifier::new(pin),
    };
    match tls.open(TlsContext::new(&config, &mut provider)) {
        Ok(()) => {
            assert!(
                provider.verifier.proved,
                "the handshake finished without the CertificateVerify check"
            );
            Ok(tls)
        }
        Err(e) => Err((e, provider.verifier.failure)),
    }
}

/// Reads one whole MQTT packet and hands it to `f`.
fn next_packet<T>(
    tls: &mut Tls<'_>,
    buf: &mut Vec<u8>,
    f: impl Fn(Incoming<'_>) -> Option<T>,
) -> T {
    let mut chunk = [0u8; MAX_PACKET];
    loop {
        while let Some(len) = codec::frame_len(buf, MAX_PACKET).expect("well-formed frame") {
            let packet: Vec<u8> = buf.drain(..len).collect();
            if let Some(v) = f(codec::decode(&packet).expect("decodable packet")) {
                return v;
            }
        }
        // Blocks at most WAIT (the socket's read timeout): an error fails the test.
        let n = tls
            .read(&mut chunk)
            .expect("a TLS read within the deadline");
        assert!(n > 0, "the broker closed the TLS session");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn send(tls: &mut Tls<'_>, bytes: &[u8]) {
    let mut written = 0;
    while written < bytes.len() {
        written += tls.write(&bytes[written..]).expect("TLS write");
    }
    tls.flush().expect("TLS flush");
}

/// The firmware session over the pinned TLS connection: CONNECT with credentials and a
/// will, SUBSCRIBE, PUBLISH at QoS 1, and the message back through the broker.
fn mqtt_round_trip(tls: &mut Tls<'_>, client_id: &str) {
    let mut out = [0u8; MAX_PACKET];
    let mut buf = Vec::new();
    let len = codec::connect(
        &mut out,
        &Connect {
            client_id,
            keep_alive_secs: 30,
            will_topic: "esp8266-out/test/will",
            will_payload: b"offline",
            username: Some(USER),
            password: Some(PASSWORD),
        },
    )
    .expect("CONNECT fits");
    send(tls, &out[..len]);
    let code = next_packet(tls, &mut buf, |p| match p {
        Incoming::ConnAck { code } => Some(code),
        _ => None,
    });
    assert_eq!(code, 0, "the broker accepted the login over TLS");

    let topic = format!("esp8266-in/{client_id}/echo");
    let len = codec::subscribe(&mut out, 1, &topic, 1).expect("SUBSCRIBE fits");
    send(tls, &out[..len]);
    let granted = next_packet(tls, &mut buf, |p| match p {
        Incoming::SubAck { id: 1, granted } => Some(granted),
        _ => None,
    });
    assert_eq!(granted, 1, "subscription granted at QoS 1");

    let len = codec::publish(&mut out, &topic, b"over tls", 1, false, 2).expect("PUBLISH fits");
    send(tls, &out[..len]);
    let (acked, echoed) = (std::cell::Cell::new(false), std::cell::Cell::new(false));
    next_packet(tls, &mut buf, |p| {
        match p {
            Incoming::PubAck { id: 2 } => acked.set(true),
            Incoming::Publish {
                topic: t, payload, ..
            } if t == topic => {
                assert_eq!(payload, b"over tls");
                echoed.set(true);
            }
            _ => {}
        }
        (acked.get() && echoed.get()).then_some(())
    });
}

#[test]
fn sha256_and_sha1_pins_open_the_broker_session() {
    if !Mosquitto::available() {
        eprintln!("skipping: mosquitto is not installed");
        return;
    }
    let leaf = leaf();
    let broker = start_broker(&leaf);
    let addr = broker.tls_addr().expect("the broker has a TLS listener");
    let sha256: [u8; 32] = sha2::Sha256::digest(&leaf.der).into();
    let sha1: [u8; 20] = sha1::Sha1::digest(&leaf.der).into();
    for (pin, id) in [(&sha256[..], "pin-sha256"), (&sha1[..], "pin-sha1")] {
        // The chip's buffer sizes: a whole 16 KiB record in, one packet out.
        let (mut rb, mut wb) = (vec![0u8; CHIP_TLS_READ_BUF], vec![0u8; MAX_PACKET + 128]);
        let mut tls = match open(addr, pin, &mut rb, &mut wb) {
            Ok(tls) => tls,
            Err(e) => panic!("{id}: the pinned handshake failed: {e:?}\n{}", broker.log()),
        };
        mqtt_round_trip(&mut tls, id);
        let _ = tls.close();
    }
}

#[test]
fn a_wrong_pin_is_refused_before_mqtt() {
    if !Mosquitto::available() {
        eprintln!("skipping: mosquitto is not installed");
        return;
    }
    let leaf = leaf();
    let broker = start_broker(&leaf);
    let addr = broker.tls_addr().expect("the broker has a TLS listener");
    let mut pin: [u8; 32] = sha2::Sha256::digest(&leaf.der).into();
    pin[31] ^= 1;
    let (mut rb, mut wb) = (vec![0u8; CHIP_TLS_READ_BUF], vec![0u8; MAX_PACKET + 128]);
    match open(addr, &pin, &mut rb, &mut wb) {
        Ok(_) => panic!("a handshake with a wrong pin succeeded"),
        Err((_, failure)) => assert_eq!(failure, Some(PinFailure::Mismatch)),
    }
    // A 20-byte pin of another certificate too.
    let other = leaf_der_of_another_key();
    let pin: [u8; 20] = sha1::Sha1::digest(&other).into();
    match open(addr, &pin, &mut rb, &mut wb) {
        Ok(_) => panic!("a handshake with another certificate's pin succeeded"),
        Err((_, failure)) => assert_eq!(failure, Some(PinFailure::Mismatch)),
    }
}

fn leaf_der_of_another_key() -> Vec<u8> {
    leaf().der
}

#[test]
fn certificate_verify_needs_the_pinned_key() {
    let leaf = leaf();
    let key = tls_pin::leaf_p256_key(&leaf.der).expect("a P-256 leaf has a key");
    assert_eq!(&key[..], leaf.key.public_key_raw(), "the key rcgen made");

    // A signature by the leaf's key over the TLS 1.3 content verifies; any other does not.
    let signer = SigningKey::from_pkcs8_der(&leaf.key.serialize_der()).expect("PKCS#8 key");
    let transcript = [7u8; 32];
    let sig: DerSignature = signer.sign(&tls_pin::signed_content(&transcript));
    assert!(tls_pin::certificate_verify_ok(
        &key,
        &transcript,
        sig.as_bytes()
    ));
    assert!(!tls_pin::certificate_verify_ok(
        &key,
        &[8u8; 32],
        sig.as_bytes()
    ));
    let forger = SigningKey::random(&mut OsRng);
    let forged: DerSignature = forger.sign(&tls_pin::signed_content(&transcript));
    assert!(!tls_pin::certificate_verify_ok(
        &key,
        &transcript,
        forged.as_bytes()
    ));
    assert!(!tls_pin::certificate_verify_ok(
        &key,
        &transcript,
        b"\x30\x00"
    ));

    // Pins: by length, SHA-1 or SHA-256; any other length never matches.
    let sha256: [u8; 32] = sha2::Sha256::digest(&leaf.der).into();
    let sha1: [u8; 20] = sha1::Sha1::digest(&leaf.der).into();
    assert!(tls_pin::pin_matches(&sha256, &leaf.der));
    assert!(tls_pin::pin_matches(&sha1, &leaf.der));
    assert!(!tls_pin::pin_matches(&sha256[..31], &leaf.der));
    assert!(!tls_pin::pin_matches(&[], &leaf.der));
}

#[test]
fn hostile_certificates_never_panic() {
    let leaf = leaf();
    // Every truncation and every single-byte corruption of a real certificate.
    for end in 0..leaf.der.len() {
        let _ = tls_pin::leaf_p256_key(&leaf.der[..end]);
    }
    for i in 0..leaf.der.len() {
        let mut der = leaf.der.clone();
        der[i] ^= 0xff;
        let _ = tls_pin::leaf_p256_key(&der);
    }
    // Long-form lengths past the input, zero-length long form, empty input.
    for der in [
        &b"\x30\x83\xff\xff\xff"[..],
        b"\x30\x80",
        b"\x30\x84\x00\x00\x00\x01",
        b"",
    ] {
        assert_eq!(tls_pin::leaf_p256_key(der), None);
    }
    // An RSA-shaped or Ed25519 key is not P-256.
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
    let cert = CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&ed)
        .expect("certificate");
    assert_eq!(tls_pin::leaf_p256_key(cert.der()), None);
}
