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
        Some(match code {
            1 => Reason::Full,
            2 => Reason::Loop,
            3 => Reason::TooDeep,
            4 => Reason::Version,
            5 => Reason::WrongMesh,
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
            Reason::WrongMesh => "mesh tag mismatch",
            Reason::NotReady => "parent has no path to the broker",
            Reason::Duplicate => "node ID already joined",
            Reason::Protocol => "protocol violation",
            Reason::Going => "peer is leaving",
        })
    }
}

/// Longest firmware version string in a [`JoinRequest`].
pub const MAX_FIRMWARE_VERSION_LEN: usize = 31;

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
// `JoinAccept` carries its path inline (~1 KiB): there is no allocator to box it, and a
// node holds at most a frame or two at a time.
#[allow(clippy::large_enum_variant)]
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
    /// A node ID that `NodeId::new` refuses, or an empty topic (or one containing `+`,
    /// `#` or NUL, which no MQTT PUBLISH may carry).
    BadField,
    /// Unknown message type code.
    BadMsgType(u8),
    /// Unknown reason code.
    BadReason(u8),
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

/// Reads fields front to back; every read checks the remaining length first.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.rest.split_first().ok_or(DecodeError::Truncated)?;
        self.rest = rest;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.rest = rest;
        Ok(*head)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self
            .rest
            .split_at_checked(len)
            .ok_or(DecodeError::Truncated)?;
        self.rest = rest;
        Ok(head)
    }

    fn str(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.bytes(len)?).map_err(|_| DecodeError::BadUtf8)
    }

    /// A `str8` of at most `max` bytes; the length is checked before the bytes are read.
    fn str8(&mut self, max: usize) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u8()?);
        check_max(len, max)?;
        self.str(len)
    }

    fn node_id(&mut self) -> Result<NodeId, DecodeError> {
        let id = self.str8(MAX_ID_LEN)?;
        Ok(check_node_id(id)?)
    }

    fn topic(&mut self) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u8()?);
        check_topic_len(len)?;
        let topic = self.str(len)?;
        check_topic_chars(topic)?;
        Ok(topic)
    }

    fn payload(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16()?);
        check_max(len, MAX_PAYLOAD)?;
        self.bytes(len)
    }

    fn reason(&mut self) -> Result<Reason, DecodeError> {
        let code = self.u8()?;
        Reason::from_u8(code).ok_or(DecodeError::BadReason(code))
    }

    fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Writes fields front to back; every write checks the remaining room first.
struct Writer<'o> {
    out: &'o mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos.checked_add(bytes.len());
        let dst = end.and_then(|end| self.out.get_mut(self.pos..end));
        dst.ok_or(EncodeError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.pos += bytes.len();
        Ok(())
    }

    fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.put(&[v])
    }

    fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes())
    }

    /// A `str8` or a topic: u8 length, then the bytes.
    fn str8(&mut self, s: &str) -> Result<(), EncodeError> {
        let len = u8::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong)?;
        self.u8(len)?;
        self.put(s.as_bytes())
    }

    fn payload(&mut self, p: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(p.len()).map_err(|_| EncodeError::FieldTooLong)?;
        self.u16(len)?;
        self.put(p)
    }
}

// Every valid frame fits in MAX_BODY, so `encode` never refuses a valid frame for size.
const _: () = assert!(17 + MAX_ID_LEN + MAX_FIRMWARE_VERSION_LEN <= MAX_BODY);
const _: () = assert!(2 + MAX_PATH * (1 + MAX_ID_LEN) <= MAX_BODY);
const _: () = assert!(MAX_PATH <= u8::MAX as usize);

impl<'a> Frame<'a> {
    /// Decodes one frame body (without the 2-byte header).
    pub fn decode(body: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        if body.is_empty() || body.len() > MAX_BODY {
            return Err(DecodeError::BadLength(body.len()));
        }
        let mut r = Reader { rest: body };
        let frame = match r.u8()? {
            code::JOIN_REQUEST => Self::decode_join_request(&mut r)?,
            code::JOIN_ACCEPT => Self::decode_join_accept(&mut r)?,
            code::JOIN_REJECT => Frame::JoinReject {
                reason: r.reason()?,
            },
            code::PUBLISH => Self::decode_publish(&mut r)?,
            code::DELIVER => Frame::Deliver {
                topic: r.topic()?,
                payload: r.payload()?,
            },
            code::KEEPALIVE => Frame::KeepAlive,
            code::KEEPALIVE_ACK => Frame::KeepAliveAck,
            code::LEAVE => Frame::Leave {
                reason: r.reason()?,
            },
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }

    fn decode_join_request(r: &mut Reader<'a>) -> Result<Frame<'a>, DecodeError> {
        let version = r.u8()?;
        let mesh_tag = r.u32()?;
        let node_id = r.str8(MAX_ID_LEN)?;
        check_node_id(node_id)?;
        Ok(Frame::JoinRequest(JoinRequest {
            version,
            mesh_tag,
            node_id,
            chip_id: r.u32()?,
            firmware_id: r.u32()?,
            firmware_version: r.str8(MAX_FIRMWARE_VERSION_LEN)?,
            subtree_height: r.u8()?,
        }))
    }

    fn decode_join_accept(r: &mut Reader<'a>) -> Result<Frame<'a>, DecodeError> {
        let count = usize::from(r.u8()?);
        check_max(count, MAX_PATH)?;
        let mut path = Path::new();
        for _ in 0..count {
            // Cannot fail: `count` ≤ MAX_PATH, the capacity; mapped rather than unwrapped.
            path.push(r.node_id()?)
                .map_err(|_| DecodeError::FieldTooLong)?;
        }
        Ok(Frame::JoinAccept { path })
    }

    fn decode_publish(r: &mut Reader<'a>) -> Result<Frame<'a>, DecodeError> {
        let id = r.u16()?;
        let code = r.u8()?;
        let msg_type = MsgType::from_u8(code).ok_or(DecodeError::BadMsgType(code))?;
        Ok(Frame::Publish {
            id,
            msg_type,
            topic: r.topic()?,
            payload: r.payload()?,
        })
    }

    /// The frame type code (see [`code`]).
    pub fn code(&self) -> u8 {
        match self {
            Frame::JoinRequest(_) => code::JOIN_REQUEST,
            Frame::JoinAccept { .. } => code::JOIN_ACCEPT,
            Frame::JoinReject { .. } => code::JOIN_REJECT,
            Frame::Publish { .. } => code::PUBLISH,
            Frame::Deliver { .. } => code::DELIVER,
            Frame::KeepAlive => code::KEEPALIVE,
            Frame::KeepAliveAck => code::KEEPALIVE_ACK,
            Frame::Leave { .. } => code::LEAVE,
        }
    }

    /// Bytes `encode` writes (header + body) if the fields are within their limits;
    /// never more than [`MAX_FRAME`] for such a frame.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.body_len())
    }

    fn body_len(&self) -> usize {
        let fields = match self {
            Frame::JoinRequest(j) => 16usize
                .saturating_add(j.node_id.len())
                .saturating_add(j.firmware_version.len()),
            Frame::JoinAccept { path } => path
                .iter()
                .fold(1, |n: usize, id| n.saturating_add(1 + id.as_str().len())),
            Frame::JoinReject { .. } | Frame::Leave { .. } => 1,
            Frame::Publish { topic, payload, .. } => 6usize
                .saturating_add(topic.len())
                .saturating_add(payload.len()),
            Frame::Deliver { topic, payload } => 3usize
                .saturating_add(topic.len())
                .saturating_add(payload.len()),
            Frame::KeepAlive | Frame::KeepAliveAck => 0,
        };
        fields.saturating_add(1)
    }

    /// The same field checks `decode` applies, so nothing is written that the peer
    /// would refuse.
    fn check(&self) -> Result<(), Invalid> {
        match self {
            Frame::JoinRequest(j) => {
                check_node_id(j.node_id)?;
                check_max(j.firmware_version.len(), MAX_FIRMWARE_VERSION_LEN)
            }
            Frame::Publish { topic, payload, .. } | Frame::Deliver { topic, payload } => {
                check_topic(topic)?;
                check_max(payload.len(), MAX_PAYLOAD)
            }
            // Path length and node IDs are guaranteed by their types.
            Frame::JoinAccept { .. }
            | Frame::JoinReject { .. }
            | Frame::Leave { .. }
            | Frame::KeepAlive
            | Frame::KeepAliveAck => Ok(()),
        }
    }

    /// Encodes header + body into `out`; the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check()?;
        let body_len = self.body_len();
        let header = u16::try_from(body_len)
            .ok()
            .filter(|&n| usize::from(n) <= MAX_BODY)
            .ok_or(EncodeError::FieldTooLong)?;
        if out.len() < HEADER_LEN + body_len {
            return Err(EncodeError::BufferTooSmall);
        }
        let mut w = Writer { out, pos: 0 };
        w.u16(header)?;
        w.u8(self.code())?;
        self.encode_fields(&mut w)?;
        Ok(w.pos)
    }

    fn encode_fields(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        match self {
            Frame::JoinRequest(j) => {
                w.u8(j.version)?;
                w.u32(j.mesh_tag)?;
                w.str8(j.node_id)?;
                w.u32(j.chip_id)?;
                w.u32(j.firmware_id)?;
                w.str8(j.firmware_version)?;
                w.u8(j.subtree_height)
            }
            Frame::JoinAccept { path } => {
                let count = u8::try_from(path.len()).map_err(|_| EncodeError::FieldTooLong)?;
                w.u8(count)?;
                path.iter().try_for_each(|id| w.str8(id.as_str()))
            }
            Frame::JoinReject { reason } | Frame::Leave { reason } => w.u8(*reason as u8),
            Frame::Publish {
                id,
                msg_type,
                topic,
                payload,
            } => {
                w.u16(*id)?;
                w.u8(msg_type.to_u8())?;
                w.str8(topic)?;
                w.payload(payload)
            }
            Frame::Deliver { topic, payload } => {
                w.str8(topic)?;
                w.payload(payload)
            }
            Frame::KeepAlive | Frame::KeepAliveAck => Ok(()),
        }
    }
}

/// Reassembles frames from a byte stream, one at a time, in a fixed buffer.
///
/// Feed it what the socket gave; when [`frame`](Self::frame) returns a body, decode it,
/// then [`consume`](Self::consume) it and feed the rest.
pub struct Deframer {
    /// Header then body of the frame being read.
    buf: [u8; MAX_FRAME],
    /// Bytes of `buf` filled; never more than `MAX_FRAME`.
    len: usize,
}

impl fmt::Debug for Deframer {
    // The buffer itself is noise in a log line; its fill level is what matters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deframer")
            .field("buffered", &self.len)
            .field("wanted", &self.wanted())
            .finish()
    }
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

/// The body length a header declares, if acceptable.
fn declared_body_len(header: [u8; HEADER_LEN]) -> Result<usize, DecodeError> {
    match usize::from(u16::from_be_bytes(header)) {
        n @ 1..=MAX_BODY => Ok(n),
        n => Err(DecodeError::BadLength(n)),
    }
}

impl Deframer {
    /// An empty deframer.
    pub const fn new() -> Self {
        Deframer {
            buf: [0; MAX_FRAME],
            len: 0,
        }
    }

    /// Bytes wanted in `buf` for the current step: the header, then the whole frame.
    fn wanted(&self) -> Result<usize, DecodeError> {
        match self.buf.first_chunk::<HEADER_LEN>() {
            Some(header) if self.len >= HEADER_LEN => Ok(HEADER_LEN + declared_body_len(*header)?),
            _ => Ok(HEADER_LEN),
        }
    }

    /// Takes bytes from `data` until one whole frame is buffered (or `data` ends);
    /// returns how many bytes it took. Returns `Err(BadLength)` as soon as a header
    /// declares an oversized or empty body, before buffering it; the stream is then
    /// unusable and the link must be closed.
    ///
    /// After an error every further call fails the same way until [`reset`](Self::reset).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let mut taken = 0;
        loop {
            let wanted = self.wanted()?;
            let rest = data.get(taken..).unwrap_or_default();
            let free = self.buf.get_mut(self.len..wanted).unwrap_or_default();
            let n = free.len().min(rest.len());
            if n == 0 {
                // Frame complete, or `data` used up.
                return Ok(taken);
            }
            free.iter_mut().zip(rest).for_each(|(d, s)| *d = *s);
            self.len += n;
            taken += n;
        }
    }

    /// The body of the buffered frame, once complete.
    pub fn frame(&self) -> Option<&[u8]> {
        let wanted = self.wanted().ok()?;
        if self.len == wanted && wanted > HEADER_LEN {
            self.buf.get(HEADER_LEN..wanted)
        } else {
            None
        }
    }

    /// Drops the buffered frame so the next one can be read. Does nothing while the
    /// frame is incomplete, so calling it early cannot desynchronise the stream.
    pub fn consume(&mut self) {
        if self.frame().is_some() {
            self.len = 0;
        }
    }

    /// Forgets everything (new link).
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

const _: () = assert!(MAX_TOPIC_LEN + MAX_PAYLOAD + 16 <= MAX_BODY);

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn path(ids: &[&str]) -> Path {
        ids.iter().map(|s| id(s)).collect()
    }

    const JOIN_REQUEST: &[u8] = &[
        0x00, 0x1c, // body length 28
        0x01, // JOIN_REQUEST
        0x01, // version
        0x28, 0x5d, 0x60, 0xf5, // mesh tag
        0x06, b'0', b'0', b'A', b'1', b'B', b'2', // node ID
        0x00, 0x00, 0xa1, 0xb2, // chip ID
        0x00, 0x00, 0x13, 0x37, // firmware ID
        0x05, b'1', b'.', b'2', b'.', b'3', // firmware version
        0x02, // subtree height
    ];

    fn join_request() -> Frame<'static> {
        Frame::JoinRequest(JoinRequest {
            version: 1,
            mesh_tag: 0x285d_60f5,
            node_id: "00A1B2",
            chip_id: 0x00a1b2,
            firmware_id: 0x1337,
            firmware_version: "1.2.3",
            subtree_height: 2,
        })
    }

    const JOIN_ACCEPT: &[u8] = &[
        0x00, 0x0e, 0x02, 0x02, // two IDs
        0x04, b'R', b'O', b'O', b'T', //
        0x06, b'0', b'0', b'A', b'1', b'B', b'2',
    ];

    const PUBLISH: &[u8] = &[
        0x00, 0x18, 0x10, //
        0x12, 0x34, // message ID
        0x02, // QoS 1
        0x0e, b'm', b'/', b'o', b'u', b't', b'/', b'0', b'0', b'A', b'1', b'B', b'2', b'/', b't',
        0x00, 0x03, 0x00, 0xff, b'\n', // binary payload
    ];

    const DELIVER: &[u8] = &[
        0x00, 0x0c, 0x11, //
        0x06, b'm', b'/', b'i', b'n', b'/', b'x', //
        0x00, 0x02, b'h', b'i',
    ];

    fn fixtures() -> [(Frame<'static>, &'static [u8]); 8] {
        [
            (join_request(), JOIN_REQUEST),
            (
                Frame::JoinAccept {
                    path: path(&["ROOT", "00A1B2"]),
                },
                JOIN_ACCEPT,
            ),
            (
                Frame::JoinReject {
                    reason: Reason::Full,
                },
                &[0x00, 0x02, 0x03, 0x01],
            ),
            (
                Frame::Publish {
                    id: 0x1234,
                    msg_type: MsgType::Qos1,
                    topic: "m/out/00A1B2/t",
                    payload: &[0x00, 0xff, b'\n'],
                },
                PUBLISH,
            ),
            (
                Frame::Deliver {
                    topic: "m/in/x",
                    payload: b"hi",
                },
                DELIVER,
            ),
            (Frame::KeepAlive, &[0x00, 0x01, 0x20]),
            (Frame::KeepAliveAck, &[0x00, 0x01, 0x21]),
            (
                Frame::Leave {
                    reason: Reason::Going,
                },
                &[0x00, 0x02, 0x30, 0x09],
            ),
        ]
    }

    fn encode(frame: &Frame<'_>) -> Result<([u8; MAX_FRAME], usize), EncodeError> {
        let mut buf = [0; MAX_FRAME];
        let n = frame.encode(&mut buf)?;
        Ok((buf, n))
    }

    #[test]
    fn fixtures_encode_to_exact_bytes() {
        for (frame, bytes) in fixtures() {
            let (buf, n) = encode(&frame).unwrap();
            assert_eq!(&buf[..n], bytes, "{frame:?}");
            assert_eq!(frame.encoded_len(), bytes.len());
            assert_eq!(frame.code(), bytes[HEADER_LEN]);
        }
    }

    #[test]
    fn fixtures_decode_to_frames() {
        for (frame, bytes) in fixtures() {
            assert_eq!(Frame::decode(&bytes[HEADER_LEN..]), Ok(frame));
        }
    }

    #[test]
    fn encode_needs_room_for_the_whole_frame() {
        for (frame, bytes) in fixtures() {
            let mut buf = [0; MAX_FRAME];
            let short = &mut buf[..bytes.len() - 1];
            assert_eq!(frame.encode(short), Err(EncodeError::BufferTooSmall));
            assert_eq!(frame.encode(&mut buf[..bytes.len()]), Ok(bytes.len()));
        }
    }

    #[test]
    fn every_truncation_is_truncated() {
        for (_, bytes) in fixtures() {
            for end in HEADER_LEN + 1..bytes.len() {
                let body = &bytes[HEADER_LEN..end];
                assert_eq!(Frame::decode(body), Err(DecodeError::Truncated), "{body:?}");
            }
        }
    }

    #[test]
    fn trailing_byte_is_refused() {
        for (_, bytes) in fixtures() {
            let mut body = [0; 64];
            let n = bytes.len() - HEADER_LEN;
            body[..n].copy_from_slice(&bytes[HEADER_LEN..]);
            let r = Frame::decode(&body[..=n]);
            assert_eq!(r, Err(DecodeError::TrailingBytes), "{bytes:?}");
        }
    }

    #[test]
    fn body_length_limits() {
        assert_eq!(Frame::decode(&[]), Err(DecodeError::BadLength(0)));
        let big = [code::KEEPALIVE; MAX_BODY + 1];
        assert_eq!(
            Frame::decode(&big),
            Err(DecodeError::BadLength(MAX_BODY + 1))
        );
    }

    #[test]
    fn unknown_codes_are_named() {
        assert_eq!(Frame::decode(&[0x7f]), Err(DecodeError::UnknownType(0x7f)));
        assert_eq!(Frame::decode(&[0x03, 0]), Err(DecodeError::BadReason(0)));
        assert_eq!(Frame::decode(&[0x30, 10]), Err(DecodeError::BadReason(10)));
        let publish = [0x10, 0, 1, 7, 1, b't', 0, 0];
        assert_eq!(Frame::decode(&publish), Err(DecodeError::BadMsgType(7)));
        for code in 1..=9 {
            assert_eq!(Reason::from_u8(code).map(|r| r as u8), Some(code));
        }
    }

    #[test]
    fn declared_lengths_are_checked_before_the_bytes() {
        // Topic 129, payload 1025, ID 25, version 32, path 33: refused without the data.
        let cases: [&[u8]; 6] = [
            &[0x11, 129],
            &[0x11, 1, b't', 0x04, 0x01],
            &[0x10, 0, 0, 0, 129],
            &[0x01, 1, 0, 0, 0, 0, 25],
            &[0x01, 1, 0, 0, 0, 0, 1, b'A', 0, 0, 0, 0, 0, 0, 0, 0, 32],
            &[0x02, 33],
        ];
        for body in cases {
            assert_eq!(
                Frame::decode(body),
                Err(DecodeError::FieldTooLong),
                "{body:?}"
            );
        }
    }

    #[test]
    fn bad_fields_are_refused() {
        let cases: [(&[u8], DecodeError); 7] = [
            (&[0x11, 0, 0, 0], DecodeError::BadField),
            (&[0x11, 3, b'a', b'/', b'#', 0, 0], DecodeError::BadField),
            (&[0x11, 3, b'a', b'+', b'b', 0, 0], DecodeError::BadField),
            (&[0x11, 1, 0, 0, 0], DecodeError::BadField),
            (&[0x11, 2, 0xc3, 0x28, 0, 0], DecodeError::BadUtf8),
            (&[0x02, 1, 3, b'a', b'/', b'b'], DecodeError::BadField),
            (&[0x02, 1, 0], DecodeError::BadField),
        ];
        for (body, err) in cases {
            assert_eq!(Frame::decode(body), Err(err), "{body:?}");
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let topic = [b'a'; MAX_TOPIC_LEN];
        let topic = core::str::from_utf8(&topic).unwrap();
        let payload = [0xaa; MAX_PAYLOAD];
        let frame = Frame::Publish {
            id: 0,
            msg_type: MsgType::RetainedQos2,
            topic,
            payload: &payload,
        };
        let (buf, n) = encode(&frame).unwrap();
        assert_eq!(n, frame.encoded_len());
        assert_eq!(Frame::decode(&buf[HEADER_LEN..n]), Ok(frame));

        let ids = ["ABCDEFGHIJKLMNOPQRSTUVWX"; MAX_PATH];
        let frame = Frame::JoinAccept { path: path(&ids) };
        let (buf, n) = encode(&frame).unwrap();
        assert_eq!(Frame::decode(&buf[HEADER_LEN..n]), Ok(frame));
    }

    #[test]
    fn encode_refuses_what_decode_would() {
        let long = [b'a'; MAX_TOPIC_LEN + 1];
        let long = core::str::from_utf8(&long).unwrap();
        let payload = [0; MAX_PAYLOAD + 1];
        let cases = [
            (
                Frame::Deliver {
                    topic: long,
                    payload: b"",
                },
                EncodeError::FieldTooLong,
            ),
            (
                Frame::Deliver {
                    topic: "t",
                    payload: &payload,
                },
                EncodeError::FieldTooLong,
            ),
            (
                Frame::Deliver {
                    topic: "",
                    payload: b"",
                },
                EncodeError::BadField,
            ),
            (
                Frame::Deliver {
                    topic: "a/#",
                    payload: b"",
                },
                EncodeError::BadField,
            ),
        ];
        for (frame, err) in cases {
            assert_eq!(frame.encode(&mut [0; MAX_FRAME]), Err(err), "{frame:?}");
        }
        let Frame::JoinRequest(req) = join_request() else {
            unreachable!()
        };
        let bad_id = Frame::JoinRequest(JoinRequest {
            node_id: "a b",
            ..req
        });
        assert_eq!(
            bad_id.encode(&mut [0; MAX_FRAME]),
            Err(EncodeError::BadField)
        );
        let long_id = Frame::JoinRequest(JoinRequest {
            node_id: &long[..25],
            ..req
        });
        assert_eq!(
            long_id.encode(&mut [0; MAX_FRAME]),
            Err(EncodeError::FieldTooLong)
        );
        let long_fw = Frame::JoinRequest(JoinRequest {
            firmware_version: &long[..32],
            ..req
        });
        assert_eq!(
            long_fw.encode(&mut [0; MAX_FRAME]),
            Err(EncodeError::FieldTooLong)
        );
    }

    #[test]
    fn deframer_reassembles_byte_by_byte() {
        let mut d = Deframer::new();
        for (frame, bytes) in fixtures() {
            for (i, b) in bytes.iter().enumerate() {
                assert_eq!(d.frame(), None);
                assert_eq!(d.feed(core::slice::from_ref(b)), Ok(1), "byte {i}");
            }
            assert_eq!(d.frame().map(Frame::decode), Some(Ok(frame)));
            assert_eq!(
                d.feed(&[0x00]),
                Ok(0),
                "a complete frame takes no more bytes"
            );
            d.consume();
            assert_eq!(d.frame(), None);
        }
    }

    #[test]
    fn deframer_takes_one_frame_at_a_time() {
        let mut stream = [0; 64];
        stream[..JOIN_ACCEPT.len()].copy_from_slice(JOIN_ACCEPT);
        stream[JOIN_ACCEPT.len()..][..DELIVER.len()].copy_from_slice(DELIVER);
        let stream = &stream[..JOIN_ACCEPT.len() + DELIVER.len()];
        let mut d = Deframer::default();
        assert_eq!(d.feed(stream), Ok(JOIN_ACCEPT.len()));
        assert_eq!(d.frame(), Some(&JOIN_ACCEPT[HEADER_LEN..]));
        assert_eq!(d.feed(&stream[JOIN_ACCEPT.len()..]), Ok(0));
        d.consume();
        assert_eq!(d.feed(&stream[JOIN_ACCEPT.len()..]), Ok(DELIVER.len()));
        assert_eq!(d.frame(), Some(&DELIVER[HEADER_LEN..]));
    }

    #[test]
    fn deframer_refuses_bad_headers_before_buffering() {
        for header in [[0x00, 0x00], [0x05, 0x01], [0xff, 0xff]] {
            let len = usize::from(u16::from_be_bytes(header));
            let mut d = Deframer::new();
            assert_eq!(d.feed(&header[..1]), Ok(1));
            assert_eq!(
                d.feed(&[header[1], 0x20, 0x20]),
                Err(DecodeError::BadLength(len))
            );
            assert_eq!(d.frame(), None);
            d.consume();
            assert_eq!(d.feed(&[0x20]), Err(DecodeError::BadLength(len)), "sticky");
            d.reset();
            assert_eq!(d.feed(&[0x00, 0x01, 0x20]), Ok(3));
            assert_eq!(d.frame(), Some(&[0x20][..]));
        }
    }

    #[test]
    fn deframer_reset_drops_a_partial_frame() {
        let mut d = Deframer::new();
        assert_eq!(d.feed(&PUBLISH[..10]), Ok(10));
        d.consume();
        assert_eq!(
            d.feed(&PUBLISH[10..]),
            Ok(PUBLISH.len() - 10),
            "consume kept it"
        );
        assert!(d.frame().is_some());
        d.reset();
        assert_eq!(d.frame(), None);
        assert_eq!(d.feed(&[0x00, 0x01, 0x21]), Ok(3));
        assert_eq!(d.frame().map(Frame::decode), Some(Ok(Frame::KeepAliveAck)));
    }

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
