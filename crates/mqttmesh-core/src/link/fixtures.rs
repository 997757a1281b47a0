//! Byte fixtures shared by the codec's unit tests: one frame of each type, with the
//! exact bytes it encodes to (header included).

use crate::identity::NodeId;
use crate::topic::MsgType;

use super::{Frame, JoinRequest, Path, Reason};

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub(super) fn path(ids: &[&str]) -> Path {
    ids.iter().map(|s| id(s)).collect()
}

const JOIN_REQUEST: &[u8] = &[
    0x00, 0x28, // body length 40
    0x01, // JOIN_REQUEST
    0x02, // version
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, // nonce
    0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, //
    0x06, b'0', b'0', b'A', b'1', b'B', b'2', // node ID
    0x00, 0x00, 0xa1, 0xb2, // chip ID
    0x00, 0x00, 0x13, 0x37, // firmware ID
    0x05, b'1', b'.', b'2', b'.', b'3', // firmware version
    0x02, // subtree height
];

const NONCE: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

const CHALLENGE: &[u8] = &[
    0x00, 0x36, // body length 54
    0x04, // CHALLENGE
    0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, // nonce
    0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff, //
    0x04, b'R', b'O', b'O', b'T', // parent ID
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, // tag
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, //
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, //
    0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, //
];

const PROOF: &[u8] = &[
    0x00, 0x21, // body length 33
    0x05, // PROOF
    0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, // tag
    0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, //
    0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, //
    0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, //
];

pub(super) fn join_request() -> Frame<'static> {
    Frame::JoinRequest(JoinRequest {
        nonce: NONCE,
        node_id: "00A1B2",
        chip_id: 0x00a1b2,
        firmware_id: 0x1337,
        firmware_version: "1.2.3",
        subtree_height: 2,
    })
}

pub(super) const JOIN_ACCEPT: &[u8] = &[
    0x00, 0x0e, 0x02, 0x02, // two IDs
    0x04, b'R', b'O', b'O', b'T', //
    0x06, b'0', b'0', b'A', b'1', b'B', b'2',
];

pub(super) const PUBLISH: &[u8] = &[
    0x00, 0x1f, 0x10, //
    0x12, 0x34, // message ID
    0x06, b'0', b'0', b'A', b'1', b'B', b'2', // origin
    0x02, // QoS 1
    0x0e, b'm', b'/', b'o', b'u', b't', b'/', b'0', b'0', b'A', b'1', b'B', b'2', b'/', b't', 0x00,
    0x03, 0x00, 0xff, b'\n', // binary payload
];

pub(super) const DELIVER: &[u8] = &[
    0x00, 0x0c, 0x11, //
    0x06, b'm', b'/', b'i', b'n', b'/', b'x', //
    0x00, 0x02, b'h', b'i',
];

const ACK: &[u8] = &[
    0x00, 0x0a, 0x12, //
    0x06, b'0', b'0', b'A', b'1', b'B', b'2', // origin
    0x12, 0x34, // message ID
];

const RESUME: &[u8] = &[
    0x00, 0x07, 0x14, 0x01, // one ID
    0x04, b'R', b'O', b'O', b'T',
];

const SUBTREE: &[u8] = &[
    0x00, 0x15, 0x15, // body length 21, SUBTREE
    0x03, // both lists complete
    0x02, 0x00, 0x00, 0x13, 0x37, 0x00, 0x00, 0x00, 0x2a, // firmware 0x1337, 0x2A
    0x02, 0x06, b'0', b'0', b'A', b'1', b'B', b'2', 0x01, b'C', // nodes 00A1B2, C
];

pub(super) fn subtree() -> Frame<'static> {
    Frame::Subtree(super::Subtree {
        firmware: [0x1337, 0x2a].into_iter().collect(),
        firmware_complete: true,
        nodes: path(&["00A1B2", "C"]).into_iter().collect(),
        nodes_complete: true,
    })
}

pub(super) fn fixtures() -> [(Frame<'static>, &'static [u8]); 15] {
    [
        (join_request(), JOIN_REQUEST),
        (
            Frame::Challenge {
                nonce: core::array::from_fn(|i| 0xf0 + i as u8),
                parent_id: "ROOT",
                tag: [0xaa; 32],
            },
            CHALLENGE,
        ),
        (Frame::Proof { tag: [0x55; 32] }, PROOF),
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
                origin: "00A1B2",
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
        (
            Frame::Ack {
                origin: "00A1B2",
                id: 0x1234,
            },
            ACK,
        ),
        (Frame::Hold, &[0x00, 0x01, 0x13]),
        (Frame::MakeRoom, &[0x00, 0x01, 0x31]),
        (
            Frame::Resume {
                path: path(&["ROOT"]),
            },
            RESUME,
        ),
        (subtree(), SUBTREE),
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
