//! `mqttmesh topology`, `monitor --json` and `forget` against a real Mosquitto started
//! on a free port, with an emulated mesh running: the tree they show equals the mesh's
//! own report before and after a relay dies; a node of the original C++ library,
//! simulated by publishing its topics by hand, shows up in place with its firmware; the
//! SVG is well-formed and names every node; `forget` clears a node for good.
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::collections::BTreeMap;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::radio::Timing;
use mqttmesh_host::topology;
use mqttmesh_host::view::watch::{self, WatchEvent, WatchOptions, Watcher};
use mqttmesh_host::view::{render, MeshView, Snapshot};
use mqttmesh_testkit as testkit;
use tokio::io::{AsyncBufReadExt, BufReader};

const NODES: usize = 12;
const FORM: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(30);
const OUT: &str = "esp8266-out/";
const IN: &str = "esp8266-in/";
/// The simulated node of the original library.
const ORIGINAL: &str = "00BEEF";

/// Where each node hangs: id → (parent, depth, online).
type Tree = BTreeMap<String, (Option<String>, Option<u8>, bool)>;

fn mesh_tree(mesh: &Mesh) -> Tree {
    mesh.rows()
        .into_iter()
        .map(|r| (r.id, (r.parent, r.depth, r.online)))
        .collect()
}

/// The snapshot's tree, limited to the mesh's nodes.
fn view_tree(s: &Snapshot, mesh: &Tree) -> Tree {
    s.node_list
        .iter()
        .filter(|n| mesh.contains_key(&n.id))
        .map(|n| (n.id.clone(), (n.parent.clone(), n.depth, n.online)))
        .collect()
}

async fn mqttmesh(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqttmesh"));
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("mqttmesh finishes in time")
        .expect("mqttmesh runs")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "mqttmesh failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn topology_json(broker: &str) -> Snapshot {
    let out = mqttmesh(&["topology", "--broker", broker, "--format", "json"]).await;
    serde_json::from_str(&stdout(&out)).expect("topology prints a JSON snapshot")
}

/// A `MeshView` fed by an in-process client, as a front end would hold it.
async fn live_view(opts: &WatchOptions) -> Arc<Mutex<MeshView>> {
    let view = Arc::new(Mutex::new(MeshView::new(OUT)));
    let mut watcher = Watcher::connect(opts, &[format!("{OUT}#")])
        .await
        .expect("view client connects");
    let v = view.clone();
    tokio::spawn(async move {
        while let Some(e) = watcher.recv().await {
            if let WatchEvent::Message(d) = e {
                watch::apply(&mut v.lock().unwrap(), &d);
            }
        }
    });
    view
}

/// Waits until `topology` and the live view both show the mesh's own tree.
async fn wait_trees_agree(mesh: &Mesh, view: &Mutex<MeshView>, broker: &str, when: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let want = mesh_tree(mesh);
        let live = view_tree(&view.lock().unwrap().snapshot(Instant::now()), &want);
        let cli = view_tree(&topology_json(broker).await, &want);
        if live == want && cli == want && want == mesh_tree(mesh) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: trees differ\nmesh: {want:?}\nview: {live:?}\ntopology: {cli:?}\n{}",
            render_tree(&mesh.rows())
        );
    }
}

/// Plays a node of the original library: retained `info/*` below `parent_ap`, and an
/// answer to every `fw` query. Returns the task answering.
async fn original_node(opts: &WatchOptions, parent_ap: &str) -> tokio::task::JoinHandle<()> {
    let mut client = Watcher::connect(opts, &[format!("{IN}fw/#")])
        .await
        .expect("original-node client connects");
    for (sub, payload) in [
        ("available", "online"),
        ("reset_Reason", "External System"),
        ("MAC", "5E:CF:7F:00:BE:EF"),
        ("MAC_hosted_AP", "5A:CF:7F:00:BE:EF"),
        ("IP_local", "192.168.4.9"),
        ("RSSI", "-71"),
        ("connectedTo", parent_ap),
    ] {
        let topic = format!("{OUT}{ORIGINAL}/info/{sub}");
        client
            .publish(&topic, payload.as_bytes(), true)
            .await
            .unwrap();
    }
    client
        .flush(WAIT)
        .await
        .expect("retained info acknowledged");
    tokio::spawn(async move {
        let answer = format!("ChipID:{ORIGINAL} FirmwareID:0B0E v2.3 IP:192.168.4.9 mesh");
        while let Some(e) = client.recv().await {
            if matches!(e, WatchEvent::Message(_)) {
                let topic = format!("{OUT}{ORIGINAL}/fw");
                let _ = client.publish(&topic, answer.as_bytes(), false).await;
            }
        }
    })
}

/// A small well-formedness check: declaration, every tag closed in order, quoted
/// attributes, only the five XML entities.
fn well_formed(doc: &str) -> Result<(), String> {
    let mut rest = doc
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .ok_or("no XML declaration")?;
    let mut stack: Vec<&str> = Vec::new();
    let mut roots = 0;
    loop {
        let text_end = rest.find('<').unwrap_or(rest.len());
        let text = &rest[..text_end];
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').ok_or("bare &")? + i + 1];
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity) {
                return Err(format!("unknown entity {entity}"));
            }
        }
        if stack.is_empty() && !text.trim().is_empty() {
            return Err("text outside the root element".into());
        }
        if text_end == rest.len() {
            break;
        }
        let close = rest[text_end..].find('>').ok_or("unclosed tag")? + text_end;
        let tag = &rest[text_end + 1..close];
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop() != Some(name) {
                return Err(format!("</{name}> closes nothing open"));
            }
        } else {
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().ok_or("empty tag")?;
            if body[name.len()..].matches('"').count() % 2 == 1 || body.contains('<') {
                return Err(format!("bad attributes in <{body}>"));
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    match (stack.is_empty(), roots) {
        (true, 1) => Ok(()),
        _ => Err(format!("open elements {stack:?}, {roots} root elements")),
    }
}

fn lines_of(lines: &Mutex<Vec<String>>) -> Vec<serde_json::Value> {
    lines
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_monitor_and_forget_follow_a_live_mesh() {
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    let addr = broker.addr().to_string();
    let opts = |role| WatchOptions::new("127.0.0.1", broker.port(), &watch::client_id(role));
    let view = live_view(&opts("testview")).await;
    let mesh = Mesh::start(MeshSpec {
        timing: Timing::fast(),
        seed: 7,
        publish_interval: Duration::from_millis(500),
        ..MeshSpec::new(
            topology::grid(NODES),
            testkit::config(broker.addr()),
            broker.addr(),
        )
    })
    .await
    .expect("nodes start");
    assert!(
        mesh.wait_for(FORM, |m| m.all_online()).await,
        "mesh did not form:\n{}",
        render_tree(&mesh.rows())
    );

    // The monitor runs through everything below.
    let mut monitor = tokio::process::Command::new(env!("CARGO_BIN_EXE_mqttmesh"))
        .args(["monitor", "--json", "--passive", "--duration", "300"])
        .args(["--broker", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("monitor starts");
    let monitor_lines = Arc::new(Mutex::new(Vec::new()));
    let sink = monitor_lines.clone();
    let mut reader = BufReader::new(monitor.stdout.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });

    wait_trees_agree(&mesh, &view, &addr, "formed").await;

    // A node of the original library below the deepest node.
    let rows = mesh.rows();
    let host = rows.iter().max_by_key(|r| r.depth).expect("a node").clone();
    let host_ap = view
        .lock()
        .unwrap()
        .snapshot(Instant::now())
        .node(&host.id)
        .and_then(|n| n.ap_mac.clone())
        .expect("host AP MAC known");
    let responder = original_node(&opts("original"), &host_ap).await;
    let snap = topology_json(&addr).await;
    let original = snap.node(ORIGINAL).expect("original node listed");
    assert_eq!(original.parent.as_deref(), Some(host.id.as_str()));
    assert_eq!(original.depth, host.depth.map(|d| d + 1));
    assert!(original.online);
    assert_eq!(original.firmware_id.as_deref(), Some("0B0E"));
    assert_eq!(original.firmware_version.as_deref(), Some("2.3"));
    assert_eq!(original.reset_reason.as_deref(), Some("External System"));
    assert_eq!(snap.nodes, NODES + 1);
    assert!(
        snap.node_list.iter().all(|n| n.firmware_id.is_some()),
        "every node answered fw"
    );

    // SVG: well-formed, names every node.
    let svg_path = broker.dir().join("mesh.svg");
    let svg_file = svg_path.to_str().expect("utf-8 temp path");
    stdout(
        &mqttmesh(&[
            "topology", "--broker", &addr, "--format", "svg", "--out", svg_file,
        ])
        .await,
    );
    let svg = std::fs::read_to_string(&svg_path).expect("svg written");
    well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
    for n in &snap.node_list {
        assert!(
            svg.contains(&format!(">{}</text>", n.id)),
            "{} not in the SVG",
            n.id
        );
    }
    let dot = stdout(&mqttmesh(&["topology", "--broker", &addr, "--format", "dot"]).await);
    assert!(
        dot.contains(&format!("\"n:{}\" -> \"n:{ORIGINAL}\"", host.id)),
        "{dot}"
    );

    // Kill a relay below the root (not the original node's host).
    let relay = rows
        .iter()
        .filter(|r| r.depth >= Some(2) && !r.children.is_empty() && r.id != host.id)
        .min_by_key(|r| r.depth)
        .expect("a relay below the root")
        .clone();
    let relay_index = (0..NODES)
        .find(|&i| mesh.node_id(i) == relay.id)
        .expect("relay index");
    mesh.kill(relay_index);
    let healed = mesh
        .wait_for(FORM, |m| {
            let st = m.statuses();
            !st[relay_index].alive && st.iter().all(|s| s.id == relay.id || s.online)
        })
        .await;
    assert!(
        healed,
        "no heal after killing {}:\n{}",
        relay.id,
        render_tree(&mesh.rows())
    );
    wait_trees_agree(&mesh, &view, &addr, "after the kill").await;
    assert_eq!(mesh_tree(&mesh)[&relay.id], (None, None, false));

    // The monitor said so.
    let said_offline = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .any(|l| l["event"] == "offline" && l["id"] == relay.id.as_str())
    };
    let deadline = Instant::now() + WAIT;
    while !said_offline(&lines_of(&monitor_lines)) {
        assert!(
            Instant::now() < deadline,
            "monitor printed no offline line for {}: {:?}",
            relay.id,
            lines_of(&monitor_lines)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = lines_of(&monitor_lines);
    assert_eq!(lines[0]["event"], "snapshot");
    assert_eq!(lines[0]["snapshot"]["nodes"], NODES);

    // Forget the dead relay and the original node (now silent).
    responder.abort();
    for id in [relay.id.as_str(), ORIGINAL] {
        let out = stdout(&mqttmesh(&["forget", id, "--yes", "--broker", &addr]).await);
        assert!(
            out.contains(&format!("{OUT}{id}/info/connectedTo")),
            "{out}"
        );
        assert!(
            out.contains(&format!("cleared 7 topic(s) of {id}")),
            "{out}"
        );
    }
    let snap = topology_json(&addr).await;
    assert!(
        snap.node(&relay.id).is_none() && snap.node(ORIGINAL).is_none(),
        "{:?}",
        snap.node_list
    );
    assert_eq!(snap.nodes, NODES - 1);
    let deadline = Instant::now() + WAIT;
    while !lines_of(&monitor_lines)
        .iter()
        .any(|l| l["event"] == "removed" && l["id"] == relay.id.as_str())
    {
        assert!(Instant::now() < deadline, "monitor printed no removed line");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = monitor.kill().await;
    let rendered = render::text(&snap);
    assert!(!rendered.contains(&relay.id), "{rendered}");
}

#[tokio::test]
async fn an_unreachable_broker_and_a_missing_yes_are_explained() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap().to_string();
    drop(free);
    let out = mqttmesh(&["topology", "--broker", &addr]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&addr) && err.contains("--broker"), "{err}");

    let out = mqttmesh(&["forget", "00A1B2", "--broker", &addr]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--yes"), "{err}");

    let out = mqttmesh(&["monitor", "--broker", &addr]).await;
    assert!(
        !out.status.success(),
        "piped monitor runs in JSON mode and fails to connect"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));
}
