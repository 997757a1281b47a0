//! Fault schedules for `mqttmesh sim` (virtual and real-socket): the `--fault` syntax,
//! a scenario file of such lines, and the per-fault report.
//!
//! One fault per spec: `at=<time> <kind> [key=value]...`, times as `30s`, `500ms`,
//! `2m` or bare seconds. Kinds:
//!
//! - `crash node=<N|relay> [for=<time>]`: the node loses power (links die silently);
//!   with `for`, it powers on again after that long;
//! - `restart node=<N|relay>`: the node reboots;
//! - `cut node=<N|relay>`: its link to its parent breaks silently;
//! - `router-down for=<time>`: the router disappears, then comes back;
//! - `broker-restart [for=<time>]`: the broker stops (sessions and retained messages
//!   lost), and starts again after `for` (default at once);
//! - `loss p=<0..1> [for=<time>]`: frames are lost on the air (and resent);
//! - `latency ms=<ms> [for=<time>]`: per-hop latency;
//! - `move node=<N|relay> x=<m> y=<m>`: the node moves (positional topologies).
//!
//! `relay` picks, with the run's seed, a node that has children at that moment.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

/// Which node a fault hits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Node by index (as in the report's node list).
    Index(usize),
    /// A node with children, picked with the seed when the fault happens.
    Relay,
}

/// What happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Power loss (revived after `for`).
    Crash(Target),
    /// Reboot.
    Restart(Target),
    /// The node's parent link breaks silently.
    Cut(Target),
    /// Router away for `for`.
    RouterDown,
    /// Broker stopped for `for` (zero: restarted at once).
    BrokerRestart,
    /// Loss probability for `for` (or the rest of the run).
    Loss(f64),
    /// Per-hop latency for `for` (or the rest of the run).
    Latency(Duration),
    /// The node moves to (x, y).
    Move(Target, f64, f64),
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// The spec as written.
    pub spec: String,
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub kind: Kind,
    /// How long it lasts (`None`: instantaneous or permanent).
    pub duration: Option<Duration>,
}

/// What a fault did, for the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FaultReport {
    /// The spec.
    pub fault: String,
    /// The node it hit, if any.
    pub node: Option<String>,
    /// When it started, ms from the start of the run.
    pub at_ms: u64,
    /// When it ended (the node powered on, the router back...), ms.
    pub end_ms: u64,
    /// From the end until every node that can reach the router was online again, ms
    /// (null: not healed before the run ended).
    pub heal_ms: Option<u64>,
    /// Most nodes offline at once from the start until healed.
    pub offline_peak: usize,
    /// Demo-app messages published from the start until healed that never arrived.
    pub messages_lost: u64,
    /// Demo-app messages that arrived more than once in that window.
    pub duplicates: u64,
}

/// Parses a time: `30s`, `500ms`, `2m` or bare seconds (fractions allowed).
pub fn parse_time(text: &str) -> Result<Duration> {
    let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = num
        .parse()
        .map_err(|_| anyhow!("{text:?} is not a time (e.g. 30s, 500ms, 2m)"))?;
    if !value.is_finite() || value < 0.0 {
        bail!("{text:?} is not a time (e.g. 30s, 500ms, 2m)");
    }
    Ok(Duration::from_secs_f64(value * scale))
}

fn parse_target(value: &str) -> Result<Target> {
    if value == "relay" {
        return Ok(Target::Relay);
    }
    value
        .parse()
        .map(Target::Index)
        .map_err(|_| anyhow!("node={value:?}: expected a node index or `relay`"))
}

fn parse_number(key: &str, value: &str) -> Result<f64> {
    value
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| anyhow!("{key}={value:?} is not a number"))
}

/// Parses one fault spec.
pub fn parse(spec: &str) -> Result<Fault> {
    let mut at = None;
    let mut kind_word = None;
    let mut duration = None;
    let mut params: Vec<(&str, &str)> = Vec::new();
    for token in spec.split_whitespace() {
        match token.split_once('=') {
            Some(("at", v)) => at = Some(parse_time(v)?),
            Some(("for", v)) => duration = Some(parse_time(v)?),
            Some((k, v)) => params.push((k, v)),
            None if kind_word.is_none() => kind_word = Some(token),
            None => bail!("unexpected word {token:?}"),
        }
    }
    let at = at.ok_or_else(|| anyhow!("missing at=<time>"))?;
    let word = kind_word.ok_or_else(|| anyhow!("missing the fault kind (crash, restart, cut, router-down, broker-restart, loss, latency, move)"))?;
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .ok_or_else(|| anyhow!("{word} needs {key}=..."))
    };
    let allowed: &[&str] = match word {
        "crash" | "restart" | "cut" => &["node"],
        "router-down" | "broker-restart" => &[],
        "loss" => &["p"],
        "latency" => &["ms"],
        "move" => &["node", "x", "y"],
        other => bail!("unknown fault kind {other:?} (crash, restart, cut, router-down, broker-restart, loss, latency, move)"),
    };
    if let Some((k, _)) = params.iter().find(|(k, _)| !allowed.contains(k)) {
        bail!("{word} does not take {k}=");
    }
    let kind = match word {
        "crash" => Kind::Crash(parse_target(get("node")?)?),
        "restart" => Kind::Restart(parse_target(get("node")?)?),
        "cut" => Kind::Cut(parse_target(get("node")?)?),
        "router-down" => {
            if duration.is_none() {
                bail!("router-down needs for=<time>");
            }
            Kind::RouterDown
        }
        "broker-restart" => Kind::BrokerRestart,
        "loss" => {
            let p = parse_number("p", get("p")?)?;
            if !(0.0..1.0).contains(&p) {
                bail!("loss p={p} must be at least 0 and below 1");
            }
            Kind::Loss(p)
        }
        "latency" => Kind::Latency(Duration::from_secs_f64(
            parse_number("ms", get("ms")?)?.max(0.0) / 1000.0,
        )),
        _ => Kind::Move(
            parse_target(get("node")?)?,
            parse_number("x", get("x")?)?,
            parse_number("y", get("y")?)?,
        ),
    };
    if matches!(kind, Kind::Restart(_) | Kind::Cut(_) | Kind::Move(..)) && duration.is_some() {
        bail!("{word} is instantaneous: it takes no for=");
    }
    Ok(Fault {
        spec: spec.split_whitespace().collect::<Vec<_>>().join(" "),
        at,
        kind,
        duration,
    })
}

/// The faults of `--fault` flags and a `--faults` file (one spec per line, `#`
/// comments), ordered by time.
pub fn load(flags: &[String], file: Option<&Path>) -> Result<Vec<Fault>> {
    let mut out = Vec::new();
    for spec in flags {
        out.push(parse(spec).with_context(|| format!("--fault {spec:?}"))?);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the --faults file {}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            out.push(parse(line).with_context(|| format!("{}:{}", path.display(), i + 1))?);
        }
    }
    out.sort_by_key(|f| f.at);
    Ok(out)
}

impl Fault {
    /// When the fault ends.
    pub fn end(&self) -> Duration {
        self.at + self.duration.unwrap_or(Duration::ZERO)
    }
}

/// splitmix64: picks relays reproducibly.
pub fn pick(seed: u64, salt: u64, n: usize) -> usize {
    let mut z = seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // Cannot truncate: the result is below n.
    (z % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let f = parse("at=30s crash node=5 for=10s").unwrap();
        assert_eq!(f.at, Duration::from_secs(30));
        assert_eq!(f.kind, Kind::Crash(Target::Index(5)));
        assert_eq!(f.end(), Duration::from_secs(40));
        assert_eq!(
            parse("at=1m restart node=relay").unwrap().kind,
            Kind::Restart(Target::Relay)
        );
        assert_eq!(
            parse("at=5 cut node=2").unwrap().kind,
            Kind::Cut(Target::Index(2))
        );
        assert_eq!(
            parse("at=5 router-down for=20s").unwrap().kind,
            Kind::RouterDown
        );
        assert_eq!(
            parse("at=5 broker-restart").unwrap().kind,
            Kind::BrokerRestart
        );
        assert_eq!(
            parse("at=5 loss p=0.1 for=5s").unwrap().kind,
            Kind::Loss(0.1)
        );
        assert_eq!(
            parse("at=5 latency ms=50").unwrap().kind,
            Kind::Latency(Duration::from_millis(50))
        );
        assert_eq!(
            parse("at=500ms move node=3 x=10 y=-4.5").unwrap().kind,
            Kind::Move(Target::Index(3), 10.0, -4.5)
        );
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        for (spec, needle) in [
            ("crash node=1", "at="),
            ("at=1s", "kind"),
            ("at=1s explode", "unknown fault kind"),
            ("at=1s crash", "node="),
            ("at=1s crash node=x", "relay"),
            ("at=1s router-down", "for="),
            ("at=1s loss p=2", "below 1"),
            ("at=xs crash node=1", "not a time"),
            ("at=1s restart node=1 for=2s", "instantaneous"),
            ("at=1s crash node=1 p=3", "does not take"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
    }
}
