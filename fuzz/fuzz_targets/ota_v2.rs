//! Fuzzes OTA v2 (`docs/PROTOCOL.md` "OTA v2"). (a) The input as one wire object: the
//! decoders never panic and what decodes re-encodes to the same bytes (a command to the
//! same text up to hex case and leading zeros). (b) After a settings byte (key or not,
//! downgrades refused or not), an operation sequence against a `v2::Receiver` over a
//! 64 KiB slot (STYLE.md §6): fixture manifests for one image (signed, unsigned,
//! downgrade, other firmware), damaged or fuzzed manifests, valid, tampered or fuzzed
//! chunks, status, flash, abort, garbage, power loss and restart (`Receiver::resume`).
//! No panic, every reply decodes, and an `Outcome::Install` only for a manifest sent
//! that the settings allow and whose `sha256` the slot's first `size` bytes have.

#![no_main]

use std::cmp::Ordering;
use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;
use mqttmesh_core::ota::mem::{MemFlash, SECTOR};
use mqttmesh_core::ota::v2::{self, Command, Manifest, ManifestId, Missing, Outcome, Report};
use mqttmesh_core::ota::v2::{Receiver, Settings, MAX_MANIFEST_LEN, MAX_MISSING_LEN};
use mqttmesh_core::ota::{Area, Reply};
use sha2::{Digest, Sha256};

#[path = "common/input.rs"]
mod input;
use input::Input;

const SLOT: u32 = 16 * SECTOR as u32;
type Flash = MemFlash<{ 16 * SECTOR }>;
const FIRMWARE: u32 = 0x1337;
const VERSION: &str = "1.0";
const CHUNK: u16 = 256;

fuzz_target!(|data: &[u8]| {
    decoders(data);
    if let Some((&flags, ops)) = data.split_first() {
        let key = (flags & 1 != 0).then_some(fixture().key);
        let settings = Settings {
            firmware_id: FIRMWARE,
            version: VERSION.try_into().expect("a short version"),
            public_key: key.map(|k| k.to_bytes()),
            refuse_downgrade: flags & 2 != 0,
        };
        let mut h = Harness {
            rx: Receiver::new(settings).expect("a valid key"),
            key,
            area: Box::new(Area::new(Flash::new(), 0, SLOT).expect("an aligned slot")),
            sent: Vec::new(),
        };
        let mut input = Input { data: ops };
        while !input.data.is_empty() {
            let op = input.byte();
            h.apply(op, &mut input);
        }
    }
});

fn decoders(data: &[u8]) {
    // Room for any of the three (a report is the shortest).
    let mut buf = [0u8; MAX_MANIFEST_LEN + MAX_MISSING_LEN];
    if let Ok(m) = Manifest::decode(data) {
        let n = m.encode(&mut buf).expect("a decoded manifest re-encodes");
        assert_eq!(&buf[..n], data);
    }
    if let Ok(r) = Report::decode(data) {
        let n = r.encode(&mut buf).expect("a decoded report re-encodes");
        assert_eq!(&buf[..n], data);
    }
    if let Ok(m) = Missing::decode(data) {
        let n = m.encode(&mut buf).expect("a decoded window re-encodes");
        assert_eq!(&buf[..n], data);
        assert!(m.iter().all(|i| m.is_missing(i)));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(command) = Command::parse(text) {
        let canonical = command.to_string();
        assert_eq!(Command::parse(&canonical), Some(command));
        if !text.contains("/c/0") || text.ends_with("/c/0") {
            assert_eq!(canonical, text.to_ascii_lowercase());
        }
    }
}

/// One pseudo-random image and manifests for it, signed once per process: signed,
/// unsigned, a downgrade signed and not (both allowing it), and another firmware's.
struct Fixture {
    image: Vec<u8>,
    manifests: [Vec<u8>; 5],
    key: VerifyingKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let key = SigningKey::from_bytes(&[7; 32]);
        let image: Vec<u8> = (0..2900u32)
            .map(|i| (i.wrapping_mul(0x9E37_79B9) >> 24) as u8)
            .collect();
        let manifests = [
            (FIRMWARE, "1.1", true, false),
            (FIRMWARE, "1.1", false, false),
            (FIRMWARE, "0.9", true, true),
            (FIRMWARE, "0.9", false, true),
            (FIRMWARE + 1, "1.2", true, false),
        ]
        .map(|(firmware, version, signed, allow_downgrade)| {
            let mut m = Manifest::new(firmware, version, &image, CHUNK).expect("a valid manifest");
            m.allow_downgrade = allow_downgrade;
            if signed {
                let sign = |msg: &[u8]| Ok::<_, ()>(key.sign(msg).to_bytes());
                m.sign_with(sign).expect("signing cannot fail");
            }
            m.to_bytes().to_vec()
        });
        Fixture {
            image,
            manifests,
            key: key.verifying_key(),
        }
    })
}

struct Harness {
    key: Option<VerifyingKey>,
    rx: Receiver,
    area: Box<Area<Flash>>,
    /// Every manifest sent that decodes, with its ID.
    sent: Vec<(ManifestId, Manifest)>,
}

impl Harness {
    fn apply(&mut self, op: u8, input: &mut Input<'_>) {
        let f = fixture();
        match op % 10 {
            0 => self.send("manifest", &f.manifests[usize::from(input.byte()) % 5]),
            1 => {
                let mut bytes = f.manifests[usize::from(input.byte()) % 5].clone();
                let at = usize::from(input.byte()) % bytes.len();
                bytes[at] ^= input.byte();
                let raw = input.byte() & 1 == 0;
                self.send("manifest", if raw { input.sized() } else { &bytes });
            }
            2 | 3 => {
                let (id, index) = (self.id(input), u32::from(input.byte() % 13));
                let chunk = f.image.chunks(usize::from(CHUNK)).nth(index as usize);
                let mut chunk = chunk.unwrap_or_default().to_vec();
                match (op % 10, chunk.get_mut(usize::from(input.byte()))) {
                    (2, _) => {}
                    (_, Some(b)) => *b ^= 1 << (op >> 5),
                    (_, None) => chunk = input.sized().to_vec(),
                }
                self.send(Command::Chunk { id, index }, &chunk);
            }
            4 => {
                let id = (input.byte() & 1 == 0).then(|| self.id(input));
                let payload = match input.byte() % 3 {
                    0 => Vec::new(),
                    1 => u32::from(input.u16()).to_be_bytes().to_vec(),
                    _ => input.sized().to_vec(),
                };
                self.send(Command::Status { id }, &payload);
            }
            5 => self.send(Command::Flash { id: self.id(input) }, input.sized()),
            6 => self.send(Command::Abort { id: self.id(input) }, input.sized()),
            7 => {
                self.area.flash_mut().set_write_budget(None);
                self.rx = Receiver::resume(self.rx.settings().clone(), &mut self.area)
                    .expect("a valid key");
            }
            8 => {
                let b = input.byte();
                let budget = (b != 0xFF).then_some(u32::from(b % 32));
                self.area.flash_mut().set_write_budget(budget);
            }
            _ => {
                self.send(String::from_utf8_lossy(input.sized()), input.sized());
            }
        }
        let report = self.rx.report();
        assert!(report.received <= report.total);
    }

    /// The upload held, one of the fixture's, or any.
    fn id(&self, input: &mut Input<'_>) -> ManifestId {
        match input.byte() % 4 {
            0 => self.rx.report().held,
            3 => ManifestId(u32::from(input.u16())),
            _ => ManifestId::of(&fixture().manifests[usize::from(input.byte()) % 5]),
        }
    }

    fn send(&mut self, command: impl ToString, payload: &[u8]) {
        let command = &command.to_string();
        if Command::parse(command) == Some(Command::Manifest) {
            if let Ok(m) = Manifest::decode(payload) {
                self.sent.push((ManifestId::of(payload), m));
            }
        }
        let mut replies: Vec<Reply> = Vec::new();
        let mut out = |r| replies.push(r);
        let result = self.rx.handle(&mut self.area, command, payload, &mut out);
        assert!(replies.len() <= 2);
        for r in &replies {
            match r.subtopic.as_str() {
                v2::STATE_SUBTOPIC => drop(Report::decode(&r.payload).expect("a valid report")),
                v2::MISSING_SUBTOPIC => drop(Missing::decode(&r.payload).expect("a valid window")),
                other => panic!("reply on {other}"),
            }
        }
        if let Ok(Outcome::Install { id, len, .. }) = result {
            let hash: [u8; 32] =
                Sha256::digest(&self.area.flash_mut().bytes()[..len as usize]).into();
            let fits = |m: &Manifest| m.size == len && m.sha256 == hash && self.acceptable(m);
            assert!(
                self.sent.iter().any(|(i, m)| *i == id && fits(m)),
                "installs {id} ({len} bytes): no manifest sent that passes the checks has its SHA-256"
            );
        }
    }

    /// Whether the node's settings allow installing `m`.
    fn acceptable(&self, m: &Manifest) -> bool {
        let older = v2::compare_versions(&m.version, VERSION) == Some(Ordering::Less);
        let downgrade_ok = !self.rx.settings().refuse_downgrade
            || !older
            || (m.allow_downgrade && self.key.is_some());
        m.firmware_id == FIRMWARE && downgrade_ok && self.key.is_none_or(|k| m.verify(&k).is_ok())
    }
}
