//! TCP plumbing for mesh links. The node task reads its links itself ([`read_any`])
//! and, when a batch of frames is due and nothing is queued ahead of it, writes it to
//! the socket itself ([`LinkHandle::flush`], plain TCP): a relayed frame crosses no
//! task hand-off. Everything else goes through the link's writer task, which emulates
//! the air: each frame leaves after the hop latency (pipelined), after its air time on
//! the sending node's radio (one budget shared by the node's uplink and its AP), and,
//! when it is "lost", after a resend delay, as TCP over a lossy hop would deliver it.
//! Departure times are computed once per frame, in order, when the node task hands a
//! batch over, whichever side then writes it.
//!
//! Loss and hop latency are read from the shared [`Air`] per frame, so faults can change
//! them while links run; a link the air marks broken (a `cut`, or a node moving out of
//! range) silently drops everything both ways, and its node is told of no close: only
//! the nodes' keep-alives notice, as in the virtual simulator.
//!
//! A link is plain TCP or, with mesh TLS on, TLS over TCP ([`crate::meshtls`]); the
//! handshake is done before the stream gets here.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use mqttmesh_core::link::MAX_FRAME;
use mqttmesh_core::LinkId;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsStream;

use crate::air::{Air, LinkTicket};
use crate::meshtls::{HandshakeError, MeshTls};
use crate::radio::Timing;
use crate::runtime::Input;
use crate::topology::SplitMix;

/// What a TLS 1.3 record adds to the frame it carries: a 5-byte header, the inner
/// content type and a 16-byte AEAD tag. Air time is charged as if each frame were one
/// record; frames that are due together are written (and so sealed) together, so under
/// load this overcharges slightly.
const TLS_RECORD_OVERHEAD: usize = 5 + 1 + 16;

/// Resolution of tokio's timer.
const TIMER_TICK: Duration = Duration::from_millis(1);
/// Idle air time a radio may catch up on (a token bucket's depth): two timer ticks.
const AIR_CREDIT: Duration = Duration::from_millis(2);
/// Bytes of frames a node task gathers for a link before it writes them (or hands them
/// to the writer task), and bytes of due frames the writer gathers into one write.
/// Under load a relay's reads and writes are nearly full; 32 KiB relayed more than 16
/// or 64 KiB in alternating runs (`docs/bench-relay.md`).
const WRITE_BATCH: usize = 32 * 1024;
/// Bytes a node task takes per read of a link (a batch of frames).
const READ_BUF: usize = 32 * 1024;

/// The byte stream of an open link.
#[derive(Debug)]
pub(crate) enum LinkStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why the parent link did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    Connect(std::io::Error),
    /// The TCP connection to this address was made; its TLS handshake failed.
    Tls(SocketAddr, HandshakeError),
}

/// One node's radio: when it is next free to send.
#[derive(Debug)]
pub(crate) struct Airtime {
    next_free: Mutex<Instant>,
}

impl Airtime {
    pub fn new() -> Arc<Airtime> {
        Arc::new(Airtime {
            next_free: Mutex::new(Instant::now()),
        })
    }

    /// Reserves air time for `bytes` at `bps`; when the frame has been sent.
    fn reserve(&self, bytes: usize, bps: u64) -> Instant {
        let now = Instant::now();
        if bps == 0 {
            return now;
        }
        let on_air = Duration::from_nanos((bytes as u64 * 8).saturating_mul(1_000_000_000) / bps);
        let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
        // Writers wake up to a timer tick late; air time left idle for up to
        // AIR_CREDIT may still be used, so that lateness does not cost capacity.
        let start = (*next).max(now.checked_sub(AIR_CREDIT).unwrap_or(now));
        *next = start + on_air;
        *next
    }
}

/// Frames a node task queued on a link together (in one drain of its node): their bytes
/// back to back, where each frame ends, and, once handed over, when each may leave.
#[derive(Debug)]
struct Batch {
    /// When the first frame was queued; the hop latency counts from here.
    queued: Instant,
    /// The frames, then (while the node task fills it) room for one more: `used` bytes
    /// are frames. Handed to the writer task cut to `used`.
    bytes: Vec<u8>,
    used: usize,
    /// End offset of each frame in `bytes`.
    ends: Vec<usize>,
    /// Departure time of each frame (filled by [`LinkHandle::flush`]).
    ats: Vec<Instant>,
    /// Bytes already written.
    sent: usize,
}

/// What a link's writer task has to write, shared with the node task.
#[derive(Debug, Default)]
struct Outbox {
    state: Mutex<OutState>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct OutState {
    queue: VecDeque<Batch>,
    /// The writer is writing or waiting for a frame's departure time: the node task
    /// must queue behind it.
    active: bool,
    /// The node gave the link up: the writer ends once the queue is written.
    closed: bool,
    /// The connection failed: frames are dropped.
    dead: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The link's share of the emulated air: when each frame may leave.
#[derive(Debug)]
struct AirPath {
    timing: Timing,
    airtime: Arc<Airtime>,
    air: Arc<Air>,
    rng: SplitMix,
    /// Bytes a frame takes on the air beyond its own (TLS record overhead).
    overhead: usize,
}

impl AirPath {
    /// When a frame of `len` bytes queued at `queued` may leave: after the hop latency,
    /// its air time on this node's radio, and a resend when it is "lost" (latency and
    /// loss as the air has them now: faults change them). Called once per frame, in
    /// order: it reserves the air time and draws the loss.
    fn due(&mut self, queued: Instant, len: usize) -> Instant {
        let mut at = queued + self.air.hop_latency();
        // Without an air-time limit there is nothing to reserve (and no clock to read
        // per frame).
        if self.timing.bandwidth_bps > 0 {
            let on_air = len + self.overhead;
            at = at.max(self.airtime.reserve(on_air, self.timing.bandwidth_bps));
        }
        let loss = self.air.loss();
        if loss > 0.0 && self.rng.unit() < loss {
            at += self.timing.retransmit_delay;
            self.air.count_resent();
        }
        at
    }
}

/// The read side of a link.
#[derive(Debug)]
enum Reader {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<TlsStream<TcpStream>>),
}

/// The write side of a link.
#[derive(Debug)]
enum Writer {
    /// Plain TCP: shared with the node task, which writes due frames itself while the
    /// writer task is idle (no hand-off, no wake-up).
    Plain(Arc<OwnedWriteHalf>),
    Tls(WriteHalf<TlsStream<TcpStream>>),
}

/// An open link's handles. Dropping it closes the link after queued frames are written.
#[derive(Debug)]
pub(crate) struct LinkHandle {
    pub gen: u64,
    outbox: Arc<Outbox>,
    /// Frames queued since the last [`LinkHandle::flush`].
    pending: Option<Batch>,
    /// A batch written in full, kept to be filled again (no allocation, no zeroing).
    spare: Option<Batch>,
    path: AirPath,
    /// Plain TCP: the socket the node task writes to directly.
    direct: Option<Arc<OwnedWriteHalf>>,
    broken: Arc<AtomicBool>,
    /// The read side, polled by the node task itself ([`read_any`]); `None` once it
    /// ended.
    reader: Option<Reader>,
    /// Unregisters the link from the air when the node gives it up.
    _ticket: Option<LinkTicket>,
}

impl LinkHandle {
    /// Room for one more frame (`MAX_FRAME` bytes) at the end of the pending batch:
    /// the node task polls its next transmit straight into it, then [`Self::commit`]s
    /// it if the frame is for this link.
    pub fn frame_room(&mut self) -> &mut [u8] {
        let spare = &mut self.spare;
        let batch = self.pending.get_or_insert_with(|| match spare.take() {
            Some(mut b) => {
                b.queued = Instant::now();
                b
            }
            None => Batch {
                queued: Instant::now(),
                bytes: Vec::new(),
                used: 0,
                ends: Vec::new(),
                ats: Vec::new(),
                sent: 0,
            },
        });
        let used = batch.used;
        if batch.bytes.len() < used + MAX_FRAME {
            // Grown (and zeroed) as the link's traffic needs: an idle link keeps a
            // small buffer, a busy one up to WRITE_BATCH + MAX_FRAME.
            let len = (2 * batch.bytes.len()).max(used + MAX_FRAME);
            batch.bytes.resize(len.min(WRITE_BATCH + MAX_FRAME), 0);
        }
        &mut batch.bytes[used..used + MAX_FRAME]
    }

    /// Queues the `len`-byte frame just written to [`Self::frame_room`]. It leaves with
    /// the next [`Self::flush`] (or at once when [`WRITE_BATCH`] bytes are waiting).
    pub fn commit(&mut self, len: usize) {
        let Some(batch) = &mut self.pending else {
            return;
        };
        if len == 0 {
            return;
        }
        batch.used += len;
        batch.ends.push(batch.used);
        if batch.used >= WRITE_BATCH {
            self.flush();
        }
    }

    /// Queues a copy of `frame` (see [`Self::commit`]).
    pub fn send(&mut self, frame: &[u8]) {
        let len = frame.len().min(MAX_FRAME);
        self.frame_room()[..len].copy_from_slice(&frame[..len]);
        self.commit(len);
    }

    /// Sends the frames queued so far: written here and now when they are due and the
    /// writer task has nothing queued (plain TCP), otherwise handed to the writer task.
    pub fn flush(&mut self) {
        let Some(mut batch) = self.pending.take() else {
            return;
        };
        if batch.used == 0 {
            // Room was made, no frame came.
            self.spare = Some(batch);
            return;
        }
        let mut start = 0;
        for &end in &batch.ends {
            let at = self.path.due(batch.queued, end - start);
            batch.ats.push(at);
            start = end;
        }
        let mut st = lock(&self.outbox.state);
        if st.dead {
            return;
        }
        if let (Some(wr), true) = (&self.direct, st.queue.is_empty() && !st.active) {
            // tokio's timer ticks every millisecond: a frame due within a tick goes
            // now (see the writer task).
            let limit = Instant::now() + TIMER_TICK;
            let due = batch.ats.iter().take_while(|at| **at <= limit).count();
            if due > 0 {
                let end = batch.ends[due - 1];
                if self.broken.load(Ordering::Relaxed) {
                    // Lost on a broken link: nothing reaches the peer.
                    batch.sent = end;
                } else {
                    match wr.try_write(&batch.bytes[..end]) {
                        Ok(n) => batch.sent = n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        // The connection failed; the reader reports it.
                        Err(_) => {
                            st.dead = true;
                            return;
                        }
                    }
                }
            }
        }
        if batch.sent == batch.used {
            // All written: keep the buffer for the next batch.
            batch.used = 0;
            batch.sent = 0;
            batch.ends.clear();
            batch.ats.clear();
            self.spare = Some(batch);
        } else {
            batch.bytes.truncate(batch.used);
            st.queue.push_back(batch);
            if !st.active {
                st.active = true;
                self.outbox.wake.notify_one();
            }
        }
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.flush();
        lock(&self.outbox.state).closed = true;
        self.outbox.wake.notify_one();
    }
}

/// Where a link runs: its node's radio and the shared air.
pub(crate) struct Medium {
    /// The node's index in the radio world.
    pub owner: usize,
    pub timing: Timing,
    pub airtime: Arc<Airtime>,
    pub air: Arc<Air>,
}

/// Starts the tasks of a link over `stream`, registered with the air.
pub(crate) fn spawn(
    link: LinkId,
    gen: u64,
    stream: LinkStream,
    medium: Medium,
    seed: u64,
) -> LinkHandle {
    let tcp = match &stream {
        LinkStream::Plain(tcp) => tcp,
        LinkStream::Tls(tls) => tls.get_ref().0,
    };
    let ticket = match (tcp.local_addr(), tcp.peer_addr()) {
        (Ok(local), Ok(peer)) => Some(medium.air.register(medium.owner, link, local, peer)),
        // The peer is already gone: the reader will see the close at once.
        _ => None,
    };
    let broken = ticket
        .as_ref()
        .map_or_else(|| Arc::new(AtomicBool::new(false)), LinkTicket::broken);
    let mut path = AirPath {
        timing: medium.timing,
        airtime: medium.airtime,
        air: medium.air,
        rng: SplitMix(seed),
        overhead: 0,
    };
    let outbox = Arc::new(Outbox::default());
    let (reader, writer) = match stream {
        LinkStream::Plain(tcp) => {
            let _ = tcp.set_nodelay(true);
            let (rd, wr) = tcp.into_split();
            (Reader::Plain(rd), Writer::Plain(Arc::new(wr)))
        }
        LinkStream::Tls(tls) => {
            let _ = tls.get_ref().0.set_nodelay(true);
            let (rd, wr) = tokio::io::split(*tls);
            // Air time is charged per TLS record: the plaintext frame plus the record
            // overhead (the handshake, once per link, is not charged).
            path.overhead = TLS_RECORD_OVERHEAD;
            (Reader::Tls(rd), Writer::Tls(wr))
        }
    };
    let direct = match &writer {
        Writer::Plain(wr) => Some(wr.clone()),
        Writer::Tls(_) => None,
    };
    tokio::spawn(write(writer, outbox.clone(), broken.clone()));
    LinkHandle {
        gen,
        outbox,
        pending: None,
        spare: None,
        path,
        direct,
        broken,
        reader: Some(reader),
        _ticket: ticket,
    }
}

thread_local! {
    /// Where node tasks read their links: one buffer per runtime thread, holding a
    /// read only until the node task has handled it, in the same poll (no await in
    /// between: see [`read_any`] and [`with_read`]).
    static READ: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
    /// Which link [`read_any`] tries first, so that a busy link starves no other.
    static TURN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What a node task's read of its links gave.
#[derive(Debug)]
pub(crate) enum Read {
    /// This many bytes of the link (and its generation) are in the read buffer: hand
    /// them to [`with_read`] before the next await.
    Data(LinkId, u64, usize),
    /// The peer closed the link, or it failed.
    Closed(LinkId, u64),
}

/// Waits until one of `links` has bytes or closed. The node task reads its links
/// itself: no reader task, channel or wake-up between the socket and the node.
pub(crate) fn read_any(links: &mut HashMap<LinkId, LinkHandle>) -> impl Future<Output = Read> + '_ {
    let first = TURN.with(|t| {
        let n = t.get();
        t.set(n.wrapping_add(1));
        n
    });
    std::future::poll_fn(move |cx| {
        let n = links.len().max(1);
        let first = first % n;
        READ.with_borrow_mut(|buf| {
            // From link `first` on, then the ones before it.
            for (skip, end) in [(first, n), (0, first)] {
                let take = end - skip;
                for (id, h) in links.iter_mut().skip(skip).take(take) {
                    if let Poll::Ready(read) = h.poll_read(cx, buf) {
                        return Poll::Ready(match read {
                            Some(len) => Read::Data(*id, h.gen, len),
                            None => Read::Closed(*id, h.gen),
                        });
                    }
                }
            }
            Poll::Pending
        })
    })
}

/// Runs `f` over the `len` bytes a [`Read::Data`] left in this thread's read buffer.
pub(crate) fn with_read<T>(len: usize, f: impl FnOnce(&[u8]) -> T) -> T {
    READ.with_borrow(|buf| f(&buf[..len.min(buf.len())]))
}

impl LinkHandle {
    /// Reads what the link has into `buf`: `Some(len)`, or `None` when the peer closed
    /// it or it failed (once; the link is not read again). A broken link tells its
    /// node nothing, not even a close: its bytes are dropped.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Option<usize>> {
        let Some(rd) = &mut self.reader else {
            return Poll::Pending;
        };
        loop {
            let mut rb = ReadBuf::new(buf);
            let polled = match rd {
                Reader::Plain(rd) => Pin::new(rd).poll_read(cx, &mut rb),
                Reader::Tls(rd) => Pin::new(rd).poll_read(cx, &mut rb),
            };
            let len = match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => rb.filled().len(),
                Poll::Ready(Err(_)) => 0,
            };
            let broken = self.broken.load(Ordering::Relaxed);
            match (len, broken) {
                (0, true) => {
                    self.reader = None;
                    return Poll::Pending;
                }
                (0, false) => {
                    self.reader = None;
                    return Poll::Ready(None);
                }
                // Lost on a broken link: read on (tokio's budget bounds the loop).
                (_, true) => {}
                (len, false) => return Poll::Ready(Some(len)),
            }
        }
    }
}

/// The writer task: the frames the node task could not write at once (not due yet,
/// behind others, the socket full, or TLS), each at its departure time.
async fn write(mut wr: Writer, outbox: Arc<Outbox>, broken: Arc<AtomicBool>) {
    let mut out = Vec::new();
    loop {
        // Gather every queued frame that is due, up to WRITE_BATCH bytes: one system
        // call per gathering instead of one per frame. tokio's timer ticks every
        // millisecond and rounds a deadline up to the next tick, so even a sleep until
        // "now" lasts up to a tick (one such sleep per frame capped every link at
        // ≈1,000 frames/s whatever the air time): frames due within a tick go at once;
        // the air-time budget still holds on average, as `reserve` keeps advancing.
        let wait = {
            let mut st = lock(&outbox.state);
            let limit = Instant::now() + TIMER_TICK;
            let mut wait = None;
            out.clear();
            while out.len() < WRITE_BATCH {
                let Some(batch) = st.queue.front_mut() else {
                    break;
                };
                let first = batch.ends.partition_point(|&e| e <= batch.sent);
                let due = batch.ats[first..]
                    .iter()
                    .take_while(|at| **at <= limit)
                    .count();
                if due > 0 {
                    let end = batch.ends[first + due - 1];
                    out.extend_from_slice(&batch.bytes[batch.sent..end]);
                    batch.sent = end;
                }
                if batch.sent == batch.bytes.len() {
                    st.queue.pop_front();
                } else {
                    wait = Some(batch.ats[first + due]);
                    break;
                }
            }
            if out.is_empty() && wait.is_none() {
                // Nothing queued: idle until the node hands over more (or gives up).
                if st.closed {
                    break;
                }
                st.active = false;
                None
            } else {
                st.active = true;
                wait
            }
        };
        if out.is_empty() {
            match wait {
                Some(at) => tokio::time::sleep_until(at).await,
                None => outbox.wake.notified().await,
            }
            continue;
        }
        // Lost on a broken link: nothing reaches the peer.
        if broken.load(Ordering::Relaxed) {
            continue;
        }
        let written = match &mut wr {
            Writer::Plain(wr) => write_plain(wr, &out).await,
            // TLS buffers records until flushed.
            Writer::Tls(wr) => match wr.write_all(&out).await {
                Ok(()) => wr.flush().await,
                Err(e) => Err(e),
            },
        };
        if written.is_err() {
            // The reader reports the failure; the node's later frames are dropped.
            let mut st = lock(&outbox.state);
            st.dead = true;
            st.queue.clear();
            return;
        }
    }
    if let Writer::Tls(wr) = &mut wr {
        let _ = wr.shutdown().await;
    }
    // Plain TCP: the write half shuts down when its last handle (this one or the
    // node's) drops.
}

/// Writes all of `data` to a socket the node task may also write to (never at the same
/// time: see [`OutState::active`]).
async fn write_plain(wr: &OwnedWriteHalf, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        wr.writable().await?;
        match wr.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Accepts children on the mesh port. With mesh TLS, each handshake runs in its own
/// task (a stalled peer holds up no one) and only a finished one reaches the node;
/// dropping this task (a crash) drops the handshakes in flight.
pub(crate) async fn accept(
    listener: TcpListener,
    tls: Option<MeshTls>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    let mut handshakes = tokio::task::JoinSet::new();
    while let Ok((stream, peer)) = listener.accept().await {
        while handshakes.try_join_next().is_some() {}
        let Some(tls) = &tls else {
            if inputs
                .send(Input::ChildAccepted(LinkStream::Plain(stream)))
                .is_err()
            {
                return;
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (tls, tx) = (tls.clone(), inputs.clone());
        handshakes.spawn(async move {
            let input = match tls.accept(stream).await {
                Ok(s) => Input::ChildAccepted(LinkStream::Tls(Box::new(s))),
                Err(e) => Input::ChildRefused(peer, e),
            };
            let _ = tx.send(input);
        });
    }
}

/// Opens the parent link: TCP, then the TLS handshake when mesh TLS is on.
pub(crate) async fn open_parent(
    addr: SocketAddr,
    tls: Option<MeshTls>,
) -> Result<LinkStream, OpenError> {
    let tcp = TcpStream::connect(addr).await.map_err(OpenError::Connect)?;
    let Some(tls) = tls else {
        return Ok(LinkStream::Plain(tcp));
    };
    let _ = tcp.set_nodelay(true);
    match tls.connect(tcp).await {
        Ok(s) => Ok(LinkStream::Tls(Box::new(s))),
        Err(e) => Err(OpenError::Tls(addr, e)),
    }
}
