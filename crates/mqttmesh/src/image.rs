//! `mqttmesh make-image` and `mqttmesh image-info`: ESP-IDF application images to test
//! OTA with, and what an image says about itself (`mqttmesh_host::image`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use mqttmesh_host::image::{self, MIN_IMAGE_SIZE};

/// Longest version or project name an `esp_app_desc_t` holds (32 bytes with the NUL).
const MAX_NAME: usize = 31;

/// `mqttmesh make-image` arguments.
#[derive(Debug, Args)]
pub struct MakeImageArgs {
    /// Version the image carries in its application descriptor (at most 31 bytes).
    #[arg(long)]
    version: String,
    /// Project name in the descriptor (at most 31 bytes).
    #[arg(long, default_value = "mqttmesh")]
    project: String,
    /// Image size: bytes, or with a K/KiB or M/MiB suffix, or 0x… hex. Rounded up to a
    /// multiple of 16, as ESP images are.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    size: usize,
    /// Seed of the filler bytes (the same arguments always give the same image).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// File to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// `mqttmesh image-info` arguments.
#[derive(Debug, Args)]
pub struct ImageInfoArgs {
    /// An ESP-IDF application image (`.bin`).
    file: PathBuf,
}

/// Parses `1048576`, `0x100000`, `512K`, `512KiB`, `1M`, `1MiB`.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| c.is_ascii_alphabetic() && c != 'x') {
        Some(i) if !t.starts_with("0x") => (&t[..i], &t[i..]),
        _ => (t, ""),
    };
    let n = match digits.strip_prefix("0x") {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => digits.parse(),
    }
    .map_err(|_| format!("`{s}` is not a size; use e.g. 1048576, 0x100000, 512K or 1MiB"))?;
    let unit = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        other => return Err(format!("unknown size unit `{other}`; use K, KiB, M or MiB")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `mqttmesh make-image`.
pub fn make(args: MakeImageArgs) -> Result<ExitCode> {
    for (flag, value) in [("--version", &args.version), ("--project", &args.project)] {
        if value.len() > MAX_NAME || value.contains('\0') {
            bail!(
                "{flag} `{value}` must be at most {MAX_NAME} bytes without NUL \
                 (the ESP-IDF application descriptor holds no more)"
            );
        }
    }
    let bytes = image::make_test_image(&args.version, &args.project, args.size, args.seed);
    std::fs::write(&args.out, &bytes)
        .with_context(|| format!("cannot write the image to {}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    let note = if bytes.len() == args.size {
        String::new()
    } else {
        format!(
            " (asked {}: ESP images are multiples of 16 bytes, at least {MIN_IMAGE_SIZE})",
            args.size
        )
    };
    println!("  size     {} bytes{note}", bytes.len());
    println!("  version  {}", args.version);
    println!("  project  {}", args.project);
    println!("  sha256   {}", hex(&image::sha256(&bytes)));
    Ok(ExitCode::SUCCESS)
}

/// `mqttmesh image-info`: exits non-zero when the checksum or hash is wrong.
pub fn info(args: ImageInfoArgs) -> Result<ExitCode> {
    let path = args.file.display();
    let bytes = std::fs::read(&args.file).with_context(|| format!("cannot read {path}"))?;
    let desc = image::app_descriptor(&bytes).with_context(|| {
        format!("{path} is not an ESP-IDF application image (make one with `mqttmesh make-image`)")
    })?;
    let verified = image::verify_image(&bytes);
    println!("{path}");
    println!("  size       {} bytes", bytes.len());
    println!("  version    {}", desc.version);
    println!("  project    {}", desc.project_name);
    println!("  secure     {}", desc.secure_version);
    println!("  built      {} {}", desc.date, desc.time);
    println!("  idf        {}", desc.idf_ver);
    if let Ok(info) = image::inspect(&bytes) {
        println!("  chip id    {}", info.chip_id);
        println!("  segments   {}", info.segments.len());
    }
    println!("  sha256     {}", hex(&image::sha256(&bytes)));
    match verified {
        Ok(()) => {
            println!("  checksum   ok");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("  checksum   INVALID: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_units_and_hex() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0x100000"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64kib"), Ok(64 << 10));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("abc").is_err());
        assert!(parse_size("").is_err());
    }
}
