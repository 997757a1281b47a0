//! The `mqttmesh` binary, end to end: `sim` on the embedded broker and on a real
//! Mosquitto started by the test on a free port, with generated and file topologies,
//! its JSON report and tree, and its answers to bad input.
//!
//! Every run has a deadline; a run that outlives it is killed and the test fails.

use std::collections::HashMap;
use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use mqttmesh_host::mosquitto::Mosquitto;

mod common;
use common::{mqttmesh, Run, TempDir};
use serde_json::Value;

/// Generous: the runs below take a few seconds on a 2-core machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// Runs a `sim` that must succeed and returns its report.
fn sim_ok(dir: &TempDir, name: &str, args: &[&str]) -> (Run, Value) {
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
    (run, json)
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// Checks the report's node list: `n` distinct nodes, all online, every parent is
/// "router" (depth 1) or another node one level up. Returns depth by node index.
fn check_tree(report: &Value, n: usize) -> Vec<u64> {
    let list = report["node_list"]
        .as_array()
        .unwrap_or_else(|| panic!("node_list is not an array: {report}"));
    assert_eq!(list.len(), n, "node_list entries");
    let mut depth_of = HashMap::new();
    for node in list {
        let id = node["id"].as_str().expect("id is a string");
        assert!(
            depth_of.insert(id.to_owned(), num(node, "depth")).is_none(),
            "duplicate id {id}"
        );
    }
    for node in list {
        let id = node["id"].as_str().expect("id");
        let depth = num(node, "depth");
        assert_eq!(node["online"], Value::Bool(true), "{id} offline");
        let parent = node["parent"]
            .as_str()
            .unwrap_or_else(|| panic!("{id} has no parent: {node}"));
        if parent == "router" {
            assert_eq!(depth, 1, "{id} is a root at depth {depth}");
        } else {
            assert_ne!(parent, id, "{id} is its own parent");
            let parent_depth = depth_of
                .get(parent)
                .unwrap_or_else(|| panic!("{id}'s parent {parent} is not in node_list"));
            assert_eq!(parent_depth + 1, depth, "{id} at {depth} below {parent}");
        }
    }
    list.iter().map(|node| num(node, "depth")).collect()
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("local addr").port()
}

#[test]
fn sim_grid_30_until_formed_reports_all_online_and_delivered() {
    let dir = TempDir::new("grid30");
    let (run, report) = sim_ok(
        &dir,
        "grid30",
        &[
            "--nodes",
            "30",
            "--topology",
            "grid",
            "--until-formed",
            "--profile",
            "fast",
            "--publish-interval",
            "0.5",
        ],
    );
    assert_eq!(num(&report, "nodes"), 30, "{report}");
    assert_eq!(num(&report, "online"), 30, "{report}");
    let formation = num(&report, "formation_ms");
    assert!(formation > 0, "formation_ms {formation}");
    let max_depth = num(&report, "max_depth");
    assert!(max_depth >= 4, "max_depth {max_depth}");
    let messages = &report["messages"];
    let published = num(messages, "published");
    assert!(published > 0, "nothing published: {messages}");
    assert_eq!(num(messages, "delivered"), published, "{messages}");
    let depths = check_tree(&report, 30);
    assert_eq!(depths.iter().max().copied(), Some(max_depth));
    // One mesh, one password: every join authenticates.
    assert_eq!(num(&report, "auth_failures"), 0, "{report}");
    // The same re-balancing counters as --virtual (the host radio reports refusals).
    let rebalancing = &report["rebalancing"];
    for key in ["knocks", "stations_refused", "asks", "moves", "declined"] {
        num(rebalancing, key);
    }

    // The tree and the summary on stdout.
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"router"), "{}", run.context());
    for node in report["node_list"].as_array().expect("node_list") {
        let id = node["id"].as_str().expect("id");
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("└─ {id} (depth "))),
            "{id} missing from the tree\n{}",
            run.stdout
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("nodes 30  online 30  formation ")
                && l.contains(&format!("max depth {max_depth}"))
                && l.contains(&format!("published {published}  delivered {published}"))),
        "no summary line\n{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("report written to"),
        "{}",
        run.context()
    );
}

#[test]
fn sim_against_external_mosquitto() {
    let dir = TempDir::new("mosquitto");
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    let addr = broker.addr().to_string();
    let (run, report) = sim_ok(
        &dir,
        "line8",
        &[
            "--broker",
            &addr,
            "--nodes",
            "8",
            "--topology",
            "line",
            "--until-formed",
            "--profile",
            "fast",
        ],
    );
    assert_eq!(num(&report, "online"), 8, "{report}");
    assert_eq!(num(&report, "max_depth"), 8, "{report}");
    assert_eq!(report["broker"], Value::String(addr.clone()));
    assert_eq!(check_tree(&report, 8), (1..=8).collect::<Vec<u64>>());
    // The nodes held their sessions at this Mosquitto, not at an embedded broker.
    let root = report["node_list"][0]["id"].as_str().expect("id");
    let log = broker.log();
    assert!(
        log.contains(&format!("as mqttmesh-{root} ")),
        "root {root} never connected to Mosquitto:\n{log}\n{}",
        run.context()
    );
}

#[test]
fn sim_logs_in_to_a_broker_that_refuses_anonymous_clients() {
    let dir = TempDir::new("auth");
    let passwd = dir.0.join("passwd");
    let status = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["user", "pass"])
        .status()
        .expect("mosquitto_passwd runs (it ships with `apt-get install mosquitto`)");
    assert!(status.success());
    let broker = Mosquitto::start_with(&format!(
        "allow_anonymous false\npassword_file {}",
        passwd.display()
    ))
    .expect("mosquitto starts");
    let addr = broker.addr().to_string();
    let common = ["--broker", &addr, "--nodes", "4", "--topology", "line"];
    let (_, report) = sim_ok(
        &dir,
        "login",
        &[
            &common[..],
            &[
                "--profile",
                "fast",
                "--until-formed",
                "--mqtt-username",
                "user",
                "--mqtt-password",
                "pass",
            ],
        ]
        .concat(),
    );
    assert_eq!(num(&report, "online"), 4, "{report}");
    // Without the login the tool says what is missing instead of hanging.
    let run = sim_err(
        &dir,
        "no-login",
        &[&common[..], &["--until-formed"]].concat(),
        Duration::from_secs(30),
    );
    assert!(run.stderr.contains("--mqtt-username"), "{}", run.stderr);
}

#[test]
fn sim_random_and_file_topologies() {
    let dir = TempDir::new("topologies");
    let common = ["--until-formed", "--profile", "fast"];

    let mut args = vec!["--topology", "random", "--seed", "3", "--nodes", "12"];
    args.extend_from_slice(&common);
    let (_, random) = sim_ok(&dir, "random", &args);
    assert_eq!(num(&random, "online"), 12, "{random}");
    assert_eq!(num(&random, "seed"), 3);
    assert_eq!(random["topology"], Value::String("random".into()));
    check_tree(&random, 12);

    // Positions: 25 m apart on a line, only the first within range of the router.
    let positions = dir.path("positions.json");
    fs::write(
        &positions,
        r#"{"router": [0, 0], "nodes": [[10, 0], [35, 0], [60, 0]]}"#,
    )
    .expect("write topology");
    let positions = positions.to_str().expect("utf-8").to_owned();
    let mut args = vec!["--topology", positions.as_str()];
    args.extend_from_slice(&common);
    let (_, report) = sim_ok(&dir, "positions", &args);
    assert_eq!(num(&report, "nodes"), 3, "{report}");
    assert_eq!(check_tree(&report, 3), [1, 2, 3]);

    // Graph: router - 0 - 1 - 2.
    let graph = dir.path("graph.json");
    fs::write(
        &graph,
        r#"{"nodes":3,"router_links":[[0,-60]],"links":[[0,1,-65],[1,2,-70]]}"#,
    )
    .expect("write topology");
    let graph = graph.to_str().expect("utf-8").to_owned();
    let mut args = vec!["--topology", graph.as_str()];
    args.extend_from_slice(&common);
    let (_, report) = sim_ok(&dir, "graph", &args);
    assert_eq!(num(&report, "nodes"), 3, "{report}");
    assert_eq!(num(&report, "max_depth"), 3, "{report}");
    assert_eq!(check_tree(&report, 3), [1, 2, 3]);
}

/// Runs a `sim` that must fail with exit code 1 and an `error:` on stderr.
fn sim_err(dir: &TempDir, name: &str, args: &[&str], timeout: Duration) -> Run {
    let mut all = vec!["sim", "--profile", "fast"];
    all.extend_from_slice(args);
    let run = mqttmesh(dir, name, &all, timeout);
    assert_eq!(
        run.status.code(),
        Some(1),
        "mqttmesh {all:?}: {}",
        run.context()
    );
    assert!(
        run.stderr.starts_with("error: "),
        "mqttmesh {all:?}: {}",
        run.context()
    );
    run
}

#[test]
fn sim_bad_input_fails_with_a_clear_message() {
    let dir = TempDir::new("bad-input");
    let quick = Duration::from_secs(20);

    let run = sim_err(&dir, "in-topic", &["--in-topic", "nosuffix"], quick);
    let line = run.stderr.trim_end();
    assert!(line.contains("in_prefix") && line.contains("'/'"), "{line}");
    assert!(line.ends_with("(set it with --in-topic)"), "{line}");

    let run = sim_err(&dir, "mesh-password", &["--mesh-password", "short"], quick);
    assert!(
        run.stderr.contains("mesh_password") && run.stderr.contains("8..=63"),
        "{}",
        run.stderr
    );

    let run = sim_err(&dir, "firmware-id", &["--firmware-id", "xyz"], quick);
    assert!(
        run.stderr
            .contains("--firmware-id \"xyz\" is not a hex number"),
        "{}",
        run.stderr
    );

    let run = sim_err(
        &dir,
        "missing-topology",
        &["--topology", "/nonexistent.json"],
        quick,
    );
    assert!(
        run.stderr.contains("cannot read /nonexistent.json") && run.stderr.contains("--topology"),
        "{}",
        run.stderr
    );

    let bad_json = dir.path("bad.json");
    fs::write(&bad_json, "{\"nodes\": 3, \"links\": [[0, 1,").expect("write");
    let bad_json = bad_json.to_str().expect("utf-8").to_owned();
    let run = sim_err(&dir, "bad-json", &["--topology", &bad_json], quick);
    assert!(
        run.stderr
            .contains(&format!("{bad_json}: not a topology file")),
        "{}",
        run.stderr
    );

    let run = sim_err(
        &dir,
        "embedded-port",
        &["--broker", "embedded:notaport"],
        quick,
    );
    assert!(
        run.stderr.contains("embedded:notaport") && run.stderr.contains("must be a number"),
        "{}",
        run.stderr
    );

    let run = sim_err(&dir, "no-nodes", &["--nodes", "0"], quick);
    assert!(
        run.stderr.contains("--nodes must be at least 1"),
        "{}",
        run.stderr
    );

    // Nothing listens there: a message, not a hang.
    let closed = format!("127.0.0.1:{}", closed_port());
    let run = sim_err(
        &dir,
        "closed-port",
        &["--broker", &closed, "--until-formed"],
        Duration::from_secs(30),
    );
    assert!(
        run.stderr
            .contains(&format!("cannot reach the broker at {closed}"))
            && run.stderr.contains("check --broker"),
        "{}",
        run.stderr
    );
}
