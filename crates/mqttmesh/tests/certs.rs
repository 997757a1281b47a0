//! `mqttmesh gen-cert` and `mqttmesh fingerprint`, end to end (issue 4 §3, §4): the
//! generated files agree with each other, and `fingerprint` against a real Mosquitto TLS
//! listener serving that certificate prints the digests this test computes itself. A
//! plain MQTT port and a closed port each get their own clear error.
//!
//! Every run has a deadline; a run that outlives it is killed and the test fails.

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use mqttmesh_host::mosquitto::Mosquitto;
use sha1::Digest as _;

mod common;
use common::{Run, TempDir};

/// Generous: each run takes well under a second.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries at starting Mosquitto when another process takes the TLS port first.
const START_ATTEMPTS: u32 = 3;

/// Runs `mqttmesh <args>`, killing it if it outlives [`RUN_TIMEOUT`].
fn mqttmesh(dir: &TempDir, name: &str, args: &[&str]) -> Run {
    common::mqttmesh(dir, name, args, RUN_TIMEOUT)
}

fn colon_hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    parts.join(":")
}

fn byte_array(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("0x{b:02x}")).collect();
    format!("[{}]", parts.join(", "))
}

/// The DER inside a one-object PEM file.
fn pem_der(path: &Path) -> Vec<u8> {
    let text = fs::read_to_string(path).expect("read PEM");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body is base64")
}

/// The bytes of `const NAME ... = [ .. ];` in a generated Rust file.
fn rust_const(source: &str, name: &str) -> Vec<u8> {
    let start = source
        .find(&format!("pub const {name}:"))
        .unwrap_or_else(|| panic!("no {name} in\n{source}"));
    let rest = &source[start..];
    let open = rest.find("= ").expect("initialiser") + 2;
    let close = rest.find("];").expect("end of array");
    rest[open..close]
        .split(|c: char| c == ',' || c.is_whitespace() || c == '[' || c == '&')
        .filter(|t| !t.is_empty())
        .map(|t| u8::from_str_radix(t.trim_start_matches("0x"), 16).expect("hex byte"))
        .collect()
}

fn gen_cert(dir: &TempDir, name: &str, extra: &[&str]) -> Run {
    let mut args = vec!["gen-cert", "--out", dir.arg()];
    args.extend_from_slice(extra);
    mqttmesh(dir, name, &args)
}

#[test]
fn gen_cert_writes_files_that_agree_and_refuses_to_overwrite() {
    let dir = TempDir::new("gen");
    let run = gen_cert(&dir, "first", &[]);
    assert!(run.status.success(), "{}", run.context());
    let ssl = dir.path("ssl");
    let cer = fs::read(ssl.join("server.cer")).expect("server.cer");
    let key = fs::read(ssl.join("server.key")).expect("server.key");
    let fingerprint = fs::read(ssl.join("fingerprint")).expect("fingerprint");
    let sha1: [u8; 20] = sha1::Sha1::digest(&cer).into();
    assert_eq!(
        fingerprint, sha1,
        "fingerprint file is the SHA-1 of server.cer"
    );
    assert!(run.stdout.contains(&colon_hex(&sha1)), "{}", run.context());
    assert_eq!(pem_der(&ssl.join("server.cer.pem")), cer);
    assert_eq!(pem_der(&ssl.join("server.key.pem")), key);
    let source = fs::read_to_string(ssl.join("mesh_cert.rs")).expect("mesh_cert.rs");
    assert_eq!(rust_const(&source, "SERVER_CER"), cer);
    assert_eq!(rust_const(&source, "SERVER_KEY"), key);
    assert_eq!(rust_const(&source, "FINGERPRINT"), fingerprint);
    #[cfg(unix)]
    for secret in ["server.key", "server.key.pem", "mesh_cert.rs"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(ssl.join(secret))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret} mode {mode:o}");
    }

    let again = gen_cert(&dir, "again", &[]);
    assert!(!again.status.success(), "{}", again.context());
    assert!(again.stderr.contains("--force"), "{}", again.context());
    assert_eq!(fs::read(ssl.join("server.cer")).expect("server.cer"), cer);

    let forced = gen_cert(&dir, "forced", &["--force", "--common-name", "other"]);
    assert!(forced.status.success(), "{}", forced.context());
    let new_cer = fs::read(ssl.join("server.cer")).expect("server.cer");
    assert_ne!(new_cer, cer, "--force wrote a new certificate");
    let new_sha1: [u8; 20] = sha1::Sha1::digest(&new_cer).into();
    assert_eq!(fs::read(ssl.join("fingerprint")).expect("fp"), new_sha1);

    let rsa = gen_cert(&dir, "rsa", &["--force", "--key-type", "rsa-2048"]);
    assert!(!rsa.status.success(), "{}", rsa.context());
    assert!(rsa.stderr.contains("ecdsa-p256"), "{}", rsa.context());
    assert_eq!(
        fs::read(ssl.join("server.cer")).expect("cer"),
        new_cer,
        "untouched"
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("local addr").port()
}

/// Mosquitto with its plain listener and a TLS listener serving `ssl/server.cer.pem`.
fn mosquitto_with_tls(ssl: &Path) -> (Mosquitto, u16) {
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        let tls_port = free_port();
        let config = format!(
            "listener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
            ssl.join("server.cer.pem").display(),
            ssl.join("server.key.pem").display()
        );
        match Mosquitto::start_with(&config) {
            Ok(broker) => return (broker, tls_port),
            // Most likely another process took the TLS port: pick another.
            Err(e) => last = e.to_string(),
        }
    }
    panic!("mosquitto with a TLS listener did not start: {last}");
}

#[test]
fn fingerprint_of_a_mosquitto_tls_listener_matches_the_certificate() {
    let dir = TempDir::new("fingerprint");
    let run = gen_cert(&dir, "gen", &["--common-name", "mesh-test"]);
    assert!(run.status.success(), "{}", run.context());
    let ssl = dir.path("ssl");
    let cer = fs::read(ssl.join("server.cer")).expect("server.cer");
    let sha1: [u8; 20] = sha1::Sha1::digest(&cer).into();
    let sha256: [u8; 32] = sha2::Sha256::digest(&cer).into();
    let (broker, tls_port) = mosquitto_with_tls(&ssl);

    let tls = tls_port.to_string();
    let run = mqttmesh(
        &dir,
        "tls",
        &["fingerprint", "--host", "127.0.0.1", "--port", &tls],
    );
    let context = format!("{}\n--- mosquitto\n{}", run.context(), broker.log());
    assert!(run.status.success(), "{context}");
    for expected in [
        colon_hex(&sha1),
        byte_array(&sha1),
        colon_hex(&sha256),
        byte_array(&sha256),
    ] {
        assert!(
            run.stdout.contains(&expected),
            "missing {expected}\n{context}"
        );
    }
    assert!(run.stdout.contains("ecdsa-with-SHA256"), "{context}");
    assert!(run.stdout.contains("CN=mesh-test"), "{context}");
    assert!(!run.stdout.contains("WARNING"), "{context}");

    let plain = broker.port().to_string();
    let run = mqttmesh(
        &dir,
        "plain",
        &[
            "fingerprint",
            "--host",
            "127.0.0.1",
            "--port",
            &plain,
            "--timeout",
            "5",
        ],
    );
    assert!(!run.status.success(), "{}", run.context());
    assert!(
        run.stderr.contains("does not speak TLS"),
        "{}",
        run.context()
    );

    drop(broker);
    let closed = free_port().to_string();
    let run = mqttmesh(
        &dir,
        "closed",
        &["fingerprint", "--host", "127.0.0.1", "--port", &closed],
    );
    assert!(!run.status.success(), "{}", run.context());
    let expected = format!(
        "cannot connect to 127.0.0.1:{closed}: connection refused; is the broker listening \
         there? check --host/--port"
    );
    assert!(run.stderr.contains(&expected), "{}", run.context());
}

#[test]
fn sim_runs_a_mesh_over_tls_with_the_files_of_gen_cert() {
    let dir = TempDir::new("sim-mesh-tls");
    let run = gen_cert(&dir, "gen", &[]);
    assert!(run.status.success(), "{}", run.context());
    let fingerprint = colon_hex(&fs::read(dir.path("ssl/fingerprint")).expect("fingerprint"));
    let report = dir.path("report.json");
    let report_arg = report.to_str().expect("utf-8 temp path");
    let args = [
        "sim",
        "--nodes",
        "5",
        "--topology",
        "line",
        "--profile",
        "fast",
        "--until-formed",
        "--publish-interval",
        "0.5",
        "--mesh-tls",
        dir.arg(),
        "--report",
        report_arg,
    ];
    let run = common::mqttmesh(&dir, "sim", &args, Duration::from_secs(120));
    assert!(run.status.success(), "{}", run.context());
    assert!(
        run.stderr
            .contains(&format!("mesh TLS on: {}", dir.path("ssl").display()))
            && run.stderr.contains(&fingerprint),
        "{}",
        run.context()
    );
    let text = fs::read_to_string(&report).expect("report");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(json["online"], 5, "{text}");
    assert_eq!(json["max_depth"], 5, "{text}");
    let tls = &json["mesh_tls"];
    assert!(tls["parent_handshakes"].as_u64() >= Some(4), "{text}");
    assert!(tls["child_handshakes"].as_u64() >= Some(4), "{text}");
    assert_eq!(tls["parent_pin_mismatches"], 0, "{text}");
    let published = json["messages"]["published"].as_u64().expect("published");
    assert!(published > 0, "{text}");
    assert_eq!(
        json["messages"]["delivered"].as_u64(),
        Some(published),
        "{text}"
    );
    assert!(run.stdout.contains("mesh TLS: "), "{}", run.context());
}

#[test]
fn sim_refuses_unusable_mesh_tls_files_with_the_file_named() {
    let dir = TempDir::new("sim-mesh-tls-bad");
    let sim = |name: &str| {
        let args = [
            "sim",
            "--nodes",
            "1",
            "--profile",
            "fast",
            "--mesh-tls",
            dir.arg(),
        ];
        let run = mqttmesh(&dir, name, &args);
        assert_eq!(run.status.code(), Some(1), "{}", run.context());
        run.stderr
    };
    let err = sim("none");
    assert!(
        err.contains("--mesh-tls: ")
            && err.contains("server.cer is missing")
            && err.contains("mqttmesh gen-cert --out DIR"),
        "{err}"
    );
    let run = gen_cert(&dir, "gen", &[]);
    assert!(run.status.success(), "{}", run.context());
    let fp = dir.path("ssl/fingerprint");
    fs::write(&fp, [1u8; 12]).expect("truncate the fingerprint");
    let err = sim("short-fingerprint");
    assert!(
        err.contains("holds 12 bytes") && err.contains("fingerprint"),
        "{err}"
    );
    fs::write(&fp, [1u8; 20]).expect("another fingerprint");
    let err = sim("other-fingerprint");
    assert!(err.contains("different `mqttmesh gen-cert` runs"), "{err}");
    let key = dir.path("ssl/server.key");
    let bytes = fs::read(&key).expect("key");
    fs::write(&key, &bytes[..bytes.len() / 2]).expect("truncate the key");
    let err = sim("truncated-key");
    assert!(
        err.contains("server.key is not a usable DER private key"),
        "{err}"
    );
}
