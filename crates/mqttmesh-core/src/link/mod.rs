//! The node-to-node link codec (`docs/PROTOCOL.md` "Link protocol").
//!
//! A link is a TCP stream between a child and its parent carrying frames: a 2-byte
//! big-endian body length, then the body, whose first byte is the frame type. Payloads
//! are binary-safe. Every length is checked against its maximum before anything is
//! buffered or read.
//!
//! No-panic contract: [`Frame::decode`] and [`Deframer::feed`] accept any byte sequence
//! and either return a frame or an error; they never panic and never read out of bounds.
//! The encoding is canonical and [`Frame::encode`] applies the decoder's field checks, so
//! a frame that encodes also decodes, to itself.
//!
//! Error policy (the caller's side, `docs/PROTOCOL.md` "Errors"): any [`DecodeError`] is
//! fatal to the link. Count it, log it at debug level, send `Leave { Protocol }` and
//! close; after a bad header the stream cannot be resynchronised anyway.

use core::fmt;

use heapless::Vec;

use crate::config::MAX_DEPTH_LIMIT;
use crate::identity::{NodeId, MAX_ID_LEN};
use crate::topic::{MsgType, MAX_TOPIC_LEN};

pub mod auth;
mod decode;
mod deframer;
mod encode;
#[cfg(test)]
mod fixtures;
pub mod subtree;

pub use auth::{JoinKey, Nonce, Tag, Transcript, NONCE_LEN, TAG_LEN};
pub use deframer::Deframer;
pub use subtree::Subtree;

/// Link protocol version carried in the join request. Version 2 replaced the mesh tag
/// of version 1 with the authenticated handshake (`docs/PROTOCOL.md` "Join handshake")
/// and, in the same release, added the origin to `Publish` and the `Ack`, `Hold` and
/// `Resume` frames.
pub const VERSION: u8 = 2;
/// Length of the frame header (body length, u16 big-endian).
pub const HEADER_LEN: usize = 2;
/// Largest frame body accepted or produced.
pub const MAX_BODY: usize = 1280;
/// Largest application payload in a `Publish` or `Deliver` frame.
pub const MAX_PAYLOAD: usize = 1024;
/// Largest whole frame (header + body).
pub const MAX_FRAME: usize = HEADER_LEN + MAX_BODY;
/// Longest path in a join reply.
pub const MAX_PATH: usize = MAX_DEPTH_LIMIT as usize;

/// Frame type codes.
pub mod code {
    /// Child → parent: join request.
    pub const JOIN_REQUEST: u8 = 0x01;
    /// Parent → child: join accepted, with the parent's path.
    pub const JOIN_ACCEPT: u8 = 0x02;
    /// Parent → child: join refused.
    pub const JOIN_REJECT: u8 = 0x03;
    /// Parent → child: the parent's nonce, ID and proof; asks for the child's proof.
    pub const CHALLENGE: u8 = 0x04;
    /// Child → parent: the child's proof.
    pub const PROOF: u8 = 0x05;
    /// Child → parent: publish upstream.
    pub const PUBLISH: u8 = 0x10;
    /// Parent → child: deliver downstream.
    pub const DELIVER: u8 = 0x11;
    /// Parent → child: the broker acknowledged a QoS ≥ 1 publish (routed to its origin).
    pub const ACK: u8 = 0x12;
    /// Parent → child: the parent lost its uplink; keep the link for the grace period.
    pub const HOLD: u8 = 0x13;
    /// Parent → child: the parent is online again, with its (possibly new) path.
    pub const RESUME: u8 = 0x14;
    /// Child → parent: the firmware IDs and node IDs of the child's subtree (only to a
    /// parent that announced the capability, see [`subtree`](super::subtree)).
    pub const SUBTREE: u8 = 0x15;
    /// Either way: keep-alive.
    pub const KEEPALIVE: u8 = 0x20;
    /// Either way: keep-alive answer.
    pub const KEEPALIVE_ACK: u8 = 0x21;
    /// Either way: orderly close, with a reason.
    pub const LEAVE: u8 = 0x30;
    /// Parent → child: the parent is full and a joiner was refused; move to another
    /// parent with a free slot if you can (re-balancing, `docs/PROTOCOL.md`).
    pub const MAKE_ROOM: u8 = 0x31;
}

/// A node's path to the root: root first, the sender last.
pub type Path = Vec<NodeId, MAX_PATH>;

/// Why a parent refused a join, or why a peer leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The AP already has `max_children` children.
    Full = 1,
    /// The joining node is on the parent's own path.
    Loop = 2,
    /// The child would sit deeper than `max_depth`.
    TooDeep = 3,
    /// Unsupported link protocol version.
    Version = 4,
    /// The join handshake failed: the peer could not prove it knows the mesh password
    /// (another mesh, or a wrong password).
    Auth = 5,
    /// The parent has no path to the broker right now.
    NotReady = 6,
    /// A node with that ID is already a child.
    Duplicate = 7,
    /// The peer broke the protocol.
    Protocol = 8,
    /// The sender is shutting down or re-parenting.
    Going = 9,
}

impl Reason {
    /// From the wire code.
    pub fn from_u8(code: u8) -> Option<Reason> {
        Some(match code {
            1 => Reason::Full,
            2 => Reason::Loop,
            3 => Reason::TooDeep,
            4 => Reason::Version,
            5 => Reason::Auth,
            6 => Reason::NotReady,
            7 => Reason::Duplicate,
            8 => Reason::Protocol,
            9 => Reason::Going,
            _ => return None,
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Full => "parent has no free child slot",
            Reason::Loop => "joining node is on the parent's path",
            Reason::TooDeep => "child would exceed the maximum depth",
            Reason::Version => "unsupported link protocol version",
            Reason::Auth => "authentication failed (another mesh or a wrong mesh password)",
            Reason::NotReady => "parent has no path to the broker",
            Reason::Duplicate => "node ID already joined",
            Reason::Protocol => "protocol violation",
            Reason::Going => "peer is leaving",
        })
    }
}

/// Longest firmware version string in a [`JoinRequest`].
pub const MAX_FIRMWARE_VERSION_LEN: usize = 31;

/// A child's join request. Its version byte is always [`VERSION`]: a request of any
/// other version does not decode ([`DecodeError::UnsupportedVersion`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinRequest<'a> {
    /// The child's fresh nonce for the handshake.
    pub nonce: Nonce,
    /// The child's node ID.
    pub node_id: &'a str,
    /// The child's chip ID.
    pub chip_id: u32,
    /// The child's firmware ID.
    pub firmware_id: u32,
    /// The child's firmware version (≤ 31 bytes).
    pub firmware_version: &'a str,
    /// Levels of nodes hanging below the child (0 for a leaf).
    pub subtree_height: u8,
}

/// One link frame. Borrowed fields point into the decoded body.
// `JoinAccept` carries its path inline (~1 KiB): there is no allocator to box it, and a
// node holds at most a frame or two at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Child → parent, first frame on a link.
    JoinRequest(JoinRequest<'a>),
    /// Parent → child, the answer to a valid `JoinRequest`: the parent's nonce and node
    /// ID, and its proof of the mesh key over the transcript.
    Challenge {
        /// The parent's fresh nonce.
        nonce: Nonce,
        /// The parent's node ID (the last entry of the path it will send).
        parent_id: &'a str,
        /// `mac_p`, see [`auth`].
        tag: Tag,
    },
    /// Child → parent, the answer to a verified `Challenge`.
    Proof {
        /// `mac_c`, see [`auth`].
        tag: Tag,
    },
    /// Parent → child: accepted; the parent's path (root first, parent last).
    JoinAccept {
        /// The parent's path; the child's depth is `path.len() + 1`.
        path: Path,
    },
    /// Parent → child: refused; the parent closes the link after sending it.
    JoinReject {
        /// Why.
        reason: Reason,
    },
    /// Child → parent: publish towards the broker (full MQTT topic).
    Publish {
        /// Message ID for end-to-end acknowledgement (0: none requested).
        id: u16,
        /// Node ID of the node that created the message (relays pass it on unchanged).
        origin: &'a str,
        /// QoS and retain.
        msg_type: MsgType,
        /// Full MQTT topic (≤ [`MAX_TOPIC_LEN`]).
        topic: &'a str,
        /// Payload (≤ [`MAX_PAYLOAD`]).
        payload: &'a [u8],
    },
    /// Parent → child: a message from the broker (full MQTT topic).
    Deliver {
        /// Full MQTT topic (≤ [`MAX_TOPIC_LEN`]).
        topic: &'a str,
        /// Payload (≤ [`MAX_PAYLOAD`]).
        payload: &'a [u8],
    },
    /// Parent → child: the node holding the broker session had message `id` of
    /// `origin` acknowledged by the broker; relays pass it down towards `origin`.
    Ack {
        /// Node ID of the message's origin.
        origin: &'a str,
        /// The message ID from the origin's `Publish`.
        id: u16,
    },
    /// Parent → child: the parent lost its uplink and is trying to recover; the child
    /// keeps the link (and its unacknowledged messages) for the grace period.
    Hold,
    /// Parent → child: the parent is online again; its path, as in `JoinAccept`.
    Resume {
        /// The parent's path; the child's depth is `path.len() + 1`.
        path: Path,
    },
    /// Child → parent: what lives in the child's subtree (see [`subtree`]).
    Subtree(Subtree),
    /// Keep-alive probe.
    KeepAlive,
    /// Keep-alive answer.
    KeepAliveAck,
    /// Orderly close.
    Leave {
        /// Why.
        reason: Reason,
    },
    /// Parent → child: the parent is full and refused a joiner; the child moves to
    /// another parent with a free slot, no deeper than this one, if it hears one.
    MakeRoom,
}

/// Why bytes are not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header declares a body longer than [`MAX_BODY`] (or zero).
    BadLength(usize),
    /// Unknown frame type.
    UnknownType(u8),
    /// The body ends before a field does.
    Truncated,
    /// Bytes left after the last field.
    TrailingBytes,
    /// A string field is not UTF-8.
    BadUtf8,
    /// A field exceeds its maximum (topic, payload, ID, version, path).
    FieldTooLong,
    /// A node ID that `NodeId::new` refuses, or an empty topic (or one containing `+`,
    /// `#` or NUL, which no MQTT PUBLISH may carry).
    BadField,
    /// Unknown message type code.
    BadMsgType(u8),
    /// Unknown reason code.
    BadReason(u8),
    /// A join request of another link protocol version (the byte after the type).
    UnsupportedVersion(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadLength(n) => write!(f, "bad frame body length {n}"),
            DecodeError::UnknownType(t) => write!(f, "unknown frame type {t:#04x}"),
            DecodeError::Truncated => f.write_str("frame body ends inside a field"),
            DecodeError::TrailingBytes => f.write_str("bytes after the last field"),
            DecodeError::BadUtf8 => f.write_str("string field is not UTF-8"),
            DecodeError::FieldTooLong => f.write_str("field exceeds its maximum length"),
            DecodeError::BadField => f.write_str("invalid node ID or topic"),
            DecodeError::BadMsgType(t) => write!(f, "unknown message type {t}"),
            DecodeError::BadReason(r) => write!(f, "unknown reason code {r}"),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "link protocol version {v} (this node speaks {VERSION})")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// A field exceeds its maximum.
    FieldTooLong,
    /// A field the decoder would refuse: a node ID that `NodeId::new` refuses, or an
    /// empty topic or one containing `+`, `#` or NUL.
    BadField,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::BufferTooSmall => "output buffer too small for the frame",
            EncodeError::FieldTooLong => "field exceeds its maximum length",
            EncodeError::BadField => "invalid node ID or topic",
        })
    }
}

impl core::error::Error for EncodeError {}

/// A field check that failed; the same checks guard encoding and decoding, so
/// `encode` never produces a frame `decode` refuses.
enum Invalid {
    TooLong,
    Bad,
}

impl From<Invalid> for DecodeError {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::TooLong => DecodeError::FieldTooLong,
            Invalid::Bad => DecodeError::BadField,
        }
    }
}

impl From<Invalid> for EncodeError {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::TooLong => EncodeError::FieldTooLong,
            Invalid::Bad => EncodeError::BadField,
        }
    }
}

fn check_node_id_len(len: usize) -> Result<(), Invalid> {
    if len > MAX_ID_LEN {
        return Err(Invalid::TooLong);
    }
    Ok(())
}

fn check_node_id(id: &str) -> Result<NodeId, Invalid> {
    check_node_id_len(id.len())?;
    NodeId::new(id).map_err(|_| Invalid::Bad)
}

fn check_topic_len(len: usize) -> Result<(), Invalid> {
    match len {
        0 => Err(Invalid::Bad),
        n if n > MAX_TOPIC_LEN => Err(Invalid::TooLong),
        _ => Ok(()),
    }
}

/// MQTT forbids wildcards and NUL in a PUBLISH topic; a broker drops the session that
/// sends one, so a relaying node must never pass one on.
fn check_topic_chars(topic: &str) -> Result<(), Invalid> {
    if topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0)) {
        return Err(Invalid::Bad);
    }
    Ok(())
}

fn check_topic(topic: &str) -> Result<(), Invalid> {
    check_topic_len(topic.len())?;
    check_topic_chars(topic)
}

fn check_max(len: usize, max: usize) -> Result<(), Invalid> {
    if len > max {
        return Err(Invalid::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display() {
        use core::fmt::Write;
        let mut s: heapless::String<64> = heapless::String::new();
        write!(s, "{}", DecodeError::UnknownType(0x7f)).unwrap();
        assert_eq!(s, "unknown frame type 0x7f");
        s.clear();
        write!(s, "{}", Reason::Protocol).unwrap();
        assert_eq!(s, "protocol violation");
    }
}
