//! TLS to the broker: off, chain verification, or a pinned leaf fingerprint.
//!
//! The seed offers TLS to the broker with a pinned SHA-1 fingerprint of the broker's
//! certificate (`../shared/seed/000_c679d718dabd4f7e.txt`, `mqtt_secure` and
//! `mqtt_fingerprint`); we keep that 20-byte form and add SHA-256 pins and chain
//! verification. The trust anchors for [`BrokerTls::Ca`] are not part of this no_std
//! config: the platform supplies them (the host: a CA file or the system roots; a
//! firmware build: the CA it embeds).

use core::fmt;

/// Bytes of a SHA-1 fingerprint (the original library's pin).
pub const SHA1_LEN: usize = 20;
/// Bytes of a SHA-256 fingerprint.
pub const SHA256_LEN: usize = 32;

/// How a node talks TLS to its broker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerTls {
    /// Plain MQTT (the default).
    #[default]
    Off,
    /// TLS; the broker's certificate chain must lead to a trust anchor the platform
    /// supplies, and name the broker host.
    Ca,
    /// TLS; the broker's leaf certificate must have this SHA-1 (of its DER encoding).
    /// Chain, name and expiry are not checked: the pin is the trust, as in the original.
    PinSha1([u8; SHA1_LEN]),
    /// TLS; the broker's leaf certificate must have this SHA-256.
    PinSha256([u8; SHA256_LEN]),
}

/// Why a fingerprint was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinError {
    /// Not 20 or 32 bytes; how many there were.
    Length(usize),
    /// A character that is neither a hex digit nor a `:`/space separator.
    NotHex,
    /// An odd number of hex digits.
    OddDigits,
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::Length(n) => write!(
                f,
                "a fingerprint is 20 bytes (SHA-1, 40 hex digits) or 32 bytes (SHA-256, 64 hex \
                 digits), not {n} bytes"
            ),
            PinError::NotHex => f.write_str(
                "a fingerprint is hex digits, optionally separated by ':' (e.g. AB:CD:..)",
            ),
            PinError::OddDigits => f.write_str("a fingerprint has an even number of hex digits"),
        }
    }
}

impl core::error::Error for PinError {}

impl BrokerTls {
    /// Whether TLS is on.
    pub const fn is_on(&self) -> bool {
        !matches!(self, BrokerTls::Off)
    }

    /// A pin from raw fingerprint bytes: SHA-1 for 20, SHA-256 for 32.
    pub fn from_fingerprint(bytes: &[u8]) -> Result<BrokerTls, PinError> {
        if let Ok(sha1) = <[u8; SHA1_LEN]>::try_from(bytes) {
            return Ok(BrokerTls::PinSha1(sha1));
        }
        if let Ok(sha256) = <[u8; SHA256_LEN]>::try_from(bytes) {
            return Ok(BrokerTls::PinSha256(sha256));
        }
        Err(PinError::Length(bytes.len()))
    }

    /// A pin from hex text as `mqttmesh fingerprint` and `openssl x509 -fingerprint`
    /// print it: `AB:CD:..`, `ab cd ..` or `abcd..`; SHA-1 or SHA-256 by length.
    pub fn from_hex(text: &str) -> Result<BrokerTls, PinError> {
        let mut bytes = [0u8; SHA256_LEN];
        let mut n = 0usize;
        let mut high: Option<u8> = None;
        for c in text.trim().bytes() {
            if c == b':' || c == b' ' {
                if high.is_some() {
                    return Err(PinError::OddDigits);
                }
                continue;
            }
            let digit = hex_value(c).ok_or(PinError::NotHex)?;
            match high.take() {
                None => high = Some(digit),
                Some(h) => {
                    if let Some(slot) = bytes.get_mut(n) {
                        *slot = h << 4 | digit;
                    }
                    // Counted past the buffer too, so the error names the real length.
                    n += 1;
                }
            }
        }
        if high.is_some() {
            return Err(PinError::OddDigits);
        }
        match bytes.get(..n) {
            Some(b) => BrokerTls::from_fingerprint(b),
            None => Err(PinError::Length(n)),
        }
    }

    /// The pinned fingerprint, if this is a pin.
    pub fn pin(&self) -> Option<&[u8]> {
        match self {
            BrokerTls::PinSha1(p) => Some(p),
            BrokerTls::PinSha256(p) => Some(p),
            BrokerTls::Off | BrokerTls::Ca => None,
        }
    }

    /// `SHA-1` or `SHA-256` for a pin.
    pub fn pin_algorithm(&self) -> Option<&'static str> {
        match self {
            BrokerTls::PinSha1(_) => Some("SHA-1"),
            BrokerTls::PinSha256(_) => Some("SHA-256"),
            BrokerTls::Off | BrokerTls::Ca => None,
        }
    }
}

impl fmt::Display for BrokerTls {
    /// `off`, `CA`, or `pin SHA-1 AB:CD:..`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.pin_algorithm(), self.pin()) {
            (_, Some(algorithm), Some(pin)) => {
                write!(f, "pin {algorithm} ")?;
                write_colon_hex(f, pin)
            }
            (BrokerTls::Ca, ..) => f.write_str("CA"),
            _ => f.write_str("off"),
        }
    }
}

/// Upper-case hex bytes joined by `:`, as fingerprints are usually printed.
pub fn write_colon_hex(f: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            f.write_char(':')?;
        }
        write!(f, "{b:02X}")?;
    }
    Ok(())
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    #[test]
    fn hex_pins_take_their_algorithm_from_the_length() {
        let sha1 = "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D";
        let pin = BrokerTls::from_hex(sha1).unwrap();
        assert_eq!(pin.pin_algorithm(), Some("SHA-1"));
        assert_eq!(pin.to_string(), std::format!("pin SHA-1 {sha1}"));
        let plain = "a9993e364706816aba3e25717850c26c9cd0d89d";
        assert_eq!(BrokerTls::from_hex(plain), Ok(pin));
        let sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let pin = BrokerTls::from_hex(sha256).unwrap();
        assert_eq!(pin.pin_algorithm(), Some("SHA-256"));
        assert_eq!(pin.pin().map(|p| p[0]), Some(0xba));
    }

    #[test]
    fn bad_hex_pins_say_what_is_wrong() {
        assert_eq!(BrokerTls::from_hex("ab:cd"), Err(PinError::Length(2)));
        assert_eq!(BrokerTls::from_hex(""), Err(PinError::Length(0)));
        assert_eq!(
            BrokerTls::from_hex(&"ab".repeat(40)),
            Err(PinError::Length(40))
        );
        assert_eq!(BrokerTls::from_hex("a:bc"), Err(PinError::OddDigits));
        assert_eq!(BrokerTls::from_hex("abc"), Err(PinError::OddDigits));
        assert_eq!(BrokerTls::from_hex("zz"), Err(PinError::NotHex));
        assert!(PinError::Length(21).to_string().contains("not 21 bytes"));
    }

    #[test]
    fn raw_pins_are_20_or_32_bytes() {
        assert_eq!(
            BrokerTls::from_fingerprint(&[1; 20]),
            Ok(BrokerTls::PinSha1([1; 20]))
        );
        assert_eq!(
            BrokerTls::from_fingerprint(&[2; 32]),
            Ok(BrokerTls::PinSha256([2; 32]))
        );
        assert_eq!(
            BrokerTls::from_fingerprint(&[0; 16]),
            Err(PinError::Length(16))
        );
        assert!(!BrokerTls::Off.is_on() && BrokerTls::Ca.is_on());
        assert_eq!(BrokerTls::Ca.to_string(), "CA");
    }
}
