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

pub(super) fn join_request() -> Frame<'static> {
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

pub(super) fn fixtures() -> [(Frame<'static>, &'static [u8]); 11] {
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
        (
            Frame::Resume {
                path: path(&["ROOT"]),
            },
            RESUME,
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
