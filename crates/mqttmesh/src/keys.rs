//! `mqttmesh keygen` and `mqttmesh sign`: the Ed25519 key pair that authenticates OTA v2
//! manifests (`docs/PROTOCOL.md` "OTA v2", "Security"), and signing a manifest offline
//! so that the machine that uploads never holds the secret key.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use ed25519_dalek::SigningKey;

use crate::ota::firmware::{self, ImageFlags};

/// The secret key: 32 raw bytes, mode 0600.
pub const SECRET_FILE: &str = "ota_ed25519.key";
/// The public key: 32 raw bytes.
pub const PUBLIC_FILE: &str = "ota_ed25519.pub";
/// The public key in hex, one line.
pub const PUBLIC_HEX_FILE: &str = "ota_ed25519.pub.hex";
/// The public key as a Rust constant for a firmware build.
pub const RUST_FILE: &str = "ota_key.rs";

/// `mqttmesh keygen` arguments.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to write the key files into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
}

/// `mqttmesh sign` arguments.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// Secret key written by `mqttmesh keygen` (ota_ed25519.key).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[command(flatten)]
    image: ImageFlags,
    /// Bytes per chunk: a multiple of 64 in 64..=1024.
    #[arg(long, default_value_t = 1024)]
    chunk_size: u16,
    /// Let nodes that refuse downgrades install this image over a newer version.
    #[arg(long)]
    allow_downgrade: bool,
    /// Where to write the signed manifest (default: the image path with `.manifest`
    /// appended).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `mqttmesh keygen`.
pub fn keygen(args: KeygenArgs) -> Result<ExitCode> {
    let dir = &args.out;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files = [SECRET_FILE, PUBLIC_FILE, PUBLIC_HEX_FILE, RUST_FILE].map(|f| dir.join(f));
    if !args.force {
        if let Some(existing) = files.iter().find(|f| f.exists()) {
            bail!(
                "{} exists; pass --force to replace the key pair (nodes built with the old \
                 public key will then refuse manifests signed with the new one)",
                existing.display()
            );
        }
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no randomness from the operating system: {e}"))?;
    let key = SigningKey::from_bytes(&secret);
    let public = key.verifying_key().to_bytes();
    let [secret_path, public_path, hex_path, rust_path] = &files;
    write_secret(secret_path, &secret)?;
    write(public_path, &public)?;
    write(hex_path, format!("{}\n", hex(&public)).as_bytes())?;
    write(rust_path, rust_constant(&public).as_bytes())?;
    println!("wrote {}", dir.display());
    println!("  {SECRET_FILE:<20} secret key (keep it off the broker's network; mode 0600)");
    println!("  {PUBLIC_FILE:<20} public key, 32 bytes");
    println!("  {PUBLIC_HEX_FILE:<20} {}", hex(&public));
    println!("  {RUST_FILE:<20} `OTA_PUBLIC_KEY` for the firmware build");
    Ok(ExitCode::SUCCESS)
}

/// `mqttmesh sign`.
pub fn sign(args: SignArgs) -> Result<ExitCode> {
    let key = load_secret(&args.key)?;
    let fw = args.image.load()?;
    let mut manifest = firmware::manifest(&fw, args.chunk_size, args.allow_downgrade)?;
    firmware::sign(&mut manifest, &key);
    let out = args.out.unwrap_or_else(|| {
        let mut name = args.image.bin.clone().into_os_string();
        name.push(".manifest");
        PathBuf::from(name)
    });
    write(&out, &manifest.to_bytes())?;
    println!("wrote {}", out.display());
    println!("  manifest  {}", manifest.id());
    println!("  firmware  {:X}", fw.firmware_id);
    println!("  version   {}", fw.version);
    println!(
        "  image     {} bytes, {} chunks of {}",
        fw.bytes.len(),
        manifest.chunk_count(),
        manifest.chunk_size
    );
    println!("  signer    {}", hex(&key.verifying_key().to_bytes()));
    println!(
        "upload with: mqttmesh ota --bin {} --id {:X} --manifest {}",
        fw.path,
        fw.firmware_id,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a secret key written by `keygen`.
pub fn load_secret(path: &Path) -> Result<SigningKey> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the key {shown}"))?;
    let Ok(secret) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!(
            "{shown} is {} bytes; a secret key written by `mqttmesh keygen` ({SECRET_FILE}) \
             is exactly 32",
            bytes.len()
        );
    };
    if path.extension().is_some_and(|e| e == "pub") {
        bail!("{shown} is a public key; sign with the secret key ({SECRET_FILE}) next to it");
    }
    Ok(SigningKey::from_bytes(&secret))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn rust_constant(public: &[u8; 32]) -> String {
    let mut s = String::from(
        "// OTA v2 public key (Ed25519), written by `mqttmesh keygen`. Nodes built with it\n\
         // refuse unsigned manifests and manifests signed with any other key.\n\
         pub const OTA_PUBLIC_KEY: [u8; 32] = [\n",
    );
    for row in public.chunks(8) {
        let row: Vec<String> = row.iter().map(|b| format!("0x{b:02x}")).collect();
        let _ = writeln!(s, "    {},", row.join(", "));
    }
    s.push_str("];\n");
    s
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the secret readable by its owner only, from the moment it exists.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let context = || format!("cannot write {}", path.display());
    // A file left by an earlier key (--force) may carry wider permissions.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).with_context(context),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(context)?;
    file.write_all(bytes).with_context(context)?;
    file.sync_all().with_context(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_constant_lists_every_byte() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let s = rust_constant(&key);
        assert!(s.contains("pub const OTA_PUBLIC_KEY: [u8; 32] = [\n    0x00, 0x01,"));
        assert_eq!(s.matches("0x").count(), 32);
        assert!(s.ends_with("0x1f,\n];\n"), "{s}");
    }
}
