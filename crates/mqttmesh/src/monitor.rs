//! `mqttmesh monitor`: watch the mesh live through its broker.
//!
//! [`Monitor`] is the part a front end plugs into: it connects, asks every node for its
//! firmware, collects the retained state until it settles, then yields [`Update`]s
//! (view events, broker connection changes) while keeping a [`MeshView`] current. The
//! JSON mode prints them as lines; in a terminal, [`crate::tui`] draws them.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use mqttmesh_host::view::command::Command;
use mqttmesh_host::view::watch::{self, WatchEvent, Watcher};
use mqttmesh_host::view::{MeshView, Snapshot, ViewEvent};
use serde::Serialize;

use crate::brokerflags::BrokerFlags;

/// Longest the initial collection of retained state may take.
pub const MAX_SETTLE: Duration = Duration::from_secs(10);

/// `mqttmesh monitor` arguments.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    broker: BrokerFlags,
    /// Print one JSON line per change instead of the terminal UI (also when stdout is
    /// not a terminal).
    #[arg(long)]
    json: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
    /// Collect retained state until no mesh-state message arrived for this long.
    #[arg(long, value_name = "MS", default_value_t = 700)]
    settle_ms: u64,
    /// Only listen: do not send the initial `fw` query.
    #[arg(long)]
    passive: bool,
}

/// What a [`Monitor`] yields.
#[derive(Debug, Clone)]
pub enum Update {
    /// The view changed.
    Events(Vec<ViewEvent>),
    /// The broker connection was lost or is back.
    Broker {
        /// Connected now.
        up: bool,
        /// What happened.
        detail: String,
    },
}

/// A live view of the mesh behind a broker.
#[derive(Debug)]
pub struct Monitor {
    watcher: Watcher,
    view: MeshView,
    in_prefix: String,
}

impl Monitor {
    /// Connects as `role`, sends a `fw` query unless `passive`, and collects until no
    /// mesh-state message arrived for `settle` (at most [`MAX_SETTLE`]).
    pub async fn start(
        flags: &BrokerFlags,
        role: &str,
        settle: Duration,
        passive: bool,
    ) -> Result<Monitor> {
        let filter = format!("{}#", flags.out_topic);
        let watcher = flags.connect(role, &[filter]).await?;
        let mut monitor = Monitor {
            watcher,
            view: MeshView::new(&flags.out_topic),
            in_prefix: flags.in_topic.clone(),
        };
        if !passive {
            monitor.send(&Command::FwQuery).await?;
        }
        watch::settle(&mut monitor.watcher, &mut monitor.view, settle, MAX_SETTLE)
            .await
            .context("lost the broker while collecting the mesh state")?;
        Ok(monitor)
    }

    /// The mesh as known now.
    pub fn view(&self) -> &MeshView {
        &self.view
    }

    /// Waits for the next change; `None` once the connection is gone for good.
    /// Messages that raise no event (an RSSI update, application traffic) still update
    /// [`Monitor::view`] but do not return, so a display also redraws on a timer
    /// (last seen and rates move with time anyway).
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            match self.watcher.recv().await? {
                WatchEvent::Message(d) => {
                    let events = watch::apply(&mut self.view, &d);
                    if !events.is_empty() {
                        return Some(Update::Events(events));
                    }
                }
                WatchEvent::Connection { up, detail } => {
                    return Some(Update::Broker { up, detail })
                }
                _ => {}
            }
        }
    }

    /// Sends a command to the nodes (never retained).
    pub async fn send(&mut self, command: &Command) -> Result<()> {
        let (topic, payload) = command.message(&self.in_prefix);
        self.watcher
            .publish(&topic, &payload, false)
            .await
            .with_context(|| format!("cannot publish {topic}"))
    }

    /// Disconnects from the broker.
    pub async fn close(self) {
        self.watcher.disconnect().await;
    }
}

/// Runs `mqttmesh monitor`.
pub async fn run(args: MonitorArgs) -> Result<ExitCode> {
    if !args.json && std::io::stdout().is_terminal() {
        let settle = Duration::from_millis(args.settle_ms);
        let monitor = Monitor::start(&args.broker, "monitor", settle, args.passive).await?;
        crate::tui::run(monitor, args.duration.map(Duration::from_secs)).await?;
        return Ok(ExitCode::SUCCESS);
    }
    run_json(args).await
}

async fn run_json(args: MonitorArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let settle = Duration::from_millis(args.settle_ms);
    let mut monitor = Monitor::start(&args.broker, "monitor", settle, args.passive).await?;
    let snapshot = monitor.view().snapshot(Instant::now());
    if !print_line(&SnapshotLine {
        t_ms: 0,
        event: "snapshot",
        snapshot: &snapshot,
    }) {
        return Ok(ExitCode::SUCCESS);
    }
    let end = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let until_end = async {
        match end {
            Some(t) => tokio::time::sleep_until(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_end);
    loop {
        let update = tokio::select! {
            u = monitor.next() => u,
            _ = &mut until_end => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let t_ms = started.elapsed().as_millis() as u64;
        let printed = match &update {
            None => bail!("the connection to the broker ended"),
            Some(Update::Events(events)) => events
                .iter()
                .all(|event| print_line(&EventLine { t_ms, event })),
            Some(Update::Broker { up, detail }) => print_line(&BrokerLine {
                t_ms,
                event: "broker",
                up: *up,
                detail,
            }),
        };
        if !printed {
            // The reader went away (`| head`): done, not an error.
            return Ok(ExitCode::SUCCESS);
        }
    }
    monitor.close().await;
    Ok(ExitCode::SUCCESS)
}

/// The first line of `monitor --json`.
#[derive(Debug, Serialize)]
struct SnapshotLine<'a> {
    t_ms: u64,
    event: &'static str,
    snapshot: &'a Snapshot,
}

/// A change: `t_ms` since start, then `event` and its fields.
#[derive(Debug, Serialize)]
struct EventLine<'a> {
    t_ms: u64,
    #[serde(flatten)]
    event: &'a ViewEvent,
}

/// The broker connection dropped (`up: false`) or returned.
#[derive(Debug, Serialize)]
struct BrokerLine<'a> {
    t_ms: u64,
    event: &'static str,
    up: bool,
    detail: &'a str,
}

/// Prints one JSON line; false when stdout is closed.
fn print_line(line: &impl Serialize) -> bool {
    let Ok(text) = serde_json::to_string(line) else {
        return true;
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
}
