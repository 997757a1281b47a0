//! The node's answers (`docs/PROTOCOL.md` "OTA v2", "Answers"): the `ota2/state`
//! [`Report`] and the `ota2/missing` window.

use core::fmt;

use super::{ManifestId, MAX_VERSION_LEN, MAX_WINDOW};

/// Why an answer could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Ends inside a field.
    Truncated,
    /// Bytes after the last field.
    TrailingBytes,
    /// Unknown phase or reason code.
    BadCode,
    /// Version longer than 31 bytes or not UTF-8, or a window over 4096 chunks or past
    /// chunk index `u32::MAX`.
    TooLong,
    /// Bit field of the wrong length, or bits set past `count`.
    NonCanonical,
    /// Output buffer too small.
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "answer truncated",
            WireError::TrailingBytes => "bytes after the answer",
            WireError::BadCode => "unknown phase or reason code",
            WireError::TooLong => "version or window too long",
            WireError::NonCanonical => "bit field of the wrong length or with stray bits",
            WireError::BufferTooSmall => "buffer too small for the answer",
        })
    }
}

impl core::error::Error for WireError {}

/// Where a node stands in an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Phase {
    /// No upload held.
    Idle = 0,
    /// A manifest accepted, chunks arriving.
    Receiving = 1,
    /// Every chunk present and the image's SHA-256 matches the manifest.
    Verified = 2,
    /// `flash` accepted: the node marks the slot and restarts into the new version.
    Installing = 3,
}

impl Phase {
    fn from_u8(code: u8) -> Option<Phase> {
        Some(match code {
            0 => Phase::Idle,
            1 => Phase::Receiving,
            2 => Phase::Verified,
            3 => Phase::Installing,
            _ => return None,
        })
    }
}

/// Why a node refused a command (the `result` of a [`Report`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum Reason {
    /// Undecodable manifest, unknown command, or a payload of the wrong shape.
    Malformed = 1,
    /// Another manifest format version or unknown flags.
    Unsupported = 2,
    /// The node has a public key and the manifest carries no signature.
    Unsigned = 3,
    /// The signature does not verify under the node's key.
    BadSignature = 4,
    /// The manifest is for another firmware ID.
    WrongFirmware = 5,
    /// The manifest's version is lower than the running one (downgrades refused).
    Downgrade = 6,
    /// The image does not fit the update slot.
    TooLarge = 7,
    /// Another upload is in progress (its ID is the report's `held`).
    Busy = 8,
    /// The command names an upload the node does not hold.
    UnknownManifest = 9,
    /// Chunk index past the last chunk, or a chunk of the wrong length.
    BadChunk = 10,
    /// `flash` before the image is complete and verified.
    NotComplete = 11,
    /// The complete image's SHA-256 differs from the manifest's: progress cleared.
    HashMismatch = 12,
    /// The flash reported an error.
    Flash = 13,
}

impl Reason {
    /// Number of reasons (codes are `1..=COUNT`).
    pub const COUNT: usize = 13;

    /// From the wire code.
    pub fn from_u8(code: u8) -> Option<Reason> {
        use Reason::*;
        const ALL: [Reason; Reason::COUNT] = [
            Malformed,
            Unsupported,
            Unsigned,
            BadSignature,
            WrongFirmware,
            Downgrade,
            TooLarge,
            Busy,
            UnknownManifest,
            BadChunk,
            NotComplete,
            HashMismatch,
            Flash,
        ];
        ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Malformed => "malformed",
            Reason::Unsupported => "unsupported manifest format",
            Reason::Unsigned => "unsigned manifest",
            Reason::BadSignature => "bad signature",
            Reason::WrongFirmware => "other firmware ID",
            Reason::Downgrade => "downgrade refused",
            Reason::TooLarge => "image larger than the update slot",
            Reason::Busy => "another upload in progress",
            Reason::UnknownManifest => "unknown upload",
            Reason::BadChunk => "bad chunk index or length",
            Reason::NotComplete => "image not complete",
            Reason::HashMismatch => "SHA-256 mismatch",
            Reason::Flash => "flash error",
        })
    }
}

/// `ota2/state`: the node's state, and the result of the command it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Where the node stands.
    pub phase: Phase,
    /// The upload it holds (`ManifestId(0)` when idle).
    pub held: ManifestId,
    /// Chunks of that upload it has.
    pub received: u32,
    /// Chunks in that upload (0 when idle).
    pub total: u32,
    /// `None`: the command was carried out; else why it was refused.
    pub result: Option<Reason>,
    /// The upload the answered command named (0 for `status` without one).
    pub subject: ManifestId,
    /// Version of the held upload (the one the node will run after installing it); when
    /// idle, the version the node runs.
    pub version: heapless::String<MAX_VERSION_LEN>,
}

/// Fixed part of a [`Report`], before the version.
const REPORT_FIXED: usize = 18;
/// Longest [`Report`] encoding.
pub const MAX_REPORT_LEN: usize = REPORT_FIXED + 1 + MAX_VERSION_LEN;

impl Report {
    /// Encodes into `buf`, returning the length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = REPORT_FIXED + 1 + self.version.len();
        let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        // `out` is exactly `len` ≥ 19 bytes: every offset below is in bounds.
        out[0] = self.phase as u8;
        out[1..5].copy_from_slice(&self.held.0.to_be_bytes());
        out[5..9].copy_from_slice(&self.received.to_be_bytes());
        out[9..13].copy_from_slice(&self.total.to_be_bytes());
        out[13] = self.result.map_or(0, |r| r as u8);
        out[14..18].copy_from_slice(&self.subject.0.to_be_bytes());
        // A String<31>: its length fits a byte.
        out[18] = self.version.len() as u8;
        out[19..].copy_from_slice(self.version.as_bytes());
        Ok(len)
    }

    /// Decodes a report.
    pub fn decode(bytes: &[u8]) -> Result<Report, WireError> {
        // `fixed` is 19 bytes and `at` ≤ 14 below; `bytes` is at least that long.
        let fixed = bytes.get(..REPORT_FIXED + 1).ok_or(WireError::Truncated)?;
        let be = |at: usize| {
            u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]])
        };
        let phase = Phase::from_u8(fixed[0]).ok_or(WireError::BadCode)?;
        let result = match fixed[13] {
            0 => None,
            code => Some(Reason::from_u8(code).ok_or(WireError::BadCode)?),
        };
        let len = usize::from(fixed[18]);
        if len > MAX_VERSION_LEN {
            return Err(WireError::TooLong);
        }
        let rest = &bytes[REPORT_FIXED + 1..];
        let version = rest.get(..len).ok_or(WireError::Truncated)?;
        if rest.len() > len {
            return Err(WireError::TrailingBytes);
        }
        let version = core::str::from_utf8(version).map_err(|_| WireError::TooLong)?;
        Ok(Report {
            phase,
            held: ManifestId(be(1)),
            received: be(5),
            total: be(9),
            result,
            subject: ManifestId(be(14)),
            version: heapless::String::try_from(version).map_err(|_| WireError::TooLong)?,
        })
    }
}

/// `ota2/missing`: which chunks of `first..first + count` the node lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Missing<'a> {
    id: ManifestId,
    first: u32,
    count: u16,
    bits: &'a [u8],
}

/// Header of a [`Missing`] window, before the bits.
const MISSING_FIXED: usize = 10;
/// Longest [`Missing`] encoding (522 bytes).
pub const MAX_MISSING_LEN: usize = MISSING_FIXED + MAX_WINDOW as usize / 8;

impl<'a> Missing<'a> {
    /// A window: bit `i` (byte `i / 8`, least significant bit first) set means chunk
    /// `first + i` is missing. `bits` must be exactly `ceil(count / 8)` bytes with no bit
    /// set at or past `count`, `count` at most [`MAX_WINDOW`], and the window must end at
    /// or before chunk index `u32::MAX` (it never wraps around to chunk 0).
    pub fn new(id: ManifestId, first: u32, count: u16, bits: &'a [u8]) -> Result<Self, WireError> {
        if count > MAX_WINDOW || first.checked_add(u32::from(count)).is_none() {
            return Err(WireError::TooLong);
        }
        let used = usize::from(count).div_ceil(8);
        let tail_ok = match (bits.last(), count % 8) {
            (Some(&last), rem) if rem != 0 => last >> rem == 0,
            _ => true,
        };
        if bits.len() != used || !tail_ok {
            return Err(WireError::NonCanonical);
        }
        Ok(Missing {
            id,
            first,
            count,
            bits,
        })
    }

    /// The upload.
    pub fn id(&self) -> ManifestId {
        self.id
    }

    /// First chunk index the window covers.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// Chunks the window covers.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The bit field.
    pub fn bits(&self) -> &'a [u8] {
        self.bits
    }

    /// Whether chunk `index` is inside the window and missing.
    pub fn is_missing(&self, index: u32) -> bool {
        let Some(i) = index
            .checked_sub(self.first)
            .filter(|&i| i < u32::from(self.count))
        else {
            return false;
        };
        self.bits
            .get(i as usize / 8)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    /// The missing chunk indices, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + 'a {
        let (first, count, bits) = (self.first, self.count, self.bits);
        (0..u32::from(count))
            .filter(move |&i| {
                bits.get(i as usize / 8)
                    .is_some_and(|b| b & (1 << (i % 8)) != 0)
            })
            // `new` checked that `first + count` does not overflow.
            .map(move |i| first + i)
    }

    /// Encodes into `buf`, returning the length.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, WireError> {
        let len = MISSING_FIXED + self.bits.len();
        let out = buf.get_mut(..len).ok_or(WireError::BufferTooSmall)?;
        // `out` is exactly 10 + `bits.len()` bytes: every range below is in bounds.
        out[..4].copy_from_slice(&self.id.0.to_be_bytes());
        out[4..8].copy_from_slice(&self.first.to_be_bytes());
        out[8..10].copy_from_slice(&self.count.to_be_bytes());
        out[10..].copy_from_slice(self.bits);
        Ok(len)
    }

    /// Decodes a window (every rule of [`Missing::new`]).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, WireError> {
        let (head, bits) = bytes
            .split_at_checked(MISSING_FIXED)
            .ok_or(WireError::Truncated)?;
        // `head` is exactly 10 bytes.
        let id = ManifestId(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
        let first = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let count = u16::from_be_bytes([head[8], head[9]]);
        if count > MAX_WINDOW {
            return Err(WireError::TooLong);
        }
        match bits.len().cmp(&usize::from(count).div_ceil(8)) {
            core::cmp::Ordering::Less => Err(WireError::Truncated),
            core::cmp::Ordering::Greater => Err(WireError::TrailingBytes),
            core::cmp::Ordering::Equal => Missing::new(id, first, count, bits),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_fixture_round_trips() {
        let report = Report {
            phase: Phase::Receiving,
            held: ManifestId(0x0a1b_2c3d),
            received: 5,
            total: 1536,
            result: Some(Reason::Busy),
            subject: ManifestId(0xdead_beef),
            version: heapless::String::try_from("1.2").unwrap(),
        };
        let bytes = [
            0x01, 0x0a, 0x1b, 0x2c, 0x3d, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x06, 0x00, 0x08,
            0xde, 0xad, 0xbe, 0xef, 0x03, 0x31, 0x2e, 0x32,
        ];
        let mut buf = [0; MAX_REPORT_LEN];
        let n = report.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], &bytes);
        assert_eq!(Report::decode(&bytes), Ok(report));
        assert_eq!(Report::decode(&bytes[..21]), Err(WireError::Truncated));
        let mut bad = bytes;
        bad[13] = 14;
        assert_eq!(Report::decode(&bad), Err(WireError::BadCode));
    }

    #[test]
    fn missing_fixture_round_trips() {
        // Chunks 3, 4 and 12 of a window starting at 3, 10 chunks wide.
        let bytes = [0x0a, 0x1b, 0x2c, 0x3d, 0, 0, 0, 3, 0, 10, 0x03, 0x02];
        let m = Missing::decode(&bytes).unwrap();
        assert_eq!((m.first(), m.count()), (3, 10));
        let mut got = heapless::Vec::<u32, 8>::new();
        got.extend(m.iter());
        assert_eq!(got.as_slice(), &[3, 4, 12]);
        assert!(m.is_missing(12) && !m.is_missing(5) && !m.is_missing(13));
        let mut buf = [0; MAX_MISSING_LEN];
        let n = m.encode(&mut buf).unwrap();
        assert_eq!(&buf[..n], &bytes);
        let mut stray = bytes;
        stray[11] = 0x06;
        assert_eq!(Missing::decode(&stray), Err(WireError::NonCanonical));
        assert_eq!(Missing::decode(&bytes[..11]), Err(WireError::Truncated));
    }

    #[test]
    fn reason_codes_are_dense() {
        for code in 1..=Reason::COUNT as u8 {
            assert_eq!(Reason::from_u8(code).map(|r| r as u8), Some(code));
        }
        assert_eq!(Reason::from_u8(0), None);
        assert_eq!(Reason::from_u8(Reason::COUNT as u8 + 1), None);
    }
}
