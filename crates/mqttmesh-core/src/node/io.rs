//! What goes in and out of a [`Node`](super::Node): links, actions, events, log lines,
//! counters.

use heapless::{String, Vec};

use crate::identity::{Mac, NodeId};
use crate::link::MAX_PAYLOAD;
use crate::topic::{MsgType, Topic};

#[allow(unused_imports)]
use super::Node;
use super::MAX_LOG_LEN;

/// One of the node's TCP links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinkId {
    /// The link to our mesh parent.
    Parent,
    /// A child's link, by slot.
    Child(u8),
}

/// A message for the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Full MQTT topic.
    pub topic: Topic,
    /// Payload.
    pub payload: Vec<u8, MAX_PAYLOAD>,
    /// QoS and retain.
    pub msg_type: MsgType,
    /// For a QoS ≥ 1 publication the node waits on: report the broker's acknowledgement
    /// (PUBACK) with [`Node::handle_mqtt_acked`]`(token)`. `None`: nothing to report.
    pub token: Option<u32>,
}

/// Something the node wants the runtime to do.
///
/// Variants carry their data inline (no allocator); a publication is the big one.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Scan for access points on every channel; answer with [`Node::handle_scan_done`].
    Scan,
    /// Scan this one channel only (the one our mesh is on); answer with
    /// [`Node::handle_scan_done`]. A fraction of a full scan's time (one channel's
    /// dwell, ≈120 ms on an ESP32, against ≈2 s for all channels), and an online node
    /// does not leave its channel for long. `docs/PROTOCOL.md` "Healing".
    ScanChannel(u8),
    /// Associate the station interface; answer with [`Node::handle_associated`].
    Associate {
        /// BSSID to join.
        bssid: Mac,
        /// SSID to join (may be empty for a hidden AP: join by BSSID).
        ssid: String<32>,
        /// WPA2 passphrase (empty for an open network).
        password: String<64>,
        /// Channel.
        channel: u8,
    },
    /// Leave the current association (closes the parent link or the MQTT session).
    Disassociate,
    /// Open the MQTT session to the configured broker; answer with
    /// [`Node::handle_mqtt_connected`] or [`Node::handle_mqtt_disconnected`].
    ConnectMqtt {
        /// MQTT client ID.
        client_id: String<40>,
        /// Last-will topic (payload `offline`, retained, QoS 1).
        will_topic: Topic,
    },
    /// Close the MQTT session.
    DisconnectMqtt,
    /// Subscribe (QoS 1).
    Subscribe {
        /// Topic filter.
        filter: Topic,
    },
    /// Publish to the broker.
    Publish(Publish),
    /// Open a TCP link to the associated parent's mesh port; answer with
    /// [`Node::handle_link_opened`] or [`Node::handle_link_closed`].
    OpenParentLink,
    /// Close a link (after writing what is queued for it).
    CloseLink(LinkId),
    /// Start our hidden AP and serve the mesh port; report children with
    /// [`Node::handle_child_connected`]. When the AP is already up (children kept
    /// through an uplink loss), update its beacon (depth, channel) and keep its
    /// stations and links.
    OpenAp {
        /// Hidden SSID.
        ssid: String<32>,
        /// Our AP MAC.
        bssid: Mac,
        /// Channel (that of our uplink).
        channel: u8,
        /// Stations the AP admits.
        max_children: u8,
        /// Our depth (announced in beacons).
        depth: u8,
    },
    /// Stop our AP; every child link is closed.
    CloseAp,
    /// Whether our AP admits new stations and its beacon announces free child slots
    /// (`docs/PROTOCOL.md` "Beacon hints"); the stations it has and their links stay.
    /// `false` while we hold our children without an uplink: a node looking for a
    /// parent must not take us for one with a path to the broker, and is better turned
    /// away at association (as by a full AP) than after it. The next
    /// [`Action::OpenAp`] admits them again. A runtime that cannot do this ignores it:
    /// the join is then refused on the link.
    AdmitStations(bool),
    /// Restart the node (the runtime builds a new `Node`).
    Restart,
}

/// Something for the application.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message for this node: `(subtopic, payload)` as the original's callback.
    Message {
        /// Subtopic after `<in><ID>/` or `<in>broadcast/`.
        subtopic: Topic,
        /// Payload.
        payload: Vec<u8, MAX_PAYLOAD>,
    },
    /// An OTA message for this node (its target is our firmware ID or our node ID):
    /// hand it to an OTA receiver (`crate::ota`) and publish its replies.
    Ota {
        /// Which exchange.
        exchange: OtaExchange,
        /// The command: what follows `<in>ota/<target>/` or `<in>ota2/<target>/`.
        command: String<MAX_OTA_COMMAND>,
        /// Payload.
        payload: Vec<u8, MAX_PAYLOAD>,
    },
    /// The path to the broker is up.
    Connected,
    /// The path to the broker is lost.
    Disconnected,
}

/// Longest OTA command (what follows the target in the topic).
pub const MAX_OTA_COMMAND: usize = 48;

/// Which OTA exchange a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OtaExchange {
    /// The original one (`<in>ota/…`, compat.md "OTA over MQTT").
    Compat,
    /// Ours (`<in>ota2/…`, `docs/PROTOCOL.md` "OTA v2").
    V2,
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Peer misbehaviour, lost links.
    Warn,
    /// State changes.
    Info,
    /// Details.
    Debug,
}

/// A log line from the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Severity.
    pub level: Level,
    /// Text.
    pub text: String<MAX_LOG_LEN>,
}

/// Per-node counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames received on any link.
    pub frames_in: u64,
    /// Frames queued for any link.
    pub frames_out: u64,
    /// Frames or streams dropped as malformed or out of protocol.
    pub malformed: u64,
    /// Messages relayed from a child towards the broker.
    pub relayed_up: u64,
    /// Messages relayed from the broker towards children (per child).
    pub relayed_down: u64,
    /// Joins we refused as a parent.
    pub rejected_joins: u64,
    /// Parents we refused or that refused us.
    pub refused_parents: u64,
    /// Join handshakes that failed authentication, either side: a child or a parent
    /// that could not prove it knows the mesh password (another mesh or a wrong
    /// password), or a parent that refused our proof (`JoinReject { Auth }`).
    pub auth_failures: u64,
    /// Join handshakes abandoned for a frame out of order or a stall (no answer within
    /// `connect_timeout`), either side. Each is also counted as `malformed` or a
    /// rejected join.
    pub handshake_failures: u64,
    /// Publications refused (bad topic, too large, not connected).
    pub publish_rejected: u64,
    /// Items dropped because a queue was full.
    pub queue_dropped: u64,
    /// Times the path to the broker came up.
    pub connects: u64,
    /// Times the path to the broker was lost.
    pub disconnects: u64,
    /// Outbox messages sent (first sends and re-sends).
    pub outbox_sent: u64,
    /// Our own QoS ≥ 1 messages acknowledged end to end.
    pub acked: u64,
    /// QoS ≥ 1 messages refused because the outbox was full.
    pub outbox_full: u64,
    /// Unacknowledged retained messages replaced by a newer value on the same topic.
    pub outbox_superseded: u64,
    /// Duplicate QoS ≥ 1 messages the root recognised and did not publish again.
    pub duplicates: u64,
    /// Downstream messages and acknowledgements flooded to every child because the
    /// destination's branch was unknown.
    pub route_flooded: u64,
    /// Times this node kept its children through an uplink loss (grace period).
    pub holds: u64,
    /// Times we left a held parent for an AP that had a path (healing).
    pub escapes: u64,
    /// Scans that found only full APs, after which we tried one anyway (re-balancing).
    pub rebalance_knocks: u64,
    /// Mesh stations our AP turned away because it was full (reported by the runtime).
    pub stations_refused: u64,
    /// `MakeRoom` requests we sent to a child.
    pub rebalance_asks: u64,
    /// Times we moved to another parent to make room.
    pub rebalance_moves: u64,
    /// `MakeRoom` requests we declined (moved recently or too often, no usable AP).
    pub rebalance_declined: u64,
    /// OTA messages not sent down a branch because no node there runs the target
    /// firmware ID or has the target node ID (one per message and branch left out).
    pub ota_filtered: u64,
    /// Subtree announcements sent to the parent.
    pub subtree_sent: u64,
}

/// Why a publication was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// No path to the broker right now.
    NotConnected,
    /// Subtopic or topic invalid or too long.
    BadTopic,
    /// Payload larger than [`MAX_PAYLOAD`].
    TooLarge,
    /// The outgoing queue is full.
    QueueFull,
    /// The outbox of unacknowledged QoS ≥ 1 messages is full (`Config::outbox_len`):
    /// retry after earlier messages were acknowledged.
    OutboxFull,
}

impl core::fmt::Display for PublishError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PublishError::NotConnected => "no path to the broker",
            PublishError::BadTopic => "invalid or too long topic",
            PublishError::TooLarge => "payload too large",
            PublishError::QueueFull => "outgoing queue full",
            PublishError::OutboxFull => "outbox of unacknowledged QoS 1 messages full",
        })
    }
}

impl core::error::Error for PublishError {}

/// Where a node hangs in the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parent {
    /// Not connected.
    None,
    /// On the router, holding its own broker session.
    Router {
        /// Router BSSID.
        bssid: Mac,
    },
    /// Below another node.
    Node {
        /// The parent's node ID.
        id: NodeId,
        /// The parent's AP MAC.
        bssid: Mac,
    },
}
