//! `mqttmesh sim --virtual` and `--fault`: the virtual-time run reports like the
//! real-socket one and is byte-for-byte reproducible, and prints nodes' logs on request; every fault kind heals in virtual
//! time; in the real-socket sim a relay crash, a router outage, a broker restart, a cut
//! link, frame loss, added latency and a move heal too.

mod common;

use std::fs;
use std::time::Duration;

use common::{mqttmesh, Run, TempDir};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn sim(dir: &TempDir, name: &str, args: &[&str]) -> (Run, Value, String) {
    let report = dir.path(&format!("{name}.json"));
    let report_arg = report.to_str().expect("utf-8 temp path").to_owned();
    let mut all = vec!["sim"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--report", &report_arg]);
    let run = mqttmesh(dir, name, &all, RUN_TIMEOUT);
    assert!(run.status.success(), "mqttmesh {all:?}: {}", run.context());
    let text = fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report at {}: {e}\n{}", report.display(), run.context()));
    let json: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("report is not JSON ({e}):\n{text}"));
    (run, json, text)
}

/// Every fault healed, with a heal time.
fn assert_healed(report: &Value, run: &Run, kinds: usize) {
    let faults = report["faults"].as_array().expect("a faults list");
    assert_eq!(faults.len(), kinds, "{}", run.context());
    for f in faults {
        assert!(f["heal_ms"].is_u64(), "not healed: {f}\n{}", run.context());
    }
}

#[test]
fn virtual_run_reports_like_the_real_one_and_repeats_byte_for_byte() {
    let dir = TempDir::new("virtual-repeat");
    let args = [
        "--virtual",
        "--nodes",
        "300",
        "--topology",
        "random",
        "--seed",
        "7",
    ];
    let (run, report, first) = sim(&dir, "a", &args);
    let (_, _, second) = sim(&dir, "b", &args);
    assert_eq!(first, second, "same seed, same report");
    assert_eq!(report["nodes"], 300);
    assert_eq!(report["online"], 300, "{}", run.context());
    assert_eq!(report["broker"], "virtual");
    assert!(report["formation_ms"].is_u64());
    assert_eq!(report["node_list"].as_array().map(Vec::len), Some(300));
    assert_eq!(report["simulator"]["invariant_violations"], 0);
    assert!(
        run.stderr.contains("online"),
        "progress lines: {}",
        run.context()
    );
    let (_, _, other) = sim(
        &dir,
        "c",
        &[
            "--virtual",
            "--nodes",
            "300",
            "--topology",
            "random",
            "--seed",
            "8",
        ],
    );
    assert_ne!(first, other, "another seed, another run");
}

#[test]
fn virtual_run_prints_the_log_of_the_nodes_asked_for() {
    let dir = TempDir::new("virtual-node-log");
    let args = ["--virtual", "--nodes", "3", "--topology", "line"];
    // The same seed gives the same node IDs: the first run names the root.
    let (first, _, _) = sim(&dir, "tree", &args);
    let root = first
        .stdout
        .lines()
        .find(|l| l.contains("(depth 1)"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no root in the tree: {}", first.context()))
        .to_owned();
    let mut with_logs = args.to_vec();
    with_logs.extend_from_slice(&["--node-log", &root, "--node-log", "NOSUCH"]);
    let (run, _, _) = sim(&dir, "log", &with_logs);
    assert!(
        run.stderr.contains(&format!("log of node {root}:"))
            && run.stderr.contains("online at depth 1"),
        "the root's own log lines: {}",
        run.context()
    );
    assert!(
        run.stderr.contains("--node-log NOSUCH: no such node"),
        "{}",
        run.context()
    );
}

#[test]
fn virtual_faults_of_every_kind_heal() {
    let dir = TempDir::new("virtual-faults");
    let file = dir.path("faults.txt");
    fs::write(
        &file,
        "# every kind, one after the other\n\
         at=40s crash node=relay\n\
         at=80s restart node=relay\n\
         at=120s cut node=relay\n\
         at=160s router-down for=10s\n\
         at=220s broker-restart for=5s\n\
         at=280s loss p=0.2 for=10s\n\
         at=300s latency ms=100 for=10s\n\
         at=320s move node=3 x=0 y=5\n\
         at=340s crash node=relay for=10s\n",
    )
    .expect("write the scenario");
    let file_arg = file.to_str().expect("utf-8 temp path");
    let (run, report, _) = sim(
        &dir,
        "faults",
        &[
            "--virtual",
            "--nodes",
            "60",
            "--topology",
            "random",
            "--faults",
            file_arg,
        ],
    );
    assert_healed(&report, &run, 9);
    assert_eq!(
        report["simulator"]["invariant_violations"],
        0,
        "{}",
        run.context()
    );
    assert!(
        run.stdout
            .contains("fault \"at=40s crash node=relay\": heal"),
        "{}",
        run.context()
    );
}

#[test]
fn bad_fault_spec_is_refused_with_the_reason() {
    let dir = TempDir::new("virtual-bad-fault");
    let run = mqttmesh(
        &dir,
        "bad",
        &[
            "sim",
            "--virtual",
            "--nodes",
            "3",
            "--fault",
            "at=5s explode node=1",
        ],
        RUN_TIMEOUT,
    );
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("unknown fault kind"),
        "{}",
        run.context()
    );
}

#[test]
fn real_socket_relay_crash_and_router_outage_heal() {
    let dir = TempDir::new("real-faults");
    let (run, report, _) = sim(
        &dir,
        "real",
        &[
            "--nodes",
            "6",
            "--topology",
            "line",
            "--profile",
            "fast",
            "--publish-interval",
            "0.5",
            "--fault",
            "at=8s crash node=relay for=2s",
            "--fault",
            "at=14s router-down for=2s",
        ],
    );
    assert_healed(&report, &run, 2);
    assert!(
        report["faults"][1]["offline_peak"].as_u64() > Some(0),
        "{report}"
    );
}

#[test]
fn real_socket_mosquitto_restart_heals_and_the_count_goes_on() {
    let dir = TempDir::new("real-broker-restart");
    let (run, report, _) = sim(
        &dir,
        "restart",
        &[
            "--nodes",
            "6",
            "--topology",
            "random",
            "--profile",
            "fast",
            "--publish-interval",
            "0.5",
            "--broker",
            "mosquitto",
            "--fault",
            "at=6s broker-restart for=2s",
        ],
    );
    assert_healed(&report, &run, 1);
    assert_eq!(report["faults"][0]["offline_peak"], 6, "{report}");
    let published = report["messages"]["published"].as_u64().unwrap_or(0);
    let delivered = report["messages"]["delivered"].as_u64().unwrap_or(0);
    assert!(published > 0, "{report}");
    // The observer subscribes again after the restart: what was published after it
    // still arrives (only what was in flight while the broker died may be missing).
    assert!(
        delivered + 12 >= published,
        "published {published}, delivered {delivered}"
    );
}

#[test]
fn real_socket_cut_loss_latency_and_move_heal_with_nothing_lost() {
    let dir = TempDir::new("real-air-faults");
    let file = dir.path("faults.txt");
    // A line of 5: node i hangs below node i - 1. Node 4 moves next to the router.
    fs::write(
        &file,
        "at=3s cut node=relay\n\
         at=6s loss p=0.3 for=1500ms\n\
         at=9s latency ms=80 for=1500ms\n\
         at=12s move node=4 x=10 y=0\n",
    )
    .expect("write the scenario");
    let file_arg = file.to_str().expect("utf-8 temp path");
    let (run, report, _) = sim(
        &dir,
        "air",
        &[
            "--nodes",
            "5",
            "--topology",
            "line",
            "--profile",
            "fast",
            "--publish-interval",
            "0.2",
            "--faults",
            file_arg,
        ],
    );
    assert_healed(&report, &run, 4);
    for f in report["faults"].as_array().into_iter().flatten() {
        assert_eq!(f["messages_lost"], 0, "{f}\n{}", run.context());
    }
    assert!(
        report["faults"][0]["node"].is_string(),
        "the cut hit a relay below the root: {report}"
    );
    let node_list = report["node_list"].as_array().expect("a node list");
    let moved = &node_list[4];
    assert_eq!(
        moved["parent"], "router",
        "the moved node joins the router: {report}"
    );
    assert_eq!(
        report["messages"]["published"], report["messages"]["delivered"],
        "{report}"
    );
}
