//! Our OTA exchange (`docs/PROTOCOL.md` "OTA v2"): a signed manifest, binary chunks,
//! missing-chunk bitmaps, resume.
