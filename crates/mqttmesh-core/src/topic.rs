//! The MQTT topic scheme of `../shared/spec/compat.md`: building every topic a node
//! publishes and parsing every topic a node reacts to, in bounded buffers.

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
        {
            let _ = (self, f);
            todo!()
        }
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
        todo!("{self:?}")
    }
    /// Whether the broker retains it.
    pub fn retain(self) -> bool {
        todo!("{self:?}")
    }
    /// Wire code 0..=6 in the order above.
    pub fn to_u8(self) -> u8 {
        todo!("{self:?}")
    }
    /// From the wire code; `None` for 7 and above.
    pub fn from_u8(code: u8) -> Option<MsgType> {
        todo!("{code}")
    }
    /// From QoS and retain flag (QoS above 2 is `None`).
    pub fn from_qos(qos: u8, retain: bool) -> Option<MsgType> {
        todo!("{qos}{retain}")
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
        todo!("{self:?}")
    }
}

/// `<out><id>/<sub>` (also used for `info/*`, `fw`, `Ping`, `ota/...`).
pub fn out_node(out_prefix: &str, id: &NodeId, sub: &str) -> Result<Topic, TopicError> {
    todo!("{out_prefix}{id}{sub}")
}

/// `<in><id>/<sub>`: the topic `publish_node` uses.
pub fn in_node(in_prefix: &str, id: &str, sub: &str) -> Result<Topic, TopicError> {
    todo!("{in_prefix}{id}{sub}")
}

/// `<out>connect`.
pub fn connect(out_prefix: &str) -> Topic {
    todo!("{out_prefix}")
}

/// The filter a node holding the broker session subscribes to: `<in>#`.
pub fn subscription(in_prefix: &str) -> Topic {
    todo!("{in_prefix}")
}

/// Checks an application subtopic: non-empty, no `+`, `#` or NUL, at most
/// [`MAX_TOPIC_LEN`] bytes.
pub fn check_subtopic(sub: &str) -> Result<(), TopicError> {
    todo!("{sub}")
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
        /// `start`, `check`, `flash`, a decimal offset, or a v2 command.
        command: &'a str,
    },
}

/// Classifies `topic`; `None` when it is not under `in_prefix` or has no valid shape
/// (e.g. `<in>` alone, `<in>ID` without `/sub`, an empty subtopic).
pub fn parse_incoming<'a>(in_prefix: &str, topic: &'a str) -> Option<Incoming<'a>> {
    todo!("{in_prefix}{topic}")
}

/// A firmware ID in hex, with or without `0x`/`0X` (1..=8 hex digits).
pub fn parse_firmware_id(s: &str) -> Option<u32> {
    todo!("{s}")
}
