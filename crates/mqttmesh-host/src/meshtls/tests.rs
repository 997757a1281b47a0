use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What `mqttmesh gen-cert` writes: a self-signed ECDSA P-256 certificate, its PKCS#8
/// key and the SHA-1 of the certificate, in `dir/ssl/`.
fn write_files(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["mqttmesh-mesh".into()])
        .expect("params")
        .self_signed(&key)
        .expect("sign");
    let ssl = dir.join("ssl");
    std::fs::create_dir_all(&ssl).expect("mkdir");
    let cert = cert.der().to_vec();
    let key = key.serialize_der();
    std::fs::write(ssl.join(CERT_FILE), &cert).expect("write");
    std::fs::write(ssl.join(KEY_FILE), &key).expect("write");
    std::fs::write(ssl.join(FINGERPRINT_FILE), sha1(&cert)).expect("write");
    (cert, key)
}

fn load_err(dir: &Path) -> LoadError {
    match MeshTls::load(dir) {
        Ok(t) => panic!("loaded {t:?}"),
        Err(e) => e,
    }
}

fn put(dir: &Path, file: &str, bytes: &[u8]) {
    std::fs::write(dir.join("ssl").join(file), bytes).expect("write");
}

#[test]
fn loads_the_files_gen_cert_writes_from_the_dir_or_its_ssl_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = write_files(dir.path());
    let tls = MeshTls::load(dir.path()).expect("load");
    assert_eq!(tls.fingerprint(), sha1(&cert));
    assert_eq!(tls.pin(), tls.fingerprint());
    assert_eq!(tls.dir(), dir.path().join("ssl"));
    let direct = MeshTls::load(&dir.path().join("ssl")).expect("load ssl/ itself");
    assert_eq!(direct.fingerprint(), tls.fingerprint());
    assert_eq!(tls.pinning([7; 20]).pin(), [7; 20]);
}

#[test]
fn each_missing_file_is_named() {
    for file in [CERT_FILE, KEY_FILE, FINGERPRINT_FILE] {
        let dir = tempfile::tempdir().expect("tempdir");
        write_files(dir.path());
        std::fs::remove_file(dir.path().join("ssl").join(file)).expect("rm");
        let e = load_err(dir.path());
        assert!(
            matches!(&e, LoadError::Missing { path } if path.ends_with(file)),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains(file) && text.contains("mqttmesh gen-cert --out DIR"),
            "{text}"
        );
    }
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(load_err(empty.path()), LoadError::Missing { .. }));
}

#[test]
fn a_corrupt_or_truncated_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = write_files(dir.path());
    let mut flipped = cert.clone();
    flipped[1] ^= 0xFF;
    let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    for bad in [
        &cert[..cert.len() / 2],
        &cert[..1],
        &[][..],
        &flipped[..],
        pem,
    ] {
        put(dir.path(), CERT_FILE, bad);
        let e = load_err(dir.path());
        assert!(matches!(e, LoadError::BadCertificate { .. }), "{e:?}");
        assert!(e.to_string().contains(CERT_FILE), "{e}");
        assert!(e.to_string().contains("gen-cert"), "{e}");
    }
}

#[test]
fn a_corrupt_truncated_or_foreign_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, key) = write_files(dir.path());
    for bad in [
        &key[..key.len() / 2],
        &key[..3],
        &[][..],
        b"not a key at all",
    ] {
        put(dir.path(), KEY_FILE, bad);
        let e = load_err(dir.path());
        assert!(matches!(e, LoadError::BadKey { .. }), "{e:?}");
        assert!(e.to_string().contains(KEY_FILE), "{e}");
    }
    let other = tempfile::tempdir().expect("tempdir");
    let (_, other_key) = write_files(other.path());
    put(dir.path(), KEY_FILE, &other_key);
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::KeyMismatch { .. }), "{e:?}");
    assert!(
        e.to_string().contains("different `mqttmesh gen-cert` runs"),
        "{e}"
    );
}

#[test]
fn a_fingerprint_of_the_wrong_size_or_another_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, _) = write_files(dir.path());
    let hex_text = colon_hex(&sha1(&cert));
    for bad in [&[1u8; 19][..], &[1; 21], &[], hex_text.as_bytes()] {
        put(dir.path(), FINGERPRINT_FILE, bad);
        let e = load_err(dir.path());
        assert!(
            matches!(e, LoadError::FingerprintLength { len, .. } if len == bad.len()),
            "{e:?}"
        );
        assert!(e.to_string().contains("exactly 20 raw bytes"), "{e}");
    }
    put(dir.path(), FINGERPRINT_FILE, &[0xAB; 20]);
    let e = load_err(dir.path());
    assert!(matches!(e, LoadError::FingerprintMismatch { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&hex_text) && text.contains(&colon_hex(&[0xAB; 20])),
        "{text}"
    );
}

async fn pair() -> (TcpListener, TcpStream, TcpStream) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    (listener, client, server)
}

#[tokio::test]
async fn a_pinned_parent_is_accepted_and_carries_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(dir.path());
    let tls = MeshTls::load(dir.path()).expect("load");
    let (_l, client, server) = pair().await;
    let (c, s) = tokio::join!(tls.connect(client), tls.accept(server));
    let (mut c, mut s) = (c.expect("client side"), s.expect("server side"));
    c.write_all(b"frame").await.expect("write");
    c.flush().await.expect("flush");
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"frame");
}

#[tokio::test]
async fn a_parent_with_another_certificate_is_refused_with_what_it_showed() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(dir.path());
    let parent = MeshTls::load(dir.path()).expect("load");
    let child = parent.clone().pinning([0x55; 20]);
    let (_l, client, server) = pair().await;
    let (c, _s) = tokio::join!(child.connect(client), parent.accept(server));
    match c {
        Err(HandshakeError::Pin(m)) => {
            assert_eq!(m.seen, parent.fingerprint());
            assert_eq!(m.pinned, [0x55; 20]);
            assert!(m.to_string().contains(&colon_hex(&m.seen)));
        }
        other => panic!("expected a pin mismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn plaintext_and_stalled_peers_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_files(dir.path());
    let tls = MeshTls::load(dir.path())
        .expect("load")
        .with_handshake_timeout(Duration::from_millis(200));
    // Plaintext link frames where a ClientHello belongs.
    let (_l, mut client, server) = pair().await;
    client
        .write_all(&[0, 12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        .await
        .expect("write");
    assert!(matches!(
        tls.accept(server).await,
        Err(HandshakeError::Failed(_))
    ));
    // Nothing at all.
    let (_l, _client, server) = pair().await;
    assert!(matches!(
        tls.accept(server).await,
        Err(HandshakeError::Timeout(_))
    ));
    // A parent that never answers the ClientHello.
    let (_l, client, _server) = pair().await;
    assert!(matches!(
        tls.connect(client).await,
        Err(HandshakeError::Timeout(_))
    ));
}
