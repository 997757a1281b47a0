//! [`Frame::encode`] and its field writer. It applies the decoder's field checks first,
//! so it never writes a frame the peer would refuse.

use crate::identity::MAX_ID_LEN;

use super::subtree::{MAX_SUBTREE_FIRMWARE, MAX_SUBTREE_NODES};
use super::{
    check_max, check_node_id, check_topic, code, EncodeError, Frame, Invalid, HEADER_LEN, MAX_BODY,
    MAX_FIRMWARE_VERSION_LEN, MAX_PATH, MAX_PAYLOAD, MAX_TOPIC_LEN, NONCE_LEN, TAG_LEN, VERSION,
};

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
const _: () = assert!(29 + MAX_ID_LEN + MAX_FIRMWARE_VERSION_LEN <= MAX_BODY);
const _: () = assert!(2 + NONCE_LEN + MAX_ID_LEN + TAG_LEN <= MAX_BODY);
const _: () = assert!(2 + MAX_PATH * (1 + MAX_ID_LEN) <= MAX_BODY);
const _: () = assert!(MAX_PATH <= u8::MAX as usize);
const _: () = assert!(MAX_SUBTREE_FIRMWARE <= u8::MAX as usize);
const _: () = assert!(MAX_SUBTREE_NODES <= u8::MAX as usize);
const _: () =
    assert!(4 + 4 * MAX_SUBTREE_FIRMWARE + MAX_SUBTREE_NODES * (1 + MAX_ID_LEN) <= MAX_BODY);
const _: () = assert!(MAX_TOPIC_LEN + MAX_PAYLOAD + MAX_ID_LEN + 16 <= MAX_BODY);

impl Frame<'_> {
    /// The frame type code (see [`code`]).
    pub fn code(&self) -> u8 {
        match self {
            Frame::JoinRequest(_) => code::JOIN_REQUEST,
            Frame::JoinAccept { .. } => code::JOIN_ACCEPT,
            Frame::JoinReject { .. } => code::JOIN_REJECT,
            Frame::Challenge { .. } => code::CHALLENGE,
            Frame::Proof { .. } => code::PROOF,
            Frame::Publish { .. } => code::PUBLISH,
            Frame::Deliver { .. } => code::DELIVER,
            Frame::Ack { .. } => code::ACK,
            Frame::Hold => code::HOLD,
            Frame::Resume { .. } => code::RESUME,
            Frame::Subtree(_) => code::SUBTREE,
            Frame::KeepAlive => code::KEEPALIVE,
            Frame::KeepAliveAck => code::KEEPALIVE_ACK,
            Frame::Leave { .. } => code::LEAVE,
            Frame::MakeRoom => code::MAKE_ROOM,
        }
    }

    /// Bytes `encode` writes (header + body) if the fields are within their limits;
    /// never more than [`MAX_FRAME`](super::MAX_FRAME) for such a frame.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.body_len())
    }

    fn body_len(&self) -> usize {
        let fields = match self {
            Frame::JoinRequest(j) => (1 + NONCE_LEN + 1 + 4 + 4 + 1 + 1)
                .saturating_add(j.node_id.len())
                .saturating_add(j.firmware_version.len()),
            Frame::JoinAccept { path } | Frame::Resume { path } => path
                .iter()
                .fold(1, |n: usize, id| n.saturating_add(1 + id.as_str().len())),
            Frame::JoinReject { .. } | Frame::Leave { .. } => 1,
            Frame::Challenge { parent_id, .. } => {
                (NONCE_LEN + 1 + TAG_LEN).saturating_add(parent_id.len())
            }
            Frame::Proof { .. } => TAG_LEN,
            Frame::Publish {
                topic,
                payload,
                origin,
                ..
            } => 7usize
                .saturating_add(origin.len())
                .saturating_add(topic.len())
                .saturating_add(payload.len()),
            Frame::Deliver { topic, payload } => 3usize
                .saturating_add(topic.len())
                .saturating_add(payload.len()),
            Frame::Ack { origin, .. } => 3usize.saturating_add(origin.len()),
            Frame::Subtree(s) => s
                .nodes
                .iter()
                .fold(3 + 4 * s.firmware.len(), |n: usize, id| {
                    n.saturating_add(1 + id.as_str().len())
                }),
            Frame::KeepAlive | Frame::KeepAliveAck | Frame::Hold | Frame::MakeRoom => 0,
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
            Frame::Challenge { parent_id, .. } => check_node_id(parent_id).map(|_| ()),
            Frame::Publish {
                topic,
                payload,
                origin,
                ..
            } => {
                check_node_id(origin)?;
                check_topic(topic)?;
                check_max(payload.len(), MAX_PAYLOAD)
            }
            Frame::Deliver { topic, payload } => {
                check_topic(topic)?;
                check_max(payload.len(), MAX_PAYLOAD)
            }
            Frame::Ack { origin, .. } => check_node_id(origin).map(|_| ()),
            // Lengths and node IDs are guaranteed by their types.
            Frame::JoinAccept { .. }
            | Frame::Subtree(_)
            | Frame::Resume { .. }
            | Frame::Hold
            | Frame::Proof { .. }
            | Frame::JoinReject { .. }
            | Frame::Leave { .. }
            | Frame::KeepAlive
            | Frame::KeepAliveAck
            | Frame::MakeRoom => Ok(()),
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
                w.u8(VERSION)?;
                w.put(&j.nonce)?;
                w.str8(j.node_id)?;
                w.u32(j.chip_id)?;
                w.u32(j.firmware_id)?;
                w.str8(j.firmware_version)?;
                w.u8(j.subtree_height)
            }
            Frame::JoinAccept { path } | Frame::Resume { path } => {
                let count = u8::try_from(path.len()).map_err(|_| EncodeError::FieldTooLong)?;
                w.u8(count)?;
                path.iter().try_for_each(|id| w.str8(id.as_str()))
            }
            Frame::JoinReject { reason } | Frame::Leave { reason } => w.u8(*reason as u8),
            Frame::Challenge {
                nonce,
                parent_id,
                tag,
            } => {
                w.put(nonce)?;
                w.str8(parent_id)?;
                w.put(tag)
            }
            Frame::Proof { tag } => w.put(tag),
            Frame::Publish {
                id,
                origin,
                msg_type,
                topic,
                payload,
            } => {
                w.u16(*id)?;
                w.str8(origin)?;
                w.u8(msg_type.to_u8())?;
                w.str8(topic)?;
                w.payload(payload)
            }
            Frame::Deliver { topic, payload } => {
                w.str8(topic)?;
                w.payload(payload)
            }
            Frame::Ack { origin, id } => {
                w.str8(origin)?;
                w.u16(*id)
            }
            Frame::Subtree(s) => {
                w.u8(s.flags())?;
                // Cannot truncate: the capacities are below 256 (asserted above).
                w.u8(s.firmware.len() as u8)?;
                s.firmware.iter().try_for_each(|f| w.u32(*f))?;
                w.u8(s.nodes.len() as u8)?;
                s.nodes.iter().try_for_each(|id| w.str8(id.as_str()))
            }
            Frame::KeepAlive | Frame::KeepAliveAck | Frame::Hold | Frame::MakeRoom => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::fixtures::{fixtures, join_request, path};
    use crate::link::{JoinRequest, MAX_FRAME};
    use crate::topic::MsgType;

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
    fn encode_needs_room_for_the_whole_frame() {
        for (frame, bytes) in fixtures() {
            let mut buf = [0; MAX_FRAME];
            let short = &mut buf[..bytes.len() - 1];
            assert_eq!(frame.encode(short), Err(EncodeError::BufferTooSmall));
            assert_eq!(frame.encode(&mut buf[..bytes.len()]), Ok(bytes.len()));
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let topic = [b'a'; MAX_TOPIC_LEN];
        let topic = core::str::from_utf8(&topic).unwrap();
        let payload = [0xaa; MAX_PAYLOAD];
        let frame = Frame::Publish {
            id: 0,
            origin: "ABCDEFGHIJKLMNOPQRSTUVWX",
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
}
