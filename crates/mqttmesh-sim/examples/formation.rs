//! Formation time and simulator cost of an N-node grid with the default radio model:
//! `cargo run --release -p mqttmesh-sim --example formation -- N [SEED]`.

use mqttmesh_core::{Config, Duration};
use mqttmesh_sim::{Pos, World, ROUTER_PASSWORD, ROUTER_SSID};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let config = Config::builder()
        .network(ROUTER_SSID, ROUTER_PASSWORD)
        .build()
        .expect("valid config");
    let mut world = World::new(seed);
    let side = (n as f64).sqrt().ceil() as usize;
    // The host's grid: 20 m apart, the router off one corner.
    for i in 0..n {
        let pos = Pos::new(
            (i % side) as f64 * 20.0 + 15.0,
            (i / side) as f64 * 20.0 + 15.0,
        );
        world.add_node_at(config.clone(), pos);
    }
    let started = std::time::Instant::now();
    let deadline = world.within(Duration::from_secs(3600));
    let mut last = 0;
    let formed = world.run_until(deadline, |w| {
        if w.now().millis() / 10_000 != last {
            last = w.now().millis() / 10_000;
            eprintln!("[{}] online {}/{}", w.now(), w.online_count(), w.len());
        }
        w.all_online()
    });
    let wall = started.elapsed();
    println!(
        "n={n} seed={seed} formed={formed} at={} events={} wall={:.2}s violations={}",
        world.now(),
        world.steps(),
        wall.as_secs_f64(),
        world.violation_count()
    );
}
