//! TCP plumbing for mesh links: a reader task that forwards bytes to the node task and
//! a writer task that delays each frame by the hop latency (pipelined) and writes it.

use std::time::Duration;

use mqttmesh_core::LinkId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::runtime::Input;

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
    latency: Duration,
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
        while let Some((queued, frame)) = rx.recv().await {
            if !latency.is_zero() {
                // Emulated air time: each frame leaves `latency` after it was queued,
                // so frames pipeline instead of queueing behind each other's delays.
                tokio::time::sleep_until(queued + latency).await;
            }
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    LinkHandle { gen, tx, reader }
}
