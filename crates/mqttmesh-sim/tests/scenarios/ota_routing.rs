//! OTA traffic for one firmware ID travels only down the branches that run it
//! (`docs/PROTOCOL.md` "Subtree announcements"), every node of that firmware still gets
//! the whole update, and a mesh whose announcements never arrive (older nodes) still
//! floods it everywhere. The `#[ignore]`d test measures the saving in a 100-node mesh
//! (BENCHMARKS.md "OTA routing").

use std::collections::{BTreeMap, BTreeSet};

use mqttmesh_core::link::{code, Frame, HEADER_LEN};
use mqttmesh_core::node::{Event, OtaExchange};
use mqttmesh_sim::{Pos, Tapped, ROUTER};

use super::scale::random_world;
use super::*;

const FW_A: u32 = 0xA1;
const FW_B: u32 = 0xB2;

fn config_fw(firmware_id: u32) -> Config {
    builder()
        .firmware(firmware_id, "1.0")
        .build()
        .expect("valid test config")
}

/// The compat OTA topics of an upload of `chunks` chunks to firmware `fw`.
fn ota_topics(fw: u32, chunks: usize) -> Vec<String> {
    let mut topics = vec![format!("{IN}ota/{fw:X}/start")];
    topics.extend((0..chunks).map(|i| format!("{IN}ota/{fw:X}/{}", i * 768)));
    topics.push(format!("{IN}ota/{fw:X}/check"));
    topics
}

/// Publishes the upload at the broker, one message every 50 ms (a paced sender).
fn send_upload(w: &mut World, topics: &[String], payload: &[u8]) {
    for t in topics {
        w.broker_publish(t, payload, false);
        w.run_for(ms(50));
    }
    w.run_for(secs(2));
}

/// OTA commands node `idx` handed to its application.
fn ota_commands(w: &World, idx: usize) -> usize {
    w.events(idx)
        .iter()
        .filter(|(_, e)| {
            matches!(
                e,
                Event::Ota {
                    exchange: OtaExchange::Compat,
                    ..
                }
            )
        })
        .count()
}

/// The tapped `DELIVER` frames of an OTA topic: (receiver, bytes).
fn ota_delivers(w: &World) -> Vec<&Tapped> {
    w.tapped()
        .iter()
        .filter(|t| match Frame::decode(&t.bytes[HEADER_LEN..]) {
            Ok(Frame::Deliver { topic, .. }) => topic.starts_with(&format!("{IN}ota/")),
            _ => false,
        })
        .collect()
}

/// Node → its parent's index, from the tree.
fn parents(w: &World) -> BTreeMap<usize, usize> {
    w.tree()
        .into_iter()
        .filter_map(|(child, parent)| Some((w.find(&child)?, w.find(&parent)?)))
        .collect()
}

/// The firmware IDs in the subtree of each node.
fn subtree_firmware(w: &World, fw: &[u32]) -> Vec<BTreeSet<u32>> {
    let parents = parents(w);
    let mut sets: Vec<BTreeSet<u32>> = fw.iter().map(|f| BTreeSet::from([*f])).collect();
    for (i, &f) in fw.iter().enumerate() {
        let mut at = i;
        while let Some(&p) = parents.get(&at) {
            sets[p].insert(f);
            at = p;
        }
    }
    sets
}

/// 0 (A) ─┬─ 1 (A) ─┬─ 3 (A) ─┬─ 5 (A)
///        │         │         └─ 6 (B)
///        │         └─ 8 (B)
///        └─ 2 (B) ── 4 (B) ── 7 (B)
fn two_firmware_world(seed: u64) -> (World, Vec<u32>) {
    let edges = [
        (ROUTER, 0, -50),
        (0, 1, -55),
        (0, 2, -55),
        (1, 3, -55),
        (1, 8, -55),
        (3, 5, -55),
        (3, 6, -55),
        (2, 4, -55),
        (4, 7, -55),
    ];
    let fw = vec![FW_A, FW_A, FW_B, FW_A, FW_B, FW_A, FW_B, FW_B, FW_B];
    let mut w = World::graph(seed);
    for &(a, b, rssi) in &edges {
        w.set_rssi(a, b, Some(rssi));
    }
    for &f in &fw {
        w.add_node(config_fw(f));
    }
    (w, fw)
}

/// Every node running `FW_A` took all `n` OTA commands; no other node took any.
fn every_a_node_and_no_other_got(w: &World, fw: &[u32], n: usize) {
    for (i, &f) in fw.iter().enumerate() {
        let want = if f == FW_A { n } else { 0 };
        check(
            w,
            ota_commands(w, i) == want,
            &format!("node {i} (fw {f:X}) got {want} OTA commands"),
        );
    }
}

#[test]
fn ota_for_one_firmware_never_enters_a_branch_without_it() {
    let (mut w, fw) = two_firmware_world(41);
    wait_for(&mut w, 60, "all online", World::all_online);
    // Announcements are coalesced over 250 ms per level.
    w.run_for(secs(2));
    let sets = subtree_firmware(&w, &fw);
    let topics = ota_topics(FW_A, 20);
    w.tap_frames(true);
    send_upload(&mut w, &topics, b"QUJD");
    every_a_node_and_no_other_got(&w, &fw, topics.len());
    let delivers = ota_delivers(&w);
    for t in &delivers {
        check(
            &w,
            sets[t.to].contains(&FW_A),
            &format!("an OTA frame for {FW_A:X} went into B-only branch {}", t.to),
        );
    }
    // Every link into a subtree with A carried each message once.
    let with_a = (1..fw.len()).filter(|&i| sets[i].contains(&FW_A)).count();
    check(
        &w,
        delivers.len() == with_a * topics.len(),
        &format!(
            "{} OTA frames, expected {}",
            delivers.len(),
            with_a * topics.len()
        ),
    );
    let filtered: u64 = (0..w.len())
        .map(|i| w.node(i).counters().ota_filtered)
        .sum();
    // Left out at each message: 2 (below 0), 8 (below 1), 6 (below 3).
    check(
        &w,
        filtered == 3 * topics.len() as u64,
        &format!("{filtered} filtered"),
    );
}

#[test]
fn ota_floods_when_no_announcement_arrives() {
    // As in a mesh of nodes that predate the announcements: everything everywhere.
    let (mut w, fw) = two_firmware_world(41);
    w.drop_frame_type(Some(code::SUBTREE));
    wait_for(&mut w, 60, "all online", World::all_online);
    w.run_for(secs(2));
    let topics = ota_topics(FW_A, 5);
    w.tap_frames(true);
    send_upload(&mut w, &topics, b"QUJD");
    every_a_node_and_no_other_got(&w, &fw, topics.len());
    check(
        &w,
        ota_delivers(&w).len() == (fw.len() - 1) * topics.len(),
        "every link carried every OTA message",
    );
}

/// Frames and bytes of one run of the 100-node measurement.
#[derive(Debug, Default)]
struct Cost {
    ota_frames: usize,
    ota_bytes: usize,
    subtree_frames: usize,
    subtree_bytes: usize,
    a_nodes: usize,
    a_complete: usize,
}

/// Whether node `i` at `p` runs firmware A.
type IsA = fn(usize, Pos) -> bool;

fn measure(seed: u64, announce: bool, is_a: IsA, chunks: usize) -> Cost {
    // Positions first (the same for both firmware layouts), then the firmware.
    let layout = random_world(100, seed, &config());
    let positions: Vec<Pos> = (0..100)
        .map(|i| layout.position(i).expect("placed"))
        .collect();
    let mut w = World::new(seed);
    if !announce {
        w.drop_frame_type(Some(code::SUBTREE));
    }
    w.tap_frames(true);
    let fw: Vec<u32> = positions
        .iter()
        .enumerate()
        .map(|(i, p)| if is_a(i, *p) { FW_A } else { FW_B })
        .collect();
    for (i, p) in positions.iter().enumerate() {
        w.add_node_at(config_fw(fw[i]), *p);
    }
    wait_for(&mut w, 300, "100 nodes online", World::all_online);
    w.run_for(secs(5));
    let formation = w.tapped().to_vec();
    let mut cost = Cost::default();
    for t in &formation {
        if t.bytes.get(HEADER_LEN) == Some(&code::SUBTREE) {
            cost.subtree_frames += 1;
            cost.subtree_bytes += t.bytes.len();
        }
    }
    w.tap_frames(true);
    let topics = ota_topics(FW_A, chunks);
    let chunk = vec![b'Q'; 1024];
    send_upload(&mut w, &topics, &chunk);
    for t in ota_delivers(&w) {
        cost.ota_frames += 1;
        cost.ota_bytes += t.bytes.len();
    }
    cost.a_nodes = fw.iter().filter(|f| **f == FW_A).count();
    cost.a_complete = (0..100)
        .filter(|&i| fw[i] == FW_A && ota_commands(&w, i) == topics.len())
        .count();
    cost
}

#[test]
#[ignore = "measurement for BENCHMARKS.md: cargo test -p mqttmesh-sim --test scenarios ota_routing_saving -- --ignored --nocapture"]
fn ota_routing_saving_in_a_100_node_mesh() {
    let chunks = 100;
    let layouts: [(&str, IsA); 3] = [
        ("clustered 50/50 (A west of the router)", |_, p| p.x < 0.0),
        ("interleaved 50/50 (A on even chips)", |i, _| i % 2 == 0),
        ("10 % A (every tenth chip)", |i, _| i % 10 == 0),
    ];
    for seed in [5, 6, 7] {
        for (name, is_a) in layouts {
            let before = measure(seed, false, is_a, chunks);
            let after = measure(seed, true, is_a, chunks);
            println!(
                "seed {seed} | {name} | A nodes {} | before: {} frames, {} B | after: {} frames, {} B ({:.0} % fewer bytes) | announcements: {} frames, {} B | A nodes with every message: {} / {} before, {} / {} after",
                after.a_nodes,
                before.ota_frames,
                before.ota_bytes,
                after.ota_frames,
                after.ota_bytes,
                100.0 * (1.0 - after.ota_bytes as f64 / before.ota_bytes.max(1) as f64),
                after.subtree_frames,
                after.subtree_bytes,
                before.a_complete,
                before.a_nodes,
                after.a_complete,
                after.a_nodes,
            );
            assert_eq!(
                after.a_complete, after.a_nodes,
                "every A node got everything"
            );
        }
    }
}
