//! TCP links between a child and its parent's mesh port, and probes: scripted peers a
//! test drives byte by byte.
//!
//! A link is a pair of ends. Bytes written at one end arrive at the other after one hop
//! of latency, in order. Closing one end delivers a close to the other after the bytes
//! already in flight; a cut link (see [`World::cut_link`]) silently loses everything, so
//! only the nodes' keep-alives can notice it.

use mqttmesh_core::link::HEADER_LEN;
use mqttmesh_core::node::LinkId;
use mqttmesh_core::Instant;

use crate::events::Ev;
use crate::radio::NodeIdx;
use crate::world::World;

/// A link's number, unique over the run.
pub type ConnId = u64;

/// A probe's number (see [`World::connect_probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub(crate) usize);

/// One end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    Node { idx: NodeIdx, link: LinkId },
    Probe(usize),
}

/// A link: end 0 is the child (or probe), end 1 the parent.
#[derive(Clone, Debug)]
pub(crate) struct Conn {
    pub(crate) ends: [End; 2],
    pub(crate) open: [bool; 2],
    pub(crate) broken: bool,
    /// When the last frame sent from each end arrives: TCP delivers in order, so a
    /// resent frame holds back the ones after it.
    pub(crate) last_arrival: [Instant; 2],
}

/// A frame one node wrote to another (see [`World::tap_frames`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tapped {
    /// The sender.
    pub from: NodeIdx,
    /// The receiver.
    pub to: NodeIdx,
    /// The whole frame, header included.
    pub bytes: Vec<u8>,
}

/// A scripted peer on a node's mesh port.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe {
    pub(crate) conn: Option<ConnId>,
    pub(crate) inbox: Vec<u8>,
    pub(crate) closed: bool,
}

impl World {
    pub(crate) fn new_conn(&mut self, ends: [End; 2]) -> ConnId {
        self.next_conn += 1;
        let id = self.next_conn;
        self.conns.insert(
            id,
            Conn {
                ends,
                open: [true, true],
                broken: false,
                last_arrival: [self.now; 2],
            },
        );
        for end in ends {
            if let End::Node { idx, link } = end {
                if let Some(old) = self.nodes[idx].links.get(&link).copied() {
                    // The node reused a link slot without closing it: close the old one.
                    self.close_end(old, idx, link, true);
                }
                self.nodes[idx].links.insert(link, id);
            }
        }
        id
    }

    /// Closes the end of `conn` held by node `idx`; the peer learns of it after the
    /// bytes in flight, when `notify`.
    pub(crate) fn close_end(&mut self, conn: ConnId, idx: NodeIdx, link: LinkId, notify: bool) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(side) = c.ends.iter().position(|e| *e == End::Node { idx, link }) else {
            return;
        };
        self.close_side(conn, side, notify);
    }

    pub(crate) fn close_side(&mut self, conn: ConnId, side: usize, notify: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if !c.open[side] {
            return;
        }
        c.open[side] = false;
        let (end, peer_open, broken) = (c.ends[side], c.open[1 - side], c.broken);
        let last = c.last_arrival[side];
        if !c.open[0] && !c.open[1] {
            self.conns.remove(&conn);
        }
        match end {
            End::Node { idx, link } => {
                if self.nodes[idx].links.get(&link) == Some(&conn) {
                    self.nodes[idx].links.remove(&link);
                }
            }
            End::Probe(p) => self.probes[p].closed = true,
        }
        if notify && peer_open && !broken {
            let at = (self.now + self.timing.hop_latency).max(last);
            self.schedule_at(at, Ev::Closed { conn, to: 1 - side });
        }
    }

    /// Closes every link of node `idx` (its peers are told).
    pub(crate) fn close_all_links(&mut self, idx: NodeIdx, only_children: bool) {
        let links: Vec<_> = self.nodes[idx]
            .links
            .iter()
            .filter(|(l, _)| !only_children || matches!(l, LinkId::Child(_)))
            .map(|(l, c)| (*l, *c))
            .collect();
        for (link, conn) in links {
            self.close_end(conn, idx, link, true);
        }
    }

    /// Node `idx` wrote a frame on `link`.
    pub(crate) fn transmit(&mut self, idx: NodeIdx, link: LinkId, bytes: Vec<u8>) {
        let Some(conn) = self.nodes[idx].links.get(&link).copied() else {
            self.dropped += 1;
            return;
        };
        self.send_on(conn, End::Node { idx, link }, bytes);
    }

    fn send_on(&mut self, conn: ConnId, from: End, bytes: Vec<u8>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(side) = c.ends.iter().position(|e| *e == from) else {
            return;
        };
        if c.broken || !c.open[side] {
            self.dropped += 1;
            return;
        }
        let code = bytes.get(HEADER_LEN).copied();
        if code.is_some() && code == self.drop_code {
            return;
        }
        if let (Some(tap), End::Node { idx: from, .. }, End::Node { idx: to, .. }) =
            (self.tap.as_mut(), from, c.ends[1 - side])
        {
            tap.push(Tapped {
                from,
                to,
                bytes: bytes.clone(),
            });
        }
        let last = c.last_arrival[side];
        let mut at = self.now + self.timing.hop_latency;
        if let End::Node { idx, .. } = from {
            at = at.max(self.reserve_airtime(idx, bytes.len()));
        }
        let loss = self.timing.loss_ppm;
        if loss > 0 && self.rng.below(1_000_000) < u64::from(loss) {
            at += self.timing.retransmit_delay;
            self.resent += 1;
        }
        let at = at.max(last);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.last_arrival[side] = at;
        }
        self.schedule_at(
            at,
            Ev::Data {
                conn,
                to: 1 - side,
                bytes,
            },
        );
    }

    /// Reserves air time on node `idx`'s radio for `len` bytes; when they are sent.
    fn reserve_airtime(&mut self, idx: NodeIdx, len: usize) -> Instant {
        let bps = self.timing.bandwidth_bps;
        let now_us = self.now.millis().saturating_mul(1000);
        if bps == 0 {
            return self.now;
        }
        let on_air = (len as u64 * 8).saturating_mul(1_000_000) / bps;
        let slot = &mut self.nodes[idx];
        let start = slot.air_free_us.max(now_us);
        slot.air_free_us = start + on_air;
        Instant::from_millis(slot.air_free_us.div_ceil(1000))
    }

    pub(crate) fn on_data(&mut self, conn: ConnId, to: usize, bytes: Vec<u8>) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.broken || !c.open[to] {
            return;
        }
        match c.ends[to] {
            End::Node { idx, link } => self.feed(idx, link, &bytes, Some(conn)),
            End::Probe(p) => self.probes[p].inbox.extend_from_slice(&bytes),
        }
    }

    pub(crate) fn on_closed(&mut self, conn: ConnId, to: usize) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.broken || !c.open[to] {
            return;
        }
        let end = c.ends[to];
        self.close_side(conn, to, false);
        if let End::Node { idx, link } = end {
            let now = self.now;
            self.nodes[idx].node.handle_link_closed(now, link);
            self.drain(idx);
        }
    }

    /// Offers `bytes` to node `idx` on `link`, honouring partial consumption: drain,
    /// then offer the rest. With `conn`, stops once the node no longer holds that link.
    pub(crate) fn feed(&mut self, idx: NodeIdx, link: LinkId, bytes: &[u8], conn: Option<ConnId>) {
        let incarnation = self.nodes[idx].incarnation;
        let mut offset = 0;
        let mut stalls = 0;
        while offset < bytes.len() {
            let slot = &mut self.nodes[idx];
            let held = conn.is_none_or(|c| slot.links.get(&link) == Some(&c));
            if !slot.alive || slot.incarnation != incarnation || !held {
                return;
            }
            let taken = slot.node.handle_link_data(self.now, link, &bytes[offset..]);
            offset += taken;
            self.drain(idx);
            stalls = if taken == 0 { stalls + 1 } else { 0 };
            if stalls > 2 {
                self.log_world(
                    idx,
                    "link data stalled: node takes no bytes; dropped the rest",
                );
                self.dropped += 1;
                return;
            }
        }
    }

    /// Starts (or, `false`, stops) recording every frame a node writes to another;
    /// starting clears the record. See [`World::tapped`].
    pub fn tap_frames(&mut self, on: bool) {
        self.tap = on.then(Vec::new);
    }

    /// The frames recorded since [`World::tap_frames`], in sending order.
    pub fn tapped(&self) -> &[Tapped] {
        self.tap.as_deref().unwrap_or_default()
    }

    /// Loses every frame of type `code` on every link from now on (`None`: none), as if
    /// the senders never wrote it: e.g. `SUBTREE` frames, to run a mesh as one of nodes
    /// that predate the announcements.
    pub fn drop_frame_type(&mut self, code: Option<u8>) {
        self.drop_code = code;
    }

    /// Silently breaks every link between nodes `a` and `b`: bytes and closes in
    /// flight are lost, and neither side is told (their keep-alives must notice).
    pub fn cut_link(&mut self, a: NodeIdx, b: NodeIdx) {
        for c in self.conns.values_mut() {
            let nodes = c.ends.map(|e| match e {
                End::Node { idx, .. } => Some(idx),
                End::Probe(_) => None,
            });
            if nodes == [Some(a), Some(b)] || nodes == [Some(b), Some(a)] {
                c.broken = true;
            }
        }
    }

    /// Silently breaks every link of node `idx`.
    pub(crate) fn break_links(&mut self, idx: NodeIdx) {
        for conn in self.nodes[idx].links.values() {
            if let Some(c) = self.conns.get_mut(conn) {
                c.broken = true;
            }
        }
    }

    /// Bytes arrive on node `idx`'s `link` now, as if its peer had written them
    /// (garbage, hand-made frames, half frames).
    pub fn inject(&mut self, idx: NodeIdx, link: LinkId, bytes: &[u8]) {
        if self.nodes[idx].alive {
            self.feed(idx, link, bytes, None);
        }
    }

    /// Opens a scripted peer on node `parent`'s mesh port now, bypassing the radio (as a
    /// station that already associated). The node may refuse it: see
    /// [`World::probe_closed`].
    pub fn connect_probe(&mut self, parent: NodeIdx) -> ProbeId {
        let id = ProbeId(self.probes.len());
        self.probes.push(Probe::default());
        let now = self.now;
        let slot = &mut self.nodes[parent];
        let link = if slot.alive && slot.ap.is_some() {
            slot.node.handle_child_connected(now)
        } else {
            None
        };
        match link {
            Some(link) => {
                let conn = self.new_conn([End::Probe(id.0), End::Node { idx: parent, link }]);
                self.probes[id.0].conn = Some(conn);
            }
            None => self.probes[id.0].closed = true,
        }
        self.drain(parent);
        id
    }

    /// The probe writes `bytes`; they arrive after one hop.
    pub fn probe_send(&mut self, probe: ProbeId, bytes: &[u8]) {
        if let Some(conn) = self.probes[probe.0].conn {
            self.send_on(conn, End::Probe(probe.0), bytes.to_vec());
        }
    }

    /// The probe closes its end.
    pub fn probe_close(&mut self, probe: ProbeId) {
        if let Some(conn) = self.probes[probe.0].conn {
            self.close_side(conn, 0, true);
        }
    }

    /// Whether the probe's link is closed (by the node, or never opened).
    pub fn probe_closed(&self, probe: ProbeId) -> bool {
        self.probes[probe.0].closed
    }

    /// Frame bodies (without headers) the probe received so far; a trailing partial
    /// frame is left out.
    pub fn probe_frames(&self, probe: ProbeId) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = self.probes[probe.0].inbox.as_slice();
        while rest.len() >= HEADER_LEN {
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
                break;
            };
            out.push(body.to_vec());
            rest = &rest[HEADER_LEN + len..];
        }
        out
    }

    /// The link ID under which `parent` knows its child `child`, if they are linked.
    pub fn child_link(&self, parent: NodeIdx, child: NodeIdx) -> Option<LinkId> {
        self.nodes[parent].links.iter().find_map(|(link, conn)| {
            let c = self.conns.get(conn)?;
            (c.ends[0]
                == End::Node {
                    idx: child,
                    link: LinkId::Parent,
                })
            .then_some(*link)
        })
    }
}
