//! Node identity: node IDs, the keyed access-point and station MACs, mesh SSIDs.
//!
//! Implements `../shared/spec/compat.md` "Node identity" to the letter, so a node of the
//! original C++ library and ours recognise each other's access points.

use core::fmt;

/// The mesh API version appended to the mesh password when deriving the key.
pub const MESH_API_VERSION: &str = "001";
/// Initial value of the key LFSR.
pub const KEY_SEED: u32 = 0x0011_8d5b;
/// Longest node ID (a chip ID is 6 characters; an override may be longer).
pub const MAX_ID_LEN: usize = 24;
/// Longest mesh SSID (802.11 limit).
pub const MAX_SSID_LEN: usize = 32;

/// A 48-bit MAC address (BSSID or station address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `AA:BB:CC:DD:EE:FF` (either case); `None` on anything else.
    pub fn parse(s: &str) -> Option<Mac> {
        todo!("{s}")
    }
}

impl fmt::Display for Mac {
    /// Upper-case, colon separated: `AA:BB:CC:DD:EE:FF`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        {
            let _ = (self, f);
            todo!()
        }
    }
}

/// Why a string cannot be a node ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdError {
    /// Empty.
    Empty,
    /// Longer than [`MAX_ID_LEN`].
    TooLong,
    /// Contains `/`, `+`, `#`, whitespace, a control character or non-ASCII.
    InvalidChar,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        {
            let _ = (self, f);
            todo!()
        }
    }
}

impl core::error::Error for IdError {}

/// A node's ID as it appears in topics: 6 upper-case hex digits of the chip ID, or a
/// user-chosen override (the original's `setID`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(heapless::String<MAX_ID_LEN>);

impl NodeId {
    /// The ID of chip `chip_id` (only the low 24 bits count): `00A1B2`.
    pub fn from_chip_id(chip_id: u32) -> NodeId {
        todo!("{chip_id}")
    }

    /// A validated override ID.
    pub fn new(s: &str) -> Result<NodeId, IdError> {
        todo!("{s}")
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One step of the key LFSR: fold byte `b` into `seed` (8 rounds, LSB first).
pub fn lfsr(seed: u32, b: u8) -> u32 {
    todo!("{seed}{b}")
}

/// The mesh key derived from the mesh password (compat.md: `0x285D60F5` for the default).
pub fn mesh_key(mesh_password: &str) -> u32 {
    todo!("{mesh_password}")
}

/// `enc(id)`: the 24-bit value stored in AP MAC bytes 0..2.
pub fn enc(chip_id: u32, key: u32) -> u32 {
    todo!("{chip_id}{key}")
}

/// The access-point MAC (BSSID) of chip `chip_id` in the mesh with key `key`.
pub fn ap_mac(chip_id: u32, key: u32) -> Mac {
    todo!("{chip_id}{key}")
}

/// The station MAC: the AP MAC with byte 0 OR `0x04`.
pub fn station_mac(chip_id: u32, key: u32) -> Mac {
    todo!("{chip_id}{key}")
}

/// If `bssid` is the AP (or station) MAC of a node of the mesh with key `key`, its chip ID.
pub fn mesh_chip_id(bssid: &Mac, key: u32) -> Option<u32> {
    todo!("{bssid}{key}")
}

/// The hidden SSID of a node's AP: `<base>_<last 3 MAC bytes as 6 lower-case hex>`,
/// truncated to 32 bytes if the base is long.
pub fn mesh_ssid(base: &str, ap_mac: &Mac) -> heapless::String<MAX_SSID_LEN> {
    todo!("{base}{ap_mac}")
}
