//! The boot model with the compat receiver on one flash (an update installed, booted
//! as a trial, confirmed or rolled back), and property tests of the boot state under
//! random operations, power losses and torn writes.

use base64::Engine;
use md5::{Digest, Md5};
use mqttmesh_core::ota::boot::{Boot, Slot, SlotState};
use mqttmesh_core::ota::compat::{Outcome, Receiver};
use mqttmesh_core::ota::mem::{MemFlash, SECTOR};
use mqttmesh_core::ota::Area;
use proptest::prelude::*;

type Flash = MemFlash<{ 16 * SECTOR }>;
/// otadata in sectors 0–1, slot A in 2–8, slot B in 9–15.
const OTADATA: u32 = 0;
const SLOT_SIZE: u32 = 7 * SECTOR as u32;

fn slot_base(slot: Slot) -> u32 {
    match slot {
        Slot::A => 2 * SECTOR as u32,
        Slot::B => 9 * SECTOR as u32,
    }
}

fn b64(data: &[u8]) -> String {
    let mut buf = vec![0u8; data.len().div_ceil(3) * 4];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut buf)
        .unwrap();
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Runs the original exchange for `image` into `slot`; the install outcome.
fn upload(flash: &mut Flash, slot: Slot, image: &[u8]) -> Result<Outcome, String> {
    let mut area = Area::new(flash, slot_base(slot), SLOT_SIZE).unwrap();
    let mut rx = Receiver::new();
    let mut send = |cmd: &str, payload: &[u8]| {
        rx.handle(&mut area, cmd, payload, &mut || 0, &mut |_| {})
            .map_err(|e| format!("{cmd}: {e}"))
    };
    let start = format!("md5:{},len:{}", b64(&Md5::digest(image)), image.len());
    send("start", start.as_bytes())?;
    for (i, chunk) in image.chunks(768).enumerate() {
        send(&(i * 768).to_string(), b64(chunk).as_bytes())?;
    }
    send("flash", b"")
}

#[test]
fn update_boots_as_trial_and_is_confirmed() {
    let mut flash = Flash::new();
    let boot = Boot::load(&mut flash, OTADATA).unwrap();
    let target = boot.inactive();
    assert_eq!(target, Slot::B);
    let image: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(
        upload(&mut flash, target, &image),
        Ok(Outcome::Install { len: 9000 })
    );
    Boot::load(&mut flash, OTADATA)
        .unwrap()
        .mark_new(target)
        .unwrap();
    // Restart: the bootloader boots the new image as a trial.
    let mut boot = Boot::load(&mut flash, OTADATA).unwrap();
    assert_eq!(boot.on_boot(), Ok(Slot::B));
    assert_eq!(boot.state(Slot::B), SlotState::PendingVerify);
    // The node reaches the broker.
    boot.confirm().unwrap();
    let mut boot = Boot::load(&mut flash, OTADATA).unwrap();
    assert_eq!(boot.on_boot(), Ok(Slot::B));
    assert_eq!(boot.data().slots, [SlotState::Valid, SlotState::Valid]);
    let b = slot_base(Slot::B) as usize;
    assert_eq!(&flash.bytes()[b..b + image.len()], &image[..]);
}

#[test]
fn unconfirmed_update_rolls_back_after_crash_or_timeout() {
    let image = vec![0x5A; 3000];
    for crash in [true, false] {
        let mut flash = Flash::new();
        upload(&mut flash, Slot::B, &image).unwrap();
        let mut boot = Boot::load(&mut flash, OTADATA).unwrap();
        boot.mark_new(Slot::B).unwrap();
        assert_eq!(boot.on_boot(), Ok(Slot::B));
        let mut boot = Boot::load(&mut flash, OTADATA).unwrap();
        let next = if crash {
            // The trial crashed: the bootloader runs again.
            boot.on_boot()
        } else {
            // No broker within the timeout: the application gives up.
            boot.rollback()
        };
        assert_eq!(next, Ok(Slot::A), "crash: {crash}");
        let mut boot = Boot::load(&mut flash, OTADATA).unwrap();
        assert_eq!(boot.on_boot(), Ok(Slot::A));
        assert_eq!(boot.state(Slot::B), SlotState::Invalid);
    }
}

#[test]
fn failed_upload_is_never_marked() {
    let mut flash = Flash::new();
    let image = vec![1u8; 2000];
    let mut area = Area::new(&mut flash, slot_base(Slot::B), SLOT_SIZE).unwrap();
    let mut rx = Receiver::new();
    let start = format!("md5:{},len:2000", b64(&Md5::digest(&image)));
    rx.handle(&mut area, "start", start.as_bytes(), &mut || 0, &mut |_| {})
        .unwrap();
    rx.handle(
        &mut area,
        "0",
        b64(&image[..768]).as_bytes(),
        &mut || 0,
        &mut |_| {},
    )
    .unwrap();
    let mut replies = Vec::new();
    let r = rx.handle(&mut area, "flash", b"", &mut || 0, &mut |r| replies.push(r));
    assert!(r.is_err());
    assert_eq!(replies[0].payload.as_slice(), b"Failed");
    let mut boot = Boot::load(&mut flash, OTADATA).unwrap();
    assert_eq!(boot.on_boot(), Ok(Slot::A));
    assert_eq!(boot.state(Slot::B), SlotState::Empty);
}

#[derive(Clone, Debug)]
enum Op {
    MarkNew,
    MarkActive,
    Boot,
    Confirm,
    Rollback,
    /// The next store fails (power lost before the write).
    PowerLoss,
    /// The next store is torn (power lost during the write).
    Torn,
    Reload,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::MarkNew),
        1 => Just(Op::MarkActive),
        4 => Just(Op::Boot),
        2 => Just(Op::Confirm),
        1 => Just(Op::Rollback),
        1 => Just(Op::PowerLoss),
        1 => Just(Op::Torn),
        1 => Just(Op::Reload),
    ]
}

/// Runs one state-changing call.
fn step(boot: &mut Boot<Flash>, which: usize) {
    let _ = match which % 4 {
        0 => boot.mark_new(boot.inactive()).map(|_| Slot::A),
        1 => boot.on_boot(),
        2 => boot.confirm().map(|_| Slot::A),
        _ => boot.rollback(),
    };
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The stored state always equals the one in memory, a cut write keeps the state
    /// before it, a valid image always remains, the bootloader boots only a valid or
    /// trial image, and an image becomes valid only through `confirm`.
    #[test]
    fn boot_state_survives_everything(ops in proptest::collection::vec((op(), 0usize..4), 1..80)) {
        let mut boot = Boot::load(Flash::new(), OTADATA).unwrap();
        // Slots whose current image was confirmed (A ships valid).
        let mut confirmed = [true, false];
        for (op, which) in ops {
            let before = *boot.data();
            match op {
                Op::MarkNew => {
                    let slot = boot.inactive();
                    if boot.mark_new(slot).is_ok() {
                        confirmed[slot.index()] = false;
                    }
                }
                Op::MarkActive => prop_assert!(boot.mark_new(boot.active()).is_err()),
                Op::Boot => {
                    let slot = boot.on_boot().unwrap();
                    prop_assert!(matches!(
                        boot.state(slot),
                        SlotState::Valid | SlotState::PendingVerify
                    ));
                }
                Op::Confirm => {
                    let pending = boot.state(boot.active()) == SlotState::PendingVerify;
                    boot.confirm().unwrap();
                    if pending {
                        confirmed[boot.active().index()] = true;
                    }
                }
                Op::Rollback => {
                    let slot = boot.rollback().unwrap();
                    prop_assert_eq!(boot.state(slot), SlotState::Valid);
                }
                Op::PowerLoss => {
                    boot.flash_mut().set_write_budget(Some(0));
                    step(&mut boot, which);
                    boot.flash_mut().set_write_budget(None);
                    prop_assert_eq!(*boot.data(), before);
                }
                Op::Torn => {
                    step(&mut boot, which);
                    let after = *boot.data();
                    if after.seq != before.seq {
                        // The record just written is in sector `seq % 2`: tear it.
                        let mut flash = boot.into_inner();
                        let at = OTADATA as usize + (after.seq as usize % 2) * SECTOR;
                        flash.bytes_mut()[at + 6] ^= 0x10;
                        boot = Boot::load(flash, OTADATA).unwrap();
                        prop_assert_eq!(*boot.data(), before);
                    }
                }
                Op::Reload => {}
            }
            // What is stored is what is in memory.
            let flash = boot.into_inner();
            boot = Boot::load(flash, OTADATA).unwrap();
            let now = *boot.data();
            prop_assert!(now.slots.contains(&SlotState::Valid), "{now:?}");
            for slot in [Slot::A, Slot::B] {
                if now.state(slot) == SlotState::Valid {
                    prop_assert!(confirmed[slot.index()], "{slot:?} valid unconfirmed: {now:?}");
                }
            }
        }
    }
}
