//! Firmware of an emulated node: its file-backed flash with two application slots and
//! `otadata`, the emulated ESP-IDF bootloader, and the two OTA receivers of the core.
//!
//! Every (re)start of a node is a boot: [`NodeFirmware::boot`] opens the node's flash
//! file, lets the boot model pick the slot (a new image boots on trial; an image still
//! on trial at the next boot is given up and the previous slot boots again), and reads
//! the running version from the ESP-IDF application descriptor of that slot's image
//! (no image: the configured "factory" version). OTA messages for the node go to the
//! receivers, which write into the other slot; once an image is complete and checked,
//! the slot is marked new and the node restarts into it. The node confirms the trial
//! image when it reaches the broker again.

use std::path::PathBuf;
use std::time::Duration;

use embedded_storage::nor_flash::ReadNorFlash;
use mqttmesh_core::node::OtaExchange;
use mqttmesh_core::ota::boot::{Boot, SlotState};
use mqttmesh_core::ota::{compat, v2, Area, Reply};
use mqttmesh_core::Config;

use crate::flash::{FileFlash, FlashTiming, Layout};
use crate::image;

/// Where and how nodes keep their firmware.
#[derive(Debug, Clone)]
pub struct OtaSpec {
    /// Directory of the per-node flash files (`<CHIPID>.flash`).
    pub dir: PathBuf,
    /// Flash layout (slot size).
    pub layout: Layout,
    /// A trial image that has not reached the broker after this long is given up (the
    /// node restarts and the bootloader returns to the previous slot).
    pub trial_timeout: Duration,
    /// How long erases and writes take (`None`: instantly). A node answers an OTA
    /// command only after the flash work it caused.
    pub flash_timing: Option<FlashTiming>,
}

/// Why a node's firmware could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// The flash file.
    #[error("flash file {path}: {source}")]
    Flash {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The boot state or slot layout.
    #[error("flash layout: {0}")]
    Layout(String),
}

/// An image the node should restart into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// Its length in bytes.
    pub len: u32,
}

/// One node's firmware after a boot.
#[derive(Debug)]
pub struct NodeFirmware {
    boot: Boot<FileFlash>,
    update: Area<FileFlash>,
    compat: compat::Receiver,
    v2: v2::Receiver,
    version: Option<String>,
    started: std::time::Instant,
}

impl NodeFirmware {
    /// Boots chip `chip_id`: opens (or creates) its flash, runs the bootloader's slot
    /// choice, and prepares the receivers for the other slot.
    pub fn boot(
        spec: &OtaSpec,
        chip_id: u32,
        config: &Config,
    ) -> Result<NodeFirmware, FirmwareError> {
        let path = spec.dir.join(format!("{chip_id:06X}.flash"));
        let open = || {
            FileFlash::open_or_create(&path, spec.layout.capacity()).map_err(|source| {
                FirmwareError::Flash {
                    path: path.clone(),
                    source,
                }
            })
        };
        let mut boot = Boot::load(open()?, spec.layout.otadata.0)
            .map_err(|e| FirmwareError::Layout(format!("{e:?}")))?;
        let active = boot
            .on_boot()
            .map_err(|e| FirmwareError::Layout(format!("{e:?}")))?;
        let (base, _) = spec
            .layout
            .slot(active.index())
            .ok_or_else(|| FirmwareError::Layout("no slot".into()))?;
        let mut head = [0u8; image::APP_DESC_OFFSET + image::APP_DESC_LEN];
        let version = boot
            .flash_mut()
            .read(base, &mut head)
            .ok()
            .and_then(|()| image::app_descriptor(&head).ok())
            .map(|d| d.version)
            .filter(|v| !v.is_empty() && v.len() < 32);
        let (update_base, update_size) = spec
            .layout
            .slot(active.other().index())
            .ok_or_else(|| FirmwareError::Layout("no update slot".into()))?;
        let mut flash = open()?;
        flash.set_timing(spec.flash_timing);
        let mut update = Area::new(flash, update_base, update_size)
            .map_err(|e| FirmwareError::Layout(e.to_string()))?;
        let settings = v2::Settings {
            firmware_id: config.firmware_id,
            version: heapless_str(version.as_deref().unwrap_or(&config.firmware_version)),
            public_key: config.ota_public_key,
            refuse_downgrade: config.ota_refuse_downgrade,
        };
        let v2 = v2::Receiver::resume(settings, &mut update)
            .map_err(|e| FirmwareError::Layout(format!("OTA public key: {e:?}")))?;
        Ok(NodeFirmware {
            boot,
            update,
            compat: compat::Receiver::new(),
            v2,
            version,
            started: std::time::Instant::now(),
        })
    }

    /// The version of the running image, when the slot holds one (else the node runs
    /// its configured version).
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// Whether the running image is on trial (not yet confirmed).
    pub fn on_trial(&self) -> bool {
        self.boot.state(self.boot.active()) == SlotState::PendingVerify
    }

    /// The node reached the broker: confirm a trial image.
    pub fn confirm(&mut self) -> bool {
        self.on_trial() && self.boot.confirm().is_ok()
    }

    /// Flash time spent since the last call (zero without a timing model).
    pub fn take_busy(&mut self) -> Duration {
        self.update.flash_mut().take_busy()
    }

    /// An OTA message for this node; replies go to `out`. `Some` when the node should
    /// now restart into the new image.
    pub fn handle(
        &mut self,
        exchange: OtaExchange,
        command: &str,
        payload: &[u8],
        mut out: impl FnMut(Reply),
    ) -> Option<Install> {
        let started = self.started;
        let mut clock = || started.elapsed().as_micros() as u64;
        let len = match exchange {
            OtaExchange::Compat => {
                match self
                    .compat
                    .handle(&mut self.update, command, payload, &mut clock, &mut out)
                {
                    Ok(compat::Outcome::Install { len }) => len,
                    Ok(compat::Outcome::Done) => return None,
                    Err(refusal) => {
                        tracing::debug!(target: "mqttmesh::ota", "compat {command}: refused: {refusal:?}");
                        return None;
                    }
                }
            }
            OtaExchange::V2 => match self.v2.handle(&mut self.update, command, payload, &mut out) {
                Ok(v2::Outcome::Install { len, .. }) => len,
                Ok(v2::Outcome::Done) => return None,
                Err(reason) => {
                    tracing::debug!(target: "mqttmesh::ota", "v2 {command}: refused: {reason:?}");
                    return None;
                }
            },
        };
        let slot = self.boot.active().other();
        match self.boot.mark_new(slot) {
            Ok(()) => Some(Install { len }),
            Err(e) => {
                tracing::warn!(target: "mqttmesh::ota", "cannot mark the new image: {e:?}");
                out(match exchange {
                    OtaExchange::Compat => compat::flash_failed(),
                    OtaExchange::V2 => self.v2.install_failed(),
                });
                None
            }
        }
    }
}

fn heapless_str<const N: usize>(s: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in s.chars() {
        if out.push(c).is_err() {
            break;
        }
    }
    out
}
