//! Diagnoses nodes that never join: `cargo run --release -p mqttmesh-sim --example stuck -- N`.
use mqttmesh_core::rand::Rand;
use mqttmesh_core::{Config, Duration};
use mqttmesh_sim::{Pos, World, ROUTER_PASSWORD, ROUTER_SSID};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000);
    let config = Config::builder()
        .network(ROUTER_SSID, ROUTER_PASSWORD)
        .build()
        .expect("valid");
    let mut rng = Rand::new(1);
    let mut unit = move || rng.below(1 << 20) as f64 / f64::from(1 << 20);
    let mut w = World::new(1);
    let mut placed: Vec<Pos> = Vec::new();
    for i in 0..n {
        let anchor = if i == 0 || unit() < 0.1 {
            Pos::default()
        } else {
            placed[(unit() * i as f64) as usize % i]
        };
        let a = unit() * std::f64::consts::TAU;
        let d = 8.0 + unit() * 18.0;
        let p = Pos::new(anchor.x + d * a.cos(), anchor.y + d * a.sin());
        placed.push(p);
        w.add_node_at(config.clone(), p);
    }
    w.run_for(Duration::from_secs(200));
    println!("online {}/{}", w.online_count(), n);
    let stuck: Vec<usize> = (0..n).filter(|&i| !w.node(i).connected()).take(5).collect();
    for i in stuck {
        let scan = w.scan(i);
        println!("#{i} {:?} sees {} entries", w.node(i).state(), scan.len());
        for e in &scan {
            let owner = (0..n).find(|&j| w.node(j).ap_mac() == e.bssid);
            let kids = owner.map(|j| (w.stations(j).len(), w.node(j).children().count()));
            println!(
                "   rssi {} depth {:?} owner {owner:?} stations/children {kids:?}",
                e.rssi, e.depth
            );
        }
        for l in w.logs(i).collect::<Vec<_>>().iter().rev().take(6) {
            println!("   | {l}");
        }
    }
}
