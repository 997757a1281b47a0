//! `mqttmesh sim --virtual`: the same run on the virtual-time simulator
//! (`mqttmesh-sim`'s `World`) instead of sockets: same flags, same report, any number of
//! nodes, and the same seed gives the same report byte for byte. Progress is printed in
//! simulated time; invariant violations are printed with the seed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use mqttmesh_core::config::Timing as NodeTiming;
use mqttmesh_core::node::Parent;
use mqttmesh_core::{Config, Instant};
use mqttmesh_host::mesh::{chip_ids, NodeRow};
use mqttmesh_host::radio::Placement;
use mqttmesh_sim::{Pos, SimTiming, World, ROUTER, ROUTER_PARENT};

use super::faults::{Fault, FaultReport, Kind, Target};
use super::faults_virtual::{check_heal, inject, undo, Pending};
use super::{Extra, Messages, Profile, Rebalancing, Report, SimArgs, VirtualStats};

/// Simulated time between progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often a healing mesh is checked (heal times have this resolution).
const HEAL_CHECK: Duration = Duration::from_millis(100);
/// Simulated time given to messages in flight before counting.
const SETTLE: Duration = Duration::from_secs(10);

fn instant(d: Duration) -> Instant {
    // Cannot matter: runs are far shorter than 2^64 ms.
    Instant::from_millis(d.as_millis() as u64)
}

pub(super) fn core_duration(d: Duration) -> mqttmesh_core::Duration {
    mqttmesh_core::Duration::from_millis(d.as_millis() as u64)
}

/// Builds the world of `placement`, with the host sim's chip IDs.
fn build(placement: &Placement, config: &Config, seed: u64, timing: SimTiming) -> World {
    let n = placement.len();
    let chips = chip_ids(n, seed);
    let mut world = match placement {
        Placement::Positions { router, nodes } => {
            let mut w = World::new(seed);
            w.set_router_position(Pos::new(router.0, router.1));
            w.set_timing(timing);
            for (i, p) in nodes.iter().enumerate() {
                w.add_node_at_with_chip(config.clone(), Pos::new(p.0, p.1), chips[i]);
            }
            return finish(w, config);
        }
        Placement::Graph { router, edges, .. } => {
            let mut w = World::graph(seed);
            for &(node, rssi) in router {
                w.set_rssi(ROUTER, node, Some(rssi));
            }
            for &(a, b, rssi) in edges {
                w.set_rssi(a, b, Some(rssi));
            }
            w
        }
    };
    world.set_timing(timing);
    for chip in chips {
        world.add_node_with_chip(config.clone(), chip);
    }
    finish(world, config)
}

fn finish(mut world: World, config: &Config) -> World {
    if let Some(net) = config.networks.first() {
        world.set_router_ssid(net.ssid.as_str());
        world.set_router_password(net.password.as_str());
    }
    world
}

fn rows(world: &World) -> Vec<NodeRow> {
    (0..world.len())
        .map(|i| {
            let node = world.node(i);
            let alive = world.is_alive(i);
            let online = alive && node.connected();
            NodeRow {
                id: world.id(i),
                parent: match node.parent() {
                    _ if !online => None,
                    Parent::Router { .. } => Some(ROUTER_PARENT.to_owned()),
                    Parent::Node { id, .. } => Some(id.as_str().to_owned()),
                    Parent::None => None,
                },
                depth: if online { node.depth() } else { None },
                online,
                chip_id: format!("{:06X}", node.chip_id()),
                alive,
                children: if online {
                    node.children().map(|c| c.as_str().to_owned()).collect()
                } else {
                    Vec::new()
                },
            }
        })
        .collect()
}

fn histogram(world: &World) -> BTreeMap<u8, usize> {
    let mut h = BTreeMap::new();
    for i in 0..world.len() {
        if world.is_alive(i) {
            if let Some(d) = world.node(i).depth() {
                *h.entry(d).or_default() += 1;
            }
        }
    }
    h
}

/// The report of a finished run (`end`: when the run proper ended, before settling).
fn report(
    world: &World,
    args: &SimArgs,
    faults: &[Fault],
    pending: &[Pending],
    formation: Option<Instant>,
    online_99: Option<Instant>,
    end: Instant,
) -> Report {
    let n = world.len();
    let stats = world.message_stats();
    let fault_reports = pending
        .iter()
        .map(|p| {
            let until = p.healed.unwrap_or(end);
            let (lost, dups) =
                world.messages_between(p.start, until + mqttmesh_core::Duration::from_millis(1));
            FaultReport {
                fault: faults[p.index].spec.clone(),
                node: p.node.clone(),
                at_ms: p.start.millis(),
                end_ms: p.end.millis(),
                heal_ms: p.healed.map(|h| h.saturating_since(p.end).millis()),
                offline_peak: p.offline_peak,
                messages_lost: lost,
                duplicates: dups,
            }
        })
        .collect();
    let node_list = rows(world);
    Report {
        nodes: n,
        online: node_list.iter().filter(|r| r.online).count(),
        formation_ms: formation.map(Instant::millis),
        max_depth: node_list.iter().filter_map(|r| r.depth).max().unwrap_or(0),
        depth_histogram: histogram(world),
        seed: args.seed,
        topology: args.topology.clone(),
        broker: "virtual".into(),
        messages: Messages {
            published: stats.published,
            delivered: stats.delivered,
            duplicates: stats.duplicates,
        },
        rejected_joins: (0..n)
            .map(|i| world.node(i).counters().rejected_joins)
            .sum(),
        auth_failures: (0..n).map(|i| world.node(i).counters().auth_failures).sum(),
        malformed: (0..n).map(|i| world.node(i).counters().malformed).sum(),
        ota_filtered: (0..n).map(|i| world.node(i).counters().ota_filtered).sum(),
        subtree_sent: (0..n).map(|i| world.node(i).counters().subtree_sent).sum(),
        mesh_tls: None,
        rebalancing: Rebalancing::sum((0..n).map(|i| world.node(i).counters())),
        node_list,
        extra: Extra {
            simulator: Some(VirtualStats {
                simulated_ms: end.millis(),
                online_99_ms: online_99.map(Instant::millis),
                events: world.steps(),
                resent_frames: world.resent(),
                messages_lost: stats.lost,
                invariant_violations: world.violation_count(),
                first_violations: world.violations().iter().map(ToString::to_string).collect(),
            }),
            faults: fault_reports,
        },
    }
}

/// Runs the simulation in virtual time.
pub(super) fn run(args: &SimArgs, faults: &[Fault]) -> Result<ExitCode> {
    if args.mesh_tls.is_some() || args.node.tls.is_on() {
        bail!("--virtual models neither broker TLS nor mesh TLS (links are not encrypted in virtual time); drop --tls/--mesh-tls or run without --virtual");
    }
    let placement = super::placement(args)?;
    let n = placement.len();
    for f in faults {
        let idx = match f.kind {
            Kind::Crash(Target::Index(i))
            | Kind::Restart(Target::Index(i))
            | Kind::Cut(Target::Index(i))
            | Kind::Move(Target::Index(i), ..) => Some(i),
            _ => None,
        };
        if let Some(i) = idx.filter(|&i| i >= n) {
            bail!(
                "--fault {:?}: node {i} does not exist (nodes are 0..{n})",
                f.spec
            );
        }
        if matches!(f.kind, Kind::Move(..)) && matches!(placement, Placement::Graph { .. }) {
            bail!("--fault {:?}: move needs a positional topology (line, grid, random or a positions file)", f.spec);
        }
    }
    let (mut timing, node_timing) = match args.profile {
        Profile::Realistic => (SimTiming::realistic(), NodeTiming::default()),
        Profile::Fast => (SimTiming::fast(), NodeTiming::fast()),
    };
    if !(0.0..1.0).contains(&args.loss) {
        bail!("--loss {} must be at least 0 and below 1", args.loss);
    }
    // Cannot truncate: loss is below 1.
    timing.loss_ppm = (args.loss * 1_000_000.0).round() as u32;
    if let Some(kbps) = args.bandwidth {
        timing.bandwidth_bps = kbps.saturating_mul(1000);
    }
    let config = args.node.config("127.0.0.1", 1883, node_timing)?;
    let wall = std::time::Instant::now();
    let mut world = build(&placement, &config, args.seed, timing);
    world.keep_broker_log(false);
    let interval = Duration::from_secs_f64(args.publish_interval.max(0.0));
    if !interval.is_zero() {
        world.start_app(core_duration(interval));
    }
    eprintln!(
        "mqttmesh sim --virtual: {n} nodes, topology {}, seed {}, {} fault(s)",
        args.topology,
        args.seed,
        faults.len()
    );

    let formation_timeout = Duration::from_secs(args.formation_timeout);
    let last_end = faults.iter().map(Fault::end).max();
    let stop = instant(match (args.duration, last_end) {
        (Some(d), _) => Duration::from_secs(d),
        (None, Some(end)) => end.max(formation_timeout) + formation_timeout,
        (None, None) => formation_timeout,
    });
    let mut formation: Option<Instant> = None;
    let mut online_99: Option<Instant> = None;
    let mut pending: Vec<Pending> = Vec::new();
    let mut next_fault = 0;
    let mut next_progress = instant(PROGRESS_EVERY);
    loop {
        let mut checkpoint = stop.min(next_progress);
        if let Some(f) = faults.get(next_fault) {
            checkpoint = checkpoint.min(instant(f.at));
        }
        for p in pending.iter().filter(|p| !p.ended) {
            checkpoint = checkpoint.min(p.end);
        }
        let healing = pending.iter().any(|p| p.healed.is_none());
        if healing {
            checkpoint = checkpoint.min(world.now() + core_duration(HEAL_CHECK));
        }
        let want_formation = formation.is_none();
        let want_99 = online_99.is_none();
        world.run_until(checkpoint, |w| {
            (want_formation && w.all_online()) || (want_99 && w.online_count() * 100 >= n * 99)
        });
        let now = world.now();
        if online_99.is_none() && world.online_count() * 100 >= n * 99 {
            online_99 = Some(now);
        }
        check_heal(&world, &mut pending, now);
        if formation.is_none() && world.all_online() {
            formation = Some(now);
            eprintln!(
                "all {n} nodes online after {:.1} s",
                now.millis() as f64 / 1000.0
            );
        }
        let mut changed = false;
        for p in pending.iter_mut().filter(|p| !p.ended && p.end <= now) {
            undo(&mut world, &p.undo);
            p.ended = true;
            changed = true;
        }
        while let Some(f) = faults.get(next_fault).filter(|f| instant(f.at) <= now) {
            let (node, undo_it) = inject(&mut world, f, next_fault, args.seed);
            let id = node.map(|i| world.id(i));
            eprintln!(
                "[{:>6.1}s] fault: {}{}",
                now.millis() as f64 / 1000.0,
                f.spec,
                id.as_deref()
                    .map(|i| format!(" (node {i})"))
                    .unwrap_or_default()
            );
            pending.push(Pending {
                index: next_fault,
                node: id,
                start: now,
                end: now + core_duration(f.duration.unwrap_or(Duration::ZERO)),
                ended: f.duration.is_none(),
                reach: Vec::new(),
                healed: None,
                offline_peak: 0,
                undo: undo_it,
            });
            next_fault += 1;
            changed = true;
        }
        // Reachability changes with every fault action: measure against the latest.
        if changed {
            let reach = world.reachable();
            for p in pending.iter_mut().filter(|p| p.healed.is_none()) {
                p.reach.clone_from(&reach);
            }
        }
        if now >= next_progress {
            next_progress = now + core_duration(PROGRESS_EVERY);
            eprintln!(
                "[{:>6.1}s] online {}/{n}  depth {}",
                now.millis() as f64 / 1000.0,
                world.online_count(),
                super::histogram_text(&histogram(&world))
            );
        }
        let faults_done = next_fault == faults.len() && pending.iter().all(|p| p.healed.is_some());
        let done = match args.duration {
            Some(_) => now >= stop,
            None => (formation.is_some() && faults_done) || now >= stop,
        };
        if done {
            if formation.is_none() && args.duration.is_none() {
                eprintln!("formation timed out after {} s", args.formation_timeout);
            }
            if args.explain_offline {
                eprintln!("{}", world.starved().text());
            }
            for id in &args.node_log {
                match world.find(id) {
                    Some(idx) => {
                        eprintln!("log of node {id}:");
                        for line in world.logs(idx) {
                            eprintln!("  {line}");
                        }
                    }
                    None => {
                        eprintln!("--node-log {id}: no such node (IDs are printed in the tree)")
                    }
                }
            }
            break;
        }
    }
    let end = world.now();
    // Let what was published arrive before counting.
    world.set_publishing(false);
    let settle_until = world.within(core_duration(SETTLE));
    world.run_until(settle_until, |_| false);
    let _ = world.check_invariants();
    let report = report(&world, args, faults, &pending, formation, online_99, end);
    let wall = wall.elapsed();
    eprintln!(
        "simulated {:.1} s of {n} nodes in {:.2} s wall ({} events, {:.1} µs per simulated node-second)",
        end.millis() as f64 / 1000.0,
        wall.as_secs_f64(),
        world.steps(),
        wall.as_secs_f64() * 1e6 / (n as f64 * (end.millis() as f64 / 1000.0).max(0.001))
    );
    for v in world.violations().iter().take(10) {
        eprintln!("{v}");
    }
    super::finish(&report, args)?;
    Ok(if world.violation_count() > 0 {
        eprintln!(
            "{} invariant violation(s); replay with --seed {}",
            world.violation_count(),
            args.seed
        );
        ExitCode::from(3)
    } else if report.online == world.alive_count() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
