//! [`MemFlash`]: a NOR flash in RAM for tests, docs and the host emulation.
//!
//! It keeps NOR's rules strictly, so code that would corrupt real flash fails loudly
//! here: erase works on whole 4 KiB sectors, writes on 4-byte words, and a write can
//! only clear bits — writing a 1 over a 0 without an erase in between is
//! [`MemFlashError::NotErased`] (and changes nothing). Rewriting a byte with its own
//! value is allowed (it changes no bit). It counts erases and writes, and can simulate
//! a power loss by failing every write after a budget.
//!
//! ```
//! use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
//! use mqttmesh_core::ota::mem::{MemFlash, MemFlashError};
//!
//! let mut flash = MemFlash::<8192>::new();
//! flash.write(0, &[0x0F, 0xF0, 0x00, 0xFF]).unwrap();
//! assert_eq!(flash.write(0, &[0xFF; 4]), Err(MemFlashError::NotErased));
//! flash.erase(0, 4096).unwrap();
//! assert_eq!(flash.bytes()[..4], [0xFF; 4]);
//! assert_eq!((flash.erases(), flash.writes()), (1, 1));
//! ```

use core::fmt;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Sector (erase unit) size of [`MemFlash`].
pub const SECTOR: usize = 4096;
/// Write unit of [`MemFlash`].
pub const WORD: usize = 4;

/// Why a [`MemFlash`] operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemFlashError {
    /// Outside the flash.
    OutOfBounds,
    /// Not aligned to the read, write or erase unit.
    NotAligned,
    /// A write would set a bit that is 0 (the range was not erased).
    NotErased,
    /// The simulated power loss: the write budget is spent.
    PowerLoss,
}

impl fmt::Display for MemFlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemFlashError::OutOfBounds => "outside the flash",
            MemFlashError::NotAligned => "not aligned to the flash's units",
            MemFlashError::NotErased => "write over bits that were not erased",
            MemFlashError::PowerLoss => "simulated power loss",
        })
    }
}

impl core::error::Error for MemFlashError {}

impl NorFlashError for MemFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            MemFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            MemFlashError::NotAligned => NorFlashErrorKind::NotAligned,
            MemFlashError::NotErased | MemFlashError::PowerLoss => NorFlashErrorKind::Other,
        }
    }
}

/// `N` bytes of NOR flash in RAM (a fixed array; `N` should be a multiple of 4096),
/// erased (all `0xFF`) when created.
///
/// The array lives inline: for big `N` in a test, put the flash in a `Box` (or a
/// `static`) rather than on a thread's stack.
#[derive(Clone)]
pub struct MemFlash<const N: usize> {
    bytes: [u8; N],
    erases: u32,
    writes: u32,
    write_budget: Option<u32>,
}

impl<const N: usize> fmt::Debug for MemFlash<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemFlash")
            .field("size", &N)
            .field("erases", &self.erases)
            .field("writes", &self.writes)
            .field("write_budget", &self.write_budget)
            .finish()
    }
}

impl<const N: usize> Default for MemFlash<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> MemFlash<N> {
    /// An erased flash.
    pub const fn new() -> Self {
        MemFlash {
            bytes: [0xFF; N],
            erases: 0,
            writes: 0,
            write_budget: None,
        }
    }

    /// The whole content.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole content, to corrupt it on purpose (tests of power loss, bit rot).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Successful sector-range erases so far (one per `erase` call).
    pub fn erases(&self) -> u32 {
        self.erases
    }

    /// Successful writes so far (one per `write` call).
    pub fn writes(&self) -> u32 {
        self.writes
    }

    /// Simulates a power loss: after `budget` more successful writes, every write fails
    /// with [`MemFlashError::PowerLoss`] and changes nothing; `None` lifts the limit.
    pub fn set_write_budget(&mut self, budget: Option<u32>) {
        self.write_budget = budget;
    }

    /// `[offset, offset + len)` as an index range, if inside the flash.
    fn range(offset: u32, len: usize) -> Result<core::ops::Range<usize>, MemFlashError> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(MemFlashError::OutOfBounds)?;
        if end > N {
            return Err(MemFlashError::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl<const N: usize> ErrorType for MemFlash<N> {
    type Error = MemFlashError;
}

impl<const N: usize> ReadNorFlash for MemFlash<N> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let range = Self::range(offset, bytes.len())?;
        bytes.copy_from_slice(self.bytes.get(range).ok_or(MemFlashError::OutOfBounds)?);
        Ok(())
    }

    fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize> NorFlash for MemFlash<N> {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from > to {
            return Err(MemFlashError::OutOfBounds);
        }
        let range = Self::range(from, (to - from) as usize)?;
        if range.start % SECTOR != 0 || range.end % SECTOR != 0 {
            return Err(MemFlashError::NotAligned);
        }
        self.bytes
            .get_mut(range)
            .ok_or(MemFlashError::OutOfBounds)?
            .fill(0xFF);
        self.erases += 1;
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let range = Self::range(offset, bytes.len())?;
        if range.start % WORD != 0 || range.len() % WORD != 0 {
            return Err(MemFlashError::NotAligned);
        }
        if self.write_budget == Some(0) {
            return Err(MemFlashError::PowerLoss);
        }
        let target = self
            .bytes
            .get_mut(range)
            .ok_or(MemFlashError::OutOfBounds)?;
        // A bit set in the new value but clear in flash cannot be programmed.
        if target.iter().zip(bytes).any(|(old, new)| new & !old != 0) {
            return Err(MemFlashError::NotErased);
        }
        target.copy_from_slice(bytes);
        self.writes += 1;
        self.write_budget = self.write_budget.map(|b| b.saturating_sub(1));
        Ok(())
    }
}
