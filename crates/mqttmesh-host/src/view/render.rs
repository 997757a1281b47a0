//! Renderers of a [`Snapshot`]: an indented text tree, Graphviz DOT, Mermaid, JSON,
//! and SVG drawn by our own layout ([`svg`]), so no external tool is needed.
//!
//! Node IDs and other texts come from the broker and may hold any character: each
//! format escapes them its own way.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::{NodeEntry, Snapshot, ROUTER};

pub use super::svg::svg;

/// Output formats of `mqttmesh topology`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// Indented tree for a terminal.
    Text,
    /// Graphviz DOT.
    Dot,
    /// SVG, laid out by [`svg`].
    Svg,
    /// A Mermaid flowchart.
    Mermaid,
    /// The [`Snapshot`] as pretty JSON.
    Json,
}

/// Renders `snapshot` in `format`.
pub fn render(snapshot: &Snapshot, format: Format) -> String {
    match format {
        Format::Text => text(snapshot),
        Format::Dot => dot(snapshot),
        Format::Svg => svg(snapshot),
        Format::Mermaid => mermaid(snapshot),
        Format::Json => json(snapshot),
    }
}

/// Pretty JSON of the snapshot (its `node_list` is shaped like the sim report's).
pub fn json(snapshot: &Snapshot) -> String {
    // Plain data with string keys and finite numbers: serialising cannot fail.
    let mut s = serde_json::to_string_pretty(snapshot).unwrap_or_default();
    s.push('\n');
    s
}

/// One-line summary of a node: firmware, RSSI, availability, e.g. `1337 v0.1, -61 dBm`.
pub fn summary(n: &NodeEntry) -> String {
    let mut parts = Vec::new();
    if let (Some(id), Some(v)) = (&n.firmware_id, &n.firmware_version) {
        parts.push(format!("{id} v{v}"));
    }
    if let Some(rssi) = n.rssi {
        parts.push(format!("{rssi} dBm"));
    }
    match n.available {
        Some(true) => {}
        Some(false) => parts.push("offline".into()),
        None => parts.push("availability unknown".into()),
    }
    parts.join(", ")
}

/// Nodes placed in the tree (they have a depth), by parent, in ID order.
pub(crate) fn children_of(snapshot: &Snapshot) -> BTreeMap<&str, Vec<&NodeEntry>> {
    let mut map: BTreeMap<&str, Vec<&NodeEntry>> = BTreeMap::new();
    for n in &snapshot.node_list {
        if let (Some(parent), Some(_)) = (&n.parent, n.depth) {
            map.entry(parent.as_str()).or_default().push(n);
        }
    }
    map
}

/// The tree under the router as indented text; nodes outside it are listed after.
pub fn text(snapshot: &Snapshot) -> String {
    fn walk(
        kids: &BTreeMap<&str, Vec<&NodeEntry>>,
        parent: &str,
        indent: usize,
        seen: &mut HashSet<String>,
        out: &mut String,
    ) {
        for k in kids.get(parent).into_iter().flatten() {
            if !seen.insert(k.id.clone()) {
                continue;
            }
            let summary = summary(k);
            let _ = write!(out, "{}└─ {}", "   ".repeat(indent), clean(&k.id));
            if !summary.is_empty() {
                let _ = write!(out, "  {}", clean(&summary));
            }
            out.push('\n');
            walk(kids, &k.id, indent + 1, seen, out);
        }
    }
    let kids = children_of(snapshot);
    let mut out = format!("{ROUTER}\n");
    let mut seen = HashSet::new();
    walk(&kids, ROUTER, 0, &mut seen, &mut out);
    let outside: Vec<String> = snapshot
        .node_list
        .iter()
        .filter(|n| !seen.contains(&n.id))
        .map(|n| format!("{} ({})", clean(&n.id), clean(&summary(n))))
        .collect();
    if !outside.is_empty() {
        let _ = writeln!(out, "not in the tree: {}", outside.join(", "));
    }
    out
}

/// Control characters (a terminal escape in a node ID) replaced by `?`.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Graphviz DOT: the router, every node as a box (green online, grey offline), an
/// edge from each parent to its children.
pub fn dot(snapshot: &Snapshot) -> String {
    let mut out = String::from(
        "digraph mesh {\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n",
    );
    let _ = writeln!(
        out,
        "  {} [label=\"router\", shape=ellipse, fillcolor=\"#e0e0e0\"];",
        dot_id(ROUTER)
    );
    for n in &snapshot.node_list {
        let mut label = n.id.clone();
        let summary = summary(n);
        if !summary.is_empty() {
            label = format!("{label}\n{summary}");
        }
        let (fill, style) = if n.online {
            ("#c8e6c9", "rounded,filled")
        } else {
            ("#eeeeee", "rounded,filled,dashed")
        };
        let _ = writeln!(
            out,
            "  {} [label={}, fillcolor=\"{fill}\", style=\"{style}\"];",
            node_key(&n.id),
            dot_string(&label)
        );
    }
    for n in &snapshot.node_list {
        if let Some(parent) = &n.parent {
            let from = if parent == ROUTER {
                dot_id(ROUTER)
            } else {
                node_key(parent)
            };
            let _ = writeln!(out, "  {from} -> {};", node_key(&n.id));
        }
    }
    out.push_str("}\n");
    out
}

/// Nodes are keyed `n:<id>` so that a node called `router` is not the router.
fn node_key(id: &str) -> String {
    dot_string(&format!("n:{id}"))
}

fn dot_id(s: &str) -> String {
    dot_string(s)
}

/// A DOT quoted string: `"` and `\` escaped, line breaks as `\n`, other controls dropped.
fn dot_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Mermaid flowchart, top down; offline nodes in the `offline` class.
pub fn mermaid(snapshot: &Snapshot) -> String {
    let mut out = String::from("flowchart TD\n  router([\"router\"])\n");
    let key: BTreeMap<&str, String> = snapshot
        .node_list
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), format!("n{i}")))
        .collect();
    for (i, n) in snapshot.node_list.iter().enumerate() {
        let summary = summary(n);
        let mut label = mermaid_text(&n.id);
        if !summary.is_empty() {
            label = format!("{label}<br/>{}", mermaid_text(&summary));
        }
        let _ = writeln!(out, "  n{i}[\"{label}\"]");
    }
    for (i, n) in snapshot.node_list.iter().enumerate() {
        let from = match n.parent.as_deref() {
            None => continue,
            Some(ROUTER) => "router",
            Some(p) => match key.get(p) {
                Some(k) => k.as_str(),
                None => continue,
            },
        };
        let _ = writeln!(out, "  {from} --> n{i}");
    }
    out.push_str("  classDef online fill:#c8e6c9,stroke:#2e7d32\n");
    out.push_str("  classDef offline fill:#eeeeee,stroke:#9e9e9e,stroke-dasharray:4 3\n");
    for (class, online) in [("online", true), ("offline", false)] {
        let members: Vec<String> = (0..snapshot.node_list.len())
            .filter(|&i| snapshot.node_list[i].online == online)
            .map(|i| format!("n{i}"))
            .collect();
        if !members.is_empty() {
            let _ = writeln!(out, "  class {} {class}", members.join(","));
        }
    }
    out
}

/// Text inside a quoted Mermaid label: its entity codes for characters that would end
/// the label or start markup.
fn mermaid_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    #[test]
    fn dot_has_every_node_and_edge_and_escapes() {
        let s = sample();
        let dot = dot(&s);
        assert!(dot.starts_with("digraph mesh {"));
        assert!(dot.contains("\"router\" -> \"n:00A1B2\";"), "{dot}");
        assert!(dot.contains("\"n:00A1B2\" -> \"n:00C3D4\";"), "{dot}");
        assert!(dot.contains("\"n:we\\\"ird\\\\\""), "{dot}");
        assert!(dot.trim_end().ends_with('}'));
    }

    #[test]
    fn mermaid_escapes_labels_and_classes_offline_nodes() {
        let s = sample();
        let m = mermaid(&s);
        assert!(m.starts_with("flowchart TD\n"));
        assert!(m.contains("we#quot;ird\\"), "{m}");
        assert!(m.contains("router --> n0"), "{m}");
        assert!(m.contains("class ") && m.contains(" offline\n"), "{m}");
    }

    #[test]
    fn text_lists_the_tree_then_the_rest() {
        let t = text(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "router");
        assert!(lines[1].starts_with("└─ 00A1B2  1337 v0.1"), "{t}");
        assert!(lines[2].starts_with("   └─ 00C3D4"), "{t}");
        assert!(t.contains("not in the tree: "), "{t}");
    }

    #[test]
    fn json_round_trips() {
        let s = sample();
        let back: Snapshot = serde_json::from_str(&json(&s)).unwrap();
        assert_eq!(back, s);
    }
}
