//! `mqttmesh`: the command-line tool of mqttmesh.
//!
//! Layer: on top of `mqttmesh-host`. Subcommands: `sim` (run an emulated mesh against
//! the embedded broker or any MQTT broker); `topology`, `monitor` and `forget` (look at
//! and tidy a running mesh through its broker); `ota`, `keygen`, `sign`, `make-image`
//! and `image-info` (firmware updates); `fingerprint` and `gen-cert` (certificates).

mod brokerflags;
mod certs;
mod forget;
mod image;
mod keys;
mod monitor;
mod nodeflags;
mod ota;
mod sim;
mod tlsflags;
mod topology;
mod tui;

use clap::{Parser, Subcommand};

/// Self-assembling WiFi mesh for ESP chips where every node reaches an MQTT broker.
#[derive(Debug, Parser)]
#[command(name = "mqttmesh", version, about)]
struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the enum does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run an emulated mesh of nodes on this machine (real TCP on loopback, real MQTT).
    Sim(sim::SimArgs),
    /// Print the mesh tree as the broker shows it (text, DOT, SVG, Mermaid or JSON).
    Topology(topology::TopologyArgs),
    /// Watch the mesh live through its broker (`--json`: one JSON line per change).
    Monitor(monitor::MonitorArgs),
    /// Clear a decommissioned node's retained topics at the broker.
    Forget(forget::ForgetArgs),
    /// Make an ESP-IDF application image to test OTA with (version in its descriptor).
    MakeImage(image::MakeImageArgs),
    /// Show what an ESP-IDF application image says about itself, and check it.
    ImageInfo(image::ImageInfoArgs),
    /// Upload a firmware image to the nodes running a firmware ID (or to named nodes).
    Ota(ota::OtaArgs),
    /// Make the Ed25519 key pair that signs OTA manifests (and its Rust constant).
    Keygen(keys::KeygenArgs),
    /// Sign an OTA manifest for an image offline (upload it with `ota --manifest`).
    Sign(keys::SignArgs),
    /// Print a TLS broker's certificate fingerprints (SHA-1, SHA-256) for pinning.
    Fingerprint(certs::fingerprint::FingerprintArgs),
    /// Make the self-signed mesh TLS certificate (ssl/server.cer, server.key, fingerprint).
    GenCert(certs::gencert::GenCertArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "error,rumqttd=off",
        1 => "info,rumqttd=warn",
        _ => "debug,rumqttd=info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Sim(args) => sim::run(args).await,
            Command::Topology(args) => topology::run(args).await,
            Command::Monitor(args) => monitor::run(args).await,
            Command::Forget(args) => forget::run(args).await,
            Command::MakeImage(args) => image::make(args),
            Command::ImageInfo(args) => image::info(args),
            Command::Ota(args) => ota::run(args).await,
            Command::Keygen(args) => keys::keygen(args),
            Command::Sign(args) => keys::sign(args),
            Command::Fingerprint(args) => certs::fingerprint::run(args),
            Command::GenCert(args) => certs::gencert::run(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
