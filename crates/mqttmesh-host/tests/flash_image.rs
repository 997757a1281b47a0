//! File-backed flash under NOR rules, and ESP-IDF application images: round trips,
//! corruption, and hostile bytes that must give errors, never panics.

use embedded_storage::nor_flash::{NorFlash, NorFlashErrorKind, ReadNorFlash};
use mqttmesh_host::flash::{FileFlash, FlashError, FlashStats, Layout, SECTOR_SIZE};
use mqttmesh_host::image::{
    app_descriptor, inspect, make_test_image, verify_image, ImageError, APP_DESC_OFFSET,
};
use proptest::prelude::*;

const CAP: usize = 4 * SECTOR_SIZE;

fn flash(dir: &tempfile::TempDir) -> FileFlash {
    FileFlash::open_or_create(dir.path().join("flash.bin"), CAP).unwrap()
}

fn read(f: &mut FileFlash, offset: u32, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    f.read(offset, &mut buf).unwrap();
    buf
}

#[test]
fn new_flash_is_erased_and_has_its_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = flash(&dir);
    assert_eq!(f.capacity(), CAP);
    assert!(read(&mut f, 0, CAP).iter().all(|&b| b == 0xFF));
    assert_eq!(std::fs::metadata(f.path()).unwrap().len(), CAP as u64);
}

#[test]
fn writes_clear_bits_and_erase_restores_ff() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = flash(&dir);
    f.write(8, &[0xF0, 0x0F, 0xAA, 0x55]).unwrap();
    assert_eq!(
        read(&mut f, 6, 8),
        [0xFF, 0xFF, 0xF0, 0x0F, 0xAA, 0x55, 0xFF, 0xFF]
    );
    // Clearing more bits of a written word is what NOR allows.
    f.write(8, &[0x00, 0x0F, 0x00, 0x55]).unwrap();
    assert_eq!(read(&mut f, 8, 4), [0x00, 0x0F, 0x00, 0x55]);
    f.erase(0, SECTOR_SIZE as u32).unwrap();
    assert_eq!(read(&mut f, 8, 4), [0xFF; 4]);
}

#[test]
fn setting_a_cleared_bit_without_erase_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = flash(&dir);
    f.write(0, &[0x00, 0x00, 0x00, 0x00, 0xFE, 0xFF, 0xFF, 0xFF])
        .unwrap();
    let err = f
        .write(0, &[0x00, 0x00, 0x00, 0x00, 0xFF, 0x00, 0, 0])
        .unwrap_err();
    assert!(matches!(err, FlashError::NotErased { offset: 4 }), "{err}");
    assert_eq!(
        err.to_string(),
        "flash write at 0x4 would set bits that are 0; erase the sector first"
    );
    assert_eq!(read(&mut f, 4, 4), [0xFE, 0xFF, 0xFF, 0xFF]);
}

#[test]
fn out_of_range_and_misaligned_accesses_are_refused() {
    use embedded_storage::nor_flash::NorFlashError;
    let dir = tempfile::tempdir().unwrap();
    let mut f = flash(&dir);
    let end = CAP as u32;
    let kind = |e: FlashError| e.kind();
    assert_eq!(
        kind(f.write(end - 4, &[0; 8]).unwrap_err()),
        NorFlashErrorKind::OutOfBounds
    );
    assert_eq!(
        kind(f.write(u32::MAX - 3, &[0; 4]).unwrap_err()),
        NorFlashErrorKind::OutOfBounds
    );
    assert_eq!(
        kind(f.read(end, &mut [0; 1]).unwrap_err()),
        NorFlashErrorKind::OutOfBounds
    );
    assert_eq!(
        kind(f.erase(0, end + SECTOR_SIZE as u32).unwrap_err()),
        NorFlashErrorKind::OutOfBounds
    );
    assert_eq!(
        kind(f.erase(0x2000, 0x1000).unwrap_err()),
        NorFlashErrorKind::OutOfBounds
    );
    assert_eq!(
        kind(f.write(1, &[0; 4]).unwrap_err()),
        NorFlashErrorKind::NotAligned
    );
    assert_eq!(
        kind(f.write(0, &[0; 3]).unwrap_err()),
        NorFlashErrorKind::NotAligned
    );
    assert_eq!(
        kind(f.erase(0x100, 0x1100).unwrap_err()),
        NorFlashErrorKind::NotAligned
    );
    // Reads have no alignment rule; an empty erase is a no-op.
    assert_eq!(read(&mut f, 3, 5), [0xFF; 5]);
    f.erase(0x1000, 0x1000).unwrap();
    assert_eq!(f.stats().writes, 0);
}

#[test]
fn contents_survive_reopening_and_size_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut f = flash(&dir);
        f.erase(0, SECTOR_SIZE as u32).unwrap();
        f.write(0x1000, b"slot").unwrap();
    }
    let mut f = flash(&dir);
    assert_eq!(read(&mut f, 0x1000, 4), b"slot");
    assert_eq!(
        f.stats(),
        FlashStats {
            bytes_read: 4,
            ..FlashStats::default()
        }
    );
    let other = FileFlash::open_or_create(f.path(), 2 * CAP).unwrap_err();
    assert!(other.to_string().contains("delete it"), "{other}");
    let bad = FileFlash::open_or_create(dir.path().join("x"), 1000).unwrap_err();
    assert_eq!(bad.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn counters_count_sectors_writes_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = flash(&dir);
    f.erase(0, 3 * SECTOR_SIZE as u32).unwrap();
    f.write(0, &[0; 16]).unwrap();
    f.write(16, &[0; 4]).unwrap();
    let _ = f.write(1, &[0; 4]);
    read(&mut f, 0, 10);
    let s = f.stats();
    assert_eq!(
        (s.sectors_erased, s.writes, s.bytes_written, s.bytes_read),
        (3, 2, 20, 10)
    );
}

#[test]
fn a_test_image_fits_the_default_layout_and_round_trips_through_a_slot() {
    let layout = Layout::default();
    let dir = tempfile::tempdir().unwrap();
    let mut f = FileFlash::open_or_create(dir.path().join("node.bin"), layout.capacity()).unwrap();
    let image = make_test_image("2.0.0", "mesh-app", 64 * 1024, 9);
    let (base, size) = layout.slot_b;
    f.erase(base, base + size).unwrap();
    f.write(base, &image).unwrap();
    let slot = read(&mut f, base, size as usize);
    let len = inspect(&slot).unwrap().len;
    assert_eq!(len, image.len());
    verify_image(&slot[..len]).unwrap();
    assert_eq!(app_descriptor(&slot).unwrap().version, "2.0.0");
}

#[test]
fn make_test_image_round_trips_its_descriptor() {
    let image = make_test_image("1.4.2-rc1", "sensor-node", 1 << 20, 42);
    assert_eq!(image.len(), 1 << 20);
    verify_image(&image).unwrap();
    let d = app_descriptor(&image).unwrap();
    assert_eq!(d.version, "1.4.2-rc1");
    assert_eq!(d.project_name, "sensor-node");
    assert_eq!(d.secure_version, 0);
    assert!(!d.idf_ver.is_empty() && !d.date.is_empty() && !d.time.is_empty());
    // Deterministic in its arguments, different with another seed.
    assert_eq!(
        image,
        make_test_image("1.4.2-rc1", "sensor-node", 1 << 20, 42)
    );
    assert_ne!(
        image,
        make_test_image("1.4.2-rc1", "sensor-node", 1 << 20, 43)
    );
}

#[test]
fn a_corrupted_byte_anywhere_fails_verification() {
    let image = make_test_image("1", "p", 4096, 1);
    for at in [
        APP_DESC_OFFSET + 300,
        2000,
        image.len() - 33,
        image.len() - 1,
    ] {
        let mut bad = image.clone();
        bad[at] ^= 0x40;
        let err = verify_image(&bad).unwrap_err();
        assert!(
            matches!(err, ImageError::Checksum { .. } | ImageError::Hash),
            "byte {at}: {err}"
        );
    }
    let mut longer = image.clone();
    longer.push(0);
    assert_eq!(verify_image(&longer), Err(ImageError::TrailingBytes(1)));
}

#[test]
fn truncated_and_foreign_images_give_errors() {
    let image = make_test_image("1", "p", 4096, 1);
    for len in [0, 1, 23, 24, 31, 32, 100, 287, 288, 4000, 4095] {
        assert!(verify_image(&image[..len]).is_err(), "len {len}");
    }
    assert!(
        app_descriptor(&image[..288]).is_ok(),
        "the first chunk is enough"
    );
    assert!(matches!(
        app_descriptor(&image[..287]),
        Err(ImageError::Truncated { .. })
    ));
    let mut elf = image.clone();
    elf[..4].copy_from_slice(b"\x7fELF");
    assert_eq!(app_descriptor(&elf), Err(ImageError::BadMagic(0x7F)));
    let mut no_desc = image.clone();
    no_desc[APP_DESC_OFFSET] = 0;
    assert!(matches!(
        app_descriptor(&no_desc),
        Err(ImageError::BadAppDescMagic(_))
    ));
    let mut many = image;
    many[1] = 17;
    assert_eq!(inspect(&many), Err(ImageError::BadSegmentCount(17)));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = app_descriptor(&bytes);
        let _ = inspect(&bytes);
        let _ = verify_image(&bytes);
    }

    #[test]
    fn mutated_images_never_panic(
        seed in any::<u64>(),
        edits in proptest::collection::vec((0usize..1024, any::<u8>()), 1..8),
        cut in 0usize..1024,
    ) {
        let mut image = make_test_image("9.9.9", "fuzz", 1024, seed);
        for (at, byte) in edits {
            image[at] = byte;
        }
        image.truncate(cut.max(1));
        let _ = app_descriptor(&image);
        let _ = inspect(&image);
        let _ = verify_image(&image);
    }

    #[test]
    fn any_version_round_trips(version in "[ -~]{0,31}", seed in any::<u64>(), size in 0usize..5000) {
        let image = make_test_image(&version, "p", size, seed);
        prop_assert!(image.len() >= size && image.len() % 16 == 0);
        prop_assert!(verify_image(&image).is_ok());
        prop_assert_eq!(app_descriptor(&image).unwrap().version, version);
    }
}
