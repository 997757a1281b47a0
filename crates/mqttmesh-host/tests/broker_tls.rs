//! TLS and login to a real Mosquitto (issue 4 §1, §4): a TLS listener serving a
//! certificate signed by a CA this test makes, a password file made by
//! `mosquitto_passwd`, anonymous clients refused. Emulated meshes connect in each
//! verification mode (CA, SHA-1 pin, SHA-256 pin) and their messages arrive; a wrong
//! pin, an unknown CA, a wrong password, plain MQTT to the TLS port and TLS to the
//! plain port each fail with their own error text, both for an outside client and for
//! a node's broker session.
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mqttmesh_core::config::{BrokerTls, Config, Timing as NodeTiming};
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::mqtt_tls::{colon_hex, ClientTls, Trust};
use mqttmesh_host::observer::Observer;
use mqttmesh_host::radio::Timing;
use mqttmesh_host::topology;
use mqttmesh_testkit::{self as testkit, Pki};
use rustls::RootCertStore;

const FORM: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);
const OUT: &str = "esp8266-out/";
const USER: &str = "mesh";
const PASSWORD: &str = "s3cret-pass";

fn start_broker(pki: &Pki) -> Mosquitto {
    pki.broker(USER, PASSWORD)
}

fn config(broker: SocketAddr, tls: BrokerTls, password: &str) -> Config {
    testkit::config_builder(broker)
        .mqtt_tls(tls)
        .mqtt_credentials(USER, password)
        .build()
        .expect("test configuration is valid")
}

async fn start_mesh(
    config: Config,
    broker: SocketAddr,
    trust: Trust,
    nodes: usize,
    seed: u64,
) -> Mesh {
    Mesh::start(MeshSpec {
        timing: Timing::fast(),
        mqtt_trust: trust,
        seed,
        publish_interval: Duration::from_millis(300),
        ..MeshSpec::new(topology::line(nodes), config, broker)
    })
    .await
    .expect("nodes start")
}

fn client(mode: BrokerTls, trust: &Trust, broker: SocketAddr) -> Option<ClientTls> {
    ClientTls::new(mode, trust, "127.0.0.1", broker.port()).expect("TLS client")
}

async fn observe(
    broker: SocketAddr,
    tls: Option<&ClientTls>,
    password: &str,
    id: &str,
) -> Result<Observer, String> {
    Observer::start_secure(broker, OUT, id, Some((USER, password)), tls)
        .await
        .map_err(|e| e.to_string())
}

/// A mesh of `nodes` in `mode` forms over TLS and every node's counter arrives.
async fn mesh_works(broker: SocketAddr, mode: BrokerTls, trust: Trust, nodes: usize, seed: u64) {
    let tls = client(mode, &trust, broker);
    let obs = observe(
        broker,
        tls.as_ref(),
        PASSWORD,
        &format!("tls-observer-{seed}"),
    )
    .await
    .unwrap_or_else(|e| panic!("{mode}: observer: {e}"));
    let mesh = start_mesh(config(broker, mode, PASSWORD), broker, trust, nodes, seed).await;
    let formed = mesh.wait_for(FORM, |m| m.all_online()).await;
    let errors: Vec<_> = mesh
        .statuses()
        .into_iter()
        .filter_map(|s| s.broker_error)
        .collect();
    assert!(
        formed,
        "{mode}: not all online:\n{}\n{errors:?}",
        render_tree(&mesh.rows())
    );
    let ids: Vec<String> = (0..nodes).map(|i| mesh.node_id(i)).collect();
    let arrived = obs
        .wait_for(WAIT, |o| {
            ids.iter()
                .all(|id| o.messages(|t| t == format!("{OUT}{id}/counter")).len() >= 2)
        })
        .await;
    assert!(arrived, "{mode}: counters did not arrive from every node");
    mesh.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meshes_connect_over_tls_with_a_login_in_every_verification_mode() {
    let pki = Pki::new("mqttmesh test CA");
    let broker = start_broker(&pki);
    let tls = broker.tls_addr().expect("TLS listener");
    let none = Trust::Roots(Arc::new(RootCertStore::empty()));
    tokio::join!(
        mesh_works(tls, BrokerTls::Ca, pki.trust(), 3, 11),
        mesh_works(tls, BrokerTls::PinSha1(pki.sha1()), none.clone(), 2, 12),
        mesh_works(tls, BrokerTls::PinSha256(pki.sha256()), none, 2, 13),
    );
}

/// A one-node mesh's first broker failure, as the node reports it.
async fn node_error(config: Config, broker: SocketAddr, trust: Trust, seed: u64) -> String {
    let mesh = start_mesh(config, broker, trust, 1, seed).await;
    let failed = mesh
        .wait_for(FORM, |m| m.statuses()[0].broker_error.is_some())
        .await;
    assert!(
        failed,
        "the node reported no broker error:\n{}",
        render_tree(&mesh.rows())
    );
    assert!(!mesh.statuses()[0].online);
    let error = mesh.statuses()[0].broker_error.clone().unwrap_or_default();
    mesh.shutdown();
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_fails_with_its_own_error() {
    let pki = Pki::new("mqttmesh test CA");
    let broker = start_broker(&pki);
    let tls = broker.tls_addr().expect("TLS listener");
    let plain = broker.addr();
    let trust = pki.trust();
    let wrong_pin = BrokerTls::PinSha1([0xab; 20]);

    // Wrong pin: the message names the pin and what the broker showed.
    let expected = format!(
        "broker certificate fingerprint mismatch: expected SHA-1 {}, saw {}; run \
         `mqttmesh fingerprint --host 127.0.0.1 --port {}` to read it",
        colon_hex(&[0xab; 20]),
        colon_hex(&pki.sha1()),
        tls.port()
    );
    let e = observe(
        tls,
        client(wrong_pin, &trust, tls).as_ref(),
        PASSWORD,
        "tls-wrong-pin",
    )
    .await
    .unwrap_err();
    assert_eq!(e, expected);
    let e = node_error(config(tls, wrong_pin, PASSWORD), tls, trust.clone(), 21).await;
    assert_eq!(e, expected);
    let wrong_sha256 = BrokerTls::PinSha256([0xcd; 32]);
    let e = node_error(config(tls, wrong_sha256, PASSWORD), tls, trust.clone(), 22).await;
    assert!(
        e.contains(&format!("saw {}", colon_hex(&pki.sha256()))),
        "{e}"
    );

    // A certificate from a CA the client does not trust.
    let other = Pki::new("another CA").trust();
    let e = observe(
        tls,
        client(BrokerTls::Ca, &other, tls).as_ref(),
        PASSWORD,
        "tls-unknown-ca",
    )
    .await
    .unwrap_err();
    assert!(e.contains("unknown issuer"), "{e}");

    // A certificate that does not name the host the client was configured with.
    let other_name =
        ClientTls::new(BrokerTls::Ca, &trust, "broker.example", tls.port()).expect("TLS client");
    let e = observe(tls, other_name.as_ref(), PASSWORD, "tls-wrong-name")
        .await
        .unwrap_err();
    assert!(e.contains("does not name the broker host"), "{e}");

    // Wrong password, over TLS and by a node.
    let ca = client(BrokerTls::Ca, &trust, tls);
    let e = observe(tls, ca.as_ref(), "wrong", "tls-bad-login")
        .await
        .unwrap_err();
    assert!(
        e.contains("refused the login") && e.contains("user name or password"),
        "{e}"
    );
    let e = node_error(config(tls, BrokerTls::Ca, "wrong"), tls, trust.clone(), 23).await;
    assert!(e.contains("refused the login"), "{e}");

    // Plain MQTT to the TLS port.
    let e = observe(tls, None, PASSWORD, "tls-plain-to-tls")
        .await
        .unwrap_err();
    assert!(
        e.contains("without answering CONNECT") && e.contains("turn TLS on"),
        "{e}"
    );
    let plain_config = Config::builder()
        .network("mqttmesh-router", "router-password")
        .broker("127.0.0.1", tls.port())
        .mqtt_credentials(USER, PASSWORD)
        .timing(NodeTiming::fast())
        .build()
        .expect("valid");
    let e = node_error(plain_config, tls, trust.clone(), 24).await;
    assert!(e.contains("turn TLS on"), "{e}");

    // TLS to the plain port.
    let e = observe(
        plain,
        client(BrokerTls::Ca, &trust, plain).as_ref(),
        PASSWORD,
        "tls-to-plain",
    )
    .await
    .unwrap_err();
    assert!(e.contains("does not speak TLS"), "{e}");
}
