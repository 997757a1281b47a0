//! What the user sees during and after an upload: one bar per node and an overall bar
//! in a terminal (a line every few seconds otherwise), and the summary table.

use std::collections::BTreeMap;
use std::fmt;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

/// Without a terminal, a progress line this often.
const LINE_EVERY: Duration = Duration::from_secs(3);

/// How an upload ended for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Back on the mesh, running this version.
    Updated(String),
    /// The node refused the upload (its reason).
    Refused(String),
    /// The node stopped answering (where).
    Unreachable(String),
    /// Anything else that went wrong (what).
    Failed(String),
}

impl Outcome {
    /// Whether the node ended updated.
    pub fn is_updated(&self) -> bool {
        matches!(self, Outcome::Updated(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Updated(v) => write!(f, "updated v{v}"),
            Outcome::Refused(why) => write!(f, "refused: {why}"),
            Outcome::Unreachable(when) => write!(f, "unreachable ({when})"),
            Outcome::Failed(what) => write!(f, "failed: {what}"),
        }
    }
}

/// Per-node and overall progress, in units (chunks or bytes) of `total` per node.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    total: u64,
    unit: &'static str,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    bars: BTreeMap<String, ProgressBar>,
    done: BTreeMap<String, u64>,
    phase: String,
    last_line: Instant,
}

impl Progress {
    /// Bars on stderr when it is a terminal, else periodic lines.
    pub fn new(total: u64, unit: &'static str) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let multi = terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        let overall = multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(0));
            bar.set_style(style("{prefix:>8} [{bar:30}] {pos}/{len} {msg} {elapsed}"));
            bar.set_prefix("all");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            start: Instant::now(),
            total,
            unit,
            multi,
            overall,
            bars: BTreeMap::new(),
            done: BTreeMap::new(),
            phase: String::new(),
            last_line: Instant::now(),
        }
    }

    /// Time since the upload started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// What the upload is doing now (overall bar message, and printed without a terminal).
    pub fn phase(&mut self, text: &str) {
        self.phase = text.to_string();
        match &self.overall {
            Some(bar) => bar.set_message(text.to_string()),
            None => eprintln!("[{:>6.1}s] {text}", self.elapsed().as_secs_f64()),
        }
    }

    /// A node takes part.
    pub fn add(&mut self, node: &str) {
        if self.done.contains_key(node) {
            return;
        }
        self.done.insert(node.to_string(), 0);
        if let Some(multi) = &self.multi {
            let bar = multi.add(ProgressBar::new(self.total));
            bar.set_style(style("{prefix:>8} [{bar:30}] {pos}/{len} {msg}"));
            bar.set_prefix(node.to_string());
            self.bars.insert(node.to_string(), bar);
        }
        self.refresh_overall();
    }

    /// `node` holds `done` units.
    pub fn set(&mut self, node: &str, done: u64) {
        if let Some(d) = self.done.get_mut(node) {
            *d = done.min(self.total);
        }
        if let Some(bar) = self.bars.get(node) {
            bar.set_position(done);
        }
        self.refresh_overall();
    }

    /// A short note next to the node's bar (`verified`, `resend 3`, …).
    pub fn note(&mut self, node: &str, text: &str) {
        if let Some(bar) = self.bars.get(node) {
            bar.set_message(text.to_string());
        }
    }

    /// The node is done: its bar stops with the outcome.
    pub fn finish(&mut self, node: &str, outcome: &Outcome) {
        match self.bars.get(node) {
            Some(bar) => bar.abandon_with_message(outcome.to_string()),
            None => eprintln!("[{:>6.1}s] {node}: {outcome}", self.elapsed().as_secs_f64()),
        }
    }

    /// Without a terminal: a progress line when one is due.
    pub fn tick(&mut self) {
        if self.multi.is_some() || self.last_line.elapsed() < LINE_EVERY {
            return;
        }
        self.last_line = Instant::now();
        let min = self.done.values().min().copied().unwrap_or(0);
        let sum: u64 = self.done.values().sum();
        let all = self.total * self.done.len() as u64;
        eprintln!(
            "[{:>6.1}s] {}: {} nodes, {sum}/{all} {} in all, slowest {min}/{}",
            self.elapsed().as_secs_f64(),
            self.phase,
            self.done.len(),
            self.unit,
            self.total
        );
    }

    /// Removes the bars (before the summary is printed).
    pub fn clear(&mut self) {
        if let Some(bar) = &self.overall {
            bar.finish_and_clear();
        }
        if let Some(multi) = &self.multi {
            let _ = multi.clear();
        }
    }

    fn refresh_overall(&self) {
        if let Some(bar) = &self.overall {
            bar.set_length(self.total * self.done.len() as u64);
            bar.set_position(self.done.values().sum());
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// One row of the summary.
#[derive(Debug, Clone)]
pub struct Ended {
    /// Node ID.
    pub node: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When, from the start of the upload.
    pub after: Duration,
}

/// The summary table: node, outcome, time.
pub fn summary(rows: &[Ended]) -> String {
    let node_w = rows.iter().map(|r| r.node.len()).max().unwrap_or(0).max(4);
    let texts: Vec<String> = rows.iter().map(|r| r.outcome.to_string()).collect();
    let out_w = texts.iter().map(String::len).max().unwrap_or(0).max(7);
    let mut s = format!(
        "{:<node_w$}  {:<out_w$}  {:>8}\n",
        "node", "outcome", "time"
    );
    for (r, text) in rows.iter().zip(&texts) {
        let secs = format!("{:.1}s", r.after.as_secs_f64());
        s.push_str(&format!("{:<node_w$}  {text:<out_w$}  {secs:>8}\n", r.node));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_aligns_its_columns() {
        let rows = [
            Ended {
                node: "00A1B2".into(),
                outcome: Outcome::Updated("0.2".into()),
                after: Duration::from_millis(12_340),
            },
            Ended {
                node: "00C3D4".into(),
                outcome: Outcome::Refused("bad signature".into()),
                after: Duration::from_millis(900),
            },
        ];
        let table = summary(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("00A1B2  updated v0.2"), "{table}");
        assert!(
            lines[1].ends_with("12.3s") && lines[2].ends_with("0.9s"),
            "{table}"
        );
        assert_eq!(lines[1].len(), lines[2].len(), "{table}");
    }
}
