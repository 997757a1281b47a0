//! `mqttmesh gen-cert`: the self-signed certificate of the mesh TLS link, as the seed's
//! three files (`ssl/server.cer`, `ssl/server.key`, `ssl/fingerprint`) plus PEM copies
//! and a Rust source file for a firmware build (issue 4 §3).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};

use super::{byte_rows, colon_hex, sha1};

/// The certificate, DER.
pub const CERT_FILE: &str = "server.cer";
/// The private key, DER PKCS#8, mode 0600.
pub const KEY_FILE: &str = "server.key";
/// The 20 raw bytes of the SHA-1 of [`CERT_FILE`].
pub const FINGERPRINT_FILE: &str = "fingerprint";
/// [`CERT_FILE`] as PEM (Mosquitto's `certfile`).
pub const CERT_PEM_FILE: &str = "server.cer.pem";
/// [`KEY_FILE`] as PEM (Mosquitto's `keyfile`), mode 0600.
pub const KEY_PEM_FILE: &str = "server.key.pem";
/// The three as Rust constants, mode 0600 (it holds the key).
pub const RUST_FILE: &str = "mesh_cert.rs";
/// Longest validity accepted: a century.
const MAX_DAYS: u32 = 36_500;

/// Key algorithm of the generated certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyType {
    /// ECDSA on P-256, signed ecdsa-with-SHA256: small devices verify it fast.
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048 (not available yet: the ring backend of this build cannot generate RSA keys).
    #[value(name = "rsa-2048")]
    Rsa2048,
}

/// `mqttmesh gen-cert` arguments.
#[derive(Debug, Args)]
pub struct GenCertArgs {
    /// Directory to write `ssl/` into (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Key algorithm.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    key_type: KeyType,
    /// Common name (and DNS subject alternative name) of the certificate.
    #[arg(long, value_name = "NAME", default_value = "mqttmesh-mesh")]
    common_name: String,
    /// Days of validity from now.
    #[arg(long, value_name = "N", default_value_t = 3650)]
    days: u32,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

/// `mqttmesh gen-cert`.
pub fn run(args: GenCertArgs) -> Result<ExitCode> {
    if !(1..=MAX_DAYS).contains(&args.days) {
        bail!("--days {} is out of range; give 1..={MAX_DAYS}", args.days);
    }
    let dir = args.out.join("ssl");
    let files = [
        CERT_FILE,
        KEY_FILE,
        FINGERPRINT_FILE,
        CERT_PEM_FILE,
        KEY_PEM_FILE,
        RUST_FILE,
    ]
    .map(|f| dir.join(f));
    if !args.force {
        if let Some(existing) = files.iter().find(|f| f.exists()) {
            bail!(
                "{} exists; pass --force to replace the mesh certificate (nodes pinning the \
                 old fingerprint will then refuse the new one)",
                existing.display()
            );
        }
    }
    let key = key_pair(args.key_type)?;
    let cert = params(&args.common_name, args.days)?
        .self_signed(&key)
        .context("cannot sign the certificate")?;
    let cert_der = cert.der().as_ref();
    let key_der = key.serialize_der();
    let fingerprint = sha1(cert_der);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let [cert_path, key_path, fp_path, cert_pem_path, key_pem_path, rust_path] = &files;
    write(cert_path, cert_der, false)?;
    write(key_path, &key_der, true)?;
    write(fp_path, &fingerprint, false)?;
    write(cert_pem_path, cert.pem().as_bytes(), false)?;
    write(key_pem_path, key.serialize_pem().as_bytes(), true)?;
    let source = rust_source(cert_der, &key_der, &fingerprint);
    write(rust_path, source.as_bytes(), true)?;
    println!("wrote {}", dir.display());
    println!(
        "  {CERT_FILE:<16} certificate, DER, {} bytes",
        cert_der.len()
    );
    println!("  {KEY_FILE:<16} private key, DER PKCS#8 (mode 0600)");
    println!("  {FINGERPRINT_FILE:<16} SHA-1 of {CERT_FILE}, 20 raw bytes");
    println!("  {CERT_PEM_FILE:<16} certificate, PEM");
    println!("  {KEY_PEM_FILE:<16} private key, PEM (mode 0600)");
    println!("  {RUST_FILE:<16} SERVER_CER, SERVER_KEY, FINGERPRINT for the firmware build");
    println!("fingerprint (SHA-1) {}", colon_hex(&fingerprint));
    println!(
        "run an emulated mesh over TLS with them: mqttmesh sim --mesh-tls {}",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn key_pair(key_type: KeyType) -> Result<KeyPair> {
    match key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| anyhow!("cannot generate an ECDSA P-256 key: {e}")),
        // rcgen's ring backend cannot generate RSA keys (only aws-lc-rs can).
        KeyType::Rsa2048 => bail!(
            "--key-type rsa-2048 is not supported by this build: its crypto backend (ring) \
             cannot generate RSA keys; use the default --key-type ecdsa-p256, which small \
             devices also verify faster"
        ),
    }
}

fn params(common_name: &str, days: u32) -> Result<CertificateParams> {
    let bad_name = |e| anyhow!("--common-name {common_name:?} is not usable: {e}");
    let mut params = CertificateParams::new(vec![common_name.to_owned()]).map_err(bad_name)?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    // A day back: a node whose clock is a little behind still accepts it.
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

fn rust_source(cert: &[u8], key: &[u8], fingerprint: &[u8; 20]) -> String {
    format!(
        "// Mesh TLS certificate, written by `mqttmesh gen-cert`. SERVER_KEY is secret: keep\n\
         // this file out of version control. Nodes pin FINGERPRINT (SHA-1 of SERVER_CER).\n\
         pub const SERVER_CER: &[u8] = &[\n{}];\n\n\
         pub const SERVER_KEY: &[u8] = &[\n{}];\n\n\
         pub const FINGERPRINT: [u8; 20] = [\n{}];\n",
        byte_rows(cert),
        byte_rows(key),
        byte_rows(fingerprint)
    )
}

/// Writes `bytes`; a `secret` file is readable by its owner only from the moment it
/// exists (a file left by an earlier run may carry wider permissions, so it is removed).
fn write(path: &Path, bytes: &[u8], secret: bool) -> Result<()> {
    let context = || format!("cannot write {}", path.display());
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(context),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path).with_context(context)?;
    file.write_all(bytes).with_context(context)?;
    file.sync_all().with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_source_holds_every_byte() {
        let s = rust_source(&[1; 30], &[2; 40], &[3; 20]);
        assert!(
            s.contains("pub const SERVER_CER: &[u8] = &[\n    0x01,"),
            "{s}"
        );
        assert!(
            s.contains("pub const SERVER_KEY: &[u8] = &[\n    0x02,"),
            "{s}"
        );
        assert!(
            s.contains("pub const FINGERPRINT: [u8; 20] = [\n    0x03,"),
            "{s}"
        );
        assert_eq!(s.matches("0x").count(), 90);
    }

    #[test]
    fn rsa_is_refused_with_a_way_out() {
        let message = key_pair(KeyType::Rsa2048).unwrap_err().to_string();
        assert!(message.contains("ecdsa-p256"), "{message}");
    }
}
