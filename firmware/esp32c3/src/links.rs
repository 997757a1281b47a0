//! Mesh links over TCP on the mesh port (`docs/PROTOCOL.md`): the parent link (we
//! connect on the station stack to our parent's AP address) and child links (children
//! connect to us on the AP stack). Each task copies bytes from its socket into the node
//! and writes the frames the node queues for its link.

use embassy_futures::select::{Either3, select3};
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpListenEndpoint, Stack};
use embassy_time::{Duration, Timer, with_timeout};
use embedded_io_async::Write;
use mqttmesh_core::LinkId;

use crate::shared::{AP_OPEN, LINK_CLOSE, LINK_TX, LINKS, PARENT_OPEN, with_node};

const SOCKET_BUF: usize = 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

pub fn index(link: LinkId) -> usize {
    match link {
        LinkId::Parent => 0,
        LinkId::Child(slot) => 1 + usize::from(slot),
    }
}

/// Hands `data` to the node, waiting while its queues are full.
async fn feed(link: LinkId, mut data: &[u8]) {
    while !data.is_empty() {
        let taken = with_node(|node, now| node.handle_link_data(now, link, data));
        data = data.get(taken..).unwrap_or_default();
        if !data.is_empty() {
            // The node loop drains the queues; give it a turn.
            Timer::after(Duration::from_millis(2)).await;
        }
    }
}

/// Runs one open link until either side closes it; tells the node unless the node
/// asked for the close itself.
async fn serve(socket: &mut TcpSocket<'_>, link: LinkId) {
    let i = index(link);
    LINK_CLOSE[i].reset();
    let mut buf = [0u8; 512];
    let closed_by_node = loop {
        let (mut rx, mut tx) = socket.split();
        match select3(
            rx.read(&mut buf),
            LINK_TX[i].receive(),
            LINK_CLOSE[i].wait(),
        )
        .await
        {
            Either3::First(Ok(0)) | Either3::First(Err(_)) => break false,
            Either3::First(Ok(n)) => feed(link, &buf[..n]).await,
            Either3::Second(frame) => {
                if tx.write_all(&frame).await.is_err() {
                    break false;
                }
            }
            Either3::Third(()) => {
                // Write what the node queued before closing (e.g. a Leave frame).
                while let Ok(frame) = LINK_TX[i].try_receive() {
                    if tx.write_all(&frame).await.is_err() {
                        break;
                    }
                }
                break true;
            }
        }
    };
    socket.close();
    let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
    socket.abort();
    LINK_TX[i].clear();
    if !closed_by_node {
        log::info!("link {link:?} closed by the peer or the network");
        with_node(|node, now| node.handle_link_closed(now, link));
    }
}

#[embassy_executor::task]
pub async fn parent_task(stack: Stack<'static>, port: u16) {
    let mut rx = [0u8; SOCKET_BUF];
    let mut tx = [0u8; SOCKET_BUF];
    loop {
        let parent = PARENT_OPEN.wait().await;
        let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
        socket.set_timeout(Some(TIMEOUT));
        match with_timeout(Duration::from_secs(10), socket.connect((parent, port))).await {
            Ok(Ok(())) => {
                log::info!("link to parent {parent}:{port} open");
                with_node(|node, now| node.handle_link_opened(now, LinkId::Parent));
                serve(&mut socket, LinkId::Parent).await;
            }
            _ => {
                log::info!("cannot open the link to parent {parent}:{port}");
                socket.abort();
                with_node(|node, now| node.handle_link_closed(now, LinkId::Parent));
            }
        }
    }
}

/// One acceptor on the mesh port; several run so several children can connect.
#[embassy_executor::task(pool_size = crate::shared::ACCEPTORS)]
pub async fn child_task(stack: Stack<'static>, port: u16) {
    let mut rx = [0u8; SOCKET_BUF];
    let mut tx = [0u8; SOCKET_BUF];
    loop {
        let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
        socket.set_timeout(Some(TIMEOUT));
        if socket
            .accept(IpListenEndpoint { addr: None, port })
            .await
            .is_err()
        {
            Timer::after(Duration::from_millis(100)).await;
            continue;
        }
        let link = if AP_OPEN.load(core::sync::atomic::Ordering::Relaxed) {
            with_node(|node, now| node.handle_child_connected(now))
        } else {
            None
        };
        match link {
            Some(link) if index(link) < LINKS => {
                log::info!("child connected as {link:?}");
                serve(&mut socket, link).await;
            }
            Some(link) => {
                // More slots in use than acceptors: cannot happen while every slot
                // closes through this task; refuse rather than misroute.
                log::warn!("child {link:?} has no link channel; closing");
                socket.abort();
                with_node(|node, now| node.handle_link_closed(now, link));
            }
            None => socket.abort(),
        }
    }
}
