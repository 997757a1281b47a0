//! Our OTA exchange (`docs/PROTOCOL.md` "OTA v2"): a signed manifest, binary chunks
//! sent many at a time to every target, missing-chunk bitmaps, and resume from progress
//! kept in flash.
//!
//! Read `docs/PROTOCOL.md` "OTA v2" first. Both ends live here, so they cannot drift:
//!
//! - node side: [`Receiver`] (no alloc) over an [`Area`](super::Area), answering with
//!   [`Reply`](super::Reply)s and, once an image is complete and verified, an
//!   [`Outcome::Install`] for the caller to mark the slot new and restart;
//! - sender side (pure, reused by the `mqttmesh ota` CLI): [`Manifest`] build, sign
//!   (through a callback), encode and decode; [`Command`] topics; [`Report`] and
//!   [`Missing`] decoding; chunk iteration.
//!
//! ```
//! use ed25519_dalek::{Signer, SigningKey};
//! use mqttmesh_core::ota::mem::{MemFlash, SECTOR};
//! use mqttmesh_core::ota::v2::{Command, Manifest, Outcome, Phase, Receiver, Report, Settings};
//! use mqttmesh_core::ota::Area;
//!
//! // Sender: a signed manifest for the image (the key lives with the sender only).
//! let key = SigningKey::from_bytes(&[7; 32]);
//! let image = vec![0x5A; 5000];
//! let mut manifest = Manifest::new(0x1337, "1.1", &image, 1024).unwrap();
//! manifest.sign_with(|msg| Ok::<_, ()>(key.sign(msg).to_bytes())).unwrap();
//! let id = manifest.id();
//!
//! // Node: a receiver over its update slot, knowing the public key.
//! let settings = Settings {
//!     firmware_id: 0x1337,
//!     version: "1.0".try_into().unwrap(),
//!     public_key: Some(key.verifying_key().to_bytes()),
//!     refuse_downgrade: true,
//! };
//! let mut area = Area::new(MemFlash::<{ 4 * SECTOR }>::new(), 0, 4 * SECTOR as u32).unwrap();
//! let mut rx = Receiver::new(settings).unwrap();
//! let mut replies = Vec::new();
//! let mut send = |rx: &mut Receiver, area: &mut Area<_>, command: Command, payload: &[u8]| {
//!     // The topic is `<in>ota2/<target>/<command>`; the node hands over the command.
//!     rx.handle(area, &command.to_string(), payload, &mut |r| replies.push(r))
//! };
//! send(&mut rx, &mut area, Command::Manifest, &manifest.to_bytes()).unwrap();
//! for (index, chunk) in manifest.chunks(&image) {
//!     send(&mut rx, &mut area, Command::Chunk { id, index }, chunk).unwrap();
//! }
//! let outcome = send(&mut rx, &mut area, Command::Flash { id }, &[]).unwrap();
//! assert!(matches!(outcome, Outcome::Install { len: 5000, .. }));
//! // Answers: accepted, verified (the last chunk), installing.
//! let phases: Vec<Phase> = replies.iter().map(|r| Report::decode(&r.payload).unwrap().phase).collect();
//! assert_eq!(phases, [Phase::Receiving, Phase::Verified, Phase::Installing]);
//! ```
//!
//! No-panic contract: every decoder here ([`Manifest::decode`], [`Command::parse`],
//! [`Report::decode`], [`Missing::decode`], [`split_topic`]) accepts arbitrary input and
//! returns an error or `None` for anything that is not exactly one of the documented
//! shapes; [`Receiver::handle`] never panics, whatever the target, command and payload.

mod manifest;
mod receiver;
mod store;
mod wire;

use core::cmp::Ordering;
use core::fmt;

pub use manifest::{
    Manifest, ManifestError, FLAG_ALLOW_DOWNGRADE, FLAG_SIGNED, FORMAT, MAGIC, MAX_MANIFEST_LEN,
    SIGNATURE_LEN,
};
pub use receiver::{Outcome, Receiver, Settings, SettingsError, Stats};
pub use store::{capacity, META_LEN};
pub use wire::{Missing, Phase, Reason, Report, WireError, MAX_MISSING_LEN, MAX_REPORT_LEN};

use crate::topic::{Topic, TopicError, MAX_TOPIC_LEN};

/// First topic level of the exchange: `<in>ota2/<target>/<command>` (never `ota`, so an
/// original node, which treats any unknown `ota` command as a byte offset, never sees it).
pub const SUBTREE: &str = "ota2";
/// Reply subtopic of a [`Report`].
pub const STATE_SUBTOPIC: &str = "ota2/state";
/// Reply subtopic of a [`Missing`] window.
pub const MISSING_SUBTOPIC: &str = "ota2/missing";

/// Longest firmware version string (as the link protocol's `JOIN_REQUEST`).
pub const MAX_VERSION_LEN: usize = crate::link::MAX_FIRMWARE_VERSION_LEN;
/// Smallest chunk size; chunk sizes are multiples of it, so every chunk starts on a
/// flash write boundary.
pub const CHUNK_ALIGN: u16 = 64;
/// Largest chunk size: one mesh payload (`link::MAX_PAYLOAD`), the index rides in the topic.
pub const MAX_CHUNK_SIZE: u16 = crate::link::MAX_PAYLOAD as u16;
/// Most chunks in one image (the flash bitmap holds this many bits).
pub const MAX_CHUNKS: u32 = 16_384;
/// Most chunks one [`Missing`] window covers (512 bytes of bits).
pub const MAX_WINDOW: u16 = 4096;

const _: () = assert!(crate::link::MAX_PAYLOAD <= u16::MAX as usize);
const _: () = assert!(MAX_CHUNK_SIZE % CHUNK_ALIGN == 0);
const _: () = assert!(MAX_MISSING_LEN <= super::MAX_REPLY_PAYLOAD);
const _: () = assert!(MAX_REPORT_LEN <= super::MAX_REPLY_PAYLOAD);
const _: () = assert!(MISSING_SUBTOPIC.len() <= super::MAX_REPLY_TOPIC);

/// Identifies one upload: the first four bytes (big-endian) of the SHA-256 of the whole
/// encoded manifest, signature included. Chunk, status, flash and abort commands carry
/// it in their topic, so commands of another upload never touch this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ManifestId(pub u32);

impl ManifestId {
    /// The ID of an encoded manifest (any bytes: a refused manifest has one too).
    pub fn of(manifest_bytes: &[u8]) -> ManifestId {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(manifest_bytes);
        let mut first = [0u8; 4];
        // A SHA-256 digest is 32 bytes.
        first.copy_from_slice(&digest[..4]);
        ManifestId(u32::from_be_bytes(first))
    }

    /// From exactly 8 hex digits (either case), as in topics.
    pub fn parse(s: &str) -> Option<ManifestId> {
        if s.len() != 8 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(s, 16).ok().map(ManifestId)
    }
}

impl fmt::Display for ManifestId {
    /// 8 lower-case hex digits, as in topics.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A command: what follows `<in>ota2/<target>/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// `manifest`: the payload is an encoded [`Manifest`].
    Manifest,
    /// `<id>/c/<index>`: the payload is chunk `index` (decimal) of upload `id`.
    Chunk {
        /// The upload.
        id: ManifestId,
        /// Chunk index, from 0.
        index: u32,
    },
    /// `status` (any upload) or `<id>/status`: the payload is empty or a `u32` (BE)
    /// index from which the [`Missing`] window starts looking.
    Status {
        /// The upload asked about; `None` for "whatever you hold".
        id: Option<ManifestId>,
    },
    /// `<id>/flash`: install the verified image.
    Flash {
        /// The upload.
        id: ManifestId,
    },
    /// `<id>/abort`: forget the upload.
    Abort {
        /// The upload.
        id: ManifestId,
    },
}

impl Command {
    /// Parses a command; `None` for any other shape (no leading zeros are required or
    /// refused in the index, but it must be 1..=10 ASCII digits and fit a `u32`).
    pub fn parse(s: &str) -> Option<Command> {
        match s {
            "manifest" => return Some(Command::Manifest),
            "status" => return Some(Command::Status { id: None }),
            _ => {}
        }
        let (id, rest) = s.split_once('/')?;
        let id = ManifestId::parse(id)?;
        match rest {
            "status" => Some(Command::Status { id: Some(id) }),
            "flash" => Some(Command::Flash { id }),
            "abort" => Some(Command::Abort { id }),
            _ => {
                let index = rest.strip_prefix("c/")?;
                let index = parse_decimal(index)?;
                Some(Command::Chunk { id, index })
            }
        }
    }

    /// The full topic `<in>ota2/<target>/<command>`.
    pub fn topic(&self, in_prefix: &str, target: &str) -> Result<Topic, TopicError> {
        use core::fmt::Write;
        crate::topic::check_subtopic(target)?;
        if target.contains('/') {
            return Err(TopicError::Invalid);
        }
        let mut topic = Topic::new();
        write!(topic, "{in_prefix}{SUBTREE}/{target}/{self}").map_err(|_| TopicError::TooLong)?;
        Ok(topic)
    }
}

impl fmt::Display for Command {
    /// The command as it appears in the topic.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Manifest => f.write_str("manifest"),
            Command::Chunk { id, index } => write!(f, "{id}/c/{index}"),
            Command::Status { id: None } => f.write_str("status"),
            Command::Status { id: Some(id) } => write!(f, "{id}/status"),
            Command::Flash { id } => write!(f, "{id}/flash"),
            Command::Abort { id } => write!(f, "{id}/abort"),
        }
    }
}

/// Splits `<in>ota2/<target>/<command>` into `(target, command)`; `None` for any other
/// topic. The node must treat the first level `ota2` as reserved, as it does `ota`.
pub fn split_topic<'a>(in_prefix: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    if topic.len() > MAX_TOPIC_LEN {
        return None;
    }
    let rest = topic
        .strip_prefix(in_prefix)?
        .strip_prefix(SUBTREE)?
        .strip_prefix('/')?;
    let (target, command) = rest.split_once('/')?;
    (!target.is_empty() && !command.is_empty()).then_some((target, command))
}

/// Splits an answer topic `<out><ID>/ota2/state` or `<out><ID>/ota2/missing` into the
/// node ID and the reply subtopic ([`STATE_SUBTOPIC`] or [`MISSING_SUBTOPIC`]).
pub fn split_reply_topic<'a>(out_prefix: &str, topic: &'a str) -> Option<(&'a str, &'static str)> {
    let rest = topic.strip_prefix(out_prefix)?;
    for sub in [STATE_SUBTOPIC, MISSING_SUBTOPIC] {
        if let Some(id) = rest.strip_suffix(sub).and_then(|r| r.strip_suffix('/')) {
            if !id.is_empty() && !id.contains('/') {
                return Some((id, sub));
            }
        }
    }
    None
}

/// Compares firmware versions: dotted numeric (`1.2.10` > `1.2.9`, `1.2` == `1.2.0`, an
/// optional leading `v` ignored) when both are; otherwise equal strings are `Equal` and
/// different ones are incomparable (`None`), which is never a downgrade.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    fn numeric(s: &str) -> Option<&str> {
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let ok = !s.is_empty()
            && s.split('.')
                .all(|c| (1..=9).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(s)
    }
    match (numeric(a), numeric(b)) {
        (Some(a), Some(b)) => {
            let (mut x, mut y) = (a.split('.'), b.split('.'));
            loop {
                // Components have at most 9 digits, so they parse into a u32.
                let (p, q) = (x.next(), y.next());
                if p.is_none() && q.is_none() {
                    return Some(Ordering::Equal);
                }
                let p: u32 = p.and_then(|c| c.parse().ok()).unwrap_or(0);
                let q: u32 = q.and_then(|c| c.parse().ok()).unwrap_or(0);
                if p != q {
                    return Some(p.cmp(&q));
                }
            }
        }
        _ => (a == b).then_some(Ordering::Equal),
    }
}

/// 1..=10 ASCII digits fitting a `u32`.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_through_their_text() {
        let id = ManifestId(0x0a1b_2c3d);
        for cmd in [
            Command::Manifest,
            Command::Chunk { id, index: 0 },
            Command::Chunk {
                id,
                index: u32::MAX,
            },
            Command::Status { id: None },
            Command::Status { id: Some(id) },
            Command::Flash { id },
            Command::Abort { id },
        ] {
            let mut text = heapless::String::<40>::new();
            core::fmt::Write::write_fmt(&mut text, format_args!("{cmd}")).unwrap();
            assert_eq!(Command::parse(&text), Some(cmd), "{text}");
        }
        let t = Command::Chunk { id, index: 7 }
            .topic("m/in/", "1337")
            .unwrap();
        assert_eq!(t.as_str(), "m/in/ota2/1337/0a1b2c3d/c/7");
        assert_eq!(split_topic("m/in/", &t), Some(("1337", "0a1b2c3d/c/7")));
    }

    #[test]
    fn malformed_commands_are_none() {
        for s in [
            "",
            "manifes",
            "0a1b2c3d",
            "0a1b2c3d/",
            "0a1b2c3/flash",
            "0a1b2c3dd/flash",
            "0a1b2c3d/c/",
            "0a1b2c3d/c/+1",
            "0a1b2c3d/c/4294967296",
            "0a1b2c3d/c/1/2",
            "0a1b2c3d/Flash",
            "g0000000/abort",
            "status/x",
        ] {
            assert_eq!(Command::parse(s), None, "{s}");
        }
    }

    #[test]
    fn reply_topics_split() {
        assert_eq!(
            split_reply_topic("o/", "o/00A1B2/ota2/state"),
            Some(("00A1B2", STATE_SUBTOPIC))
        );
        assert_eq!(
            split_reply_topic("o/", "o/00A1B2/ota2/missing"),
            Some(("00A1B2", MISSING_SUBTOPIC))
        );
        assert_eq!(split_reply_topic("o/", "o/ota2/state"), None);
        assert_eq!(split_reply_topic("o/", "o/a/b/ota2/state"), None);
    }

    #[test]
    fn versions_compare_numerically_or_by_equality() {
        use Ordering::*;
        assert_eq!(compare_versions("1.2.10", "1.2.9"), Some(Greater));
        assert_eq!(compare_versions("v1.2", "1.2.0"), Some(Equal));
        assert_eq!(compare_versions("0.9", "1"), Some(Less));
        assert_eq!(compare_versions("1.0-rc1", "1.0-rc1"), Some(Equal));
        assert_eq!(compare_versions("1.0-rc1", "1.0"), None);
        assert_eq!(compare_versions("", ""), Some(Equal));
        assert_eq!(compare_versions("1..2", "1.2"), None);
        assert_eq!(compare_versions("9999999999", "1"), None);
    }
}
