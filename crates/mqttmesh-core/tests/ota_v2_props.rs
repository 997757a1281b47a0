//! Property tests for OTA v2 (`docs/PROTOCOL.md` "OTA v2"): the decoders never panic
//! and accept only canonical encodings, every encoding round-trips, and a receiver fed
//! random command sequences (restarts included) never panics and never hands out an
//! image whose SHA-256 differs from its manifest's.

use ed25519_dalek::{Signer, SigningKey};
use mqttmesh_core::ota::mem::{MemFlash, SECTOR};
use mqttmesh_core::ota::v2::{
    self, Command, Manifest, ManifestId, Missing, Outcome, Phase, Reason, Receiver, Report,
    Settings, CHUNK_ALIGN, MAX_CHUNKS, MAX_CHUNK_SIZE, MAX_WINDOW,
};
use mqttmesh_core::ota::Area;
use proptest::prelude::*;
use sha2::{Digest, Sha256};

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(m) = Manifest::decode(&bytes) {
            let again = m.to_bytes();
            prop_assert_eq!(again.as_slice(), &bytes[..], "canonical");
        }
        if let Ok(r) = Report::decode(&bytes) {
            let mut buf = [0; v2::MAX_REPORT_LEN];
            let n = r.encode(&mut buf).unwrap();
            prop_assert_eq!(&buf[..n], &bytes[..], "canonical");
        }
        if let Ok(w) = Missing::decode(&bytes) {
            let mut buf = [0; v2::MAX_MISSING_LEN];
            let n = w.encode(&mut buf).unwrap();
            prop_assert_eq!(&buf[..n], &bytes[..], "canonical");
            prop_assert!(w.iter().all(|i| w.is_missing(i)));
        }
    }

    #[test]
    fn text_parsers_never_panic(s in "\\PC{0,40}", t in "[0-9a-fA-Fcstuahflmnixv/.+#]{0,30}") {
        for s in [s.as_str(), t.as_str()] {
            if let Some(cmd) = Command::parse(s) {
                prop_assert_eq!(Command::parse(&cmd.to_string()), Some(cmd));
            }
            let _ = ManifestId::parse(s);
            let _ = v2::split_topic("in/", s);
            let _ = v2::split_reply_topic("out/", s);
            let _ = v2::compare_versions(s, "1.2.3");
        }
    }

    #[test]
    fn manifests_round_trip(
        firmware_id in any::<u32>(),
        version in "[ -~]{0,31}",
        chunk_units in 1u16..=(MAX_CHUNK_SIZE / CHUNK_ALIGN),
        size_seed in any::<u32>(),
        sha256 in any::<[u8; 32]>(),
        allow_downgrade in any::<bool>(),
        signature in proptest::option::of(proptest::collection::vec(any::<u8>(), 64)),
    ) {
        let chunk_size = chunk_units * CHUNK_ALIGN;
        let size = 1 + size_seed % (MAX_CHUNKS * u32::from(chunk_size));
        let m = Manifest {
            firmware_id,
            version: version.as_str().try_into().unwrap(),
            size,
            chunk_size,
            sha256,
            allow_downgrade,
            signature: signature.map(|s| s.try_into().unwrap()),
        };
        let bytes = m.to_bytes();
        prop_assert_eq!(Manifest::decode(&bytes), Ok(m.clone()));
        let mut buf = [0; v2::MAX_MANIFEST_LEN];
        prop_assert_eq!(m.encode(&mut buf), Ok(bytes.len()));
        prop_assert!(bytes.starts_with(&m.signed_bytes()[..5]));
        let covered: u32 = (0..m.chunk_count()).map(|i| m.chunk_range(i).unwrap().len() as u32).sum();
        prop_assert_eq!(covered, size);
        prop_assert_eq!(m.chunk_range(m.chunk_count()), None);
    }

    #[test]
    fn missing_windows_round_trip(
        id in any::<u32>(),
        first in any::<u32>(),
        missing in proptest::collection::vec(any::<bool>(), 0..=MAX_WINDOW as usize),
    ) {
        let mut bits = vec![0u8; missing.len().div_ceil(8)];
        for (i, _) in missing.iter().enumerate().filter(|(_, &m)| m) {
            bits[i / 8] |= 1 << (i % 8);
        }
        let made = Missing::new(ManifestId(id), first, missing.len() as u16, &bits);
        if first.checked_add(missing.len() as u32).is_none() {
            // A window that would wrap past chunk u32::MAX back to chunk 0.
            prop_assert_eq!(made, Err(v2::WireError::TooLong));
            return Ok(());
        }
        let w = made.unwrap();
        let mut buf = [0; v2::MAX_MISSING_LEN];
        let n = w.encode(&mut buf).unwrap();
        let back = Missing::decode(&buf[..n]).unwrap();
        prop_assert_eq!(back, w);
        let expected: Vec<u32> = missing
            .iter()
            .enumerate()
            .filter(|(_, &m)| m)
            .map(|(i, _)| first + i as u32)
            .collect();
        prop_assert_eq!(back.iter().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn reports_round_trip(
        phase in 0u8..4,
        held in any::<u32>(),
        received in any::<u32>(),
        total in any::<u32>(),
        result in 0u8..=Reason::COUNT as u8,
        subject in any::<u32>(),
        version in "\\PC{0,10}",
    ) {
        let phase = [Phase::Idle, Phase::Receiving, Phase::Verified, Phase::Installing][usize::from(phase)];
        let Ok(version) = version.as_str().try_into() else { return Ok(()) };
        let r = Report {
            phase,
            held: ManifestId(held),
            received,
            total,
            result: Reason::from_u8(result),
            subject: ManifestId(subject),
            version,
        };
        let mut buf = [0; v2::MAX_REPORT_LEN];
        let n = r.encode(&mut buf).unwrap();
        prop_assert_eq!(Report::decode(&buf[..n]), Ok(r));
    }
}

const SLOT: usize = 8 * SECTOR;
type Flash = MemFlash<SLOT>;

/// One step of a hostile or confused sender (or of the node's power supply).
#[derive(Clone, Debug)]
enum Op {
    /// Announce image `which` (0 or 1), signed or not.
    Announce {
        which: usize,
        signed: bool,
    },
    /// Chunk `index` of the image announced as `which`, possibly bit-flipped or cut.
    Chunk {
        which: usize,
        index: u32,
        flip: Option<usize>,
        cut: bool,
    },
    /// Every chunk of `which` in order, but `skip` (if in range).
    AllChunks {
        which: usize,
        skip: u32,
    },
    Status {
        which: usize,
        from: u32,
    },
    Flash {
        which: usize,
    },
    Abort {
        which: usize,
    },
    /// Anything at all.
    Raw {
        command: String,
        payload: Vec<u8>,
    },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..2usize, any::<bool>()).prop_map(|(which, signed)| Op::Announce { which, signed }),
        2 => (0..2usize, 0..20u32).prop_map(|(which, skip)| Op::AllChunks { which, skip }),
        4 => (0..2usize, 0..14u32, proptest::option::of(0..4096usize), proptest::bool::weighted(0.05))
            .prop_map(|(which, index, flip, cut)| Op::Chunk {
                which,
                index,
                flip: flip.filter(|f| f % 8 == 0),
                cut,
            }),
        1 => (0..2usize, 0..14u32).prop_map(|(which, from)| Op::Status { which, from }),
        2 => (0..2usize).prop_map(|which| Op::Flash { which }),
        1 => (0..2usize).prop_map(|which| Op::Abort { which }),
        1 => ("[0-9a-f/cmanifeststuslhbor]{0,24}", proptest::collection::vec(any::<u8>(), 0..80))
            .prop_map(|(command, payload)| Op::Raw { command, payload }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn receiver_never_panics_nor_installs_a_bad_image(
        ops in proptest::collection::vec(op(), 1..80),
        keyed in any::<bool>(),
    ) {
        let key = SigningKey::from_bytes(&[3; 32]);
        let images: [Vec<u8>; 2] = [
            (0..3000u32).map(|i| (i * 7 + 1) as u8).collect(),
            (0..3300u32).map(|i| (i * 13 + 5) as u8).collect(),
        ];
        let manifests: Vec<[Manifest; 2]> = images
            .iter()
            .map(|img| {
                let plain = Manifest::new(0x1337, "2.0", img, 256).unwrap();
                let mut signed = plain.clone();
                signed.sign_with(|m| Ok::<_, ()>(key.sign(m).to_bytes())).unwrap();
                [plain, signed]
            })
            .collect();
        let settings = Settings {
            firmware_id: 0x1337,
            version: "1.0".try_into().unwrap(),
            public_key: keyed.then(|| key.verifying_key().to_bytes()),
            refuse_downgrade: true,
        };
        let mut area = Area::new(Box::leak(Box::new(Flash::new())), 0, SLOT as u32).unwrap();
        let mut rx = Receiver::new(settings.clone()).unwrap();
        // The manifest each image was last announced with, so chunks name a real upload.
        let mut announced: [Manifest; 2] = [manifests[0][0].clone(), manifests[1][0].clone()];
        for op in ops {
            let messages: Vec<(String, Vec<u8>)> = match op {
                Op::Restart => {
                    rx = Receiver::resume(settings.clone(), &mut area).unwrap();
                    continue;
                }
                Op::Announce { which, signed } => {
                    announced[which] = manifests[which][usize::from(signed)].clone();
                    vec![("manifest".into(), announced[which].to_bytes().to_vec())]
                }
                Op::Chunk { which, index, flip, cut } => {
                    let m = &announced[which];
                    let mut data = m.chunk(&images[which], index).unwrap_or(&[1, 2, 3]).to_vec();
                    if let Some(bit) = flip.filter(|&b| b / 8 < data.len()) {
                        data[bit / 8] ^= 1 << (bit % 8);
                    }
                    if cut {
                        data.pop();
                    }
                    vec![(Command::Chunk { id: m.id(), index }.to_string(), data)]
                }
                Op::AllChunks { which, skip } => {
                    let m = &announced[which];
                    m.chunks(&images[which])
                        .filter(|&(i, _)| i != skip)
                        .map(|(index, data)| (Command::Chunk { id: m.id(), index }.to_string(), data.to_vec()))
                        .collect()
                }
                Op::Status { which, from } => {
                    let cmd = Command::Status { id: Some(announced[which].id()) };
                    vec![(cmd.to_string(), from.to_be_bytes().to_vec())]
                }
                Op::Flash { which } => vec![(Command::Flash { id: announced[which].id() }.to_string(), vec![])],
                Op::Abort { which } => vec![(Command::Abort { id: announced[which].id() }.to_string(), vec![])],
                Op::Raw { command, payload } => vec![(command, payload)],
            };
            for (command, payload) in messages {
            let mut replies = Vec::new();
            let result = rx.handle(&mut area, &command, &payload, &mut |r| replies.push(r));
            prop_assert!(replies.len() <= 2);
            for r in &replies {
                prop_assert!(r.subtopic == v2::STATE_SUBTOPIC || r.subtopic == v2::MISSING_SUBTOPIC);
            }
            if let Ok(Outcome::Install { id, len, .. }) = result {
                let m = announced.iter().find(|m| m.id() == id).expect("an announced upload");
                prop_assert_eq!(len, m.size);
                let slot = &area.flash_mut().bytes()[..len as usize];
                let hash: [u8; 32] = Sha256::digest(slot).into();
                prop_assert_eq!(hash, m.sha256, "installed image differs from its manifest");
                prop_assert!(!keyed || m.signature.is_some(), "unsigned image with a key set");
            }
            if let Err(reason) = result {
                prop_assert!(rx.stats().refused(reason) > 0);
            }
            }
        }
    }
}

proptest! {
    /// Any change to a signed manifest, one byte or a cut, is refused by a keyed node.
    #[test]
    fn altered_signed_manifests_are_refused(at in 0usize..200, xor in 1u8..=255, cut in any::<bool>()) {
        let key = SigningKey::from_bytes(&[5; 32]);
        let img = vec![0xA5u8; 2000];
        let mut m = Manifest::new(0x1337, "1.2.3", &img, 512).unwrap();
        m.sign_with(|msg| Ok::<_, ()>(key.sign(msg).to_bytes())).unwrap();
        let mut bytes = m.to_bytes().to_vec();
        let at = at % bytes.len();
        if cut {
            bytes.truncate(at);
        } else {
            bytes[at] ^= xor;
        }
        let settings = Settings {
            firmware_id: 0x1337,
            version: "1.0".try_into().unwrap(),
            public_key: Some(key.verifying_key().to_bytes()),
            refuse_downgrade: false,
        };
        let mut rx = Receiver::new(settings).unwrap();
        let mut area = Area::new(Box::leak(Box::new(Flash::new())), 0, SLOT as u32).unwrap();
        let mut replies = Vec::new();
        let result = rx.handle(&mut area, "manifest", &bytes, &mut |r| replies.push(r));
        prop_assert!(result.is_err(), "{:?}", result);
        prop_assert_eq!(replies.len(), 1);
        let report = Report::decode(&replies[0].payload).unwrap();
        prop_assert_eq!(report.phase, Phase::Idle);
        prop_assert_eq!(report.subject, ManifestId::of(&bytes));
    }
}

/// Found by the `ota_v2` fuzz target: a window ending past chunk `u32::MAX` decoded, and
/// its iterator wrapped around to chunk 0 (asking for chunks the sender never meant).
#[test]
fn missing_window_past_the_last_chunk_index_is_refused() {
    let mut bytes = vec![0, 0, 0, 1];
    bytes.extend_from_slice(&(u32::MAX - 2).to_be_bytes());
    bytes.extend_from_slice(&8u16.to_be_bytes());
    bytes.push(0x80);
    assert_eq!(Missing::decode(&bytes), Err(v2::WireError::TooLong));
    bytes[7] = 0xF7; // first = u32::MAX - 8: the window ends exactly at u32::MAX
    let w = Missing::decode(&bytes).expect("a window ending at u32::MAX is fine");
    assert_eq!(w.iter().collect::<Vec<_>>(), vec![u32::MAX - 1]);
}
