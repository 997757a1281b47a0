//! The CLI over TLS to a real Mosquitto (issue 4 §1, §4): a TLS listener serving a
//! certificate signed by a CA this test makes, a password file, anonymous clients
//! refused. `sim --broker` runs a mesh to completion pinning the broker's fingerprint;
//! `topology` reads a live mesh with `--ca-file`, with `--tls` and the system roots
//! (pointed at the test CA by `SSL_CERT_FILE`), and names the flag to check when the
//! pin, the password or the port is wrong; `ota` updates a node over TLS.
//!
//! Every wait is on a condition or a child process, with a deadline; nothing sleeps to
//! synchronise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mqttmesh_core::config::{BrokerTls, Config};
use mqttmesh_host::flash::Layout;
use mqttmesh_host::image::make_test_image;
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mqtt_tls::colon_hex;
use mqttmesh_host::ota::OtaSpec;
use mqttmesh_host::radio::Timing;
use mqttmesh_host::topology;
use mqttmesh_testkit::{self as testkit, Pki};

mod common;
use common::{Run, TempDir};

const USER: &str = "mesh";
const PASSWORD: &str = "s3cret-pass";
const FORM: Duration = Duration::from_secs(30);
/// Longest one CLI run may take here (each takes seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A CA (written to `ca.pem` in `dir`) and a broker certificate it signed.
fn pki(dir: &TempDir) -> Pki {
    let pki = Pki::new("mqttmesh CLI test CA");
    std::fs::write(dir.path("ca.pem"), &pki.ca_pem).expect("write ca.pem");
    pki
}

/// The broker certificate's SHA-256 as `--fingerprint` takes it (plain hex).
fn sha256_hex(pki: &Pki) -> String {
    pki.sha256().iter().map(|b| format!("{b:02x}")).collect()
}

fn mqttmesh(dir: &TempDir, name: &str, args: &[&str]) -> Run {
    common::mqttmesh(dir, name, args, RUN_TIMEOUT)
}

/// The same from async code, off the runtime's worker threads.
async fn mqttmesh_async(dir: &Arc<TempDir>, name: &str, args: Vec<String>) -> Run {
    let dir = dir.clone();
    let name = name.to_string();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mqttmesh(&dir, &name, &args)
    });
    run.await.expect("mqttmesh run")
}

fn login() -> [&'static str; 4] {
    ["--mqtt-username", USER, "--mqtt-password", PASSWORD]
}

#[test]
fn sim_runs_a_mesh_to_completion_over_tls_pinning_the_broker() {
    let dir = TempDir::new("tls-sim");
    let pki = pki(&dir);
    let broker = pki.broker(USER, PASSWORD);
    let target = format!("127.0.0.1:{}", broker.tls_port().expect("TLS port"));
    let sha1 = colon_hex(&pki.sha1());
    let mut args = vec![
        "sim",
        "--nodes",
        "3",
        "--topology",
        "line",
        "--profile",
        "fast",
        "--publish-interval",
        "0.5",
        "--formation-timeout",
        "60",
        "--broker",
        &target,
        "--fingerprint",
        &sha1,
    ];
    args.extend(login());
    let run = mqttmesh(&dir, "sim", &args);
    let context = format!("{}\n--- mosquitto\n{}", run.context(), broker.log());
    assert!(run.status.success(), "{context}");
    assert!(run.stdout.contains("nodes 3  online 3"), "{context}");

    // A wrong pin fails at once, showing the fingerprint the broker has.
    let wrong = "00".repeat(32);
    let mut args = vec![
        "sim",
        "--nodes",
        "1",
        "--profile",
        "fast",
        "--broker",
        &target,
        "--fingerprint",
        &wrong,
    ];
    args.extend(login());
    let run = mqttmesh(&dir, "sim-wrong-pin", &args);
    assert!(!run.status.success(), "{}", run.context());
    let seen = format!("saw {}", colon_hex(&pki.sha256()));
    assert!(
        run.stderr.contains("fingerprint mismatch"),
        "{}",
        run.context()
    );
    assert!(run.stderr.contains(&seen), "{}", run.context());
}

fn mesh_config(broker: SocketAddr, tls: BrokerTls) -> Config {
    testkit::config_builder(broker)
        .mqtt_tls(tls)
        .mqtt_credentials(USER, PASSWORD)
        .build()
        .expect("test configuration is valid")
}

async fn start_mesh(broker: SocketAddr, pki: &Pki, nodes: usize, ota: Option<OtaSpec>) -> Mesh {
    let config = mesh_config(broker, BrokerTls::Ca);
    let mesh = Mesh::start(MeshSpec {
        timing: Timing::fast(),
        mqtt_trust: pki.trust(),
        seed: 5,
        ota,
        ..MeshSpec::new(topology::line(nodes), config, broker)
    })
    .await
    .expect("nodes start");
    let formed = mesh.wait_for(FORM, |m| m.all_online()).await;
    let errors: Vec<_> = mesh
        .statuses()
        .into_iter()
        .filter_map(|s| s.broker_error)
        .collect();
    assert!(formed, "{}\n{errors:?}", render_tree(&mesh.rows()));
    mesh
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_reads_a_mesh_over_tls_and_names_the_flag_to_fix() {
    let dir = Arc::new(TempDir::new("tls-topology"));
    let pki = pki(&dir);
    let broker = pki.broker(USER, PASSWORD);
    let tls = broker.tls_addr().expect("TLS listener");
    let mesh = start_mesh(tls, &pki, 3, None).await;
    let target = tls.to_string();
    let ca = dir.path("ca.pem").to_string_lossy().into_owned();
    let base = ["topology", "--format", "json", "--broker", &target];
    let with = |extra: &[&str]| {
        let mut args = strings(&base);
        args.extend(strings(extra));
        args
    };

    let run = mqttmesh_async(
        &dir,
        "ca-file",
        with(&[
            "--ca-file",
            &ca,
            "--mqtt-username",
            USER,
            "--mqtt-password",
            PASSWORD,
        ]),
    )
    .await;
    assert!(run.status.success(), "{}", run.context());
    let snapshot: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let listed = snapshot["node_list"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, 3, "{}", run.context());
    for i in 0..3 {
        assert!(run.stdout.contains(&mesh.node_id(i)), "{}", run.context());
    }

    // --tls alone verifies against the system roots; SSL_CERT_FILE points them at our CA.
    let args = with(&[
        "--tls",
        "--mqtt-username",
        USER,
        "--mqtt-password",
        PASSWORD,
    ]);
    let mut command = tokio::process::Command::new(common::BIN);
    command
        .args(&args)
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .kill_on_drop(true);
    let system = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("mqttmesh topology --tls finishes in time")
        .expect("mqttmesh runs");
    assert!(
        system.status.success(),
        "{}",
        String::from_utf8_lossy(&system.stderr)
    );

    let cases: [(&str, Vec<String>, &[&str]); 4] = [
        (
            "wrong-pin",
            with(&[
                "--fingerprint",
                &"ab".repeat(20),
                "--mqtt-username",
                USER,
                "--mqtt-password",
                PASSWORD,
            ]),
            &[
                "fingerprint mismatch",
                &colon_hex(&pki.sha1()),
                "--fingerprint",
            ],
        ),
        (
            "wrong-password",
            with(&[
                "--ca-file",
                &ca,
                "--mqtt-username",
                USER,
                "--mqtt-password",
                "wrong",
            ]),
            &[
                "refused the login",
                "check --mqtt-username and --mqtt-password",
            ],
        ),
        (
            "plain-to-tls",
            with(&["--mqtt-username", USER, "--mqtt-password", PASSWORD]),
            &["without answering CONNECT", "add --tls"],
        ),
        (
            "tls-to-plain",
            {
                let mut a = strings(&[
                    "topology",
                    "--broker",
                    &broker.addr().to_string(),
                    "--ca-file",
                    &ca,
                ]);
                a.extend(strings(&login()));
                a
            },
            &["does not speak TLS", "give the broker's TLS port"],
        ),
    ];
    for (name, args, want) in cases {
        let run = mqttmesh_async(&dir, name, args).await;
        assert!(!run.status.success(), "{name}: {}", run.context());
        for w in want {
            assert!(
                run.stderr.contains(w),
                "{name}: want {w:?}\n{}",
                run.context()
            );
        }
    }
    mesh.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ota_updates_a_node_over_tls() {
    let dir = Arc::new(TempDir::new("tls-ota"));
    let pki = pki(&dir);
    let broker = pki.broker(USER, PASSWORD);
    let tls = broker.tls_addr().expect("TLS listener");
    let ota = OtaSpec {
        dir: dir.path("flash"),
        layout: Layout::with_slot_size(256 * 1024).expect("layout"),
        trial_timeout: Duration::from_secs(20),
        flash_timing: None,
    };
    let mesh = start_mesh(tls, &pki, 2, Some(ota)).await;
    let image = dir.path("fw.bin");
    std::fs::write(&image, make_test_image("0.2", "mqttmesh", 16 * 1024, 3)).expect("image");
    let pin = sha256_hex(&pki);
    let mut args = strings(&[
        "ota",
        "--bin",
        &image.to_string_lossy(),
        "--id",
        "1337",
        "--broker",
        &tls.to_string(),
        "--fingerprint",
        &pin,
        "--boot-timeout",
        "60",
    ]);
    args.extend(strings(&login()));
    let run = mqttmesh_async(&dir, "ota", args).await;
    assert!(
        run.status.success(),
        "{}\n{}",
        run.context(),
        render_tree(&mesh.rows())
    );
    assert!(
        run.stdout.contains("all 2 nodes updated to v0.2"),
        "{}",
        run.context()
    );
    mesh.shutdown();
}
