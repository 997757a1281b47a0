//! Join authentication: the key, the transcript and the two MACs of the join handshake
//! (`docs/PROTOCOL.md` "Join handshake").
//!
//! Both ends prove they hold the mesh password without sending it:
//!
//! ```text
//! K    = HMAC-SHA256(key = mesh password, "mqttmesh join key v2" 0x00 mesh_ssid_base)
//! T    = SHA-256("mqttmesh join v2" ‖ JoinRequest frame ‖ nonce_p ‖ str8 parent ID)
//! mac_p = HMAC-SHA256(K, "parent" ‖ T)      sent in Challenge, checked by the child
//! mac_c = HMAC-SHA256(K, "child" ‖ T)       sent in Proof, checked by the parent
//! ```
//!
//! The JoinRequest frame (header included, in its canonical encoding) carries the
//! child's nonce and ID, so `T` binds both nonces, both IDs and every field of the
//! request. Tags are compared in constant time ([`hmac::Mac::verify_slice`]).

use core::fmt;

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::{EncodeError, Frame, JoinRequest};

/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of a handshake MAC (a full HMAC-SHA256 output).
pub const TAG_LEN: usize = 32;

/// A handshake nonce: fresh random bytes from one side.
pub type Nonce = [u8; NONCE_LEN];
/// A handshake MAC.
pub type Tag = [u8; TAG_LEN];

const KEY_LABEL: &[u8] = b"mqttmesh join key v2";
const TRANSCRIPT_LABEL: &[u8] = b"mqttmesh join v2";
const PARENT_LABEL: &[u8] = b"parent";
const CHILD_LABEL: &[u8] = b"child";
/// Largest JoinRequest frame: header, type, version, nonce, ID, chip, firmware, height.
const MAX_REQUEST_FRAME: usize = 2 + 1 + 1 + NONCE_LEN + 1 + 24 + 4 + 4 + 1 + 31 + 1;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The mesh's join key, derived once from the mesh password and SSID base.
///
/// Two meshes with the same password but different `mesh_ssid_base` get different keys,
/// so their nodes refuse each other at the join.
#[derive(Clone)]
pub struct JoinKey {
    /// HMAC keyed with K, cloned for each tag (saves re-hashing the key).
    keyed: HmacSha256,
}

impl fmt::Debug for JoinKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinKey(..)")
    }
}

impl JoinKey {
    /// K for a mesh password and mesh SSID base.
    pub fn derive(mesh_password: &str, mesh_ssid_base: &str) -> JoinKey {
        let mut h = hmac_with(mesh_password.as_bytes());
        h.update(KEY_LABEL);
        h.update(&[0]);
        h.update(mesh_ssid_base.as_bytes());
        let k = h.finalize().into_bytes();
        JoinKey {
            keyed: hmac_with(&k),
        }
    }

    /// The parent's tag (`mac_p`) over transcript `t`.
    pub fn parent_tag(&self, t: &Transcript) -> Tag {
        self.tag(PARENT_LABEL, t)
    }

    /// The child's tag (`mac_c`) over transcript `t`.
    pub fn child_tag(&self, t: &Transcript) -> Tag {
        self.tag(CHILD_LABEL, t)
    }

    /// Whether `tag` is the parent's tag over `t` (constant-time compare).
    pub fn verify_parent(&self, t: &Transcript, tag: &Tag) -> bool {
        self.verify(PARENT_LABEL, t, tag)
    }

    /// Whether `tag` is the child's tag over `t` (constant-time compare).
    pub fn verify_child(&self, t: &Transcript, tag: &Tag) -> bool {
        self.verify(CHILD_LABEL, t, tag)
    }

    fn keyed(&self, label: &[u8], t: &Transcript) -> HmacSha256 {
        let mut h = self.keyed.clone();
        h.update(label);
        h.update(&t.0);
        h
    }

    fn tag(&self, label: &[u8], t: &Transcript) -> Tag {
        self.keyed(label, t).finalize().into_bytes().into()
    }

    fn verify(&self, label: &[u8], t: &Transcript, tag: &Tag) -> bool {
        self.keyed(label, t).verify_slice(tag).is_ok()
    }
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(h) => h,
        // Unreachable: HMAC takes keys of any length (long ones are hashed first).
        Err(_) => unreachable!("HMAC accepts any key length"),
    }
}

/// The handshake transcript hash `T`, which both tags cover.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Transcript([u8; 32]);

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Transcript(..)")
    }
}

impl Transcript {
    /// `T` for the child's `request`, the parent's nonce and the parent's node ID.
    ///
    /// Fails only for a request that does not encode (one no decoder produces).
    pub fn new(
        request: &JoinRequest<'_>,
        parent_nonce: &Nonce,
        parent_id: &str,
    ) -> Result<Transcript, EncodeError> {
        let mut buf = [0u8; MAX_REQUEST_FRAME];
        let n = Frame::JoinRequest(*request).encode(&mut buf)?;
        let id_len = u8::try_from(parent_id.len()).map_err(|_| EncodeError::FieldTooLong)?;
        let mut h = Sha256::new();
        h.update(TRANSCRIPT_LABEL);
        h.update(&buf[..n]);
        h.update(parent_nonce);
        h.update([id_len]);
        h.update(parent_id.as_bytes());
        Ok(Transcript(h.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(nonce: Nonce) -> JoinRequest<'static> {
        JoinRequest {
            nonce,
            node_id: "00A1B2",
            chip_id: 0xa1b2,
            firmware_id: 0x1337,
            firmware_version: "1.2.3",
            subtree_height: 0,
        }
    }

    #[test]
    fn longest_request_fits_the_transcript_buffer() {
        let id = "ABCDEFGHIJKLMNOPQRSTUVWX";
        let fw = "1234567890123456789012345678901";
        let req = JoinRequest {
            node_id: id,
            firmware_version: fw,
            ..request([7; NONCE_LEN])
        };
        assert_eq!(Frame::JoinRequest(req).encoded_len(), MAX_REQUEST_FRAME);
        assert!(Transcript::new(&req, &[1; NONCE_LEN], id).is_ok());
    }

    #[test]
    fn tags_verify_only_with_the_same_key_role_and_transcript() {
        let k = JoinKey::derive("ESP8266MQTTMesh", "mesh_esp8266-");
        let t = Transcript::new(&request([1; NONCE_LEN]), &[2; NONCE_LEN], "ROOT").unwrap();
        let p = k.parent_tag(&t);
        let c = k.child_tag(&t);
        assert_ne!(p, c);
        assert!(k.verify_parent(&t, &p));
        assert!(k.verify_child(&t, &c));
        // A tag of one role is not the other's (no reflection).
        assert!(!k.verify_child(&t, &p));
        // Another nonce, another transcript.
        let t2 = Transcript::new(&request([1; NONCE_LEN]), &[3; NONCE_LEN], "ROOT").unwrap();
        assert!(!k.verify_child(&t2, &c));
        let t3 = Transcript::new(&request([9; NONCE_LEN]), &[2; NONCE_LEN], "ROOT").unwrap();
        assert!(!k.verify_parent(&t3, &p));
        // Another password or another SSID base: another key.
        for other in [
            JoinKey::derive("ESP8266MQTTMesx", "mesh_esp8266-"),
            JoinKey::derive("ESP8266MQTTMesh", "mesh_other-"),
        ] {
            assert!(!other.verify_child(&t, &c));
            assert!(!other.verify_parent(&t, &p));
        }
    }

    #[test]
    fn tags_match_an_independent_computation() {
        // Computed with Python's hmac and hashlib from the formulas in the module doc
        // (and docs/PROTOCOL.md), so a change to the derivation, which would split every
        // mesh from nodes running older firmware, cannot go unnoticed.
        let k = JoinKey::derive("ESP8266MQTTMesh", "mesh_esp8266-");
        let t = Transcript::new(&request([0; NONCE_LEN]), &[0; NONCE_LEN], "ROOT").unwrap();
        assert_eq!(
            k.parent_tag(&t),
            hex("7c3c61d32e306854bacafda070d7438a5b1d7b0caaca2b0a2a0a39bfb41c78a5")
        );
        assert_eq!(
            k.child_tag(&t),
            hex("2a4848251f1ec3463818a77bd56991bad48681c97b0379023b25c5b07e948f34")
        );
    }

    fn hex(s: &str) -> Tag {
        core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
    }
}
