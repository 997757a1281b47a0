//! [`Frame::decode`] and its field reader. Every read checks the remaining length, and
//! every declared length is checked against its maximum before the bytes are read.

use crate::identity::{NodeId, MAX_ID_LEN};
use crate::topic::MsgType;

use super::{
    check_max, check_node_id, check_topic_chars, check_topic_len, code, subtree, DecodeError,
    Frame, JoinRequest, Path, Reason, Subtree, MAX_BODY, MAX_FIRMWARE_VERSION_LEN, MAX_PATH,
    MAX_PAYLOAD, VERSION,
};

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

    fn node_id_str(&mut self) -> Result<&'a str, DecodeError> {
        let id = self.str8(MAX_ID_LEN)?;
        check_node_id(id)?;
        Ok(id)
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

impl<'a> Frame<'a> {
    /// Decodes one frame body (without the 2-byte header).
    pub fn decode(body: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        if body.is_empty() || body.len() > MAX_BODY {
            return Err(DecodeError::BadLength(body.len()));
        }
        let mut r = Reader { rest: body };
        let frame = match r.u8()? {
            code::JOIN_REQUEST => Self::decode_join_request(&mut r)?,
            code::JOIN_ACCEPT => Frame::JoinAccept {
                path: Self::decode_path(&mut r)?,
            },
            code::JOIN_REJECT => Frame::JoinReject {
                reason: r.reason()?,
            },
            code::CHALLENGE => Frame::Challenge {
                nonce: r.array()?,
                parent_id: r.node_id_str()?,
                tag: r.array()?,
            },
            code::PROOF => Frame::Proof { tag: r.array()? },
            code::PUBLISH => Self::decode_publish(&mut r)?,
            code::DELIVER => Frame::Deliver {
                topic: r.topic()?,
                payload: r.payload()?,
            },
            code::ACK => {
                let origin = r.str8(MAX_ID_LEN)?;
                check_node_id(origin)?;
                Frame::Ack {
                    origin,
                    id: r.u16()?,
                }
            }
            code::HOLD => Frame::Hold,
            code::MAKE_ROOM => Frame::MakeRoom,
            code::RESUME => Frame::Resume {
                path: Self::decode_path(&mut r)?,
            },
            code::SUBTREE => Self::decode_subtree(&mut r)?,
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
        // The version comes first so that every version can refuse every other cleanly.
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        Ok(Frame::JoinRequest(JoinRequest {
            nonce: r.array()?,
            node_id: r.node_id_str()?,
            chip_id: r.u32()?,
            firmware_id: r.u32()?,
            firmware_version: r.str8(MAX_FIRMWARE_VERSION_LEN)?,
            subtree_height: r.u8()?,
        }))
    }

    fn decode_path(r: &mut Reader<'a>) -> Result<Path, DecodeError> {
        let count = usize::from(r.u8()?);
        check_max(count, MAX_PATH)?;
        let mut path = Path::new();
        for _ in 0..count {
            // Cannot fail: `count` ≤ MAX_PATH, the capacity; mapped rather than unwrapped.
            path.push(r.node_id()?)
                .map_err(|_| DecodeError::FieldTooLong)?;
        }
        Ok(path)
    }

    fn decode_subtree(r: &mut Reader<'a>) -> Result<Frame<'a>, DecodeError> {
        let flags = r.u8()?;
        if flags & !subtree::KNOWN_FLAGS != 0 {
            return Err(DecodeError::BadField);
        }
        let count = usize::from(r.u8()?);
        check_max(count, subtree::MAX_SUBTREE_FIRMWARE)?;
        let mut firmware = subtree::FirmwareSet::new();
        for _ in 0..count {
            // Cannot fail: `count` ≤ the capacity; mapped rather than unwrapped.
            firmware
                .push(r.u32()?)
                .map_err(|_| DecodeError::FieldTooLong)?;
        }
        let count = usize::from(r.u8()?);
        check_max(count, subtree::MAX_SUBTREE_NODES)?;
        let mut nodes = subtree::NodeList::new();
        for _ in 0..count {
            // Cannot fail: `count` ≤ the capacity; mapped rather than unwrapped.
            nodes
                .push(r.node_id()?)
                .map_err(|_| DecodeError::FieldTooLong)?;
        }
        Ok(Frame::Subtree(Subtree {
            firmware,
            firmware_complete: flags & subtree::FIRMWARE_COMPLETE != 0,
            nodes,
            nodes_complete: flags & subtree::NODES_COMPLETE != 0,
        }))
    }

    fn decode_publish(r: &mut Reader<'a>) -> Result<Frame<'a>, DecodeError> {
        let id = r.u16()?;
        let origin = r.str8(MAX_ID_LEN)?;
        check_node_id(origin)?;
        let code = r.u8()?;
        let msg_type = MsgType::from_u8(code).ok_or(DecodeError::BadMsgType(code))?;
        Ok(Frame::Publish {
            id,
            origin,
            msg_type,
            topic: r.topic()?,
            payload: r.payload()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::fixtures::fixtures;
    use crate::link::HEADER_LEN;

    #[test]
    fn fixtures_decode_to_frames() {
        for (frame, bytes) in fixtures() {
            assert_eq!(Frame::decode(&bytes[HEADER_LEN..]), Ok(frame));
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
        let publish = [0x10, 0, 1, 1, b'A', 7, 1, b't', 0, 0];
        assert_eq!(Frame::decode(&publish), Err(DecodeError::BadMsgType(7)));
        assert_eq!(
            Frame::decode(&[0x01, 1, 0]),
            Err(DecodeError::UnsupportedVersion(1))
        );
        for code in 1..=9 {
            assert_eq!(Reason::from_u8(code).map(|r| r as u8), Some(code));
        }
    }

    #[test]
    fn declared_lengths_are_checked_before_the_bytes() {
        // Topic 129, payload 1025, ID 25, version 32, path 33, parent ID 25: refused
        // without the data.
        let mut join_id = [0u8; 19];
        join_id[..2].copy_from_slice(&[0x01, 2]);
        join_id[18] = 25;
        let mut join_fw = [0u8; 29];
        join_fw[..2].copy_from_slice(&[0x01, 2]);
        join_fw[18..20].copy_from_slice(&[1, b'A']);
        join_fw[28] = 32;
        let mut challenge = [0u8; 18];
        challenge[0] = 0x04;
        challenge[17] = 25;
        let cases: [&[u8]; 7] = [
            &[0x11, 129],
            &[0x11, 1, b't', 0x04, 0x01],
            &[0x10, 0, 0, 1, b'A', 0, 129],
            &join_id,
            &join_fw,
            &[0x02, 33],
            &challenge,
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
}
