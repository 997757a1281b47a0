//! One handler per command (`docs/PROTOCOL.md` "OTA v2", "Node state machine").

use embedded_storage::nor_flash::NorFlash;

use super::{emit, Outcome, Receiver, Upload};
use crate::ota::v2::manifest::{Manifest, ManifestError};
use crate::ota::v2::store::{self, Marker};
use crate::ota::v2::wire::{Missing, Phase, Reason};
use crate::ota::v2::{ManifestId, MAX_WINDOW, MISSING_SUBTOPIC};
use crate::ota::{Area, Reply};

impl Receiver {
    pub(super) fn handle_manifest<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        payload: &[u8],
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Reason> {
        self.quiet = false;
        let subject = ManifestId::of(payload);
        let manifest = match Manifest::decode(payload) {
            Ok(m) => m,
            Err(ManifestError::Unsupported) => {
                return self.refuse(Reason::Unsupported, subject, out)
            }
            Err(_) => return self.refuse(Reason::Malformed, subject, out),
        };
        if self.upload.as_ref().is_some_and(|u| u.id == subject) {
            // The same upload again (a restarted sender): keep the progress.
            return self.done(subject, out);
        }
        if let Err(reason) = self.check(&manifest, store::capacity(area)) {
            return self.refuse(reason, subject, out);
        }
        if self.upload.is_some() {
            return self.refuse(Reason::Busy, subject, out);
        }
        if store::begin(area, manifest.size, payload).is_err() {
            return self.refuse(Reason::Flash, subject, out);
        }
        self.stats.accepted += 1;
        self.upload = Some(Upload {
            id: subject,
            manifest,
            received: 0,
            phase: Phase::Receiving,
        });
        self.done(subject, out)
    }

    pub(super) fn handle_chunk<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        id: ManifestId,
        index: u32,
        data: &[u8],
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Reason> {
        let Some(upload) = self.upload.as_mut().filter(|u| u.id == id) else {
            return self.refuse_chunk(Reason::UnknownManifest, id, out);
        };
        let Some(range) = upload
            .manifest
            .chunk_range(index)
            .filter(|r| r.len() == data.len())
        else {
            return self.refuse_chunk(Reason::BadChunk, id, out);
        };
        if upload.phase != Phase::Receiving || store::is_received(area, index) != Ok(false) {
            // Already held (or unreadable, then `set_received` below would fail too):
            // the first write wins, so a tampered duplicate cannot change a written chunk.
            self.stats.duplicates += 1;
            return Ok(Outcome::Done);
        }
        if area.write(range.start, data).is_err() || store::set_received(area, index) != Ok(true) {
            return self.refuse_chunk(Reason::Flash, id, out);
        }
        upload.received += 1;
        self.stats.chunks += 1;
        if !self.complete() {
            return Ok(Outcome::Done);
        }
        match self.verify(area, id) {
            Ok(()) => self.done(id, out),
            Err(reason) => {
                self.answer(Some(reason), id, out);
                Err(reason)
            }
        }
    }

    pub(super) fn handle_status<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        id: Option<ManifestId>,
        payload: &[u8],
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Reason> {
        self.quiet = false;
        let subject = id.unwrap_or(ManifestId(0));
        let from = match payload {
            [] => 0,
            [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
            _ => return self.refuse(Reason::Malformed, subject, out),
        };
        let Some(upload) = self
            .upload
            .as_ref()
            .filter(|u| id.is_none_or(|id| id == u.id))
        else {
            return match id {
                Some(id) => self.refuse(Reason::UnknownManifest, id, out),
                None => self.done(subject, out),
            };
        };
        let (held, total) = (upload.id, upload.manifest.chunk_count());
        let receiving = upload.phase == Phase::Receiving;
        let mut bits = [0u8; MAX_WINDOW as usize / 8];
        let window = if receiving {
            match store::window(area, total, from, &mut bits) {
                Ok(window) => Some(window),
                Err(_) => return self.refuse(Reason::Flash, subject, out),
            }
        } else {
            None
        };
        self.answer(None, subject, out);
        if let Some((first, count)) = window {
            let bits = bits.get(..usize::from(count).div_ceil(8)).unwrap_or(&[]);
            if let Ok(window) = Missing::new(held, first, count, bits) {
                emit(out, MISSING_SUBTOPIC, |buf| window.encode(buf));
            }
        }
        Ok(Outcome::Done)
    }

    pub(super) fn handle_flash<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        id: ManifestId,
        payload: &[u8],
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Reason> {
        self.quiet = false;
        if !payload.is_empty() {
            return self.refuse(Reason::Malformed, id, out);
        }
        let Some(upload) = self.upload.as_ref().filter(|u| u.id == id) else {
            return self.refuse(Reason::UnknownManifest, id, out);
        };
        if upload.phase == Phase::Receiving {
            return self.refuse(Reason::NotComplete, id, out);
        }
        // Verified when the last chunk arrived; hashed again, as nothing may boot an
        // image whose hash differs from the manifest's.
        if let Err(reason) = self.verify(area, id) {
            self.answer(Some(reason), id, out);
            return Err(reason);
        }
        if store::mark(area, Marker::Installed).is_err() {
            return self.refuse(Reason::Flash, id, out);
        }
        let Some(upload) = self.upload.as_mut() else {
            return self.refuse(Reason::UnknownManifest, id, out);
        };
        upload.phase = Phase::Installing;
        let (len, version) = (upload.manifest.size, upload.manifest.version.clone());
        self.answer(None, id, out);
        Ok(Outcome::Install { id, len, version })
    }

    pub(super) fn handle_abort<F: NorFlash>(
        &mut self,
        area: &mut Area<F>,
        id: ManifestId,
        payload: &[u8],
        out: &mut impl FnMut(Reply),
    ) -> Result<Outcome, Reason> {
        self.quiet = false;
        if !payload.is_empty() {
            return self.refuse(Reason::Malformed, id, out);
        }
        if self.upload.as_ref().is_none_or(|u| u.id != id) {
            return self.refuse(Reason::UnknownManifest, id, out);
        }
        self.upload = None;
        if store::mark(area, Marker::Dead).is_err() {
            return self.refuse(Reason::Flash, id, out);
        }
        self.done(id, out)
    }
}
