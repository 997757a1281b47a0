//! The mesh tree as the broker shows it: a node's parent is the node whose
//! `info/MAC_hosted_AP` equals its `info/connectedTo`; when no node hosts that BSSID,
//! the node is on the router. Depth follows parents up to the router (root = 1).
//!
//! Retained data can be stale or contradictory (a loop after a re-parenting that is
//! only half published, a parent that went offline, missing topics); such nodes get no
//! depth rather than a wrong one.

use std::collections::HashMap;

/// A parent that is the router, not a node.
pub const ROUTER: &str = "router";

/// What the tree needs to know about one node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Links<'a> {
    pub id: &'a str,
    pub online: bool,
    pub ap_mac: Option<&'a str>,
    pub connected_to: Option<&'a str>,
}

/// Parent and depth of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub up: Up,
    pub depth: Option<u8>,
}

/// A node's parent: none known, the router, or the node at this index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Up {
    None,
    Router,
    Node(usize),
}

impl Up {
    /// `"router"`, the parent's ID, or `None`.
    pub fn name<'a>(self, nodes: &[Links<'a>]) -> Option<&'a str> {
        match self {
            Up::None => None,
            Up::Router => Some(ROUTER),
            Up::Node(j) => Some(nodes[j].id),
        }
    }
}

/// Parents and depths of `nodes` (same order). Only online nodes have a parent.
pub(crate) fn derive(nodes: &[Links<'_>]) -> Vec<Place> {
    // Online nodes win a BSSID that two nodes claim (stale retained data of a renamed
    // node); among equals the later one in the list.
    let mut by_ap: HashMap<&str, usize> = HashMap::new();
    for pass_online in [false, true] {
        for (i, n) in nodes.iter().enumerate() {
            if let (true, Some(ap)) = (n.online == pass_online, n.ap_mac) {
                by_ap.insert(ap, i);
            }
        }
    }
    let up: Vec<Up> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| match (n.online, n.connected_to) {
            (true, Some(bssid)) => match by_ap.get(bssid) {
                Some(&j) if j == i => Up::None,
                Some(&j) => Up::Node(j),
                None => Up::Router,
            },
            _ => Up::None,
        })
        .collect();
    let depths = depths(nodes, &up);
    up.into_iter()
        .zip(depths)
        .map(|(up, depth)| Place { up, depth })
        .collect()
}

/// Depth of each node: walk up until the router, a node already known, a loop, or a
/// gap (no parent, an offline parent); then fill in the chain walked.
fn depths(nodes: &[Links<'_>], up: &[Up]) -> Vec<Option<u8>> {
    let mut memo: Vec<Option<Option<u8>>> = vec![None; nodes.len()];
    let mut on_chain = vec![false; nodes.len()];
    for start in 0..nodes.len() {
        let mut chain = Vec::new();
        let mut cur = start;
        let base: Option<u8> = loop {
            if let Some(known) = memo[cur] {
                break known;
            }
            if on_chain[cur] {
                break None;
            }
            on_chain[cur] = true;
            chain.push(cur);
            match up[cur] {
                Up::Router => break Some(0),
                Up::Node(j) if nodes[j].online => cur = j,
                _ => break None,
            }
        };
        for (k, &i) in chain.iter().rev().enumerate() {
            let above = u8::try_from(k).ok();
            memo[i] = Some(
                base.zip(above)
                    .and_then(|(b, a)| b.checked_add(a)?.checked_add(1)),
            );
            on_chain[i] = false;
        }
    }
    memo.into_iter().map(Option::flatten).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links<'a>(rows: &'a [(&'a str, bool, &'a str, &'a str)]) -> Vec<Links<'a>> {
        rows.iter()
            .map(|&(id, online, ap, to)| Links {
                id,
                online,
                ap_mac: (!ap.is_empty()).then_some(ap),
                connected_to: (!to.is_empty()).then_some(to),
            })
            .collect()
    }

    fn places(rows: &[(&str, bool, &str, &str)]) -> Vec<(Option<String>, Option<u8>)> {
        let nodes = links(rows);
        derive(&nodes)
            .into_iter()
            .map(|p| (p.up.name(&nodes).map(str::to_string), p.depth))
            .collect()
    }

    fn at(parent: &str, depth: u8) -> (Option<String>, Option<u8>) {
        (Some(parent.to_string()), Some(depth))
    }

    #[test]
    fn chain_below_the_router() {
        let got = places(&[
            ("C", true, "AP:C", "AP:B"),
            ("A", true, "AP:A", "ROUTER"),
            ("B", true, "AP:B", "AP:A"),
        ]);
        assert_eq!(got, vec![at("B", 3), at("router", 1), at("A", 2)]);
    }

    #[test]
    fn offline_nodes_have_no_place_and_cut_the_chain() {
        let got = places(&[
            ("A", false, "AP:A", "ROUTER"),
            ("B", true, "AP:B", "AP:A"),
            ("C", true, "AP:C", ""),
        ]);
        assert_eq!(
            got,
            vec![(None, None), (Some("A".into()), None), (None, None)]
        );
    }

    #[test]
    fn loops_get_no_depth() {
        let got = places(&[
            ("A", true, "AP:A", "AP:B"),
            ("B", true, "AP:B", "AP:A"),
            ("C", true, "AP:C", "AP:B"),
            ("D", true, "AP:D", "AP:D"),
        ]);
        assert_eq!(
            got,
            vec![
                (Some("B".into()), None),
                (Some("A".into()), None),
                (Some("B".into()), None),
                (None, None),
            ]
        );
    }

    #[test]
    fn an_online_node_wins_a_claimed_bssid() {
        let got = places(&[
            ("OLD", false, "AP:X", "ROUTER"),
            ("NEW", true, "AP:X", "ROUTER"),
            ("KID", true, "AP:K", "AP:X"),
        ]);
        assert_eq!(got[2], at("NEW", 2));
    }

    #[test]
    fn a_very_deep_chain_stops_counting_at_255() {
        let ids: Vec<String> = (0..300).map(|i| format!("N{i}")).collect();
        let aps: Vec<String> = (0..300).map(|i| format!("AP{i}")).collect();
        let nodes: Vec<Links<'_>> = (0..300)
            .map(|i| Links {
                id: &ids[i],
                online: true,
                ap_mac: Some(&aps[i]),
                connected_to: Some(if i == 0 { "ROUTER" } else { &aps[i - 1] }),
            })
            .collect();
        let got = derive(&nodes);
        assert_eq!(got[0].depth, Some(1));
        assert_eq!(got[254].depth, Some(255));
        assert_eq!(got[255].depth, None);
        assert_eq!(got[299].up.name(&nodes), Some("N298"));
    }
}
