//! `ota::Area` over flashes with different read and write units: any split of an image
//! into unaligned writes (each byte written once after the erase) reads back exactly,
//! and every out-of-bounds access is refused without touching the flash.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use mqttmesh_core::ota::mem::MemFlash;
use mqttmesh_core::ota::{Area, AreaError};
use proptest::prelude::*;

const SECTOR: usize = 1024;
const SIZE: usize = 8 * SECTOR;

/// A strict NOR flash with read unit `R` and write unit `W`: misaligned accesses and
/// writes that would set a cleared bit are errors.
#[derive(Debug)]
struct Strict<const R: usize, const W: usize> {
    bytes: Vec<u8>,
}

#[derive(Debug, PartialEq)]
struct StrictError(NorFlashErrorKind);

impl NorFlashError for StrictError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl<const R: usize, const W: usize> Strict<R, W> {
    fn new() -> Self {
        Strict {
            bytes: vec![0xFF; SIZE],
        }
    }

    fn range(
        &self,
        offset: u32,
        len: usize,
        unit: usize,
    ) -> Result<std::ops::Range<usize>, StrictError> {
        let start = offset as usize;
        if start + len > self.bytes.len() {
            return Err(StrictError(NorFlashErrorKind::OutOfBounds));
        }
        if start % unit != 0 || len % unit != 0 {
            return Err(StrictError(NorFlashErrorKind::NotAligned));
        }
        Ok(start..start + len)
    }
}

impl<const R: usize, const W: usize> ErrorType for Strict<R, W> {
    type Error = StrictError;
}

impl<const R: usize, const W: usize> ReadNorFlash for Strict<R, W> {
    const READ_SIZE: usize = R;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), StrictError> {
        let r = self.range(offset, bytes.len(), R)?;
        bytes.copy_from_slice(&self.bytes[r]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.bytes.len()
    }
}

impl<const R: usize, const W: usize> NorFlash for Strict<R, W> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), StrictError> {
        let r = self.range(from, (to - from) as usize, SECTOR)?;
        self.bytes[r].fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), StrictError> {
        let r = self.range(offset, bytes.len(), W)?;
        let target = &mut self.bytes[r];
        if target.iter().zip(bytes).any(|(o, n)| n & !o != 0) {
            return Err(StrictError(NorFlashErrorKind::Other));
        }
        target.copy_from_slice(bytes);
        Ok(())
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `image` at slot offset 0 in pieces cut at `cuts`, in shuffled order, then
/// reads it back in pieces cut elsewhere.
fn roundtrip<F: NorFlash>(
    flash: F,
    image: &[u8],
    cuts: &[usize],
    order: &[usize],
    reads: &[usize],
) {
    let mut area = Area::new(flash, SECTOR as u32, (SIZE - 2 * SECTOR) as u32).unwrap();
    area.erase(image.len() as u32).unwrap();
    let pieces = pieces(image.len(), cuts);
    for &i in order.iter().filter(|&&i| i < pieces.len()) {
        let (s, e) = pieces[i];
        area.write(s as u32, &image[s..e]).unwrap();
    }
    // Any piece the order skipped.
    let mut done = vec![false; pieces.len()];
    order
        .iter()
        .filter(|&&i| i < pieces.len())
        .for_each(|&i| done[i] = true);
    for &(s, e) in pieces
        .iter()
        .zip(&done)
        .filter(|(_, d)| !**d)
        .map(|(p, _)| p)
    {
        area.write(s as u32, &image[s..e]).unwrap();
    }
    let mut back = vec![0u8; image.len()];
    for (s, e) in self::pieces(image.len(), reads) {
        area.read(s as u32, &mut back[s..e]).unwrap();
    }
    assert_eq!(back, image);
}

fn pieces(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    points.extend([0, len]);
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| (w[0], w[1])).collect()
}

#[test]
fn flash_errors_and_region_checks() {
    assert_eq!(
        Area::new(Strict::<1, 4>::new(), 512, 1024).unwrap_err(),
        AreaError::BadRegion
    );
    let mut area = Area::new(Strict::<1, 4>::new(), 0, SECTOR as u32).unwrap();
    area.write(0, &[0, 0, 0, 0]).unwrap();
    assert_eq!(area.write(1, &[1]), Err(AreaError::Flash));
}

#[test]
fn memflash_slot_is_reusable_after_erase() {
    let mut area = Area::new(MemFlash::<{ 4 * 4096 }>::new(), 4096, 8192).unwrap();
    area.write(0, &data(5000, 1)).unwrap();
    assert_eq!(area.write(0, &data(10, 2)), Err(AreaError::Flash));
    area.erase(5000).unwrap();
    area.write(3, &data(5000, 2)).unwrap();
    let mut back = vec![0; 5000];
    area.read(3, &mut back).unwrap();
    assert_eq!(back, data(5000, 2));
}

proptest! {
    #[test]
    fn unaligned_pieces_roundtrip(
        len in 1usize..3000,
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
        order in proptest::collection::vec(0usize..31, 0..31),
        reads in proptest::collection::vec(any::<usize>(), 0..30),
        seed in any::<u8>(),
    ) {
        let image = data(len, seed);
        roundtrip(Strict::<1, 1>::new(), &image, &cuts, &order, &reads);
        roundtrip(Strict::<1, 4>::new(), &image, &cuts, &order, &reads);
        roundtrip(Strict::<4, 4>::new(), &image, &cuts, &order, &reads);
        roundtrip(Strict::<4, 8>::new(), &image, &cuts, &order, &reads);
        roundtrip(Strict::<2, 16>::new(), &image, &cuts, &order, &reads);
    }

    #[test]
    fn out_of_bounds_is_refused_exactly(offset in any::<u32>(), len in 0usize..10_000) {
        let size = (SIZE - 2 * SECTOR) as u32;
        let mut area = Area::new(Strict::<4, 4>::new(), SECTOR as u32, size).unwrap();
        let inside = u64::from(offset) + len as u64 <= u64::from(size);
        let mut buf = vec![0u8; len];
        prop_assert_eq!(area.read(offset, &mut buf).is_ok(), inside);
        prop_assert_eq!(area.write(offset, &buf).is_ok(), inside && buf.iter().all(|&b| b == 0xFF));
        if !inside {
            prop_assert_eq!(area.write(offset, &buf), Err(AreaError::OutOfBounds));
        }
        let flash = area.into_inner();
        prop_assert!(flash.bytes[..SECTOR].iter().all(|&b| b == 0xFF));
        prop_assert!(flash.bytes[SIZE - SECTOR..].iter().all(|&b| b == 0xFF));
    }
}
