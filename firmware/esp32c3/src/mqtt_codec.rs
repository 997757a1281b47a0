//! A minimal MQTT 3.1.1 codec: the packets a node's broker session needs (CONNECT with
//! a will and credentials, SUBSCRIBE, PUBLISH at QoS 0/1, PUBACK, PINGREQ,
//! DISCONNECT) and the decoder for what the broker sends back (CONNACK, SUBACK,
//! PUBLISH, PUBACK, PINGRESP). MQTT 3.1.1 (OASIS, 2014) sections are named per packet.
//!
//! No panics on input: every length is checked against the buffer before it is read,
//! and a packet whose declared length exceeds the receive buffer is refused before any
//! of it is buffered.

use core::str;

/// Packet types (MQTT 3.1.1 §2.2.1), upper nibble of the first byte.
pub const CONNECT: u8 = 0x10;
pub const CONNACK: u8 = 0x20;
pub const PUBLISH: u8 = 0x30;
pub const PUBACK: u8 = 0x40;
pub const SUBSCRIBE: u8 = 0x82;
pub const SUBACK: u8 = 0x90;
pub const PINGREQ: u8 = 0xC0;
pub const PINGRESP: u8 = 0xD0;
pub const DISCONNECT: u8 = 0xE0;

/// Why encoding or decoding failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// A length field is malformed or larger than we accept.
    BadLength,
    /// A field is not valid (UTF-8 topic, unknown packet, ...).
    Malformed,
}

/// CONNECT fields (§3.1).
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub keep_alive_secs: u16,
    pub will_topic: &'a str,
    pub will_payload: &'a [u8],
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
}

/// A packet from the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// CONNACK return code (0 = accepted).
    ConnAck { code: u8 },
    /// SUBACK for a packet id, with the first granted QoS (0x80 = failure).
    SubAck { id: u16, granted: u8 },
    /// PUBLISH (§3.3).
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        qos: u8,
        retain: bool,
        id: Option<u16>,
    },
    /// PUBACK for a packet id.
    PubAck { id: u16 },
    /// PINGRESP.
    PingResp,
    /// Any other packet type (ignored by the session).
    Other { kind: u8 },
}

struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(CodecError::BufferTooSmall)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(CodecError::BufferTooSmall)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
    fn u8(&mut self, b: u8) -> Result<(), CodecError> {
        self.put(&[b])
    }
    fn u16(&mut self, v: u16) -> Result<(), CodecError> {
        self.put(&v.to_be_bytes())
    }
    fn bytes16(&mut self, b: &[u8]) -> Result<(), CodecError> {
        self.u16(u16::try_from(b.len()).map_err(|_| CodecError::BadLength)?)?;
        self.put(b)
    }
}

/// Writes a fixed header and `body_len`; returns the header length.
fn header(buf: &mut [u8], first: u8, body_len: usize) -> Result<usize, CodecError> {
    if body_len > 268_435_455 {
        return Err(CodecError::BadLength);
    }
    let mut w = Writer { buf, pos: 0 };
    w.u8(first)?;
    let mut len = body_len;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        w.u8(byte)?;
        if len == 0 {
            break;
        }
    }
    Ok(w.pos)
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a packet whose body `fill` writes into a writer; computes the header first.
fn packet(
    buf: &mut [u8],
    first: u8,
    body_len: usize,
    fill: impl FnOnce(&mut Writer<'_>) -> Result<(), CodecError>,
) -> Result<usize, CodecError> {
    let head = header(buf, first, body_len)?;
    debug_assert_eq!(head, 1 + varint_len(body_len));
    let rest = buf.get_mut(head..).ok_or(CodecError::BufferTooSmall)?;
    let mut w = Writer { buf: rest, pos: 0 };
    fill(&mut w)?;
    if w.pos != body_len {
        return Err(CodecError::BadLength);
    }
    Ok(head + body_len)
}

/// CONNECT with clean session, a retained QoS 1 will, optional credentials (§3.1).
pub fn connect(buf: &mut [u8], c: &Connect<'_>) -> Result<usize, CodecError> {
    let mut flags = 0x02 | 0x04 | (1 << 3) | 0x20; // clean session, will, will QoS 1, will retain
    let mut len = 10 + 2 + c.client_id.len() + 2 + c.will_topic.len() + 2 + c.will_payload.len();
    if let Some(u) = c.username {
        flags |= 0x80;
        len += 2 + u.len();
        if let Some(p) = c.password {
            flags |= 0x40;
            len += 2 + p.len();
        }
    }
    packet(buf, CONNECT, len, |w| {
        w.bytes16(b"MQTT")?;
        w.u8(4)?; // protocol level 3.1.1
        w.u8(flags)?;
        w.u16(c.keep_alive_secs)?;
        w.bytes16(c.client_id.as_bytes())?;
        w.bytes16(c.will_topic.as_bytes())?;
        w.bytes16(c.will_payload)?;
        if let Some(u) = c.username {
            w.bytes16(u.as_bytes())?;
            if let Some(p) = c.password {
                w.bytes16(p.as_bytes())?;
            }
        }
        Ok(())
    })
}

/// SUBSCRIBE to one filter at `qos` (§3.8).
pub fn subscribe(buf: &mut [u8], id: u16, filter: &str, qos: u8) -> Result<usize, CodecError> {
    packet(buf, SUBSCRIBE, 2 + 2 + filter.len() + 1, |w| {
        w.u16(id)?;
        w.bytes16(filter.as_bytes())?;
        w.u8(qos.min(2))
    })
}

/// PUBLISH (§3.3); `id` is required for QoS > 0.
pub fn publish(
    buf: &mut [u8],
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    id: u16,
) -> Result<usize, CodecError> {
    let qos = qos.min(2);
    let first = PUBLISH | (qos << 1) | u8::from(retain);
    let id_len = if qos > 0 { 2 } else { 0 };
    packet(buf, first, 2 + topic.len() + id_len + payload.len(), |w| {
        w.bytes16(topic.as_bytes())?;
        if qos > 0 {
            w.u16(id)?;
        }
        w.put(payload)
    })
}

/// PUBACK (§3.4).
pub fn puback(buf: &mut [u8], id: u16) -> Result<usize, CodecError> {
    packet(buf, PUBACK, 2, |w| w.u16(id))
}

/// PINGREQ (§3.12).
pub fn pingreq(buf: &mut [u8]) -> Result<usize, CodecError> {
    packet(buf, PINGREQ, 0, |_| Ok(()))
}

/// DISCONNECT (§3.14).
pub fn disconnect(buf: &mut [u8]) -> Result<usize, CodecError> {
    packet(buf, DISCONNECT, 0, |_| Ok(()))
}

/// Length of the first whole packet in `buf`: `Ok(None)` while incomplete; an error
/// when the declared length is malformed or exceeds `max`.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, CodecError> {
    let mut len: usize = 0;
    let mut shift = 0;
    for i in 1..=4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            let total = 1 + i + len;
            if total > max {
                return Err(CodecError::BadLength);
            }
            return Ok((buf.len() >= total).then_some(total));
        }
        shift += 7;
    }
    Err(CodecError::BadLength)
}

/// Decodes one whole packet (as delimited by [`frame_len`]).
pub fn decode(packet: &[u8]) -> Result<Incoming<'_>, CodecError> {
    let first = *packet.first().ok_or(CodecError::Malformed)?;
    let head = (1..=4)
        .find(|&i| packet.get(i).is_some_and(|b| b & 0x80 == 0))
        .ok_or(CodecError::BadLength)?
        + 1;
    let body = packet.get(head..).ok_or(CodecError::BadLength)?;
    let u16_at = |at: usize| -> Result<u16, CodecError> {
        let b = body.get(at..at + 2).ok_or(CodecError::Malformed)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    };
    Ok(match first & 0xF0 {
        CONNACK => Incoming::ConnAck {
            code: *body.get(1).ok_or(CodecError::Malformed)?,
        },
        SUBACK => Incoming::SubAck {
            id: u16_at(0)?,
            granted: *body.get(2).ok_or(CodecError::Malformed)?,
        },
        PUBACK => Incoming::PubAck { id: u16_at(0)? },
        PINGRESP => Incoming::PingResp,
        PUBLISH => {
            let qos = (first >> 1) & 0x03;
            if qos == 3 {
                return Err(CodecError::Malformed);
            }
            let tlen = usize::from(u16_at(0)?);
            let topic = body.get(2..2 + tlen).ok_or(CodecError::Malformed)?;
            let topic = str::from_utf8(topic).map_err(|_| CodecError::Malformed)?;
            let mut at = 2 + tlen;
            let id = if qos > 0 {
                let id = u16_at(at)?;
                at += 2;
                Some(id)
            } else {
                None
            };
            let payload = body.get(at..).ok_or(CodecError::Malformed)?;
            Incoming::Publish {
                topic,
                payload,
                qos,
                retain: first & 0x01 != 0,
                id,
            }
        }
        kind => Incoming::Other { kind },
    })
}
