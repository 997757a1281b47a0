//! Broker faults, end to end: an emulated mesh over real TCP on loopback against a real
//! Mosquitto started by the test on a free port, which refuses credentials, crashes and
//! comes back, or drops one root's session; and a mesh on custom topic prefixes.
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mqttmesh_core::config::{Builder, Config, Timing as NodeTiming};
use mqttmesh_core::Duration as CoreDuration;
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::radio::{Placement, Timing};
use mqttmesh_host::topology;
use mqttmesh_testkit as testkit;

const FORM: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);
const OUT: &str = "esp8266-out/";

/// Short node timers (as in e2e.rs), with a short MQTT keep-alive so the window after
/// which a node re-announces `online` is a few seconds.
fn timing() -> NodeTiming {
    NodeTiming {
        link_timeout: CoreDuration::from_millis(3000),
        mqtt_keepalive: CoreDuration::from_secs(2),
        ..NodeTiming::fast()
    }
}

fn builder(broker: SocketAddr) -> Builder {
    testkit::config_builder(broker).timing(timing())
}

fn config(broker: SocketAddr) -> Config {
    builder(broker)
        .build()
        .expect("test configuration is valid")
}

async fn start_mesh(placement: Placement, config: Config, broker: SocketAddr, seed: u64) -> Mesh {
    Mesh::start(MeshSpec {
        timing: Timing::fast(),
        seed,
        publish_interval: Duration::from_millis(300),
        ..MeshSpec::new(placement, config, broker)
    })
    .await
    .expect("nodes start")
}

fn text(v: Option<Vec<u8>>) -> String {
    String::from_utf8_lossy(&v.unwrap_or_default()).into_owned()
}

fn ids(mesh: &Mesh) -> Vec<String> {
    mesh.statuses().into_iter().map(|s| s.id).collect()
}

/// Polls a synchronous condition (e.g. on the broker's log file) until it holds or
/// `timeout` passes; whether it held.
async fn poll_until(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh temp dir for this test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "mqttmesh-broker-faults-{}-{test}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a Mosquitto password file with one user, using `mosquitto_passwd` (shipped
/// with the `mosquitto` package).
fn password_file(dir: &Path, user: &str, pass: &str) -> PathBuf {
    let file = dir.join("passwd");
    let status = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&file)
        .arg(user)
        .arg(pass)
        .status()
        .expect("mosquitto_passwd runs (it ships with `apt-get install mosquitto`)");
    assert!(status.success(), "mosquitto_passwd failed: {status}");
    file
}

/// Connects to the broker as `client_id` (MQTT 3.1.1, clean session), waits for an
/// accepting CONNACK and disconnects cleanly: the broker drops whichever connection
/// held that client id before (session takeover).
fn take_over_session(broker: SocketAddr, client_id: &str) {
    let mut packet = vec![0x10, (10 + 2 + client_id.len()) as u8];
    packet.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x0a]);
    packet.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    packet.extend_from_slice(client_id.as_bytes());
    let mut stream = TcpStream::connect(broker).expect("connect to the broker");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream.write_all(&packet).expect("send CONNECT");
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    stream.write_all(&[0xe0, 0x00]).expect("send DISCONNECT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusing_credentials_keeps_roots_retrying_then_they_connect() {
    let tmp = TempDir::new("credentials");
    let passwd = password_file(&tmp.0, "user", "pass");
    // Global settings: `Mosquitto` writes `allow_anonymous true` before its listener and
    // probes readiness anonymously, so the broker must keep anonymous access; a client
    // that presents a user name must present the right password (CONNACK 5 otherwise).
    // An anonymous-only refusal needs a change in `Mosquitto` (see the ignored test
    // below).
    let broker = Mosquitto::start_with(&format!("password_file {}", passwd.display()))
        .expect("mosquitto starts with a password file");
    let addr = broker.addr();
    let refused = |log: &str| log.matches("not authorised").count();

    // Wrong password: the root is refused, nobody comes online, the root keeps trying.
    let wrong = builder(addr)
        .mqtt_credentials("user", "wrong")
        .build()
        .expect("valid config");
    let mesh = start_mesh(topology::line(4), wrong, addr, 21).await;
    let came_online = mesh
        .wait_for(Duration::from_secs(3), |m| m.online() > 0)
        .await;
    assert!(
        !came_online,
        "a node came online with a wrong password:\n{}\n{}",
        render_tree(&mesh.rows()),
        broker.log()
    );
    assert!(
        poll_until(WAIT, || refused(&broker.log()) >= 4).await,
        "the root did not keep retrying (want >= 4 refused connections):\n{}",
        broker.log()
    );
    for s in mesh.statuses() {
        assert!(s.alive && !s.online, "{} online", s.id);
        assert_eq!(s.counters.connects, 0, "{} connected", s.id);
    }
    drop(mesh);

    // The right credentials (another seed: other client ids than the dying mesh's).
    let right = builder(addr)
        .mqtt_credentials("user", "pass")
        .build()
        .expect("valid config");
    let mesh = start_mesh(topology::line(4), right, addr, 22).await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "mesh did not form with the right credentials:\n{}\n{}",
        render_tree(&mesh.rows()),
        broker.log()
    );
    let max_depth = mesh.rows().iter().filter_map(|r| r.depth).max();
    assert_eq!(max_depth, Some(4), "{}", render_tree(&mesh.rows()));
    let log = broker.log();
    assert!(
        log.contains("u'user')"),
        "no authenticated client in the log:\n{log}"
    );
}

/// The scenario as specified: a broker that refuses anonymous clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refusing_anonymous_keeps_roots_retrying_then_they_connect() {
    let tmp = TempDir::new("anonymous");
    let passwd = password_file(&tmp.0, "user", "pass");
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}",
        passwd.display()
    ))
    .expect("mosquitto starts refusing anonymous clients");
    let addr = broker.addr();
    let mesh = start_mesh(topology::line(4), config(addr), addr, 23).await;
    assert!(
        !mesh
            .wait_for(Duration::from_secs(3), |m| m.online() > 0)
            .await,
        "an anonymous node came online"
    );
    assert!(
        poll_until(WAIT, || broker.log().matches("not authorised").count() >= 4).await,
        "the root did not keep retrying:\n{}",
        broker.log()
    );
    drop(mesh);
    let right = builder(addr)
        .mqtt_credentials("user", "pass")
        .build()
        .expect("valid config");
    let mesh = start_mesh(topology::line(4), right, addr, 24).await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "{}",
        render_tree(&mesh.rows())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mesh_recovers() {
    let mut broker = Mosquitto::start().expect("mosquitto starts");
    let addr = broker.addr();
    let mesh = start_mesh(topology::grid(9), config(addr), addr, 31).await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "mesh did not form:\n{}",
        render_tree(&mesh.rows())
    );
    let deep = mesh
        .rows()
        .iter()
        .filter_map(|r| r.depth)
        .max()
        .unwrap_or(0);
    assert!(deep >= 2, "want a subtree below the root");

    broker.stop();
    assert!(
        mesh.wait_for(WAIT, |m| m.online() == 0).await,
        "nodes still online with the broker down:\n{}",
        render_tree(&mesh.rows())
    );
    for s in mesh.statuses() {
        assert!(s.counters.disconnects >= 1, "{} never lost its path", s.id);
    }

    broker
        .restart()
        .expect("mosquitto restarts on the same port");
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "mesh did not recover after the broker restart:\n{}",
        render_tree(&mesh.rows())
    );
    for s in mesh.statuses() {
        assert!(
            s.counters.connects >= 2,
            "{} connects {}",
            s.id,
            s.counters.connects
        );
    }

    // The restarted broker kept nothing (no persistence): what a fresh observer sees
    // was published again by the mesh.
    let obs = Observer::start(addr, OUT, "faults-restart-observer")
        .await
        .expect("observer connects");
    let ids = ids(&mesh);
    let available = obs
        .wait_for(WAIT, |o| {
            ids.iter()
                .all(|id| text(o.retained(&format!("{OUT}{id}/info/available"))) == "online")
        })
        .await;
    assert!(
        available,
        "not every node is `online` after the restart: {:?}",
        ids.iter()
            .map(|id| (id, text(obs.retained(&format!("{OUT}{id}/info/available")))))
            .collect::<Vec<_>>()
    );
    let counting = obs
        .wait_for(WAIT, |o| {
            ids.iter().all(|id| {
                let topic = format!("{OUT}{id}/counter");
                !o.messages(|t| t == topic).is_empty()
            })
        })
        .await;
    assert!(
        counting,
        "counters do not flow from every node after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_dropping_a_root_connection() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let addr = broker.addr();
    let obs = Observer::start(addr, OUT, "faults-takeover-observer")
        .await
        .expect("observer connects");
    let mesh = start_mesh(topology::line(4), config(addr), addr, 41).await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "mesh did not form:\n{}",
        render_tree(&mesh.rows())
    );
    let root = mesh
        .statuses()
        .into_iter()
        .position(|s| s.parent.as_deref() == Some("router"))
        .expect("a root");
    let root_id = mesh.statuses()[root].id.clone();
    let connects = mesh.statuses()[root].counters.connects;
    let available = format!("{OUT}{root_id}/info/available");
    assert!(
        obs.wait_for(WAIT, |o| text(o.retained(&available)) == "online")
            .await,
        "root {root_id} not announced online"
    );
    let seen_before = obs.messages(|t| t == available).len();

    // Another client with the root's client id: the broker closes the root's session.
    take_over_session(addr, &format!("mqttmesh-{root_id}"));
    assert!(
        poll_until(WAIT, || broker
            .log()
            .contains(&format!("Client mqttmesh-{root_id} already connected")))
        .await,
        "broker did not report the takeover:\n{}",
        broker.log()
    );

    // The root reconnects and the whole mesh is online again.
    let recovered = mesh
        .wait_for(FORM, |m| {
            let st = m.statuses();
            st[root].counters.connects > connects && st.iter().all(|s| s.online)
        })
        .await;
    assert!(
        recovered,
        "mesh did not recover after the root's session was dropped:\n{}\n{}",
        render_tree(&mesh.rows()),
        broker.log()
    );
    assert_eq!(
        mesh.statuses()[root].parent.as_deref(),
        Some("router"),
        "the only node that hears the router is a root again"
    );

    // Online on reconnection, and again after the window in which a late will could
    // have said `offline`; the retained value ends `online`.
    let reannounced = obs
        .wait_for(WAIT, |o| {
            let after: Vec<_> = o.messages(|t| t == available)[seen_before..].to_vec();
            after.iter().filter(|m| m.payload == b"online").count() >= 2
                && after.last().is_some_and(|m| m.payload == b"online")
        })
        .await;
    assert!(
        reannounced,
        "root {root_id} did not re-announce online: {:?}",
        obs.messages(|t| t == available)[seen_before..]
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect::<Vec<_>>()
    );
    let fresh = Observer::start(addr, OUT, "faults-takeover-fresh")
        .await
        .expect("observer connects");
    assert!(
        fresh
            .wait_for(WAIT, |o| text(o.retained(&available)) == "online")
            .await,
        "retained {available} is {:?}",
        text(fresh.retained(&available))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_with_custom_prefixes_and_ids() {
    const HOME_OUT: &str = "home/out/";
    const HOME_IN: &str = "home/in/";
    let broker = Mosquitto::start().expect("mosquitto starts");
    let addr = broker.addr();
    let home = Observer::start(addr, HOME_OUT, "faults-home-observer")
        .await
        .expect("observer connects");
    let default = Observer::start(addr, OUT, "faults-default-observer")
        .await
        .expect("observer connects");
    let custom = |b: Builder| b.in_prefix(HOME_IN).out_prefix(HOME_OUT);
    let mesh = start_mesh(
        topology::line(3),
        custom(builder(addr)).build().expect("valid config"),
        addr,
        51,
    )
    .await;
    // A lone node with a configured ID (the original's `setID`), on the same prefixes.
    let kitchen = start_mesh(
        topology::line(1),
        custom(builder(addr))
            .node_id("kitchen-1")
            .build()
            .expect("valid config"),
        addr,
        52,
    )
    .await;
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "{}",
        render_tree(&mesh.rows())
    );
    assert!(kitchen.wait_for(FORM, |m| m.all_online()).await);
    assert_eq!(kitchen.statuses()[0].id, "kitchen-1");

    let mut ids = ids(&mesh);
    ids.push("kitchen-1".into());
    let info = home
        .wait_for(WAIT, |o| {
            ids.iter().all(|id| {
                text(o.retained(&format!("{HOME_OUT}{id}/info/available"))) == "online"
                    && o.retained(&format!("{HOME_OUT}{id}/info/connectedTo"))
                        .is_some()
            })
        })
        .await;
    assert!(info, "info topics missing under {HOME_OUT}");
    let counters = home
        .wait_for(WAIT, |o| {
            ids.iter().all(|id| {
                let topic = format!("{HOME_OUT}{id}/counter");
                !o.messages(|t| t == topic).is_empty()
            })
        })
        .await;
    assert!(counters, "counters missing under {HOME_OUT}");

    // Messages under the default in-prefix are not for this mesh; under the custom one
    // they are. Both go out in order from one client, so once the second has arrived
    // everywhere the first would have too.
    let before: Vec<u64> = mesh.statuses().iter().map(|s| s.received).collect();
    home.publish("esp8266-in/broadcast/led", b"on", false)
        .await
        .expect("publish");
    home.publish(&format!("{HOME_IN}broadcast/led"), b"on", false)
        .await
        .expect("publish");
    assert!(
        mesh.wait_for(WAIT, |m| m
            .statuses()
            .iter()
            .zip(&before)
            .all(|(s, b)| s.received > *b))
            .await,
        "broadcast under {HOME_IN} did not reach every node"
    );
    for (s, b) in mesh.statuses().iter().zip(&before) {
        assert_eq!(s.received - b, 1, "{} received {}", s.id, s.received - b);
        assert!(s.led, "{} LED off", s.id);
    }
    let deepest = mesh
        .rows()
        .into_iter()
        .max_by_key(|r| r.depth)
        .expect("a node");
    let led = format!("{HOME_OUT}{}/led", deepest.id);
    home.publish(&format!("{HOME_IN}{}/led", deepest.id), b"off", false)
        .await
        .expect("publish");
    assert!(
        home.wait_for(WAIT, |o| o
            .messages(|t| t == led)
            .iter()
            .any(|m| m.payload == b"off"))
            .await,
        "{} did not answer on {led}",
        deepest.id
    );

    // Nothing at all under the default out-prefix.
    let stray = default.messages(|_| true);
    assert!(
        stray.is_empty(),
        "messages under {OUT}: {:?}",
        stray.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
}

/// `Mesh::node_id` is documented as "the chip ID, unless the configuration overrides
/// it".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_node_id_honours_configured_id() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let addr = broker.addr();
    let config = builder(addr)
        .node_id("kitchen-1")
        .build()
        .expect("valid config");
    let mesh = start_mesh(topology::line(1), config, addr, 61).await;
    assert!(mesh.wait_for(FORM, |m| m.all_online()).await);
    assert_eq!(mesh.statuses()[0].id, "kitchen-1");
    assert_eq!(mesh.node_id(0), "kitchen-1");
}
