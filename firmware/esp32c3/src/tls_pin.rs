//! Broker TLS in pin mode (the original library's `mqtt_fingerprint`): the broker's
//! leaf certificate must hash to the configured SHA-1 or SHA-256 fingerprint, and the
//! handshake's CertificateVerify must be an ECDSA P-256 signature by that
//! certificate's key, so a copy of the (public) certificate alone cannot impersonate
//! the broker. Chain, name and expiry are not checked: the pin is the trust.
//!
//! Platform-independent (no chip types): the host test
//! `crates/mqttmesh-host/tests/firmware_tls_pin.rs` compiles this file and runs it
//! against a real Mosquitto TLS listener.

use embedded_tls::{
    Aes128GcmSha256, CertificateEntryRef, CertificateRef, CertificateVerifyRef, CryptoProvider,
    CryptoRngCore, Sha256, SignatureScheme, TlsError, TlsVerifier,
};
// digest 0.10, the one embedded-tls's SHA-256 implements (named through p256 so that the
// host test, whose `sha2` is another version, compiles this file unchanged). Kept in
// groups of one: the two rustfmt style editions (firmware 2024, host 2021) sort
// `digest` and `Verifier` differently.
use p256::ecdsa::signature::digest::Digest as _;

use p256::ecdsa::signature::Verifier as _;

use p256::ecdsa::{Signature, VerifyingKey};
// The same trait on the chip; the host test's sha1 implements a newer digest.
#[allow(unused_imports)]
use sha1::{Digest as _, Sha1};

/// Bytes of an uncompressed SEC1 P-256 point (0x04 || x || y).
pub const P256_POINT_LEN: usize = 65;

/// Whether `der` (one certificate) hashes to `pin`: SHA-1 for a 20-byte pin, SHA-256
/// for a 32-byte one; any other length never matches.
pub fn pin_matches(pin: &[u8], der: &[u8]) -> bool {
    match pin.len() {
        20 => Sha1::digest(der).as_slice() == pin,
        32 => Sha256::digest(der).as_slice() == pin,
        _ => false,
    }
}

/// One DER TLV: (tag, contents, rest). None on truncated or over-long input.
fn tlv(d: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, d) = d.split_first()?;
    let (&first, mut d) = d.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 {
            return None;
        }
        let (bytes, rest) = d.split_at_checked(n)?;
        d = rest;
        bytes
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b))
    };
    let (body, rest) = d.split_at_checked(len)?;
    Some((tag, body, rest))
}

/// AlgorithmIdentifier { id-ecPublicKey, prime256v1 }, DER contents.
const EC_P256_ALG: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // prime256v1
];

/// The P-256 public key of an X.509 certificate (DER), or None if the certificate is
/// malformed or its key is not an uncompressed P-256 point.
pub fn leaf_p256_key(der: &[u8]) -> Option<[u8; P256_POINT_LEN]> {
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    // [0] version (optional), serial, signature, issuer, validity, subject.
    if tbs.first() == Some(&0xa0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..5 {
        tbs = tlv(tbs)?.2;
    }
    let (0x30, spki, _) = tlv(tbs)? else {
        return None;
    };
    let (0x30, alg, rest) = tlv(spki)? else {
        return None;
    };
    let (0x03, bits, _) = tlv(rest)? else {
        return None;
    };
    if alg != EC_P256_ALG {
        return None;
    }
    // BIT STRING: no unused bits, then the point.
    match bits.split_first() {
        Some((0, point)) if point.first() == Some(&0x04) => point.try_into().ok(),
        _ => None,
    }
}

/// What the server signs in TLS 1.3 (RFC 8446 §4.4.3): 64 spaces, the context string,
/// a zero byte, then the transcript hash.
pub fn signed_content(transcript: &[u8; 32]) -> [u8; 130] {
    const CONTEXT: &[u8; 34] = b"TLS 1.3, server CertificateVerify\x00";
    let mut m = [0x20u8; 130];
    m[64..98].copy_from_slice(CONTEXT);
    m[98..].copy_from_slice(transcript);
    m
}

/// Whether `der_sig` is an ECDSA P-256/SHA-256 signature of the TLS 1.3 server
/// CertificateVerify content for `transcript` by `key`.
pub fn certificate_verify_ok(
    key: &[u8; P256_POINT_LEN],
    transcript: &[u8; 32],
    der_sig: &[u8],
) -> bool {
    let (Ok(key), Ok(sig)) = (
        VerifyingKey::from_sec1_bytes(key),
        Signature::from_der(der_sig),
    ) else {
        return false;
    };
    key.verify(&signed_content(transcript), &sig).is_ok()
}

/// Why a handshake was refused by the pin check (the last one, for the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinFailure {
    /// The server sent no certificate.
    NoCertificate,
    /// The leaf certificate's fingerprint is not the pinned one.
    Mismatch,
    /// The leaf certificate's key is not ECDSA P-256 (the only kind checked here).
    NotP256,
    /// The server signed with another scheme than ECDSA P-256/SHA-256.
    Scheme,
    /// The CertificateVerify signature does not verify: no proof of the key.
    BadSignature,
}

/// The [`TlsVerifier`] of pin mode.
pub struct PinVerifier<'p> {
    pin: &'p [u8],
    key: Option<[u8; P256_POINT_LEN]>,
    transcript: Option<[u8; 32]>,
    /// Set when a check fails, for the caller's log.
    pub failure: Option<PinFailure>,
    /// Set when the CertificateVerify signature verified.
    pub proved: bool,
}

impl<'p> PinVerifier<'p> {
    /// A verifier for a 20-byte SHA-1 or 32-byte SHA-256 leaf fingerprint.
    pub fn new(pin: &'p [u8]) -> Self {
        PinVerifier {
            pin,
            key: None,
            transcript: None,
            failure: None,
            proved: false,
        }
    }

    fn fail(&mut self, why: PinFailure) -> TlsError {
        self.failure = Some(why);
        match why {
            PinFailure::BadSignature | PinFailure::Scheme => TlsError::InvalidSignature,
            _ => TlsError::InvalidCertificate,
        }
    }
}

impl TlsVerifier<Aes128GcmSha256> for PinVerifier<'_> {
    fn set_hostname_verification(&mut self, _hostname: &str) -> Result<(), TlsError> {
        Ok(())
    }

    fn verify_certificate(
        &mut self,
        transcript: &Sha256,
        cert: CertificateRef,
    ) -> Result<(), TlsError> {
        let Some(CertificateEntryRef::X509(leaf)) = cert.entries.first() else {
            return Err(self.fail(PinFailure::NoCertificate));
        };
        if !pin_matches(self.pin, leaf) {
            return Err(self.fail(PinFailure::Mismatch));
        }
        let Some(key) = leaf_p256_key(leaf) else {
            return Err(self.fail(PinFailure::NotP256));
        };
        self.key = Some(key);
        self.transcript = Some(transcript.clone().finalize().into());
        Ok(())
    }

    fn verify_signature(&mut self, verify: CertificateVerifyRef) -> Result<(), TlsError> {
        if verify.signature_scheme != SignatureScheme::EcdsaSecp256r1Sha256 {
            return Err(self.fail(PinFailure::Scheme));
        }
        let (Some(key), Some(transcript)) = (self.key.take(), self.transcript.take()) else {
            return Err(self.fail(PinFailure::NoCertificate));
        };
        if !certificate_verify_ok(&key, &transcript, verify.signature) {
            return Err(self.fail(PinFailure::BadSignature));
        }
        self.proved = true;
        Ok(())
    }
}

/// The [`CryptoProvider`] of pin mode: a random source and a [`PinVerifier`].
pub struct PinProvider<'p, R> {
    /// Random source for the key share and the client random.
    pub rng: R,
    /// The verifier (read its `failure` after a refused handshake).
    pub verifier: PinVerifier<'p>,
}

impl<R: CryptoRngCore> CryptoProvider for PinProvider<'_, R> {
    type CipherSuite = Aes128GcmSha256;
    type Signature = &'static [u8];

    fn rng(&mut self) -> impl CryptoRngCore {
        &mut self.rng
    }

    fn verifier(&mut self) -> Result<&mut impl TlsVerifier<Aes128GcmSha256>, TlsError> {
        Ok(&mut self.verifier)
    }
}
