//! The node side of OTA v2 (`docs/PROTOCOL.md` "OTA v2", "Node state machine").

use core::cmp::Ordering;
use core::fmt;

use ed25519_dalek::VerifyingKey;
use embedded_storage::nor_flash::NorFlash;

use super::manifest::{Manifest, ManifestError};
use super::store::{self, Marker};
use super::wire::{Missing, Phase, Reason, Report, WireError};
use super::{
    compare_versions, Command, ManifestId, MAX_VERSION_LEN, MAX_WINDOW, MISSING_SUBTOPIC,
    STATE_SUBTOPIC,
};
use crate::identity::NodeId;
use crate::ota::{targets_us, Area, Reply, MAX_REPLY_PAYLOAD};

/// What a node checks manifests against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The node's ID (a `<target>` may name it).
    pub node_id: NodeId,
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
    /// Messages for another target.
    pub ignored: u32,
    /// Refusals by reason (index `code - 1`).
    pub refused: [u32; Reason::COUNT],
}

impl Stats {
    /// Refusals for `reason`.
    pub fn refused(&self, reason: Reason) -> u32 {
        self.refused.get(reason as usize - 1).copied().unwrap_or(0)
    }
}

/// The caller's cue to install: mark the slot new (`ota::boot`) and restart into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    /// The upload.
    pub id: ManifestId,
    /// Image length.
    pub len: u32,
    /// The version the node will run.
    pub version: heapless::String<MAX_VERSION_LEN>,
}

/// What one [`Receiver::handle`] call produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// To publish under `<out><ID>/`, in order.
    pub replies: heapless::Vec<Reply, 2>,
    /// Set when the image is verified and `flash` was accepted.
    pub install: Option<Install>,
    /// Set when the command was refused (already counted), for the caller's log.
    pub refused: Option<Reason>,
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
/// Feed it every `<in>ota2/<target>/<command>` message ([`super::split_topic`]) with
/// [`Receiver::handle`], publish the [`Response`]'s replies, and on
/// [`Response::install`] mark the slot new and restart. At boot, make it with
/// [`Receiver::resume`] over the same slot so an interrupted upload continues.
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

    /// Handles `<in>ota2/<target>/<command>` with `payload`. Messages for another
    /// target are ignored (empty response); anything else is answered as
    /// `docs/PROTOCOL.md` "OTA v2" says.
    pub fn handle<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        target: &str,
        command: &str,
        payload: &[u8],
    ) -> Response {
        let s = &self.settings;
        if !targets_us(target, s.firmware_id, s.node_id.as_str()) {
            self.stats.ignored += 1;
            return Response::default();
        }
        let Some(command) = Command::parse(command) else {
            self.quiet = false;
            return self.refuse(Reason::Malformed, ManifestId(0));
        };
        if !matches!(command, Command::Chunk { .. }) {
            self.quiet = false;
        }
        match command {
            Command::Manifest => self.handle_manifest(area, payload),
            Command::Chunk { id, index } => self.handle_chunk(area, id, index, payload),
            Command::Status { id } => self.handle_status(area, id, payload),
            Command::Flash { id } => self.handle_flash(area, id, payload),
            Command::Abort { id } => self.handle_abort(area, id, payload),
        }
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
            None => (Phase::Idle, ManifestId(0), 0, 0, heapless::String::new()),
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

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn handle_manifest<F: NorFlash>(&mut self, area: &mut Area<F>, payload: &[u8]) -> Response {
        let subject = ManifestId::of(payload);
        let manifest = match Manifest::decode(payload) {
            Ok(m) => m,
            Err(ManifestError::Unsupported) => return self.refuse(Reason::Unsupported, subject),
            Err(_) => return self.refuse(Reason::Malformed, subject),
        };
        if self.upload.as_ref().is_some_and(|u| u.id == subject) {
            // The same upload again (a restarted sender): keep the progress.
            return self.answer(None, subject);
        }
        if let Err(reason) = self.check(&manifest, store::capacity(area)) {
            return self.refuse(reason, subject);
        }
        if self.upload.is_some() {
            return self.refuse(Reason::Busy, subject);
        }
        if store::begin(area, payload).is_err() {
            return self.refuse(Reason::Flash, subject);
        }
        self.stats.accepted += 1;
        self.upload = Some(Upload {
            id: subject,
            manifest,
            received: 0,
            phase: Phase::Receiving,
        });
        self.answer(None, subject)
    }

    fn handle_chunk<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        id: ManifestId,
        index: u32,
        data: &[u8],
    ) -> Response {
        let Some(upload) = self.upload.as_mut().filter(|u| u.id == id) else {
            return self.refuse_chunk(Reason::UnknownManifest, id);
        };
        let Some(range) = upload
            .manifest
            .chunk_range(index)
            .filter(|r| r.len() == data.len())
        else {
            return self.refuse_chunk(Reason::BadChunk, id);
        };
        if upload.phase != Phase::Receiving || store::is_received(area, index) != Ok(false) {
            // Already held (or unreadable, then `set_received` below would fail too):
            // first write wins, a tampered duplicate cannot change a written chunk.
            self.stats.duplicates += 1;
            return Response::default();
        }
        if area.write(range.start, data).is_err() || store::set_received(area, index) != Ok(true) {
            return self.refuse_chunk(Reason::Flash, id);
        }
        upload.received += 1;
        self.stats.chunks += 1;
        if !self.complete() {
            return Response::default();
        }
        match self.verify(area, id) {
            Ok(()) => self.answer(None, id),
            Err(reason) => self.answer(Some(reason), id),
        }
    }

    fn handle_status<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        id: Option<ManifestId>,
        payload: &[u8],
    ) -> Response {
        let subject = id.unwrap_or(ManifestId(0));
        let from = match payload {
            [] => 0,
            [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => return self.refuse(Reason::Malformed, subject),
        };
        let Some(upload) = self
            .upload
            .as_ref()
            .filter(|u| id.is_none_or(|id| id == u.id))
        else {
            return match id {
                Some(id) => self.refuse(Reason::UnknownManifest, id),
                None => self.answer(None, subject),
            };
        };
        let (held, total, receiving) = (
            upload.id,
            upload.manifest.chunk_count(),
            upload.phase == Phase::Receiving,
        );
        let mut response = self.answer(None, subject);
        if receiving {
            let mut bits = [0u8; MAX_WINDOW as usize / 8];
            let Ok((first, count)) = store::window(area, total, from, &mut bits) else {
                return self.refuse(Reason::Flash, subject);
            };
            let bits = bits.get(..usize::from(count).div_ceil(8)).unwrap_or(&[]);
            if let Ok(window) = Missing::new(held, first, count, bits) {
                push(&mut response, MISSING_SUBTOPIC, |buf| window.encode(buf));
            }
        }
        response
    }

    fn handle_flash<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        id: ManifestId,
        payload: &[u8],
    ) -> Response {
        if !payload.is_empty() {
            return self.refuse(Reason::Malformed, id);
        }
        let Some(upload) = self.upload.as_ref().filter(|u| u.id == id) else {
            return self.refuse(Reason::UnknownManifest, id);
        };
        if upload.phase == Phase::Receiving {
            return self.refuse(Reason::NotComplete, id);
        }
        // Verified when the last chunk arrived; hashed again, as nothing may boot an
        // image whose hash differs.
        if let Err(reason) = self.verify(area, id) {
            return self.answer(Some(reason), id);
        }
        if store::mark(area, Marker::Installed).is_err() {
            return self.refuse(Reason::Flash, id);
        }
        let Some(upload) = self.upload.as_mut() else {
            return self.refuse(Reason::UnknownManifest, id);
        };
        upload.phase = Phase::Installing;
        let install = Install {
            id,
            len: upload.manifest.size,
            version: upload.manifest.version.clone(),
        };
        let mut response = self.answer(None, id);
        response.install = Some(install);
        response
    }

    fn handle_abort<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        id: ManifestId,
        payload: &[u8],
    ) -> Response {
        if !payload.is_empty() {
            return self.refuse(Reason::Malformed, id);
        }
        if !self.upload.as_ref().is_some_and(|u| u.id == id) {
            return self.refuse(Reason::UnknownManifest, id);
        }
        self.upload = None;
        if store::mark(area, Marker::Dead).is_err() {
            return self.refuse(Reason::Flash, id);
        }
        self.answer(None, id)
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
    /// an unreadable slot) the upload is dropped and its record marked dead.
    fn verify<F: NorFlash>(&mut self, area: &mut Area<F>, id: ManifestId) -> Result<(), Reason> {
        let Some(upload) = self.upload.as_mut().filter(|u| u.id == id) else {
            return Err(Reason::UnknownManifest);
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
    fn refuse(&mut self, reason: Reason, subject: ManifestId) -> Response {
        self.count(reason);
        self.answer(Some(reason), subject)
    }

    /// As [`Receiver::refuse`], answering only the first of a run of refused chunks.
    fn refuse_chunk(&mut self, reason: Reason, subject: ManifestId) -> Response {
        if self.quiet {
            self.count(reason);
            return Response {
                refused: Some(reason),
                ..Response::default()
            };
        }
        self.quiet = true;
        self.refuse(reason, subject)
    }

    /// A state report with this result.
    fn answer(&self, result: Option<Reason>, subject: ManifestId) -> Response {
        let report = Report {
            result,
            subject,
            ..self.report()
        };
        let mut response = Response {
            refused: result,
            ..Response::default()
        };
        push(&mut response, STATE_SUBTOPIC, |buf| report.encode(buf));
        response
    }
}

/// Appends a reply whose payload `encode` writes.
fn push(
    response: &mut Response,
    subtopic: &str,
    encode: impl FnOnce(&mut [u8]) -> Result<usize, WireError>,
) {
    let mut payload = heapless::Vec::<u8, MAX_REPLY_PAYLOAD>::new();
    // Resizing to the capacity cannot fail.
    let _ = payload.resize(MAX_REPLY_PAYLOAD, 0);
    let (Ok(len), Ok(subtopic)) = (encode(&mut payload), heapless::String::try_from(subtopic))
    else {
        return;
    };
    payload.truncate(len);
    // A response holds at most a state and a missing window: two replies.
    let _ = response.replies.push(Reply { subtopic, payload });
}
