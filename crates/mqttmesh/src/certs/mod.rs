//! Certificate tools (issue 4, "Tools"): `mqttmesh fingerprint` reads a broker's leaf
//! certificate for fingerprint pinning, `mqttmesh gen-cert` makes the mesh TLS files
//! of the seed (`ssl/server.cer`, `ssl/server.key`, `ssl/fingerprint`).
//!
//! Fingerprints here are digests of the DER certificate, the form firmware pins.

pub mod fingerprint;
pub mod gencert;

use std::fmt::Write as _;

use sha1::Digest as _;

/// The SHA-1 of `der`: the seed's 20-byte pin.
pub fn sha1(der: &[u8]) -> [u8; 20] {
    sha1::Sha1::digest(der).into()
}

/// The SHA-256 of `der`.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(der).into()
}

/// Colon-separated upper-case hex (`AB:CD:..`), as browsers and `openssl x509
/// -fingerprint` print fingerprints.
pub fn colon_hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02X}")).collect();
    parts.join(":")
}

/// A Rust byte array literal on one line (`[0x12, 0x34]`), to paste into config.
pub fn byte_array(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("0x{b:02x}")).collect();
    format!("[{}]", parts.join(", "))
}

/// The same, wrapped at 12 bytes per line and indented, for generated source files.
pub fn byte_rows(bytes: &[u8]) -> String {
    let mut s = String::new();
    for row in bytes.chunks(12) {
        let row: Vec<String> = row.iter().map(|b| format!("0x{b:02x}")).collect();
        let _ = writeln!(s, "    {},", row.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_in_both_forms() {
        assert_eq!(colon_hex(&[0x0a, 0xff, 0x10]), "0A:FF:10");
        assert_eq!(byte_array(&[0x0a, 0xff]), "[0x0a, 0xff]");
        assert_eq!(byte_array(&[]), "[]");
        let rows = byte_rows(&[7; 13]);
        assert_eq!(rows.lines().count(), 2);
        assert!(rows.ends_with("    0x07,\n"), "{rows}");
    }

    #[test]
    fn digests_match_known_vectors() {
        assert_eq!(
            colon_hex(&sha1(b"abc")),
            "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D"
        );
        assert_eq!(colon_hex(&sha256(b"abc"))[..11], *"BA:78:16:BF");
    }
}
