//! The original OTA exchange, `../shared/spec/compat.md` "OTA over MQTT", to the letter.
//!
//! A [`Receiver`] takes the commands meant for this node (the part of the topic after
//! `<in>ota/<target>/`, the target already matched with
//! [`targets_us`](super::targets_us)) and writes the image into an [`Area`] (the
//! inactive application slot):
//!
//! | command | payload | the receiver | reply (under `<out><ID>/`) |
//! |---|---|---|---|
//! | `start` | `md5:<base64 of 16 bytes>,len:<decimal>` | erases the sectors for `len` bytes | `ota/erase` = µs the erase took |
//! | decimal offset | base64 of a chunk, ≤ 1024 characters | writes it inside `[0, len)` | `ota/md5/<hex offset>` = MD5 of the chunk |
//! | `check` | empty | MD5 of the `len` bytes read back from flash vs the announced one | `ota/check` = `MD5 Passed` / `MD5 Failed` |
//! | `check` | text | MD5 of the text (a link test) | `ota/check` = 32 hex digits |
//! | `flash` | any | the same read-back check; on success [`Outcome::Install`] | `ota/flash` = `Failed` otherwise |
//!
//! Decisions the spec leaves open:
//! - `start` with `len` 0 or larger than the slot is ignored, as the spec says (no
//!   answer), and so is a malformed `start`: a transfer already running goes on.
//! - A valid `start` while a transfer runs restarts the exchange: the slot is erased
//!   again and the new MD5 and length replace the old. Chunks of an interleaved second
//!   upload therefore meet an erased slot or each other; whatever they leave behind,
//!   `check` and `flash` compare what is *in flash* with the MD5 of the latest `start`,
//!   so a mix never passes.
//! - A chunk is refused (no answer; the sender's stop-and-wait retries or gives up)
//!   when there is no transfer, when its offset or end lies past `len`, when it is not
//!   canonical base64 or longer than 1024 characters, or when it conflicts with bytes
//!   already written. A chunk identical to what is already there is answered and not
//!   rewritten, so a resend after a lost answer is harmless.
//! - `flash` does not trust an earlier `check`: it reads the image back itself.
//!
//! Every refusal is returned as a [`Refusal`] (for the caller's debug log) and counted
//! in [`Counters`]. No-panic contract: any command and payload bytes are handled
//! without panicking; lengths are checked before decoding.

use core::fmt;

use base64::Engine;
use embedded_storage::nor_flash::NorFlash;
use md5::{Digest, Md5};

use super::{Area, AreaError, Reply};

/// Longest base64 chunk payload the protocol allows.
pub const MAX_CHUNK_BASE64: usize = 1024;
/// Longest decoded chunk (1024 base64 characters).
pub const MAX_CHUNK: usize = MAX_CHUNK_BASE64 / 4 * 3;
/// Block size for reading the image back.
const READ_BLOCK: usize = 256;

/// What the caller does after a handled command (any reply has gone out already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more to do.
    Done,
    /// The image of `len` bytes checked out: mark the slot `New`
    /// ([`Boot::mark_new`](super::boot::Boot::mark_new)) and restart into it. If that
    /// fails, publish [`flash_failed`] instead.
    Install {
        /// Length of the image in the slot.
        len: u32,
    },
}

/// Why a command was refused. Refusals of `check` and `flash` still answered
/// (`MD5 Failed`, `Failed`); the others got no answer, as in the original.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A chunk that is not canonical base64.
    BadBase64,
    /// A chunk offset or end outside the announced length (or the slot), or an offset
    /// that is not a number that fits.
    OutOfRange,
    /// A chunk over [`MAX_CHUNK_BASE64`] characters.
    ChunkTooLarge,
    /// A `start` payload that is not `md5:<base64 of 16 bytes>,len:<decimal>`.
    MalformedStart,
    /// A `start` with `len` 0 or larger than the slot.
    BadLength,
    /// Not `start`, `check`, `flash` or a decimal offset.
    UnknownCommand,
    /// A chunk, `check` or `flash` with no transfer started.
    NotStarted,
    /// A chunk that differs from bytes already written at its place.
    Overlap,
    /// `flash` (or `check`) with an image that does not match the announced MD5.
    Incomplete,
    /// The flash failed; the transfer is abandoned if it was the erase.
    Flash,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::BadBase64 => "chunk is not valid base64",
            Refusal::OutOfRange => "chunk outside the announced image",
            Refusal::ChunkTooLarge => "chunk over 1024 base64 characters",
            Refusal::MalformedStart => "start payload is not md5:<base64>,len:<decimal>",
            Refusal::BadLength => "image length 0 or larger than the update slot",
            Refusal::UnknownCommand => "unknown OTA command",
            Refusal::NotStarted => "no OTA transfer started",
            Refusal::Overlap => "chunk conflicts with bytes already written",
            Refusal::Incomplete => "image does not match the announced MD5",
            Refusal::Flash => "flash error",
        })
    }
}

impl core::error::Error for Refusal {}

/// Refusals so far, by kind (saturating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// [`Refusal::BadBase64`].
    pub bad_base64: u32,
    /// [`Refusal::OutOfRange`].
    pub out_of_range: u32,
    /// [`Refusal::ChunkTooLarge`].
    pub chunk_too_large: u32,
    /// [`Refusal::MalformedStart`].
    pub malformed_start: u32,
    /// [`Refusal::BadLength`].
    pub bad_length: u32,
    /// [`Refusal::UnknownCommand`].
    pub unknown_command: u32,
    /// [`Refusal::NotStarted`].
    pub not_started: u32,
    /// [`Refusal::Overlap`].
    pub overlap: u32,
    /// [`Refusal::Incomplete`].
    pub incomplete: u32,
    /// [`Refusal::Flash`].
    pub flash: u32,
}

impl Counters {
    fn count(&mut self, refusal: Refusal) {
        let c = match refusal {
            Refusal::BadBase64 => &mut self.bad_base64,
            Refusal::OutOfRange => &mut self.out_of_range,
            Refusal::ChunkTooLarge => &mut self.chunk_too_large,
            Refusal::MalformedStart => &mut self.malformed_start,
            Refusal::BadLength => &mut self.bad_length,
            Refusal::UnknownCommand => &mut self.unknown_command,
            Refusal::NotStarted => &mut self.not_started,
            Refusal::Overlap => &mut self.overlap,
            Refusal::Incomplete => &mut self.incomplete,
            Refusal::Flash => &mut self.flash,
        };
        *c = c.saturating_add(1);
    }

    /// All refusals together.
    pub fn total(&self) -> u32 {
        [
            self.bad_base64,
            self.out_of_range,
            self.chunk_too_large,
            self.malformed_start,
            self.bad_length,
            self.unknown_command,
            self.not_started,
            self.overlap,
            self.incomplete,
            self.flash,
        ]
        .iter()
        .fold(0u32, |sum, c| sum.saturating_add(*c))
    }
}

/// The image a `start` announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announced {
    /// MD5 of the image.
    pub md5: [u8; 16],
    /// Length of the image in bytes.
    pub len: u32,
}

/// The node side of the original exchange for one update slot (see the module doc).
///
/// Pass it the [`Area`] of the slot that does not run
/// ([`Boot::inactive`](super::boot::Boot::inactive)). Its state is in RAM only: the
/// original protocol has no resume, so after a restart the receiver is idle and refuses
/// chunks until the next `start`.
#[derive(Clone, Debug, Default)]
pub struct Receiver {
    transfer: Option<Announced>,
    counters: Counters,
}

impl Receiver {
    /// An idle receiver.
    pub fn new() -> Self {
        Self::default()
    }

    /// The running transfer, if a `start` was accepted.
    pub fn announced(&self) -> Option<Announced> {
        self.transfer
    }

    /// Refusals so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Handles one command. `now_micros` is a monotonic clock in microseconds, read
    /// before and after the erase of a `start`; `out` receives the reply to publish
    /// under `<out><ID>/` (at most one per command, also on the answered refusals of
    /// `check` and `flash`).
    pub fn handle<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        command: &str,
        payload: &[u8],
        now_micros: &mut impl FnMut() -> u64,
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Refusal> {
        let result = match command {
            "start" => self.handle_start(area, payload, now_micros, out),
            "check" => self.handle_check(area, payload, out),
            "flash" => self.handle_flash(area, out),
            _ => match parse_offset(command) {
                Some(offset) => self.handle_chunk(area, offset, payload, out),
                None => Err(Refusal::UnknownCommand),
            },
        };
        if let Err(refusal) = result {
            self.counters.count(refusal);
        }
        result
    }

    fn handle_start<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        payload: &[u8],
        now_micros: &mut impl FnMut() -> u64,
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Refusal> {
        let announced = parse_start(payload)?;
        if announced.len == 0 || announced.len > area.size() {
            return Err(Refusal::BadLength);
        }
        self.transfer = None;
        let before = now_micros();
        area.erase(announced.len).map_err(|_| Refusal::Flash)?;
        let took = now_micros().saturating_sub(before);
        self.transfer = Some(announced);
        let mut digits = [0u8; 20];
        out(reply("ota/erase", decimal(took, &mut digits)));
        Ok(Outcome::Done)
    }

    fn handle_chunk<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        offset: Option<u32>,
        payload: &[u8],
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Refusal> {
        let transfer = self.transfer.ok_or(Refusal::NotStarted)?;
        let offset = offset.ok_or(Refusal::OutOfRange)?;
        if payload.len() > MAX_CHUNK_BASE64 {
            return Err(Refusal::ChunkTooLarge);
        }
        let mut buf = [0u8; MAX_CHUNK];
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(payload, &mut buf)
            .map_err(|_| Refusal::BadBase64)?;
        // `decode_slice` wrote `n <= buf.len()` bytes.
        let chunk = buf.get(..n).ok_or(Refusal::BadBase64)?;
        let end = u64::from(offset) + n as u64;
        if offset >= transfer.len || end > u64::from(transfer.len) {
            return Err(Refusal::OutOfRange);
        }
        match compare(area, offset, chunk).map_err(area_refusal)? {
            Existing::Same => {}
            Existing::Conflict => return Err(Refusal::Overlap),
            Existing::Writable => area.write(offset, chunk).map_err(area_refusal)?,
        }
        let mut subtopic = heapless::String::new();
        // "ota/md5/" and at most 8 hex digits fit in MAX_REPLY_TOPIC.
        let _ = fmt::write(&mut subtopic, format_args!("ota/md5/{offset:x}"));
        out(Reply {
            subtopic,
            payload: hex_payload(&Md5::digest(chunk).into()),
        });
        Ok(Outcome::Done)
    }

    fn handle_check<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        payload: &[u8],
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Refusal> {
        if !payload.is_empty() {
            let mut r = reply("ota/check", b"");
            r.payload = hex_payload(&Md5::digest(payload).into());
            out(r);
            return Ok(Outcome::Done);
        }
        let verdict = self.verify(area);
        let text: &[u8] = if verdict.is_ok() {
            b"MD5 Passed"
        } else {
            b"MD5 Failed"
        };
        out(reply("ota/check", text));
        verdict.map(|_| Outcome::Done)
    }

    fn handle_flash<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Refusal> {
        match self.verify(area) {
            Ok(len) => {
                self.transfer = None;
                Ok(Outcome::Install { len })
            }
            Err(refusal) => {
                out(flash_failed());
                Err(refusal)
            }
        }
    }

    /// The image length if the slot holds exactly the announced image.
    fn verify<F: NorFlash>(&self, area: &mut Area<F>) -> Result<u32, Refusal> {
        let transfer = self.transfer.ok_or(Refusal::NotStarted)?;
        let mut hasher = Md5::new();
        let mut block = [0u8; READ_BLOCK];
        let mut at = 0u32;
        while at < transfer.len {
            let n = (transfer.len - at).min(READ_BLOCK as u32);
            // `n <= READ_BLOCK`: in bounds.
            let part = &mut block[..n as usize];
            area.read(at, part).map_err(area_refusal)?;
            hasher.update(&*part);
            at += n;
        }
        let md5: [u8; 16] = hasher.finalize().into();
        if md5 == transfer.md5 {
            Ok(transfer.len)
        } else {
            Err(Refusal::Incomplete)
        }
    }
}

/// The `ota/flash` = `Failed` reply, for a refusal the caller decides (e.g. the boot
/// state would not take the image).
pub fn flash_failed() -> Reply {
    reply("ota/flash", b"Failed")
}

/// What the flash holds where a chunk goes.
enum Existing {
    /// Exactly the chunk (a resend).
    Same,
    /// A written byte that differs from the chunk.
    Conflict,
    /// Erased bytes (and bytes equal to the chunk's): the chunk can be written.
    Writable,
}

fn compare<F: NorFlash>(
    area: &mut Area<F>,
    offset: u32,
    chunk: &[u8],
) -> Result<Existing, AreaError> {
    let mut same = true;
    let mut block = [0u8; 64];
    let mut at = offset;
    for part in chunk.chunks(block.len()) {
        // `part.len() <= block.len()`: in bounds.
        let old = &mut block[..part.len()];
        area.read(at, old)?;
        for (o, n) in old.iter().zip(part) {
            if o != n {
                same = false;
                if *o != 0xFF {
                    return Ok(Existing::Conflict);
                }
            }
        }
        at += part.len() as u32;
    }
    Ok(if same {
        Existing::Same
    } else {
        Existing::Writable
    })
}

fn area_refusal(e: AreaError) -> Refusal {
    match e {
        AreaError::OutOfBounds => Refusal::OutOfRange,
        _ => Refusal::Flash,
    }
}

/// A chunk command: `Some(Some(offset))`, `Some(None)` for digits that overflow u32,
/// `None` for anything that is not all decimal digits.
fn parse_offset(command: &str) -> Option<Option<u32>> {
    parse_decimal(command.as_bytes())
}

/// Decimal digits (no sign, no spaces) as u32: `None` if not digits, `Some(None)` on
/// overflow.
fn parse_decimal(s: &[u8]) -> Option<Option<u32>> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().try_fold(0u32, |v, d| {
        v.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    }))
}

/// `md5:<base64 of 16 bytes>,len:<decimal>`; the two fields in either order.
fn parse_start(payload: &[u8]) -> Result<Announced, Refusal> {
    let mut md5 = None;
    let mut len = None;
    let mut fields = payload.split(|&b| b == b',');
    for field in fields.by_ref().take(2) {
        if let Some(value) = field.strip_prefix(b"md5:") {
            let mut buf = [0u8; 18];
            let n = base64::engine::general_purpose::STANDARD
                .decode_slice(value, &mut buf)
                .map_err(|_| Refusal::MalformedStart)?;
            let bytes: [u8; 16] = buf
                .get(..n)
                .and_then(|b| b.try_into().ok())
                .ok_or(Refusal::MalformedStart)?;
            if md5.replace(bytes).is_some() {
                return Err(Refusal::MalformedStart);
            }
        } else if let Some(value) = field.strip_prefix(b"len:") {
            let n = parse_decimal(value).ok_or(Refusal::MalformedStart)?;
            // Too many digits for u32 is certainly larger than the slot.
            if len.replace(n.ok_or(Refusal::BadLength)?).is_some() {
                return Err(Refusal::MalformedStart);
            }
        } else {
            return Err(Refusal::MalformedStart);
        }
    }
    if fields.next().is_some() {
        return Err(Refusal::MalformedStart);
    }
    match (md5, len) {
        (Some(md5), Some(len)) => Ok(Announced { md5, len }),
        _ => Err(Refusal::MalformedStart),
    }
}

fn reply(subtopic: &str, payload: &[u8]) -> Reply {
    let mut r = Reply {
        subtopic: heapless::String::new(),
        payload: heapless::Vec::new(),
    };
    // Our subtopics and payloads are short constants, far below the capacities.
    let _ = r.subtopic.push_str(subtopic);
    let _ = r.payload.extend_from_slice(payload);
    r
}

/// 32 lower-case hex digits.
fn hex_payload(md5: &[u8; 16]) -> heapless::Vec<u8, { super::MAX_REPLY_PAYLOAD }> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut v = heapless::Vec::new();
    for b in md5 {
        // 32 bytes fit in MAX_REPLY_PAYLOAD; nibbles index a 16-entry table.
        let _ = v.push(HEX[usize::from(b >> 4)]);
        let _ = v.push(HEX[usize::from(b & 0xF)]);
    }
    v
}

/// `n` in decimal, written at the end of `buf` (20 digits hold any u64).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        // `i` stays in 0..20: a u64 has at most 20 digits.
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_payload_fixture() {
        // The original script's format for the MD5 of "abc" and 3 bytes.
        let p = b"md5:kAFQmDzST7DWlj99KOF/cg==,len:3";
        let a = parse_start(p).unwrap();
        assert_eq!(a.len, 3);
        assert_eq!(a.md5, <[u8; 16]>::from(Md5::digest(b"abc")));
        assert_eq!(
            parse_start(b"md5:kAFQmDzST7DWlj99KOF/cg==,len:4294967296"),
            Err(Refusal::BadLength)
        );
        assert_eq!(
            parse_start(b"md5:kAFQmDzST7DWlj99KOF/cg,len:3"),
            Err(Refusal::MalformedStart)
        );
    }

    #[test]
    fn decimal_and_hex() {
        assert_eq!(parse_decimal(b"0"), Some(Some(0)));
        assert_eq!(parse_decimal(b"4294967295"), Some(Some(u32::MAX)));
        assert_eq!(parse_decimal(b"4294967296"), Some(None));
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1a"), None);
        let mut buf = [0; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
        assert_eq!(
            hex_payload(&Md5::digest(b"").into()).as_slice(),
            b"d41d8cd98f00b204e9800998ecf8427e"
        );
    }
}
