//! Firmware updates on the chip: the core's OTA receivers (`mqttmesh_core::ota`,
//! compat and v2 exchanges) write into the ESP-IDF OTA slot that is not running,
//! through an [`Area`] over esp-storage's `FlashStorage` (`NorFlash`); slot offsets
//! come from the partition table in flash (`partitions.csv`).
//!
//! The boot state lives in ESP-IDF's own `otadata` (the real bootloader reads it), so
//! it is kept with esp-bootloader-esp-idf's `OtaUpdater` rather than the core's
//! `ota::boot` (the host's emulation of the same model): a complete, checked image
//! makes its slot the next boot with state `New`; the bootloader boots it as a trial
//! (`PendingVerify`, when it is built with rollback support); [`Ota::confirm`] marks
//! it `Valid` once the node reaches the broker; [`Ota::give_up`] marks it `Invalid`
//! so the bootloader returns to the previous slot.

use esp_bootloader_esp_idf::ota::OtaImageState;
use esp_bootloader_esp_idf::ota_updater::OtaUpdater;
use esp_bootloader_esp_idf::partitions::{
    self, AppPartitionSubType, PARTITION_TABLE_MAX_LEN, PartitionType,
};
use esp_storage::FlashStorage;
use heapless::String;
use mqttmesh_core::node::OtaExchange;
use mqttmesh_core::ota::{Area, Reply, compat, v2};

/// Why OTA is unavailable on this boot.
#[derive(Debug)]
pub enum OtaError {
    /// The partition table could not be read or has no two OTA slots.
    Partitions(partitions::Error),
    /// The update slot is not usable as an area.
    Area(mqttmesh_core::ota::AreaError),
    /// The v2 settings were refused.
    Settings,
}

impl core::fmt::Display for OtaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            OtaError::Partitions(e) => write!(
                f,
                "partition table without two OTA slots and otadata ({e:?}); flash with --partition-table partitions.csv"
            ),
            OtaError::Area(e) => write!(f, "update slot unusable: {e}"),
            OtaError::Settings => {
                f.write_str("the OTA public key is not a valid Ed25519 key ([ota] public_key)")
            }
        }
    }
}

/// The flash side of OTA.
pub struct Ota {
    area: Area<FlashStorage<'static>>,
    /// The slot `area` covers.
    update: AppPartitionSubType,
    /// A public key is configured: the unsigned original exchange is refused, or it
    /// would bypass the signature check.
    signed_only: bool,
    compat: compat::Receiver,
    v2: v2::Receiver,
    trial: bool,
}

/// Finds the running slot and the update slot (offset, size) in the partition table.
fn slots(
    flash: &mut FlashStorage<'static>,
) -> Result<(AppPartitionSubType, u32, u32, bool), OtaError> {
    let mut buf = [0u8; PARTITION_TABLE_MAX_LEN];
    let (running, trial) = {
        let mut updater = OtaUpdater::new(flash, &mut buf).map_err(OtaError::Partitions)?;
        let state = updater
            .current_ota_state()
            .unwrap_or(OtaImageState::Undefined);
        let running = updater
            .selected_partition()
            .unwrap_or(AppPartitionSubType::Ota0);
        (
            running,
            matches!(state, OtaImageState::New | OtaImageState::PendingVerify),
        )
    };
    let table = partitions::read_partition_table(flash, &mut buf).map_err(OtaError::Partitions)?;
    let booted = table
        .booted_partition()
        .ok()
        .flatten()
        .map(|p| p.partition_type());
    let update = [AppPartitionSubType::Ota0, AppPartitionSubType::Ota1]
        .into_iter()
        .find(|&s| Some(PartitionType::App(s)) != booted && (booted.is_some() || s != running))
        .ok_or(OtaError::Partitions(partitions::Error::Invalid))?;
    let entry = table
        .find_partition(PartitionType::App(update))
        .map_err(OtaError::Partitions)?
        .ok_or(OtaError::Partitions(partitions::Error::Invalid))?;
    Ok((update, entry.offset(), entry.len(), trial))
}

impl Ota {
    /// Reads the partition table and prepares the receivers for the idle slot.
    pub fn new(
        mut flash: FlashStorage<'static>,
        config: &mqttmesh_core::Config,
    ) -> Result<Ota, OtaError> {
        let (update, base, size, trial) = slots(&mut flash)?;
        log::info!("ota: update slot at {base:#x}, {size} bytes; running image on trial: {trial}");
        let mut area = Area::new(flash, base, size).map_err(OtaError::Area)?;
        let mut version = String::new();
        // The configured version is at most 31 bytes (validated): it fits.
        let _ = version.push_str(&config.firmware_version);
        let settings = v2::Settings {
            firmware_id: config.firmware_id,
            version,
            public_key: config.ota_public_key,
            refuse_downgrade: config.ota_refuse_downgrade,
        };
        let v2 = v2::Receiver::resume(settings, &mut area).map_err(|_| OtaError::Settings)?;
        Ok(Ota {
            area,
            update,
            signed_only: config.ota_public_key.is_some(),
            compat: compat::Receiver::new(),
            v2,
            trial,
        })
    }

    /// Whether the running image still waits for confirmation.
    pub fn on_trial(&self) -> bool {
        self.trial
    }

    fn updater<R>(
        &mut self,
        f: impl FnOnce(&mut OtaUpdater<'_, 'static>) -> Result<R, partitions::Error>,
    ) -> Result<R, partitions::Error> {
        let mut buf = [0u8; PARTITION_TABLE_MAX_LEN];
        let mut updater = OtaUpdater::new(self.area.flash_mut(), &mut buf)?;
        f(&mut updater)
    }

    /// The node reached the broker: the trial image is good.
    pub fn confirm(&mut self) {
        if !self.trial {
            return;
        }
        match self.updater(|u| u.set_current_ota_state(OtaImageState::Valid)) {
            Ok(()) => {
                self.trial = false;
                log::info!("ota: running image confirmed");
            }
            Err(e) => log::warn!("ota: cannot confirm the running image: {e:?}"),
        }
    }

    /// The trial image never reached the broker: mark it invalid (restart next).
    pub fn give_up(&mut self) {
        if let Err(e) = self.updater(|u| u.set_current_ota_state(OtaImageState::Invalid)) {
            log::warn!("ota: cannot mark the running image invalid: {e:?}");
        }
    }

    /// An OTA message for this node. Replies go to `out`; true when the new image is
    /// installed and the node should restart into it.
    pub fn handle(
        &mut self,
        exchange: OtaExchange,
        command: &str,
        payload: &[u8],
        mut out: impl FnMut(Reply),
    ) -> bool {
        let mut clock = || embassy_time::Instant::now().as_micros();
        let installed = match exchange {
            OtaExchange::Compat if self.signed_only => {
                log::warn!(
                    "ota: ignoring the unsigned original exchange: this node requires signed (v2) updates"
                );
                false
            }
            OtaExchange::Compat => matches!(
                self.compat
                    .handle(&mut self.area, command, payload, &mut clock, &mut out),
                Ok(compat::Outcome::Install { .. })
            ),
            OtaExchange::V2 => matches!(
                self.v2.handle(&mut self.area, command, payload, &mut out),
                Ok(v2::Outcome::Install { .. })
            ),
        };
        if !installed {
            return false;
        }
        // Select exactly the slot just written. (`activate_next_partition` would pick
        // the running slot on a freshly flashed device, whose blank otadata reads as
        // "factory".)
        let update = self.update;
        let result = self.updater(|u| {
            u.ota_data()?.set_current_app_partition(update)?;
            u.set_current_ota_state(OtaImageState::New)
        });
        match result {
            Ok(()) => true,
            Err(e) => {
                log::warn!("ota: cannot select the new image: {e:?}");
                out(match exchange {
                    OtaExchange::Compat => compat::flash_failed(),
                    OtaExchange::V2 => self.v2.install_failed(),
                });
                false
            }
        }
    }
}
