//! The MQTT topic scheme of `../shared/spec/compat.md`: building every topic a node
//! publishes and parsing every topic a node reacts to, in bounded buffers.
//!
//! No-panic contract: [`parse_incoming`] and [`parse_firmware_id`] accept any string
//! (they only ever slice at ASCII separators) and return `None` for anything that is not
//! one of the shapes of compat.md; builders return [`TopicError`] instead of truncating.

use core::fmt;

use crate::identity::NodeId;

/// Longest topic a node builds or accepts.
pub const MAX_TOPIC_LEN: usize = 128;
/// Longest topic prefix (compat.md "Defaults").
pub const MAX_PREFIX_LEN: usize = 16;

/// A topic in a bounded buffer.
pub type Topic = heapless::String<MAX_TOPIC_LEN>;

/// Why a topic could not be built or parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// Longer than [`MAX_TOPIC_LEN`].
    TooLong,
    /// A subtopic contains `+`, `#` or NUL, or is empty where one is required.
    Invalid,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::TooLong => "topic longer than 128 bytes",
            TopicError::Invalid => "subtopic is empty or contains '+', '#' or NUL",
        })
    }
}

impl core::error::Error for TopicError {}

/// How a message is published: QoS and retain flag (compat.md "Message types").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MsgType {
    /// The original's "none": QoS 0, not retained.
    #[default]
    None,
    /// QoS 0.
    Qos0,
    /// QoS 1.
    Qos1,
    /// QoS 2.
    Qos2,
    /// QoS 0, retained.
    RetainedQos0,
    /// QoS 1, retained.
    RetainedQos1,
    /// QoS 2, retained.
    RetainedQos2,
}

impl MsgType {
    /// MQTT QoS level (0..=2).
    pub fn qos(self) -> u8 {
        match self {
            MsgType::None | MsgType::Qos0 | MsgType::RetainedQos0 => 0,
            MsgType::Qos1 | MsgType::RetainedQos1 => 1,
            MsgType::Qos2 | MsgType::RetainedQos2 => 2,
        }
    }
    /// Whether the broker retains it.
    pub fn retain(self) -> bool {
        matches!(
            self,
            MsgType::RetainedQos0 | MsgType::RetainedQos1 | MsgType::RetainedQos2
        )
    }
    /// Wire code 0..=6 in the order above.
    pub fn to_u8(self) -> u8 {
        match self {
            MsgType::None => 0,
            MsgType::Qos0 => 1,
            MsgType::Qos1 => 2,
            MsgType::Qos2 => 3,
            MsgType::RetainedQos0 => 4,
            MsgType::RetainedQos1 => 5,
            MsgType::RetainedQos2 => 6,
        }
    }
    /// From the wire code; `None` for 7 and above.
    pub fn from_u8(code: u8) -> Option<MsgType> {
        Some(match code {
            0 => MsgType::None,
            1 => MsgType::Qos0,
            2 => MsgType::Qos1,
            3 => MsgType::Qos2,
            4 => MsgType::RetainedQos0,
            5 => MsgType::RetainedQos1,
            6 => MsgType::RetainedQos2,
            _ => return None,
        })
    }
    /// From QoS and retain flag (QoS above 2 is `None`). QoS 0 without retain is
    /// [`MsgType::Qos0`], never [`MsgType::None`].
    pub fn from_qos(qos: u8, retain: bool) -> Option<MsgType> {
        Some(match (qos, retain) {
            (0, false) => MsgType::Qos0,
            (1, false) => MsgType::Qos1,
            (2, false) => MsgType::Qos2,
            (0, true) => MsgType::RetainedQos0,
            (1, true) => MsgType::RetainedQos1,
            (2, true) => MsgType::RetainedQos2,
            _ => return None,
        })
    }
}

/// The retained `info/*` topics (compat.md "Topics a node publishes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Info {
    /// `info/available`
    Available,
    /// `info/reset_Reason`
    ResetReason,
    /// `info/MAC`
    Mac,
    /// `info/MAC_hosted_AP`
    MacHostedAp,
    /// `info/IP_local`
    IpLocal,
    /// `info/RSSI`
    Rssi,
    /// `info/connectedTo`
    ConnectedTo,
}

impl Info {
    /// All of them, in publication order.
    pub const ALL: [Info; 7] = [
        Info::Available,
        Info::ResetReason,
        Info::Mac,
        Info::MacHostedAp,
        Info::IpLocal,
        Info::Rssi,
        Info::ConnectedTo,
    ];
    /// The subtopic, e.g. `info/reset_Reason`.
    pub fn subtopic(self) -> &'static str {
        match self {
            Info::Available => "info/available",
            Info::ResetReason => "info/reset_Reason",
            Info::Mac => "info/MAC",
            Info::MacHostedAp => "info/MAC_hosted_AP",
            Info::IpLocal => "info/IP_local",
            Info::Rssi => "info/RSSI",
            Info::ConnectedTo => "info/connectedTo",
        }
    }
}

// First topic levels with a meaning of their own under the in prefix; they are never
// read as a node ID.
const BROADCAST: &str = "broadcast";
const FW: &str = "fw";
const OTA: &str = "ota";
const OTA2: &str = "ota2";

/// `<out><id>/<sub>` (also used for `info/*`, `fw`, `Ping`, `ota/...`).
pub fn out_node(out_prefix: &str, id: &NodeId, sub: &str) -> Result<Topic, TopicError> {
    check_subtopic(sub)?;
    concat(&[out_prefix, id.as_str(), "/", sub])
}

/// `<in><id>/<sub>`: the topic `publish_node` uses.
///
/// `id` must be one non-empty topic level (no `/`, `+`, `#` or NUL), else
/// [`TopicError::Invalid`]. `broadcast` is accepted and addresses every node.
pub fn in_node(in_prefix: &str, id: &str, sub: &str) -> Result<Topic, TopicError> {
    if id.is_empty() || id.bytes().any(|c| matches!(c, b'/' | b'+' | b'#' | 0)) {
        return Err(TopicError::Invalid);
    }
    check_subtopic(sub)?;
    concat(&[in_prefix, id, "/", sub])
}

/// `<out>connect`.
///
/// Infallible for any prefix a validated [`crate::Config`] holds (at most
/// [`MAX_PREFIX_LEN`] bytes); an absurdly long prefix is cut to fit.
pub fn connect(out_prefix: &str) -> Topic {
    concat_truncated(out_prefix, "connect")
}

/// The filter a node holding the broker session subscribes to: `<in>#`.
///
/// Infallible for any prefix a validated [`crate::Config`] holds (at most
/// [`MAX_PREFIX_LEN`] bytes); an absurdly long prefix is cut to fit.
pub fn subscription(in_prefix: &str) -> Topic {
    concat_truncated(in_prefix, "#")
}

/// Checks an application subtopic: non-empty, no `+`, `#` or NUL, at most
/// [`MAX_TOPIC_LEN`] bytes.
pub fn check_subtopic(sub: &str) -> Result<(), TopicError> {
    if sub.is_empty() || sub.bytes().any(|c| matches!(c, b'+' | b'#' | 0)) {
        return Err(TopicError::Invalid);
    }
    if sub.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    Ok(())
}

/// The parts one after the other, or [`TopicError::TooLong`].
fn concat(parts: &[&str]) -> Result<Topic, TopicError> {
    let mut topic = Topic::new();
    for part in parts {
        topic.push_str(part).map_err(|_| TopicError::TooLong)?;
    }
    Ok(topic)
}

/// `head` then `tail`, with `head` shortened (at a character boundary) so `tail` fits.
fn concat_truncated(head: &str, tail: &str) -> Topic {
    let mut end = head.len().min(MAX_TOPIC_LEN.saturating_sub(tail.len()));
    while !head.is_char_boundary(end) {
        end -= 1;
    }
    let mut topic = Topic::new();
    // Cannot fail: `end + tail.len()` is at most MAX_TOPIC_LEN by construction, and every
    // caller passes a short constant `tail`.
    let _ = topic.push_str(&head[..end]);
    let _ = topic.push_str(tail);
    topic
}

/// A topic under the in prefix, classified (compat.md "Topics a node reacts to").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// `<in><id>/<sub>`: for node `id` only.
    Node {
        /// Target node ID.
        id: &'a str,
        /// What follows `<id>/`.
        sub: &'a str,
    },
    /// `<in>broadcast/<sub>`: for every node.
    Broadcast {
        /// What follows `broadcast/`.
        sub: &'a str,
    },
    /// `<in>fw/<anything>`: every node answers with its firmware.
    Fw,
    /// `<in>ota/<target>/<command>`.
    Ota {
        /// A firmware ID in hex (`1337`, `0x1337`) or a node ID.
        target: &'a str,
        /// `start`, `check`, `flash` or a decimal offset.
        command: &'a str,
    },
    /// `<in>ota2/<target>/<command>`: our OTA exchange (`docs/PROTOCOL.md` "OTA v2").
    Ota2 {
        /// A firmware ID in hex (`1337`, `0x1337`) or a node ID.
        target: &'a str,
        /// Everything after the target, e.g. `manifest` or `c/17`.
        command: &'a str,
    },
}

/// Classifies `topic`; `None` when it is not under `in_prefix` or has no valid shape
/// (e.g. `<in>` alone, `<in>ID` without `/sub`, an empty subtopic).
///
/// Checked in this order: `<in>fw` or `<in>fw/...` is [`Incoming::Fw`];
/// `<in>broadcast/<sub>` is [`Incoming::Broadcast`]; `<in>ota/<target>/<command>` is
/// [`Incoming::Ota`] (the command is everything after the second `/`); any other
/// `<in>ota2/<target>/<command>` is [`Incoming::Ota2`];
/// `<in><id>/<sub>` is [`Incoming::Node`]. The first levels `fw`, `broadcast`, `ota` and
/// `ota2` are reserved: a malformed `<in>ota/x` or `<in>broadcast/` is `None`, never a message
/// for a node called `ota` or `broadcast`. Topics longer than [`MAX_TOPIC_LEN`] are `None`.
pub fn parse_incoming<'a>(in_prefix: &str, topic: &'a str) -> Option<Incoming<'a>> {
    if topic.len() > MAX_TOPIC_LEN {
        return None;
    }
    let rest = topic.strip_prefix(in_prefix)?;
    let (first, tail) = match rest.split_once('/') {
        Some((first, tail)) => (first, Some(tail)),
        None => (rest, None),
    };
    match (first, tail) {
        (FW, _) => Some(Incoming::Fw),
        (BROADCAST, Some(sub)) if !sub.is_empty() => Some(Incoming::Broadcast { sub }),
        (OTA, Some(tail)) => {
            let (target, command) = tail.split_once('/')?;
            (!target.is_empty() && !command.is_empty()).then_some(Incoming::Ota { target, command })
        }
        (OTA2, Some(tail)) => {
            let (target, command) = tail.split_once('/')?;
            (!target.is_empty() && !command.is_empty())
                .then_some(Incoming::Ota2 { target, command })
        }
        (BROADCAST | OTA | OTA2, _) => None,
        (id, Some(sub)) if !id.is_empty() && !sub.is_empty() => Some(Incoming::Node { id, sub }),
        _ => None,
    }
}

/// Whether an OTA `target` (compat.md: a firmware ID in hex, with or without `0x`, or
/// one node's ID) addresses a node running `firmware_id` with ID `node_id`.
pub fn ota_target_matches(target: &str, firmware_id: u32, node_id: &str) -> bool {
    target == node_id || parse_firmware_id(target) == Some(firmware_id)
}

/// A firmware ID in hex, with or without `0x`/`0X` (1..=8 hex digits).
pub fn parse_firmware_id(s: &str) -> Option<u32> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    // Checked by hand: `from_str_radix` would also take a leading `+`.
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ota2_has_its_own_subtree() {
        assert_eq!(
            parse_incoming("in/", "in/ota2/1337/c/17"),
            Some(Incoming::Ota2 {
                target: "1337",
                command: "c/17"
            })
        );
        assert_eq!(parse_incoming("in/", "in/ota2/1337"), None);
        assert!(ota_target_matches("0x1337", 0x1337, "00A1B2"));
        assert!(ota_target_matches("00A1B2", 0x1337, "00A1B2"));
        assert!(!ota_target_matches("1338", 0x1337, "00A1B2"));
    }

    extern crate std;

    use super::*;

    const IN: &str = "esp8266-in/";
    const OUT: &str = "esp8266-out/";

    fn id() -> NodeId {
        NodeId::from_chip_id(0x00A1B2)
    }

    #[test]
    fn msg_type_codes_and_flags() {
        let table = [
            (MsgType::None, 0, 0, false),
            (MsgType::Qos0, 1, 0, false),
            (MsgType::Qos1, 2, 1, false),
            (MsgType::Qos2, 3, 2, false),
            (MsgType::RetainedQos0, 4, 0, true),
            (MsgType::RetainedQos1, 5, 1, true),
            (MsgType::RetainedQos2, 6, 2, true),
        ];
        for (t, code, qos, retain) in table {
            assert_eq!(t.to_u8(), code);
            assert_eq!(MsgType::from_u8(code), Some(t));
            assert_eq!((t.qos(), t.retain()), (qos, retain), "{t:?}");
            if t != MsgType::None {
                assert_eq!(MsgType::from_qos(qos, retain), Some(t));
            }
        }
        assert_eq!(MsgType::from_u8(7), None);
        assert_eq!(MsgType::from_u8(255), None);
        assert_eq!(MsgType::from_qos(0, false), Some(MsgType::Qos0));
        assert_eq!(MsgType::from_qos(3, false), None);
        assert_eq!(MsgType::default(), MsgType::None);
    }

    #[test]
    fn info_subtopics_are_the_originals() {
        let subs = Info::ALL.map(Info::subtopic);
        assert_eq!(
            subs,
            [
                "info/available",
                "info/reset_Reason",
                "info/MAC",
                "info/MAC_hosted_AP",
                "info/IP_local",
                "info/RSSI",
                "info/connectedTo",
            ]
        );
        let t = out_node(OUT, &id(), Info::ResetReason.subtopic()).unwrap();
        assert_eq!(t.as_str(), "esp8266-out/00A1B2/info/reset_Reason");
    }

    #[test]
    fn builds_fixed_topics() {
        assert_eq!(connect(OUT).as_str(), "esp8266-out/connect");
        assert_eq!(subscription(IN).as_str(), "esp8266-in/#");
        assert_eq!(
            out_node(OUT, &id(), "ota/md5/300").unwrap().as_str(),
            "esp8266-out/00A1B2/ota/md5/300"
        );
        assert_eq!(
            in_node(IN, "00A1B2", "led/set").unwrap().as_str(),
            "esp8266-in/00A1B2/led/set"
        );
    }

    #[test]
    fn builders_reject_bad_subtopics_and_ids() {
        for bad in ["", "a/+", "#", "a\0b"] {
            assert_eq!(
                out_node(OUT, &id(), bad),
                Err(TopicError::Invalid),
                "{bad:?}"
            );
            assert_eq!(in_node(IN, "00A1B2", bad), Err(TopicError::Invalid));
        }
        for bad_id in ["", "a/b", "+", "#"] {
            assert_eq!(in_node(IN, bad_id, "x"), Err(TopicError::Invalid));
        }
    }

    #[test]
    fn builders_reject_topics_past_128_bytes() {
        // 12 (prefix) + 6 (id) + 1 + 109 = 128 fits exactly; one more does not.
        let sub = "s".repeat(109);
        assert_eq!(out_node(OUT, &id(), &sub).unwrap().len(), MAX_TOPIC_LEN);
        let sub = "s".repeat(110);
        assert_eq!(out_node(OUT, &id(), &sub), Err(TopicError::TooLong));
        assert_eq!(check_subtopic(&"s".repeat(129)), Err(TopicError::TooLong));
        assert_eq!(check_subtopic(&"s".repeat(128)), Ok(()));
    }

    #[test]
    fn long_prefix_is_cut_not_panicked_on() {
        let long = "p".repeat(200);
        let t = connect(&long);
        assert_eq!(t.len(), MAX_TOPIC_LEN);
        assert!(t.ends_with("connect"));
        assert!(subscription(&long).ends_with('#'));
    }

    #[test]
    fn parses_node_and_broadcast() {
        assert_eq!(
            parse_incoming(IN, "esp8266-in/00A1B2/led/set"),
            Some(Incoming::Node {
                id: "00A1B2",
                sub: "led/set"
            })
        );
        assert_eq!(
            parse_incoming(IN, "esp8266-in/00A1B2/Ping"),
            Some(Incoming::Node {
                id: "00A1B2",
                sub: "Ping"
            })
        );
        assert_eq!(
            parse_incoming(IN, "esp8266-in/broadcast/Restart"),
            Some(Incoming::Broadcast { sub: "Restart" })
        );
    }

    #[test]
    fn parses_fw_and_ota() {
        assert_eq!(parse_incoming(IN, "esp8266-in/fw"), Some(Incoming::Fw));
        assert_eq!(parse_incoming(IN, "esp8266-in/fw/"), Some(Incoming::Fw));
        assert_eq!(
            parse_incoming(IN, "esp8266-in/fw/query/all"),
            Some(Incoming::Fw)
        );
        assert_eq!(
            parse_incoming(IN, "esp8266-in/ota/0x1337/start"),
            Some(Incoming::Ota {
                target: "0x1337",
                command: "start"
            })
        );
        assert_eq!(
            parse_incoming(IN, "esp8266-in/ota/00A1B2/768"),
            Some(Incoming::Ota {
                target: "00A1B2",
                command: "768"
            })
        );
        assert_eq!(
            parse_incoming(IN, "esp8266-in/ota/1337/v2/missing"),
            Some(Incoming::Ota {
                target: "1337",
                command: "v2/missing"
            })
        );
    }

    #[test]
    fn rejects_malformed_incoming() {
        for bad in [
            "esp8266-in/",
            "esp8266-in/00A1B2",
            "esp8266-in/00A1B2/",
            "esp8266-in//led",
            "esp8266-in/broadcast",
            "esp8266-in/broadcast/",
            "esp8266-in/ota",
            "esp8266-in/ota/1337",
            "esp8266-in/ota/1337/",
            "esp8266-in/ota//start",
            "esp8266-out/00A1B2/led",
            "esp8266-in",
            "",
        ] {
            assert_eq!(parse_incoming(IN, bad), None, "{bad:?}");
        }
        let long = std::format!("esp8266-in/00A1B2/{}", "x".repeat(111));
        assert_eq!(long.len(), MAX_TOPIC_LEN + 1);
        assert_eq!(parse_incoming(IN, &long), None);
        assert!(parse_incoming(IN, &long[..MAX_TOPIC_LEN]).is_some());
    }

    #[test]
    fn reserved_words_only_count_as_whole_levels() {
        assert_eq!(
            parse_incoming(IN, "esp8266-in/fwX/a"),
            Some(Incoming::Node {
                id: "fwX",
                sub: "a"
            })
        );
        assert_eq!(
            parse_incoming(IN, "esp8266-in/ota3/a"),
            Some(Incoming::Node {
                id: "ota3",
                sub: "a"
            })
        );
        // `ota2` is reserved for our OTA exchange.
        assert_eq!(parse_incoming(IN, "esp8266-in/ota2/a"), None);
    }

    #[test]
    fn firmware_ids() {
        assert_eq!(parse_firmware_id("1337"), Some(0x1337));
        assert_eq!(parse_firmware_id("0x1337"), Some(0x1337));
        assert_eq!(parse_firmware_id("0X1337"), Some(0x1337));
        assert_eq!(parse_firmware_id("abcdef01"), Some(0xABCD_EF01));
        assert_eq!(parse_firmware_id("0xFFFFFFFF"), Some(u32::MAX));
        for bad in [
            "",
            "0x",
            "0X",
            "123456789",
            "+1",
            "-1",
            "0x+1",
            "12g",
            " 1",
            "0x0x1",
        ] {
            assert_eq!(parse_firmware_id(bad), None, "{bad:?}");
        }
    }
}
