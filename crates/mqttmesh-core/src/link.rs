//! The node-to-node link codec (`docs/PROTOCOL.md` "Link protocol").
//!
//! A link is a TCP stream between a child and its parent carrying frames: a 2-byte
//! big-endian body length, then the body, whose first byte is the frame type. Payloads
//! are binary-safe. Every length is checked against its maximum before anything is
//! buffered or read.
//!
//! No-panic contract: [`Frame::decode`] and [`Deframer::feed`] accept any byte sequence
//! and either return a frame or an error; they never panic and never read out of bounds.

use core::fmt;

use heapless::Vec;

use crate::config::MAX_DEPTH_LIMIT;
use crate::identity::NodeId;
use crate::topic::{MsgType, MAX_TOPIC_LEN};

/// Link protocol version carried in the join handshake.
pub const VERSION: u8 = 1;
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
    /// Child → parent: publish upstream.
    pub const PUBLISH: u8 = 0x10;
    /// Parent → child: deliver downstream.
    pub const DELIVER: u8 = 0x11;
    /// Either way: keep-alive.
    pub const KEEPALIVE: u8 = 0x20;
    /// Either way: keep-alive answer.
    pub const KEEPALIVE_ACK: u8 = 0x21;
    /// Either way: orderly close, with a reason.
    pub const LEAVE: u8 = 0x30;
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
    /// Mesh tag mismatch: another mesh or another mesh password.
    WrongMesh = 5,
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
        todo!("{code}")
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        {
            let _ = (self, f);
            todo!()
        }
    }
}

/// A child's join request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinRequest<'a> {
    /// The child's link protocol version.
    pub version: u8,
    /// `identity::mesh_key(mesh password)`: proves (weakly) it is of the same mesh.
    pub mesh_tag: u32,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Child → parent, first frame on a link.
    JoinRequest(JoinRequest<'a>),
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
    /// Keep-alive probe.
    KeepAlive,
    /// Keep-alive answer.
    KeepAliveAck,
    /// Orderly close.
    Leave {
        /// Why.
        reason: Reason,
    },
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
    /// A node ID that `NodeId::new` refuses, or an empty topic.
    BadField,
    /// Unknown message type code.
    BadMsgType(u8),
    /// Unknown reason code.
    BadReason(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        {
            let _ = (self, f);
            todo!()
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
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        {
            let _ = (self, f);
            todo!()
        }
    }
}

impl core::error::Error for EncodeError {}

impl<'a> Frame<'a> {
    /// Decodes one frame body (without the 2-byte header).
    pub fn decode(body: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        todo!("{body:?}")
    }

    /// Encodes header + body into `out`; the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        todo!("{out:?}")
    }
}

/// Reassembles frames from a byte stream, one at a time, in a fixed buffer.
#[derive(Debug)]
pub struct Deframer {
    _todo: (),
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

impl Deframer {
    /// An empty deframer.
    pub const fn new() -> Self {
        Deframer { _todo: () }
    }

    /// Takes bytes from `data` until one whole frame is buffered (or `data` ends);
    /// returns how many bytes it took. Returns `Err(BadLength)` as soon as a header
    /// declares an oversized or empty body, before buffering it; the stream is then
    /// unusable and the link must be closed.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        todo!("{data:?}")
    }

    /// The body of the buffered frame, once complete.
    pub fn frame(&self) -> Option<&[u8]> {
        todo!()
    }

    /// Drops the buffered frame so the next one can be read.
    pub fn consume(&mut self) {
        todo!()
    }

    /// Forgets everything (new link).
    pub fn reset(&mut self) {
        todo!()
    }
}

const _: () = assert!(MAX_TOPIC_LEN + MAX_PAYLOAD + 16 <= MAX_BODY);
