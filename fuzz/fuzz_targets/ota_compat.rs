//! Operation-sequence fuzzing of the original OTA exchange (`ota::compat`, STYLE.md §6):
//! the input is read as a sequence of commands — `start` for a pseudo-random image or
//! with a fuzzed payload, chunks of that image (some tampered) or fuzzed chunks at
//! fuzzed offsets, `check`, `flash`, unknown commands, and power loss — fed to one
//! `compat::Receiver` over a 16 KiB slot of a `MemFlash`. Invariants: no panic; the
//! receiver holds exactly what the last accepted `start` announced (parsed here
//! independently); an accepted chunk is in flash and answered with its MD5; `ota/check`
//! answers `MD5 Passed`, and `flash` returns `Outcome::Install { len }`, exactly when
//! the first `len` bytes of the slot have the announced MD5; nothing outside the slot
//! is ever written.

#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};
use mqttmesh_core::ota::compat::{Announced, Outcome, Receiver, Refusal};
use mqttmesh_core::ota::mem::{MemFlash, SECTOR};
use mqttmesh_core::ota::{Area, Reply};

#[path = "common/input.rs"]
mod input;
use input::Input;

/// The slot: 4 sectors, with an untouched sector on either side.
const SLOT: u32 = 4 * SECTOR as u32;
type Flash = MemFlash<{ 6 * SECTOR }>;

fuzz_target!(|data: &[u8]| {
    let area = Area::new(Flash::new(), SECTOR as u32, SLOT).expect("an aligned slot");
    let mut h = Harness {
        rx: Receiver::new(),
        area: Box::new(area),
        announced: None,
        image: Vec::new(),
    };
    let mut input = Input { data };
    while !input.data.is_empty() {
        let op = input.byte();
        h.apply(op, &mut input);
    }
    let flash = h.area.flash_mut().bytes();
    let outside = [&flash[..SECTOR], &flash[SECTOR + SLOT as usize..]];
    assert!(outside.iter().all(|s| s.iter().all(|&b| b == 0xFF)));
});

struct Harness {
    rx: Receiver,
    area: Box<Area<Flash>>,
    /// What the last accepted `start` announced, until an install.
    announced: Option<Announced>,
    /// The image of the last accepted generated `start`.
    image: Vec<u8>,
}

impl Harness {
    fn apply(&mut self, op: u8, input: &mut Input<'_>) {
        match op % 8 {
            0 => {
                // A start for a fresh image; sometimes longer than the slot.
                let len = usize::from(input.u16()) % (SLOT as usize + 64);
                let seed = u32::from(input.byte());
                let image: Vec<u8> = (seed..seed + len as u32)
                    .map(|i| (i.wrapping_mul(0x9E37_79B9) >> 24) as u8)
                    .collect();
                let md5 = STANDARD.encode(Md5::digest(&image));
                let payload = match seed & 1 {
                    0 => format!("md5:{md5},len:{len}"),
                    _ => format!("len:{len},md5:{md5}"),
                };
                if self.send("start", payload.as_bytes()).0.is_ok() {
                    self.image = image;
                }
            }
            1 => drop(self.send("start", input.sized())),
            2 => {
                let offset = usize::from(input.u16()) % (self.image.len() + 1);
                let (n, flip) = (usize::from(input.byte()) * 3, input.u16());
                let end = (offset + n).min(self.image.len());
                let mut chunk = self.image[offset..end].to_vec();
                if let Some(b) = chunk.get_mut(usize::from(flip >> 3)) {
                    *b ^= 1 << (flip & 7);
                }
                self.chunk(&offset.to_string(), STANDARD.encode(&chunk).as_bytes());
            }
            3 => {
                let offset = u32::from(input.u16()) << (input.byte() % 17);
                self.chunk(&offset.to_string(), input.sized());
            }
            4 => {
                // Empty: the image check; else a link test answered with the text's MD5.
                let text = if input.byte() & 1 == 0 {
                    &[]
                } else {
                    input.sized()
                };
                let (result, replies) = self.send("check", text);
                let passed = self.announced.is_some_and(|a| self.slot_matches(a));
                let verdict = match (text.is_empty(), passed) {
                    (false, _) => md5_hex(text),
                    (true, true) => "MD5 Passed".into(),
                    (true, false) => "MD5 Failed".into(),
                };
                assert_eq!(result.is_ok(), passed || !text.is_empty());
                assert_eq!(replies[0].payload, verdict.as_bytes());
            }
            5 => {
                let expected = self.announced.filter(|&a| self.slot_matches(a));
                let (result, _) = self.send("flash", input.sized());
                assert_eq!(
                    result.ok(),
                    expected.map(|a| Outcome::Install { len: a.len })
                );
            }
            6 => {
                let command = String::from_utf8_lossy(input.sized()).into_owned();
                drop(self.send(&command, input.sized()));
            }
            _ => {
                let b = input.byte();
                let budget = (b != 0xFF).then_some(u32::from(b % 16));
                self.area.flash_mut().set_write_budget(budget);
            }
        }
    }

    /// A chunk command; an accepted chunk must be in flash and answered with its MD5.
    fn chunk(&mut self, command: &str, payload: &[u8]) {
        let (result, replies) = self.send(command, payload);
        if result.is_ok() {
            let chunk = STANDARD
                .decode(payload)
                .expect("an accepted chunk is base64");
            let offset: usize = command.parse().expect("an accepted offset is decimal");
            assert_eq!(replies[0].subtopic.as_str(), format!("ota/md5/{offset:x}"));
            assert_eq!(replies[0].payload, md5_hex(&chunk).as_bytes());
            let at = SECTOR + offset;
            assert_eq!(&self.area.flash_mut().bytes()[at..at + chunk.len()], chunk);
        }
    }

    /// Hands one command to the receiver and checks what holds after any command.
    fn send(&mut self, command: &str, payload: &[u8]) -> (Result<Outcome, Refusal>, Vec<Reply>) {
        let mut replies = Vec::new();
        let mut out = |r| replies.push(r);
        let result = self
            .rx
            .handle(&mut self.area, command, payload, &mut || 0, &mut out);
        assert!(replies.len() <= 1, "at most one reply per command");
        match (command, &result) {
            ("start", Ok(_)) => {
                let announced = parse_start(payload).expect("an accepted start is well-formed");
                assert!(announced.len > 0 && announced.len <= SLOT);
                self.announced = Some(announced);
            }
            (_, Ok(Outcome::Install { len })) => {
                let a = self
                    .announced
                    .take()
                    .expect("installs only a started image");
                assert_eq!(*len, a.len);
                assert!(self.slot_matches(a), "installs an image with another MD5");
            }
            _ => {}
        }
        assert_eq!(self.rx.announced(), self.announced);
        for r in &replies {
            if r.subtopic == "ota/check" && r.payload == b"MD5 Passed" {
                let a = self.announced.expect("passes only a started image");
                assert!(self.slot_matches(a), "passes an image with another MD5");
            }
        }
        (result, replies)
    }

    /// Whether the first `a.len` bytes of the slot have the MD5 `a.md5`.
    fn slot_matches(&mut self, a: Announced) -> bool {
        let image = &self.area.flash_mut().bytes()[SECTOR..SECTOR + a.len as usize];
        <[u8; 16]>::from(Md5::digest(image)) == a.md5
    }
}

/// What an accepted `start` payload announces, parsed independently of the receiver.
fn parse_start(payload: &[u8]) -> Option<Announced> {
    let (mut md5, mut len) = (None, None);
    for field in std::str::from_utf8(payload).ok()?.split(',') {
        match field.strip_prefix("md5:") {
            Some(b64) => md5 = STANDARD.decode(b64).ok()?.try_into().ok(),
            None => len = field.strip_prefix("len:")?.parse().ok(),
        }
    }
    Some(Announced {
        md5: md5?,
        len: len?,
    })
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
