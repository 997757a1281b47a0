//! `mqttmesh topology`: a one-shot picture of the mesh behind a broker, built from the
//! nodes' retained topics and their answers to a `fw` query, as text, DOT, SVG,
//! Mermaid or JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use mqttmesh_host::view::render::{render, Format};

use crate::brokerflags::BrokerFlags;
use crate::monitor::Monitor;

/// Output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// An indented tree.
    Text,
    /// Graphviz DOT.
    Dot,
    /// SVG (drawn by mqttmesh, no graphviz needed).
    Svg,
    /// A Mermaid flowchart.
    Mermaid,
    /// JSON with a `node_list` like `sim --report`.
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Text => Format::Text,
            FormatArg::Dot => Format::Dot,
            FormatArg::Svg => Format::Svg,
            FormatArg::Mermaid => Format::Mermaid,
            FormatArg::Json => Format::Json,
        }
    }
}

/// `mqttmesh topology` arguments.
#[derive(Debug, Args)]
pub struct TopologyArgs {
    #[command(flatten)]
    broker: BrokerFlags,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: FormatArg,
    /// Write here instead of to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Collect until no mesh-state message arrived for this long (at most 10 s).
    #[arg(long, value_name = "MS", default_value_t = 700)]
    settle_ms: u64,
    /// Only listen: do not send a `fw` query (firmware is then known only for nodes
    /// that joined through the mesh while we listened).
    #[arg(long)]
    passive: bool,
}

/// Runs `mqttmesh topology`.
pub async fn run(args: TopologyArgs) -> Result<ExitCode> {
    let settle = Duration::from_millis(args.settle_ms);
    let monitor = Monitor::start(&args.broker, "topology", settle, args.passive).await?;
    let snapshot = monitor.view().snapshot(Instant::now());
    monitor.close().await;
    if snapshot.nodes == 0 {
        eprintln!(
            "no node has published under {} on {}; check --out-topic and --broker",
            args.broker.out_topic,
            args.broker.address()
        );
    }
    let text = render(&snapshot, args.format.into());
    match &args.out {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "{} nodes ({} online) written to {}",
                snapshot.nodes,
                snapshot.online,
                path.display()
            );
        }
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error.
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        }
    }
    Ok(ExitCode::SUCCESS)
}
