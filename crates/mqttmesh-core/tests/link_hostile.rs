//! Hostile input for the link codec, through the public API only: every truncation and
//! every single-byte corruption of a valid frame of each type, through `Frame::decode`
//! and through a `Deframer`. The contract (`link` module doc): no panic, and either an
//! error or a valid frame — one that re-encodes to exactly the bytes it came from.

use mqttmesh_core::link::{
    DecodeError, Deframer, Frame, JoinRequest, Path, Reason, Subtree, HEADER_LEN, MAX_BODY,
    MAX_FRAME, MAX_PATH, MAX_PAYLOAD,
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
            nonce: [0x11; 16],
            node_id: "00A1B2",
            chip_id: 0x00a1b2,
            firmware_id: 0x1337,
            firmware_version: "1.2.3",
            subtree_height: 2,
        }),
        Frame::Challenge {
            nonce: [0x22; 16],
            parent_id: "ROOT",
            tag: [0x33; 32],
        },
        Frame::Challenge {
            nonce: [0xff; 16],
            parent_id: "ABCDEFGHIJKLMNOPQRSTUVWX",
            tag: [0; 32],
        },
        Frame::Proof { tag: [0x44; 32] },
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
        Frame::Subtree(Subtree {
            firmware: [0x1337, 0xffff_ffff].into_iter().collect(),
            firmware_complete: true,
            nodes: path(&["00A1B2", "C0FFEE"]).into_iter().collect(),
            nodes_complete: false,
        }),
        Frame::Subtree(Subtree {
            firmware: (0..8).collect(),
            firmware_complete: false,
            nodes: path(&["ABCDEFGHIJKLMNOPQRSTUVWX"; 32])
                .into_iter()
                .collect(),
            nodes_complete: true,
        }),
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
    let mut join_id = vec![0x01, 2];
    join_id.extend_from_slice(&[0; 16]);
    join_id.push(0xff);
    let mut join_fw = join_id.clone();
    *join_fw.last_mut().unwrap() = 1;
    join_fw.extend_from_slice(&[b'A', 0, 0, 0, 0, 0, 0, 0, 0, 0xff]);
    let mut challenge = vec![0x04];
    challenge.extend_from_slice(&[0; 16]);
    challenge.push(0xff);
    let cases: [&[u8]; 16] = [
        &[0x15, 0, 9],
        &[0x15, 0, 0, 33],
        &[0x15, 3, 1, 0, 0, 0, 1, 1, 0xff],
        &join_id,
        &join_fw,
        &challenge,
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
fn subtree_flags_beyond_the_known_bits_are_refused() {
    for flags in 4..=255u8 {
        assert_eq!(
            check_decode(&[0x15, flags, 0, 0]),
            Err(DecodeError::BadField)
        );
    }
    for flags in 0..4u8 {
        assert_eq!(check_decode(&[0x15, flags, 0, 0]), Ok(()));
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

#[test]
fn join_requests_of_other_versions_are_refused_by_name() {
    // Version 1 (the mesh-tag request) and any other: the decoder names the version so
    // the parent can answer `JoinReject { Version }`.
    for version in [0u8, 1, 3, 0xff] {
        let mut body = vec![0x01, version];
        body.extend_from_slice(&[0; 40]);
        assert_eq!(
            Frame::decode(&body),
            Err(DecodeError::UnsupportedVersion(version))
        );
    }
}

#[test]
fn handshake_frames_of_the_wrong_size_are_refused() {
    // A Proof one byte short or long, a Challenge whose tag is cut.
    assert_eq!(Frame::decode(&[0x05; 32]), Err(DecodeError::Truncated));
    assert_eq!(Frame::decode(&[0x05; 34]), Err(DecodeError::TrailingBytes));
    let mut challenge = vec![0x04];
    challenge.extend_from_slice(&[0; 16]);
    challenge.extend_from_slice(&[1, b'P']);
    challenge.extend_from_slice(&[0; 31]);
    assert_eq!(Frame::decode(&challenge), Err(DecodeError::Truncated));
    // A Challenge naming an invalid parent ID.
    let mut bad_id = vec![0x04];
    bad_id.extend_from_slice(&[0; 16]);
    bad_id.extend_from_slice(&[3, b'a', b'/', b'b']);
    bad_id.extend_from_slice(&[0; 32]);
    assert_eq!(Frame::decode(&bad_id), Err(DecodeError::BadField));
}
