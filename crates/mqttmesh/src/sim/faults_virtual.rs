//! Faults on the virtual-time `World`: carrying out a `--fault`, undoing it at its end,
//! and judging the heal on real paths to the broker.

use mqttmesh_core::node::Parent;
use mqttmesh_core::Instant;
use mqttmesh_sim::{Pos, SimTiming, World};

use super::faults::{pick, Fault, Kind, Target};
use super::virtual_time::core_duration;

/// A fault under way or healing.
pub(super) struct Pending {
    pub(super) index: usize,
    pub(super) node: Option<String>,
    pub(super) start: Instant,
    pub(super) end: Instant,
    pub(super) ended: bool,
    pub(super) reach: Vec<bool>,
    pub(super) healed: Option<Instant>,
    pub(super) offline_peak: usize,
    pub(super) undo: Undo,
}

pub(super) enum Undo {
    Nothing,
    Revive(usize),
    RouterUp,
    BrokerStart,
    Timing(SimTiming),
}

/// Resolves a target; `relay` is a node with children (and, with `below_root`, a node
/// parent: a link to cut).
fn target(world: &World, t: Target, seed: u64, salt: u64, below_root: bool) -> Option<usize> {
    match t {
        Target::Index(i) => Some(i),
        Target::Relay => {
            let relays: Vec<usize> = (0..world.len())
                .filter(|&i| world.is_alive(i) && world.node(i).connected())
                .filter(|&i| world.node(i).children().next().is_some())
                .filter(|&i| !below_root || matches!(world.node(i).parent(), Parent::Node { .. }))
                .collect();
            (!relays.is_empty()).then(|| relays[pick(seed, salt, relays.len())])
        }
    }
}

/// Carries out fault `index`; what undoes it at its end.
pub(super) fn inject(
    world: &mut World,
    fault: &Fault,
    index: usize,
    seed: u64,
) -> (Option<usize>, Undo) {
    let salt = index as u64 + 1;
    match fault.kind {
        Kind::Crash(t) => match target(world, t, seed, salt, false) {
            Some(i) => {
                world.crash(i);
                let undo = if fault.duration.is_some() {
                    Undo::Revive(i)
                } else {
                    Undo::Nothing
                };
                (Some(i), undo)
            }
            None => (None, Undo::Nothing),
        },
        Kind::Restart(t) => {
            let i = target(world, t, seed, salt, false);
            if let Some(i) = i {
                world.restart(i, "Restart");
            }
            (i, Undo::Nothing)
        }
        Kind::Cut(t) => {
            let i = target(world, t, seed, salt, true);
            if let Some(i) = i {
                if let Parent::Node { id, .. } = world.node(i).parent() {
                    if let Some(p) = world.find(id.as_str()) {
                        world.cut_link(p, i);
                    }
                }
            }
            (i, Undo::Nothing)
        }
        Kind::RouterDown => {
            world.router_down();
            (None, Undo::RouterUp)
        }
        Kind::BrokerRestart => {
            world.broker_stop(false);
            (None, Undo::BrokerStart)
        }
        Kind::Loss(p) => {
            let old = world.timing();
            // Cannot truncate: p is below 1.
            let ppm = (p * 1_000_000.0).round() as u32;
            world.set_timing(SimTiming {
                loss_ppm: ppm,
                ..old
            });
            (None, undo_timing(fault, old))
        }
        Kind::Latency(d) => {
            let old = world.timing();
            world.set_timing(SimTiming {
                hop_latency: core_duration(d),
                ..old
            });
            (None, undo_timing(fault, old))
        }
        Kind::Move(t, x, y) => {
            let i = target(world, t, seed, salt, false);
            if let Some(i) = i {
                world.move_node(i, Pos::new(x, y));
            }
            (i, Undo::Nothing)
        }
    }
}

fn undo_timing(fault: &Fault, old: SimTiming) -> Undo {
    if fault.duration.is_some() {
        Undo::Timing(old)
    } else {
        Undo::Nothing
    }
}

pub(super) fn undo(world: &mut World, undo: &Undo) {
    match undo {
        Undo::Nothing => {}
        Undo::Revive(i) => world.revive(*i),
        Undo::RouterUp => world.router_up(),
        Undo::BrokerStart => world.broker_start(),
        Undo::Timing(t) => world.set_timing(*t),
    }
}

/// Updates the offline peaks and marks faults healed: ended, and every node that can
/// reach the router has a real path to the broker.
pub(super) fn check_heal(world: &World, pending: &mut [Pending], now: Instant) {
    if pending.iter().all(|p| p.healed.is_some()) {
        return;
    }
    let path = world.real_paths();
    let up = path.iter().filter(|p| **p).count();
    for p in pending.iter_mut().filter(|p| p.healed.is_none()) {
        let all = p.reach.iter().zip(&path).all(|(r, p)| !r || *p);
        p.offline_peak = p.offline_peak.max(world.len() - up);
        if p.ended && all {
            p.healed = Some(now);
        }
    }
}
