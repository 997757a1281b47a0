//! Delivery that loses nothing: end-to-end QoS 1 through faults, targeted downstream
//! routing, and children kept through a relay's brief uplink loss.

use std::collections::BTreeMap;

use mqttmesh_core::node::{Counters, PublishError, State};
use mqttmesh_core::MsgType;
use mqttmesh_sim::ROUTER;

use super::*;

/// Node timers with a grace period for relays that lose their uplink.
fn grace_config(grace: Duration) -> Config {
    builder()
        .timing(Timing {
            uplink_grace: grace,
            ..timing()
        })
        .build()
        .expect("valid test config")
}

/// A QoS 1 stream from one node: what its application handed over, and what reached
/// the broker (distinct and duplicate copies).
struct Stream {
    node: usize,
    topic: String,
    accepted: Vec<u32>,
    refused: usize,
    next: u32,
}

impl Stream {
    fn new(w: &World, node: usize) -> Stream {
        Stream {
            node,
            topic: out(w, node, "seq"),
            accepted: Vec::new(),
            refused: 0,
            next: 0,
        }
    }

    /// Publishes the next sequence number, then runs the world for `gap`.
    fn tick(&mut self, w: &mut World, gap: Duration) {
        let seq = self.next;
        self.next += 1;
        match w.publish(self.node, "seq", &seq.to_be_bytes(), MsgType::Qos1) {
            Ok(()) => self.accepted.push(seq),
            // The documented overflow policy: refused, counted, nothing dropped.
            Err(PublishError::OutboxFull) => self.refused += 1,
            Err(e) => panic!("publication {seq} refused: {e}"),
        }
        w.run_for(gap);
    }

    /// Copies of each sequence number the broker accepted.
    fn at_broker(&self, w: &World) -> BTreeMap<u32, usize> {
        let mut seen = BTreeMap::new();
        for p in w.published(&self.topic) {
            if let Ok(b) = <[u8; 4]>::try_from(p.payload.as_slice()) {
                *seen.entry(u32::from_be_bytes(b)).or_insert(0) += 1;
            }
        }
        seen
    }

    fn all_arrived(&self, w: &World) -> bool {
        let seen = self.at_broker(w);
        self.accepted.iter().all(|s| seen.contains_key(s))
    }

    /// Waits until every accepted message reached the broker and the origin's outbox
    /// is empty; returns the duplicates the broker saw.
    #[track_caller]
    fn settle(&self, w: &mut World, within: u64) -> usize {
        wait_for(
            w,
            within,
            "every accepted QoS 1 message at the broker",
            |w| self.all_arrived(w) && w.node(self.node).outbox_len() == 0,
        );
        check(
            w,
            w.node(self.node).counters().outbox_full >= self.refused as u64,
            "every refusal counted",
        );
        self.at_broker(w).values().map(|n| n - 1).sum()
    }
}

fn duplicates_suppressed(w: &World) -> u64 {
    (0..w.len()).map(|i| w.node(i).counters().duplicates).sum()
}

#[test]
fn qos1_stream_loses_nothing_when_its_relay_crashes() {
    // 0 and 4 are roots; 3 publishes through 2 and relay 1, and 2 can move to 4.
    let edges = [
        (ROUTER, 0, -50),
        (ROUTER, 4, -50),
        (0, 1, -55),
        (1, 2, -55),
        (2, 3, -55),
        (4, 2, -75),
    ];
    let mut w = World::from_edges(5, &config(), 31, &edges);
    hold_off(&mut w, &[4]);
    wait_for(&mut w, 60, "0..3 online", |w| {
        (0..4).all(|i| w.node(i).connected())
    });
    w.revive(4);
    wait_for(&mut w, 60, "all online", World::all_online);
    let tree = w.tree();
    check(&w, tree[&w.id(2)] == w.id(1), "2 hangs below relay 1");
    let mut stream = Stream::new(&w, 3);
    for _ in 0..10 {
        stream.tick(&mut w, ms(200));
    }
    w.crash(1);
    for _ in 0..40 {
        stream.tick(&mut w, ms(200));
    }
    wait_for(&mut w, 60, "the branch back through 4", |w| {
        w.node(3).connected() && w.tree()[&w.id(2)] == w.id(4)
    });
    for _ in 0..10 {
        stream.tick(&mut w, ms(200));
    }
    let duplicates = stream.settle(&mut w, 30);
    eprintln!(
        "relay crash: {} accepted, {} refused, {duplicates} duplicates at the broker, {} suppressed by roots",
        stream.accepted.len(),
        stream.refused,
        duplicates_suppressed(&w)
    );
}

#[test]
fn qos1_stream_loses_nothing_across_a_broker_restart() {
    let mut w = World::line(3, &config(), 32);
    wait_for(&mut w, 40, "all online", World::all_online);
    let mut stream = Stream::new(&w, 2);
    for i in 0..60 {
        if i == 20 {
            w.broker_restart();
        }
        stream.tick(&mut w, ms(50));
    }
    wait_for(&mut w, 30, "all online again", World::all_online);
    let duplicates = stream.settle(&mut w, 30);
    check(
        &w,
        w.node(0).counters().disconnects >= 1,
        "the root saw its session drop",
    );
    eprintln!(
        "broker restart: {} accepted, {} refused, {duplicates} duplicates at the broker, {} suppressed",
        stream.accepted.len(),
        stream.refused,
        duplicates_suppressed(&w)
    );
}

#[test]
fn qos1_stream_loses_nothing_when_the_publisher_changes_parent() {
    // 2 hears 1 well and 3 weakly; 1's link to 2 is cut mid-stream.
    let edges = [
        (ROUTER, 0, -50),
        (0, 1, -55),
        (0, 3, -55),
        (1, 2, -55),
        (3, 2, -75),
    ];
    let mut w = World::from_edges(4, &config(), 33, &edges);
    wait_for(&mut w, 60, "all online", World::all_online);
    let mut stream = Stream::new(&w, 2);
    for i in 0..60 {
        if i == 15 {
            w.set_rssi(1, 2, None);
            w.cut_link(2, 1);
        }
        stream.tick(&mut w, ms(100));
    }
    wait_for(&mut w, 30, "2 below 3", |w| {
        w.node(2).connected() && w.tree()[&w.id(2)] == w.id(3)
    });
    stream.settle(&mut w, 30);
}

#[test]
fn root_publishes_a_resent_message_once_and_acknowledges_every_copy() {
    // A probe joins the root as child "0C0C0C" and sends the same (origin, id) three
    // times, as a child would after losing an acknowledgement.
    let mut w = World::from_edges(1, &config(), 34, &[(ROUTER, 0, -50)]);
    wait_for(&mut w, 10, "root online", World::all_online);
    let probe = w.connect_probe(0);
    let key = join_key(mqttmesh_core::config::DEFAULT_MESH_PASSWORD);
    let frames = probe_join(&mut w, probe, "0C0C0C", &key);
    check(&w, frames.len() == 2, "a challenge, then the accept");
    let topic = format!("{OUT}0C0C0C/seq");
    let publish = encode(&Frame::Publish {
        id: 77,
        origin: "0C0C0C",
        msg_type: MsgType::Qos1,
        topic: &topic,
        payload: b"once",
    });
    // The second copy arrives while the first is in flight, the third after its ack.
    w.probe_send(probe, &publish);
    w.probe_send(probe, &publish);
    w.run_for(secs(1));
    w.probe_send(probe, &publish);
    w.run_for(secs(1));
    let acks = w
        .probe_frames(probe)
        .iter()
        .filter(|f| {
            Frame::decode(f)
                == Ok(Frame::Ack {
                    origin: "0C0C0C",
                    id: 77,
                })
        })
        .count();
    check(&w, w.published(&topic).len() == 1, "published once");
    check(
        &w,
        acks == 2,
        "the in-flight copy waits; the late copy is acked again",
    );
    check(
        &w,
        w.node(0).counters().duplicates == 2,
        "two duplicates counted",
    );
}

fn counters(w: &World) -> Vec<Counters> {
    (0..w.len()).map(|i| *w.node(i).counters()).collect()
}

#[test]
fn message_for_a_deep_node_travels_only_its_branch() {
    // 0 ─┬─ 1 ── 3 ── 5
    //    └─ 2 ── 4
    let edges = [
        (ROUTER, 0, -50),
        (0, 1, -55),
        (0, 2, -55),
        (1, 3, -55),
        (3, 5, -55),
        (2, 4, -55),
    ];
    let mut w = World::from_edges(6, &config(), 35, &edges);
    wait_for(&mut w, 60, "all online", World::all_online);
    // Routes are learned from the info topics every node publishes on joining.
    w.run_for(secs(1));
    let before = counters(&w);
    let target = w.id(5);
    w.broker_publish(&format!("{IN}{target}/hello"), b"deep", false);
    wait_for(&mut w, 2, "5 to get it", |w| {
        w.messages(5).iter().any(|m| m.subtopic == "hello")
    });
    w.run_for(ms(200));
    let after = counters(&w);
    let down = |i: usize| after[i].relayed_down - before[i].relayed_down;
    let flooded = |i: usize| after[i].route_flooded - before[i].route_flooded;
    check(&w, (0..6).all(|i| flooded(i) == 0), "no relay flooded");
    check(
        &w,
        down(0) == 1 && down(1) == 1 && down(3) == 1,
        "one copy down each hop of 5's branch",
    );
    check(&w, down(2) == 0, "the other branch saw no Deliver");
    check(
        &w,
        w.messages(4).is_empty() && w.messages(2).is_empty(),
        "nothing for 2 and 4",
    );

    // Broadcast and unknown destinations flood.
    let before = counters(&w);
    w.broker_publish(&format!("{IN}broadcast/all"), b"x", false);
    w.broker_publish(&format!("{IN}NOSUCHNODE/x"), b"x", false);
    w.run_for(secs(1));
    check(
        &w,
        (0..6).all(|i| w.messages(i).iter().any(|m| m.subtopic == "all")),
        "broadcast reached every node",
    );
    let after = counters(&w);
    check(
        &w,
        after[0].route_flooded - before[0].route_flooded == 1,
        "unknown destination flooded (and counted) at the root",
    );
}

#[test]
fn children_survive_a_brief_relay_uplink_loss_without_rejoining() {
    // A=0 and B=1 are roots; relay M=2 hears A well and B weakly; leaf L=3 hears only M.
    let edges = [
        (ROUTER, 0, -50),
        (ROUTER, 1, -50),
        (0, 2, -55),
        (1, 2, -75),
        (2, 3, -55),
    ];
    let (a, b, m, l) = (0, 1, 2, 3);
    let mut w = World::from_edges(4, &grace_config(secs(8)), 36, &edges);
    hold_off(&mut w, &[m, l]);
    wait_for(&mut w, 10, "roots online", |w| {
        w.node(a).connected() && w.node(b).connected()
    });
    w.revive(m);
    wait_for(&mut w, 10, "M online", |w| w.node(m).connected());
    w.revive(l);
    wait_for(&mut w, 10, "L online", |w| w.node(l).connected());
    check(&w, w.tree()[&w.id(m)] == w.id(a), "A → M → L");
    let mut stream = Stream::new(&w, l);
    stream.tick(&mut w, ms(100));

    w.kill(a);
    wait_for(&mut w, 2, "L held", |w| w.node(l).state() == State::Held);
    let mut linked = true;
    wait_for(&mut w, 20, "M back below B and L resumed", |w| {
        linked &= w.child_link(m, l).is_some();
        w.node(l).connected() && w.node(m).connected()
    });
    for _ in 0..5 {
        stream.tick(&mut w, ms(100));
    }
    check(&w, linked, "L's link to M never closed");
    check(&w, w.tree()[&w.id(m)] == w.id(b), "M moved to B");
    check(&w, w.node(l).depth() == Some(3), "L at depth 3 below M");
    check(&w, w.node(m).counters().holds == 1, "one hold counted");
    check(&w, w.check_tree().is_ok(), "well-formed tree");
    stream.settle(&mut w, 20);
}

#[test]
fn children_rejoin_elsewhere_when_the_relay_does_not_recover() {
    // M=1 hangs below the only root A=0 and has no alternative; L=2 also hears B=3.
    let edges = [
        (ROUTER, 0, -50),
        (ROUTER, 3, -50),
        (0, 1, -55),
        (1, 2, -55),
        (3, 2, -80),
    ];
    let (a, m, l, b) = (0, 1, 2, 3);
    let mut w = World::from_edges(4, &grace_config(secs(3)), 37, &edges);
    hold_off(&mut w, &[l]);
    wait_for(&mut w, 20, "A and M online", |w| w.node(m).connected());
    w.revive(l);
    wait_for(&mut w, 10, "L online", |w| w.node(l).connected());
    check(&w, w.tree()[&w.id(l)] == w.id(m), "A → M → L");
    w.kill(a);
    wait_for(&mut w, 2, "L held", |w| w.node(l).state() == State::Held);
    wait_for(&mut w, 30, "L below B", |w| {
        w.node(l).connected() && w.tree()[&w.id(l)] == w.id(b)
    });
}

#[test]
fn a_root_keeps_its_subtree_through_a_broker_restart() {
    let mut w = World::line(3, &grace_config(secs(8)), 38);
    wait_for(&mut w, 40, "all online", World::all_online);
    let mut stream = Stream::new(&w, 2);
    for _ in 0..5 {
        stream.tick(&mut w, ms(100));
    }
    w.broker_restart();
    wait_for(&mut w, 2, "the subtree held", |w| {
        w.node(1).state() == State::Held && w.node(2).state() == State::Held
    });
    let mut linked = true;
    wait_for(&mut w, 20, "root back and the subtree resumed", |w| {
        linked &= w.child_link(0, 1).is_some() && w.child_link(1, 2).is_some();
        w.all_online()
    });
    check(&w, linked, "no link of the subtree closed");
    check(&w, w.node(2).depth() == Some(3), "same shape");
    for _ in 0..5 {
        stream.tick(&mut w, ms(100));
    }
    stream.settle(&mut w, 20);
}
