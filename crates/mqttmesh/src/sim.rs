//! `mqttmesh sim`: an emulated mesh on this machine, against the embedded broker or
//! any MQTT broker, with live progress, a tree and summary at the end, and a JSON report.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mqttmesh_core::config::Timing as NodeTiming;
use mqttmesh_core::node::Counters;
use mqttmesh_host::broker::EmbeddedBroker;
use mqttmesh_host::flash::{FlashTiming, Layout};
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec, NodeRow};
use mqttmesh_host::meshtls::{colon_hex, MeshTls, MeshTlsCounters};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::ota::OtaSpec;
use mqttmesh_host::radio::{Placement, Timing};
use mqttmesh_host::topology;
use serde::Serialize;

use crate::nodeflags::NodeFlags;

mod faults;
mod faults_real;
mod faults_virtual;
mod virtual_time;

/// Flags of the virtual-time simulator and of fault injection.
#[derive(Debug, Args)]
pub struct VirtualFlags {
    /// Run on the virtual-time simulator instead of sockets: same flags and report, no
    /// broker needed (--broker is ignored), thousands of nodes, and the same --seed gives
    /// the same report byte for byte. Times are simulated; invariants (no parent loop,
    /// AP open only with a path to the broker, depth and children within limits) are
    /// checked throughout and violations printed with the seed (exit code 3).
    #[arg(long = "virtual")]
    pub virtual_time: bool,
    /// Inject a fault: `at=<time> <kind> [key=value]...` (repeatable). Kinds:
    /// `crash node=<N|relay> [for=<time>]`, `restart node=<N|relay>`,
    /// `cut node=<N|relay>` (its parent link), `router-down for=<time>`,
    /// `broker-restart [for=<time>]`, `loss p=<0..1> [for=<time>]`,
    /// `latency ms=<ms> [for=<time>]`, `move node=<N|relay> x=<m> y=<m>`; times like
    /// 30s, 500ms, 2m. Every kind works in both sims (real-socket: broker-restart needs
    /// --broker mosquitto; move needs a positional topology). `loss` resends frames late,
    /// as TCP would; `latency` replaces the per-hop latency; `cut` and `move` out of
    /// range silence links without telling either end. The report gives each fault's
    /// heal time, messages lost and duplicates.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<String>,
    /// A scenario file: one --fault spec per line, `#` comments.
    #[arg(long = "faults", value_name = "FILE")]
    pub faults_file: Option<PathBuf>,
}

/// What only a virtual-time run reports.
#[derive(Debug, Serialize)]
struct VirtualStats {
    simulated_ms: u64,
    /// When 99% of the nodes were first online.
    online_99_ms: Option<u64>,
    events: u64,
    resent_frames: u64,
    messages_lost: u64,
    invariant_violations: u64,
    first_violations: Vec<String>,
}

/// Report fields beyond the basic run.
#[derive(Debug, Serialize, Default)]
struct Extra {
    #[serde(skip_serializing_if = "Option::is_none")]
    simulator: Option<VirtualStats>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    faults: Vec<faults::FaultReport>,
}

/// Radio and timer profile.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Profile {
    /// ESP-like timing: scan ≈2 s (one channel ≈200 ms), association ≈1 s (refused:
    /// ≈300 ms), 10 ms per hop; default node timers.
    Realistic,
    /// Shortened timing for quick runs and tests.
    Fast,
}

/// `mqttmesh sim` arguments.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 25)]
    nodes: usize,
    /// line, grid, random, or a JSON topology file.
    #[arg(long, default_value = "grid")]
    topology: String,
    /// Seed for placement, chip IDs and node jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `embedded` (an in-process broker on a free loopback port), `embedded:PORT`,
    /// `mosquitto` (a Mosquitto process the sim starts on a free port, and restarts for
    /// `--fault "at=... broker-restart"`), or HOST[:PORT] of any MQTT 3.1.1 broker (port
    /// 1883, or 8883 with TLS, when not given).
    #[arg(long, default_value = "embedded")]
    broker: String,
    /// Keep running this many seconds in all (nodes stay reachable over MQTT meanwhile).
    #[arg(long, value_name = "SECS", conflicts_with = "until_formed")]
    duration: Option<u64>,
    /// Stop once every node is online (the default without --duration).
    #[arg(long)]
    until_formed: bool,
    /// Give up waiting for formation after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    formation_timeout: u64,
    /// Virtual time only: when the run ends, explain why offline nodes are offline
    /// (APs they hear, how many are full, whether those APs' children could move).
    #[arg(long, requires = "virtual_time")]
    explain_offline: bool,
    /// Virtual time only: when the run ends, print the last log lines (up to 400) the
    /// node with this ID kept, with the simulator's own notes on it (repeatable), e.g.
    /// to see how it healed after a fault.
    #[arg(long, value_name = "ID", requires = "virtual_time")]
    node_log: Vec<String>,
    /// Write a JSON report here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Timing profile.
    #[arg(long, value_enum, default_value = "realistic")]
    profile: Profile,
    /// Air-time budget of each node's radio, kbit/s (0: unlimited; default: the profile's).
    #[arg(long, value_name = "KBPS")]
    bandwidth: Option<u64>,
    /// Probability that a mesh frame is lost on the air and resent (0..1).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    loss: f64,
    /// Give every node a flash file in DIR (two 1.5 MiB application slots and
    /// `otadata`) so it takes firmware updates (`mqttmesh ota`); kept across runs.
    #[arg(long, value_name = "DIR")]
    flash_dir: Option<PathBuf>,
    /// A trial image that has not reached the broker after this many seconds is given
    /// up: the node restarts into the previous one.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    trial_timeout: u64,
    /// Make flash erases and writes take as long as on a chip (45 ms per 4 KiB sector,
    /// 1.6 ms per KiB written); nodes answer OTA commands only after that work.
    #[arg(long, requires = "flash_dir")]
    flash_timing: bool,
    /// Seconds between the demo app's counter publications.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    publish_interval: f64,
    /// Run every mesh link over TLS: DIR holds `ssl/server.cer`, `ssl/server.key` and
    /// `ssl/fingerprint` as `mqttmesh gen-cert --out DIR` writes them (the three files
    /// directly in DIR also work). Parents serve the certificate; children refuse a
    /// parent whose certificate's SHA-1 is not the fingerprint. Off by default.
    #[arg(long, value_name = "DIR")]
    mesh_tls: Option<PathBuf>,
    #[command(flatten)]
    node: NodeFlags,
    #[command(flatten)]
    sim: VirtualFlags,
}

#[derive(Debug, Serialize)]
struct Messages {
    published: u64,
    delivered: u64,
    duplicates: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    nodes: usize,
    online: usize,
    formation_ms: Option<u64>,
    max_depth: u8,
    depth_histogram: BTreeMap<u8, usize>,
    seed: u64,
    topology: String,
    broker: String,
    messages: Messages,
    rejected_joins: u64,
    /// Join handshakes that failed authentication (another mesh or a wrong password).
    auth_failures: u64,
    malformed: u64,
    /// OTA messages a relay did not send down a branch without the target firmware or
    /// node (docs/PROTOCOL.md "Subtree announcements"), summed.
    ota_filtered: u64,
    /// Subtree announcements sent, summed.
    subtree_sent: u64,
    /// Mesh TLS handshakes and refusals, summed (null with mesh TLS off).
    mesh_tls: Option<MeshTlsCounters>,
    rebalancing: Rebalancing,
    node_list: Vec<NodeRow>,
    #[serde(flatten)]
    extra: Extra,
}

/// Re-balancing, summed over all nodes (docs/PROTOCOL.md "Re-balancing"): the same
/// counters in both sims, since both runtimes report stations a full AP turned away.
#[derive(Debug, Serialize, Default, Clone, Copy, PartialEq, Eq)]
struct Rebalancing {
    /// Association attempts on full APs by nodes that heard nothing else.
    knocks: u64,
    /// Stations full APs turned away, as their nodes heard of it.
    stations_refused: u64,
    /// `MAKE_ROOM` requests full parents sent.
    asks: u64,
    /// Children that moved to make room.
    moves: u64,
    /// Requests children declined (moved recently, or no AP with room).
    declined: u64,
}

impl Rebalancing {
    fn sum<'a>(counters: impl IntoIterator<Item = &'a Counters>) -> Rebalancing {
        let mut r = Rebalancing::default();
        for c in counters {
            r.knocks += c.rebalance_knocks;
            r.stations_refused += c.stations_refused;
            r.asks += c.rebalance_asks;
            r.moves += c.rebalance_moves;
            r.declined += c.rebalance_declined;
        }
        r
    }
}

/// Runs the simulation.
pub async fn run(args: SimArgs) -> Result<ExitCode> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let faults = faults::load(&args.sim.faults, args.sim.faults_file.as_deref())?;
    if args.sim.virtual_time {
        return virtual_time::run(&args, &faults);
    }
    let placement = placement(&args)?;
    let tls = &args.node.tls;
    let (broker, host, mut started) = broker(&args.broker, tls)?;
    let (mut timing, node_timing) = match args.profile {
        Profile::Realistic => (Timing::realistic(), NodeTiming::default()),
        Profile::Fast => (Timing::fast(), NodeTiming::fast()),
    };
    if !(0.0..1.0).contains(&args.loss) {
        bail!("--loss {} must be at least 0 and below 1", args.loss);
    }
    timing.loss = args.loss;
    if let Some(kbps) = args.bandwidth {
        timing.bandwidth_bps = kbps.saturating_mul(1000);
    }
    let mesh_tls = match &args.mesh_tls {
        Some(dir) => Some(MeshTls::load(dir).map_err(|e| anyhow!("--mesh-tls: {e}"))?),
        None => None,
    };
    let config = args.node.config(&host, broker.port(), node_timing)?;
    let tls_client = tls.client(&host, broker.port())?;
    // Fail at once, with the real reason, when nothing listens there.
    tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(broker),
    )
    .await
    .map_err(|_| {
        anyhow!("cannot reach the broker at {broker}: no answer within 3 s; check --broker")
    })?
    .map_err(|e| {
        anyhow!("cannot reach the broker at {broker}: {e}; is it running? check --broker")
    })?;
    let credentials = args
        .node
        .mqtt_username
        .as_deref()
        .map(|u| (u, args.node.mqtt_password.as_deref().unwrap_or("")));
    let observer = Observer::start_secure(
        broker,
        &config.out_prefix,
        &format!("mqttmesh-sim-observer-{}", std::process::id()),
        credentials,
        tls_client.as_ref(),
    )
    .await
    .map_err(|e| crate::tlsflags::explain(&e).context("cannot watch the broker"))?;
    let spec = MeshSpec {
        timing,
        mqtt_trust: tls.trust()?,
        mesh_tls: mesh_tls.clone(),
        seed: args.seed,
        publish_interval: Duration::from_secs_f64(args.publish_interval.max(0.0)),
        ota: match &args.flash_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create --flash-dir {}", dir.display()))?;
                Some(OtaSpec {
                    dir: dir.clone(),
                    layout: Layout::default(),
                    trial_timeout: Duration::from_secs(args.trial_timeout),
                    flash_timing: args.flash_timing.then_some(FlashTiming::TYPICAL),
                })
            }
            None => None,
        },
        ..MeshSpec::new(placement, config, broker)
    };
    let n = spec.placement.len();
    faults_real::check(
        &faults,
        &spec.placement,
        matches!(started, Started::Mosquitto(_)),
    )?;
    let mut faults = faults_real::RealFaults::new(faults, args.seed);
    let mut router_up = true;
    let mut mesh = Mesh::start(spec).await.context("cannot start the nodes")?;
    eprintln!(
        "mqttmesh sim: {n} nodes, topology {}, seed {}, broker {broker}",
        args.topology, args.seed
    );
    if let Some(tls) = &mesh_tls {
        eprintln!(
            "mesh TLS on: {} (fingerprint {})",
            tls.dir().display(),
            colon_hex(&tls.fingerprint())
        );
    }

    let bar = progress_bar(n as u64);
    let formation_deadline = Duration::from_secs(args.formation_timeout);
    let fault_deadline = faults
        .last_end()
        .map(|end| end.max(formation_deadline) + formation_deadline);
    let total = args.duration.map(Duration::from_secs);
    let mut formation_ms = None;
    let mut last_line = std::time::Instant::now();
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let online = mesh.online();
        let elapsed = mesh.elapsed();
        bar.set_position(online as u64);
        bar.set_message(histogram_text(&mesh.depth_histogram()));
        if bar.is_hidden() && last_line.elapsed() >= Duration::from_secs(2) {
            last_line = std::time::Instant::now();
            eprintln!(
                "[{:>6.1}s] online {online}/{n}  depth {}",
                elapsed.as_secs_f64(),
                histogram_text(&mesh.depth_histogram())
            );
        }
        if formation_ms.is_none() && online == n {
            formation_ms = Some(elapsed.as_millis() as u64);
            bar.println(format!(
                "all {n} nodes online after {:.1} s",
                elapsed.as_secs_f64()
            ));
        }
        let mosquitto = match &mut started {
            Started::Mosquitto(m) => Some(m),
            _ => None,
        };
        faults
            .tick(&mut mesh, &observer, &mut router_up, mosquitto, elapsed)
            .await?;
        if formation_ms.is_some() && total.is_none() && faults.done() {
            break;
        }
        match total {
            Some(t) if elapsed >= t => break,
            None if fault_deadline.is_some_and(|d| elapsed >= d) => {
                bar.println("faults did not heal in time");
                break;
            }
            None if fault_deadline.is_none() && elapsed >= formation_deadline => {
                bar.println(format!(
                    "formation timed out after {} s",
                    args.formation_timeout
                ));
                break;
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut interrupted => {
                bar.println("interrupted: stopping and reporting");
                break;
            }
        }
    }
    bar.finish_and_clear();

    // Let what was published arrive before counting.
    mesh.set_publishing(false);
    observer
        .wait_for(Duration::from_secs(10), |o| {
            o.delivered() >= mesh.published()
        })
        .await;
    let published = mesh.published();

    let rows = mesh.rows();
    let statuses = mesh.statuses();
    let report = Report {
        nodes: n,
        online: rows.iter().filter(|r| r.online).count(),
        formation_ms,
        max_depth: rows.iter().filter_map(|r| r.depth).max().unwrap_or(0),
        depth_histogram: mesh.depth_histogram(),
        seed: args.seed,
        topology: args.topology.clone(),
        broker: broker.to_string(),
        messages: Messages {
            published,
            delivered: observer.delivered(),
            duplicates: observer.duplicates(),
        },
        rejected_joins: statuses.iter().map(|s| s.counters.rejected_joins).sum(),
        auth_failures: statuses.iter().map(|s| s.counters.auth_failures).sum(),
        malformed: statuses.iter().map(|s| s.counters.malformed).sum(),
        ota_filtered: statuses.iter().map(|s| s.counters.ota_filtered).sum(),
        subtree_sent: statuses.iter().map(|s| s.counters.subtree_sent).sum(),
        mesh_tls: mesh_tls.is_some().then(|| mesh.mesh_tls_counters()),
        rebalancing: Rebalancing::sum(statuses.iter().map(|s| &s.counters)),
        node_list: rows,
        extra: Extra {
            simulator: None,
            faults: faults.reports(&mesh, &observer),
        },
    };
    finish(&report, &args)?;
    mesh.shutdown();
    Ok(if report.online == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Prints the tree and the summary line, and writes the JSON report if asked.
fn finish(report: &Report, args: &SimArgs) -> Result<()> {
    println!("{}", render_tree(&report.node_list));
    println!(
        "nodes {}  online {}  formation {}  max depth {}  published {}  delivered {}  duplicates {}",
        report.nodes,
        report.online,
        report.formation_ms.map_or("not reached".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
        report.max_depth,
        report.messages.published,
        report.messages.delivered,
        report.messages.duplicates,
    );
    if report.ota_filtered > 0 {
        println!(
            "OTA routing: {} copies not sent down branches without the target, {} subtree announcements",
            report.ota_filtered, report.subtree_sent
        );
    }
    let r = &report.rebalancing;
    if *r != Rebalancing::default() {
        println!(
            "re-balancing: {} knocks on full APs, {} stations turned away, {} MAKE_ROOM \
             requests, {} moves, {} declined",
            r.knocks, r.stations_refused, r.asks, r.moves, r.declined
        );
    }
    if let Some(c) = &report.mesh_tls {
        println!(
            "mesh TLS: {} parent handshakes, {} parents refused (fingerprint), {} failed \
             handshakes with parents, {} refused connections from children, {} timeouts",
            c.parent_handshakes,
            c.parent_pin_mismatches,
            c.parent_handshake_failures,
            c.child_handshake_failures,
            c.handshake_timeouts
        );
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        eprintln!("report written to {}", path.display());
    }
    for f in &report.extra.faults {
        println!(
            "fault {:?}: heal {}  peak offline {}  lost {}  duplicates {}",
            f.fault,
            f.heal_ms.map_or("not reached".into(), |ms| format!(
                "{:.1} s",
                ms as f64 / 1000.0
            )),
            f.offline_peak,
            f.messages_lost,
            f.duplicates
        );
    }
    Ok(())
}

fn placement(args: &SimArgs) -> Result<Placement> {
    Ok(match args.topology.as_str() {
        "line" => topology::line(args.nodes),
        "grid" => topology::grid(args.nodes),
        "random" => topology::random(args.nodes, args.seed),
        file => topology::from_file(std::path::Path::new(file))
            .map_err(|e| anyhow!("{e} (--topology takes line, grid, random or a file)"))?,
    })
}

/// A broker the sim started, kept for the run.
#[derive(Debug)]
enum Started {
    External,
    Embedded(#[allow(dead_code)] EmbeddedBroker),
    Mosquitto(Mosquitto),
}

/// The broker's address, its host name as given (what its certificate must name), and
/// the broker the sim started, if any.
fn broker(spec: &str, tls: &crate::tlsflags::TlsFlags) -> Result<(SocketAddr, String, Started)> {
    if spec == "mosquitto" {
        if tls.is_on() {
            bail!("--broker mosquitto starts a plain MQTT Mosquitto; for TLS run a TLS broker and pass --broker HOST:PORT");
        }
        let m = Mosquitto::start().map_err(|e| {
            anyhow!("cannot start Mosquitto for --broker mosquitto: {e}; install it (apt-get install mosquitto) or use --broker embedded")
        })?;
        let host = m.addr().ip().to_string();
        return Ok((m.addr(), host, Started::Mosquitto(m)));
    }
    if let Some(port) = spec.strip_prefix("embedded") {
        if tls.is_on() {
            bail!(
                "the embedded broker speaks plain MQTT only; for TLS run a TLS broker (e.g. \
                 Mosquitto with a `listener 8883` and `certfile`/`keyfile`) and pass --broker \
                 HOST:PORT"
            );
        }
        let port: u16 = match port.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| {
                anyhow!("--broker {spec:?}: the port after `embedded:` must be a number")
            })?,
            None if port.is_empty() => 0,
            None => bail!("--broker {spec:?}: expected `embedded`, `embedded:PORT` or HOST:PORT"),
        };
        let b =
            EmbeddedBroker::start(SocketAddr::from(([127, 0, 0, 1], port))).with_context(|| {
                format!("cannot start the embedded broker on 127.0.0.1:{port}; is the port taken?")
            })?;
        return Ok((b.addr(), b.addr().ip().to_string(), Started::Embedded(b)));
    }
    let (host, port) =
        crate::brokerflags::split_host_port(spec).map_err(|e| anyhow!("{e} (or `embedded`)"))?;
    let port = port.unwrap_or(tls.default_port());
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("--broker {spec:?}: cannot resolve {host}"))?
        .next()
        .ok_or_else(|| anyhow!("--broker {spec:?} resolves to no address"))?;
    Ok((addr, host.to_string(), Started::External))
}

fn progress_bar(n: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("[{elapsed_precise}] online {pos:>4}/{len} {bar:30} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn histogram_text(h: &BTreeMap<u8, usize>) -> String {
    h.iter()
        .map(|(d, c)| format!("d{d}:{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}
