//! One update slot: a sector-aligned region of a [`NorFlash`], written with every offset
//! and length checked against the region and the announced image length.

use core::fmt;

use embedded_storage::nor_flash::NorFlash;

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
    pub fn new(flash: F, base: u32, size: u32) -> Result<Self, AreaError> {
        let _ = (&flash, base, size);
        todo!()
    }

    /// Size of the slot in bytes.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Erases the sectors covering `[0, len)` of the slot.
    pub fn erase(&mut self, len: u32) -> Result<(), AreaError> {
        let _ = len;
        todo!()
    }

    /// Writes `data` at `offset` (relative to the slot). Writes that are not aligned to
    /// `F::WRITE_SIZE` are padded with `0xFF` (erased flash), so any offset works on
    /// erased flash.
    pub fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), AreaError> {
        let _ = (offset, data);
        todo!()
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), AreaError> {
        let _ = (offset, buf);
        todo!()
    }

    /// The flash (e.g. for the boot state in another region).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }
}
