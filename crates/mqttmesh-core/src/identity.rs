//! Node identity: node IDs, the keyed access-point and station MACs, mesh SSIDs.
//!
//! Implements `../shared/spec/compat.md` "Node identity" to the letter, so a node of the
//! original C++ library and ours recognise each other's access points.
//!
//! No-panic contract: every function here accepts any input (any string, any MAC, any
//! `u32`) and returns a value or `None`/an error; none of them panics.

use core::fmt::{self, Write as _};

/// The mesh API version appended to the mesh password when deriving the key.
pub const MESH_API_VERSION: &str = "001";
/// Initial value of the key LFSR.
pub const KEY_SEED: u32 = 0x0011_8d5b;
/// Longest node ID (a chip ID is 6 characters; an override may be longer).
pub const MAX_ID_LEN: usize = 24;
/// Longest mesh SSID (802.11 limit).
pub const MAX_SSID_LEN: usize = 32;

/// Feedback taps of the key LFSR.
const LFSR_TAPS: u32 = 0x8020_0003;
/// Only the low 24 bits of a chip ID (and of `enc`) count.
const MASK_24: u32 = 0x00FF_FFFF;
/// Bit of MAC byte 0 that tells the station MAC from the AP MAC.
const STATION_BIT: u8 = 0x04;
/// Length of `AA:BB:CC:DD:EE:FF`.
const MAC_TEXT_LEN: usize = 17;

/// A 48-bit MAC address (BSSID or station address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// Parses `AA:BB:CC:DD:EE:FF` (either case); `None` on anything else.
    pub fn parse(s: &str) -> Option<Mac> {
        let b = s.as_bytes();
        if b.len() != MAC_TEXT_LEN {
            return None;
        }
        let mut mac = [0u8; 6];
        for (i, byte) in mac.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && b[at - 1] != b':' {
                return None;
            }
            *byte = (hex_digit(b[at])? << 4) | hex_digit(b[at + 1])?;
        }
        Some(Mac(mac))
    }
}

/// The value of one hex digit, either case.
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Mac {
    /// Upper-case, colon separated: `AA:BB:CC:DD:EE:FF`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02X}:{b:02X}:{c:02X}:{d:02X}:{e:02X}:{g:02X}")
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
        f.write_str(match self {
            IdError::Empty => "node ID is empty",
            IdError::TooLong => "node ID is longer than 24 bytes",
            IdError::InvalidChar => {
                "node ID may only contain printable ASCII other than '/', '+' and '#'"
            }
        })
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
        let mut s = heapless::String::new();
        // Cannot fail: 6 hex digits always fit in MAX_ID_LEN (24) bytes.
        let _ = write!(s, "{:06X}", chip_id & MASK_24);
        NodeId(s)
    }

    /// A validated override ID.
    pub fn new(s: &str) -> Result<NodeId, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        // Printable ASCII without space (0x21..=0x7E), minus the MQTT level separator
        // and wildcards, so the ID is always one valid topic level.
        let valid = |c: u8| c.is_ascii_graphic() && !matches!(c, b'/' | b'+' | b'#');
        if !s.bytes().all(valid) {
            return Err(IdError::InvalidChar);
        }
        let mut id = heapless::String::new();
        id.push_str(s).map_err(|_| IdError::TooLong)?;
        Ok(NodeId(id))
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
    let mut seed = seed;
    let mut b = u32::from(b);
    for _ in 0..8 {
        let feedback = (seed & 1).wrapping_neg() & LFSR_TAPS;
        seed = (seed >> 1) ^ feedback ^ !((b & 1) << 31);
        b >>= 1;
    }
    seed
}

/// The mesh key derived from the mesh password (compat.md: `0x285D60F5` for the default).
pub fn mesh_key(mesh_password: &str) -> u32 {
    mesh_password
        .bytes()
        .chain(MESH_API_VERSION.bytes())
        .fold(KEY_SEED, lfsr)
}

/// `enc(id)`: the 24-bit value stored in AP MAC bytes 0..2.
pub fn enc(chip_id: u32, key: u32) -> u32 {
    (lfsr(chip_id, 0).wrapping_mul(key) << 3).wrapping_add(2) & MASK_24
}

/// The access-point MAC (BSSID) of chip `chip_id` in the mesh with key `key`.
pub fn ap_mac(chip_id: u32, key: u32) -> Mac {
    let e = enc(chip_id, key).to_le_bytes();
    let id = (chip_id & MASK_24).to_be_bytes();
    Mac([e[0], e[1], e[2], id[1], id[2], id[3]])
}

/// The station MAC: the AP MAC with byte 0 OR `0x04`.
pub fn station_mac(chip_id: u32, key: u32) -> Mac {
    let mut mac = ap_mac(chip_id, key);
    mac.0[0] |= STATION_BIT;
    mac
}

/// If `bssid` is the AP (or station) MAC of a node of the mesh with key `key`, its chip ID.
pub fn mesh_chip_id(bssid: &Mac, key: u32) -> Option<u32> {
    let m = bssid.0;
    let chip_id = u32::from_be_bytes([0, m[3], m[4], m[5]]);
    let stored = u32::from_le_bytes([m[0] & !STATION_BIT, m[1], m[2], 0]);
    (enc(chip_id, key) == stored).then_some(chip_id)
}

/// The hidden SSID of a node's AP: `<base>_<last 3 MAC bytes as 6 lower-case hex>`,
/// truncated to 32 bytes if the base is long.
///
/// Only the base is shortened (at a character boundary), so the `_xxxxxx` suffix that
/// makes the SSID unique always survives.
pub fn mesh_ssid(base: &str, ap_mac: &Mac) -> heapless::String<MAX_SSID_LEN> {
    const SUFFIX_LEN: usize = 7; // `_` + 6 hex digits
    let mut end = base.len().min(MAX_SSID_LEN - SUFFIX_LEN);
    while !base.is_char_boundary(end) {
        end -= 1;
    }
    let mut ssid = heapless::String::new();
    let [_, _, _, d, e, f] = ap_mac.0;
    // Cannot fail: at most 25 bytes of base plus the 7-byte suffix fit in 32 bytes.
    let _ = write!(ssid, "{}_{d:02x}{e:02x}{f:02x}", &base[..end]);
    ssid
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_KEY: u32 = 0x285D_60F5;

    #[test]
    fn default_mesh_password_gives_documented_key() {
        assert_eq!(mesh_key("ESP8266MQTTMesh"), DEFAULT_KEY);
        assert_eq!(mesh_key("secret"), 0x6BC9_9BD5);
    }

    #[test]
    fn ap_mac_matches_compat_vector() {
        assert_eq!(
            ap_mac(0x00A1B2, DEFAULT_KEY),
            Mac([0x02, 0xC9, 0xF4, 0x00, 0xA1, 0xB2])
        );
    }

    #[test]
    fn station_mac_sets_bit_2_and_is_recognised() {
        let sta = station_mac(0x00A1B2, DEFAULT_KEY);
        assert_eq!(sta, Mac([0x06, 0xC9, 0xF4, 0x00, 0xA1, 0xB2]));
        assert_eq!(mesh_chip_id(&sta, DEFAULT_KEY), Some(0x00A1B2));
    }

    #[test]
    fn foreign_bssid_is_not_a_mesh_node() {
        let mac = Mac([0x02, 0xC9, 0xF5, 0x00, 0xA1, 0xB2]);
        assert_eq!(mesh_chip_id(&mac, DEFAULT_KEY), None);
        let other_mesh = ap_mac(0x00A1B2, mesh_key("secret"));
        assert_eq!(mesh_chip_id(&other_mesh, DEFAULT_KEY), None);
    }

    #[test]
    fn chip_id_upper_bits_are_ignored() {
        assert_eq!(NodeId::from_chip_id(0xFF00_A1B2).as_str(), "00A1B2");
        assert_eq!(NodeId::from_chip_id(0x1).as_str(), "000001");
        assert_eq!(ap_mac(0xFF00_A1B2, DEFAULT_KEY).0[3..], [0x00, 0xA1, 0xB2]);
    }

    #[test]
    fn node_id_validation() {
        assert_eq!(NodeId::new("kitchen-1").unwrap().as_str(), "kitchen-1");
        assert_eq!(NodeId::new(""), Err(IdError::Empty));
        assert_eq!(NodeId::new("a".repeat(25).as_str()), Err(IdError::TooLong));
        assert!(NodeId::new("a".repeat(24).as_str()).is_ok());
        for bad in ["a/b", "a+b", "a#b", "a b", "a\tb", "a\0b", "é"] {
            assert_eq!(NodeId::new(bad), Err(IdError::InvalidChar), "{bad:?}");
        }
    }

    #[test]
    fn mac_display_and_parse_round_trip() {
        extern crate std;
        use std::string::ToString;
        let mac = Mac([0xAA, 0x07, 0x9D, 0x00, 0x0b, 0xff]);
        assert_eq!(mac.to_string(), "AA:07:9D:00:0B:FF");
        assert_eq!(Mac::parse("AA:07:9D:00:0B:FF"), Some(mac));
        assert_eq!(Mac::parse("aa:07:9d:00:0b:ff"), Some(mac));
    }

    #[test]
    fn mac_parse_rejects_malformed() {
        for bad in [
            "",
            "AA:07:9D:00:0B",
            "AA:07:9D:00:0B:FF:",
            "AA-07-9D-00-0B-FF",
            "AA:07:9D:00:0B:FG",
            "AA:07:9D:00:0B:+F",
            "AA:07:9D:00:0B:FFF",
            "AA:07:9D:00:0BB:F",
            "ÄA:07:9D:00:0B:F",
        ] {
            assert_eq!(Mac::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn mesh_ssid_appends_lowercase_suffix() {
        let mac = Mac([0x02, 0xC9, 0xF4, 0x00, 0xA1, 0xB2]);
        assert_eq!(
            mesh_ssid("esp8266_mqtt_mesh", &mac).as_str(),
            "esp8266_mqtt_mesh_00a1b2"
        );
    }

    #[test]
    fn mesh_ssid_truncates_base_and_keeps_suffix() {
        let mac = Mac([0, 0, 0, 0xAB, 0xCD, 0xEF]);
        let long = "abcdefghijklmnopqrstuvwxyz0123456789";
        let ssid = mesh_ssid(long, &mac);
        assert_eq!(ssid.as_str(), "abcdefghijklmnopqrstuvwxy_abcdef");
        assert_eq!(ssid.len(), MAX_SSID_LEN);
        // A multi-byte character straddling the cut is dropped whole.
        let ssid = mesh_ssid("aaaaaaaaaaaaaaaaaaaaaaaaé", &mac);
        assert_eq!(ssid.as_str(), "aaaaaaaaaaaaaaaaaaaaaaaa_abcdef");
    }
}
