//! TCP plumbing for mesh links: a reader task that forwards bytes to the node task and
//! a writer task that emulates the air: each frame leaves after the hop latency
//! (pipelined), after its air time on the sending node's radio (one budget shared by
//! the node's uplink and its AP), and, when it is "lost", after a resend delay, as TCP
//! over a lossy hop would deliver it.

use std::sync::{Arc, Mutex};

use std::time::Duration;

use mqttmesh_core::LinkId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::radio::Timing;
use crate::runtime::Input;
use crate::topology::SplitMix;

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
    stream: TcpStream,
    timing: Timing,
    airtime: Arc<Airtime>,
    seed: u64,
    inputs: mpsc::UnboundedSender<Input>,
) -> LinkHandle {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
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
            let mut at = (queued + timing.hop_latency)
                .max(airtime.reserve(frame.len(), timing.bandwidth_bps));
            if timing.loss > 0.0 && rng.unit() < timing.loss {
                at += timing.retransmit_delay;
            }
            tokio::time::sleep_until(at).await;
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    LinkHandle { gen, tx, reader }
}
