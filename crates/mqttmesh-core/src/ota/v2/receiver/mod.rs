//! The node side of OTA v2 (`docs/PROTOCOL.md` "OTA v2", "Node state machine").

mod commands;

use core::cmp::Ordering;
use core::fmt;

use ed25519_dalek::VerifyingKey;
use embedded_storage::nor_flash::NorFlash;

use super::manifest::{Manifest, ManifestError};
use super::store::{self, Marker};
use super::wire::{Phase, Reason, Report, WireError};
use super::{compare_versions, Command, ManifestId, MAX_VERSION_LEN, STATE_SUBTOPIC};
use crate::ota::{Area, Reply, MAX_REPLY_PAYLOAD};

/// What a node checks manifests against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The firmware ID it runs; manifests for another one are refused.
    pub firmware_id: u32,
    /// The version it runs (for downgrade refusal).
    pub version: heapless::String<MAX_VERSION_LEN>,
    /// Ed25519 public key: when set, unsigned or wrongly signed manifests are refused.
    pub public_key: Option<[u8; 32]>,
    /// Refuse manifests whose version is lower than [`Settings::version`]
    /// ([`compare_versions`]), unless signed under `public_key` with the allow-downgrade flag.
    pub refuse_downgrade: bool,
}

/// Why a [`Receiver`] could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingsError {
    /// The public key is not a valid Ed25519 point.
    BadPublicKey,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OTA public key is not a valid Ed25519 public key")
    }
}

impl core::error::Error for SettingsError {}

/// Counters, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Manifests accepted as a new upload.
    pub accepted: u32,
    /// Chunks written.
    pub chunks: u32,
    /// Chunks already held (ignored, harmless).
    pub duplicates: u32,
    /// Refusals by reason (index `code - 1`).
    pub refused: [u32; Reason::COUNT],
}

impl Stats {
    /// Refusals for `reason`.
    pub fn refused(&self, reason: Reason) -> u32 {
        self.refused.get(reason as usize - 1).copied().unwrap_or(0)
    }
}

/// What the caller does after a handled command (any reply has gone out already).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more to do.
    Done,
    /// The image is verified and `flash` was accepted: mark the slot `New`
    /// ([`Boot::mark_new`](crate::ota::boot::Boot::mark_new)) and restart into it. If
    /// that fails, publish [`Receiver::install_failed`] instead.
    Install {
        /// The upload.
        id: ManifestId,
        /// Image length.
        len: u32,
        /// The version the node will run.
        version: heapless::String<MAX_VERSION_LEN>,
    },
}

/// The upload a receiver holds.
#[derive(Debug)]
struct Upload {
    id: ManifestId,
    manifest: Manifest,
    received: u32,
    phase: Phase,
}

/// The node side of OTA v2, over an update slot it is handed on every call.
///
/// Feed it the command of every `<in>ota2/<target>/<command>` message
/// ([`super::split_topic`]) whose target addresses this node
/// ([`targets_us`](crate::ota::targets_us)), publish what it hands to `out` under
/// `<out><ID>/`, and on [`Outcome::Install`] mark the slot new and restart. At boot,
/// make it with [`Receiver::resume`] over the same slot so an interrupted upload
/// continues.
#[derive(Debug)]
pub struct Receiver {
    settings: Settings,
    key: Option<VerifyingKey>,
    upload: Option<Upload>,
    stats: Stats,
    /// A refused chunk was answered: stay quiet about the next ones until another
    /// command arrives, so a stream of stray chunks does not become a stream of answers.
    quiet: bool,
}

impl Receiver {
    /// An idle receiver (ignores whatever progress the slot holds).
    pub fn new(settings: Settings) -> Result<Receiver, SettingsError> {
        let key = match &settings.public_key {
            Some(bytes) => {
                Some(VerifyingKey::from_bytes(bytes).map_err(|_| SettingsError::BadPublicKey)?)
            }
            None => None,
        };
        Ok(Receiver {
            settings,
            key,
            upload: None,
            stats: Stats::default(),
            quiet: false,
        })
    }

    /// A receiver that continues the upload recorded in `area`, if any and if it still
    /// passes every manifest check under `settings`; a complete but unverified image is
    /// verified now.
    pub fn resume<F: NorFlash>(
        settings: Settings,
        area: &mut Area<F>,
    ) -> Result<Receiver, SettingsError> {
        let mut rx = Receiver::new(settings)?;
        let Ok(Some(loaded)) = store::load(area) else {
            return Ok(rx);
        };
        let Ok(manifest) = Manifest::decode(&loaded.manifest) else {
            return Ok(rx);
        };
        if rx.check(&manifest, store::capacity(area)).is_err() {
            return Ok(rx);
        }
        let Ok(received) = store::count_received(area, manifest.chunk_count()) else {
            return Ok(rx);
        };
        let phase = if loaded.verified {
            Phase::Verified
        } else {
            Phase::Receiving
        };
        let id = ManifestId::of(&loaded.manifest);
        rx.upload = Some(Upload {
            id,
            manifest,
            received,
            phase,
        });
        if phase == Phase::Receiving && rx.complete() {
            let _ = rx.verify(area, id);
        }
        Ok(rx)
    }

    /// Handles one command (what follows `<in>ota2/<target>/`) with its payload; `out`
    /// receives the replies to publish under `<out><ID>/` (a state report for every
    /// command except an accepted chunk that does not complete the image, and except
    /// refused chunks after the first of a run; then a missing window for `status`).
    /// Refusals are counted and returned for the caller's debug log.
    pub fn handle<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        command: &str,
        payload: &[u8],
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Reason> {
        let Some(command) = Command::parse(command) else {
            self.quiet = false;
            return self.refuse(Reason::Malformed, ManifestId(0), out);
        };
        match command {
            Command::Chunk { id, index } => self.handle_chunk(area, id, index, payload, out),
            Command::Manifest => self.handle_manifest(area, payload, out),
            Command::Status { id } => self.handle_status(area, id, payload, out),
            Command::Flash { id } => self.handle_flash(area, id, payload, out),
            Command::Abort { id } => self.handle_abort(area, id, payload, out),
        }
    }

    /// After [`Outcome::Install`], when the slot could not be marked for boot: back to
    /// `Verified` in memory (a later `flash` may retry; after a restart the upload is
    /// gone), counted as [`Reason::Flash`]; publish the returned state report.
    pub fn install_failed(&mut self) -> Reply {
        if let Some(upload) = self
            .upload
            .as_mut()
            .filter(|u| u.phase == Phase::Installing)
        {
            upload.phase = Phase::Verified;
        }
        self.count(Reason::Flash);
        let subject = self.upload.as_ref().map_or(ManifestId(0), |u| u.id);
        let mut reply = None;
        self.answer(Some(Reason::Flash), subject, &mut |r| reply = Some(r));
        reply.unwrap_or_else(|| Reply {
            subtopic: heapless::String::new(),
            payload: heapless::Vec::new(),
        })
    }

    /// The current state, as a `status` without an ID would report it.
    pub fn report(&self) -> Report {
        let (phase, held, received, total, version) = match &self.upload {
            Some(u) => (
                u.phase,
                u.id,
                u.received,
                u.manifest.chunk_count(),
                u.manifest.version.clone(),
            ),
            None => (
                Phase::Idle,
                ManifestId(0),
                0,
                0,
                self.settings.version.clone(),
            ),
        };
        Report {
            phase,
            held,
            received,
            total,
            result: None,
            subject: ManifestId(0),
            version,
        }
    }

    /// The manifest of the upload held, if any.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.upload.as_ref().map(|u| &u.manifest)
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every check of a manifest except "busy".
    fn check(&self, m: &Manifest, capacity: u32) -> Result<(), Reason> {
        if m.firmware_id != self.settings.firmware_id {
            return Err(Reason::WrongFirmware);
        }
        if m.size > capacity {
            return Err(Reason::TooLarge);
        }
        if let Some(key) = &self.key {
            m.verify(key).map_err(|e| match e {
                ManifestError::Unsigned => Reason::Unsigned,
                _ => Reason::BadSignature,
            })?;
        }
        let older = compare_versions(&m.version, &self.settings.version) == Some(Ordering::Less);
        // Only a verified signer may override the node's downgrade refusal.
        if self.settings.refuse_downgrade && older && !(m.allow_downgrade && self.key.is_some()) {
            return Err(Reason::Downgrade);
        }
        Ok(())
    }

    fn complete(&self) -> bool {
        self.upload
            .as_ref()
            .is_some_and(|u| u.received >= u.manifest.chunk_count())
    }

    /// Hashes the image against the manifest: `Verified` on a match; on a mismatch (or
    /// an unreadable slot) the upload is dropped and its record marked dead. Counts.
    fn verify<F: NorFlash>(&mut self, area: &mut Area<F>, id: ManifestId) -> Result<(), Reason> {
        let Some(upload) = self.upload.as_mut().filter(|u| u.id == id) else {
            return Err(self.count(Reason::UnknownManifest));
        };
        let verdict = match store::image_hash(area, upload.manifest.size) {
            Ok(hash) if hash == upload.manifest.sha256 => Ok(()),
            Ok(_) => Err(Reason::HashMismatch),
            Err(_) => Err(Reason::Flash),
        };
        let marked = match verdict {
            Ok(()) if upload.phase == Phase::Receiving => store::mark(area, Marker::Verified),
            Ok(()) => Ok(()),
            Err(_) => store::mark(area, Marker::Dead),
        };
        match (verdict, marked) {
            (Ok(()), Ok(())) => {
                if upload.phase == Phase::Receiving {
                    upload.phase = Phase::Verified;
                }
                Ok(())
            }
            (Ok(()), Err(_)) => Err(self.count(Reason::Flash)),
            (Err(reason), _) => {
                self.upload = None;
                Err(self.count(reason))
            }
        }
    }

    fn count(&mut self, reason: Reason) -> Reason {
        if let Some(n) = self.stats.refused.get_mut(reason as usize - 1) {
            *n = n.saturating_add(1);
        }
        reason
    }

    /// Counts a refusal and answers with the state.
    fn refuse(
        &mut self,
        reason: Reason,
        subject: ManifestId,
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Reason> {
        self.count(reason);
        self.answer(Some(reason), subject, out);
        Err(reason)
    }

    /// As [`Receiver::refuse`], answering only the first of a run of refused chunks.
    fn refuse_chunk(
        &mut self,
        reason: Reason,
        subject: ManifestId,
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Reason> {
        if self.quiet {
            return Err(self.count(reason));
        }
        self.quiet = true;
        self.refuse(reason, subject, out)
    }

    /// Publishes a state report with this result.
    fn answer(&self, result: Option<Reason>, subject: ManifestId, out: &mut impl FnMut(Reply)) {
        let report = Report {
            result,
            subject,
            ..self.report()
        };
        emit(out, STATE_SUBTOPIC, |buf| report.encode(buf));
    }

    /// Publishes the state report of a command carried out.
    fn done(&self, subject: ManifestId, out: &mut impl FnMut(Reply)) -> Result<Outcome, Reason> {
        self.answer(None, subject, out);
        Ok(Outcome::Done)
    }
}

/// Hands `out` a reply whose payload `encode` writes.
fn emit(
    out: &mut impl FnMut(Reply),
    subtopic: &str,
    encode: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) {
    let mut payload = heapless::Vec::<u8, MAX_REPLY_PAYLOAD>::new();
    // Resizing to the capacity cannot fail.
    let _ = payload.resize(MAX_REPLY_PAYLOAD, 0);
    // Both payloads fit (asserted in `v2`), and both subtopics are short.
    if let (Ok(len), Ok(subtopic)) = (encode(&mut payload), heapless::String::try_from(subtopic)) {
        payload.truncate(len);
        out(Reply { subtopic, payload });
    }
}
