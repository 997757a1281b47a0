//! `mqttmesh forget NODE`: clear a decommissioned node's retained topics at the broker
//! (its `info/*` and anything else it left retained under `<out><NODE>/`), so that
//! dashboards and `topology` stop listing it.

use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use mqttmesh_core::topic::Info;
use mqttmesh_host::view::watch::{WatchEvent, Watcher};
use tokio::time::Instant;

use crate::brokerflags::BrokerFlags;
use crate::monitor::MAX_SETTLE;

/// How long the broker may take to acknowledge the clearing publications.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// `mqttmesh forget` arguments.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The node ID (the topic level after the out prefix, e.g. 00A1B2).
    node: String,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long, short)]
    yes: bool,
    #[command(flatten)]
    broker: BrokerFlags,
    /// Collect retained topics until none arrived for this long.
    #[arg(long, value_name = "MS", default_value_t = 700)]
    settle_ms: u64,
}

/// Runs `mqttmesh forget`.
pub async fn run(args: ForgetArgs) -> Result<ExitCode> {
    let node = &args.node;
    if node.is_empty() || node.contains(['/', '+', '#']) || node.chars().any(char::is_control) {
        bail!("{node:?} is not a node ID (one topic level, e.g. 00A1B2)");
    }
    if !args.yes && !std::io::stdin().is_terminal() {
        bail!("stdin is not a terminal, so forget cannot ask: pass --yes to clear {node}'s retained topics");
    }
    let base = format!("{}{node}/", args.broker.out_topic);
    let mut watcher = args.broker.connect("forget", &[format!("{base}#")]).await?;
    let settle = Duration::from_millis(args.settle_ms);
    let (seen, online) = collect_retained(&mut watcher, &base, settle).await?;
    let standard = Info::ALL.iter().map(|i| format!("{base}{}", i.subtopic()));
    let topics: BTreeSet<String> = seen.iter().cloned().chain(standard).collect();

    println!(
        "{} retained topic(s) of {node} found on {}; clearing:",
        seen.len(),
        watcher.address()
    );
    for t in &topics {
        println!("  {t}");
    }
    if !args.yes && !confirm(&format!("Clear these {} topics? [y/N] ", topics.len())).await? {
        println!("nothing cleared");
        return Ok(ExitCode::from(1));
    }
    for t in &topics {
        watcher.publish(t, b"", true).await?;
    }
    watcher
        .flush(ACK_TIMEOUT)
        .await
        .context("the broker did not confirm the clearing; run forget again")?;
    watcher.disconnect().await;
    println!("cleared {} topic(s) of {node}", topics.len());
    if online {
        eprintln!(
            "note: {node} said it is online; it publishes its info topics again when it reconnects"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Retained topics under `base` (the broker replays them on subscription) until none
/// arrived for `settle`; and whether the node's `info/available` said `online`.
async fn collect_retained(
    watcher: &mut Watcher,
    base: &str,
    settle: Duration,
) -> Result<(BTreeSet<String>, bool)> {
    let end = Instant::now() + MAX_SETTLE;
    let mut last = Instant::now();
    let mut seen = BTreeSet::new();
    let mut online = false;
    loop {
        let deadline = (last + settle).min(end);
        let event = tokio::select! {
            e = watcher.recv() => e,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        match event {
            Some(WatchEvent::Message(d)) if d.retained && !d.payload.is_empty() => {
                if d.topic == format!("{base}{}", Info::Available.subtopic()) {
                    online = d.payload == b"online";
                }
                seen.insert(d.topic);
                last = Instant::now();
            }
            Some(_) => {}
            None => bail!("lost the broker at {} while collecting", watcher.address()),
        }
    }
    Ok((seen, online))
}

/// Asks on stderr, reads a line from stdin.
async fn confirm(question: &str) -> Result<bool> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await
    .context("reading the answer")?
    .context("reading the answer from stdin")?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
