//! File-backed NOR flash for emulated nodes: one file per node, used through the
//! `embedded-storage` [`NorFlash`] traits exactly as the OTA engine in the core uses the
//! chip's SPI flash.
//!
//! NOR rules are enforced, not just imitated: erased bytes read `0xFF`, erase works on
//! whole [`SECTOR_SIZE`] sectors, writes are [`WRITE_ALIGN`]-aligned and may only clear
//! bits (setting a `0` bit back to `1` without an erase is [`FlashError::NotErased`],
//! where real flash would silently keep the `0`), and every access is checked against
//! the capacity. A bug in the engine therefore fails here the way it would corrupt a
//! real slot.
//!
//! Timing: the core calls the flash synchronously from inside an async task, so the
//! flash never sleeps. With a [`FlashTiming`] cost model it only adds what each erase
//! and write would have cost on a chip to a busy counter; the runtime reads it with
//! [`FileFlash::take_busy`] and delays its reply (e.g. `ota/erase`, an `ota/md5/…` ack)
//! by that much, which is what a sender observes from a real node.
//!
//! [`Layout`] places the ESP-IDF-like partitions (`otadata` and two app slots) in it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Erase granularity in bytes (the 4 KiB sector of ESP SPI flash).
pub const SECTOR_SIZE: usize = 0x1000;
/// Write granularity in bytes: offsets and lengths of writes are multiples of this.
pub const WRITE_ALIGN: usize = 4;
/// Value of every byte of erased flash.
pub const ERASED: u8 = 0xFF;
/// Block size used to fill a new flash file with [`ERASED`].
const FILL_BLOCK: usize = 64 * 1024;

/// Why a flash operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FlashError {
    /// The access reaches past the end of the flash (or an erase has `from > to`).
    #[error("flash access out of bounds: offset {offset:#x}, {len} bytes, capacity {capacity:#x}")]
    OutOfBounds {
        /// First byte of the access.
        offset: u32,
        /// Length of the access in bytes.
        len: usize,
        /// Flash capacity in bytes.
        capacity: usize,
    },
    /// Offset or length is not a multiple of the required alignment.
    #[error("flash access not aligned: offset {offset:#x} and length {len} must be multiples of {align}")]
    NotAligned {
        /// First byte of the access.
        offset: u32,
        /// Length of the access in bytes.
        len: usize,
        /// Required alignment in bytes.
        align: usize,
    },
    /// The write would turn a `0` bit into a `1`: the sector must be erased first.
    #[error("flash write at {offset:#x} would set bits that are 0; erase the sector first")]
    NotErased {
        /// First byte whose bits could not be set.
        offset: u32,
    },
    /// Reading or writing the backing file failed.
    #[error("flash file I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::OutOfBounds { .. } => NorFlashErrorKind::OutOfBounds,
            FlashError::NotAligned { .. } => NorFlashErrorKind::NotAligned,
            FlashError::NotErased { .. } | FlashError::Io(_) => NorFlashErrorKind::Other,
        }
    }
}

/// What erases and writes cost on a chip; [`FileFlash`] accumulates it, never sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashTiming {
    /// Time to erase one [`SECTOR_SIZE`] sector.
    pub erase_per_sector: Duration,
    /// Time to program 1 KiB (pro rata for other lengths).
    pub write_per_kib: Duration,
}

impl FlashTiming {
    /// Typical figures of the SPI NOR flash on ESP modules: 45 ms per sector erase,
    /// 0.4 ms per 256-byte page program (1.6 ms per KiB).
    pub const TYPICAL: FlashTiming = FlashTiming {
        erase_per_sector: Duration::from_millis(45),
        write_per_kib: Duration::from_micros(1600),
    };

    fn erase_cost(&self, sectors: u64) -> Duration {
        scale(self.erase_per_sector, u128::from(sectors), 1)
    }

    fn write_cost(&self, bytes: usize) -> Duration {
        scale(self.write_per_kib, bytes as u128, 1024)
    }
}

/// `d * num / den`, saturating at `Duration::MAX`.
fn scale(d: Duration, num: u128, den: u128) -> Duration {
    let nanos = d.as_nanos().saturating_mul(num) / den;
    u64::try_from(nanos).map_or(Duration::MAX, Duration::from_nanos)
}

/// Operation counters of a [`FileFlash`] since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlashStats {
    /// Sectors erased.
    pub sectors_erased: u64,
    /// Successful `write` calls.
    pub writes: u64,
    /// Bytes written by successful writes.
    pub bytes_written: u64,
    /// Bytes read.
    pub bytes_read: u64,
}

/// A NOR flash of fixed capacity backed by a file (see the module doc for its rules).
#[derive(Debug)]
pub struct FileFlash {
    file: File,
    path: PathBuf,
    capacity: usize,
    timing: Option<FlashTiming>,
    busy: Duration,
    stats: FlashStats,
}

impl FileFlash {
    /// Opens the flash file at `path`, or creates it fully erased (`0xFF`).
    ///
    /// `capacity` must be a non-zero multiple of [`SECTOR_SIZE`] and at most 4 GiB; an
    /// existing file must have exactly that length, so a node never boots from a flash
    /// that was cut or grown behind its back.
    pub fn open_or_create(path: impl AsRef<Path>, capacity: usize) -> io::Result<FileFlash> {
        let path = path.as_ref();
        if capacity == 0 || capacity % SECTOR_SIZE != 0 || capacity > 1 << 32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "flash capacity {capacity:#x} must be a non-zero multiple of {SECTOR_SIZE:#x} up to 4 GiB"
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        if len == 0 {
            fill_erased(&file, capacity)?;
        } else if len != capacity as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "flash file {} has {len} bytes, not the configured {capacity}; \
                     delete it or configure the size it was made with",
                    path.display()
                ),
            ));
        }
        Ok(FileFlash {
            file,
            path: path.to_path_buf(),
            capacity,
            timing: None,
            busy: Duration::ZERO,
            stats: FlashStats::default(),
        })
    }

    /// The backing file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets (or removes) the cost model that erases and writes add to [`Self::busy`].
    pub fn set_timing(&mut self, timing: Option<FlashTiming>) {
        self.timing = timing;
    }

    /// The cost model, if any.
    pub fn timing(&self) -> Option<FlashTiming> {
        self.timing
    }

    /// Flash time accumulated since the last [`Self::take_busy`] (zero without timing).
    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// Returns the accumulated flash time and resets it; the runtime delays its next
    /// reply by this much.
    pub fn take_busy(&mut self) -> Duration {
        std::mem::take(&mut self.busy)
    }

    /// Operation counters since the flash was opened.
    pub fn stats(&self) -> FlashStats {
        self.stats
    }

    /// Checks that `[offset, offset + len)` lies in the flash and is `align`-aligned.
    fn check(&self, offset: u32, len: usize, align: usize) -> Result<(), FlashError> {
        let end = (offset as usize).checked_add(len);
        if end.is_none_or(|end| end > self.capacity) {
            return Err(FlashError::OutOfBounds {
                offset,
                len,
                capacity: self.capacity,
            });
        }
        if offset as usize % align != 0 || len % align != 0 {
            return Err(FlashError::NotAligned { offset, len, align });
        }
        Ok(())
    }

    fn charge(&mut self, cost: impl FnOnce(&FlashTiming) -> Duration) {
        if let Some(timing) = &self.timing {
            self.busy = self.busy.saturating_add(cost(timing));
        }
    }
}

/// Fills a new flash file with erased bytes.
fn fill_erased(file: &File, capacity: usize) -> io::Result<()> {
    let block = vec![ERASED; FILL_BLOCK.min(capacity)];
    let mut at = 0;
    while at < capacity {
        let n = block.len().min(capacity - at);
        file.write_all_at(&block[..n], at as u64)?;
        at += n;
    }
    Ok(())
}

impl ErrorType for FileFlash {
    type Error = FlashError;
}

impl ReadNorFlash for FileFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        self.check(offset, bytes.len(), Self::READ_SIZE)?;
        self.file.read_exact_at(bytes, u64::from(offset))?;
        self.stats.bytes_read += bytes.len() as u64;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

impl NorFlash for FileFlash {
    const WRITE_SIZE: usize = WRITE_ALIGN;
    const ERASE_SIZE: usize = SECTOR_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let Some(len) = to.checked_sub(from) else {
            return Err(FlashError::OutOfBounds {
                offset: from,
                len: 0,
                capacity: self.capacity,
            });
        };
        self.check(from, len as usize, Self::ERASE_SIZE)?;
        fill_range(&self.file, u64::from(from), len as usize)?;
        let sectors = u64::from(len) / Self::ERASE_SIZE as u64;
        self.stats.sectors_erased += sectors;
        self.charge(|t| t.erase_cost(sectors));
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        self.check(offset, bytes.len(), Self::WRITE_SIZE)?;
        let mut old = vec![0; bytes.len()];
        self.file.read_exact_at(&mut old, u64::from(offset))?;
        if let Some(i) = old.iter().zip(bytes).position(|(o, n)| o & n != *n) {
            // `i < bytes.len()`, which `check` bounded to the u32 address space.
            let offset = offset + i as u32;
            return Err(FlashError::NotErased { offset });
        }
        self.file.write_all_at(bytes, u64::from(offset))?;
        self.stats.writes += 1;
        self.stats.bytes_written += bytes.len() as u64;
        self.charge(|t| t.write_cost(bytes.len()));
        Ok(())
    }
}

/// Writes `len` erased bytes at `offset`.
fn fill_range(file: &File, offset: u64, len: usize) -> io::Result<()> {
    let block = vec![ERASED; len.min(FILL_BLOCK)];
    let mut done = 0;
    while done < len {
        let n = block.len().min(len - done);
        file.write_all_at(&block[..n], offset + done as u64)?;
        done += n;
    }
    Ok(())
}

/// Where the partitions live in a node's flash, as on an ESP-IDF chip with two OTA
/// slots (simplified: no bootloader, partition table or NVS in front). Each field is
/// `(base, size)` in bytes, sector-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The boot state (ESP-IDF `otadata`): two sectors.
    pub otadata: (u32, u32),
    /// Application slot A (`ota_0`).
    pub slot_a: (u32, u32),
    /// Application slot B (`ota_1`).
    pub slot_b: (u32, u32),
}

impl Layout {
    /// Slot size of the default layout: 1.5 MiB, as in ESP-IDF's two-OTA partition table
    /// for 4 MiB flash.
    pub const DEFAULT_SLOT_SIZE: u32 = 0x18_0000;
    /// Size of the `otadata` region: two sectors, one per redundant copy.
    pub const OTADATA_SIZE: u32 = 2 * SECTOR_SIZE as u32;

    /// `otadata` at 0, then slot A, then slot B, each slot `slot_size` bytes rounded up
    /// to whole sectors. `None` if `slot_size` is 0 or the layout does not fit 4 GiB.
    pub fn with_slot_size(slot_size: u32) -> Option<Layout> {
        if slot_size == 0 {
            return None;
        }
        let sector = SECTOR_SIZE as u32;
        let size = slot_size.checked_next_multiple_of(sector)?;
        let a = Self::OTADATA_SIZE;
        let b = a.checked_add(size)?;
        b.checked_add(size)?;
        Some(Layout {
            otadata: (0, Self::OTADATA_SIZE),
            slot_a: (a, size),
            slot_b: (b, size),
        })
    }

    /// The slot with `index` 0 (A) or 1 (B), as `(base, size)`; `None` otherwise.
    pub fn slot(&self, index: usize) -> Option<(u32, u32)> {
        match index {
            0 => Some(self.slot_a),
            1 => Some(self.slot_b),
            _ => None,
        }
    }

    /// Flash size this layout needs: the end of its last region.
    pub fn capacity(&self) -> usize {
        [self.otadata, self.slot_a, self.slot_b]
            .iter()
            .map(|&(base, size)| base as usize + size as usize)
            .max()
            .unwrap_or(0)
    }
}

impl Default for Layout {
    fn default() -> Layout {
        // 8 KiB + 2 × 1.5 MiB fits 32-bit addresses by a wide margin.
        Layout::with_slot_size(Self::DEFAULT_SLOT_SIZE).expect("default layout fits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_flash(capacity: usize) -> (tempfile::TempDir, FileFlash) {
        let dir = tempfile::tempdir().unwrap();
        let flash = FileFlash::open_or_create(dir.path().join("flash.bin"), capacity).unwrap();
        (dir, flash)
    }

    #[test]
    fn default_layout_is_esp_like() {
        let l = Layout::default();
        assert_eq!(l.otadata, (0, 0x2000));
        assert_eq!(l.slot_a, (0x2000, 0x18_0000));
        assert_eq!(l.slot_b, (0x18_2000, 0x18_0000));
        assert_eq!(l.capacity(), 0x30_2000);
        assert_eq!(l.slot(1), Some(l.slot_b));
        assert_eq!(l.slot(2), None);
    }

    #[test]
    fn layout_rounds_slots_to_sectors_and_rejects_overflow() {
        let l = Layout::with_slot_size(5000).unwrap();
        assert_eq!(l.slot_a.1, 0x2000);
        assert_eq!(Layout::with_slot_size(0), None);
        assert_eq!(Layout::with_slot_size(0x8000_0000), None);
    }

    #[test]
    fn timing_accumulates_without_sleeping() {
        let (_dir, mut f) = temp_flash(4 * SECTOR_SIZE);
        f.set_timing(Some(FlashTiming {
            erase_per_sector: Duration::from_millis(10),
            write_per_kib: Duration::from_millis(2),
        }));
        f.erase(0, 2 * SECTOR_SIZE as u32).unwrap();
        f.write(0, &[0u8; 512]).unwrap();
        assert_eq!(f.busy(), Duration::from_millis(21));
        assert_eq!(f.take_busy(), Duration::from_millis(21));
        assert_eq!(f.busy(), Duration::ZERO);
        // A failed operation costs nothing.
        assert!(f.write(0, &[0xFF; 4]).is_err());
        assert_eq!(f.take_busy(), Duration::ZERO);
    }

    #[test]
    fn error_kinds_map_to_embedded_storage() {
        let (_dir, mut f) = temp_flash(SECTOR_SIZE);
        let kind = |r: Result<(), FlashError>| r.unwrap_err().kind();
        assert_eq!(kind(f.write(2, &[0; 4])), NorFlashErrorKind::NotAligned);
        assert_eq!(
            kind(f.write(SECTOR_SIZE as u32, &[0; 4])),
            NorFlashErrorKind::OutOfBounds
        );
        assert_eq!(kind(f.erase(0x1000, 0)), NorFlashErrorKind::OutOfBounds);
        f.write(0, &[0; 4]).unwrap();
        assert_eq!(kind(f.write(0, &[1; 4])), NorFlashErrorKind::Other);
    }
}
