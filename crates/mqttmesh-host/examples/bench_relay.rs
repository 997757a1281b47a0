//! Relay benchmark (numbers, not a test): throughput of a node at depth k of a line
//! (k = 1..8) publishing through the real-socket runtime to a real Mosquitto, against a
//! plain rumqttc client publishing the same messages straight to the broker; host CPU
//! per relayed message per hop; resident memory per emulated node.
//!
//! Run it through `scripts/bench-relay` (release build). Directly:
//!
//! ```text
//! bench_relay throughput [--depths 1,2,4,8] [--sizes 64,1024] [--seconds 2]
//!                        [--repeat 3] [--window 500] [--qos 0|1] [--radio host|realistic]
//! bench_relay memory N
//! ```
//!
//! Method. Both publishers run under the same closed loop: the benchmark's subscriber
//! (a rumqttc client on `esp8266-out/+/bench`) counts deliveries, and the publisher is
//! allowed at most `--window` messages beyond what has been delivered (the node gets
//! them as `Control::Burst` commands, the direct client as `publish` calls). After a
//! warm-up, deliveries are counted for `--seconds`; then publishing stops and every
//! granted message must arrive (a loss is reported). CPU is this process's
//! user + system time (`/proc/self/stat`) over the same window, divided by the messages
//! delivered; Mosquitto's CPU is reported beside it. Each figure is the median of
//! `--repeat` runs, direct and mesh alternating so that load changes hit both.
//!
//! `--radio host`: no hop latency and no air-time limit, so the number is the
//! software's. `--radio realistic`: 10 ms per hop and 5 Mbit/s of air time per radio
//! (`Timing::realistic()`, with fast scans so the line forms quickly).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mqttmesh_core::MsgType;
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::radio::{Placement, Timing};
use mqttmesh_host::runtime::Control;
use mqttmesh_host::topology;
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use tokio::sync::{mpsc, Notify};

const OUT: &str = "esp8266-out/";
/// Same length as a node ID, so direct and mesh messages have the same topic length.
const DIRECT_TOPIC: &str = "esp8266-out/D1RECT/bench";
const FORM: Duration = Duration::from_secs(300);
const DRAIN: Duration = Duration::from_secs(30);
/// Link frame bytes around a payload on `<out><ID>/bench`: 2 header, 1 type, 6 fields,
/// 24 topic (`docs/PROTOCOL.md`).
const FRAME_OVERHEAD: usize = 2 + 1 + 6 + 24;
/// Clock ticks per second of `/proc/self/stat` (`getconf CLK_TCK`, 100 on Linux).
const CLK_TCK: f64 = 100.0;

type Res<T> = Result<T, String>;

#[derive(Debug, Clone)]
struct Args {
    depths: Vec<usize>,
    sizes: Vec<u16>,
    seconds: f64,
    repeat: usize,
    window: u64,
    qos: u8,
    realistic: bool,
}

fn parse(mut it: impl Iterator<Item = String>) -> Res<Args> {
    let mut a = Args {
        depths: (1..=8).collect(),
        sizes: vec![64, 1024],
        seconds: 2.0,
        repeat: 3,
        window: 1000,
        qos: 0,
        realistic: false,
    };
    let list = |v: String| -> Res<Vec<u64>> {
        v.split(',')
            .map(|x| x.trim().parse().map_err(|e| format!("{x:?}: {e}")))
            .collect()
    };
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value (see the doc of bench_relay.rs)"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--depths" => a.depths = list(v)?.into_iter().map(|d| d as usize).collect(),
            "--sizes" => {
                a.sizes = list(v)?
                    .into_iter()
                    .map(|s| u16::try_from(s).unwrap_or(u16::MAX))
                    .collect()
            }
            "--seconds" => a.seconds = num(&v)?,
            "--repeat" => a.repeat = num(&v)?.max(1.0) as usize,
            "--window" => a.window = num(&v)?.max(1.0) as u64,
            "--qos" => a.qos = num(&v)? as u8,
            "--radio" => a.realistic = v == "realistic",
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.sizes
        .iter()
        .any(|&s| usize::from(s) > mqttmesh_core::link::MAX_PAYLOAD)
    {
        return Err(format!(
            "payloads are at most {} bytes",
            mqttmesh_core::link::MAX_PAYLOAD
        ));
    }
    Ok(a)
}

/// What the subscriber has seen.
#[derive(Debug, Default)]
struct Seen {
    msgs: AtomicU64,
    bytes: AtomicU64,
    notify: Notify,
}

impl Seen {
    fn msgs(&self) -> u64 {
        self.msgs.load(Ordering::Relaxed)
    }
}

async fn client(
    broker: SocketAddr,
    id: &str,
    on_publish: impl Fn(&[u8]) + Send + 'static,
) -> (AsyncClient, tokio::task::JoinHandle<()>, Arc<Notify>) {
    let mut o = MqttOptions::new(id, broker.ip().to_string(), broker.port());
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut el) = AsyncClient::new(o, 1024);
    let mut net = NetworkOptions::new();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
    let ready = Arc::new(Notify::new());
    let r = ready.clone();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&p.payload),
                Ok(Event::Incoming(Packet::ConnAck(_) | Packet::SubAck(_))) => r.notify_one(),
                Ok(_) => {}
                // The connection is gone (or closed by us): the subscriber's
                // count stops, and the run reports what was lost.
                Err(_) => return,
            }
        }
    });
    (client, task, ready)
}

fn qos(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// Whoever publishes: a node of the mesh, or a direct rumqttc client.
enum Publisher<'a> {
    Node(&'a Mesh, usize, MsgType),
    Direct(&'a mpsc::UnboundedSender<u32>),
}

impl Publisher<'_> {
    fn grant(&self, count: u32, len: u16) {
        match self {
            Publisher::Node(mesh, i, msg_type) => mesh.control(
                *i,
                Control::Burst {
                    count,
                    len,
                    msg_type: *msg_type,
                },
            ),
            Publisher::Direct(tx) => {
                let _ = tx.send(count);
            }
        }
    }
}

/// The direct publisher: publishes what it is granted, `len` bytes each.
async fn direct(broker: SocketAddr, len: u16, q: u8) -> (mpsc::UnboundedSender<u32>, AsyncClient) {
    let (client, _task, ready) = client(broker, "bench-direct", |_| {}).await;
    ready.notified().await;
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let c = client.clone();
    tokio::spawn(async move {
        let mut seq = 0u64;
        let mut payload = vec![b'.'; usize::from(len)];
        while let Some(n) = rx.recv().await {
            for _ in 0..n {
                if let Some(s) = payload.get_mut(..8) {
                    s.copy_from_slice(&seq.to_be_bytes());
                }
                seq += 1;
                if c.publish(DIRECT_TOPIC, qos(q), false, payload.clone())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    (tx, client)
}

/// One measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    msgs_per_s: f64,
    bytes_per_s: f64,
    /// This process's CPU seconds per delivered message.
    cpu_per_msg: f64,
    /// Mosquitto's CPU, fraction of one core.
    broker_cpu: f64,
    lost: u64,
}

fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the `(comm)`: state is the first, utime the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// Runs the closed loop for one publisher: warm-up, the measured window, the drain.
async fn measure(p: &Publisher<'_>, seen: &Seen, len: u16, a: &Args, broker_pid: &str) -> Sample {
    let base = seen.msgs();
    let mut granted = base;
    let top = |granted: &mut u64| {
        let delivered = seen.msgs();
        if *granted < delivered + a.window / 2 {
            let n = (delivered + a.window - *granted) as u32;
            p.grant(n, len);
            *granted += u64::from(n);
        }
    };
    let run = |secs: f64| Duration::from_secs_f64(secs);
    // Warm-up: a quarter of the window, at least half a second.
    let warm_until = Instant::now() + run((a.seconds / 4.0).max(0.5));
    while Instant::now() < warm_until {
        top(&mut granted);
        let _ = tokio::time::timeout(Duration::from_millis(5), seen.notify.notified()).await;
    }
    let (m0, b0) = (seen.msgs(), seen.bytes.load(Ordering::Relaxed));
    let (c0, k0, t0) = (cpu_ticks("self"), cpu_ticks(broker_pid), Instant::now());
    let end = t0 + run(a.seconds);
    while Instant::now() < end {
        top(&mut granted);
        let _ = tokio::time::timeout(Duration::from_millis(5), seen.notify.notified()).await;
    }
    let (m1, b1) = (seen.msgs(), seen.bytes.load(Ordering::Relaxed));
    let (c1, k1, dt) = (
        cpu_ticks("self"),
        cpu_ticks(broker_pid),
        t0.elapsed().as_secs_f64(),
    );
    let drain_until = Instant::now() + DRAIN;
    while seen.msgs() < granted && Instant::now() < drain_until {
        let _ = tokio::time::timeout(Duration::from_millis(20), seen.notify.notified()).await;
    }
    let msgs = (m1 - m0).max(1) as f64;
    Sample {
        msgs_per_s: msgs / dt,
        bytes_per_s: (b1 - b0) as f64 / dt,
        cpu_per_msg: (c1 - c0) as f64 / CLK_TCK / msgs,
        broker_cpu: (k1 - k0) as f64 / CLK_TCK / dt,
        lost: granted.saturating_sub(seen.msgs()),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn summarize(v: &[Sample]) -> Sample {
    Sample {
        msgs_per_s: median(v.iter().map(|s| s.msgs_per_s).collect()),
        bytes_per_s: median(v.iter().map(|s| s.bytes_per_s).collect()),
        cpu_per_msg: median(v.iter().map(|s| s.cpu_per_msg).collect()),
        broker_cpu: median(v.iter().map(|s| s.broker_cpu).collect()),
        lost: v.iter().map(|s| s.lost).sum(),
    }
}

/// The pid of the Mosquitto process whose command line names `dir`.
fn pid_of(dir: &std::path::Path) -> String {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .unwrap_or_else(|| "0".into())
}

fn radio_timing(realistic: bool) -> Timing {
    let fast = Timing::fast();
    let air = if realistic {
        Timing::realistic()
    } else {
        Timing {
            hop_latency: Duration::ZERO,
            bandwidth_bps: 0,
            ..fast
        }
    };
    // Scans and associations only matter while the line forms.
    Timing {
        scan: fast.scan,
        associate: fast.associate,
        ..air
    }
}

fn spec(broker: SocketAddr, placement: Placement, timing: Timing, seed: u64) -> MeshSpec {
    MeshSpec {
        timing,
        seed,
        ..MeshSpec::new(placement, mqttmesh_testkit::config(broker), broker)
    }
}

async fn form(broker: SocketAddr, placement: Placement, timing: Timing, seed: u64) -> Res<Mesh> {
    let mesh = Mesh::start(spec(broker, placement, timing, seed))
        .await
        .map_err(|e| format!("nodes did not start: {e}"))?;
    if !mesh.wait_for(FORM, |m| m.all_online()).await {
        return Err(format!(
            "the mesh did not form in {FORM:?}:\n{}",
            render_tree(&mesh.rows())
        ));
    }
    Ok(mesh)
}

async fn throughput(a: Args) -> Res<()> {
    let broker = Mosquitto::start().map_err(|e| format!("mosquitto: {e}"))?;
    let addr = broker.addr();
    let bpid = pid_of(broker.dir());
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let (sub, _task, ready) = client(addr, "bench-subscriber", move |p| {
        s.msgs.fetch_add(1, Ordering::Relaxed);
        s.bytes.fetch_add(p.len() as u64, Ordering::Relaxed);
        s.notify.notify_one();
    })
    .await;
    ready.notified().await;
    sub.subscribe(format!("{OUT}+/bench"), qos(a.qos))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    ready.notified().await;
    let msg_type = if a.qos == 0 {
        MsgType::Qos0
    } else {
        MsgType::Qos1
    };
    let timing = radio_timing(a.realistic);
    let radio = if a.realistic {
        "realistic: 10 ms per hop, 5 Mbit/s air time per radio"
    } else {
        "host cost: no hop latency, no air-time limit"
    };
    println!(
        "radio {radio}; QoS {}; window {} messages; {} s per run, median of {}; Mosquitto {}",
        a.qos, a.window, a.seconds, a.repeat, bpid
    );
    println!();
    println!("| payload | depth | direct msg/s | mesh msg/s | mesh MB/s | mesh / direct | air-time bound msg/s | CPU µs/msg direct | CPU µs/msg mesh | CPU µs per msg per hop | Mosquitto CPU | lost |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    // (depth, CPU s/msg of the mesh) per payload size, for the slope.
    let mut cpu: Vec<(u16, Vec<(f64, f64)>)> = a.sizes.iter().map(|&s| (s, Vec::new())).collect();
    for (di, &depth) in a.depths.iter().enumerate() {
        let mesh = form(addr, topology::line(depth), timing, 100 + di as u64).await?;
        let leaf = depth - 1;
        let st = mesh.statuses();
        if st[leaf].depth != Some(depth as u8) {
            return Err(format!(
                "node {leaf} is at depth {:?}, not {depth}:\n{}",
                st[leaf].depth,
                render_tree(&mesh.rows())
            ));
        }
        for &len in &a.sizes {
            let (tx, dclient) = direct(addr, len, a.qos).await;
            let (mut d, mut m) = (Vec::new(), Vec::new());
            for _ in 0..a.repeat {
                d.push(measure(&Publisher::Direct(&tx), &seen, len, &a, &bpid).await);
                m.push(
                    measure(
                        &Publisher::Node(&mesh, leaf, msg_type),
                        &seen,
                        len,
                        &a,
                        &bpid,
                    )
                    .await,
                );
            }
            let _ = dclient.disconnect().await;
            let (d, m) = (summarize(&d), summarize(&m));
            let per_hop = (m.cpu_per_msg - d.cpu_per_msg) / depth as f64;
            if let Some((_, v)) = cpu.iter_mut().find(|(s, _)| *s == len) {
                v.push((depth as f64, m.cpu_per_msg));
            }
            // Each radio on the path sends every message once: the leaf's and each
            // relay's (the root's broker session is not on the air).
            let bound = match (a.realistic, depth) {
                (true, 2..) => {
                    let frame = FRAME_OVERHEAD + usize::from(len);
                    format!("{:.0}", timing.bandwidth_bps as f64 / 8.0 / frame as f64)
                }
                _ => "—".into(),
            };
            println!(
                "| {len} B | {depth} | {:.0} | {:.0} | {:.2} | {:.0} % | {bound} | {:.1} | {:.1} | {:.1} | {:.0} % | {} |",
                d.msgs_per_s,
                m.msgs_per_s,
                m.bytes_per_s / 1e6,
                100.0 * m.msgs_per_s / d.msgs_per_s,
                d.cpu_per_msg * 1e6,
                m.cpu_per_msg * 1e6,
                per_hop * 1e6,
                m.broker_cpu * 100.0,
                d.lost + m.lost,
            );
        }
        let rejected: u64 = mesh
            .statuses()
            .iter()
            .map(|s| s.counters.publish_rejected + s.counters.queue_dropped)
            .sum();
        if rejected > 0 {
            println!("<!-- depth {depth}: {rejected} publications refused or dropped by nodes -->");
        }
        drop(mesh);
    }
    println!();
    for (len, points) in &cpu {
        if let Some(slope) = slope(points) {
            println!(
                "{len} B: the mesh's CPU per message grows by {:.2} µs per extra hop (least squares over depths {:?}).",
                slope * 1e6,
                a.depths
            );
        }
    }
    Ok(())
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn memory(n: usize) -> Res<()> {
    let broker = Mosquitto::start().map_err(|e| format!("mosquitto: {e}"))?;
    let before = rss_kib();
    let t = Instant::now();
    // Random placement (as `mqttmesh sim --topology random`): a square grid of 1,000
    // nodes with the router at a corner is deeper than the default `max_depth`.
    let mesh = Mesh::start(spec(
        broker.addr(),
        topology::random(n, 7),
        radio_timing(false),
        7,
    ))
    .await
    .map_err(|e| format!("nodes did not start: {e}"))?;
    let formed = mesh
        .wait_for(Duration::from_secs(240), |m| m.all_online())
        .await;
    let took = t.elapsed();
    let after = rss_kib();
    let depth = mesh
        .statuses()
        .iter()
        .filter_map(|s| s.depth)
        .max()
        .unwrap_or(0);
    let online = mesh.online();
    println!(
        "| {n} | {online} | {depth} | {} | {:.1} MiB | {:.1} MiB | {:.0} KiB |",
        if formed {
            format!("{:.1} s", took.as_secs_f64())
        } else {
            format!("not all online after {:.0} s", took.as_secs_f64())
        },
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / n as f64
    );
    println!(
        "<!-- of which the core Node value itself (fixed-capacity queues, no heap): {} KiB -->",
        std::mem::size_of::<mqttmesh_core::node::Node>() / 1024
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("throughput") => match parse(args) {
            Ok(a) => throughput(a).await,
            Err(e) => Err(e),
        },
        Some("memory") => match args.next().map(|n| n.parse::<usize>()) {
            Some(Ok(n)) if n > 0 => memory(n).await,
            _ => Err("memory needs a node count, e.g. `memory 100`".into()),
        },
        _ => Err("usage: bench_relay throughput [flags] | bench_relay memory N (see scripts/bench-relay)".into()),
    };
    if let Err(e) = result {
        eprintln!("bench_relay: {e}");
        std::process::exit(1);
    }
}
