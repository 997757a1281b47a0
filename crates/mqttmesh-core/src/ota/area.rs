//! One update slot: a sector-aligned region of a [`NorFlash`], written with every offset
//! and length checked against the region and the announced image length.
//!
//! No-panic contract: every offset and length is checked (including `offset + len`
//! overflow) before the flash is touched; a bad one is an [`AreaError`], never a panic.
//!
//! Writes need not be aligned to `F::WRITE_SIZE`: a partial block at either end of a
//! write is read back, the new bytes are laid over it, and the whole block is written.
//! On erased NOR flash that equals padding with `0xFF`, and a later write of the other
//! bytes of the same block rewrites the earlier ones with their own value (programming
//! NOR can only clear bits, so rewriting a value leaves it unchanged). The contract is
//! the one OTA follows: **each byte is written at most once after an erase**. A second
//! write of different data over the same bytes is not a supported update: on real NOR it
//! ANDs the two (which the image check then catches), and
//! [`MemFlash`](super::mem::MemFlash) reports it as an error. Flash that forbids writing
//! a word twice at all (some ECC flashes) needs writes aligned to its `WRITE_SIZE`.

use core::fmt;

use embedded_storage::nor_flash::NorFlash;

/// Largest `WRITE_SIZE`/`READ_SIZE` for which unaligned accesses are handled (through a
/// block buffer on the stack); flashes with bigger units need aligned accesses.
pub const MAX_ALIGN: usize = 32;

/// Why an update-slot operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AreaError {
    /// Region not aligned to the erase size, or not inside the flash.
    BadRegion,
    /// Offset or length outside the region (or past the announced image length).
    OutOfBounds,
    /// Offset not aligned as the flash requires and not fixable by padding.
    Misaligned,
    /// The flash reported an error.
    Flash,
}

impl fmt::Display for AreaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AreaError::BadRegion => "update slot not aligned to flash sectors or outside the flash",
            AreaError::OutOfBounds => "offset or length outside the update slot",
            AreaError::Misaligned => "write not aligned as the flash requires",
            AreaError::Flash => "flash error",
        })
    }
}

impl core::error::Error for AreaError {}

/// An update slot `[base, base + size)` of flash `F`.
#[derive(Debug)]
pub struct Area<F> {
    flash: F,
    base: u32,
    size: u32,
}

impl<F: NorFlash> Area<F> {
    /// A slot; `base` and `size` must be multiples of `F::ERASE_SIZE` and inside the flash.
    /// A slot of size 0 is refused as well ([`AreaError::BadRegion`]).
    pub fn new(flash: F, base: u32, size: u32) -> Result<Self, AreaError> {
        let erase = F::ERASE_SIZE as u64;
        let end = u64::from(base) + u64::from(size);
        if size == 0
            || erase == 0
            || u64::from(base) % erase != 0
            || u64::from(size) % erase != 0
            || end > flash.capacity() as u64
        {
            return Err(AreaError::BadRegion);
        }
        Ok(Area { flash, base, size })
    }

    /// Size of the slot in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Offset of the slot in the flash.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Erases the sectors covering `[0, len)` of the slot (nothing for `len` 0).
    pub fn erase(&mut self, len: u32) -> Result<(), AreaError> {
        if len > self.size {
            return Err(AreaError::OutOfBounds);
        }
        let erase = F::ERASE_SIZE as u64;
        // Rounded up to whole sectors; cannot pass `size`, a multiple of the sector size.
        let len = u64::from(len).div_ceil(erase) * erase;
        if len == 0 {
            return Ok(());
        }
        let from = self.base;
        // Fits: `base + size` fits in u32 (checked in `new`) and `len <= size`.
        let to = u32::try_from(u64::from(from) + len).map_err(|_| AreaError::OutOfBounds)?;
        self.flash.erase(from, to).map_err(|_| AreaError::Flash)
    }

    /// Writes `data` at `offset` (relative to the slot). Writes that are not aligned to
    /// `F::WRITE_SIZE` are padded with `0xFF` (erased flash), so any offset works on
    /// erased flash.
    ///
    /// Precisely: a partial block is read back and the new bytes laid over it (see the
    /// module doc), so consecutive unaligned writes into one block after an erase work.
    pub fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), AreaError> {
        let start = self.absolute(offset, data.len())?;
        let unit = F::WRITE_SIZE.max(1);
        if unit == 1 {
            return self.flash.write(start, data).map_err(|_| AreaError::Flash);
        }
        let (head, middle, tail) = split_aligned(start, data, unit);
        let mut pos = start;
        if !head.is_empty() {
            self.write_partial(pos, head, unit)?;
            pos += head.len() as u32;
        }
        if !middle.is_empty() {
            self.flash
                .write(pos, middle)
                .map_err(|_| AreaError::Flash)?;
            pos += middle.len() as u32;
        }
        if !tail.is_empty() {
            self.write_partial(pos, tail, unit)?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset` (any offset; unaligned ends are read through a
    /// block buffer when the flash has a `READ_SIZE` above 1).
    pub fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), AreaError> {
        let start = self.absolute(offset, buf.len())?;
        let unit = F::READ_SIZE.max(1);
        if unit == 1 {
            return self.flash.read(start, buf).map_err(|_| AreaError::Flash);
        }
        let (head_len, middle_len) = aligned_lengths(start, buf.len(), unit);
        let (head, rest) = buf.split_at_mut(head_len);
        let (middle, tail) = rest.split_at_mut(middle_len);
        let mut pos = start;
        if !head.is_empty() {
            self.read_partial(pos, head, unit)?;
            pos += head.len() as u32;
        }
        if !middle.is_empty() {
            self.flash.read(pos, middle).map_err(|_| AreaError::Flash)?;
            pos += middle.len() as u32;
        }
        if !tail.is_empty() {
            self.read_partial(pos, tail, unit)?;
        }
        Ok(())
    }

    /// The flash (e.g. for the boot state in another region).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// The flash address of `[offset, offset + len)`, if that lies inside the slot.
    fn absolute(&self, offset: u32, len: usize) -> Result<u32, AreaError> {
        let len = u32::try_from(len).map_err(|_| AreaError::OutOfBounds)?;
        let end = offset.checked_add(len).ok_or(AreaError::OutOfBounds)?;
        if end > self.size {
            return Err(AreaError::OutOfBounds);
        }
        // Fits: `offset < size` and `base + size` fits in u32 (checked in `new`).
        self.base.checked_add(offset).ok_or(AreaError::OutOfBounds)
    }

    /// Writes `bytes` (all inside one `unit`-sized block) at flash address `at`.
    fn write_partial(&mut self, at: u32, bytes: &[u8], unit: usize) -> Result<(), AreaError> {
        let block_start = at - at % unit as u32;
        let mut block = [0xFF; MAX_ALIGN];
        let block = block.get_mut(..unit).ok_or(AreaError::Misaligned)?;
        self.read_block(block_start, block)?;
        let inner = (at - block_start) as usize;
        block
            .get_mut(inner..inner + bytes.len())
            .ok_or(AreaError::Misaligned)?
            .copy_from_slice(bytes);
        self.flash
            .write(block_start, block)
            .map_err(|_| AreaError::Flash)
    }

    /// Reads `buf` (all inside one `unit`-sized block) from flash address `at`.
    fn read_partial(&mut self, at: u32, buf: &mut [u8], unit: usize) -> Result<(), AreaError> {
        let block_start = at - at % unit as u32;
        let mut block = [0xFF; MAX_ALIGN];
        let block = block.get_mut(..unit).ok_or(AreaError::Misaligned)?;
        self.flash
            .read(block_start, block)
            .map_err(|_| AreaError::Flash)?;
        let inner = (at - block_start) as usize;
        buf.copy_from_slice(
            block
                .get(inner..inner + buf.len())
                .ok_or(AreaError::Misaligned)?,
        );
        Ok(())
    }

    /// Reads a write block (`WRITE_SIZE` bytes at a `WRITE_SIZE`-aligned address) whatever
    /// the flash's `READ_SIZE`.
    fn read_block(&mut self, at: u32, block: &mut [u8]) -> Result<(), AreaError> {
        let unit = F::READ_SIZE.max(1);
        if at as usize % unit == 0 && block.len() % unit == 0 {
            return self.flash.read(at, block).map_err(|_| AreaError::Flash);
        }
        // READ_SIZE does not divide WRITE_SIZE: unusual enough to refuse.
        Err(AreaError::Misaligned)
    }
}

/// Lengths of the unaligned head and the aligned middle of `[start, start + len)`.
fn aligned_lengths(start: u32, len: usize, unit: usize) -> (usize, usize) {
    let misalign = start as usize % unit;
    let head = if misalign == 0 {
        0
    } else {
        (unit - misalign).min(len)
    };
    let rest = len - head;
    (head, rest - rest % unit)
}

/// `data` written at `start` split into head (partial block), aligned middle, tail.
fn split_aligned(start: u32, data: &[u8], unit: usize) -> (&[u8], &[u8], &[u8]) {
    let (head_len, middle_len) = aligned_lengths(start, data.len(), unit);
    let (head, rest) = data.split_at(head_len);
    let (middle, tail) = rest.split_at(middle_len);
    (head, middle, tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::mem::MemFlash;

    type Flash = MemFlash<{ 4 * 4096 }>;

    fn slot() -> Area<Flash> {
        Area::new(Flash::new(), 4096, 2 * 4096).unwrap()
    }

    #[test]
    fn new_checks_region() {
        assert_eq!(
            Area::new(Flash::new(), 100, 4096).unwrap_err(),
            AreaError::BadRegion
        );
        assert_eq!(
            Area::new(Flash::new(), 0, 100).unwrap_err(),
            AreaError::BadRegion
        );
        assert_eq!(
            Area::new(Flash::new(), 0, 0).unwrap_err(),
            AreaError::BadRegion
        );
        assert_eq!(
            Area::new(Flash::new(), 4096, 4 * 4096).unwrap_err(),
            AreaError::BadRegion
        );
        assert_eq!(
            Area::new(Flash::new(), u32::MAX - 4095, 4096).unwrap_err(),
            AreaError::BadRegion
        );
        assert!(Area::new(Flash::new(), 0, 4 * 4096).is_ok());
    }

    #[test]
    fn bounds_checked_including_overflow() {
        let mut a = slot();
        let mut buf = [0; 8];
        assert_eq!(a.write(8190, &[1, 2, 3]), Err(AreaError::OutOfBounds));
        assert_eq!(a.write(u32::MAX, &[1]), Err(AreaError::OutOfBounds));
        assert_eq!(a.read(u32::MAX - 2, &mut buf), Err(AreaError::OutOfBounds));
        assert_eq!(a.read(8192, &mut buf[..1]), Err(AreaError::OutOfBounds));
        assert_eq!(a.erase(8193), Err(AreaError::OutOfBounds));
        assert!(a.write(8192, &[]).is_ok());
        assert!(a.write(8188, &[0; 4]).is_ok());
        // Nothing outside the slot was touched.
        let flash = a.into_inner();
        assert!(flash.bytes()[..4096].iter().all(|&b| b == 0xFF));
        assert!(flash.bytes()[3 * 4096..].iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn unaligned_writes_into_shared_blocks() {
        let mut a = slot();
        // 0..3, 3..10, 10..11: every boundary inside a 4-byte word.
        a.write(0, &[1, 2, 3]).unwrap();
        a.write(3, &[4, 5, 6, 7, 8, 9, 10]).unwrap();
        a.write(10, &[11]).unwrap();
        a.write(13, &[14]).unwrap();
        let mut buf = [0; 16];
        a.read(0, &mut buf).unwrap();
        assert_eq!(
            buf,
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0xFF, 0xFF, 14, 0xFF, 0xFF]
        );
        let mut mid = [0; 5];
        a.read(5, &mut mid).unwrap();
        assert_eq!(mid, [6, 7, 8, 9, 10]);
    }

    #[test]
    fn erase_rounds_up_to_sectors_and_conflicts_are_flash_errors() {
        let mut a = slot();
        a.write(0, &[0; 8]).unwrap();
        a.write(4096, &[0; 8]).unwrap();
        assert_eq!(a.write(2, &[1]), Err(AreaError::Flash));
        a.erase(1).unwrap();
        let mut buf = [0; 8];
        a.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 8]);
        a.read(4096, &mut buf).unwrap();
        assert_eq!(buf, [0; 8]);
        a.erase(4097).unwrap();
        a.read(4096, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 8]);
        a.erase(0).unwrap();
        assert_eq!(a.flash_mut().erases(), 2);
    }
}
