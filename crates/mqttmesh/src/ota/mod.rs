//! `mqttmesh ota`: upload a firmware image to every node running a firmware ID, or to
//! named nodes, over the broker, and report per node how it ended.
//!
//! Two exchanges: v2 (default; `docs/PROTOCOL.md` "OTA v2": a signed manifest, chunks
//! streamed to all targets at once, resends of only what nodes report missing) in
//! [`v2`], and the original one (`--compat`; `../shared/spec/compat.md` "OTA over
//! MQTT": stop-and-wait, 768-byte base64 chunks) in [`compat`], which adds the per-node
//! resend the original script lacked. Both end by waiting for each node to come back
//! running the new version. The exit code is 0 only when every targeted node did.

mod bus;
mod compat;
pub mod firmware;
mod progress;
mod run;
mod v2;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::brokerflags::BrokerFlags;
use bus::Bus;
use firmware::{Firmware, ImageFlags};
use progress::Progress;
use run::{Opts, Run, Targets};

/// Exit code when some targeted node did not end updated.
pub const EXIT_NOT_ALL_UPDATED: u8 = 3;

/// `mqttmesh ota` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every targeted node ended running the new \
    version, 3 when some did not (the table says why), 1 when the upload could not start."
)]
pub struct OtaArgs {
    #[command(flatten)]
    image: ImageFlags,
    /// Update only these nodes (IDs as `mqttmesh topology` shows them), each addressed by
    /// its ID; they must run --id.
    #[arg(long = "node", value_name = "ID", num_args = 1..)]
    nodes: Vec<String>,
    /// Use the original exchange, which nodes running the original firmware speak:
    /// stop-and-wait, base64 chunks, MD5 only (no signature).
    #[arg(long)]
    compat: bool,
    /// Sign the manifest with this secret key (from `mqttmesh keygen`); nodes configured
    /// with a public key refuse anything else.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["compat", "manifest"])]
    key: Option<PathBuf>,
    /// Send this manifest, signed offline with `mqttmesh sign`, instead of signing here.
    #[arg(long, value_name = "FILE", conflicts_with = "compat")]
    manifest: Option<PathBuf>,
    /// Bytes per chunk. v2: a multiple of 64 in 64..=1024 (default 1024); compat: at
    /// most 768 (default 768).
    #[arg(long, value_name = "N")]
    chunk_size: Option<u16>,
    /// Let nodes that refuse downgrades install this image over a newer version.
    #[arg(long, requires = "key")]
    allow_downgrade: bool,
    /// v2: chunks per second at most; the sender slows down while nodes report losses.
    #[arg(long, value_name = "CHUNKS_PER_SEC", default_value_t = 200.0)]
    rate: f64,
    /// Seconds to wait for a node's answer before asking again (compat: each chunk;
    /// v2: each status round).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    timeout: u64,
    /// How often to ask a silent node again before it counts as unreachable.
    #[arg(long, value_name = "N", default_value_t = 5)]
    retries: u32,
    /// Seconds to collect the nodes that take part; ends early once every --node
    /// answered, or 3 s after the last new answer (longer if the first answer took
    /// longer).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    discover: u64,
    /// Seconds to wait after `flash` for a node to come back running the new version.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    boot_timeout: u64,
    #[command(flatten)]
    broker: BrokerFlags,
}

/// `mqttmesh ota`.
pub async fn run(args: OtaArgs) -> Result<ExitCode> {
    let fw = args.image.load()?;
    let opts = opts(&args)?;
    let targets = targets(&args, &fw)?;
    let plan = plan(&args, &fw)?;
    let (units, unit) = match &plan {
        Plan::Compat { .. } => (fw.bytes.len() as u64, "bytes"),
        Plan::V2(m) => (u64::from(m.chunk_count()), "chunks"),
    };
    let whom = match &targets {
        Targets::Firmware(t) => format!("every node running firmware {t}"),
        Targets::Nodes(ids) => ids.iter().cloned().collect::<Vec<_>>().join(", "),
    };
    println!(
        "{}: {} bytes, v{}{}; {} exchange to {whom}",
        fw.path,
        fw.bytes.len(),
        fw.version,
        fw.project
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        if matches!(plan, Plan::Compat { .. }) {
            "compat"
        } else {
            "v2"
        },
    );
    let filters: &[&str] = match plan {
        Plan::Compat { .. } => &["+/ota/#", "+/fw"],
        Plan::V2(_) => &["+/ota2/+", "+/fw"],
    };
    let bus = Bus::connect(&args.broker, "ota", filters).await?;
    let mut run = Run::new(bus, Progress::new(units, unit), targets, opts);
    let result = match plan {
        Plan::Compat { chunk } => compat::upload(&mut run, &fw, chunk).await,
        Plan::V2(manifest) => v2::upload(&mut run, &fw, manifest).await,
    };
    run.progress.clear();
    let (bus, rows) = run.finish();
    bus.close().await;
    result?;
    print!("{}", progress::summary(&rows));
    let updated = rows.iter().filter(|r| r.outcome.is_updated()).count();
    if updated == rows.len() {
        println!("all {updated} nodes updated to v{}", fw.version);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: {} of {} targeted nodes did not end updated (see the table above)",
            rows.len() - updated,
            rows.len()
        );
        Ok(ExitCode::from(EXIT_NOT_ALL_UPDATED))
    }
}

/// What goes on the wire.
enum Plan {
    Compat { chunk: usize },
    V2(mqttmesh_core::ota::v2::Manifest),
}

fn plan(args: &OtaArgs, fw: &Firmware) -> Result<Plan> {
    if args.compat {
        let chunk = usize::from(args.chunk_size.unwrap_or(compat::CHUNK as u16));
        if chunk == 0 || chunk > compat::CHUNK {
            bail!(
                "--chunk-size {chunk}: the original exchange takes 1 to {} bytes per chunk",
                compat::CHUNK
            );
        }
        return Ok(Plan::Compat { chunk });
    }
    if let Some(path) = &args.manifest {
        let m = firmware::load_manifest(path, fw)?;
        if args.chunk_size.is_some_and(|c| c != m.chunk_size) {
            bail!(
                "--chunk-size differs from the manifest's ({}); drop it",
                m.chunk_size
            );
        }
        return Ok(Plan::V2(m));
    }
    let mut m = firmware::manifest(fw, args.chunk_size.unwrap_or(1024), args.allow_downgrade)?;
    match &args.key {
        Some(path) => firmware::sign(&mut m, &crate::keys::load_secret(path)?),
        None => eprintln!(
            "note: the manifest is unsigned; nodes configured with a public key refuse it \
             (make a key pair with `mqttmesh keygen`, then pass --key)"
        ),
    }
    Ok(Plan::V2(m))
}

fn opts(args: &OtaArgs) -> Result<Opts> {
    if !(args.rate.is_finite() && args.rate >= 1.0) {
        bail!("--rate {} must be at least 1 chunk per second", args.rate);
    }
    if args.timeout == 0 || args.discover == 0 || args.boot_timeout == 0 {
        bail!("--timeout, --discover and --boot-timeout must be at least 1 second");
    }
    Ok(Opts {
        timeout: Duration::from_secs(args.timeout),
        retries: args.retries,
        discover: Duration::from_secs(args.discover),
        boot_timeout: Duration::from_secs(args.boot_timeout),
        rate: args.rate,
    })
}

fn targets(args: &OtaArgs, fw: &Firmware) -> Result<Targets> {
    if args.nodes.is_empty() {
        return Ok(Targets::Firmware(fw.target()));
    }
    for id in &args.nodes {
        if id.is_empty() || id.contains(['/', '+', '#']) || id.len() > 24 {
            bail!("--node {id:?} is not a node ID (e.g. 00A1B2, as `mqttmesh topology` shows)");
        }
        if matches!(id.as_str(), "ota" | "ota2" | "fw" | "broadcast") {
            bail!("--node {id:?} is a reserved topic level, not a node ID");
        }
    }
    Ok(Targets::Nodes(args.nodes.iter().cloned().collect()))
}
