//! Fuzzes the link codec (`docs/PROTOCOL.md` "Link protocol"): the input as one frame
//! body, then as a byte stream read through a `Deframer` in pseudo-random pieces, then
//! as the fields of a `SUBTREE` frame (the variable-length frame random bodies reach
//! least often). Every frame that decodes must re-encode to the same bytes and decode
//! again to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttmesh_core::link::subtree::{MAX_SUBTREE_FIRMWARE, MAX_SUBTREE_NODES};
use mqttmesh_core::link::{Deframer, Frame, Subtree, HEADER_LEN, MAX_BODY, MAX_FRAME};
use mqttmesh_core::NodeId;

fuzz_target!(|data: &[u8]| {
    check_body(data);
    if let Some((&seed, stream)) = data.split_first() {
        deframe(stream, seed);
    }
    subtree_round_trip(data);
});

/// A `SUBTREE` built from the input (flags, firmware IDs, node IDs cut from the rest)
/// encodes, and its body passes `check_body`.
fn subtree_round_trip(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (fw, ids) = rest.split_at((rest.len() / 2).min(4 * MAX_SUBTREE_FIRMWARE));
    let firmware = fw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let nodes = ids
        .split(|b| *b == b'/')
        .filter_map(|s| NodeId::new(core::str::from_utf8(s).ok()?).ok())
        .take(MAX_SUBTREE_NODES)
        .collect();
    let frame = Frame::Subtree(Subtree {
        firmware,
        firmware_complete: flags & 1 != 0,
        nodes,
        nodes_complete: flags & 2 != 0,
    });
    let mut buf = [0u8; MAX_FRAME];
    let n = frame
        .encode(&mut buf)
        .expect("a SUBTREE within its limits encodes");
    assert!(check_body(&buf[HEADER_LEN..n]));
}

/// Decodes `body`; a decoded frame must round-trip exactly.
fn check_body(body: &[u8]) -> bool {
    let Ok(frame) = Frame::decode(body) else {
        return false;
    };
    let mut buf = [0u8; MAX_FRAME];
    let n = frame.encode(&mut buf).expect("a decoded frame re-encodes");
    assert_eq!(n, frame.encoded_len());
    assert_eq!(&buf[HEADER_LEN..n], body, "the encoding is canonical");
    let again = Frame::decode(&buf[HEADER_LEN..n]).expect("a re-encoded frame decodes");
    assert_eq!(again, frame);
    true
}

/// Feeds `stream` through a deframer in pieces of 1..=64 bytes (or occasionally a whole
/// frame's worth) chosen by a xorshift generator seeded from the input.
fn deframe(mut stream: &[u8], seed: u8) {
    let mut rng = u32::from(seed) | 0x9e37_7900;
    let mut d = Deframer::new();
    while !stream.is_empty() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let size = match rng % 8 {
            0 => MAX_FRAME,
            _ => 1 + (rng >> 8) as usize % 64,
        };
        let (mut piece, rest) = stream.split_at(size.min(stream.len()));
        stream = rest;
        while !piece.is_empty() {
            let Ok(n) = d.feed(piece) else {
                return; // the link would be closed
            };
            assert!(n <= piece.len());
            piece = &piece[n..];
            if let Some(body) = d.frame() {
                assert!(!body.is_empty() && body.len() <= MAX_BODY);
                if !check_body(body) {
                    return; // the link would be closed
                }
                d.consume();
                assert!(d.frame().is_none());
            }
        }
    }
}
