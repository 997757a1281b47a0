//! Downstream messages and the built-in topics of `../shared/spec/compat.md`: info
//! topics, `connect`, `fw`, `Ping`, `Restart`, broadcast and per-node delivery.

use core::fmt::Write as _;

use heapless::{String, Vec};

use super::{Action, Event, Level, Node, OtaExchange, PublishError, State};
use crate::link::{Frame, MAX_PAYLOAD};
use crate::time::Instant;
use crate::topic::{self, Incoming, Info, MsgType, Topic};

/// Payload of `info/available` while online.
pub const ONLINE: &str = "online";
/// Payload of `info/available` in the last will and on a child's behalf.
pub const OFFLINE: &str = "offline";
/// `info/reset_Reason` after a reconnection.
pub const LOST_CONNECTION: &str = "lost_Connection";

impl Node {
    /// A message from the broker (root only): `topic` is under our in prefix.
    pub fn handle_mqtt_message(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        self.tick(now);
        if self.state != State::Root {
            return;
        }
        if payload.len() > MAX_PAYLOAD || topic.len() > topic::MAX_TOPIC_LEN {
            self.counters.malformed += 1;
            self.log(
                Level::Warn,
                format_args!(
                    "broker message too large ({} bytes); dropped",
                    payload.len()
                ),
            );
            return;
        }
        self.on_downstream(now, topic, payload);
    }

    /// A message the broker delivered because it was retained (the retain flag of an
    /// incoming PUBLISH). Handled like [`Node::handle_mqtt_message`], except that a
    /// retained `Restart` is ignored: it would be replayed on every subscription and
    /// restart the mesh in a loop.
    pub fn handle_mqtt_retained(&mut self, now: Instant, topic: &str, payload: &[u8]) {
        let restart = matches!(
            topic::parse_incoming(&self.config.in_prefix, topic),
            Some(Incoming::Node { sub: "Restart", .. } | Incoming::Broadcast { sub: "Restart" })
        );
        if restart {
            self.counters.malformed += 1;
            self.log(
                Level::Warn,
                format_args!("ignoring retained {topic}: clear it at the broker"),
            );
            return;
        }
        self.handle_mqtt_message(now, topic, payload);
    }

    /// A message travelling down: act on it here, and pass it on to the children that
    /// may need it.
    pub(super) fn on_downstream(&mut self, _now: Instant, topic: &str, payload: &[u8]) {
        let Some(incoming) = topic::parse_incoming(&self.config.in_prefix, topic) else {
            self.log(Level::Debug, format_args!("ignoring message on {topic}"));
            return;
        };
        match incoming {
            Incoming::Node { id, .. } if id == self.id.as_str() => {}
            Incoming::Node { id, .. } => self.forward_to(id, topic, payload),
            Incoming::Ota { target, .. } | Incoming::Ota2 { target, .. }
                if target == self.id.as_str() => {}
            // OTA: only down the branches that may hold the target node or firmware.
            Incoming::Ota { target, .. } | Incoming::Ota2 { target, .. } => {
                self.forward_ota(target, topic, payload)
            }
            _ => self.forward_down(topic, payload),
        }
        match incoming {
            Incoming::Node { id, sub } if id == self.id.as_str() => self.on_command(sub, payload),
            Incoming::Broadcast { sub } => self.on_command(sub, payload),
            Incoming::Fw => self.publish_fw(),
            Incoming::Ota { target, command } => {
                self.on_ota(OtaExchange::Compat, target, command, payload)
            }
            Incoming::Ota2 { target, command } => {
                self.on_ota(OtaExchange::V2, target, command, payload)
            }
            Incoming::Node { .. } => {}
        }
    }

    /// Broadcast and `fw` traffic: to every child.
    fn forward_down(&mut self, topic: &str, payload: &[u8]) {
        let n = self.flood(&Frame::Deliver { topic, payload });
        self.counters.relayed_down += n as u64;
    }

    /// An OTA message: ours when its target is our firmware ID or our node ID
    /// (compat.md "OTA over MQTT"); nodes of another firmware ignore the exchange.
    fn on_ota(&mut self, exchange: OtaExchange, target: &str, command: &str, payload: &[u8]) {
        if !topic::ota_target_matches(target, self.config.firmware_id, self.id.as_str()) {
            return;
        }
        let mut cmd = String::new();
        let mut data = Vec::new();
        if cmd.push_str(command).is_err() || data.extend_from_slice(payload).is_err() {
            self.counters.malformed += 1;
            self.log(
                Level::Warn,
                format_args!("OTA command {command:?} too long; ignored"),
            );
            return;
        }
        self.push_event(Event::Ota {
            exchange,
            command: cmd,
            payload: data,
        });
    }

    fn on_command(&mut self, sub: &str, payload: &[u8]) {
        match sub {
            "Ping" => {
                let _ = self.publish("Ping", b"1", MsgType::None);
            }
            "Restart" => {
                self.log(Level::Info, format_args!("restart requested"));
                let _ = self.push_action(Action::Restart);
            }
            _ => {
                let mut subtopic = Topic::new();
                let mut data = Vec::new();
                if subtopic.push_str(sub).is_err() || data.extend_from_slice(payload).is_err() {
                    self.counters.malformed += 1;
                    return;
                }
                self.push_event(Event::Message {
                    subtopic,
                    payload: data,
                });
            }
        }
    }

    /// `ChipID:00A1B2 FirmwareID:1337 v0.1 IP:10.1.1.2 mesh`
    fn fw_line(&self) -> String<96> {
        let mut s = String::new();
        let ip = self.ip.unwrap_or(core::net::Ipv4Addr::UNSPECIFIED);
        // Cannot overflow: 6 + 8 + 31 + 15 + fixed text < 96.
        let _ = write!(
            s,
            "ChipID:{:06X} FirmwareID:{:04X} v{} IP:{}",
            self.chip_id, self.config.firmware_id, self.config.firmware_version, ip
        );
        if self.state == State::Mesh {
            let _ = s.push_str(" mesh");
        }
        s
    }

    fn publish_fw(&mut self) {
        let line = self.fw_line();
        let _ = self.publish("fw", line.as_bytes(), MsgType::None);
    }

    /// Publishes `info/available = online` again (see `go_online`).
    pub(super) fn reassert_online(&mut self) {
        if self.connected() {
            let _ = self.publish_state(Info::Available.subtopic(), ONLINE.as_bytes());
        }
    }

    /// A retained QoS 1 `info/*` value: through the outbox, or, when the application
    /// filled it, sent once untracked (as the original did) rather than not at all.
    fn publish_state(&mut self, subtopic: &str, value: &[u8]) -> Result<(), PublishError> {
        match self.publish(subtopic, value, MsgType::RetainedQos1) {
            Err(PublishError::OutboxFull) => {
                let topic = topic::out_node(&self.config.out_prefix, &self.id, subtopic)
                    .map_err(|_| PublishError::BadTopic)?;
                self.send_up(&topic, value, MsgType::RetainedQos1)
            }
            other => other,
        }
    }

    /// The retained `info/*` topics, and `connect` for nodes that joined through the mesh.
    pub(super) fn publish_info(&mut self, _now: Instant) {
        for info in Info::ALL {
            let mut value: String<32> = String::new();
            // Cannot overflow: the longest value is a MAC (17 bytes).
            let _ = match info {
                Info::Available => value.push_str(ONLINE).map_err(|_| core::fmt::Error),
                Info::ResetReason if self.ever_online => value
                    .push_str(LOST_CONNECTION)
                    .map_err(|_| core::fmt::Error),
                Info::ResetReason => value
                    .push_str(&self.reset_reason)
                    .map_err(|_| core::fmt::Error),
                Info::Mac => write!(value, "{}", self.sta_mac),
                Info::MacHostedAp => write!(value, "{}", self.ap_mac),
                Info::IpLocal => write!(
                    value,
                    "{}",
                    self.ip.unwrap_or(core::net::Ipv4Addr::UNSPECIFIED)
                ),
                Info::Rssi => write!(value, "{}", self.current.as_ref().map_or(0, |c| c.rssi)),
                Info::ConnectedTo => match &self.current {
                    Some(c) => write!(value, "{}", c.bssid),
                    None => Ok(()),
                },
            };
            if let Err(e) = self.publish_state(info.subtopic(), value.as_bytes()) {
                self.log(
                    Level::Warn,
                    format_args!("cannot publish {}: {e}", info.subtopic()),
                );
            }
        }
        if self.state == State::Mesh {
            let mut line: String<128> = String::new();
            let _ = line.push_str("Connected ");
            let _ = line.push_str(&self.fw_line());
            let topic = topic::connect(&self.config.out_prefix);
            let _ = self.send_up(&topic, line.as_bytes(), MsgType::None);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::borrow::ToOwned;

    use super::*;
    use crate::config::Config;
    use crate::identity::Mac;
    use crate::uplink::ScanEntry;

    const ROUTER: Mac = Mac([0x02, 0, 0, 0, 0, 1]);

    /// A node driven to `Root`, its queues drained.
    fn root() -> Node {
        let config = Config::builder()
            .firmware(0x1337, "0.1")
            .network("home", "home-password")
            .build()
            .unwrap();
        let mut node = Node::new(config, 0xA1B2, 1, "Power on", Instant::ZERO);
        let t = node.poll_timeout().unwrap();
        node.handle_timeout(t);
        let scan = [ScanEntry {
            bssid: ROUTER,
            ssid: "home".try_into().unwrap(),
            rssi: -50,
            channel: 6,
            hidden: false,
            depth: None,
            free: None,
        }];
        node.handle_scan_done(t, &scan);
        node.handle_associated(t, ROUTER, Ok(core::net::Ipv4Addr::new(10, 0, 0, 2)));
        node.handle_mqtt_connected(t);
        assert!(node.connected());
        while node.poll_action().is_some() {}
        node
    }

    fn restarts(node: &mut Node) -> usize {
        let mut n = 0;
        while let Some(a) = node.poll_action() {
            n += usize::from(a == Action::Restart);
        }
        n
    }

    #[test]
    fn retained_restart_is_ignored_live_restart_is_not() {
        let mut node = root();
        let now = Instant::from_millis(1000);
        node.handle_mqtt_retained(now, "esp8266-in/broadcast/Restart", b"");
        node.handle_mqtt_retained(now, "esp8266-in/00A1B2/Restart", b"");
        assert_eq!(restarts(&mut node), 0);
        assert_eq!(node.counters().malformed, 2);
        node.handle_mqtt_message(now, "esp8266-in/00A1B2/Restart", b"");
        assert_eq!(restarts(&mut node), 1);
    }

    #[test]
    fn ping_and_fw_answer_on_out_topics() {
        let mut node = root();
        let now = Instant::from_millis(1000);
        node.handle_mqtt_message(now, "esp8266-in/00A1B2/Ping", b"");
        node.handle_mqtt_message(now, "esp8266-in/fw/anything", b"");
        let mut published = std::vec::Vec::new();
        while let Some(a) = node.poll_action() {
            if let Action::Publish(p) = a {
                published.push((p.topic.as_str().to_owned(), p.payload.to_vec()));
            }
        }
        assert_eq!(
            published[0],
            ("esp8266-out/00A1B2/Ping".into(), b"1".to_vec())
        );
        assert_eq!(
            published[1],
            (
                "esp8266-out/00A1B2/fw".into(),
                b"ChipID:00A1B2 FirmwareID:1337 v0.1 IP:10.0.0.2".to_vec()
            )
        );
    }

    fn ota_events(node: &mut Node) -> std::vec::Vec<(OtaExchange, std::string::String, usize)> {
        core::iter::from_fn(|| node.poll_event())
            .filter_map(|e| match e {
                Event::Ota {
                    exchange,
                    command,
                    payload,
                } => Some((exchange, command.as_str().to_owned(), payload.len())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ota_messages_reach_the_application_only_when_targeted() {
        let mut node = root();
        let now = Instant::from_millis(1000);
        while node.poll_event().is_some() {}
        node.handle_mqtt_message(now, "esp8266-in/ota/1337/start", b"md5:x,len:1");
        node.handle_mqtt_message(now, "esp8266-in/ota/0x1337/0", b"AAAA");
        node.handle_mqtt_message(now, "esp8266-in/ota/00A1B2/check", b"");
        node.handle_mqtt_message(now, "esp8266-in/ota2/1337/c/5", &[0u8; 1024]);
        // Another firmware, another node: ignored.
        node.handle_mqtt_message(now, "esp8266-in/ota/1338/start", b"md5:x,len:1");
        node.handle_mqtt_message(now, "esp8266-in/ota2/00FFFF/manifest", b"m");
        let got = ota_events(&mut node);
        assert_eq!(
            got,
            [
                (OtaExchange::Compat, "start".to_owned(), 11),
                (OtaExchange::Compat, "0".to_owned(), 4),
                (OtaExchange::Compat, "check".to_owned(), 0),
                (OtaExchange::V2, "c/5".to_owned(), 1024),
            ]
        );
    }

    #[test]
    fn reannounces_online_after_the_stale_offline_window() {
        let mut node = root();
        let timing = node.config().timing;
        let due = Instant::ZERO + timing.mqtt_keepalive.mul_div(3, 2) + timing.keepalive_interval;
        let at = node.poll_timeout().unwrap();
        assert!(
            at <= due + crate::time::Duration::from_millis(200),
            "{at} > {due}"
        );
        node.handle_timeout(due + crate::time::Duration::from_millis(200));
        let again = core::iter::from_fn(|| node.poll_action()).any(|a| {
            matches!(a, Action::Publish(p) if p.topic.as_str() == "esp8266-out/00A1B2/info/available" && p.payload.as_slice() == b"online")
        });
        assert!(again);
    }
}
