//! Hostile input for the link codec, through the public API only: every truncation and
//! every single-byte corruption of a valid frame of each type, through `Frame::decode`
//! and through a `Deframer`. The contract (`link` module doc): no panic, and either an
//! error or a valid frame — one that re-encodes to exactly the bytes it came from.

use mqttmesh_core::link::{
    DecodeError, Deframer, Frame, JoinRequest, Path, Reason, HEADER_LEN, MAX_BODY, MAX_FRAME,
    MAX_PATH, MAX_PAYLOAD,
};
use mqttmesh_core::{MsgType, NodeId};

fn path(ids: &[&str]) -> Path {
    ids.iter().map(|s| NodeId::new(s).unwrap()).collect()
}

/// One valid frame of every type (and the largest of some), encoded.
fn fixtures() -> Vec<Vec<u8>> {
    let payload = [0x5a; MAX_PAYLOAD];
    let topic = "t".repeat(128);
    let frames = [
        Frame::JoinRequest(JoinRequest {
            version: 1,
            mesh_tag: 0x285d_60f5,
            node_id: "00A1B2",
            chip_id: 0x00a1b2,
            firmware_id: 0x1337,
            firmware_version: "1.2.3",
            subtree_height: 2,
        }),
        Frame::JoinAccept {
            path: path(&["ROOT", "00A1B2", "C0FFEE"]),
        },
        Frame::JoinAccept {
            path: path(&["X"; MAX_PATH]),
        },
        Frame::JoinReject {
            reason: Reason::TooDeep,
        },
        Frame::Publish {
            id: 7,
            origin: "00A1B2",
            msg_type: MsgType::RetainedQos1,
            topic: "m/out/00A1B2/ü",
            payload: &[0, 1, 2, 0xff],
        },
        Frame::Publish {
            id: 0xffff,
            origin: "ABCDEFGHIJKLMNOPQRSTUVWX",
            msg_type: MsgType::Qos2,
            topic: &topic,
            payload: &payload,
        },
        Frame::Deliver {
            topic: "m/in/00A1B2/cmd",
            payload: b"on\n",
        },
        Frame::Deliver {
            topic: "m/in/broadcast/x",
            payload: b"",
        },
        Frame::KeepAlive,
        Frame::KeepAliveAck,
        Frame::Leave {
            reason: Reason::Protocol,
        },
    ];
    frames
        .iter()
        .map(|f| {
            let mut buf = [0u8; MAX_FRAME];
            let n = f.encode(&mut buf).unwrap();
            buf[..n].to_vec()
        })
        .collect()
}

/// Decodes `body`; a success must be a valid frame.
fn check_decode(body: &[u8]) -> Result<(), DecodeError> {
    let frame = Frame::decode(body)?;
    let mut buf = [0u8; MAX_FRAME];
    let n = frame.encode(&mut buf).expect("a decoded frame re-encodes");
    assert_eq!(
        &buf[HEADER_LEN..n],
        body,
        "decode accepted a non-canonical body"
    );
    Ok(())
}

/// Pushes `stream` through a deframer in `piece`-byte reads; returns the frames decoded
/// before the stream ended or broke.
fn check_deframer(stream: &[u8], piece: usize) -> usize {
    let mut d = Deframer::new();
    let mut frames = 0;
    for chunk in stream.chunks(piece) {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            let Ok(n) = d.feed(chunk) else { return frames };
            assert!(n <= chunk.len());
            chunk = &chunk[n..];
            if let Some(body) = d.frame() {
                assert!(!body.is_empty() && body.len() <= MAX_BODY);
                if check_decode(body).is_err() {
                    return frames; // the link would be closed here
                }
                frames += 1;
                d.consume();
            }
        }
    }
    frames
}

#[test]
fn every_truncation_is_an_error_or_incomplete() {
    for frame in fixtures() {
        for end in 0..frame.len() {
            let cut = &frame[..end];
            if end > HEADER_LEN {
                assert!(check_decode(&cut[HEADER_LEN..]).is_err(), "{cut:?}");
            }
            for piece in [1, 2, 3, 7, MAX_FRAME] {
                assert_eq!(check_deframer(cut, piece), 0, "a cut frame came out whole");
            }
        }
    }
}

#[test]
fn every_single_byte_corruption_is_an_error_or_valid() {
    for frame in fixtures() {
        for at in 0..frame.len() {
            for flip in 1..=255u8 {
                let mut bad = frame.clone();
                bad[at] ^= flip;
                let _ = check_decode(&bad[HEADER_LEN..]);
                for piece in [1, 5, MAX_FRAME] {
                    assert!(check_deframer(&bad, piece) <= 1);
                }
            }
        }
    }
}

#[test]
fn corruption_followed_by_a_good_frame_never_panics() {
    // A corrupted header may swallow the next frame or break the stream; either way,
    // nothing panics and no more than two frames come out.
    let all = fixtures();
    for (i, frame) in all.iter().enumerate() {
        let next = &all[(i + 1) % all.len()];
        for at in 0..frame.len().min(8) {
            for flip in [0x01, 0x80, 0xff] {
                let mut stream = frame.clone();
                stream[at] ^= flip;
                stream.extend_from_slice(next);
                for piece in [1, 4, MAX_FRAME] {
                    assert!(check_deframer(&stream, piece) <= 2);
                }
            }
        }
    }
}

#[test]
fn every_bad_header_is_refused_before_the_body() {
    for len in [0usize, MAX_BODY + 1, 0x8000, 0xffff] {
        let header = u16::try_from(len).unwrap().to_be_bytes();
        let mut d = Deframer::new();
        assert_eq!(d.feed(&header), Err(DecodeError::BadLength(len)));
        assert_eq!(d.frame(), None);
    }
}

#[test]
fn decoy_lengths_never_read_out_of_bounds() {
    // Each length field at its maximum encodable value, with no data behind it.
    let cases: [&[u8]; 12] = [
        &[0x01, 1, 0, 0, 0, 0, 0xff],
        &[0x01, 1, 0, 0, 0, 0, 1, b'A', 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
        &[0x02, 0xff],
        &[0x02, 1, 0xff],
        &[0x10, 0, 0, 0xff],
        &[0x10, 0, 0, 1, b'A', 0, 0xff],
        &[0x10, 0, 0, 1, b'A', 0, 1, b't', 0xff, 0xff],
        &[0x12, 0xff],
        &[0x14, 0xff],
        &[0x14, 1, 0xff],
        &[0x11, 0xff],
        &[0x11, 1, b't', 0xff, 0xff],
    ];
    for body in cases {
        assert_eq!(
            check_decode(body),
            Err(DecodeError::FieldTooLong),
            "{body:?}"
        );
    }
}

#[test]
fn every_short_body_of_every_type_is_survivable() {
    // All bodies of one or two bytes.
    for a in 0..=255u8 {
        let _ = check_decode(&[a]);
        for b in 0..=255u8 {
            let _ = check_decode(&[a, b]);
        }
    }
}
