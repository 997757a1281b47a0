//! OTA v2 (`docs/PROTOCOL.md` "OTA v2") end to end over a strict in-memory flash: the
//! whole exchange with lost chunks, resends and a restart in the middle, and every
//! refusal of issue 3 §6 that applies to it, each answered with a state report and
//! counted, none ever installing an image whose hash differs.

use ed25519_dalek::{Signer, SigningKey};
use mqttmesh_core::ota::mem::{MemFlash, SECTOR};
use mqttmesh_core::ota::v2::{
    self, Command, Manifest, ManifestId, Missing, Outcome, Phase, Reason, Receiver, Report,
    Settings, MAX_WINDOW,
};
use mqttmesh_core::ota::{targets_us, Area};

const IN: &str = "esp8266-in/";
const NODE: &str = "00A1B2";
const FW: u32 = 0x1337;
/// The update slot: 24 sectors (23 for the image, 1 for the progress record).
const SLOT: usize = 24 * SECTOR;
type Flash = MemFlash<SLOT>;

/// A deterministic generator (xorshift64*), seeded per test; the seed is in every
/// failure message.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

fn image(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn settings(key: Option<&SigningKey>) -> Settings {
    Settings {
        firmware_id: FW,
        version: "1.4.0".try_into().unwrap(),
        public_key: key.map(|k| k.verifying_key().to_bytes()),
        refuse_downgrade: true,
    }
}

fn manifest(image: &[u8], version: &str, chunk: u16, key: Option<&SigningKey>) -> Manifest {
    let mut m = Manifest::new(FW, version, image, chunk).unwrap();
    if let Some(key) = key {
        m.sign_with(|msg| Ok::<_, ()>(key.sign(msg).to_bytes()))
            .unwrap();
    }
    m
}

/// One node: a receiver over a slot of its own flash, fed through real topics.
struct Node {
    rx: Receiver,
    area: Area<&'static mut Flash>,
}

/// What one message produced.
#[derive(Debug)]
struct Answer {
    result: Result<Outcome, Reason>,
    state: Option<Report>,
    missing: Option<Vec<u32>>,
}

impl Node {
    fn new(settings: Settings) -> Node {
        let area = Area::new(Box::leak(Box::new(Flash::new())), 0, SLOT as u32).unwrap();
        Node {
            rx: Receiver::new(settings).unwrap(),
            area,
        }
    }

    /// Power cycle: the receiver is gone, the flash stays.
    fn restart(self) -> Node {
        let version = self.rx.settings().version.clone();
        self.restart_running(&version)
    }

    /// Power cycle into an image of `version`.
    fn restart_running(self, version: &str) -> Node {
        let settings = Settings {
            version: version.try_into().unwrap(),
            ..self.rx.settings().clone()
        };
        let mut area = self.area;
        let rx = Receiver::resume(settings, &mut area).unwrap();
        Node { rx, area }
    }

    /// Sends `command` to target `target` through the full topic, as the node would
    /// see it; `None` when the target is not this node.
    fn send_to(&mut self, target: &str, command: Command, payload: &[u8]) -> Option<Answer> {
        let topic = command.topic(IN, target).unwrap();
        let (target, command) = v2::split_topic(IN, &topic).unwrap();
        if !targets_us(target, FW, NODE) {
            return None;
        }
        let mut replies = Vec::new();
        let result = self
            .rx
            .handle(&mut self.area, command, payload, &mut |r| replies.push(r));
        let mut answer = Answer {
            result,
            state: None,
            missing: None,
        };
        for r in &replies {
            match r.subtopic.as_str() {
                v2::STATE_SUBTOPIC => {
                    assert!(
                        answer.state.is_none() && answer.missing.is_none(),
                        "{replies:?}"
                    );
                    answer.state = Some(Report::decode(&r.payload).unwrap());
                }
                v2::MISSING_SUBTOPIC => {
                    assert!(
                        answer.state.is_some() && answer.missing.is_none(),
                        "{replies:?}"
                    );
                    let w = Missing::decode(&r.payload).unwrap();
                    answer.missing = Some(w.iter().collect());
                }
                other => panic!("unexpected reply {other}"),
            }
        }
        Some(answer)
    }

    fn send(&mut self, command: Command, payload: &[u8]) -> Answer {
        self.send_to("0x1337", command, payload).unwrap()
    }

    fn announce(&mut self, m: &Manifest) -> Report {
        let a = self.send(Command::Manifest, &m.to_bytes());
        a.state.unwrap()
    }

    fn chunk(&mut self, m: &Manifest, image: &[u8], index: u32) -> Answer {
        let data = m.chunk(image, index).unwrap();
        self.send(Command::Chunk { id: m.id(), index }, data)
    }

    /// `status`, expecting a state report and, while receiving, a missing window.
    fn status(&mut self, id: ManifestId) -> (Report, Option<Vec<u32>>) {
        let a = self.send(Command::Status { id: Some(id) }, &[]);
        assert_eq!(a.result, Ok(Outcome::Done));
        (a.state.unwrap(), a.missing)
    }

    /// The first `len` bytes of the slot.
    fn slot(&mut self, len: usize) -> Vec<u8> {
        self.area.flash_mut().bytes()[..len].to_vec()
    }
}

fn ok(report: &Report, phase: Phase, id: ManifestId) {
    assert_eq!(report.result, None, "{report:?}");
    assert_eq!((report.phase, report.held), (phase, id), "{report:?}");
}

fn refused(answer: &Answer, reason: Reason) -> Report {
    assert_eq!(answer.result, Err(reason));
    let report = answer.state.clone().expect("a refusal is answered");
    assert_eq!(report.result, Some(reason), "{report:?}");
    report
}

/// Sends every chunk in a random order, losing about one in `lose`; returns the lost.
fn spray(node: &mut Node, m: &Manifest, img: &[u8], rng: &mut Rng, lose: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..m.chunk_count()).collect();
    rng.shuffle(&mut order);
    let mut lost = Vec::new();
    for i in order {
        if lose > 0 && rng.below(lose) == 0 {
            lost.push(i);
            continue;
        }
        let a = node.chunk(m, img, i);
        assert!(a.result.is_ok(), "chunk {i}: {a:?}");
    }
    lost.sort_unstable();
    lost
}

/// The sender's loop: ask for the missing chunks and resend them until verified.
fn converge(node: &mut Node, m: &Manifest, img: &[u8], rng: &mut Rng, lose: u64) -> Report {
    for _round in 0..50 {
        let (report, missing) = node.status(m.id());
        if report.phase == Phase::Verified {
            return report;
        }
        let missing = missing.expect("a window while receiving");
        assert!(!missing.is_empty(), "{report:?}");
        for i in missing {
            if lose > 0 && rng.below(lose) == 0 {
                continue;
            }
            node.chunk(m, img, i).result.unwrap();
        }
    }
    panic!("did not converge");
}

#[test]
fn lossy_signed_upload_resends_only_missing_chunks_and_installs() {
    let seed = 0x5eed_0001;
    let key = signing_key();
    let mut rng = Rng(seed);
    let img = image(70_000, seed);
    let m = manifest(&img, "1.5.0", 1024, Some(&key));
    let mut node = Node::new(settings(Some(&key)));

    let report = node.announce(&m);
    ok(&report, Phase::Receiving, m.id());
    assert_eq!(
        (report.received, report.total, report.subject),
        (0, 69, m.id())
    );
    assert_eq!(report.version, "1.5.0");

    let lost = spray(&mut node, &m, &img, &mut rng, 5);
    assert!(!lost.is_empty(), "seed {seed:#x}");
    let (report, missing) = node.status(m.id());
    ok(&report, Phase::Receiving, m.id());
    assert_eq!(report.received as usize, 69 - lost.len());
    assert_eq!(missing.as_ref(), Some(&lost), "seed {seed:#x}");

    let (last, rest) = lost.split_last().unwrap();
    for &i in rest {
        let a = node.chunk(&m, &img, i);
        assert_eq!(
            (a.result, a.state),
            (Ok(Outcome::Done), None),
            "accepted chunks are silent"
        );
    }
    let a = node.chunk(&m, &img, *last);
    ok(a.state.as_ref().unwrap(), Phase::Verified, m.id());
    let (report, missing) = node.status(m.id());
    assert_eq!(Some(report), a.state, "verified: no window");
    assert_eq!(missing, None);

    let a = node.send(Command::Flash { id: m.id() }, &[]);
    let version = "1.5.0".try_into().unwrap();
    assert_eq!(
        a.result,
        Ok(Outcome::Install {
            id: m.id(),
            len: 70_000,
            version
        })
    );
    ok(a.state.as_ref().unwrap(), Phase::Installing, m.id());
    assert_eq!(node.slot(img.len()), img);
    let stats = node.rx.stats();
    assert_eq!((stats.accepted, stats.chunks, stats.duplicates), (1, 69, 0));
    assert_eq!(stats.refused.iter().sum::<u32>(), 0);

    // After the restart into the new image the upload is over: the slot is idle, and
    // the node reports the version it runs.
    let mut node = node.restart_running("1.5.0");
    let report = node.send(Command::Status { id: None }, &[]).state.unwrap();
    assert_eq!(
        (report.phase, report.version.as_str()),
        (Phase::Idle, "1.5.0")
    );
    let a = node.send(Command::Flash { id: m.id() }, &[]);
    refused(&a, Reason::UnknownManifest);
}

#[test]
fn restart_in_the_middle_resumes_from_flash() {
    let seed = 0x5eed_0002;
    let mut rng = Rng(seed);
    let img = image(50_000, seed);
    let m = manifest(&img, "1.4.1", 512, None);
    let mut node = Node::new(settings(None));
    node.announce(&m);
    let mut order: Vec<u32> = (0..m.chunk_count()).collect();
    rng.shuffle(&mut order);
    let (first, second) = order.split_at(order.len() / 2);
    for &i in first {
        node.chunk(&m, &img, i).result.unwrap();
    }

    let mut node = node.restart();
    let report = node.rx.report();
    ok(&report, Phase::Receiving, m.id());
    assert_eq!(report.received as usize, first.len());
    // A restarted sender announces again: same upload, progress kept, nothing erased.
    let erases = node.area.flash_mut().erases();
    let report = node.announce(&m);
    ok(&report, Phase::Receiving, m.id());
    assert_eq!(report.received as usize, first.len());
    assert_eq!(node.area.flash_mut().erases(), erases);
    let (_, missing) = node.status(m.id());
    let mut expected = second.to_vec();
    expected.sort_unstable();
    assert_eq!(missing, Some(expected));

    // Chunks already held are duplicates, harmless.
    node.chunk(&m, &img, first[0]).result.unwrap();
    assert_eq!(node.rx.stats().duplicates, 1);
    converge(&mut node, &m, &img, &mut rng, 0);
    // A restart between verification and flash keeps the verdict.
    let mut node = node.restart();
    ok(&node.rx.report(), Phase::Verified, m.id());
    let a = node.send(Command::Flash { id: m.id() }, &[]);
    assert!(
        matches!(a.result, Ok(Outcome::Install { len: 50_000, .. })),
        "{a:?}"
    );
    assert_eq!(node.slot(img.len()), img);
}

#[test]
fn power_loss_during_chunk_writes_is_recovered_by_resume() {
    let seed = 0x5eed_0003;
    let mut rng = Rng(seed);
    let img = image(30_000, seed);
    let m = manifest(&img, "2.0", 256, None);
    let mut node = Node::new(settings(None));
    node.announce(&m);
    node.area.flash_mut().set_write_budget(Some(41));
    let mut order: Vec<u32> = (0..m.chunk_count()).collect();
    rng.shuffle(&mut order);
    let mut failed = 0;
    for &i in &order {
        if node.chunk(&m, &img, i).result == Err(Reason::Flash) {
            failed += 1;
        }
    }
    assert!(failed > 0);
    assert!(node.rx.stats().refused(Reason::Flash) as usize >= failed);
    node.area.flash_mut().set_write_budget(None);
    let mut node = node.restart();
    converge(&mut node, &m, &img, &mut rng, 0);
    let a = node.send(Command::Flash { id: m.id() }, &[]);
    assert!(matches!(a.result, Ok(Outcome::Install { .. })), "{a:?}");
    assert_eq!(node.slot(img.len()), img);
}

#[test]
fn windows_cover_images_with_more_chunks_than_one_window() {
    // 64-byte chunks: 4,688 chunks, more than one 4,096-chunk window.
    const BIG: usize = 76 * SECTOR;
    let seed = 0x5eed_0004;
    let mut rng = Rng(seed);
    let img = image(300_000, seed);
    let m = manifest(&img, "1.4.0", 64, None);
    assert!(m.chunk_count() > u32::from(MAX_WINDOW));
    let area = Area::new(Box::leak(Box::new(MemFlash::<BIG>::new())), 0, BIG as u32).unwrap();
    let mut rx = Receiver::new(settings(None)).unwrap();
    let mut area = area;
    let mut send = |rx: &mut Receiver, cmd: Command, payload: &[u8]| {
        let mut replies = Vec::new();
        let r = rx.handle(&mut area, &cmd.to_string(), payload, &mut |r| {
            replies.push(r)
        });
        (r, replies)
    };
    send(&mut rx, Command::Manifest, &m.to_bytes()).0.unwrap();
    for (i, data) in m.chunks(&img) {
        if rng.below(3) != 0 {
            send(
                &mut rx,
                Command::Chunk {
                    id: m.id(),
                    index: i,
                },
                data,
            )
            .0
            .unwrap();
        }
    }
    let mut rounds = 0;
    let mut from = 0u32;
    loop {
        rounds += 1;
        assert!(rounds < 20, "seed {seed:#x}");
        let (_, replies) = send(
            &mut rx,
            Command::Status { id: Some(m.id()) },
            &from.to_be_bytes(),
        );
        let report = Report::decode(&replies[0].payload).unwrap();
        if report.phase == Phase::Verified {
            break;
        }
        let window = Missing::decode(&replies[1].payload).unwrap();
        assert!(window.count() <= MAX_WINDOW);
        let missing: Vec<u32> = window.iter().collect();
        assert_eq!(missing.first(), Some(&window.first()));
        for i in missing {
            let data = m.chunk(&img, i).unwrap();
            send(
                &mut rx,
                Command::Chunk {
                    id: m.id(),
                    index: i,
                },
                data,
            )
            .0
            .unwrap();
        }
        from = window.first() + u32::from(window.count());
    }
    assert!(rounds >= 2);
    assert_eq!(rx.report().received, m.chunk_count());
}

#[test]
fn refused_manifests_are_answered_and_counted() {
    let key = signing_key();
    let img = image(20_000, 9);
    let mut node = Node::new(settings(Some(&key)));

    let unsigned = manifest(&img, "1.5", 1024, None);
    refused(
        &node.send(Command::Manifest, &unsigned.to_bytes()),
        Reason::Unsigned,
    );

    let mut forged = manifest(&img, "1.5", 1024, Some(&key));
    forged.signature.as_mut().unwrap()[10] ^= 1;
    refused(
        &node.send(Command::Manifest, &forged.to_bytes()),
        Reason::BadSignature,
    );

    let other_key = SigningKey::from_bytes(&[8; 32]);
    let foreign = manifest(&img, "1.5", 1024, Some(&other_key));
    refused(
        &node.send(Command::Manifest, &foreign.to_bytes()),
        Reason::BadSignature,
    );

    // A signed manifest whose fields were changed after signing.
    let mut altered = manifest(&img, "1.5", 1024, Some(&key));
    altered.size -= 1;
    refused(
        &node.send(Command::Manifest, &altered.to_bytes()),
        Reason::BadSignature,
    );

    let mut other_fw = Manifest::new(0x1338, "1.5", &img, 1024).unwrap();
    other_fw
        .sign_with(|msg| Ok::<_, ()>(key.sign(msg).to_bytes()))
        .unwrap();
    refused(
        &node.send(Command::Manifest, &other_fw.to_bytes()),
        Reason::WrongFirmware,
    );

    let older = manifest(&img, "1.3.9", 1024, Some(&key));
    refused(
        &node.send(Command::Manifest, &older.to_bytes()),
        Reason::Downgrade,
    );

    let huge = image(23 * SECTOR + 1, 3);
    let too_large = manifest(&huge, "1.5", 1024, Some(&key));
    refused(
        &node.send(Command::Manifest, &too_large.to_bytes()),
        Reason::TooLarge,
    );

    let mut bytes = unsigned.to_bytes();
    bytes[4] = 2;
    refused(&node.send(Command::Manifest, &bytes), Reason::Unsupported);
    refused(
        &node.send(Command::Manifest, b"MMO2\x01\x00short"),
        Reason::Malformed,
    );
    refused(&node.send(Command::Manifest, &[]), Reason::Malformed);

    let stats = node.rx.stats().clone();
    assert_eq!(stats.accepted, 0);
    assert_eq!(stats.refused(Reason::Unsigned), 1);
    assert_eq!(stats.refused(Reason::BadSignature), 3);
    assert_eq!(stats.refused(Reason::WrongFirmware), 1);
    assert_eq!(stats.refused(Reason::Downgrade), 1);
    assert_eq!(stats.refused(Reason::TooLarge), 1);
    assert_eq!(stats.refused(Reason::Unsupported), 1);
    assert_eq!(stats.refused(Reason::Malformed), 2);
    assert_eq!(node.rx.report().phase, Phase::Idle);
    assert_eq!(
        node.area.flash_mut().erases(),
        0,
        "nothing refused touched the flash"
    );

    // The key holder may allow a downgrade; the biggest image that fits is fine.
    let mut rollback = manifest(&img, "1.3.9", 1024, None);
    rollback.allow_downgrade = true;
    rollback
        .sign_with(|msg| Ok::<_, ()>(key.sign(msg).to_bytes()))
        .unwrap();
    ok(&node.announce(&rollback), Phase::Receiving, rollback.id());
}

#[test]
fn downgrade_flag_without_a_key_does_not_override_the_node() {
    let img = image(5_000, 4);
    let mut node = Node::new(settings(None));
    let mut m = manifest(&img, "v1.3", 1024, None);
    m.allow_downgrade = true;
    refused(
        &node.send(Command::Manifest, &m.to_bytes()),
        Reason::Downgrade,
    );
    // Equal or incomparable versions are no downgrade.
    ok(
        &node.announce(&manifest(&img, "1.4", 1024, None)),
        Phase::Receiving,
        manifest(&img, "1.4", 1024, None).id(),
    );
    let mut other = Node::new(settings(None));
    ok(
        &other.announce(&manifest(&img, "nightly", 1024, None)),
        Phase::Receiving,
        manifest(&img, "nightly", 1024, None).id(),
    );
    let mut lenient = Node::new(Settings {
        refuse_downgrade: false,
        ..settings(None)
    });
    let old = manifest(&img, "0.1", 1024, None);
    ok(&lenient.announce(&old), Phase::Receiving, old.id());
}

#[test]
fn tampered_chunk_is_never_installed() {
    let key = signing_key();
    let img = image(10_000, 5);
    let m = manifest(&img, "1.5", 1024, Some(&key));
    let mut node = Node::new(settings(Some(&key)));
    node.announce(&m);
    for i in 0..m.chunk_count() - 1 {
        let mut data = m.chunk(&img, i).unwrap().to_vec();
        if i == 3 {
            data[100] ^= 0x40;
        }
        node.send(
            Command::Chunk {
                id: m.id(),
                index: i,
            },
            &data,
        )
        .result
        .unwrap();
    }
    // The genuine chunk 3 afterwards changes nothing: the first write wins.
    node.chunk(&m, &img, 3).result.unwrap();
    let flash_early = node.send(Command::Flash { id: m.id() }, &[]);
    refused(&flash_early, Reason::NotComplete);
    let a = node.chunk(&m, &img, m.chunk_count() - 1);
    let report = refused(&a, Reason::HashMismatch);
    assert_eq!((report.phase, report.subject), (Phase::Idle, m.id()));
    let a = node.send(Command::Flash { id: m.id() }, &[]);
    refused(&a, Reason::UnknownManifest);
    assert_eq!(node.rx.stats().refused(Reason::HashMismatch), 1);
    // The dead record stays dead after a restart; a fresh announcement starts over.
    let mut node = node.restart();
    assert_eq!(node.rx.report().phase, Phase::Idle);
    let report = node.announce(&m);
    assert_eq!((report.phase, report.received), (Phase::Receiving, 0));
    for i in 0..m.chunk_count() {
        node.chunk(&m, &img, i).result.unwrap();
    }
    let a = node.send(Command::Flash { id: m.id() }, &[]);
    assert!(matches!(a.result, Ok(Outcome::Install { .. })));
}

#[test]
fn slot_tampered_after_verification_is_caught_at_flash() {
    let img = image(8_000, 6);
    let m = manifest(&img, "1.5", 1024, None);
    let mut node = Node::new(settings(None));
    node.announce(&m);
    for i in 0..m.chunk_count() {
        node.chunk(&m, &img, i).result.unwrap();
    }
    ok(&node.rx.report(), Phase::Verified, m.id());
    node.area.flash_mut().bytes_mut()[5] ^= 0x01;
    let a = node.send(Command::Flash { id: m.id() }, &[]);
    refused(&a, Reason::HashMismatch);
    assert_eq!(node.restart().rx.report().phase, Phase::Idle);
}

#[test]
fn interleaved_second_upload_is_refused_and_does_not_corrupt_the_first() {
    let first_img = image(12_000, 7);
    let second_img = image(12_000, 8);
    let first = manifest(&first_img, "1.5", 1024, None);
    let second = manifest(&second_img, "1.6", 1024, None);
    let mut node = Node::new(settings(None));
    node.announce(&first);
    for i in 0..6 {
        node.chunk(&first, &first_img, i).result.unwrap();
    }
    let a = node.send(Command::Manifest, &second.to_bytes());
    let report = refused(&a, Reason::Busy);
    assert_eq!((report.held, report.subject), (first.id(), second.id()));
    // The second sender's chunks, status, flash and abort name its own upload.
    let a = node.chunk(&second, &second_img, 7);
    refused(&a, Reason::UnknownManifest);
    let a = node.chunk(&second, &second_img, 8);
    assert_eq!(
        (a.result, a.state.is_none()),
        (Err(Reason::UnknownManifest), true),
        "one answer per run"
    );
    refused(
        &node.send(
            Command::Status {
                id: Some(second.id()),
            },
            &[],
        ),
        Reason::UnknownManifest,
    );
    refused(
        &node.send(Command::Flash { id: second.id() }, &[]),
        Reason::UnknownManifest,
    );
    refused(
        &node.send(Command::Abort { id: second.id() }, &[]),
        Reason::UnknownManifest,
    );
    assert_eq!(node.rx.stats().refused(Reason::UnknownManifest), 5);
    for i in 6..first.chunk_count() {
        node.chunk(&first, &first_img, i).result.unwrap();
    }
    let a = node.send(Command::Flash { id: first.id() }, &[]);
    assert!(matches!(a.result, Ok(Outcome::Install { .. })), "{a:?}");
    assert_eq!(node.slot(first_img.len()), first_img);

    // Abort frees the node for another upload.
    let mut node = Node::new(settings(None));
    node.announce(&first);
    let a = node.send(Command::Abort { id: first.id() }, &[]);
    assert_eq!(a.state.unwrap().phase, Phase::Idle);
    ok(&node.announce(&second), Phase::Receiving, second.id());
    assert_eq!(node.restart().rx.report().held, second.id());
}

#[test]
fn bad_chunks_and_commands_are_refused() {
    let img = image(3_000, 10);
    let m = manifest(&img, "1.5", 1024, None);
    let mut node = Node::new(settings(None));
    refused(&node.chunk(&m, &img, 0), Reason::UnknownManifest);
    node.announce(&m);
    let id = m.id();
    refused(
        &node.send(Command::Chunk { id, index: 0 }, &[0; 1023]),
        Reason::BadChunk,
    );
    let a = node.send(Command::Chunk { id, index: 2 }, &[0; 1024]);
    assert_eq!(
        (a.result, a.state.is_none()),
        (Err(Reason::BadChunk), true),
        "quiet after the first"
    );
    refused(
        &node.send(Command::Status { id: Some(id) }, &[1, 2, 3]),
        Reason::Malformed,
    );
    refused(
        &node.send(Command::Chunk { id, index: 3 }, &[0; 952]),
        Reason::BadChunk,
    );
    refused(&node.send(Command::Flash { id }, b"now"), Reason::Malformed);
    refused(&node.send(Command::Abort { id }, b"x"), Reason::Malformed);
    let mut replies = Vec::new();
    let r = node
        .rx
        .handle(&mut node.area, "reboot", &[], &mut |r| replies.push(r));
    assert_eq!(r, Err(Reason::Malformed));
    assert_eq!(
        Report::decode(&replies[0].payload).unwrap().result,
        Some(Reason::Malformed)
    );
    // The last chunk is short: 3000 - 2048 = 952 bytes.
    node.send(Command::Chunk { id, index: 2 }, &img[2048..])
        .result
        .unwrap();
    let (report, missing) = node.status(id);
    assert_eq!((report.received, missing), (1, Some(vec![0, 1])));
    // Status without an ID reports whatever the node holds.
    let a = node.send(Command::Status { id: None }, &[]);
    assert_eq!(a.state.unwrap().held, id);
    // Another target is not this node's business.
    assert!(node
        .send_to("0x1338", Command::Status { id: None }, &[])
        .is_none());
    assert!(node
        .send_to("00A1B3", Command::Status { id: None }, &[])
        .is_none());
    assert!(node
        .send_to(NODE, Command::Status { id: None }, &[])
        .is_some());
}

#[test]
fn a_bad_public_key_is_a_settings_error() {
    // About half of all 32-byte strings are no curve point; take the first such one.
    let bad = (2u8..=255)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err())
        .unwrap();
    let s = Settings {
        public_key: Some(bad),
        ..settings(None)
    };
    assert_eq!(
        Receiver::new(s).unwrap_err(),
        v2::SettingsError::BadPublicKey
    );
}

#[test]
fn an_upload_erases_only_its_sectors_and_the_progress_record() {
    let big = image(80_000, 11);
    let small = image(9_000, 12);
    let (a, b) = (
        manifest(&big, "1.5", 1024, None),
        manifest(&small, "1.6", 1024, None),
    );
    let mut node = Node::new(settings(None));
    node.announce(&a);
    for i in 0..a.chunk_count() {
        node.chunk(&a, &big, i).result.unwrap();
    }
    assert!(matches!(
        node.send(Command::Flash { id: a.id() }, &[]).result,
        Ok(Outcome::Install { .. })
    ));
    // Back from a restart, later: the slot is free for the next upload.
    let mut node = node.restart();
    let erases = node.area.flash_mut().erases();
    ok(&node.announce(&b), Phase::Receiving, b.id());
    assert_eq!(
        node.area.flash_mut().erases(),
        erases + 2,
        "the image's sectors, then the record's"
    );
    let untouched = 3 * SECTOR..80_000;
    assert_eq!(node.slot(80_000)[untouched.clone()], big[untouched]);
    for i in 0..b.chunk_count() {
        node.chunk(&b, &small, i).result.unwrap();
    }
    assert!(matches!(
        node.send(Command::Flash { id: b.id() }, &[]).result,
        Ok(Outcome::Install { len: 9_000, .. })
    ));
    assert_eq!(node.slot(small.len()), small);
}
