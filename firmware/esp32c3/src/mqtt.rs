//! The broker session behind the core's calls (`docs/ARCHITECTURE.md`, "The
//! broker session"): `Action::ConnectMqtt` opens TCP to the broker on the station stack
//! and sends CONNECT with the node's last will; CONNACK → `handle_mqtt_connected`;
//! PUBLISH from the broker → `handle_mqtt_message` / `handle_mqtt_retained`; any
//! failure → `handle_mqtt_disconnected`. Plain TCP only: no TLS on the chip yet.
//!
//! QoS: we publish at QoS 0 or 1 (a QoS 2 message type is sent at QoS 1: at least
//! once instead of exactly once) and subscribe at QoS 1. The PUBACK of a publication
//! that carries a token goes back to the node as `handle_mqtt_acked(token)`
//! (`docs/PROTOCOL.md` "Outbox and acknowledgements").

use core::net::{IpAddr, Ipv4Addr};

use embassy_futures::select::{Either3, select3};
use embassy_net::tcp::TcpSocket;
use embassy_net::{Stack, dns::DnsQueryType};
use embassy_time::{Duration, Instant, Timer, with_timeout};
use embedded_io_async::Write;

use crate::config;
use crate::mqtt_codec::{self as codec, Connect, Incoming};
use crate::shared::{MQTT_CMD, MqttCmd, with_node};

const SOCKET_BUF: usize = 1536;
/// Largest packet accepted from the broker: a node payload plus topic and header room.
const MAX_PACKET: usize = 1536;
/// Publications awaiting a PUBACK whose token the node wants back; when full the oldest
/// is forgotten (the node gives up on it after its own timeout and sends it again).
const AWAITING: usize = 32;

async fn resolve(stack: Stack<'static>) -> Option<Ipv4Addr> {
    if let Ok(ip) = config::BROKER_HOST.parse::<Ipv4Addr>() {
        return Some(ip);
    }
    match stack.dns_query(config::BROKER_HOST, DnsQueryType::A).await {
        Ok(addrs) => addrs.iter().find_map(|a| match IpAddr::from(*a) {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }),
        Err(e) => {
            log::warn!("mqtt: cannot resolve {}: {e:?}", config::BROKER_HOST);
            None
        }
    }
}

struct Session<'s, 'b> {
    socket: TcpSocket<'s>,
    out: &'b mut [u8],
    next_id: u16,
    keep_alive: Duration,
    last_tx: Instant,
    /// (packet ID, token); packet ID 0 marks a free entry.
    awaiting: [(u16, u32); AWAITING],
    next_awaiting: usize,
}

impl Session<'_, '_> {
    fn id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    async fn send(&mut self, len: Result<usize, codec::CodecError>) -> bool {
        let Ok(len) = len else {
            log::warn!("mqtt: packet too large for the send buffer; dropped");
            return true;
        };
        self.last_tx = Instant::now();
        self.socket.write_all(&self.out[..len]).await.is_ok()
    }

    async fn command(&mut self, cmd: MqttCmd) -> bool {
        match cmd {
            MqttCmd::Publish(p) => {
                let qos = p.msg_type.qos().min(1);
                let id = self.id();
                if let (1, Some(token)) = (qos, p.token) {
                    self.awaiting[self.next_awaiting] = (id, token);
                    self.next_awaiting = (self.next_awaiting + 1) % AWAITING;
                }
                let len =
                    codec::publish(self.out, &p.topic, &p.payload, qos, p.msg_type.retain(), id);
                self.send(len).await
            }
            MqttCmd::Subscribe { filter } => {
                let id = self.id();
                let len = codec::subscribe(self.out, id, &filter, 1);
                self.send(len).await
            }
            MqttCmd::Disconnect => {
                let len = codec::disconnect(self.out);
                self.send(len).await;
                false
            }
            // Already connected: the node asks again only after a disconnect.
            MqttCmd::Connect { .. } => true,
        }
    }

    /// Acts on one packet from the broker; false ends the session.
    async fn incoming(&mut self, packet: &[u8]) -> bool {
        match codec::decode(packet) {
            Ok(Incoming::Publish {
                topic,
                payload,
                qos,
                retain,
                id,
            }) => {
                if retain {
                    with_node(|node, now| node.handle_mqtt_retained(now, topic, payload));
                } else {
                    with_node(|node, now| node.handle_mqtt_message(now, topic, payload));
                }
                match (qos, id) {
                    (1, Some(id)) => {
                        let len = codec::puback(self.out, id);
                        self.send(len).await
                    }
                    _ => true,
                }
            }
            Ok(Incoming::PubAck { id }) => {
                if let Some(entry) = self.awaiting.iter_mut().find(|(p, _)| *p == id && id != 0) {
                    let token = entry.1;
                    *entry = (0, 0);
                    with_node(|node, now| node.handle_mqtt_acked(now, token));
                }
                true
            }
            Ok(Incoming::SubAck { granted: 0x80, .. }) => {
                log::warn!("mqtt: the broker refused our subscription");
                true
            }
            Ok(_) => true,
            Err(e) => {
                log::warn!("mqtt: malformed packet from the broker ({e:?}); closing");
                false
            }
        }
    }
}

async fn open<'s>(
    stack: Stack<'static>,
    socket: &mut TcpSocket<'s>,
    out: &mut [u8],
    inbuf: &mut [u8],
    client_id: &str,
    will_topic: &str,
    keep_alive: Duration,
) -> bool {
    let Some(ip) = resolve(stack).await else {
        return false;
    };
    if with_timeout(
        Duration::from_secs(10),
        socket.connect((ip, config::BROKER_PORT)),
    )
    .await
    .map_or(true, |r| r.is_err())
    {
        log::info!("mqtt: cannot connect to {ip}:{}", config::BROKER_PORT);
        return false;
    }
    let connect = Connect {
        client_id,
        keep_alive_secs: keep_alive.as_secs().min(u64::from(u16::MAX)) as u16,
        will_topic,
        will_payload: mqttmesh_core::node::OFFLINE.as_bytes(),
        username: config::MQTT_USERNAME,
        password: config::MQTT_PASSWORD,
    };
    let Ok(len) = codec::connect(out, &connect) else {
        return false;
    };
    if socket.write_all(&out[..len]).await.is_err() {
        return false;
    }
    // CONNACK is 4 bytes; read until it is whole.
    let mut have = 0;
    let read = async {
        loop {
            match socket.read(&mut inbuf[have..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => have += n,
            }
            if let Ok(Some(len)) = codec::frame_len(&inbuf[..have], MAX_PACKET) {
                return matches!(
                    codec::decode(&inbuf[..len]),
                    Ok(Incoming::ConnAck { code: 0 })
                );
            }
        }
    };
    matches!(with_timeout(Duration::from_secs(10), read).await, Ok(true))
}

#[embassy_executor::task]
pub async fn mqtt_task(stack: Stack<'static>, keep_alive: Duration) {
    let mut rx = [0u8; SOCKET_BUF];
    let mut tx = [0u8; SOCKET_BUF];
    let mut out = [0u8; MAX_PACKET];
    let mut inbuf = [0u8; MAX_PACKET];
    loop {
        let (client_id, will_topic) = match MQTT_CMD.receive().await {
            MqttCmd::Connect {
                client_id,
                will_topic,
            } => (client_id, will_topic),
            other => {
                log::debug!("mqtt: no session for {other:?}");
                continue;
            }
        };
        let mut socket = TcpSocket::new(stack, &mut rx, &mut tx);
        socket.set_timeout(Some(keep_alive * 2));
        if !open(
            stack,
            &mut socket,
            &mut out,
            &mut inbuf,
            &client_id,
            &will_topic,
            keep_alive,
        )
        .await
        {
            socket.abort();
            with_node(|node, now| node.handle_mqtt_disconnected(now));
            continue;
        }
        log::info!(
            "mqtt: connected to {}:{}",
            config::BROKER_HOST,
            config::BROKER_PORT
        );
        with_node(|node, now| node.handle_mqtt_connected(now));
        let mut session = Session {
            socket,
            out: &mut out,
            next_id: 0,
            keep_alive,
            last_tx: Instant::now(),
            awaiting: [(0, 0); AWAITING],
            next_awaiting: 0,
        };
        let mut have = 0;
        'session: loop {
            let ping_at = session.last_tx + session.keep_alive / 2;
            let step = select3(
                session.socket.read(&mut inbuf[have..]),
                MQTT_CMD.receive(),
                Timer::at(ping_at),
            )
            .await;
            match step {
                Either3::First(Ok(0)) | Either3::First(Err(_)) => break,
                Either3::First(Ok(n)) => {
                    have += n;
                    loop {
                        match codec::frame_len(&inbuf[..have], MAX_PACKET) {
                            Ok(Some(len)) => {
                                let ok = session.incoming(&inbuf[..len]).await;
                                inbuf.copy_within(len..have, 0);
                                have -= len;
                                if !ok {
                                    break 'session;
                                }
                            }
                            Ok(None) if have < inbuf.len() => break,
                            _ => {
                                log::warn!(
                                    "mqtt: oversized or malformed packet from the broker; closing"
                                );
                                break 'session;
                            }
                        }
                    }
                }
                Either3::Second(cmd) => {
                    if !session.command(cmd).await {
                        break;
                    }
                }
                Either3::Third(()) => {
                    let len = codec::pingreq(session.out);
                    if !session.send(len).await {
                        break;
                    }
                }
            }
        }
        session.socket.close();
        let _ = with_timeout(Duration::from_secs(1), session.socket.flush()).await;
        session.socket.abort();
        log::info!("mqtt: session closed");
        with_node(|node, now| node.handle_mqtt_disconnected(now));
    }
}
