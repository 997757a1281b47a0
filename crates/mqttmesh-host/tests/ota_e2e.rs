//! OTA end to end: emulated nodes with flash, a real Mosquitto, the original exchange
//! and ours, driven by minimal senders written here from the specifications
//! (compat.md "OTA over MQTT", docs/PROTOCOL.md "OTA v2"); the `mqttmesh ota` command
//! has its own tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use md5::{Digest, Md5};
use mqttmesh_core::config::{Config, Timing as NodeTiming};
use mqttmesh_core::ota::v2::{Command, Manifest, Phase, Report};
use mqttmesh_host::flash::{FlashTiming, Layout};
use mqttmesh_host::image::make_test_image;
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::ota::OtaSpec;
use mqttmesh_host::radio::{Model, Timing};
use mqttmesh_host::topology;

const OUT: &str = "esp8266-out/";
const IN: &str = "esp8266-in/";
const WAIT: Duration = Duration::from_secs(30);
const FW: u32 = 0x1337;
const OTHER_FW: u32 = 0x2222;
const SECRET: [u8; 32] = [7; 32];

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("mqttmesh-ota-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(broker: SocketAddr, signed: bool) -> Config {
    let mut b = Config::builder()
        .firmware(FW, "0.1")
        .network("mqttmesh-router", "router-password")
        .broker(&broker.ip().to_string(), broker.port())
        .timing(NodeTiming::fast());
    if signed {
        b = b.ota_public_key(SigningKey::from_bytes(&SECRET).verifying_key().to_bytes());
    }
    b.build().expect("valid config")
}

/// A line of four nodes (depth 4); node 2 runs another firmware.
async fn mesh(broker: SocketAddr, dir: &TempDir, signed: bool) -> (Mesh, Observer) {
    mesh_with_trial(broker, dir, signed, Duration::from_secs(20)).await
}

async fn mesh_with_trial(
    broker: SocketAddr,
    dir: &TempDir,
    signed: bool,
    trial_timeout: Duration,
) -> (Mesh, Observer) {
    mesh_with(broker, dir, signed, trial_timeout, None).await
}

async fn mesh_with(
    broker: SocketAddr,
    dir: &TempDir,
    signed: bool,
    trial_timeout: Duration,
    flash_timing: Option<FlashTiming>,
) -> (Mesh, Observer) {
    let obs = Observer::start(
        broker,
        OUT,
        &format!("ota-observer-{}", dir.0.display().to_string().len()),
    )
    .await
    .expect("observer");
    let mesh = Mesh::start(MeshSpec {
        placement: topology::line(4),
        model: Model::default(),
        timing: Timing::fast(),
        config: config(broker, signed),
        broker,
        mqtt_trust: Default::default(),
        mesh_tls: None,
        seed: 5,
        publish_interval: Duration::ZERO,
        ota: Some(OtaSpec {
            dir: dir.0.clone(),
            layout: Layout::with_slot_size(256 * 1024).expect("layout"),
            trial_timeout,
            flash_timing,
        }),
        firmware_ids: vec![FW, FW, OTHER_FW, FW],
    })
    .await
    .expect("mesh starts");
    assert!(
        mesh.wait_for(WAIT, |m| m.all_online()).await,
        "{}",
        render_tree(&mesh.rows())
    );
    (mesh, obs)
}

fn answered(obs: &Observer, id: &str, sub: &str) -> Vec<Vec<u8>> {
    let topic = format!("{OUT}{id}/{sub}");
    obs.messages(|t| t == topic)
        .into_iter()
        .map(|m| m.payload)
        .collect()
}

/// Every node's latest `fw` answer says `v<version>` (after asking again).
async fn versions_become(obs: &Observer, ids: &[String], version: &str) -> bool {
    let want = format!(" v{version} ");
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        obs.publish(&format!("{IN}fw/test"), b"", false)
            .await
            .expect("publish");
        let ok = obs
            .wait_for(Duration::from_millis(500), |o| {
                ids.iter().all(|id| {
                    answered(o, id, "fw")
                        .last()
                        .is_some_and(|p| String::from_utf8_lossy(p).contains(&want))
                })
            })
            .await;
        if ok {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_exchange_updates_matching_nodes_several_hops_deep() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = TempDir::new("compat");
    let (mesh, obs) = mesh(broker.addr(), &dir, false).await;
    let ids: Vec<String> = (0..4).map(|i| mesh.node_id(i)).collect();
    let targets = [ids[0].clone(), ids[1].clone(), ids[3].clone()];
    let image = make_test_image("0.2", "mqttmesh", 40 * 1024, 9);
    // Chunks name the target as `0x` + lower-case hex, as the original script may.
    compat_upload(&obs, &targets, &image, &format!("0x{FW:x}")).await;
    obs.publish(&format!("{IN}ota/{FW:X}/flash"), b"", false)
        .await
        .expect("publish");
    assert!(
        versions_become(&obs, &targets, "0.2").await,
        "nodes did not come back running v0.2"
    );
    // The relay of another firmware took no part and runs what it ran.
    assert!(answered(&obs, &ids[2], "ota/erase").is_empty());
    assert!(versions_become(&obs, &ids[2..3], "0.1").await);
    assert!(mesh.wait_for(WAIT, |m| m.all_online()).await);
}

/// Publishes a v2 command to `target`.
async fn send(obs: &Observer, target: &str, command: &Command, payload: &[u8]) {
    let topic = command.topic(IN, target).expect("topic");
    obs.publish(&topic, payload, false).await.expect("publish");
}

fn reports(obs: &Observer, id: &str) -> Vec<Report> {
    answered(obs, id, "ota2/state")
        .iter()
        .filter_map(|p| Report::decode(p).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_signed_update_by_node_id_and_a_tampered_image_is_refused() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = TempDir::new("v2");
    let (mesh, obs) = mesh(broker.addr(), &dir, true).await;
    let deep = mesh.node_id(3);
    let key = SigningKey::from_bytes(&SECRET);
    let sign = |m: &mut Manifest| {
        m.sign_with(|bytes| Ok::<_, ()>(key.sign(bytes).to_bytes()))
            .expect("signs");
    };

    // A tampered image: the manifest promises one image, the chunks carry another.
    let good = make_test_image("0.3", "mqttmesh", 30 * 1024, 3);
    let mut manifest = Manifest::new(FW, "0.3", &good, 1024).expect("manifest");
    sign(&mut manifest);
    let id = manifest.id();
    send(&obs, &deep, &Command::Manifest, &manifest.to_bytes()).await;
    let mut bad = good.clone();
    bad[5000] ^= 0x55;
    for (index, chunk) in manifest.chunks(&bad) {
        send(&obs, &deep, &Command::Chunk { id, index }, chunk).await;
    }
    assert!(
        obs.wait_for(WAIT, |o| reports(o, &deep)
            .iter()
            .any(|r| r.result.is_some() && r.phase == Phase::Idle))
            .await,
        "the tampered image was not refused: {:?}",
        reports(&obs, &deep)
    );
    send(&obs, &deep, &Command::Flash { id }, b"").await;
    assert!(
        versions_become(&obs, std::slice::from_ref(&deep), "0.1").await,
        "booted into a tampered image"
    );

    // The real one, by node ID, goes through; nobody else takes part.
    let mut manifest = Manifest::new(FW, "0.3", &good, 1024).expect("manifest");
    sign(&mut manifest);
    let id = manifest.id();
    send(&obs, &deep, &Command::Manifest, &manifest.to_bytes()).await;
    for (index, chunk) in manifest.chunks(&good) {
        send(&obs, &deep, &Command::Chunk { id, index }, chunk).await;
    }
    assert!(
        obs.wait_for(WAIT, |o| reports(o, &deep)
            .iter()
            .any(|r| r.phase == Phase::Verified))
            .await,
        "not verified: {:?}",
        reports(&obs, &deep)
    );
    send(&obs, &deep, &Command::Flash { id }, b"").await;
    assert!(
        versions_become(&obs, std::slice::from_ref(&deep), "0.3").await,
        "did not come back running v0.3"
    );
    let others: Vec<String> = (0..3).map(|i| mesh.node_id(i)).collect();
    assert!(versions_become(&obs, &others, "0.1").await);
    for other in &others {
        assert!(
            answered(&obs, other, "ota2/state").is_empty(),
            "{other} took part"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_unsigned_manifest_is_refused_when_a_key_is_configured() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = TempDir::new("unsigned");
    let (mesh, obs) = mesh(broker.addr(), &dir, true).await;
    let image = make_test_image("0.4", "mqttmesh", 8 * 1024, 4);
    let manifest = Manifest::new(FW, "0.4", &image, 1024).expect("manifest");
    send(
        &obs,
        &format!("{FW:X}"),
        &Command::Manifest,
        &manifest.to_bytes(),
    )
    .await;
    let matching = [mesh.node_id(0), mesh.node_id(1), mesh.node_id(3)];
    assert!(
        obs.wait_for(WAIT, |o| matching
            .iter()
            .all(|id| reports(o, id).iter().any(|r| r.result.is_some())))
            .await,
        "unsigned manifest not refused everywhere"
    );
    assert!(answered(&obs, &mesh.node_id(2), "ota2/state").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_never_reaches_the_broker_is_rolled_back() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = TempDir::new("rollback");
    let (mesh, obs) = mesh_with_trial(broker.addr(), &dir, false, Duration::from_secs(3)).await;
    let root = mesh.node_id(0);
    let image = make_test_image("0.5", "mqttmesh", 8 * 1024, 5);
    let manifest = Manifest::new(FW, "0.5", &image, 1024).expect("manifest");
    let id = manifest.id();
    send(&obs, &root, &Command::Manifest, &manifest.to_bytes()).await;
    for (index, chunk) in manifest.chunks(&image) {
        send(&obs, &root, &Command::Chunk { id, index }, chunk).await;
    }
    assert!(
        obs.wait_for(WAIT, |o| reports(o, &root)
            .iter()
            .any(|r| r.phase == Phase::Verified))
            .await,
        "not verified"
    );
    // Install, then make the broker unreachable: the trial image cannot confirm.
    send(&obs, &root, &Command::Flash { id }, b"").await;
    assert!(
        mesh.wait_for(WAIT, |m| m.statuses()[0].firmware_version == "0.5")
            .await,
        "the root did not boot the new image"
    );
    mesh.radio().set_router_up(false);
    // One restart installed the image; the next is the trial giving up.
    assert!(
        mesh.wait_for(WAIT, |m| m.statuses()[0].restarts >= 2).await,
        "the trial did not time out"
    );
    assert_eq!(
        mesh.statuses()[0].firmware_version,
        "0.1",
        "rolled back at boot"
    );
    mesh.radio().set_router_up(true);
    assert!(
        mesh.wait_for(WAIT, |m| m.all_online()).await,
        "{}",
        render_tree(&mesh.rows())
    );
    assert!(
        versions_become(&obs, std::slice::from_ref(&root), "0.1").await,
        "the unconfirmed image was not rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_resumes_after_a_lost_link_and_a_node_restart() {
    use mqttmesh_core::ota::v2::Missing;
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = TempDir::new("resume");
    let (mut mesh, obs) = mesh(broker.addr(), &dir, false).await;
    let deep = mesh.node_id(3);
    let image = make_test_image("0.6", "mqttmesh", 40 * 1024, 6);
    let manifest = Manifest::new(FW, "0.6", &image, 1024).expect("manifest");
    let id = manifest.id();
    let total = manifest.chunk_count();
    send(&obs, &deep, &Command::Manifest, &manifest.to_bytes()).await;
    let chunks: Vec<(u32, &[u8])> = manifest.chunks(&image).collect();
    let half = chunks.len() / 2;
    for (index, chunk) in &chunks[..half] {
        send(&obs, &deep, &Command::Chunk { id, index: *index }, chunk).await;
    }
    send(&obs, &deep, &Command::Status { id: Some(id) }, b"").await;
    assert!(
        obs.wait_for(WAIT, |o| reports(o, &deep)
            .iter()
            .any(|r| r.received as usize == half))
            .await,
        "first half not received: {:?}",
        reports(&obs, &deep)
    );

    // The relay above it dies: the rest of the chunks go nowhere.
    mesh.kill(2);
    assert!(mesh.wait_for(WAIT, |m| !m.statuses()[3].online).await);
    for (index, chunk) in &chunks[half..] {
        send(&obs, &deep, &Command::Chunk { id, index: *index }, chunk).await;
    }
    mesh.revive(2).await.expect("revive");
    assert!(
        mesh.wait_for(WAIT, |m| m.all_online()).await,
        "{}",
        render_tree(&mesh.rows())
    );
    // And the node itself restarts: its progress is in flash.
    obs.publish(&format!("{IN}{deep}/Restart"), b"", false)
        .await
        .expect("publish");
    assert!(mesh.wait_for(WAIT, |m| m.statuses()[3].restarts >= 1).await);
    assert!(mesh.wait_for(WAIT, |m| m.all_online()).await);

    // Ask what is missing and send only that, until verified.
    let mut resent = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never verified: {:?}",
            reports(&obs, &deep)
        );
        let seen = answered(&obs, &deep, "ota2/missing").len();
        send(&obs, &deep, &Command::Status { id: Some(id) }, b"").await;
        let got = obs
            .wait_for(Duration::from_secs(2), |o| {
                answered(o, &deep, "ota2/missing").len() > seen
                    || reports(o, &deep).iter().any(|r| r.phase == Phase::Verified)
            })
            .await;
        if reports(&obs, &deep)
            .iter()
            .any(|r| r.phase == Phase::Verified)
        {
            break;
        }
        if !got {
            continue;
        }
        let windows = answered(&obs, &deep, "ota2/missing");
        let last = windows.last().expect("a window");
        let missing = Missing::decode(last).expect("a missing window");
        for index in missing.iter() {
            let chunk = manifest.chunk(&image, index).expect("index in range");
            send(&obs, &deep, &Command::Chunk { id, index }, chunk).await;
            resent += 1;
        }
    }
    assert!(
        resent > 0 && resent <= total as usize - half,
        "resent {resent} of {total}"
    );
    send(&obs, &deep, &Command::Flash { id }, b"").await;
    assert!(versions_become(&obs, std::slice::from_ref(&deep), "0.6").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_flash_timing_a_node_answers_after_the_erase_work() {
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = TempDir::new("timing");
    let timing = FlashTiming {
        erase_per_sector: Duration::from_millis(100),
        write_per_kib: Duration::ZERO,
    };
    let (mesh, obs) = mesh_with(
        broker.addr(),
        &dir,
        false,
        Duration::from_secs(20),
        Some(timing),
    )
    .await;
    let root = mesh.node_id(0);
    // 40 KiB: ten 4 KiB sectors to erase, so at least a second of emulated work.
    let image = make_test_image("0.7", "mqttmesh", 40 * 1024, 7);
    let sent = std::time::Instant::now();
    compat_start(&obs, &root, &image).await;
    assert!(
        obs.wait_for(WAIT, |o| !answered(o, &root, "ota/erase").is_empty())
            .await,
        "no erase answer"
    );
    // A lower bound, not a performance claim: the answer waits for the emulated erase.
    assert!(
        sent.elapsed() >= Duration::from_millis(1000),
        "answered after {:?}",
        sent.elapsed()
    );
}

/// Publishes the compat `start` for `image` to `target` (a node ID or a firmware ID).
async fn compat_start(obs: &Observer, target: &str, image: &[u8]) {
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(image));
    obs.publish(
        &format!("{IN}ota/{target}/start"),
        format!("md5:{md5},len:{}", image.len()).as_bytes(),
        false,
    )
    .await
    .expect("publish");
}

/// The compat exchange for firmware `FW` up to `check`, stop-and-wait as the original
/// script: every `targets` node must answer each step, each chunk with its MD5. Chunks
/// name the target as `chunk_target` (the firmware ID in any spelling the nodes take).
async fn compat_upload(obs: &Observer, targets: &[String], image: &[u8], chunk_target: &str) {
    compat_start(obs, &format!("{FW:X}"), image).await;
    assert!(
        obs.wait_for(WAIT, |o| targets.iter().all(|id| !answered(
            o,
            id,
            "ota/erase"
        )
        .is_empty()))
            .await,
        "not every matching node answered the erase"
    );
    for (n, chunk) in image.chunks(768).enumerate() {
        let offset = n * 768;
        let b64 = base64::engine::general_purpose::STANDARD.encode(chunk);
        obs.publish(
            &format!("{IN}ota/{chunk_target}/{offset}"),
            b64.as_bytes(),
            false,
        )
        .await
        .expect("publish");
        let want: String = Md5::digest(chunk)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let sub = format!("ota/md5/{offset:x}");
        assert!(
            obs.wait_for(WAIT, |o| targets
                .iter()
                .all(|id| answered(o, id, &sub).iter().any(|p| p == want.as_bytes())))
                .await,
            "no MD5 for offset {offset}"
        );
    }
    obs.publish(&format!("{IN}ota/{FW:X}/check"), b"", false)
        .await
        .expect("publish");
    assert!(
        obs.wait_for(WAIT, |o| targets.iter().all(|id| answered(
            o,
            id,
            "ota/check"
        )
        .iter()
        .any(|p| p == b"MD5 Passed")))
            .await,
        "check did not pass everywhere"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_by_firmware_id_skips_the_branch_of_another_firmware() {
    // router ── 0 (FW) ─┬─ 1 (FW) ── 3 (FW)
    //                   └─ 2 (other) ── 4 (other)
    let broker = Mosquitto::start().expect("mosquitto starts");
    let dir = TempDir::new("routed");
    let obs = Observer::start(broker.addr(), OUT, "ota-observer-routed")
        .await
        .expect("observer");
    let mesh = Mesh::start(MeshSpec {
        placement: mqttmesh_host::radio::Placement::Graph {
            nodes: 5,
            router: vec![(0, -50)],
            edges: vec![(0, 1, -55), (0, 2, -55), (1, 3, -55), (2, 4, -55)],
        },
        model: Model::default(),
        timing: Timing::fast(),
        config: config(broker.addr(), false),
        broker: broker.addr(),
        mqtt_trust: Default::default(),
        mesh_tls: None,
        seed: 11,
        publish_interval: Duration::ZERO,
        ota: Some(OtaSpec {
            dir: dir.0.clone(),
            layout: Layout::with_slot_size(256 * 1024).expect("layout"),
            trial_timeout: Duration::from_secs(20),
            flash_timing: None,
        }),
        firmware_ids: vec![FW, FW, OTHER_FW, FW, OTHER_FW],
    })
    .await
    .expect("mesh starts");
    assert!(
        mesh.wait_for(WAIT, |m| m.all_online()).await,
        "{}",
        render_tree(&mesh.rows())
    );
    // The other branch has announced itself (node 2 on behalf of 4 as well).
    assert!(
        mesh.wait_for(WAIT, |m| m.statuses()[2].counters.subtree_sent >= 1
            && m.statuses()[4].counters.subtree_sent >= 1)
            .await,
        "the other firmware's branch never announced itself"
    );
    let ids: Vec<String> = (0..5).map(|i| mesh.node_id(i)).collect();
    let targets = [ids[0].clone(), ids[1].clone(), ids[3].clone()];
    let image = make_test_image("0.2", "mqttmesh", 24 * 1024, 3);
    // start, the chunks and check (counted before the flash restarts the root).
    let messages = 2 + image.len().div_ceil(768) as u64;
    let before = mesh.statuses();
    compat_upload(&obs, &targets, &image, &format!("{FW:X}")).await;
    let after = mesh.statuses();
    obs.publish(&format!("{IN}ota/{FW:X}/flash"), b"", false)
        .await
        .expect("publish");
    assert!(
        versions_become(&obs, &targets, "0.2").await,
        "nodes did not come back running v0.2"
    );
    // The root left node 2's branch out of every OTA message; node 2 relayed none.
    let filtered = after[0].counters.ota_filtered - before[0].counters.ota_filtered;
    assert!(
        filtered >= messages,
        "{filtered} of {messages} filtered\n{}\n{:#?}",
        render_tree(&mesh.rows()),
        after.iter().map(|s| s.counters).collect::<Vec<_>>()
    );
    assert_eq!(
        after[2].counters.relayed_down,
        before[2].counters.relayed_down
    );
    for id in &ids[2..3].iter().chain(&ids[4..5]).collect::<Vec<_>>() {
        assert!(answered(&obs, id, "ota/erase").is_empty());
    }
    assert!(versions_become(&obs, &[ids[2].clone(), ids[4].clone()], "0.1").await);
}
