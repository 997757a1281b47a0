//! The image an upload sends, checked before anything goes on the bus, and the v2
//! manifest that describes it (`docs/PROTOCOL.md` "OTA v2", "Manifest").

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ed25519_dalek::{Signer, SigningKey};
use mqttmesh_core::ota::v2::{compare_versions, Manifest, ManifestError, MAX_VERSION_LEN};
use mqttmesh_host::image;

/// Which image, for which firmware ID (shared by `ota` and `sign`).
#[derive(Debug, Clone, Args)]
pub struct ImageFlags {
    /// The firmware image: an ESP-IDF application image (`.bin`, e.g. from `idf.py build`
    /// or `mqttmesh make-image`).
    #[arg(long, value_name = "FILE")]
    pub bin: PathBuf,
    /// Firmware ID the image is for, hex with or without 0x (only nodes running it take
    /// part; v2 manifests carry it).
    #[arg(long, value_name = "HEX")]
    pub id: String,
    /// Accept a file that is not an ESP-IDF application image (needs --version).
    #[arg(long, requires = "version")]
    pub force_raw: bool,
    /// Version the nodes will run (default: the one in the image's application
    /// descriptor, which is what updated nodes report).
    #[arg(long, value_name = "STR")]
    pub version: Option<String>,
}

/// A checked image.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// The file, for messages.
    pub path: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Firmware ID (`--id`).
    pub firmware_id: u32,
    /// The version the nodes will report once updated.
    pub version: String,
    /// Project name from the descriptor (none for a raw file).
    pub project: Option<String>,
}

impl Firmware {
    /// The firmware ID as the `<target>` topic level (`1337`).
    pub fn target(&self) -> String {
        format!("{:X}", self.firmware_id)
    }
}

impl ImageFlags {
    /// Reads and checks the image: an ESP-IDF application image whose checksum and hash
    /// hold, unless `--force-raw`.
    pub fn load(&self) -> Result<Firmware> {
        let firmware_id = parse_id(&self.id)?;
        let path = self.bin.display().to_string();
        let bytes =
            std::fs::read(&self.bin).with_context(|| format!("cannot read --bin {path}"))?;
        if bytes.is_empty() {
            bail!("--bin {path} is empty");
        }
        let (version, project) = if self.force_raw {
            // `requires = "version"` makes clap refuse --force-raw without --version.
            let version = self.version.clone().unwrap_or_default();
            (version, None)
        } else {
            let desc = image::app_descriptor(&bytes)
                .and_then(|d| image::verify_image(&bytes).map(|()| d))
                .with_context(|| {
                    format!(
                        "--bin {path} is not a valid ESP-IDF application image (nodes would \
                         refuse to boot it); pass --force-raw --version V to send it anyway"
                    )
                })?;
            if let Some(v) = &self.version {
                if compare_versions(v, &desc.version) != Some(std::cmp::Ordering::Equal) {
                    bail!(
                        "--version {v} differs from the version in the image ({}), which is what \
                         updated nodes report; drop --version",
                        desc.version
                    );
                }
            }
            (desc.version, Some(desc.project_name))
        };
        if version.len() > MAX_VERSION_LEN {
            bail!("version {version:?} is longer than {MAX_VERSION_LEN} bytes");
        }
        Ok(Firmware {
            path,
            bytes,
            firmware_id,
            version,
            project,
        })
    }
}

/// A firmware ID in hex, with or without `0x`.
pub fn parse_id(s: &str) -> Result<u32> {
    mqttmesh_core::topic::parse_firmware_id(s).ok_or_else(|| {
        anyhow!("--id {s:?} is not a firmware ID: 1 to 8 hex digits, e.g. 1337 or 0x1337")
    })
}

/// The unsigned manifest of `fw`, cut into `chunk_size` chunks.
pub fn manifest(fw: &Firmware, chunk_size: u16, allow_downgrade: bool) -> Result<Manifest> {
    let mut m =
        Manifest::new(fw.firmware_id, &fw.version, &fw.bytes, chunk_size).map_err(|e| match e {
            ManifestError::BadChunkSize => {
                anyhow!("--chunk-size {chunk_size}: v2 needs a multiple of 64 in 64..=1024")
            }
            ManifestError::BadSize => anyhow!(
                "{}: {} bytes in {chunk_size}-byte chunks is more than v2's 16384 chunks; \
                 raise --chunk-size",
                fw.path,
                fw.bytes.len()
            ),
            other => anyhow!("cannot describe {}: {other}", fw.path),
        })?;
    m.allow_downgrade = allow_downgrade;
    Ok(m)
}

/// Signs `m` with `key`.
pub fn sign(m: &mut Manifest, key: &SigningKey) {
    m.sign_with(|msg| Ok::<_, std::convert::Infallible>(key.sign(msg).to_bytes()))
        .unwrap_or_else(|never| match never {});
}

/// Reads a manifest written by `mqttmesh sign` and checks that it describes `fw`.
pub fn load_manifest(path: &Path, fw: &Firmware) -> Result<Manifest> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read --manifest {shown}"))?;
    let m = Manifest::decode(&bytes)
        .map_err(|e| anyhow!("--manifest {shown} is not an OTA v2 manifest: {e}"))?;
    let redo = "sign the image again with `mqttmesh sign`";
    if m.sha256 != image::sha256(&fw.bytes) || m.size as usize != fw.bytes.len() {
        bail!(
            "--manifest {shown} describes another image than {}; {redo}",
            fw.path
        );
    }
    if m.firmware_id != fw.firmware_id {
        bail!(
            "--manifest {shown} is for firmware {:X}, not --id {:X}; {redo}",
            m.firmware_id,
            fw.firmware_id
        );
    }
    if compare_versions(&m.version, &fw.version) != Some(std::cmp::Ordering::Equal) {
        bail!(
            "--manifest {shown} announces version {}, the image carries {}; {redo}",
            m.version,
            fw.version
        );
    }
    if m.signature.is_none() {
        bail!("--manifest {shown} is not signed; {redo}");
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_with_or_without_0x() {
        assert_eq!(parse_id("1337").unwrap(), 0x1337);
        assert_eq!(parse_id("0xBEEF").unwrap(), 0xBEEF);
        let e = parse_id("12g").unwrap_err().to_string();
        assert!(e.contains("hex"), "{e}");
    }
}
