//! Many nodes: a 1,000-node mesh forms under the default radio model with every
//! invariant holding, and the same seed gives the same run.

use mqttmesh_core::rand::Rand;
use mqttmesh_sim::Pos;

use super::*;

/// `n` nodes at seeded random positions, each within range of an earlier node or (one
/// in ten) of the router at the origin — the host's `random` topology.
pub(crate) fn random_world(n: usize, seed: u64, config: &Config) -> World {
    let mut rng = Rand::new(seed);
    let mut unit = move || rng.below(1 << 20) as f64 / f64::from(1 << 20);
    let mut w = World::new(seed);
    let mut placed: Vec<Pos> = Vec::with_capacity(n);
    for i in 0..n {
        let anchor = if i == 0 || unit() < 0.1 {
            Pos::default()
        } else {
            placed[(unit() * i as f64) as usize % i]
        };
        let angle = unit() * std::f64::consts::TAU;
        let dist = 8.0 + unit() * 18.0;
        let p = Pos::new(anchor.x + dist * angle.cos(), anchor.y + dist * angle.sin());
        placed.push(p);
        w.add_node_at(config.clone(), p);
    }
    w
}

#[test]
fn thousand_nodes_form_with_every_invariant_holding() {
    let mut w = random_world(1000, 5, &config());
    wait_for(&mut w, 300, "1,000 nodes online", World::all_online);
    w.run_for(secs(5));
    check(&w, w.all_online(), "still all online");
    if let Err(e) = w.check_invariants() {
        panic!("{e}");
    }
    if let Err(e) = w.check_tree() {
        panic!("seed {}: {e}", w.seed());
    }
}

#[test]
fn same_seed_same_run() {
    let run = |seed| {
        let mut w = random_world(150, seed, &config());
        w.start_app(secs(2));
        w.run_for(secs(60));
        (
            w.steps(),
            w.tree(),
            w.message_stats(),
            w.publications().len(),
        )
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9).0, run(10).0);
}
