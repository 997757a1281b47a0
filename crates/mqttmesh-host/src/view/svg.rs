//! SVG of a [`Snapshot`], laid out by our own code: a layered tree with the router on
//! top and one row per depth. Leaves take consecutive columns and a parent sits
//! centred over its children, so edges never cross. Nodes outside the tree (offline,
//! or with no known path up) follow in rows of their own.
//!
//! Every text is XML-escaped, and characters XML 1.0 cannot carry are replaced, so the
//! output is well-formed whatever the broker held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use super::render::{children_of, summary};
use super::{NodeEntry, Snapshot, ROUTER};

const BOX_W: f64 = 136.0;
const BOX_H: f64 = 46.0;
const GAP_X: f64 = 16.0;
const ROW_H: f64 = 96.0;
const MARGIN: f64 = 24.0;
/// Room for the caption above the router.
const TOP: f64 = 40.0;
/// Columns of the rows of nodes outside the tree.
const OUTSIDE_COLUMNS: usize = 8;
/// Characters of a summary line that fit a box.
const LINE_CHARS: usize = 22;

/// Column (in box widths, may be fractional) and row of each drawn node.
type Layout<'a> = HashMap<&'a str, (f64, usize)>;

/// The snapshot as a standalone SVG document.
pub fn svg(snapshot: &Snapshot) -> String {
    let kids = children_of(snapshot);
    let mut layout: Layout<'_> = HashMap::new();
    let mut next_col = 0.0;
    let mut seen = HashSet::new();
    let router_col = place(&kids, ROUTER, 0, &mut next_col, &mut layout, &mut seen);
    let tree_rows = layout.values().map(|&(_, r)| r).max().unwrap_or(0);
    let outside: Vec<&NodeEntry> = snapshot
        .node_list
        .iter()
        .filter(|n| !layout.contains_key(n.id.as_str()))
        .collect();
    for (i, n) in outside.iter().enumerate() {
        let row = tree_rows + 1 + i / OUTSIDE_COLUMNS;
        layout.insert(n.id.as_str(), ((i % OUTSIDE_COLUMNS) as f64, row));
    }
    let cols = next_col
        .max(outside.len().min(OUTSIDE_COLUMNS) as f64)
        .max(1.0);
    let rows = layout.values().map(|&(_, r)| r).max().unwrap_or(0) + 1;
    let width = 2.0 * MARGIN + cols * (BOX_W + GAP_X) - GAP_X;
    let height = TOP + 2.0 * MARGIN + rows as f64 * ROW_H - (ROW_H - BOX_H);

    let mut out = String::new();
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"Helvetica, Arial, sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n\
         <text x=\"{MARGIN}\" y=\"{:.0}\" font-size=\"14\" fill=\"#333333\">{}</text>\n",
        MARGIN + 10.0,
        xml(&format!(
            "{}: {} nodes, {} online, max depth {}",
            snapshot.out_prefix, snapshot.nodes, snapshot.online, snapshot.max_depth
        ))
    );
    let centre = |col: f64, row: usize| {
        (
            MARGIN + col * (BOX_W + GAP_X) + BOX_W / 2.0,
            TOP + MARGIN + row as f64 * ROW_H + BOX_H / 2.0,
        )
    };
    // Edges first, so boxes are drawn over them.
    out.push_str("<g stroke=\"#757575\" stroke-width=\"1.5\" fill=\"none\">\n");
    for n in &snapshot.node_list {
        let Some(parent) = n.parent.as_deref() else {
            continue;
        };
        let from = if parent == ROUTER {
            Some((router_col, 0))
        } else {
            layout.get(parent).copied()
        };
        let (Some((pc, pr)), Some(&(c, r))) = (from, layout.get(n.id.as_str())) else {
            continue;
        };
        let (x1, y1) = centre(pc, pr);
        let (x2, y2) = centre(c, r);
        let dash = if n.depth.is_some() {
            ""
        } else {
            " stroke-dasharray=\"4 3\""
        };
        let _ = writeln!(
            out,
            "<line x1=\"{x1:.1}\" y1=\"{:.1}\" x2=\"{x2:.1}\" y2=\"{:.1}\"{dash}/>",
            y1 + BOX_H / 2.0,
            y2 - BOX_H / 2.0
        );
    }
    out.push_str("</g>\n");
    let (rx, ry) = centre(router_col, 0);
    let _ = writeln!(
        out,
        "<g class=\"router\"><ellipse cx=\"{rx:.1}\" cy=\"{ry:.1}\" rx=\"{:.1}\" ry=\"{:.1}\" \
         fill=\"#e0e0e0\" stroke=\"#616161\"/><text x=\"{rx:.1}\" y=\"{:.1}\" \
         text-anchor=\"middle\" font-size=\"13\">router</text></g>",
        BOX_W / 2.0,
        BOX_H / 2.0,
        ry + 4.0
    );
    for n in &snapshot.node_list {
        if let Some(&(c, r)) = layout.get(n.id.as_str()) {
            let (x, y) = centre(c, r);
            node_box(&mut out, n, x - BOX_W / 2.0, y - BOX_H / 2.0);
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Places `parent`'s subtree; returns the column of `parent`.
fn place<'a>(
    kids: &BTreeMap<&str, Vec<&'a NodeEntry>>,
    parent: &str,
    row: usize,
    next_col: &mut f64,
    layout: &mut Layout<'a>,
    seen: &mut HashSet<&'a str>,
) -> f64 {
    let mut cols = Vec::new();
    for k in kids.get(parent).into_iter().flatten() {
        // Nodes with a depth chain up to the router without loops; `seen` is a guard.
        if seen.insert(k.id.as_str()) {
            let c = place(kids, &k.id, row + 1, next_col, layout, seen);
            layout.insert(k.id.as_str(), (c, row + 1));
            cols.push(c);
        }
    }
    match (cols.first(), cols.last()) {
        (Some(a), Some(b)) => (a + b) / 2.0,
        _ => {
            let c = *next_col;
            *next_col += 1.0;
            c
        }
    }
}

fn node_box(out: &mut String, n: &NodeEntry, x: f64, y: f64) {
    let (fill, stroke, dash, ink) = match n.available {
        Some(true) => ("#c8e6c9", "#2e7d32", "", "#1b1b1b"),
        Some(false) => ("#eeeeee", "#9e9e9e", " stroke-dasharray=\"4 3\"", "#757575"),
        None => ("#fff3cd", "#b08900", "", "#1b1b1b"),
    };
    let state = if n.online { "online" } else { "offline" };
    let _ = writeln!(
        out,
        "<g class=\"node {state}\"><title>{}</title>\
         <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\" \
         fill=\"{fill}\" stroke=\"{stroke}\"{dash}/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"13\" \
         font-weight=\"bold\" fill=\"{ink}\">{}</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\" fill=\"{ink}\">{}</text></g>",
        xml(&tooltip(n)),
        x + BOX_W / 2.0,
        y + 19.0,
        xml(&n.id),
        x + BOX_W / 2.0,
        y + 36.0,
        xml(&shorten(&summary(n), LINE_CHARS)),
    );
}

fn tooltip(n: &NodeEntry) -> String {
    let mut t = n.id.clone();
    let fields = [
        ("parent", n.parent.clone()),
        ("depth", n.depth.map(|d| d.to_string())),
        ("IP", n.ip.clone().or_else(|| n.ip_local.clone())),
        ("MAC", n.mac.clone()),
        ("AP", n.ap_mac.clone()),
        ("reset", n.reset_reason.clone()),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            let _ = write!(t, "\n{name}: {v}");
        }
    }
    t
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

/// XML text and attribute escaping; characters XML 1.0 forbids become `?`.
fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    /// A small well-formedness check: every tag closes in order, attributes are quoted,
    /// no bare `&` or `<` in text.
    pub(crate) fn well_formed(doc: &str) -> Result<(), String> {
        let body = doc
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .ok_or("no XML declaration")?;
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = body;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name) {
                    return Err(format!("</{name}> does not close the open element"));
                }
            } else {
                let self_closing = tag.ends_with('/');
                let tag = tag.trim_end_matches('/');
                let name = tag.split_whitespace().next().ok_or("empty tag")?;
                if tag[name.len()..].matches('"').count() % 2 != 0 || tag.contains('<') {
                    return Err(format!("bad attributes in <{tag}>"));
                }
                if !self_closing {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest)?;
        match stack.as_slice() {
            [] => Ok(()),
            open => Err(format!("unclosed elements {open:?}")),
        }
    }

    fn check_text(t: &str) -> Result<(), String> {
        let mut rest = t;
        while let Some(amp) = rest.find('&') {
            let end = rest[amp..].find(';').ok_or("bare &")? + amp;
            let entity = &rest[amp + 1..end];
            if !["amp", "lt", "gt", "quot", "apos"].contains(&entity) {
                return Err(format!("unknown entity &{entity};"));
            }
            rest = &rest[end + 1..];
        }
        if t.chars()
            .any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
        {
            return Err("control character".into());
        }
        Ok(())
    }

    #[test]
    fn svg_is_well_formed_and_names_every_node() {
        let s = sample();
        let doc = svg(&s);
        well_formed(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        for n in &s.node_list {
            assert!(doc.contains(&format!(">{}</text>", xml(&n.id))), "{}", n.id);
        }
        assert!(doc.contains("we&quot;ird\\"));
        assert!(doc.contains("class=\"node offline\""));
    }

    #[test]
    fn checker_catches_broken_documents() {
        let decl = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
        assert!(well_formed(&format!("{decl}<svg><g></svg>")).is_err());
        assert!(well_formed(&format!("{decl}<svg>a & b</svg>")).is_err());
        assert!(well_formed(&format!("{decl}<svg><t x=\"1></t></svg>")).is_err());
        assert!(well_formed(&format!("{decl}<svg><g/></svg>")).is_ok());
    }

    #[test]
    fn empty_snapshot_and_hostile_ids_still_make_a_document() {
        let mut s = sample();
        s.node_list.clear();
        well_formed(&svg(&s)).unwrap();
        let mut s = sample();
        s.node_list[0].id = "<&\u{1}\u{FFFF}]]>".into();
        well_formed(&svg(&s)).unwrap();
    }
}
