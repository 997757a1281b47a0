//! The `SUBTREE` announcement (`docs/PROTOCOL.md` "Subtree announcements") and the
//! capability marker that says a parent accepts it.
//!
//! A child tells its parent which firmware IDs and which node IDs live in its subtree
//! (itself included), so the parent can send OTA traffic for a firmware ID only down
//! the branches that run it and route `<in><ID>/…` before the node has published
//! anything. Both lists are bounded; a list that did not fit, or that depends on a
//! descendant that never announced, is sent with its *complete* flag clear, which the
//! parent reads as "anything may be down there".
//!
//! Version 2 peers treat an unknown frame type as a protocol violation, so a child
//! sends `SUBTREE` only to a parent that asked for it: a parent that accepts the frame
//! starts the nonce of its `CHALLENGE` with [`CAPS_MAGIC`] and a capability byte. The
//! nonce is covered by both handshake tags, so nobody between them can add or strip the
//! marker; 12 random bytes remain.

use heapless::Vec;

use super::auth::Nonce;
use crate::identity::NodeId;

/// Most firmware IDs in one announcement.
pub const MAX_SUBTREE_FIRMWARE: usize = 8;
/// Most node IDs in one announcement.
pub const MAX_SUBTREE_NODES: usize = 32;

/// The firmware IDs of an announcement.
pub type FirmwareSet = Vec<u32, MAX_SUBTREE_FIRMWARE>;
/// The node IDs of an announcement.
pub type NodeList = Vec<NodeId, MAX_SUBTREE_NODES>;

/// Flag bit: the firmware list is every firmware ID in the subtree.
pub const FIRMWARE_COMPLETE: u8 = 0x01;
/// Flag bit: the node list is every node ID in the subtree.
pub const NODES_COMPLETE: u8 = 0x02;
/// Every defined flag bit; any other bit set is `BadField`.
pub const KNOWN_FLAGS: u8 = FIRMWARE_COMPLETE | NODES_COMPLETE;

/// First bytes of a `CHALLENGE` or `JOIN_REQUEST` nonce whose sender speaks the
/// capabilities below.
pub const CAPS_MAGIC: [u8; 3] = *b"mmC";
/// Capability bit, in a parent's `CHALLENGE` nonce: the parent accepts `SUBTREE`
/// frames.
pub const CAP_SUBTREE: u8 = 0x01;
/// Capability bit, in a child's `JOIN_REQUEST` nonce: the child understands
/// `MAKE_ROOM` (re-balancing); a parent asks only such children to move.
pub const CAP_MAKE_ROOM: u8 = 0x02;

/// Marks a fresh nonce (a parent's or a child's) with our capabilities.
pub fn mark_caps(nonce: &mut Nonce, caps: u8) {
    nonce[..CAPS_MAGIC.len()].copy_from_slice(&CAPS_MAGIC);
    nonce[CAPS_MAGIC.len()] = caps;
}

/// The capabilities a nonce carries (0 for a nonce without the marker: a version 2
/// peer of before the capabilities, whose random nonce matches the marker
/// with a chance of 2^-24 and then closes the link at the first announcement).
pub fn caps_of(nonce: &Nonce) -> u8 {
    if nonce.starts_with(&CAPS_MAGIC) {
        nonce[CAPS_MAGIC.len()]
    } else {
        0
    }
}

/// A `SUBTREE` frame's fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subtree {
    /// Firmware IDs present in the sender's subtree (the sender's own included).
    pub firmware: FirmwareSet,
    /// Whether `firmware` is all of them.
    pub firmware_complete: bool,
    /// Node IDs in the sender's subtree (the sender first).
    pub nodes: NodeList,
    /// Whether `nodes` is all of them.
    pub nodes_complete: bool,
}

impl Subtree {
    /// The flag byte.
    pub fn flags(&self) -> u8 {
        let mut f = 0;
        if self.firmware_complete {
            f |= FIRMWARE_COMPLETE;
        }
        if self.nodes_complete {
            f |= NODES_COMPLETE;
        }
        f
    }

    /// Whether firmware `id` may run somewhere in the subtree.
    pub fn may_run(&self, id: u32) -> bool {
        !self.firmware_complete || self.firmware.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_marker_round_trips() {
        let mut nonce = [0xee; 16];
        assert_eq!(caps_of(&nonce), 0);
        mark_caps(&mut nonce, CAP_SUBTREE);
        assert_eq!(caps_of(&nonce), CAP_SUBTREE);
        assert_eq!(&nonce[4..], &[0xee; 12]);
    }

    #[test]
    fn incomplete_firmware_may_run_anything() {
        let mut s = Subtree::default();
        assert!(s.may_run(7));
        s.firmware_complete = true;
        assert!(!s.may_run(7));
        s.firmware.push(7).unwrap();
        assert!(s.may_run(7));
        assert_eq!(s.flags(), FIRMWARE_COMPLETE);
    }
}
