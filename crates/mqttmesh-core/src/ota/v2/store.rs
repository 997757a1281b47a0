//! Progress kept in flash (`docs/PROTOCOL.md` "OTA v2", "Progress in flash"): the last
//! sector(s) of the update slot hold the accepted manifest, a few one-way markers and
//! the received-chunk bitmap. Every update after the erase only clears bits, so marking
//! a chunk received is one small write and never needs an erase.

use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

use super::manifest::MAX_MANIFEST_LEN;
use super::MAX_CHUNKS;
use crate::ota::{Area, AreaError};

/// `MMS2`: a progress record starts with it.
const MAGIC: [u8; 4] = *b"MMS2";
/// Header: magic, manifest length (`u16` BE), two reserved `0xFF` bytes.
const HEADER_LEN: u32 = 8;
/// One-way markers, 32 bytes apart so that no flash write unit (≤ `area::MAX_ALIGN` =
/// 32 bytes) spans two.
const COMMITTED: u32 = 160;
const VERIFIED: u32 = 192;
const INSTALLED: u32 = 224;
const DEAD: u32 = 256;
/// The bitmap: bit `i % 8` of byte `i / 8`; 1 (erased) = missing, 0 = received.
const BITMAP: u32 = 288;
/// Bytes of progress record; the region is this rounded up to whole sectors.
pub const META_LEN: u32 = BITMAP + MAX_CHUNKS / 8;

const _: () = assert!(HEADER_LEN as usize + MAX_MANIFEST_LEN <= COMMITTED as usize);
const _: () = assert!(BITMAP % crate::ota::area::MAX_ALIGN as u32 == 0);

/// A one-way marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Marker {
    /// The manifest is written completely (a torn record is ignored).
    Committed,
    /// Every chunk present and the hash matched.
    Verified,
    /// Handed to the caller to install: no longer an upload in progress.
    Installed,
    /// Aborted or failed: ignored at the next boot.
    Dead,
}

impl Marker {
    fn offset(self) -> u32 {
        match self {
            Marker::Committed => COMMITTED,
            Marker::Verified => VERIFIED,
            Marker::Installed => INSTALLED,
            Marker::Dead => DEAD,
        }
    }
}

/// Where the progress region starts in the slot; `None` when the slot is smaller.
fn base<F: NorFlash>(area: &Area<F>) -> Option<u32> {
    let sector = u32::try_from(F::ERASE_SIZE).ok()?.max(1);
    area.size()
        .checked_sub(META_LEN.div_ceil(sector).checked_mul(sector)?)
}

/// The largest image a slot takes: its size less the progress region (whole sectors at
/// its end, [`META_LEN`] rounded up).
pub fn capacity<F: NorFlash>(area: &Area<F>) -> u32 {
    base(area).unwrap_or(0)
}

/// Starts a record for an image of `image_len` bytes: erases the progress region (so
/// an old record is gone before anything else changes), then the sectors covering the
/// image, writes the manifest, and only then commits it.
pub(super) fn begin<F: NorFlash>(
    area: &mut Area<F>,
    image_len: u32,
    manifest: &[u8],
) -> Result<(), AreaError> {
    let base = base(area).ok_or(AreaError::OutOfBounds)?;
    if image_len > base {
        return Err(AreaError::OutOfBounds);
    }
    let len = u16::try_from(manifest.len()).map_err(|_| AreaError::OutOfBounds)?;
    let mut record = [0xFF_u8; HEADER_LEN as usize + MAX_MANIFEST_LEN];
    let record = record
        .get_mut(..HEADER_LEN as usize + manifest.len())
        .ok_or(AreaError::OutOfBounds)?;
    // The record is HEADER_LEN + manifest.len() bytes long: the ranges are in bounds.
    record[..4].copy_from_slice(&MAGIC);
    record[4..6].copy_from_slice(&len.to_be_bytes());
    record[HEADER_LEN as usize..].copy_from_slice(manifest);
    erase_region(area, base)?;
    area.erase(image_len)?;
    area.write(base, record)?;
    mark(area, Marker::Committed)
}

/// Erases `[base, size)` of the slot: whole sectors (`base` and the size are sector
/// multiples), inside the slot by construction. [`Area::erase`] only erases from the
/// start of the slot, hence the direct flash call.
fn erase_region<F: NorFlash>(area: &mut Area<F>, base: u32) -> Result<(), AreaError> {
    let from = area
        .base()
        .checked_add(base)
        .ok_or(AreaError::OutOfBounds)?;
    let to = area
        .base()
        .checked_add(area.size())
        .ok_or(AreaError::OutOfBounds)?;
    area.flash_mut()
        .erase(from, to)
        .map_err(|_| AreaError::Flash)
}

/// Sets a marker (clears its bytes).
pub(super) fn mark<F: NorFlash>(area: &mut Area<F>, marker: Marker) -> Result<(), AreaError> {
    let base = base(area).ok_or(AreaError::OutOfBounds)?;
    area.write(base + marker.offset(), &[0; 4])
}

fn is_marked<F: NorFlash>(
    area: &mut Area<F>,
    base: u32,
    marker: Marker,
) -> Result<bool, AreaError> {
    let mut b = [0; 4];
    area.read(base + marker.offset(), &mut b)?;
    // A torn marker write still counts: the write only starts once its cause is done.
    Ok(b != [0xFF; 4])
}

/// A record that survived a restart.
#[derive(Debug)]
pub(super) struct Loaded {
    pub manifest: heapless::Vec<u8, MAX_MANIFEST_LEN>,
    pub verified: bool,
}

/// The upload in progress, if any: a committed record neither installed nor dead.
pub(super) fn load<F: NorFlash>(area: &mut Area<F>) -> Result<Option<Loaded>, AreaError> {
    let Some(base) = base(area) else {
        return Ok(None);
    };
    let mut header = [0; HEADER_LEN as usize];
    area.read(base, &mut header)?;
    // `header` is a fixed 8-byte array.
    let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if header[..4] != MAGIC
        || len > MAX_MANIFEST_LEN
        || !is_marked(area, base, Marker::Committed)?
        || is_marked(area, base, Marker::Installed)?
        || is_marked(area, base, Marker::Dead)?
    {
        return Ok(None);
    }
    let mut manifest = heapless::Vec::new();
    // len ≤ MAX_MANIFEST_LEN, the capacity, checked above.
    let _ = manifest.resize(len, 0);
    area.read(base + HEADER_LEN, &mut manifest)?;
    let verified = is_marked(area, base, Marker::Verified)?;
    Ok(Some(Loaded { manifest, verified }))
}

/// Marks chunk `index` received; `false` if it already was. One byte is rewritten with
/// one more bit cleared (`Area::write` read-modify-writes the flash word around it).
pub(super) fn set_received<F: NorFlash>(area: &mut Area<F>, index: u32) -> Result<bool, AreaError> {
    let base = base(area).ok_or(AreaError::OutOfBounds)?;
    // index < MAX_CHUNKS (a checked chunk index): inside the bitmap, no overflow.
    let at = base + BITMAP + index / 8;
    let mut byte = [0];
    area.read(at, &mut byte)?;
    let mask = 1u8 << (index % 8);
    if byte[0] & mask == 0 {
        return Ok(false);
    }
    area.write(at, &[byte[0] & !mask])?;
    Ok(true)
}

/// Reads `out.len()` bitmap bytes from byte `from` (1 = missing).
fn read_bitmap<F: NorFlash>(
    area: &mut Area<F>,
    from: u32,
    out: &mut [u8],
) -> Result<(), AreaError> {
    let base = base(area).ok_or(AreaError::OutOfBounds)?;
    area.read(base + BITMAP + from, out)
}

/// Whether chunk `index` is received.
pub(super) fn is_received<F: NorFlash>(area: &mut Area<F>, index: u32) -> Result<bool, AreaError> {
    let mut b = [0];
    read_bitmap(area, index / 8, &mut b)?;
    Ok(b[0] & (1 << (index % 8)) == 0)
}

/// Calls `f(i, missing)` for every chunk `i` in `from..to` (to ≤ [`MAX_CHUNKS`]).
fn scan<F: NorFlash>(
    area: &mut Area<F>,
    from: u32,
    to: u32,
    mut f: impl FnMut(u32, bool),
) -> Result<(), AreaError> {
    let mut block = [0u8; 64];
    let mut i = from;
    while i < to {
        let first_byte = i / 8;
        let n = ((to - 1) / 8 - first_byte + 1).min(block.len() as u32) as usize;
        read_bitmap(area, first_byte, &mut block[..n])?;
        let end = to.min((first_byte + n as u32) * 8);
        while i < end {
            // i / 8 - first_byte < n by the choice of end.
            f(
                i,
                block[(i / 8 - first_byte) as usize] & (1 << (i % 8)) != 0,
            );
            i += 1;
        }
    }
    Ok(())
}

/// Chunks of `0..total` received.
pub(super) fn count_received<F: NorFlash>(
    area: &mut Area<F>,
    total: u32,
) -> Result<u32, AreaError> {
    let mut n = 0;
    scan(area, 0, total.min(MAX_CHUNKS), |_, missing| {
        n += u32::from(!missing)
    })?;
    Ok(n)
}

/// The missing window: starts at the first missing chunk at or after `from` (wrapping
/// to 0), at most `bits.len() * 8` chunks wide, ending at its last missing chunk. Fills
/// `bits` (1 = missing) and returns `(first, count)`; `count` is 0 when none is missing.
pub(super) fn window<F: NorFlash>(
    area: &mut Area<F>,
    total: u32,
    from: u32,
    bits: &mut [u8],
) -> Result<(u32, u16), AreaError> {
    let total = total.min(MAX_CHUNKS);
    let mut first = None;
    scan(area, from.min(total), total, |i, m| {
        first = first.or(m.then_some(i))
    })?;
    if first.is_none() {
        scan(area, 0, from.min(total), |i, m| {
            first = first.or(m.then_some(i))
        })?;
    }
    let Some(first) = first else {
        return Ok((0, 0));
    };
    bits.fill(0);
    let width = (bits.len() as u32 * 8).min(u32::from(u16::MAX));
    let mut count = 0;
    scan(area, first, total.min(first + width), |i, m| {
        if m {
            let k = i - first;
            // k < width = bits.len() * 8.
            bits[k as usize / 8] |= 1 << (k % 8);
            count = k + 1;
        }
    })?;
    // count ≤ width ≤ u16::MAX.
    Ok((first, count as u16))
}

/// SHA-256 of the first `size` bytes of the slot, read back in blocks.
pub(super) fn image_hash<F: NorFlash>(
    area: &mut Area<F>,
    size: u32,
) -> Result<[u8; 32], AreaError> {
    let mut hasher = Sha256::new();
    let mut block = [0u8; 256];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(block.len() as u32) as usize;
        area.read(at, &mut block[..n])?;
        hasher.update(&block[..n]);
        at += n as u32;
    }
    Ok(hasher.finalize().into())
}
