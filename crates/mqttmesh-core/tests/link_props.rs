//! Property tests for the link codec (`docs/PROTOCOL.md` "Link protocol"): every valid
//! frame round-trips, decoding never panics, and the deframer reassembles frames however
//! the stream is split.

use mqttmesh_core::link::subtree::{MAX_SUBTREE_FIRMWARE, MAX_SUBTREE_NODES};
use mqttmesh_core::link::{
    code, Deframer, Frame, JoinRequest, Path, Reason, Subtree, HEADER_LEN, MAX_BODY,
    MAX_FIRMWARE_VERSION_LEN, MAX_FRAME, MAX_PATH, MAX_PAYLOAD,
};
use mqttmesh_core::{MsgType, NodeId};
use proptest::prelude::*;

/// A frame that owns its fields, so a strategy can produce it.
#[derive(Clone, Debug)]
enum Owned {
    JoinRequest {
        nonce: [u8; 16],
        id: String,
        chip: u32,
        fw: u32,
        fw_ver: String,
        h: u8,
    },
    Challenge {
        nonce: [u8; 16],
        parent: String,
        tag: [u8; 32],
    },
    Proof([u8; 32]),
    JoinAccept(Vec<String>),
    JoinReject(Reason),
    Publish {
        id: u16,
        origin: String,
        msg_type: MsgType,
        topic: String,
        payload: Vec<u8>,
    },
    Deliver {
        topic: String,
        payload: Vec<u8>,
    },
    Ack {
        origin: String,
        id: u16,
    },
    Hold,
    MakeRoom,
    Resume(Vec<String>),
    Subtree {
        firmware: Vec<u32>,
        firmware_complete: bool,
        nodes: Vec<String>,
        nodes_complete: bool,
    },
    KeepAlive,
    KeepAliveAck,
    Leave(Reason),
}

impl Owned {
    fn frame(&self) -> Frame<'_> {
        match self {
            Owned::JoinRequest {
                nonce,
                id,
                chip,
                fw,
                fw_ver,
                h,
            } => Frame::JoinRequest(JoinRequest {
                nonce: *nonce,
                node_id: id,
                chip_id: *chip,
                firmware_id: *fw,
                firmware_version: fw_ver,
                subtree_height: *h,
            }),
            Owned::Challenge { nonce, parent, tag } => Frame::Challenge {
                nonce: *nonce,
                parent_id: parent,
                tag: *tag,
            },
            Owned::Proof(tag) => Frame::Proof { tag: *tag },
            Owned::JoinAccept(ids) => Frame::JoinAccept {
                path: ids
                    .iter()
                    .map(|s| NodeId::new(s).unwrap())
                    .collect::<Path>(),
            },
            Owned::JoinReject(reason) => Frame::JoinReject { reason: *reason },
            Owned::Publish {
                id,
                origin,
                msg_type,
                topic,
                payload,
            } => Frame::Publish {
                id: *id,
                origin,
                msg_type: *msg_type,
                topic,
                payload,
            },
            Owned::Deliver { topic, payload } => Frame::Deliver { topic, payload },
            Owned::Ack { origin, id } => Frame::Ack { origin, id: *id },
            Owned::Hold => Frame::Hold,
            Owned::MakeRoom => Frame::MakeRoom,
            Owned::Resume(ids) => Frame::Resume {
                path: ids
                    .iter()
                    .map(|s| NodeId::new(s).unwrap())
                    .collect::<Path>(),
            },
            Owned::Subtree {
                firmware,
                firmware_complete,
                nodes,
                nodes_complete,
            } => Frame::Subtree(Subtree {
                firmware: firmware.iter().copied().collect(),
                firmware_complete: *firmware_complete,
                nodes: nodes.iter().map(|s| NodeId::new(s).unwrap()).collect(),
                nodes_complete: *nodes_complete,
            }),
            Owned::KeepAlive => Frame::KeepAlive,
            Owned::KeepAliveAck => Frame::KeepAliveAck,
            Owned::Leave(reason) => Frame::Leave { reason: *reason },
        }
    }
}

fn node_id() -> impl Strategy<Value = String> {
    // Printable ASCII without '/', '+', '#' (and without space, which is not graphic).
    let allowed: Vec<char> = ('!'..='~')
        .filter(|c| !matches!(c, '/' | '+' | '#'))
        .collect();
    prop::collection::vec(prop::sample::select(allowed), 1..=24)
        .prop_map(|cs| cs.into_iter().collect())
}

fn topic() -> impl Strategy<Value = String> {
    // Up to 32 chars of up to 4 bytes each: never more than 128 bytes.
    prop_oneof!["[^+#\\x00]{1,32}", "[a-z/]{1,128}"]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..=64),
        prop::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
    ]
}

fn reason() -> impl Strategy<Value = Reason> {
    (1u8..=9).prop_map(|c| Reason::from_u8(c).unwrap())
}

fn msg_type() -> impl Strategy<Value = MsgType> {
    (0u8..=6).prop_map(|c| MsgType::from_u8(c).unwrap())
}

fn firmware_version() -> impl Strategy<Value = String> {
    // The first arm reaches exactly MAX_FIRMWARE_VERSION_LEN bytes.
    const _: () = assert!(MAX_FIRMWARE_VERSION_LEN == 31);
    prop_oneof!["[ -~]{0,31}", "\\PC{0,7}"]
}

fn owned_frame() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (
            any::<[u8; 16]>(),
            node_id(),
            any::<u32>(),
            any::<u32>(),
            firmware_version(),
            any::<u8>()
        )
            .prop_map(|(nonce, id, chip, fw, fw_ver, h)| Owned::JoinRequest {
                nonce,
                id,
                chip,
                fw,
                fw_ver,
                h
            }),
        (any::<[u8; 16]>(), node_id(), any::<[u8; 32]>())
            .prop_map(|(nonce, parent, tag)| Owned::Challenge { nonce, parent, tag }),
        any::<[u8; 32]>().prop_map(Owned::Proof),
        prop::collection::vec(node_id(), 0..=MAX_PATH).prop_map(Owned::JoinAccept),
        reason().prop_map(Owned::JoinReject),
        (any::<u16>(), node_id(), msg_type(), topic(), payload()).prop_map(
            |(id, origin, msg_type, topic, payload)| {
                Owned::Publish {
                    id,
                    origin,
                    msg_type,
                    topic,
                    payload,
                }
            }
        ),
        (topic(), payload()).prop_map(|(topic, payload)| Owned::Deliver { topic, payload }),
        (node_id(), any::<u16>()).prop_map(|(origin, id)| Owned::Ack { origin, id }),
        Just(Owned::Hold),
        Just(Owned::MakeRoom),
        prop::collection::vec(node_id(), 0..=MAX_PATH).prop_map(Owned::Resume),
        (
            prop::collection::vec(any::<u32>(), 0..=MAX_SUBTREE_FIRMWARE),
            any::<bool>(),
            prop::collection::vec(node_id(), 0..=MAX_SUBTREE_NODES),
            any::<bool>(),
        )
            .prop_map(|(firmware, firmware_complete, nodes, nodes_complete)| {
                Owned::Subtree {
                    firmware,
                    firmware_complete,
                    nodes,
                    nodes_complete,
                }
            }),
        Just(Owned::KeepAlive),
        Just(Owned::KeepAliveAck),
        reason().prop_map(Owned::Leave),
    ]
}

/// A decoded frame re-encodes to exactly the bytes it came from (the encoding is
/// canonical), so a successful decode is a valid frame.
fn assert_canonical(body: &[u8], frame: &Frame<'_>) {
    let mut buf = [0u8; MAX_FRAME];
    let n = frame.encode(&mut buf).expect("a decoded frame re-encodes");
    assert_eq!(&buf[HEADER_LEN..n], body);
}

proptest! {
    #[test]
    fn valid_frames_round_trip(owned in owned_frame()) {
        let frame = owned.frame();
        let mut buf = [0u8; MAX_FRAME];
        let n = frame.encode(&mut buf).unwrap();
        prop_assert_eq!(n, frame.encoded_len());
        prop_assert!(n <= MAX_FRAME);
        prop_assert_eq!(usize::from(u16::from_be_bytes([buf[0], buf[1]])), n - HEADER_LEN);
        prop_assert_eq!(buf[HEADER_LEN], frame.code());
        prop_assert_eq!(Frame::decode(&buf[HEADER_LEN..n]), Ok(frame));
    }

    #[test]
    fn decode_never_panics(body in prop::collection::vec(any::<u8>(), 0..=MAX_BODY + 8)) {
        if let Ok(frame) = Frame::decode(&body) {
            assert_canonical(&body, &frame);
        }
    }

    #[test]
    fn decode_never_panics_past_the_type(
        ty in prop::sample::select(vec![
            code::JOIN_REQUEST, code::JOIN_ACCEPT, code::JOIN_REJECT, code::CHALLENGE,
            code::PROOF, code::PUBLISH,
            code::DELIVER, code::SUBTREE, code::KEEPALIVE, code::KEEPALIVE_ACK, code::LEAVE,
        ]),
        rest in prop::collection::vec(any::<u8>(), 0..=96),
    ) {
        let mut body = vec![ty];
        body.extend_from_slice(&rest);
        if let Ok(frame) = Frame::decode(&body) {
            assert_canonical(&body, &frame);
        }
    }

    #[test]
    fn deframer_reassembles_split_streams(
        frames in prop::collection::vec(owned_frame(), 1..=4),
        cuts in prop::collection::vec(prop_oneof![1usize..=8, 1usize..=MAX_FRAME], 0..=16),
    ) {
        let mut stream = Vec::new();
        for owned in &frames {
            let mut buf = [0u8; MAX_FRAME];
            let n = owned.frame().encode(&mut buf).unwrap();
            stream.extend_from_slice(&buf[..n]);
        }
        let mut d = Deframer::new();
        let mut got = 0;
        let mut rest = &stream[..];
        let mut pieces = cuts.iter().cycle();
        while !rest.is_empty() {
            let size = pieces.next().copied().unwrap_or(rest.len()).min(rest.len());
            let mut piece = &rest[..size];
            rest = &rest[size..];
            while !piece.is_empty() {
                let n = d.feed(piece).unwrap();
                piece = &piece[n..];
                if let Some(body) = d.frame() {
                    prop_assert_eq!(Frame::decode(body), Ok(frames[got].frame()));
                    got += 1;
                    d.consume();
                }
            }
        }
        prop_assert_eq!(got, frames.len());
        prop_assert_eq!(d.frame(), None);
    }

    #[test]
    fn deframer_never_panics(
        stream in prop::collection::vec(any::<u8>(), 0..=2 * MAX_FRAME),
        piece in 1usize..=MAX_FRAME,
    ) {
        let mut d = Deframer::new();
        for chunk in stream.chunks(piece) {
            let mut chunk = chunk;
            while !chunk.is_empty() {
                let Ok(n) = d.feed(chunk) else { return Ok(()) };
                chunk = &chunk[n..];
                if let Some(body) = d.frame() {
                    prop_assert!(!body.is_empty() && body.len() <= MAX_BODY);
                    if let Ok(frame) = Frame::decode(body) {
                        assert_canonical(body, &frame);
                    }
                    d.consume();
                }
            }
        }
    }
}
