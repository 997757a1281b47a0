//! The original OTA exchange (`compat.md` "OTA over MQTT") against a strict in-memory
//! flash: the full exchange byte for byte, every bad input of issue 3 §6 that applies to
//! it, and property tests over random command sequences.

use base64::Engine;
use md5::{Digest, Md5};
use mqttmesh_core::ota::compat::{Counters, Outcome, Receiver, Refusal, MAX_CHUNK_BASE64};
use mqttmesh_core::ota::mem::{MemFlash, SECTOR};
use mqttmesh_core::ota::Area;
use proptest::prelude::*;

type Flash = MemFlash<{ 16 * SECTOR }>;
/// The update slot: 8 sectors in the middle of the flash.
const SLOT_BASE: usize = 4 * SECTOR;
const SLOT_SIZE: usize = 8 * SECTOR;
/// What the original upload script sends per chunk.
const CHUNK: usize = 768;
/// Each clock reading advances this many microseconds.
const TICK: u64 = 1234;

struct Rig {
    rx: Receiver,
    area: Area<Flash>,
    clock: u64,
}

type Replies = Vec<(String, Vec<u8>)>;

impl Rig {
    fn new() -> Rig {
        Rig {
            rx: Receiver::new(),
            area: Area::new(Flash::new(), SLOT_BASE as u32, SLOT_SIZE as u32).unwrap(),
            clock: 0,
        }
    }

    fn send(&mut self, command: &str, payload: &[u8]) -> (Replies, Result<Outcome, Refusal>) {
        let mut replies = Vec::new();
        let clock = &mut self.clock;
        let result = self.rx.handle(
            &mut self.area,
            command,
            payload,
            &mut || {
                *clock += TICK;
                *clock
            },
            &mut |r| replies.push((r.subtopic.as_str().to_owned(), r.payload.to_vec())),
        );
        (replies, result)
    }

    /// Sends and expects exactly one reply (an answered refusal, as `MD5 Failed`, too).
    fn ask(&mut self, command: &str, payload: &[u8]) -> (String, String) {
        let (replies, result) = self.send(command, payload);
        let answered_refusal = matches!(result, Err(Refusal::Incomplete | Refusal::NotStarted));
        assert!(result.is_ok() || answered_refusal, "{command}: {result:?}");
        assert_eq!(replies.len(), 1, "{command}: {replies:?}");
        let (topic, payload) = &replies[0];
        (topic.clone(), String::from_utf8(payload.clone()).unwrap())
    }

    /// Sends and expects a refusal with no reply.
    fn refused(&mut self, command: &str, payload: &[u8]) -> Refusal {
        let (replies, result) = self.send(command, payload);
        assert!(replies.is_empty(), "{command}: {replies:?}");
        result.expect_err("refused")
    }

    fn start(&mut self, image: &[u8]) -> (String, String) {
        self.ask("start", start_payload(image).as_bytes())
    }

    fn chunk(&mut self, offset: usize, data: &[u8]) -> (String, String) {
        self.ask(&offset.to_string(), b64(data).as_bytes())
    }

    fn slot(&mut self) -> &[u8] {
        &self.area.flash_mut().bytes()[SLOT_BASE..SLOT_BASE + SLOT_SIZE]
    }
}

/// Base64 (the crate is built without alloc, so through `encode_slice`).
fn b64(data: &[u8]) -> String {
    let mut buf = vec![0u8; data.len().div_ceil(3) * 4];
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut buf)
        .unwrap();
    buf.truncate(n);
    String::from_utf8(buf).unwrap()
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn start_payload(image: &[u8]) -> String {
    format!("md5:{},len:{}", b64(&Md5::digest(image)), image.len())
}

/// Seeded pseudo-random bytes (xorshift64*).
fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Sends every chunk of `image` in order, checking each answer.
fn send_image(rig: &mut Rig, image: &[u8]) {
    for (i, chunk) in image.chunks(CHUNK).enumerate() {
        let offset = i * CHUNK;
        let (topic, payload) = rig.chunk(offset, chunk);
        assert_eq!(topic, format!("ota/md5/{offset:x}"));
        assert_eq!(payload, md5_hex(chunk));
    }
}

#[test]
fn full_exchange_installs_exact_image() {
    let img = image(10 * 1024, 7);
    let mut rig = Rig::new();
    assert_eq!(rig.start(&img), ("ota/erase".to_owned(), TICK.to_string()));
    assert_eq!(rig.area.flash_mut().erases(), 1);
    send_image(&mut rig, &img);
    // One byte-exact look at a reply in the middle: 768 * 3 = 0x900.
    assert_eq!(rig.chunk(2304, &img[2304..3072]).0, "ota/md5/900");
    assert_eq!(
        rig.ask("check", b""),
        ("ota/check".to_owned(), "MD5 Passed".to_owned())
    );
    let (replies, result) = rig.send("flash", b"");
    assert!(replies.is_empty());
    assert_eq!(result, Ok(Outcome::Install { len: 10 * 1024 }));
    assert_eq!(&rig.slot()[..img.len()], &img[..]);
    assert!(rig.slot()[img.len()..].iter().all(|&b| b == 0xFF));
    // Nothing outside the slot was touched.
    let flash = rig.area.into_inner();
    assert!(flash.bytes()[..SLOT_BASE].iter().all(|&b| b == 0xFF));
    assert!(flash.bytes()[SLOT_BASE + SLOT_SIZE..]
        .iter()
        .all(|&b| b == 0xFF));
}

#[test]
fn check_with_text_answers_its_md5() {
    let mut rig = Rig::new();
    assert_eq!(
        rig.ask("check", b"hello"),
        (
            "ota/check".to_owned(),
            "5d41402abc4b2a76b9719d911017c592".to_owned()
        )
    );
}

#[test]
fn erase_covers_only_the_sectors_for_len() {
    let mut rig = Rig::new();
    rig.start(&image(SECTOR + 1, 1));
    // Two sectors erased in one call; the rest of the slot untouched (still erased
    // here, so look at the erase count and a write outside len being refused).
    assert_eq!(rig.area.flash_mut().erases(), 1);
    assert_eq!(
        rig.refused(&(SECTOR + 1).to_string(), b64(&[1]).as_bytes()),
        Refusal::OutOfRange
    );
}

#[test]
fn start_with_len_zero_or_too_large_is_ignored() {
    let mut rig = Rig::new();
    let md5 = b64(&[0u8; 16]);
    for len in [
        "0",
        &(SLOT_SIZE + 1).to_string(),
        "4294967296",
        "99999999999999999999",
    ] {
        let payload = format!("md5:{md5},len:{len}");
        assert_eq!(
            rig.refused("start", payload.as_bytes()),
            Refusal::BadLength,
            "{len}"
        );
    }
    assert_eq!(rig.rx.announced(), None);
    assert_eq!(rig.area.flash_mut().erases(), 0);
    // The whole slot is fine.
    let payload = format!("md5:{md5},len:{SLOT_SIZE}");
    assert_eq!(rig.ask("start", payload.as_bytes()).0, "ota/erase");
    assert_eq!(rig.rx.counters().bad_length, 4);
}

#[test]
fn malformed_start_is_ignored_and_keeps_a_running_transfer() {
    let img = image(2000, 3);
    let mut rig = Rig::new();
    rig.start(&img);
    let good = b64(&Md5::digest(&img));
    let short = b64(&[0u8; 15]);
    let long = b64(&[0u8; 17]);
    let bad: Vec<String> = vec![
        String::new(),
        "md5:".into(),
        format!("md5:{good}"),
        "len:2000".into(),
        format!("md5:{short},len:2000"),
        format!("md5:{long},len:2000"),
        format!("md5:{},len:2000", &good[..22]),
        format!("md5:{good}!,len:2000"),
        format!("md5:{good},len:"),
        format!("md5:{good},len:-1"),
        format!("md5:{good},len:+5"),
        format!("md5:{good},len: 5"),
        format!("md5:{good},len:5,x:1"),
        format!("md5:{good},md5:{good}"),
        format!("md5:{good},len:5,len:5"),
        format!("MD5:{good},len:5"),
        format!("md5:{good};len:5"),
    ];
    for payload in &bad {
        assert_eq!(
            rig.refused("start", payload.as_bytes()),
            Refusal::MalformedStart,
            "{payload}"
        );
    }
    assert_eq!(
        rig.refused("start", &[0xFF, 0xFE, b',']),
        Refusal::MalformedStart
    );
    assert_eq!(rig.rx.counters().malformed_start, bad.len() as u32 + 1);
    // Fields in the other order are fine.
    let swapped = format!("len:{},md5:{good}", img.len());
    assert_eq!(rig.ask("start", swapped.as_bytes()).0, "ota/erase");
    send_image(&mut rig, &img);
    assert_eq!(rig.ask("check", b"").1, "MD5 Passed");
}

#[test]
fn chunks_outside_the_image_are_refused() {
    let img = image(3000, 5);
    let mut rig = Rig::new();
    rig.start(&img);
    let one = b64(&[0]);
    for offset in [
        "3000".to_owned(),
        SLOT_SIZE.to_string(),
        (SLOT_SIZE + 100).to_string(),
        u32::MAX.to_string(),
        "4294967296".into(),
        "184467440737095516160".into(),
    ] {
        assert_eq!(
            rig.refused(&offset, one.as_bytes()),
            Refusal::OutOfRange,
            "{offset}"
        );
    }
    // A chunk running past len.
    assert_eq!(
        rig.refused("2999", b64(&[0, 0]).as_bytes()),
        Refusal::OutOfRange
    );
    assert_eq!(
        rig.refused("2305", b64(&img[2304..]).as_bytes()),
        Refusal::OutOfRange
    );
    assert_eq!(rig.rx.counters().out_of_range, 8);
    assert!(rig.slot().iter().all(|&b| b == 0xFF));
    // The last byte itself is fine.
    assert_eq!(rig.chunk(2999, &img[2999..]).0, "ota/md5/bb7");
}

#[test]
fn bad_base64_and_oversized_chunks_are_refused() {
    let img = image(3000, 9);
    let mut rig = Rig::new();
    rig.start(&img);
    for payload in [
        &b"AAA"[..],
        b"A===",
        b"AA=A",
        b"!!!!",
        b"AAAA\n",
        b" AAAA",
        &[0xC3, 0x28, 0, 0],
    ] {
        assert_eq!(rig.refused("0", payload), Refusal::BadBase64, "{payload:?}");
    }
    // 1028 characters: one group too many, refused before decoding.
    let big = b64(&img[..771]);
    assert_eq!(big.len(), MAX_CHUNK_BASE64 + 4);
    assert_eq!(rig.refused("0", big.as_bytes()), Refusal::ChunkTooLarge);
    assert_eq!(rig.refused("0", &[b'A'; 5000]), Refusal::ChunkTooLarge);
    // Exactly 1024 characters (768 bytes) is the limit and fine.
    assert_eq!(b64(&img[..768]).len(), MAX_CHUNK_BASE64);
    send_image(&mut rig, &img);
    assert_eq!(rig.ask("check", b"").1, "MD5 Passed");
    let c = rig.rx.counters();
    assert_eq!((c.bad_base64, c.chunk_too_large, c.total()), (7, 2, 9));
}

#[test]
fn duplicate_chunk_is_harmless() {
    let img = image(3000, 11);
    let mut rig = Rig::new();
    rig.start(&img);
    send_image(&mut rig, &img);
    let writes = rig.area.flash_mut().writes();
    // A resend after a lost answer: answered again, nothing rewritten.
    assert_eq!(rig.chunk(768, &img[768..1536]).1, md5_hex(&img[768..1536]));
    // A part of what is there, at an unaligned place, likewise.
    assert_eq!(rig.chunk(5, &img[5..10]).1, md5_hex(&img[5..10]));
    assert_eq!(rig.area.flash_mut().writes(), writes);
    assert_eq!(rig.ask("check", b"").1, "MD5 Passed");
}

#[test]
fn conflicting_overlap_is_refused_and_slot_unchanged() {
    let img = image(3000, 13);
    let mut rig = Rig::new();
    rig.start(&img);
    send_image(&mut rig, &img[..1536]);
    let mut other = img[100..800].to_vec();
    other[400] ^= 1;
    assert_eq!(rig.refused("100", b64(&other).as_bytes()), Refusal::Overlap);
    // Overlapping into the erased part, with a wrong byte in the written part.
    assert_eq!(
        rig.refused("1500", b64(&[0; 100]).as_bytes()),
        Refusal::Overlap
    );
    assert_eq!(rig.rx.counters().overlap, 2);
    // An overlap that agrees with the written bytes and extends into erased flash is fine.
    assert_eq!(rig.chunk(1500, &img[1500..1600]).0, "ota/md5/5dc");
    send_image(&mut rig, &img);
    assert_eq!(rig.ask("check", b"").1, "MD5 Passed");
}

#[test]
fn overlap_hidden_by_erased_looking_bytes_fails_the_check() {
    // Bytes 100..200 of the image are 0xFF, indistinguishable from erased flash.
    let mut img = image(2000, 17);
    img[100..200].fill(0xFF);
    let mut rig = Rig::new();
    rig.start(&img);
    send_image(&mut rig, &img);
    assert_eq!(rig.chunk(100, &[0u8; 100]).0, "ota/md5/64");
    assert_eq!(rig.ask("check", b"").1, "MD5 Failed");
    assert_eq!(
        rig.ask("flash", b""),
        ("ota/flash".to_owned(), "Failed".to_owned())
    );
}

#[test]
fn unknown_commands_are_refused() {
    let mut rig = Rig::new();
    rig.start(&image(100, 1));
    for command in [
        "", "restart", "Start", "START", "12a", "-5", "+5", " 5", "5 ", "0x10", "check/", "ota",
        "1.5",
    ] {
        assert_eq!(
            rig.refused(command, b"AAAA"),
            Refusal::UnknownCommand,
            "{command:?}"
        );
    }
    assert_eq!(rig.rx.counters().unknown_command, 13);
    assert!(rig.rx.announced().is_some());
}

#[test]
fn nothing_before_start() {
    let mut rig = Rig::new();
    assert_eq!(
        rig.refused("0", b64(&[1, 2, 3]).as_bytes()),
        Refusal::NotStarted
    );
    assert_eq!(rig.ask("check", b"").1, "MD5 Failed");
    let (replies, result) = rig.send("flash", b"");
    assert_eq!(replies, vec![("ota/flash".to_owned(), b"Failed".to_vec())]);
    assert_eq!(result, Err(Refusal::NotStarted));
    assert_eq!(rig.rx.counters().not_started, 3);
    assert_eq!(rig.area.flash_mut().writes(), 0);
}

#[test]
fn flash_without_complete_image_fails() {
    let img = image(5000, 19);
    let mut rig = Rig::new();
    rig.start(&img);
    send_image(&mut rig, &img[..3840]);
    let (replies, result) = rig.send("flash", b"");
    assert_eq!(replies, vec![("ota/flash".to_owned(), b"Failed".to_vec())]);
    assert_eq!(result, Err(Refusal::Incomplete));
    // No need for an explicit check: flash verifies by itself once complete.
    send_image(&mut rig, &img);
    assert_eq!(rig.send("flash", b"").1, Ok(Outcome::Install { len: 5000 }));
    // The transfer is over: another flash is refused.
    assert_eq!(rig.send("flash", b"").1, Err(Refusal::NotStarted));
}

#[test]
fn interleaved_second_start_restarts_and_never_passes_a_mix() {
    let a = image(4000, 23);
    let b = image(4000, 29);
    let mut rig = Rig::new();
    rig.start(&a);
    send_image(&mut rig, &a[..1536]);
    // A second upload starts: the slot is erased again for it.
    assert_eq!(rig.start(&b).0, "ota/erase");
    assert_eq!(rig.rx.announced().unwrap().len, 4000);
    assert!(rig.slot().iter().all(|&x| x == 0xFF));
    // The first sender carries on: its chunks land in the erased slot...
    let (_, r) = rig.send("1536", b64(&a[1536..2304]).as_bytes());
    assert!(r.is_ok());
    // ... so the second upload's chunk there conflicts and is refused,
    assert_eq!(
        rig.refused("1536", b64(&b[1536..2304]).as_bytes()),
        Refusal::Overlap
    );
    for (i, chunk) in b.chunks(CHUNK).enumerate().filter(|(i, _)| *i != 2) {
        rig.chunk(i * CHUNK, chunk);
    }
    // and neither image passes.
    assert_eq!(rig.ask("check", b"").1, "MD5 Failed");
    assert_eq!(rig.send("flash", b"").1, Err(Refusal::Incomplete));
    // A clean restart of the second upload succeeds.
    rig.start(&b);
    send_image(&mut rig, &b);
    assert_eq!(rig.ask("check", b"").1, "MD5 Passed");
}

#[test]
fn power_loss_during_a_chunk_write_is_a_refusal_not_a_pass() {
    let img = image(3000, 31);
    let mut rig = Rig::new();
    rig.start(&img);
    rig.area.flash_mut().set_write_budget(Some(0));
    assert_eq!(
        rig.refused("0", b64(&img[..768]).as_bytes()),
        Refusal::Flash
    );
    rig.area.flash_mut().set_write_budget(None);
    send_image(&mut rig, &img);
    assert_eq!(rig.ask("check", b"").1, "MD5 Passed");
}

#[test]
fn counters_start_at_zero() {
    assert_eq!(*Receiver::new().counters(), Counters::default());
}

// --- property tests -------------------------------------------------------------

/// The images a random sequence may announce: A, B, or one whose MD5 is made up.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Which {
    A,
    B,
    Bogus,
}

#[derive(Clone, Debug)]
enum Op {
    Start(Which, usize),
    /// Chunk `index` of A or B at its own offset (possibly with one byte flipped).
    Chunk(Which, usize, Option<usize>),
    /// Every chunk of A or B in order, optionally skipping one.
    All(Which, Option<usize>),
    /// Raw command and payload.
    Raw(String, Vec<u8>),
    /// Bytes at an arbitrary offset.
    At(u32, Vec<u8>),
    Check,
    Flash,
}

fn which_all() -> impl Strategy<Value = Which> {
    prop_oneof![Just(Which::A), Just(Which::B)]
}

fn op() -> impl Strategy<Value = Op> {
    let which = prop_oneof![Just(Which::A), Just(Which::B), Just(Which::Bogus)];
    prop_oneof![
        2 => (which.clone(), 0..3usize).prop_map(|(w, l)| Op::Start(w, l)),
        6 => (which, 0..8usize, proptest::option::weighted(0.1, 0..CHUNK))
            .prop_map(|(w, i, f)| Op::Chunk(w, i, f)),
        1 => ("start|check|flash|[0-9]{1,12}|.{0,6}", proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(c, p)| Op::Raw(c, p)),
        1 => (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..800))
            .prop_map(|(o, d)| Op::At(o % 6000, d)),
        2 => (which_all(), proptest::option::weighted(0.2, 0..7usize))
            .prop_map(|(w, skip)| Op::All(w, skip)),
        2 => Just(Op::Check),
        1 => Just(Op::Flash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever arrives, no panic, and `MD5 Passed` or `Install` only when the slot
    /// holds exactly the image the latest accepted `start` announced.
    #[test]
    fn random_sequences_never_pass_a_wrong_image(ops in proptest::collection::vec(op(), 1..60)) {
        let a = image(5000, 41);
        let b = image(5000, 43);
        let mut rig = Rig::new();
        let mut announced: Option<(Which, usize)> = None;
        for op in ops {
            let (replies, result, started) = match &op {
                Op::Start(w, l) => {
                    let len = [5000, 4000, 1][*l];
                    let img = match w { Which::A => &a, _ => &b };
                    let mut payload = start_payload(&img[..len]);
                    if *w == Which::Bogus {
                        payload = format!("md5:{},len:{len}", b64(&[7u8; 16]));
                    }
                    let (r, res) = rig.send("start", payload.as_bytes());
                    (r, res, res.is_ok().then_some((*w, len)))
                }
                Op::Chunk(w, i, flip) => {
                    let img = match w { Which::A => &a, _ => &b };
                    let start = (i * CHUNK).min(img.len());
                    let mut data = img[start..(start + CHUNK).min(img.len())].to_vec();
                    if let Some(f) = flip {
                        if let Some(byte) = data.get_mut(*f) { *byte ^= 0x80; }
                    }
                    let (r, res) = rig.send(&start.to_string(), b64(&data).as_bytes());
                    (r, res, None)
                }
                Op::All(w, skip) => {
                    let img = if *w == Which::A { &a } else { &b };
                    for (i, chunk) in img.chunks(CHUNK).enumerate() {
                        if Some(i) != *skip {
                            let (r, _) = rig.send(&(i * CHUNK).to_string(), b64(chunk).as_bytes());
                            prop_assert!(r.len() <= 1);
                        }
                    }
                    (Vec::new(), Ok(Outcome::Done), None)
                }
                Op::Raw(c, p) => {
                    let (r, res) = rig.send(c, p);
                    (r, res, (c == "start" && res.is_ok()).then_some((Which::Bogus, 0)))
                }
                Op::At(o, d) => {
                    let (r, res) = rig.send(&o.to_string(), b64(d).as_bytes());
                    (r, res, None)
                }
                Op::Check => { let (r, res) = rig.send("check", b""); (r, res, None) }
                Op::Flash => { let (r, res) = rig.send("flash", b""); (r, res, None) }
            };
            if started.is_some() {
                announced = started;
            }
            prop_assert!(replies.len() <= 1);
            let passed = replies.iter().any(|(t, p)| t == "ota/check" && p == b"MD5 Passed");
            let installed = matches!(result, Ok(Outcome::Install { .. }));
            if passed || installed {
                let (w, len) = announced.expect("a pass needs a start");
                prop_assert!(w != Which::Bogus, "passed an image nobody sent: {op:?}");
                let img = if w == Which::A { &a } else { &b };
                prop_assert_eq!(&rig.slot()[..len], &img[..len]);
            }
            if installed {
                announced = None;
            }
        }
    }

    /// Any command with any payload, in any state: no panic, at most one reply, and a
    /// refusal is counted.
    #[test]
    fn arbitrary_input_never_panics(
        cmds in proptest::collection::vec(
            ("start|check|flash|[0-9]{1,11}|\\PC{0,8}", proptest::collection::vec(any::<u8>(), 0..1100)),
            1..20,
        ),
    ) {
        let mut rig = Rig::new();
        rig.start(&image(3000, 47));
        for (c, p) in cmds {
            let before = rig.rx.counters().total();
            let (replies, result) = rig.send(&c, &p);
            prop_assert!(replies.len() <= 1);
            if result.is_err() {
                prop_assert_eq!(rig.rx.counters().total(), before + 1);
            }
        }
    }
}
