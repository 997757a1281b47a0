//! TCP plumbing for mesh links: a reader task that forwards bytes to the node task and
//! a writer task that emulates the air: each frame leaves after the hop latency
//! (pipelined), after its air time on the sending node's radio (one budget shared by
//! the node's uplink and its AP), and, when it is "lost", after a resend delay, as TCP
//! over a lossy hop would deliver it.
//!
//! A link is plain TCP or, with mesh TLS on, TLS over TCP ([`crate::meshtls`]); the
//! handshake is done before the stream gets here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqttmesh_core::LinkId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::TlsStream;

use crate::meshtls::{HandshakeError, MeshTls};
use crate::radio::Timing;
use crate::runtime::Input;
use crate::topology::SplitMix;

/// What a TLS 1.3 record adds to the frame it carries: a 5-byte header, the inner
/// content type and a 16-byte AEAD tag. Each frame is written and flushed on its own,
/// and frames are far below the 16 KiB record limit, so one frame is one record.
const TLS_RECORD_OVERHEAD: usize = 5 + 1 + 16;

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
        let start = (*next).max(now);
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

/// Starts the tasks of a link over `stream`.
pub(crate) fn spawn(
    link: LinkId,
    gen: u64,
    stream: LinkStream,
    timing: Timing,
    airtime: Arc<Airtime>,
    seed: u64,
    inputs: mpsc::UnboundedSender<Input>,
) -> LinkHandle {
    let tasks = Tasks {
        link,
        gen,
        timing,
        airtime,
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
            seed,
            inputs,
        } = self;
        let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = inputs.send(Input::LinkClosed(link, gen));
                        return;
                    }
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
            while let Some((queued, frame)) = rx.recv().await {
                let on_air = frame.len() + overhead;
                let mut at = (queued + timing.hop_latency)
                    .max(airtime.reserve(on_air, timing.bandwidth_bps));
                if timing.loss > 0.0 && rng.unit() < timing.loss {
                    at += timing.retransmit_delay;
                }
                tokio::time::sleep_until(at).await;
                // TLS buffers records until flushed; for TCP the flush is a no-op.
                if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        LinkHandle { gen, tx, reader }
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
