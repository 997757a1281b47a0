//! ESP-IDF application images, as ESP-IDF's "App Image Format" documents them: what an
//! emulated node reads from its slot to know which version it runs, and test images
//! that tools built for the chip (`esptool image_info`, the ESP-IDF bootloader) accept.
//!
//! ```text
//! 0     esp_image_header_t (24 bytes): magic 0xE9, segment count, flash mode/speed/size,
//!       entry address, WP pin, pin drive, chip ID, chip revisions, hash_appended
//! 24    esp_image_segment_header_t (8): load address, data length; then the data
//! 32    esp_app_desc_t (256), at the start of the first (DROM) segment of an app
//! ...   further segments
//!       zero padding up to a 16-byte boundary, whose last byte is the checksum:
//!       0xEF XOR every byte of segment data
//!       SHA-256 of everything before it (32 bytes) when hash_appended == 1
//! ```
//!
//! No function here panics on any input: every length is checked before it is used.

use sha2::{Digest, Sha256};

/// First byte of every ESP image (`ESP_IMAGE_HEADER_MAGIC`).
pub const IMAGE_MAGIC: u8 = 0xE9;
/// `magic_word` of `esp_app_desc_t` (`ESP_APP_DESC_MAGIC_WORD`).
pub const APP_DESC_MAGIC: u32 = 0xABCD_5432;
/// Length of `esp_image_header_t`.
pub const HEADER_LEN: usize = 24;
/// Length of `esp_image_segment_header_t`.
pub const SEGMENT_HEADER_LEN: usize = 8;
/// Offset of `esp_app_desc_t` in an application image (header + first segment header).
pub const APP_DESC_OFFSET: usize = HEADER_LEN + SEGMENT_HEADER_LEN;
/// Length of `esp_app_desc_t`.
pub const APP_DESC_LEN: usize = 256;
/// Most segments an image may have (`ESP_IMAGE_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 16;
/// Length of the SHA-256 appended when `hash_appended` is set.
pub const HASH_LEN: usize = 32;
/// Smallest image [`make_test_image`] makes: descriptor, checksum block and hash.
pub const MIN_IMAGE_SIZE: usize = APP_DESC_OFFSET + APP_DESC_LEN + 16 + HASH_LEN;

/// Start value of the XOR checksum (`ESP_ROM_CHECKSUM_INITIAL`).
const CHECKSUM_SEED: u8 = 0xEF;
/// Offset of `hash_appended` in the image header.
const HASH_APPENDED_AT: usize = 23;
/// ESP32-C3 values of the test images: chip ID, entry point (IRAM), DROM load address of
/// the first segment (which the MMU maps at the same offset within a 64 KiB page as its
/// file offset, 0x20).
const C3_CHIP_ID: u16 = 0x0005;
const C3_ENTRY: u32 = 0x4038_0000;
const C3_DROM: u32 = 0x3C00_0020;

/// Why an image was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image ends before `what`.
    #[error("image truncated: {len} bytes, {need} needed for {what}")]
    Truncated {
        /// The part that does not fit.
        what: &'static str,
        /// Bytes needed up to the end of that part.
        need: usize,
        /// Bytes there are.
        len: usize,
    },
    /// The first byte is not [`IMAGE_MAGIC`].
    #[error("not an ESP image: first byte is {0:#04x}, expected 0xe9")]
    BadMagic(u8),
    /// The header announces no segments or more than [`MAX_SEGMENTS`].
    #[error("image header announces {0} segments; ESP-IDF allows 1 to 16")]
    BadSegmentCount(u8),
    /// A segment length is not a multiple of 4, which the bootloader refuses.
    #[error("segment {index} has length {len}, not a multiple of 4")]
    UnalignedSegment {
        /// Index of the segment.
        index: usize,
        /// Its length.
        len: u32,
    },
    /// The first segment is too short to hold the application descriptor.
    #[error("first segment has {0} bytes, too few for the 256-byte application descriptor")]
    NoAppDesc(u32),
    /// The application descriptor's magic word is wrong (not an application image).
    #[error("no application descriptor: magic word {0:#010x}, expected 0xabcd5432")]
    BadAppDescMagic(u32),
    /// A text field of the descriptor is not NUL-terminated UTF-8.
    #[error("application descriptor field `{0}` is not NUL-terminated UTF-8")]
    BadField(&'static str),
    /// The checksum byte does not match the segment data.
    #[error("checksum mismatch: image says {stored:#04x}, its data gives {computed:#04x}")]
    Checksum {
        /// The byte in the image.
        stored: u8,
        /// The byte computed from the data.
        computed: u8,
    },
    /// The appended SHA-256 does not match the image.
    #[error("appended SHA-256 does not match the image")]
    Hash,
    /// Bytes follow the end of the image.
    #[error("{0} bytes follow the end of the image")]
    TrailingBytes(usize),
}

/// The identity an application image carries in its `esp_app_desc_t`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppDescriptor {
    /// Application version (`PROJECT_VER`), e.g. `1.2.0`.
    pub version: String,
    /// Project name (`PROJECT_NAME`).
    pub project_name: String,
    /// Anti-rollback secure version.
    pub secure_version: u32,
    /// Compile time, e.g. `12:34:56`.
    pub time: String,
    /// Compile date, e.g. `Jan  1 2026`.
    pub date: String,
    /// ESP-IDF version the image was built with.
    pub idf_ver: String,
}

/// One segment of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Address the segment is loaded or mapped at.
    pub load_addr: u32,
    /// Offset of its data in the image.
    pub offset: usize,
    /// Length of its data.
    pub len: usize,
}

/// The structure of an image, from its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// Chip the image is built for (`esp_chip_id_t`: 0 ESP32, 5 ESP32-C3, …).
    pub chip_id: u16,
    /// Entry point.
    pub entry_addr: u32,
    /// The segments, in order.
    pub segments: Vec<Segment>,
    /// Offset of the checksum byte.
    pub checksum_offset: usize,
    /// Whether a SHA-256 follows the checksum.
    pub hash_appended: bool,
    /// Length of the whole image, hash included; bytes after it are not part of it.
    pub len: usize,
}

fn need(image: &[u8], end: usize, what: &'static str) -> Result<(), ImageError> {
    if image.len() < end {
        return Err(ImageError::Truncated {
            what,
            need: end,
            len: image.len(),
        });
    }
    Ok(())
}

/// `u32` LE at `at`; the caller has checked `at + 4 <= bytes.len()`.
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Checks the image header and returns the segment count.
fn header(image: &[u8]) -> Result<usize, ImageError> {
    need(image, 1, "the image header")?;
    if image[0] != IMAGE_MAGIC {
        return Err(ImageError::BadMagic(image[0]));
    }
    need(image, HEADER_LEN, "the image header")?;
    let count = image[1];
    if count == 0 || usize::from(count) > MAX_SEGMENTS {
        return Err(ImageError::BadSegmentCount(count));
    }
    Ok(usize::from(count))
}

/// Walks the headers of `image` (which may be followed by other bytes, e.g. the rest of
/// a slot) without checking the checksum or hash: see [`verify_image`] for that.
pub fn inspect(image: &[u8]) -> Result<ImageInfo, ImageError> {
    let count = header(image)?;
    let mut segments = Vec::with_capacity(count);
    let mut at = HEADER_LEN;
    for index in 0..count {
        need(image, at + SEGMENT_HEADER_LEN, "a segment header")?;
        let load_addr = u32_at(image, at);
        let len = u32_at(image, at + 4);
        if len % 4 != 0 {
            return Err(ImageError::UnalignedSegment { index, len });
        }
        let offset = at + SEGMENT_HEADER_LEN;
        let end = offset.saturating_add(len as usize);
        need(image, end, "segment data")?;
        segments.push(Segment {
            load_addr,
            offset,
            len: len as usize,
        });
        at = end;
    }
    let checksum_offset = at | 0xF;
    let hash_appended = image[HASH_APPENDED_AT] == 1;
    let len = checksum_offset + 1 + if hash_appended { HASH_LEN } else { 0 };
    need(image, checksum_offset + 1, "the checksum")?;
    need(image, len, "the appended SHA-256")?;
    Ok(ImageInfo {
        chip_id: u16::from_le_bytes([image[12], image[13]]),
        entry_addr: u32_at(image, 4),
        segments,
        checksum_offset,
        hash_appended,
        len,
    })
}

/// Checks the checksum and, if the header says one is appended, the SHA-256 of a whole
/// image. The image must end where its headers say; to verify an image at the start of
/// a larger region, pass `&region[..inspect(region)?.len]`.
pub fn verify_image(image: &[u8]) -> Result<(), ImageError> {
    let info = inspect(image)?;
    if image.len() > info.len {
        return Err(ImageError::TrailingBytes(image.len() - info.len));
    }
    let computed = info
        .segments
        .iter()
        .flat_map(|s| &image[s.offset..s.offset + s.len])
        .fold(CHECKSUM_SEED, |sum, b| sum ^ b);
    let stored = image[info.checksum_offset];
    if stored != computed {
        return Err(ImageError::Checksum { stored, computed });
    }
    if info.hash_appended {
        let hashed = info.checksum_offset + 1;
        if sha256(&image[..hashed]) != image[hashed..hashed + HASH_LEN] {
            return Err(ImageError::Hash);
        }
    }
    Ok(())
}

/// Reads the application descriptor. Only the first [`APP_DESC_OFFSET`] +
/// [`APP_DESC_LEN`] bytes are needed, so this works on the first chunk of an upload;
/// it does not verify the image.
pub fn app_descriptor(image: &[u8]) -> Result<AppDescriptor, ImageError> {
    header(image)?;
    need(image, APP_DESC_OFFSET, "the first segment header")?;
    let first_len = u32_at(image, HEADER_LEN + 4);
    if (first_len as usize) < APP_DESC_LEN {
        return Err(ImageError::NoAppDesc(first_len));
    }
    need(
        image,
        APP_DESC_OFFSET + APP_DESC_LEN,
        "the application descriptor",
    )?;
    let desc = &image[APP_DESC_OFFSET..APP_DESC_OFFSET + APP_DESC_LEN];
    let magic = u32_at(desc, 0);
    if magic != APP_DESC_MAGIC {
        return Err(ImageError::BadAppDescMagic(magic));
    }
    Ok(AppDescriptor {
        secure_version: u32_at(desc, 4),
        version: text(&desc[16..48], "version")?,
        project_name: text(&desc[48..80], "project_name")?,
        time: text(&desc[80..96], "time")?,
        date: text(&desc[96..112], "date")?,
        idf_ver: text(&desc[112..144], "idf_ver")?,
    })
}

/// A NUL-terminated UTF-8 string in a fixed-size `char[]` field.
fn text(field: &[u8], name: &'static str) -> Result<String, ImageError> {
    let end = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(ImageError::BadField(name))?;
    String::from_utf8(field[..end].to_vec()).map_err(|_| ImageError::BadField(name))
}

/// SHA-256 of `data` (what `mqttmesh image-info` prints and OTA manifests carry).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// A well-formed ESP32-C3 application image of `size` bytes carrying `version` and
/// `project` in its descriptor, with one DROM segment whose data after the descriptor
/// is pseudo-random from `seed`, the checksum and the appended SHA-256. The same
/// arguments always give the same bytes.
///
/// ESP images are multiples of 16 bytes long, so `size` is rounded up to one, and to at
/// least [`MIN_IMAGE_SIZE`]. `version` and `project` are cut to 31 bytes (at a character
/// boundary), as ESP-IDF cuts `PROJECT_VER` and `PROJECT_NAME`.
pub fn make_test_image(version: &str, project: &str, size: usize, seed: u64) -> Vec<u8> {
    let size = size.max(MIN_IMAGE_SIZE).next_multiple_of(16);
    // Header, segment header, data, 15 bytes of padding, checksum, hash.
    let data_len = size - APP_DESC_OFFSET - 16 - HASH_LEN;
    let mut rng = SplitMix64(seed);
    let mut image = Vec::with_capacity(size);
    image.extend_from_slice(&test_header());
    image.extend_from_slice(&C3_DROM.to_le_bytes());
    // `data_len < size`, and images this crate makes are far below 4 GiB.
    image.extend_from_slice(&(data_len as u32).to_le_bytes());
    image.extend_from_slice(&test_app_desc(version, project, &mut rng));
    while image.len() < APP_DESC_OFFSET + data_len {
        image.extend_from_slice(&rng.next().to_le_bytes());
    }
    image.truncate(APP_DESC_OFFSET + data_len);
    let checksum = image[APP_DESC_OFFSET..]
        .iter()
        .fold(CHECKSUM_SEED, |s, b| s ^ b);
    image.resize(image.len() | 0xF, 0);
    image.push(checksum);
    let hash = sha256(&image);
    image.extend_from_slice(&hash);
    image
}

/// `esp_image_header_t` of the test images: ESP32-C3, DIO, 80 MHz, 4 MiB, hash appended.
fn test_header() -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[0] = IMAGE_MAGIC;
    h[1] = 1; // segment count
    h[2] = 0x02; // spi_mode: DIO
    h[3] = 0x2F; // spi_size 4 MiB (high nibble), spi_speed 80 MHz (low nibble)
    h[4..8].copy_from_slice(&C3_ENTRY.to_le_bytes());
    h[8] = 0xEE; // wp_pin: disabled
    h[12..14].copy_from_slice(&C3_CHIP_ID.to_le_bytes());
    h[17..19].copy_from_slice(&199u16.to_le_bytes()); // max_chip_rev_full: v1.99
    h[HASH_APPENDED_AT] = 1;
    h
}

/// `esp_app_desc_t` of the test images.
fn test_app_desc(version: &str, project: &str, rng: &mut SplitMix64) -> [u8; APP_DESC_LEN] {
    let mut d = [0; APP_DESC_LEN];
    d[0..4].copy_from_slice(&APP_DESC_MAGIC.to_le_bytes());
    put_text(&mut d[16..48], version);
    put_text(&mut d[48..80], project);
    put_text(&mut d[80..96], "00:00:00");
    put_text(&mut d[96..112], "Jan  1 2026");
    put_text(&mut d[112..144], "mqttmesh-test");
    for word in d[144..176].chunks_exact_mut(8) {
        word.copy_from_slice(&rng.next().to_le_bytes()); // app_elf_sha256
    }
    d[178..180].copy_from_slice(&199u16.to_le_bytes()); // max_efuse_blk_rev_full
    d[180] = 16; // mmu_page_size: log2(64 KiB)
    d
}

/// Copies as much of `s` as fits before the field's terminating NUL.
fn put_text(field: &mut [u8], s: &str) {
    let mut end = s.len().min(field.len() - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    field[..end].copy_from_slice(&s.as_bytes()[..end]);
}

/// The SplitMix64 generator: enough for filler bytes, reproducible from a seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_image_layout_matches_the_format() {
        let image = make_test_image("1.2.3", "demo", 4096, 7);
        assert_eq!(image.len(), 4096);
        assert_eq!(&image[..4], &[0xE9, 1, 0x02, 0x2F]);
        assert_eq!(&image[24..28], &0x3C00_0020u32.to_le_bytes());
        assert_eq!(&image[28..32], &(4096u32 - 80).to_le_bytes());
        assert_eq!(&image[32..36], &[0x32, 0x54, 0xCD, 0xAB]);
        let info = inspect(&image).unwrap();
        assert_eq!(info.chip_id, 5);
        assert_eq!(info.checksum_offset, 4096 - 33);
        assert!(info.hash_appended);
        assert_eq!(info.len, 4096);
    }

    #[test]
    fn sizes_round_up_to_sixteen_and_the_minimum() {
        assert_eq!(make_test_image("v", "p", 0, 0).len(), MIN_IMAGE_SIZE);
        assert_eq!(make_test_image("v", "p", 1000, 0).len(), 1008);
        verify_image(&make_test_image("v", "p", 1000, 0)).unwrap();
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let long = "é".repeat(20); // 40 bytes
        let desc = app_descriptor(&make_test_image(&long, &long, 0, 0)).unwrap();
        assert_eq!(desc.version, "é".repeat(15)); // 30 bytes: 31 would split a char
    }

    #[test]
    fn image_without_hash_verifies_by_checksum_alone() {
        let mut image = make_test_image("1", "p", 512, 3);
        image[HASH_APPENDED_AT] = 0;
        image.truncate(image.len() - HASH_LEN);
        verify_image(&image).unwrap();
        image[100] ^= 1;
        assert!(matches!(
            verify_image(&image),
            Err(ImageError::Checksum { .. })
        ));
    }

    #[test]
    fn field_without_nul_is_refused() {
        let mut image = make_test_image("1", "p", 512, 3);
        image[APP_DESC_OFFSET + 48..APP_DESC_OFFSET + 80].fill(b'x');
        assert_eq!(
            app_descriptor(&image),
            Err(ImageError::BadField("project_name"))
        );
    }
}
