//! The OTA engine: firmware updates over the mesh, into an update slot over the
//! `embedded-storage` [`NorFlash`](embedded_storage::nor_flash::NorFlash) traits.
//!
//! - [`area`]: bounded writes into one update slot (sector erase, every offset and
//!   length checked);
//! - [`boot`]: the ESP-IDF boot model: two application slots, a new image boots in a
//!   trial state and is confirmed once the node reaches the broker, or the bootloader
//!   returns to the previous slot;
//! - [`compat`]: the original exchange (`../shared/spec/compat.md` "OTA over MQTT");
//! - [`mem`]: [`MemFlash`](mem::MemFlash), a strict NOR flash in RAM for tests and the host;
//! - [`v2`]: our streamed, resumable, signed exchange (`docs/PROTOCOL.md` "OTA v2").
//!
//! The node routes OTA messages meant for it to the application side as
//! [`Event::Ota`](crate::node::Event); the runtime owns the flash and a receiver, feeds
//! the message to it and publishes its [`Reply`] under `<out><ID>/`. The node itself
//! stays independent of any flash type.

pub mod area;
pub mod boot;
pub mod compat;
pub mod mem;
pub mod v2;

pub use area::{Area, AreaError};

/// Longest reply subtopic (`ota/md5/<hex offset>`, `ota2/status`, …).
pub const MAX_REPLY_TOPIC: usize = 48;
/// Longest reply payload (a v2 missing-chunk bitmap window is the big one).
pub const MAX_REPLY_PAYLOAD: usize = 600;

/// Something a receiver wants published under `<out><ID>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Subtopic, e.g. `ota/erase`.
    pub subtopic: heapless::String<MAX_REPLY_TOPIC>,
    /// Payload.
    pub payload: heapless::Vec<u8, MAX_REPLY_PAYLOAD>,
}

/// Whether an OTA `target` (compat.md: a firmware ID in hex, with or without `0x`, or
/// one node's ID) addresses a node running `firmware_id` with ID `node_id`.
pub fn targets_us(target: &str, firmware_id: u32, node_id: &str) -> bool {
    target == node_id || crate::topic::parse_firmware_id(target) == Some(firmware_id)
}
