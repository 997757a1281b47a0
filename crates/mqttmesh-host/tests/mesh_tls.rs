//! Mesh TLS (issue 4 §2, §4, §5) end to end: nodes over real TCP on loopback with TLS
//! on every mesh link, against a real Mosquitto or the embedded broker. A wrong pin, a
//! plaintext peer and a stalled handshake are refused, counted and logged.
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mqttmesh_host::broker::EmbeddedBroker;
use mqttmesh_host::mesh::{render_tree, until, Mesh, MeshSpec};
use mqttmesh_host::meshtls::{colon_hex, MeshTls, CERT_FILE, FINGERPRINT_FILE, KEY_FILE};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::radio::{Placement, Timing};
use mqttmesh_host::topology;
use mqttmesh_testkit as testkit;
use sha1::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FORM: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);
const OUT: &str = "esp8266-out/";
const IN: &str = "esp8266-in/";

/// Log lines of every test in this binary.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("mqttmesh=info")
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        buf
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    let logs = logs();
    let bytes = logs.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The three files as `mqttmesh gen-cert --out dir` writes them; the certificate's SHA-1.
fn gen_cert(dir: &Path) -> [u8; 20] {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = rcgen::CertificateParams::new(vec!["mqttmesh-mesh".into()])
        .expect("params")
        .self_signed(&key)
        .expect("sign");
    let ssl = dir.join("ssl");
    std::fs::create_dir_all(&ssl).expect("mkdir");
    let fingerprint: [u8; 20] = sha1::Sha1::digest(cert.der()).into();
    std::fs::write(ssl.join(CERT_FILE), cert.der()).expect("write");
    std::fs::write(ssl.join(KEY_FILE), key.serialize_der()).expect("write");
    std::fs::write(ssl.join(FINGERPRINT_FILE), fingerprint).expect("write");
    fingerprint
}

async fn start(broker: SocketAddr, seed: u64, placement: Placement, tls: MeshTls) -> Mesh {
    start_timed(broker, seed, placement, tls, Timing::fast()).await
}

async fn start_timed(
    broker: SocketAddr,
    seed: u64,
    placement: Placement,
    tls: MeshTls,
    timing: Timing,
) -> Mesh {
    Mesh::start(MeshSpec {
        timing,
        mesh_tls: Some(tls),
        seed,
        publish_interval: Duration::from_millis(500),
        ..MeshSpec::new(placement, testkit::config(broker), broker)
    })
    .await
    .expect("nodes start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_line_carries_traffic_both_ways_on_mosquitto() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    gen_cert(dir.path());
    let tls = MeshTls::load(dir.path()).expect("the files load");
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    let obs = Observer::start(broker.addr(), OUT, "mesh-tls-observer")
        .await
        .expect("observer connects");
    const N: usize = 4;
    let mesh = start(broker.addr(), 41, topology::line(N), tls).await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "the TLS line did not form:\n{}",
        render_tree(&mesh.rows())
    );
    let rows = mesh.rows();
    assert_eq!(
        rows.iter().filter_map(|r| r.depth).max(),
        Some(N as u8),
        "{}",
        render_tree(&rows)
    );
    // Up: the deepest node's counter reaches the broker through every TLS hop.
    let deepest = mesh.node_id(N - 1);
    let counter = format!("{OUT}{deepest}/counter");
    assert!(
        obs.wait_for(WAIT, |o| !o.messages(|t| t == counter).is_empty())
            .await,
        "no counter from the deepest node {deepest}"
    );
    // Down: an addressed message reaches it.
    obs.publish(&format!("{IN}{deepest}/led"), b"on", false)
        .await
        .expect("publish");
    let led = format!("{OUT}{deepest}/led");
    assert!(
        obs.wait_for(WAIT, |o| o
            .messages(|t| t == led)
            .iter()
            .any(|m| m.payload == b"on"))
            .await,
        "{deepest} did not switch its LED on"
    );
    let c = mesh.mesh_tls_counters();
    assert!(c.parent_handshakes >= (N - 1) as u64, "{c:?}");
    assert!(c.child_handshakes >= (N - 1) as u64, "{c:?}");
    assert_eq!(c.parent_pin_mismatches, 0, "{c:?}");
    assert_eq!(c.child_handshake_failures, 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_narrow_tls_links_still_deliver_everything() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    gen_cert(dir.path());
    let tls = MeshTls::load(dir.path()).expect("load");
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("broker");
    let obs = Observer::start(broker.addr(), OUT, "mesh-tls-lossy-observer")
        .await
        .expect("observer connects");
    // Air time is charged per TLS record, resends delay records: TLS must not care.
    let timing = Timing {
        loss: 0.3,
        bandwidth_bps: 200_000,
        ..Timing::fast()
    };
    let mesh = start_timed(broker.addr(), 44, topology::line(3), tls, timing).await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "lossy TLS line did not form:\n{}",
        render_tree(&mesh.rows())
    );
    assert!(
        mesh.wait_for(WAIT, |m| m.published() >= 12).await,
        "nodes did not publish"
    );
    mesh.set_publishing(false);
    let delivered = obs
        .wait_for(WAIT, |o| o.delivered() == mesh.published())
        .await;
    assert!(
        delivered,
        "published {}, delivered {}",
        mesh.published(),
        obs.delivered()
    );
    assert_eq!(obs.duplicates(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_pinning_another_fingerprint_refuses_the_parent() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    let served = gen_cert(dir.path());
    let wrong = [0x5A; 20];
    let tls = MeshTls::load(dir.path()).expect("load").pinning(wrong);
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("broker");
    // Node 1 hears only node 0, whose certificate it does not pin.
    let mesh = start(broker.addr(), 42, topology::line(2), tls).await;
    let refused_twice = mesh
        .wait_for(FORM, |m| {
            let s = m.statuses();
            s[0].online && s[1].mesh_tls.parent_pin_mismatches >= 2
        })
        .await;
    let s = mesh.statuses();
    assert!(
        refused_twice,
        "node 1 did not keep refusing node 0: {:?}\n{}",
        s[1].mesh_tls,
        render_tree(&mesh.rows())
    );
    assert!(!s[1].online, "node 1 joined a parent it does not pin");
    assert_eq!(s[1].counters.connects, 0, "node 1 went online");
    assert!(
        s[0].children.is_empty(),
        "node 0 has children {:?}",
        s[0].children
    );
    assert_eq!(s[1].parent, None);
    let log = log_text();
    let line = log
        .lines()
        .find(|l| l.contains("refusing the parent") && l.contains(&mesh.node_id(1)))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    assert!(line.contains(&colon_hex(&served)), "{line}");
    assert!(line.contains(&colon_hex(&wrong)), "{line}");
}

/// Reads until the peer closes; whether it did before `timeout`.
async fn closed_by_peer(stream: &mut TcpStream, timeout: Duration) -> bool {
    let mut buf = [0u8; 512];
    let read_to_end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read_to_end).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_stalled_peers_on_a_tls_mesh_port_are_closed_and_counted() {
    logs();
    let dir = tempfile::tempdir().expect("tempdir");
    gen_cert(dir.path());
    let tls = MeshTls::load(dir.path())
        .expect("load")
        .with_handshake_timeout(Duration::from_millis(500));
    let broker = EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], 0))).expect("broker");
    let mesh = start(broker.addr(), 43, topology::line(1), tls).await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "root not online"
    );
    let port = mesh.mesh_addr(0);

    // A node without mesh TLS: its plaintext link frames where a ClientHello belongs.
    let mut plain = TcpStream::connect(port).await.expect("connect");
    plain
        .write_all(&[
            0x00, 0x10, 0x01, 0x01, b'm', b'e', b's', b'h', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ])
        .await
        .expect("write");
    assert!(
        closed_by_peer(&mut plain, WAIT).await,
        "plaintext peer not closed"
    );
    assert!(
        until(WAIT, || mesh.statuses()[0]
            .mesh_tls
            .child_handshake_failures
            >= 1)
        .await,
        "plaintext peer not counted: {:?}",
        mesh.statuses()[0].mesh_tls
    );

    // A peer that connects and says nothing: closed once the handshake times out.
    let mut stalled = TcpStream::connect(port).await.expect("connect");
    assert!(
        closed_by_peer(&mut stalled, WAIT).await,
        "stalled peer not closed"
    );
    assert!(
        until(WAIT, || mesh.statuses()[0].mesh_tls.handshake_timeouts >= 1).await,
        "stalled handshake not counted: {:?}",
        mesh.statuses()[0].mesh_tls
    );

    let s = &mesh.statuses()[0];
    assert_eq!(s.mesh_tls.child_handshake_failures, 2, "{:?}", s.mesh_tls);
    assert!(s.children.is_empty(), "{:?}", s.children);
    assert!(s.online, "the root went offline");
    let log = log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("refused a connection to the mesh port") && l.contains("within")),
        "no timeout in the log:\n{log}"
    );
}
