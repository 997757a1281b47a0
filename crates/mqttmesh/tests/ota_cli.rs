//! `mqttmesh keygen`, `sign` and `ota`, run as the real binary: key files and manifests
//! round trip, bad input is refused with a message that says what to do, and — against
//! a real Mosquitto and an emulated line of four nodes started here — both exchanges
//! end with every targeted node running the new image.
//!
//! Every wait is on a condition or a child process, with a deadline; nothing sleeps to
//! synchronise.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use mqttmesh_core::config::{Config, Timing as NodeTiming};
use mqttmesh_core::ota::v2::Manifest;
use mqttmesh_host::flash::Layout;
use mqttmesh_host::image::{make_test_image, sha256};
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::ota::OtaSpec;
use mqttmesh_host::radio::Timing;
use mqttmesh_host::topology;

const BIN: &str = env!("CARGO_BIN_EXE_mqttmesh");
const OUT: &str = "esp8266-out/";
const IN: &str = "esp8266-in/";
const FW: u32 = 0x1337;
const OTHER_FW: u32 = 0x2222;
const FORM: Duration = Duration::from_secs(60);
/// Longest one `mqttmesh ota` run may take here.
const UPLOAD: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(30);

fn mqttmesh(args: &[&str]) -> Output {
    std::process::Command::new(BIN)
        .args(args)
        .output()
        .expect("mqttmesh runs")
}

/// [`mqttmesh`] for async tests: the child runs without blocking a runtime worker (the
/// mesh's node tasks run on the same two).
async fn mqttmesh_async(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("mqttmesh runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn write_image(dir: &Path, name: &str, version: &str, size: usize) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, make_test_image(version, "mqttmesh", size, 11)).expect("write image");
    file
}

fn keygen(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    let out = mqttmesh(&["keygen", "--out", path(&keys)]);
    assert!(out.status.success(), "{:?}", text(&out));
    keys
}

#[test]
fn keygen_writes_the_key_pair_and_refuses_to_overwrite_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = keygen(dir.path());
    let secret = std::fs::read(keys.join("ota_ed25519.key")).expect("secret");
    let public = std::fs::read(keys.join("ota_ed25519.pub")).expect("public");
    assert_eq!((secret.len(), public.len()), (32, 32));
    let derived = ed25519_dalek::SigningKey::from_bytes(&secret.clone().try_into().unwrap());
    assert_eq!(
        derived.verifying_key().to_bytes().as_slice(),
        public.as_slice()
    );
    let hex: String = public.iter().map(|b| format!("{b:02x}")).collect();
    let hex_file = std::fs::read_to_string(keys.join("ota_ed25519.pub.hex")).expect("hex");
    assert_eq!(hex_file.trim(), hex);
    let rust = std::fs::read_to_string(keys.join("ota_key.rs")).expect("rust");
    assert!(
        rust.contains("pub const OTA_PUBLIC_KEY: [u8; 32] = ["),
        "{rust}"
    );
    assert!(rust.contains(&format!("0x{:02x}, 0x{:02x},", public[0], public[1])));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(keys.join("ota_ed25519.key"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");
    }

    let again = mqttmesh(&["keygen", "--out", path(&keys)]);
    let (_, err) = text(&again);
    assert!(!again.status.success());
    assert!(err.contains("exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(keys.join("ota_ed25519.key")).unwrap(), secret);

    let forced = mqttmesh(&["keygen", "--out", path(&keys), "--force"]);
    assert!(forced.status.success(), "{:?}", text(&forced));
    assert_ne!(std::fs::read(keys.join("ota_ed25519.key")).unwrap(), secret);
}

#[test]
fn sign_writes_a_manifest_that_verifies_under_the_public_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = keygen(dir.path());
    let image = write_image(dir.path(), "fw.bin", "0.2", 10_000);
    let manifest = dir.path().join("fw.manifest");
    let out = mqttmesh(&[
        "sign",
        "--key",
        path(&keys.join("ota_ed25519.key")),
        "--bin",
        path(&image),
        "--id",
        "0x1337",
        "--out",
        path(&manifest),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let m = Manifest::decode(&std::fs::read(&manifest).unwrap()).expect("a manifest");
    let public: [u8; 32] = std::fs::read(keys.join("ota_ed25519.pub"))
        .unwrap()
        .try_into()
        .unwrap();
    m.verify(&VerifyingKey::from_bytes(&public).unwrap())
        .expect("signature verifies");
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!((m.firmware_id, m.version.as_str()), (FW, "0.2"));
    assert_eq!((m.size as usize, m.sha256), (bytes.len(), sha256(&bytes)));
    assert_eq!(m.chunk_size, 1024);
    assert!(text(&out).0.contains(&m.id().to_string()));

    // `ota --manifest` checks the manifest against the image before any network use.
    let other = write_image(dir.path(), "other.bin", "0.2", 12_000);
    let out = mqttmesh(&[
        "ota",
        "--bin",
        path(&other),
        "--id",
        "1337",
        "--manifest",
        path(&manifest),
        "--broker",
        "127.0.0.1:1",
    ]);
    let (_, err) = text(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("describes another image") && err.contains("mqttmesh sign"),
        "{err}"
    );
}

#[test]
fn bad_keys_images_and_ids_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = keygen(dir.path());
    let image = write_image(dir.path(), "fw.bin", "0.2", 4096);
    let short = dir.path().join("short.key");
    std::fs::write(&short, [1u8; 31]).unwrap();
    let raw = dir.path().join("raw.bin");
    std::fs::write(&raw, b"#!/bin/sh\necho not firmware\n").unwrap();
    let sign = |key: &Path, bin: &Path, id: &str| {
        mqttmesh(&["sign", "--key", path(key), "--bin", path(bin), "--id", id])
    };
    let cases = [
        (sign(&short, &image, "1337"), "exactly 32"),
        (
            sign(&keys.join("ota_ed25519.pub"), &image, "1337"),
            "is a public key",
        ),
        (
            sign(&keys.join("ota_ed25519.key"), &raw, "1337"),
            "not a valid ESP-IDF application image",
        ),
        (sign(&keys.join("ota_ed25519.key"), &image, "13g7"), "hex"),
        (
            mqttmesh(&["ota", "--bin", path(&raw), "--id", "1337"]),
            "--force-raw",
        ),
        (
            mqttmesh(&[
                "ota",
                "--bin",
                path(&image),
                "--id",
                "1337",
                "--broker",
                "127.0.0.1:1",
            ]),
            "is the broker running",
        ),
        (
            mqttmesh(&[
                "ota",
                "--compat",
                "--bin",
                path(&image),
                "--id",
                "1337",
                "--chunk-size",
                "1024",
            ]),
            "1 to 768",
        ),
        (
            mqttmesh(&[
                "ota",
                "--bin",
                path(&image),
                "--id",
                "1337",
                "--chunk-size",
                "100",
            ]),
            "multiple of 64",
        ),
    ];
    for (n, (out, want)) in cases.iter().enumerate() {
        let (_, err) = text(out);
        assert!(!out.status.success(), "case {n} succeeded");
        assert!(err.contains(want), "case {n}: want {want:?} in {err}");
    }
}

// ---- end to end ----

fn config(broker: SocketAddr, public_key: Option<[u8; 32]>) -> Config {
    let mut b = Config::builder()
        .firmware(FW, "0.1")
        .network("mqttmesh-router", "router-password")
        .broker(&broker.ip().to_string(), broker.port())
        .timing(NodeTiming::fast());
    if let Some(key) = public_key {
        b = b.ota_public_key(key);
    }
    b.build().expect("valid config")
}

/// A line of four nodes (depth 4) with flash, formed; `firmware_ids` by index.
async fn line_of_four(
    broker: SocketAddr,
    flash: &Path,
    public_key: Option<[u8; 32]>,
    firmware_ids: Vec<u32>,
) -> Mesh {
    line_of_four_timed(broker, flash, public_key, firmware_ids, Timing::fast()).await
}

async fn line_of_four_timed(
    broker: SocketAddr,
    flash: &Path,
    public_key: Option<[u8; 32]>,
    firmware_ids: Vec<u32>,
    timing: Timing,
) -> Mesh {
    let mesh = Mesh::start(MeshSpec {
        timing,
        seed: 7,
        ota: Some(OtaSpec {
            dir: flash.to_path_buf(),
            layout: Layout::with_slot_size(256 * 1024).expect("layout"),
            trial_timeout: Duration::from_secs(20),
            flash_timing: None,
        }),
        firmware_ids,
        ..MeshSpec::new(topology::line(4), config(broker, public_key), broker)
    })
    .await
    .expect("mesh starts");
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "{}",
        render_tree(&mesh.rows())
    );
    let depth = mesh.rows().iter().filter_map(|r| r.depth).max();
    assert!(depth >= Some(3), "{}", render_tree(&mesh.rows()));
    mesh
}

/// Index of the deepest node (a leaf of the line).
fn deepest(mesh: &Mesh) -> usize {
    let rows = mesh.rows();
    let depth = |i: usize| {
        let id = mesh.node_id(i);
        rows.iter().find(|r| r.id == id).and_then(|r| r.depth)
    };
    (0..mesh.len()).max_by_key(|&i| depth(i)).expect("nodes")
}

/// Runs `mqttmesh ota …` against `broker` without blocking the mesh's runtime.
fn ota(broker: SocketAddr, args: &[&str]) -> impl std::future::Future<Output = Output> + 'static {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.splice(0..0, ["ota".to_string()]);
    args.extend(["--broker".into(), broker.to_string()]);
    args.extend(["--boot-timeout".into(), "60".into()]);
    async move {
        let child = tokio::process::Command::new(BIN)
            .args(&args)
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(UPLOAD, child)
            .await
            .expect("mqttmesh ota finished in time")
            .expect("mqttmesh ota runs")
    }
}

/// Asks every node for its firmware until each of `ids` answered `v<version>` with
/// `FirmwareID:<fw>`.
async fn versions_are(obs: &Observer, ids: &[String], fw: u32, version: &str) -> bool {
    let want = format!("FirmwareID:{fw:04X} v{version} ");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        obs.publish(&format!("{IN}fw/test"), b"", false)
            .await
            .expect("publish");
        let ok = obs
            .wait_for(Duration::from_millis(500), |o| {
                ids.iter().all(|id| {
                    let topic = format!("{OUT}{id}/fw");
                    o.messages(|t| t == topic)
                        .last()
                        .is_some_and(|m| String::from_utf8_lossy(&m.payload).contains(&want))
                })
            })
            .await;
        if ok {
            return true;
        }
    }
    false
}

/// The summary rows (`node  outcome  time`) of an `ota` run, by node.
fn outcomes(out: &Output) -> Vec<(String, String)> {
    let (stdout, _) = text(out);
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("node "))
        .skip(1)
        .filter_map(|l| {
            let (node, rest) = l.split_once("  ")?;
            let outcome = rest.trim().rsplit_once("  ")?.0.trim();
            Some((node.to_string(), outcome.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_upload_updates_the_matching_nodes_of_a_four_hop_line() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let flash = tempfile::tempdir().expect("temp dir");
    let obs = Observer::start(broker.addr(), OUT, "ota-cli-compat")
        .await
        .expect("observer");
    // The third node runs another firmware: it relays for the fourth and takes no part.
    let ids = vec![FW, FW, OTHER_FW, FW];
    let mesh = line_of_four(broker.addr(), flash.path(), None, ids).await;
    let image = write_image(flash.path(), "fw.bin", "0.2", 24 * 1024);

    let out = ota(
        broker.addr(),
        &["--compat", "--bin", path(&image), "--id", "1337"],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let mut want: Vec<(String, String)> = [0, 1, 3]
        .iter()
        .map(|&i| (mesh.node_id(i), "updated v0.2".to_string()))
        .collect();
    want.sort();
    assert_eq!(outcomes(&out), want, "{stdout}");
    let updated: Vec<String> = want.into_iter().map(|(id, _)| id).collect();
    assert!(versions_are(&obs, &updated, FW, "0.2").await);
    assert!(versions_are(&obs, &[mesh.node_id(2)], OTHER_FW, "0.1").await);

    // By node ID: only the deepest node takes the next version.
    let deep = mesh.node_id(deepest(&mesh));
    let next = write_image(flash.path(), "next.bin", "0.3", 10 * 1024);
    let out = ota(
        broker.addr(),
        &[
            "--compat",
            "--bin",
            path(&next),
            "--id",
            "1337",
            "--node",
            &deep,
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(outcomes(&out), vec![(deep.clone(), "updated v0.3".into())]);
    assert!(versions_are(&obs, std::slice::from_ref(&deep), FW, "0.3").await);
    let others: Vec<String> = updated.into_iter().filter(|id| *id != deep).collect();
    assert!(versions_are(&obs, &others, FW, "0.2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_v2_upload_updates_a_four_hop_line_and_then_one_named_node() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = tempfile::tempdir().expect("temp dir");
    let keys = keygen(dir.path());
    let secret = keys.join("ota_ed25519.key");
    let public: [u8; 32] = std::fs::read(keys.join("ota_ed25519.pub"))
        .unwrap()
        .try_into()
        .unwrap();
    let obs = Observer::start(broker.addr(), OUT, "ota-cli-v2")
        .await
        .expect("observer");
    let flash = dir.path().join("flash");
    std::fs::create_dir_all(&flash).expect("flash dir");
    let mesh = line_of_four(broker.addr(), &flash, Some(public), vec![]).await;
    let all: Vec<String> = (0..4).map(|i| mesh.node_id(i)).collect();
    let v2 = write_image(dir.path(), "v2.bin", "0.2", 100 * 1024);

    // Unsigned: every node refuses, nothing changes, the exit code says so.
    let out = ota(broker.addr(), &["--bin", path(&v2), "--id", "1337"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert_eq!(outcomes(&out).len(), 4, "{stdout}");
    for (node, outcome) in outcomes(&out) {
        assert!(
            outcome.starts_with("refused: unsigned"),
            "{node}: {outcome}"
        );
    }

    // Signed: all four update.
    let out = ota(
        broker.addr(),
        &["--bin", path(&v2), "--id", "1337", "--key", path(&secret)],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let want: Vec<(String, String)> = {
        let mut w: Vec<_> = all
            .iter()
            .map(|id| (id.clone(), "updated v0.2".into()))
            .collect();
        w.sort();
        w
    };
    assert_eq!(outcomes(&out), want, "{stdout}");
    assert!(versions_are(&obs, &all, FW, "0.2").await);

    // Signed offline, sent to the deepest node by its ID: only it moves on.
    let v3 = write_image(dir.path(), "v3.bin", "0.3", 60 * 1024);
    let manifest = dir.path().join("v3.manifest");
    let signed = mqttmesh_async(&[
        "sign",
        "--key",
        path(&secret),
        "--bin",
        path(&v3),
        "--id",
        "1337",
        "--out",
        path(&manifest),
    ])
    .await;
    assert!(signed.status.success(), "{:?}", text(&signed));
    let deep = mesh.node_id(deepest(&mesh));
    let out = ota(
        broker.addr(),
        &[
            "--bin",
            path(&v3),
            "--id",
            "1337",
            "--manifest",
            path(&manifest),
            "--node",
            &deep,
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(outcomes(&out), vec![(deep.clone(), "updated v0.3".into())]);
    assert!(versions_are(&obs, std::slice::from_ref(&deep), FW, "0.3").await);
    let others: Vec<String> = all.iter().filter(|id| **id != deep).cloned().collect();
    assert!(versions_are(&obs, &others, FW, "0.2").await);

    // A named node that does not exist ends unreachable, and the exit code says so.
    let out = ota(
        broker.addr(),
        &[
            "--bin",
            path(&v2),
            "--id",
            "1337",
            "--key",
            path(&secret),
            "--node",
            "ABCDEF",
            "--discover",
            "2",
        ],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert_eq!(
        outcomes(&out),
        vec![("ABCDEF".into(), "unreachable (no answer within 2 s)".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_upload_completes_across_a_relay_crash_resending_only_what_was_lost() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let flash = tempfile::tempdir().expect("temp dir");
    let commands = Observer::start(broker.addr(), IN, "ota-cli-commands")
        .await
        .expect("observer");
    let mut mesh = line_of_four(broker.addr(), flash.path(), None, vec![]).await;
    let image = write_image(flash.path(), "fw.bin", "0.2", 120 * 1024);
    let chunks_sent = |o: &Observer| o.messages(|t| t.contains("/c/")).len();
    let upload = tokio::spawn(ota(
        broker.addr(),
        &["--bin", path(&image), "--id", "1337", "--rate", "20"],
    ));

    // The leaf's parent (its only way out) crashes a quarter of the way in and powers up
    // again later: it resumes from its flash, the leaf from what it kept.
    let leaf = mesh.node_id(deepest(&mesh));
    let rows = mesh.rows();
    let parent = rows
        .iter()
        .find(|r| r.id == leaf)
        .and_then(|r| r.parent.clone());
    let relay = (0..4)
        .find(|&i| Some(mesh.node_id(i)) == parent)
        .expect("the leaf's parent is a node");
    assert!(commands.wait_for(WAIT, |o| chunks_sent(o) >= 30).await);
    mesh.kill(relay);
    assert!(commands.wait_for(WAIT, |o| chunks_sent(o) >= 70).await);
    mesh.revive(relay).await.expect("revives");

    let out = upload.await.expect("upload task");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(outcomes(&out).len(), 4, "{stdout}");
    assert!(
        outcomes(&out).iter().all(|(_, o)| o == "updated v0.2"),
        "{stdout}"
    );
    // Some chunks went twice, far from all of them.
    let sent = chunks_sent(&commands);
    assert!(
        (121..200).contains(&sent),
        "{sent} chunks sent for 120\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_upload_drops_a_node_that_dies_and_updates_the_rest() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let flash = tempfile::tempdir().expect("temp dir");
    let obs = Observer::start(broker.addr(), OUT, "ota-cli-compat-drop")
        .await
        .expect("observer");
    // Slow hops (20 ms each way, 160 ms per chunk to the leaf and back): the leaf is
    // killed with most of the 32 chunks still to come, however fast the machine is.
    let slow = Timing {
        hop_latency: Duration::from_millis(20),
        ..Timing::fast()
    };
    let mesh = line_of_four_timed(broker.addr(), flash.path(), None, vec![], slow).await;
    let leaf = deepest(&mesh);
    let leaf_id = mesh.node_id(leaf);
    let image = write_image(flash.path(), "fw.bin", "0.2", 24 * 1024);
    let upload = tokio::spawn(ota(
        broker.addr(),
        &[
            "--compat",
            "--bin",
            path(&image),
            "--id",
            "1337",
            "--timeout",
            "1",
            "--retries",
            "2",
        ],
    ));
    let md5s = format!("{OUT}{leaf_id}/ota/md5/");
    assert!(
        obs.wait_for(WAIT, |o| o.messages(|t| t.starts_with(&md5s)).len() >= 5)
            .await
    );
    mesh.kill(leaf);

    let out = upload.await.expect("upload task");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    let rows = outcomes(&out);
    assert_eq!(rows.len(), 4, "{stdout}");
    for (node, outcome) in rows {
        if node == leaf_id {
            assert!(
                outcome.starts_with("unreachable (no MD5 for the chunk at")
                    && outcome.ends_with("after 2 resends)"),
                "{outcome}"
            );
        } else {
            assert_eq!(outcome, "updated v0.2", "{node}");
        }
    }
}
