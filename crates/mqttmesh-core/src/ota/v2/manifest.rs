//! The v2 manifest (`docs/PROTOCOL.md` "OTA v2", "Manifest"): what the image is, how it
//! is cut into chunks, its SHA-256, and an optional Ed25519 signature over all of that.

use core::fmt;
use core::ops::Range;

use sha2::{Digest, Sha256};

use super::{ManifestId, CHUNK_ALIGN, MAX_CHUNKS, MAX_CHUNK_SIZE, MAX_VERSION_LEN};

/// `MMO2`: the first four bytes of every manifest.
pub const MAGIC: [u8; 4] = *b"MMO2";
/// The manifest format this code speaks.
pub const FORMAT: u8 = 1;
/// Flag: the signer allows this image to replace a newer version.
pub const FLAG_ALLOW_DOWNGRADE: u8 = 0x01;
/// Flag: a 64-byte Ed25519 signature follows the version.
pub const FLAG_SIGNED: u8 = 0x02;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes before the version string.
const FIXED_LEN: usize = 48;
/// Longest encoded manifest: fixed part, `str8` version, signature.
pub const MAX_MANIFEST_LEN: usize = FIXED_LEN + 1 + MAX_VERSION_LEN + SIGNATURE_LEN;

/// Why a manifest could not be built, encoded, decoded or verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    /// Ends inside a field.
    Truncated,
    /// Bytes after the last field.
    TrailingBytes,
    /// Does not start with `MMO2`.
    BadMagic,
    /// Another format version, or flag bits this format does not define.
    Unsupported,
    /// Version not UTF-8 or longer than 31 bytes.
    BadVersion,
    /// Image size 0, or more than [`MAX_CHUNKS`] chunks.
    BadSize,
    /// Chunk size not a multiple of 64 in 64..=1024.
    BadChunkSize,
    /// Output buffer too small.
    BufferTooSmall,
    /// A key is required and the manifest carries no signature.
    Unsigned,
    /// The signature does not verify under the key (or the key is not a valid point).
    BadSignature,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ManifestError::Truncated => "manifest truncated",
            ManifestError::TrailingBytes => "bytes after the manifest",
            ManifestError::BadMagic => "not an OTA v2 manifest",
            ManifestError::Unsupported => "unsupported manifest format or flags",
            ManifestError::BadVersion => "version not UTF-8 or longer than 31 bytes",
            ManifestError::BadSize => "image size 0 or too many chunks",
            ManifestError::BadChunkSize => "chunk size not a multiple of 64 in 64..=1024",
            ManifestError::BufferTooSmall => "buffer too small for the manifest",
            ManifestError::Unsigned => "manifest not signed",
            ManifestError::BadSignature => "manifest signature does not verify",
        })
    }
}

impl core::error::Error for ManifestError {}

/// A decoded manifest. Build one with [`Manifest::new`], sign it with
/// [`Manifest::sign_with`], send [`Manifest::to_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Firmware ID the image is for; nodes running another one refuse it.
    pub firmware_id: u32,
    /// Version the node will run after installing it.
    pub version: heapless::String<MAX_VERSION_LEN>,
    /// Image length in bytes.
    pub size: u32,
    /// Bytes per chunk (the last chunk may be shorter).
    pub chunk_size: u16,
    /// SHA-256 of the whole image.
    pub sha256: [u8; 32],
    /// The signer allows installing over a newer version.
    pub allow_downgrade: bool,
    /// Ed25519 signature over every byte before it (see [`Manifest::signed_bytes`]).
    pub signature: Option<[u8; SIGNATURE_LEN]>,
}

impl Manifest {
    /// An unsigned manifest for `image`.
    pub fn new(
        firmware_id: u32,
        version: &str,
        image: &[u8],
        chunk_size: u16,
    ) -> Result<Manifest, ManifestError> {
        let manifest = Manifest {
            firmware_id,
            version: heapless::String::try_from(version).map_err(|_| ManifestError::BadVersion)?,
            size: u32::try_from(image.len()).map_err(|_| ManifestError::BadSize)?,
            chunk_size,
            sha256: Sha256::digest(image).into(),
            allow_downgrade: false,
            signature: None,
        };
        manifest.check()?;
        Ok(manifest)
    }

    /// Signs it: `sign` gets [`Manifest::signed_bytes`] and returns the Ed25519
    /// signature (e.g. `ed25519_dalek::SigningKey::sign(..).to_bytes()` on the host).
    pub fn sign_with<E>(
        &mut self,
        sign: impl FnOnce(&[u8]) -> Result<[u8; SIGNATURE_LEN], E>,
    ) -> Result<(), E> {
        // Any placeholder works: only its presence (the flag) is part of the message.
        self.signature = Some([0; SIGNATURE_LEN]);
        let message = self.signed_bytes();
        self.signature = Some(sign(&message)?);
        Ok(())
    }

    /// The bytes a signature covers: the encoding up to (excluding) the signature, with
    /// the signed flag set.
    pub fn signed_bytes(&self) -> heapless::Vec<u8, MAX_MANIFEST_LEN> {
        let mut out = self.to_bytes();
        out.truncate(self.unsigned_len());
        if let Some(flags) = out.get_mut(5) {
            *flags |= FLAG_SIGNED;
        }
        out
    }

    /// Verifies the signature under `public_key` (`verify_strict`).
    pub fn verify(&self, public_key: &ed25519_dalek::VerifyingKey) -> Result<(), ManifestError> {
        let signature = self.signature.as_ref().ok_or(ManifestError::Unsigned)?;
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        public_key
            .verify_strict(&self.signed_bytes(), &signature)
            .map_err(|_| ManifestError::BadSignature)
    }

    /// Its ID (of the encoding, signature included).
    pub fn id(&self) -> ManifestId {
        ManifestId::of(&self.to_bytes())
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> u32 {
        self.size.div_ceil(u32::from(self.chunk_size.max(1)))
    }

    /// Byte range of chunk `index` in the image; `None` past the last chunk.
    pub fn chunk_range(&self, index: u32) -> Option<Range<u32>> {
        let start = index.checked_mul(u32::from(self.chunk_size))?;
        (start < self.size)
            .then(|| start..self.size.min(start.saturating_add(self.chunk_size.into())))
    }

    /// Chunk `index` of `image` (the image this manifest describes).
    pub fn chunk<'a>(&self, image: &'a [u8], index: u32) -> Option<&'a [u8]> {
        let r = self.chunk_range(index)?;
        image.get(r.start as usize..r.end as usize)
    }

    /// Every chunk of `image`, with its index.
    pub fn chunks<'a>(&'a self, image: &'a [u8]) -> impl Iterator<Item = (u32, &'a [u8])> + 'a {
        (0..self.chunk_count()).filter_map(move |i| Some((i, self.chunk(image, i)?)))
    }

    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        self.unsigned_len()
            + if self.signature.is_some() {
                SIGNATURE_LEN
            } else {
                0
            }
    }

    fn unsigned_len(&self) -> usize {
        FIXED_LEN + 1 + self.version.len()
    }

    /// Encodes into `buf`, returning the length; refuses what [`Manifest::decode`] would.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, ManifestError> {
        self.check()?;
        let bytes = self.to_bytes();
        let out = buf
            .get_mut(..bytes.len())
            .ok_or(ManifestError::BufferTooSmall)?;
        out.copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    /// The encoding (whether or not the fields are valid; [`Manifest::encode`] checks).
    pub fn to_bytes(&self) -> heapless::Vec<u8, MAX_MANIFEST_LEN> {
        let mut flags = 0;
        if self.allow_downgrade {
            flags |= FLAG_ALLOW_DOWNGRADE;
        }
        if self.signature.is_some() {
            flags |= FLAG_SIGNED;
        }
        let mut out = heapless::Vec::new();
        // The fields add up to at most MAX_MANIFEST_LEN (the version is a String<31>),
        // so these pushes cannot fail; ignoring their results is safe.
        let _ = out.extend_from_slice(&MAGIC);
        let _ = out.extend_from_slice(&[FORMAT, flags]);
        let _ = out.extend_from_slice(&self.firmware_id.to_be_bytes());
        let _ = out.extend_from_slice(&self.size.to_be_bytes());
        let _ = out.extend_from_slice(&self.chunk_size.to_be_bytes());
        let _ = out.extend_from_slice(&self.sha256);
        let _ = out.push(self.version.len() as u8);
        let _ = out.extend_from_slice(self.version.as_bytes());
        if let Some(signature) = &self.signature {
            let _ = out.extend_from_slice(signature);
        }
        out
    }

    /// Decodes a manifest; checks every length before reading, and the field rules.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let [format, flags] = r.array()?;
        if format != FORMAT || flags & !(FLAG_ALLOW_DOWNGRADE | FLAG_SIGNED) != 0 {
            return Err(ManifestError::Unsupported);
        }
        let firmware_id = u32::from_be_bytes(r.array()?);
        let size = u32::from_be_bytes(r.array()?);
        let chunk_size = u16::from_be_bytes(r.array()?);
        let sha256 = r.array()?;
        let [len] = r.array()?;
        if usize::from(len) > MAX_VERSION_LEN {
            return Err(ManifestError::BadVersion);
        }
        let version =
            core::str::from_utf8(r.take(len.into())?).map_err(|_| ManifestError::BadVersion)?;
        let signature = if flags & FLAG_SIGNED != 0 {
            Some(r.array()?)
        } else {
            None
        };
        if !r.0.is_empty() {
            return Err(ManifestError::TrailingBytes);
        }
        let manifest = Manifest {
            firmware_id,
            version: heapless::String::try_from(version).map_err(|_| ManifestError::BadVersion)?,
            size,
            chunk_size,
            sha256,
            allow_downgrade: flags & FLAG_ALLOW_DOWNGRADE != 0,
            signature,
        };
        manifest.check()?;
        Ok(manifest)
    }

    /// The field rules shared by the encoder and the decoder.
    fn check(&self) -> Result<(), ManifestError> {
        let cs = self.chunk_size;
        if !(CHUNK_ALIGN..=MAX_CHUNK_SIZE).contains(&cs) || cs % CHUNK_ALIGN != 0 {
            return Err(ManifestError::BadChunkSize);
        }
        if self.size == 0 || self.chunk_count() > MAX_CHUNKS {
            return Err(ManifestError::BadSize);
        }
        Ok(())
    }
}

/// A cursor that checks every length before reading.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ManifestError> {
        if self.0.len() < n {
            return Err(ManifestError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ManifestError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture of `docs/PROTOCOL.md` "OTA v2", "Examples".
    const UNSIGNED: [u8; 52] = [
        0x4d, 0x4d, 0x4f, 0x32, 0x01, 0x01, 0x00, 0x00, 0x13, 0x37, 0x00, 0x00, 0x0a, 0x00, 0x04,
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
        0x1e, 0x1f, 0x20, 0x03, 0x31, 0x2e, 0x32,
    ];

    fn fixture() -> Manifest {
        let mut sha256 = [0; 32];
        for (i, b) in sha256.iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        Manifest {
            firmware_id: 0x1337,
            version: heapless::String::try_from("1.2").unwrap(),
            size: 2560,
            chunk_size: 1024,
            sha256,
            allow_downgrade: true,
            signature: None,
        }
    }

    #[test]
    fn fixture_round_trips() {
        let m = fixture();
        assert_eq!(m.to_bytes().as_slice(), &UNSIGNED[..]);
        assert_eq!(Manifest::decode(&UNSIGNED), Ok(m.clone()));
        assert_eq!(m.chunk_count(), 3);
        assert_eq!(m.chunk_range(2), Some(2048..2560));
        assert_eq!(m.chunk_range(3), None);
        assert_eq!(m.id(), ManifestId(0xf2dc_b768));
    }

    #[test]
    fn signed_bytes_are_a_prefix_of_the_encoding() {
        let mut m = fixture();
        m.sign_with(|msg| Ok::<_, ()>([msg.len() as u8; 64]))
            .unwrap();
        let bytes = m.to_bytes();
        assert_eq!(bytes.len(), UNSIGNED.len() + 64);
        assert_eq!(bytes[5], FLAG_ALLOW_DOWNGRADE | FLAG_SIGNED);
        assert_eq!(&bytes[..UNSIGNED.len()], m.signed_bytes().as_slice());
        assert_eq!(m.signature, Some([52; 64]));
        assert_eq!(Manifest::decode(&bytes), Ok(m));
    }

    #[test]
    fn each_rule_is_enforced() {
        let mut b = UNSIGNED;
        b[0] = b'X';
        assert_eq!(Manifest::decode(&b), Err(ManifestError::BadMagic));
        let mut b = UNSIGNED;
        b[4] = 2;
        assert_eq!(Manifest::decode(&b), Err(ManifestError::Unsupported));
        let mut b = UNSIGNED;
        b[5] = 0x80;
        assert_eq!(Manifest::decode(&b), Err(ManifestError::Unsupported));
        let mut b = UNSIGNED;
        b[14..16].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(Manifest::decode(&b), Err(ManifestError::BadChunkSize));
        let mut b = UNSIGNED;
        b[10..14].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(Manifest::decode(&b), Err(ManifestError::BadSize));
        let mut b = UNSIGNED;
        b[48] = 4;
        assert_eq!(Manifest::decode(&b), Err(ManifestError::Truncated));
        assert_eq!(
            Manifest::decode(&UNSIGNED[..51]),
            Err(ManifestError::Truncated)
        );
        let mut long = heapless::Vec::<u8, 60>::from_slice(&UNSIGNED).unwrap();
        long.push(0).unwrap();
        assert_eq!(Manifest::decode(&long), Err(ManifestError::TrailingBytes));
        let mut b = UNSIGNED;
        b[5] |= FLAG_SIGNED;
        assert_eq!(Manifest::decode(&b), Err(ManifestError::Truncated));
    }
}
