//! End-to-end QoS 1 at the root, through the node's public run-loop API
//! (`docs/PROTOCOL.md` "Outbox and acknowledgements", "Downstream routing"): tokens and
//! broker acknowledgements, acknowledgements routed down the origin's branch,
//! duplicates, the outbox's overflow policy, and re-sending on a new broker session.

mod common;

use std::net::Ipv4Addr;

use common::{join_request, key, proof, request};
use mqttmesh_core::identity::Mac;
use mqttmesh_core::link::{Frame, Transcript, HEADER_LEN, MAX_FRAME};
use mqttmesh_core::node::{Publish, PublishError};
use mqttmesh_core::uplink::ScanEntry;
use mqttmesh_core::{Action, Config, Duration, Instant, LinkId, MsgType, Node};

const ROUTER: Mac = Mac([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
const OUT: &str = "esp8266-out/";
const IN: &str = "esp8266-in/";

struct Root {
    node: Node,
    now: Instant,
    publishes: Vec<Publish>,
    sent: Vec<(LinkId, Vec<u8>)>,
    next_nonce: u8,
}

impl Root {
    fn new(outbox_len: u8) -> Root {
        let config = Config::builder()
            .network("home", "home-password")
            .outbox_len(outbox_len)
            .build()
            .expect("valid config");
        let mut r = Root {
            node: Node::new(config, 0xA1B2, 7, "Power on", Instant::ZERO),
            now: Instant::ZERO,
            publishes: Vec::new(),
            sent: Vec::new(),
            next_nonce: 0,
        };
        r.bring_up();
        r
    }

    /// Drives the node through scan, association and broker session to `Root`.
    fn bring_up(&mut self) {
        for _ in 0..50 {
            if self.node.connected() {
                self.drain();
                return;
            }
            let asked = self.drain();
            let now = self.now;
            if asked.contains(&"scan") {
                let scan = [ScanEntry {
                    bssid: ROUTER,
                    ssid: "home".try_into().unwrap(),
                    rssi: -50,
                    channel: 6,
                    hidden: false,
                    depth: None,
                    free: None,
                }];
                self.node.handle_scan_done(now, &scan);
            } else if asked.contains(&"associate") {
                self.node
                    .handle_associated(now, ROUTER, Ok(Ipv4Addr::new(10, 0, 0, 2)));
            } else if asked.contains(&"mqtt") {
                self.node.handle_mqtt_connected(now);
            } else {
                self.now = self.node.poll_timeout().expect("a deadline").max(now);
                self.node.handle_timeout(self.now);
            }
        }
        self.drain();
        assert!(self.node.connected(), "root did not come up");
    }

    /// Drains the polls; the kinds of action asked for.
    fn drain(&mut self) -> Vec<&'static str> {
        let mut buf = [0u8; MAX_FRAME];
        let mut asked = Vec::new();
        loop {
            let mut busy = false;
            while let Some((link, n)) = self.node.poll_transmit(&mut buf) {
                busy = true;
                self.sent.push((link, buf[..n].to_vec()));
            }
            while let Some(a) = self.node.poll_action() {
                busy = true;
                asked.push(match a {
                    Action::Scan => "scan",
                    Action::Associate { .. } => "associate",
                    Action::ConnectMqtt { .. } => "mqtt",
                    Action::Publish(p) => {
                        self.publishes.push(p);
                        "publish"
                    }
                    _ => "other",
                });
            }
            while self.node.poll_event().is_some() || self.node.poll_log().is_some() {
                busy = true;
            }
            if !busy {
                return asked;
            }
        }
    }

    /// Acknowledges every tracked publication so far.
    fn ack_all(&mut self) {
        self.drain();
        let tokens: Vec<u32> = self.publishes.drain(..).filter_map(|p| p.token).collect();
        for t in tokens {
            self.node.handle_mqtt_acked(self.now, t);
        }
        self.drain();
    }

    fn feed(&mut self, link: LinkId, frame: &Frame<'_>) {
        let mut buf = [0u8; MAX_FRAME];
        let n = frame.encode(&mut buf).expect("frame encodes");
        self.feed_bytes(link, &buf[..n]);
    }

    fn feed_bytes(&mut self, link: LinkId, bytes: &[u8]) {
        assert_eq!(
            self.node.handle_link_data(self.now, link, bytes),
            bytes.len()
        );
        self.drain();
    }

    /// Connects a child link and plays the authenticated join as `id`.
    fn join(&mut self, id: &str) -> LinkId {
        let link = self.node.handle_child_connected(self.now).expect("a slot");
        self.next_nonce += 1;
        let nonce = [self.next_nonce; 16];
        self.feed_bytes(link, &join_request(id, nonce));
        let challenge = self
            .sent
            .iter()
            .rev()
            .find(|(l, _)| *l == link)
            .map(|(_, b)| b.clone())
            .expect("a challenge");
        let Ok(Frame::Challenge {
            nonce: parent_nonce,
            parent_id,
            ..
        }) = Frame::decode(&challenge[HEADER_LEN..])
        else {
            panic!("expected a challenge for {id}");
        };
        let t = Transcript::new(&request(id, nonce), &parent_nonce, parent_id).expect("valid");
        self.feed_bytes(link, &proof(key().child_tag(&t)));
        link
    }

    /// Frames sent on `link` since the last call, decoded into owned descriptions.
    fn frames_on(&mut self, link: LinkId) -> Vec<String> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.sent.drain(..).partition(|(l, _)| *l == link);
        self.sent = rest;
        mine.iter()
            .map(|(_, b)| format!("{:?}", Frame::decode(&b[HEADER_LEN..]).expect("valid")))
            .collect()
    }
}

fn publish<'a>(origin: &'a str, id: u16, topic: &'a str) -> Frame<'a> {
    Frame::Publish {
        id,
        origin,
        msg_type: MsgType::Qos1,
        topic,
        payload: b"v",
    }
}

#[test]
fn root_routes_acks_to_the_origins_branch_and_publishes_duplicates_once() {
    let mut r = Root::new(mqttmesh_core::config::MAX_OUTBOX_LEN);
    r.ack_all();
    let a = r.join("AAAAAA");
    let b = r.join("BBBBBB");
    r.sent.clear();
    // G1 lives below A; B publishes for itself.
    let t_g = format!("{OUT}G1/x");
    let t_b = format!("{OUT}BBBBBB/x");
    r.feed(a, &publish("G1", 9, &t_g));
    r.feed(b, &publish("BBBBBB", 9, &t_b));
    r.feed(a, &publish("G1", 9, &t_g)); // in flight: dropped
    assert_eq!(r.publishes.len(), 2, "each message published once");
    assert!(r.publishes.iter().all(|p| p.token.is_some()));
    r.ack_all();
    assert_eq!(r.frames_on(a), [r#"Ack { origin: "G1", id: 9 }"#]);
    assert_eq!(r.frames_on(b), [r#"Ack { origin: "BBBBBB", id: 9 }"#]);
    // Acknowledged already: acknowledged again at once, not published.
    r.feed(a, &publish("G1", 9, &t_g));
    assert!(r.publishes.is_empty());
    assert_eq!(r.frames_on(a), [r#"Ack { origin: "G1", id: 9 }"#]);
    assert_eq!(r.node.counters().duplicates, 2);

    // Downstream: G1's messages go to A only; an unknown node's to both (counted).
    r.node
        .handle_mqtt_message(r.now, &format!("{IN}G1/cmd"), b"on");
    r.drain();
    assert_eq!(r.frames_on(a).len(), 1);
    assert!(r.frames_on(b).is_empty());
    r.node
        .handle_mqtt_message(r.now, &format!("{IN}NOBODY/cmd"), b"on");
    r.drain();
    assert_eq!((r.frames_on(a).len(), r.frames_on(b).len()), (1, 1));
    assert_eq!(r.node.counters().route_flooded, 1);

    // A's link closes: its branch is forgotten, G1 is unknown again.
    r.node.handle_link_closed(r.now, a);
    r.drain();
    r.sent.clear();
    r.node
        .handle_mqtt_message(r.now, &format!("{IN}G1/cmd"), b"on");
    r.drain();
    assert_eq!(r.frames_on(b).len(), 1, "flooded to the remaining child");
    assert_eq!(r.node.counters().route_flooded, 2);
}

#[test]
fn full_outbox_refuses_new_messages_and_keeps_the_old_ones() {
    let mut r = Root::new(3);
    // The info topics found the outbox full and went untracked (counted).
    assert!(r.node.counters().outbox_full > 0);
    r.ack_all();
    assert_eq!(r.node.outbox_len(), 0);
    for i in 0..3u8 {
        r.node.publish("n", &[i], MsgType::Qos1).expect("room");
    }
    let before = r.node.counters().outbox_full;
    assert_eq!(
        r.node.publish("n", b"x", MsgType::Qos1),
        Err(PublishError::OutboxFull)
    );
    assert_eq!(r.node.counters().outbox_full, before + 1);
    // QoS 0 never enters the outbox; a retained value replaces the one on its topic.
    assert_eq!(r.node.publish("n", b"q0", MsgType::Qos0), Ok(()));
    r.ack_all();
    assert_eq!(r.node.outbox_len(), 0);
    r.node.publish("s", b"1", MsgType::RetainedQos1).unwrap();
    r.node.publish("a", b"1", MsgType::Qos1).unwrap();
    r.node.publish("b", b"1", MsgType::Qos1).unwrap();
    assert_eq!(r.node.publish("s", b"2", MsgType::RetainedQos1), Ok(()));
    assert_eq!(r.node.outbox_len(), 3);
    assert_eq!(r.node.counters().outbox_superseded, 1);
}

#[test]
fn unacknowledged_messages_go_again_on_a_new_broker_session() {
    let mut r = Root::new(mqttmesh_core::config::MAX_OUTBOX_LEN);
    r.ack_all();
    r.node.publish("n", b"1", MsgType::Qos1).unwrap();
    r.node.publish("n", b"2", MsgType::Qos1).unwrap();
    r.drain();
    let first: Vec<Publish> = r.publishes.drain(..).collect();
    assert_eq!(first.len(), 2);
    // The session drops before the PUBACKs: they never come.
    r.node.handle_mqtt_disconnected(r.now);
    r.drain();
    r.node.handle_mqtt_acked(r.now, first[0].token.unwrap());
    assert_eq!(r.node.outbox_len(), 2, "a stale token acknowledges nothing");
    // Messages published while offline are kept too.
    r.node.publish("n", b"3", MsgType::Qos1).unwrap();
    assert_eq!(
        r.node.publish("n", b"q0", MsgType::Qos0),
        Err(PublishError::NotConnected)
    );
    r.now += Duration::from_millis(10);
    r.bring_up();
    r.drain();
    let again: Vec<&[u8]> = r
        .publishes
        .iter()
        .filter(|p| p.topic.ends_with("/n"))
        .map(|p| p.payload.as_slice())
        .collect();
    assert_eq!(again, [&b"1"[..], b"2", b"3"]);
    r.ack_all();
    assert_eq!(r.node.outbox_len(), 0);
    assert!(r.node.counters().acked >= 3);
}
