//! TCP plumbing for mesh links: a reader task that forwards bytes to the node task and
//! a writer task that emulates the air: each frame leaves after the hop latency
//! (pipelined), after its air time on the sending node's radio (one budget shared by
//! the node's uplink and its AP), and, when it is "lost", after a resend delay, as TCP
//! over a lossy hop would deliver it.
//!
//! Loss and hop latency are read from the shared [`Air`] per frame, so faults can change
//! them while links run; a link the air marks broken (a `cut`, or a node moving out of
//! range) silently drops everything both ways, and its reader reports no close: only
//! the nodes' keep-alives notice, as in the virtual simulator.
//!
//! A link is plain TCP or, with mesh TLS on, TLS over TCP ([`crate::meshtls`]); the
//! handshake is done before the stream gets here.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqttmesh_core::LinkId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
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
/// Bytes of due frames a link writer gathers into one write.
const WRITE_BATCH: usize = 16 * 1024;
/// Bytes a link reader takes per read (a batch of frames; one input to the node task).
const READ_BUF: usize = 16 * 1024;

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

/// An open link's handles. Dropping it closes the link after queued frames are written.
#[derive(Debug)]
pub(crate) struct LinkHandle {
    pub gen: u64,
    tx: mpsc::UnboundedSender<(Instant, Vec<u8>)>,
    reader: JoinHandle<()>,
    /// Unregisters the link from the air when the node gives it up.
    _ticket: Option<LinkTicket>,
}

impl LinkHandle {
    /// Queues a frame; silently dropped when the link is already gone.
    pub fn send(&self, frame: Vec<u8>) {
        let _ = self.tx.send((Instant::now(), frame));
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        self.reader.abort();
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
    inputs: mpsc::UnboundedSender<Input>,
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
    let tasks = Tasks {
        link,
        gen,
        timing: medium.timing,
        airtime: medium.airtime,
        air: medium.air,
        broken,
        ticket,
        seed,
        inputs,
    };
    match stream {
        LinkStream::Plain(tcp) => {
            let _ = tcp.set_nodelay(true);
            let (rd, wr) = tcp.into_split();
            tasks.start(rd, wr, 0)
        }
        LinkStream::Tls(tls) => {
            let _ = tls.get_ref().0.set_nodelay(true);
            let (rd, wr) = tokio::io::split(*tls);
            // Air time is charged per TLS record: the plaintext frame plus the record
            // overhead (the handshake, once per link, is not charged).
            tasks.start(rd, wr, TLS_RECORD_OVERHEAD)
        }
    }
}

struct Tasks {
    link: LinkId,
    gen: u64,
    timing: Timing,
    airtime: Arc<Airtime>,
    air: Arc<Air>,
    broken: Arc<AtomicBool>,
    ticket: Option<LinkTicket>,
    seed: u64,
    inputs: mpsc::UnboundedSender<Input>,
}

impl Tasks {
    fn start<R, W>(self, mut rd: R, mut wr: W, overhead: usize) -> LinkHandle
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let Tasks {
            link,
            gen,
            timing,
            airtime,
            air,
            broken,
            ticket,
            seed,
            inputs,
        } = self;
        let broken_rd = broken.clone();
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; READ_BUF];
            loop {
                match rd.read(&mut buf).await {
                    // A broken link tells its node nothing, not even a close.
                    Ok(0) | Err(_) if broken_rd.load(Ordering::Relaxed) => return,
                    Ok(0) | Err(_) => {
                        let _ = inputs.send(Input::LinkClosed(link, gen));
                        return;
                    }
                    Ok(_) if broken_rd.load(Ordering::Relaxed) => {}
                    Ok(n) => {
                        if inputs
                            .send(Input::LinkData(link, gen, buf[..n].to_vec()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut rng = SplitMix(seed);
            // When each frame may leave: after the hop latency, its air time on this
            // node's radio, and a resend when it is "lost" (latency and loss as the
            // air has them now: faults change them).
            let mut due = |queued: Instant, frame: &[u8]| {
                let on_air = frame.len() + overhead;
                let mut at =
                    (queued + air.hop_latency()).max(airtime.reserve(on_air, timing.bandwidth_bps));
                let loss = air.loss();
                if loss > 0.0 && rng.unit() < loss {
                    at += timing.retransmit_delay;
                    air.count_resent();
                }
                at
            };
            // A frame taken from the queue but not due yet, with its departure time.
            let mut next: Option<(Instant, Vec<u8>)> = None;
            let mut out = Vec::new();
            loop {
                let (at, frame) = match next.take() {
                    Some(f) => f,
                    None => match rx.recv().await {
                        Some((queued, frame)) => (due(queued, &frame), frame),
                        None => break,
                    },
                };
                // tokio's timer ticks every millisecond and rounds a deadline up to
                // the next tick, so even a sleep until "now" lasts up to a tick: one
                // such sleep per frame capped every link at ≈1,000 frames/s whatever
                // the air time. Frames due within a tick go at once; the air-time
                // budget still holds on average, as `reserve` keeps advancing.
                if at > Instant::now() + TIMER_TICK {
                    tokio::time::sleep_until(at).await;
                }
                // Every frame already queued and due goes out in the same write: one
                // system call per batch instead of one per frame.
                out.extend_from_slice(&frame);
                while out.len() < WRITE_BATCH {
                    let Ok((queued, frame)) = rx.try_recv() else {
                        break;
                    };
                    let at = due(queued, &frame);
                    if at > Instant::now() + TIMER_TICK {
                        next = Some((at, frame));
                        break;
                    }
                    out.extend_from_slice(&frame);
                }
                if broken.load(Ordering::Relaxed) {
                    // Lost on a broken link: nothing reaches the peer.
                    out.clear();
                    continue;
                }
                // TLS buffers records until flushed; for TCP the flush is a no-op.
                if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
                out.clear();
            }
            let _ = wr.shutdown().await;
        });
        LinkHandle {
            gen,
            tx,
            reader,
            _ticket: ticket,
        }
    }
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
