//! The boot model of ESP-IDF, kept in an `otadata`-like region: two application slots;
//! a newly written image is marked `New`, boots once in a trial state
//! (`PendingVerify`) and becomes `Valid` when the application confirms it (the node
//! reached the broker); an image still pending at the next boot is marked `Invalid` and
//! the bootloader returns to the previous valid slot. Stored redundantly (two sectors,
//! sequence number and CRC) so a power loss during an update never loses the state.
//! The host runtime uses this as its emulated bootloader; on the chip, the ESP-IDF
//! bootloader and `esp-bootloader-esp-idf` implement the same states.
//!
//! Life cycle, with the calls that drive it:
//!
//! ```text
//!  running A (Valid)  ── write B, verify ──  mark_new(B)        B: New
//!  restart            ── bootloader ──────── on_boot() = B      B: PendingVerify (trial)
//!  reached the broker ────────────────────── confirm()          B: Valid, A keeps its image
//!  or: trial crashed, restart ────────────── on_boot() = A      B: Invalid
//!  or: no broker in time ─────────────────── rollback() = A     B: Invalid, restart into A
//! ```
//!
//! Storage: the region is two erase sectors at `base`. Each change writes the whole
//! state as one record (magic, sequence number, states, CRC-32) into the sector that
//! does not hold the newest copy, so a write cut by a power loss leaves the newest intact
//! copy in the other sector. [`Boot::load`] takes the valid copy with the higher
//! sequence number; with no valid copy (fresh or wholly corrupted flash) it starts as a
//! fresh device does: slot A valid and active, B empty (ESP-IDF likewise boots the first
//! application slot when `otadata` is blank). Nothing is written while nothing changes,
//! so a normal boot costs no flash wear.

use core::fmt;

use embedded_storage::nor_flash::NorFlash;

use super::area::MAX_ALIGN;

/// One of the two application slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    /// The first slot (`ota_0`); a fresh device runs from it.
    A,
    /// The second slot (`ota_1`).
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// 0 for A, 1 for B.
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

/// What a slot holds, as the bootloader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// Nothing bootable.
    Empty,
    /// A complete, verified image that has not booted yet.
    New,
    /// Booted once as a trial; not confirmed yet.
    PendingVerify,
    /// Confirmed: a good image to fall back to.
    Valid,
    /// A trial that crashed, did not confirm, or was given up.
    Invalid,
}

impl SlotState {
    fn code(self) -> u8 {
        match self {
            SlotState::Empty => 0,
            SlotState::New => 1,
            SlotState::PendingVerify => 2,
            SlotState::Valid => 3,
            SlotState::Invalid => 4,
        }
    }

    fn from_code(code: u8) -> Option<SlotState> {
        Some(match code {
            0 => SlotState::Empty,
            1 => SlotState::New,
            2 => SlotState::PendingVerify,
            3 => SlotState::Valid,
            4 => SlotState::Invalid,
            _ => return None,
        })
    }
}

/// The persisted boot state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootData {
    /// State of slot A and slot B (indexed by [`Slot::index`]).
    pub slots: [SlotState; 2],
    /// The slot that runs (or boots next when no new image waits).
    pub active: Slot,
    /// Sequence number of the stored copy (0: nothing stored yet).
    pub seq: u32,
    /// Boots of the active slot while it was `PendingVerify`.
    pub boots_pending: u8,
}

impl BootData {
    /// A fresh device: A valid and active, B empty.
    pub const FRESH: BootData = BootData {
        slots: [SlotState::Valid, SlotState::Empty],
        active: Slot::A,
        seq: 0,
        boots_pending: 0,
    };

    /// State of `slot`.
    pub fn state(&self, slot: Slot) -> SlotState {
        // `index()` is 0 or 1: in bounds.
        self.slots[slot.index()]
    }

    fn set(&mut self, slot: Slot, state: SlotState) {
        // `index()` is 0 or 1: in bounds.
        self.slots[slot.index()] = state;
    }
}

/// Why a boot-state operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootError {
    /// Region not sector-aligned, not inside the flash, or the flash's write unit too big.
    BadRegion,
    /// The flash reported an error; the previous state is still the stored one.
    Flash,
    /// `mark_new` on the running slot: that would overwrite the image that runs.
    ActiveSlot,
    /// An update while the running image is still a trial: its slot's partner holds the
    /// only image to fall back to. Confirm (or roll back) first.
    TrialPending,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BootError::BadRegion => "boot-state region not sector-aligned or outside the flash",
            BootError::Flash => "flash error while storing the boot state",
            BootError::ActiveSlot => "the running slot cannot take a new image",
            BootError::TrialPending => "the running image is an unconfirmed trial",
        })
    }
}

impl core::error::Error for BootError {}

/// `"MMBT"`, first word of a stored record.
const MAGIC: u32 = 0x4D4D_4254;
/// Magic, seq, 4 state bytes, CRC-32.
const RECORD: usize = 12 + 4;

/// The boot state in a two-sector region of flash `F`.
#[derive(Debug)]
pub struct Boot<F> {
    flash: F,
    base: u32,
    data: BootData,
    trial_boots: u8,
}

impl<F: NorFlash> Boot<F> {
    /// Reads the state from the two sectors at `base` (see the module doc for a fresh or
    /// corrupted region).
    pub fn load(mut flash: F, base: u32) -> Result<Self, BootError> {
        let sector = F::ERASE_SIZE as u64;
        let end = u64::from(base) + 2 * sector;
        let fits = end <= flash.capacity() as u64 && end <= u64::from(u32::MAX);
        let aligned = sector != 0 && u64::from(base) % sector == 0;
        if !fits || !aligned || record_len::<F>().is_none() {
            return Err(BootError::BadRegion);
        }
        let mut best: Option<BootData> = None;
        for copy in 0..2u32 {
            let mut buf = [0u8; RECORD];
            let at = base + copy * F::ERASE_SIZE as u32;
            flash.read(at, &mut buf).map_err(|_| BootError::Flash)?;
            if let Some(found) = decode(&buf) {
                match best {
                    Some(b) if !newer(found.seq, b.seq) => {}
                    _ => best = Some(found),
                }
            }
        }
        Ok(Boot {
            flash,
            base,
            data: best.unwrap_or(BootData::FRESH),
            trial_boots: 1,
        })
    }

    /// How many boots a trial gets before it is marked `Invalid` (default 1, as ESP-IDF;
    /// at least 1).
    pub fn set_trial_boots(&mut self, boots: u8) {
        self.trial_boots = boots.max(1);
    }

    /// The current state.
    pub fn data(&self) -> &BootData {
        &self.data
    }

    /// State of `slot`.
    pub fn state(&self, slot: Slot) -> SlotState {
        self.data.state(slot)
    }

    /// The slot that runs.
    pub fn active(&self) -> Slot {
        self.data.active
    }

    /// The slot an update is written into (the one that does not run).
    pub fn inactive(&self) -> Slot {
        self.data.active.other()
    }

    /// Whether an update may be written now: not while the running image is a trial,
    /// whose partner slot is the only image to fall back to.
    pub fn can_update(&self) -> bool {
        self.state(self.active()) != SlotState::PendingVerify
    }

    /// Marks `slot` as holding a complete, verified image: the next
    /// [`on_boot`](Self::on_boot) boots it as a trial.
    pub fn mark_new(&mut self, slot: Slot) -> Result<(), BootError> {
        if slot == self.active() {
            return Err(BootError::ActiveSlot);
        }
        if !self.can_update() {
            return Err(BootError::TrialPending);
        }
        let mut next = self.data;
        next.set(slot, SlotState::New);
        self.store(next)
    }

    /// What the bootloader does at every boot; returns the slot to boot.
    ///
    /// A `New` image in the other slot becomes `PendingVerify` and boots. A running
    /// trial that has used its boots (it crashed or never confirmed) becomes `Invalid`
    /// and the last `Valid` slot boots. With no valid slot to fall back to, the active
    /// slot boots anyway (as ESP-IDF does: better a suspect image than none).
    pub fn on_boot(&mut self) -> Result<Slot, BootError> {
        let mut next = self.data;
        let active = next.active;
        if next.state(active.other()) == SlotState::New
            && next.state(active) != SlotState::PendingVerify
        {
            next.active = active.other();
            next.set(next.active, SlotState::PendingVerify);
            next.boots_pending = 1;
        } else if next.state(active) == SlotState::PendingVerify {
            if next.boots_pending < self.trial_boots {
                next.boots_pending += 1;
            } else {
                next.set(active, SlotState::Invalid);
                next.boots_pending = 0;
                fall_back(&mut next);
            }
        } else if next.state(active) != SlotState::Valid {
            fall_back(&mut next);
        }
        if next != self.data {
            self.store(next)?;
        }
        Ok(self.data.active)
    }

    /// Confirms the running trial (`PendingVerify` ⇒ `Valid`); the other slot keeps its
    /// image. Nothing to do (and nothing written) when the running image is not a trial.
    pub fn confirm(&mut self) -> Result<(), BootError> {
        let active = self.active();
        if self.state(active) != SlotState::PendingVerify {
            return Ok(());
        }
        let mut next = self.data;
        next.set(active, SlotState::Valid);
        next.boots_pending = 0;
        self.store(next)
    }

    /// Gives up: a running trial becomes `Invalid` and the last valid slot active; an
    /// update marked `New` but not booted yet becomes `Invalid`. Returns the slot to run;
    /// the caller restarts when it is not the one running.
    pub fn rollback(&mut self) -> Result<Slot, BootError> {
        let mut next = self.data;
        let active = next.active;
        if next.state(active) == SlotState::PendingVerify {
            next.set(active, SlotState::Invalid);
            next.boots_pending = 0;
            fall_back(&mut next);
        } else if next.state(active.other()) == SlotState::New {
            next.set(active.other(), SlotState::Invalid);
        }
        if next != self.data {
            self.store(next)?;
        }
        Ok(self.data.active)
    }

    /// The flash (e.g. for the application slots).
    pub fn flash_mut(&mut self) -> &mut F {
        &mut self.flash
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// Writes `next` (with the next sequence number) into the sector that does not hold
    /// the newest copy; the in-memory state changes only once the write succeeded.
    fn store(&mut self, mut next: BootData) -> Result<(), BootError> {
        next.seq = self.data.seq.wrapping_add(1);
        let sector = F::ERASE_SIZE as u32;
        let at = self.base + (next.seq % 2) * sector;
        let len = record_len::<F>().ok_or(BootError::BadRegion)?;
        let mut buf = [0xFF; MAX_ALIGN];
        // In bounds: RECORD <= len <= MAX_ALIGN (`record_len`).
        buf[..RECORD].copy_from_slice(&encode(&next));
        self.flash
            .erase(at, at + sector)
            .map_err(|_| BootError::Flash)?;
        self.flash
            .write(at, &buf[..len])
            .map_err(|_| BootError::Flash)?;
        self.data = next;
        Ok(())
    }
}

/// Makes the partner slot active if it is valid (else the active slot stays).
fn fall_back(data: &mut BootData) {
    if data.state(data.active.other()) == SlotState::Valid {
        data.active = data.active.other();
    }
}

/// The record padded to the flash's write unit, if it fits the block buffer and reads
/// need no finer alignment than the record has.
fn record_len<F: NorFlash>() -> Option<usize> {
    let write = F::WRITE_SIZE.max(1);
    let len = RECORD.div_ceil(write) * write;
    let readable = RECORD % F::READ_SIZE.max(1) == 0;
    (len <= MAX_ALIGN && readable && F::ERASE_SIZE >= len).then_some(len)
}

/// Whether sequence number `a` is newer than `b` (serial-number arithmetic, so a wrap
/// after 2^32 writes still orders correctly).
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

// Fixed indices into a RECORD-sized array: in bounds.
fn encode(data: &BootData) -> [u8; RECORD] {
    let mut rec = [0u8; RECORD];
    rec[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    rec[4..8].copy_from_slice(&data.seq.to_le_bytes());
    rec[8] = data.slots[0].code();
    rec[9] = data.slots[1].code();
    rec[10] = data.active.index() as u8;
    rec[11] = data.boots_pending;
    let crc = crc32(&rec[..12]);
    rec[12..16].copy_from_slice(&crc.to_le_bytes());
    rec
}

// Fixed indices into a RECORD-sized array: in bounds.
fn decode(rec: &[u8; RECORD]) -> Option<BootData> {
    let word = |i: usize| u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
    if word(0) != MAGIC || word(12) != crc32(&rec[..12]) {
        return None;
    }
    Some(BootData {
        slots: [SlotState::from_code(rec[8])?, SlotState::from_code(rec[9])?],
        active: match rec[10] {
            0 => Slot::A,
            1 => Slot::B,
            _ => return None,
        },
        seq: word(4),
        boots_pending: rec[11],
    })
}

/// CRC-32 (IEEE 802.3, the one of zip and Ethernet), bit by bit: records are 12 bytes.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::mem::{MemFlash, SECTOR};

    type Flash = MemFlash<{ 4 * SECTOR }>;
    const BASE: u32 = SECTOR as u32;

    fn fresh() -> Boot<Flash> {
        Boot::load(Flash::new(), BASE).unwrap()
    }

    fn reload(boot: Boot<Flash>) -> Boot<Flash> {
        Boot::load(boot.into_inner(), BASE).unwrap()
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn fresh_flash_runs_a_and_writes_nothing() {
        let mut boot = fresh();
        assert_eq!(*boot.data(), BootData::FRESH);
        assert_eq!((boot.active(), boot.inactive()), (Slot::A, Slot::B));
        assert_eq!(boot.on_boot(), Ok(Slot::A));
        assert_eq!(boot.confirm(), Ok(()));
        assert_eq!(boot.flash_mut().writes(), 0);
        assert_eq!(boot.flash_mut().erases(), 0);
    }

    #[test]
    fn bad_region_refused() {
        assert_eq!(
            Boot::load(Flash::new(), 100).unwrap_err(),
            BootError::BadRegion
        );
        assert_eq!(
            Boot::load(Flash::new(), 3 * SECTOR as u32).unwrap_err(),
            BootError::BadRegion
        );
    }

    #[test]
    fn full_life_cycle_survives_restarts() {
        let mut boot = fresh();
        boot.mark_new(Slot::B).unwrap();
        let mut boot = reload(boot);
        assert_eq!(boot.state(Slot::B), SlotState::New);
        assert_eq!(boot.on_boot(), Ok(Slot::B));
        let mut boot = reload(boot);
        assert_eq!(boot.state(Slot::B), SlotState::PendingVerify);
        assert_eq!(boot.active(), Slot::B);
        assert!(!boot.can_update());
        assert_eq!(boot.mark_new(Slot::A), Err(BootError::TrialPending));
        boot.confirm().unwrap();
        let mut boot = reload(boot);
        assert_eq!(boot.data().slots, [SlotState::Valid, SlotState::Valid]);
        assert_eq!(boot.on_boot(), Ok(Slot::B));
        // The next update goes into A.
        assert_eq!(boot.inactive(), Slot::A);
        assert_eq!(boot.mark_new(Slot::B), Err(BootError::ActiveSlot));
        boot.mark_new(Slot::A).unwrap();
        assert_eq!(boot.on_boot(), Ok(Slot::A));
        boot.confirm().unwrap();
        assert_eq!(reload(boot).data().seq, 6);
    }

    #[test]
    fn crash_loop_rolls_back() {
        let mut boot = fresh();
        boot.mark_new(Slot::B).unwrap();
        assert_eq!(boot.on_boot(), Ok(Slot::B));
        // The trial crashes before confirming: the next boot returns to A.
        let mut boot = reload(boot);
        assert_eq!(boot.on_boot(), Ok(Slot::A));
        assert_eq!(boot.data().slots, [SlotState::Valid, SlotState::Invalid]);
        // And stays there.
        let mut boot = reload(boot);
        assert_eq!(boot.on_boot(), Ok(Slot::A));
        assert!(boot.can_update());
    }

    #[test]
    fn trial_boots_can_be_raised() {
        let mut boot = fresh();
        boot.set_trial_boots(2);
        boot.mark_new(Slot::B).unwrap();
        assert_eq!(boot.on_boot(), Ok(Slot::B));
        assert_eq!(boot.on_boot(), Ok(Slot::B));
        assert_eq!(boot.data().boots_pending, 2);
        assert_eq!(boot.on_boot(), Ok(Slot::A));
    }

    #[test]
    fn rollback_gives_up_a_trial_or_a_waiting_image() {
        let mut boot = fresh();
        boot.mark_new(Slot::B).unwrap();
        assert_eq!(boot.rollback(), Ok(Slot::A));
        assert_eq!(boot.state(Slot::B), SlotState::Invalid);
        assert_eq!(boot.on_boot(), Ok(Slot::A));
        boot.mark_new(Slot::B).unwrap();
        assert_eq!(boot.on_boot(), Ok(Slot::B));
        assert_eq!(boot.rollback(), Ok(Slot::A));
        let boot = reload(boot);
        assert_eq!(boot.active(), Slot::A);
        assert_eq!(boot.data().slots, [SlotState::Valid, SlotState::Invalid]);
    }

    #[test]
    fn corrupted_newest_copy_falls_back_to_older() {
        let mut boot = fresh();
        boot.mark_new(Slot::B).unwrap(); // seq 1, sector 1
        boot.on_boot().unwrap(); // seq 2, sector 0: B pending
        let mut flash = boot.into_inner();
        // Power lost while the newest copy was written: a torn record.
        flash.bytes_mut()[BASE as usize + 9] ^= 0x55;
        let boot = Boot::load(flash, BASE).unwrap();
        assert_eq!(boot.data().seq, 1);
        assert_eq!(boot.state(Slot::B), SlotState::New);
        assert_eq!(boot.active(), Slot::A);
    }

    #[test]
    fn power_loss_during_store_keeps_old_state() {
        let mut boot = fresh();
        boot.mark_new(Slot::B).unwrap();
        boot.flash_mut().set_write_budget(Some(0));
        assert_eq!(boot.on_boot(), Err(BootError::Flash));
        // In memory and on flash, still the state before.
        assert_eq!(boot.state(Slot::B), SlotState::New);
        let mut boot = reload(boot);
        assert_eq!(boot.state(Slot::B), SlotState::New);
        boot.flash_mut().set_write_budget(None);
        assert_eq!(boot.on_boot(), Ok(Slot::B));
    }

    #[test]
    fn both_copies_corrupt_is_fresh() {
        let mut boot = fresh();
        boot.mark_new(Slot::B).unwrap();
        boot.on_boot().unwrap();
        let mut flash = boot.into_inner();
        flash.bytes_mut()[BASE as usize..BASE as usize + 2 * SECTOR].fill(0x00);
        assert_eq!(*Boot::load(flash, BASE).unwrap().data(), BootData::FRESH);
    }

    #[test]
    fn sequence_numbers_wrap() {
        assert!(newer(1, 0));
        assert!(newer(0, u32::MAX));
        assert!(!newer(u32::MAX, 0));
    }
}
