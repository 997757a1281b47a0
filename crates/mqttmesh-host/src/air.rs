//! The emulated air between nodes, as faults change it while the mesh runs: the loss
//! rate and hop latency every link writer reads per frame, and the ends of every open
//! mesh link, so that a fault can silence the links between two nodes.
//!
//! A silenced ("broken") link behaves like the virtual simulator's cut link
//! (`mqttmesh-sim`, `World::cut_link`): both ends drop what they would write and what
//! they read, and neither is told that the link is gone, even when the peer closes its
//! socket; only the nodes' keep-alives can notice. The TCP connection itself stays
//! open until a node gives the link up.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqttmesh_core::LinkId;

/// Loss and latency of the air now, and the open links.
#[derive(Debug)]
pub struct Air {
    /// Loss probability, as `f64` bits.
    loss: AtomicU64,
    /// Per-hop latency, nanoseconds.
    hop_latency_ns: AtomicU64,
    resent: AtomicU64,
    next_link: AtomicU64,
    links: Mutex<HashMap<u64, LinkEnd>>,
}

/// One end of an open mesh link, as registered by its node.
#[derive(Debug)]
struct LinkEnd {
    owner: usize,
    link: LinkId,
    local: SocketAddr,
    peer: SocketAddr,
    broken: Arc<AtomicBool>,
}

/// A registered link end; dropping it (the node gave the link up) unregisters it.
#[derive(Debug)]
pub(crate) struct LinkTicket {
    air: Arc<Air>,
    id: u64,
    broken: Arc<AtomicBool>,
}

impl LinkTicket {
    /// The flag the link's tasks read: set once the link is broken.
    pub(crate) fn broken(&self) -> Arc<AtomicBool> {
        self.broken.clone()
    }
}

impl Drop for LinkTicket {
    fn drop(&mut self) {
        lock(&self.air.links).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Air {
    /// Air with this loss probability and per-hop latency.
    pub fn new(loss: f64, hop_latency: Duration) -> Arc<Air> {
        let air = Arc::new(Air {
            loss: AtomicU64::new(0),
            hop_latency_ns: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            next_link: AtomicU64::new(0),
            links: Mutex::new(HashMap::new()),
        });
        air.set_loss(loss);
        air.set_hop_latency(hop_latency);
        air
    }

    /// Probability that a frame is lost on the air (and resent after the timing's
    /// resend delay).
    pub fn loss(&self) -> f64 {
        f64::from_bits(self.loss.load(Ordering::Relaxed))
    }

    /// Sets the loss probability (clamped to 0..1) for every frame from now on.
    pub fn set_loss(&self, p: f64) {
        let p = if p.is_finite() {
            p.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.loss.store(p.to_bits(), Ordering::Relaxed);
    }

    /// Frames lost on the air and resent so far, over every link.
    pub fn resent(&self) -> u64 {
        self.resent.load(Ordering::Relaxed)
    }

    /// A link writer lost a frame (and resends it).
    pub(crate) fn count_resent(&self) {
        self.resent.fetch_add(1, Ordering::Relaxed);
    }

    /// Latency every frame takes on a mesh hop.
    pub fn hop_latency(&self) -> Duration {
        Duration::from_nanos(self.hop_latency_ns.load(Ordering::Relaxed))
    }

    /// Sets the per-hop latency for every frame queued from now on. Frames on one link
    /// still leave in order: a frame never overtakes the one before it.
    pub fn set_hop_latency(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.hop_latency_ns.store(ns, Ordering::Relaxed);
    }

    /// Registers node `owner`'s end of a link between `local` and `peer`.
    pub(crate) fn register(
        self: &Arc<Air>,
        owner: usize,
        link: LinkId,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> LinkTicket {
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let broken = Arc::new(AtomicBool::new(false));
        lock(&self.links).insert(
            id,
            LinkEnd {
                owner,
                link,
                local,
                peer,
                broken: broken.clone(),
            },
        );
        LinkTicket {
            air: self.clone(),
            id,
            broken,
        }
    }

    /// The nodes node `node` has open links with (each once).
    pub fn peers(&self, node: usize) -> Vec<usize> {
        let links = lock(&self.links);
        let mut out: Vec<usize> = links
            .values()
            .filter(|e| e.owner == node)
            .filter_map(|e| {
                links
                    .values()
                    .find(|f| f.local == e.peer && f.peer == e.local)
                    .map(|f| f.owner)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Silently breaks every open link between nodes `a` and `b` (both ends); how many
    /// link ends it broke.
    pub fn cut(&self, a: usize, b: usize) -> usize {
        let links = lock(&self.links);
        let mut broken = 0;
        for e in links.values().filter(|e| e.owner == a) {
            let Some(f) = links
                .values()
                .find(|f| f.owner == b && f.local == e.peer && f.peer == e.local)
            else {
                continue;
            };
            for end in [e, f] {
                if !end.broken.swap(true, Ordering::Relaxed) {
                    broken += 1;
                }
            }
        }
        broken
    }

    /// Nodes that still hold a parent link that was broken (they believe they are
    /// linked, but nothing gets through).
    pub fn broken_parents(&self) -> HashSet<usize> {
        lock(&self.links)
            .values()
            .filter(|e| e.link == LinkId::Parent && e.broken.load(Ordering::Relaxed))
            .map(|e| e.owner)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn cut_breaks_both_ends_of_the_links_between_two_nodes_only() {
        let air = Air::new(0.0, Duration::ZERO);
        // Node 1 is the child of node 0 (mesh port 1000) and the parent of node 2.
        let child_end = air.register(1, LinkId::Parent, addr(5001), addr(1000));
        let parent_end = air.register(0, LinkId::Child(0), addr(1000), addr(5001));
        let other = air.register(2, LinkId::Parent, addr(5002), addr(1001));
        let _other_parent = air.register(1, LinkId::Child(0), addr(1001), addr(5002));
        assert_eq!(air.peers(1), vec![0, 2]);
        assert_eq!(air.cut(0, 1), 2);
        assert!(child_end.broken().load(Ordering::Relaxed));
        assert!(parent_end.broken().load(Ordering::Relaxed));
        assert!(!other.broken().load(Ordering::Relaxed));
        assert_eq!(air.broken_parents(), HashSet::from([1]));
        assert_eq!(air.cut(1, 0), 0, "already broken");
        drop(child_end);
        assert!(
            air.broken_parents().is_empty(),
            "unregistered when the node drops it"
        );
    }

    #[test]
    fn loss_and_latency_change_at_run_time() {
        let air = Air::new(0.25, Duration::from_millis(10));
        assert_eq!(air.loss(), 0.25);
        air.set_loss(2.0);
        assert_eq!(air.loss(), 1.0);
        air.set_loss(f64::NAN);
        assert_eq!(air.loss(), 0.0);
        air.set_hop_latency(Duration::from_millis(50));
        assert_eq!(air.hop_latency(), Duration::from_millis(50));
    }
}
