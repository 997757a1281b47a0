//! Uplink ranking: which network or mesh parent to try first.
//!
//! Implements `../shared/spec/compat.md` "Choosing an uplink": configured router
//! networks come first when their RSSI is at least -77 dBm or better than the mesh
//! candidate they are compared with; genuine nodes of this mesh (hidden SSID, keyed
//! BSSID) are ranked by RSSI. On top of the original:
//!
//! - a parent's depth, when known (a beacon hint, or learned from an earlier join
//!   reply), costs [`DEPTH_PENALTY_DB`] per level, so a shallower parent wins at
//!   similar RSSI, and a parent at the maximum depth is not a candidate at all;
//! - a mesh AP whose beacon announces no free child slot (the `free` hint, carried in
//!   the same vendor element as the depth) is not a candidate: associating would only
//!   earn "AP full" (ESP-WIFI-MESH skips full parents the same way);
//! - candidates that recently refused us (full, loop, too deep) or failed are kept
//!   out for a while by the node's penalty list (see `node`, [`MAX_PENALTIES`]). The
//!   list is applied before the ranking keeps its best [`MAX_CANDIDATES`], so in a
//!   dense placement the next scan offers the next-best APs rather than the same ones;
//! - every scan entry is looked at, however many: full APs are skipped before they
//!   can take a candidate slot.

use heapless::{String, Vec};

use crate::config::Config;
use crate::identity::{mesh_chip_id, Mac};

/// Routers at or above this RSSI always come before mesh parents.
pub const ROUTER_RSSI_FLOOR: i8 = -77;
/// Ranking cost of one level of parent depth, in dB.
pub const DEPTH_PENALTY_DB: i16 = 6;
/// Most candidates kept from one scan.
pub const MAX_CANDIDATES: usize = 16;
/// Most scan entries a runtime with a fixed buffer keeps (the ESP32-C3 firmware).
/// [`rank`] itself looks at every entry it is given: cutting a dense scan to its first
/// entries in the order the radio lists them hid every AP with a free slot from 1,268
/// of 10,000 simulated nodes (`BENCHMARKS.md`).
pub const MAX_SCAN: usize = 64;
/// Most APs a node remembers as recently refused or failed (14 bytes each). Larger than
/// [`MAX_CANDIDATES`] so that a node that found a whole candidate list full keeps those
/// APs out while it tries the next ones.
pub const MAX_PENALTIES: usize = 48;

/// One access point a scan saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanEntry {
    /// BSSID.
    pub bssid: Mac,
    /// SSID (empty when hidden).
    pub ssid: String<32>,
    /// Received signal strength, dBm.
    pub rssi: i8,
    /// Channel.
    pub channel: u8,
    /// The AP hides its SSID.
    pub hidden: bool,
    /// Depth the AP's node announces (a vendor element in its beacon), if any.
    pub depth: Option<u8>,
    /// Free child slots the AP's node announces (same vendor element), if any. A mesh
    /// AP announcing `Some(0)` is skipped by [`rank`].
    pub free: Option<u8>,
}

/// What a candidate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A configured router network (index into `Config::networks`).
    Router {
        /// Index of the network in the configuration.
        network: u8,
    },
    /// A node of this mesh.
    Mesh {
        /// Its chip ID, recovered from the keyed BSSID.
        chip_id: u32,
        /// Its depth, if known.
        depth: Option<u8>,
    },
}

/// A ranked uplink candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// BSSID to associate with.
    pub bssid: Mac,
    /// SSID to associate with.
    pub ssid: String<32>,
    /// RSSI at scan time, dBm.
    pub rssi: i8,
    /// Channel.
    pub channel: u8,
    /// Router or mesh parent.
    pub kind: Kind,
}

impl Candidate {
    /// The candidate a scan entry offers, as `kind`.
    pub fn from_entry(entry: &ScanEntry, kind: Kind) -> Candidate {
        Candidate {
            bssid: entry.bssid,
            ssid: entry.ssid.clone(),
            rssi: entry.rssi,
            channel: entry.channel,
            kind,
        }
    }

    /// Sort key: lower is better.
    fn key(&self) -> (u8, i16) {
        match self.kind {
            Kind::Router { .. } if self.rssi >= ROUTER_RSSI_FLOOR => (0, -i16::from(self.rssi)),
            Kind::Router { .. } => (1, -i16::from(self.rssi)),
            Kind::Mesh { depth, .. } => (1, mesh_score(self.rssi, depth)),
        }
    }
}

/// How good a mesh AP heard at `rssi` is as a parent at `depth` (unknown: 1); lower is
/// better: signal, less [`DEPTH_PENALTY_DB`] per level below the root.
pub fn mesh_score(rssi: i8, depth: Option<u8>) -> i16 {
    -i16::from(rssi) + i16::from(depth.unwrap_or(1).saturating_sub(1)) * DEPTH_PENALTY_DB
}

/// Ranks `scan` for a node with chip ID `own_chip_id` in the mesh with key `mesh_key`.
///
/// `excluded` is asked for every BSSID; candidates for which it returns `true` (recent
/// refusals, our own AP) are left out. Mesh candidates whose known depth is already
/// `config.max_depth`, or that announce no free child slot, are left out. Ties keep scan order, so the result is deterministic.
pub fn rank(
    config: &Config,
    mesh_key: u32,
    own_chip_id: u32,
    scan: &[ScanEntry],
    mut excluded: impl FnMut(&Mac) -> bool,
) -> Vec<Candidate, MAX_CANDIDATES> {
    let mut out: Vec<Candidate, MAX_CANDIDATES> = Vec::new();
    for entry in scan {
        if excluded(&entry.bssid) {
            continue;
        }
        let kind = if let Some(network) = match_router(config, entry) {
            Kind::Router { network }
        } else if let Some(chip_id) = mesh_chip_id(&entry.bssid, mesh_key) {
            if chip_id == own_chip_id & 0x00FF_FFFF
                || entry.depth.is_some_and(|d| d >= config.max_depth)
                || entry.free == Some(0)
            {
                continue;
            }
            Kind::Mesh {
                chip_id,
                depth: entry.depth,
            }
        } else {
            continue;
        };
        insert_ranked(&mut out, Candidate::from_entry(entry, kind));
    }
    out
}

/// Inserts keeping `out` sorted by key (stable); drops the worst when full.
fn insert_ranked(out: &mut Vec<Candidate, MAX_CANDIDATES>, candidate: Candidate) {
    let key = candidate.key();
    let pos = out.iter().position(|c| c.key() > key).unwrap_or(out.len());
    if out.is_full() {
        if pos == out.len() {
            return;
        }
        out.pop();
    }
    // Cannot fail: there is room (checked above) and `pos <= out.len()`.
    let _ = out.insert(pos, candidate);
}

fn match_router(config: &Config, entry: &ScanEntry) -> Option<u8> {
    config
        .networks
        .iter()
        .position(|n| match n.bssid {
            Some(bssid) => bssid == entry.bssid,
            None => !n.hidden && !entry.ssid.is_empty() && n.ssid == entry.ssid,
        })
        .and_then(|i| u8::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::identity::{ap_mac, mesh_key};

    const ROUTER: Mac = Mac([0x02, 0, 0, 0, 0, 0x01]);

    fn config() -> Config {
        Config::builder()
            .firmware(0x1337, "0.1")
            .network("home", "homepassword")
            .build()
            .unwrap()
    }

    fn key() -> u32 {
        mesh_key(crate::config::DEFAULT_MESH_PASSWORD)
    }

    fn router(rssi: i8) -> ScanEntry {
        entry(ROUTER, "home", rssi, false, None)
    }

    fn node(chip: u32, rssi: i8, depth: Option<u8>) -> ScanEntry {
        entry(ap_mac(chip, key()), "", rssi, true, depth)
    }

    fn entry(bssid: Mac, ssid: &str, rssi: i8, hidden: bool, depth: Option<u8>) -> ScanEntry {
        ScanEntry {
            bssid,
            ssid: ssid.try_into().unwrap(),
            rssi,
            channel: 6,
            hidden,
            depth,
            free: None,
        }
    }

    fn order(scan: &[ScanEntry]) -> std::vec::Vec<Mac> {
        rank(&config(), key(), 0x00_0001, scan, |_| false)
            .iter()
            .map(|c| c.bssid)
            .collect()
    }

    /// Rows: (scan, expected order), compat.md "Choosing an uplink" plus depth.
    #[test]
    fn ranking_table() {
        let a = ap_mac(0xA, key());
        let b = ap_mac(0xB, key());
        // A router at or above -77 dBm beats any mesh node.
        assert_eq!(order(&[node(0xA, -30, Some(1)), router(-77)]), [ROUTER, a]);
        // A weak router still beats a weaker mesh node...
        assert_eq!(order(&[node(0xA, -85, Some(1)), router(-80)]), [ROUTER, a]);
        // ...but not a stronger one.
        assert_eq!(order(&[router(-84), node(0xA, -60, Some(1))]), [a, ROUTER]);
        // Mesh nodes by RSSI.
        assert_eq!(order(&[node(0xA, -70, None), node(0xB, -50, None)]), [b, a]);
        // At similar RSSI the shallower parent wins; a much stronger deep one still wins.
        assert_eq!(
            order(&[node(0xA, -55, Some(3)), node(0xB, -60, Some(1))]),
            [b, a]
        );
        assert_eq!(
            order(&[node(0xA, -40, Some(3)), node(0xB, -70, Some(1))]),
            [a, b]
        );
    }

    #[test]
    fn foreign_own_and_full_depth_candidates_are_skipped() {
        let other_mesh = entry(ap_mac(0xC, mesh_key("another-mesh")), "", -40, true, None);
        let stranger = entry(
            Mac([0x10, 0x20, 0x30, 0x40, 0x50, 0x60]),
            "",
            -40,
            true,
            None,
        );
        let open_net = entry(Mac([0x12, 0, 0, 0, 0, 9]), "cafe", -30, false, None);
        let own = node(0x00_0001, -20, Some(1));
        let too_deep = node(0xD, -40, Some(crate::config::DEFAULT_MAX_DEPTH));
        let full = ScanEntry {
            free: Some(0),
            ..node(0xE, -30, Some(1))
        };
        assert!(order(&[other_mesh, stranger, open_net, own, too_deep, full]).is_empty());
        // One free slot is enough; no hint (an older node) is tried too.
        let one_left = ScanEntry {
            free: Some(1),
            ..node(0xE, -30, Some(1))
        };
        assert_eq!(
            order(&[one_left, node(0xF, -40, Some(1))]),
            [ap_mac(0xE, key()), ap_mac(0xF, key())]
        );
    }

    #[test]
    fn excluded_entries_do_not_take_candidate_slots() {
        // 40 APs, the 16 strongest recently refused us: the next 16 are offered.
        let scan: std::vec::Vec<ScanEntry> = (1..=40)
            .map(|i| node(0x100 + i, -90 + i as i8, None))
            .collect();
        let refused: std::vec::Vec<Mac> = scan[24..].iter().map(|e| e.bssid).collect();
        let ranked = rank(&config(), key(), 1, &scan, |b| refused.contains(b));
        assert_eq!(ranked.len(), MAX_CANDIDATES);
        assert_eq!(ranked[0].rssi, -66);
        assert_eq!(ranked[MAX_CANDIDATES - 1].rssi, -81);
    }

    #[test]
    fn excluded_and_hidden_router_by_bssid() {
        let hidden = Mac([0x02, 0, 0, 0, 0, 0x99]);
        let config = Config::builder()
            .firmware(1, "1")
            .hidden_network("", hidden, "homepassword")
            .build()
            .unwrap();
        let scan = [entry(hidden, "", -60, true, None), node(0xA, -50, None)];
        let ranked = rank(&config, key(), 1, &scan, |b| *b == ap_mac(0xA, key()));
        assert_eq!(ranked.len(), 1);
        assert_eq!(ranked[0].kind, Kind::Router { network: 0 });
    }

    #[test]
    fn a_free_ap_late_in_a_long_scan_is_found() {
        // 200 full APs listed first (a dense placement): the one with room is still seen.
        let mut scan: std::vec::Vec<ScanEntry> = (1..=200)
            .map(|i| ScanEntry {
                free: Some(0),
                ..node(0x100 + i, -40, Some(1))
            })
            .collect();
        scan.push(ScanEntry {
            free: Some(1),
            ..node(0x999, -80, Some(3))
        });
        assert_eq!(order(&scan), [ap_mac(0x999, key())]);
    }

    #[test]
    fn keeps_the_best_when_the_scan_is_huge() {
        let scan: std::vec::Vec<ScanEntry> = (1..=40)
            .map(|i| node(0x100 + i, -90 + i as i8, None))
            .collect();
        let ranked = rank(&config(), key(), 1, &scan, |_| false);
        assert_eq!(ranked.len(), MAX_CANDIDATES);
        assert_eq!(ranked[0].rssi, -50);
        assert!(ranked.windows(2).all(|w| w[0].rssi >= w[1].rssi));
    }
}
