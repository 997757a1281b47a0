//! The broker session behind the core's calls (`docs/ARCHITECTURE.md`, "The
//! broker session"): `Action::ConnectMqtt` opens TCP to the broker on the station stack
//! and sends CONNECT with the node's last will; CONNACK → `handle_mqtt_connected`;
//! PUBLISH from the broker → `handle_mqtt_message` / `handle_mqtt_retained`; any
//! failure → `handle_mqtt_disconnected`. Plain TCP, or TLS 1.3 in pin mode when the
//! build sets `[broker] tls_fingerprint` (`tls_pin.rs`; embedded-tls, AES-128-GCM).
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
use embedded_io_async::{Read, Write};
use embedded_tls::{Aes128GcmSha256, FlushPolicy, TlsConfig, TlsConnection, TlsContext};

use crate::config;
use crate::mqtt_codec::{self as codec, Connect, Incoming};
use crate::shared::{MQTT_CMD, MqttCmd, with_node};
use crate::tls_pin::{PinProvider, PinVerifier};

const SOCKET_BUF: usize = 1536;
/// TLS record buffers: one whole record in, and one packet plus overhead out. A record
/// can carry up to 2^14 bytes and Mosquitto does not negotiate smaller fragments, but it
/// writes each MQTT packet as its own record (ours are at most `MAX_PACKET`), so only
/// the handshake's certificate chain can come close: 8 KiB holds a leaf plus an
/// intermediate of a public CA with room to spare. A larger record fails the handshake
/// with an error in the log. (16 KiB did not fit in RAM beside the node and its QoS 1
/// outbox.)
const TLS_READ_BUF: usize = 8_192 + 256;
const TLS_WRITE_BUF: usize = MAX_PACKET + embedded_tls::TLS_RECORD_OVERHEAD;
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

/// The chip's random number generator for the TLS key share and client random. It is a
/// true random source while the radio is on, which it is whenever a broker session
/// runs (the station is connected).
struct RadioRng(esp_hal::rng::Rng);

impl rand_core::RngCore for RadioRng {
    fn next_u32(&mut self) -> u32 {
        self.0.random()
    }
    fn next_u64(&mut self) -> u64 {
        u64::from(self.0.random()) << 32 | u64::from(self.0.random())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.read(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.read(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for RadioRng {}

struct Session<'b, T> {
    socket: T,
    /// Flush after each packet (TLS: seal the record; plain TCP needs none).
    flush: bool,
    out: &'b mut [u8],
    next_id: u16,
    keep_alive: Duration,
    last_tx: Instant,
    /// (packet ID, token); packet ID 0 marks a free entry.
    awaiting: [(u16, u32); AWAITING],
    next_awaiting: usize,
}

impl<T: Read + Write> Session<'_, T> {
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
            && (!self.flush || self.socket.flush().await.is_ok())
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

/// Opens TCP to the broker.
async fn open_tcp(stack: Stack<'static>, socket: &mut TcpSocket<'_>) -> bool {
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
    true
}

/// The TLS handshake in pin mode over an open TCP socket.
async fn open_tls(tls: &mut TlsConnection<'_, TcpSocket<'_>, Aes128GcmSha256>, pin: &[u8]) -> bool {
    let mut tls_config = TlsConfig::new();
    // SNI carries a name, never an address.
    if config::BROKER_HOST.parse::<Ipv4Addr>().is_err() {
        tls_config = tls_config.with_server_name(config::BROKER_HOST);
    }
    let mut provider = PinProvider {
        rng: RadioRng(esp_hal::rng::Rng::new()),
        verifier: PinVerifier::new(pin),
    };
    let opened = with_timeout(
        Duration::from_secs(20),
        tls.open(TlsContext::new(&tls_config, &mut provider)),
    )
    .await;
    match opened {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            match provider.verifier.failure {
                Some(why) => log::warn!(
                    "mqtt: TLS refused: {why:?} (the broker's certificate must match [broker] \
                     tls_fingerprint and have an ECDSA P-256 key)"
                ),
                None => log::warn!("mqtt: TLS handshake failed: {e:?}"),
            }
            false
        }
        Err(_) => {
            log::warn!("mqtt: TLS handshake timed out");
            false
        }
    }
}

/// Sends CONNECT and waits for a successful CONNACK.
async fn mqtt_connect<T: Read + Write>(
    socket: &mut T,
    flush: bool,
    out: &mut [u8],
    inbuf: &mut [u8],
    client_id: &str,
    will_topic: &str,
    keep_alive: Duration,
) -> bool {
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
    if socket.write_all(&out[..len]).await.is_err() || (flush && socket.flush().await.is_err()) {
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

/// Runs one connected session until it ends (the broker closes, an error, or the
/// node disconnects).
async fn run<T: Read + Write>(session: &mut Session<'_, T>, inbuf: &mut [u8]) {
    let mut have = 0;
    'session: loop {
        let ping_at = session.last_tx + session.keep_alive / 2;
        // A TLS read cancelled by another branch keeps its partial record (embedded-tls
        // holds the read state in the connection), as a TCP read does.
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
}

/// CONNECT over an open transport, then the session; false if CONNECT failed.
async fn connect_and_run<T: Read + Write>(
    socket: T,
    flush: bool,
    out: &mut [u8],
    inbuf: &mut [u8],
    client_id: &str,
    will_topic: &str,
    keep_alive: Duration,
) -> (T, bool) {
    let mut session = Session {
        socket,
        flush,
        out,
        next_id: 0,
        keep_alive,
        last_tx: Instant::now(),
        awaiting: [(0, 0); AWAITING],
        next_awaiting: 0,
    };
    let flushed = session.flush;
    if !mqtt_connect(
        &mut session.socket,
        flushed,
        session.out,
        inbuf,
        client_id,
        will_topic,
        keep_alive,
    )
    .await
    {
        return (session.socket, false);
    }
    log::info!(
        "mqtt: connected to {}:{}{}",
        config::BROKER_HOST,
        config::BROKER_PORT,
        if config::BROKER_FINGERPRINT.is_some() {
            " (TLS, pinned)"
        } else {
            ""
        }
    );
    with_node(|node, now| node.handle_mqtt_connected(now));
    run(&mut session, inbuf).await;
    (session.socket, true)
}

#[embassy_executor::task]
pub async fn mqtt_task(stack: Stack<'static>, keep_alive: Duration) {
    let mut rx = [0u8; SOCKET_BUF];
    let mut tx = [0u8; SOCKET_BUF];
    let mut out = [0u8; MAX_PACKET];
    let mut inbuf = [0u8; MAX_PACKET];
    // Sized only when the build pins a broker certificate; zero-length otherwise.
    let mut tls_read = [0u8; if config::BROKER_FINGERPRINT.is_some() {
        TLS_READ_BUF
    } else {
        0
    }];
    let mut tls_write = [0u8; if config::BROKER_FINGERPRINT.is_some() {
        TLS_WRITE_BUF
    } else {
        0
    }];
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
        let mut connected = false;
        if open_tcp(stack, &mut socket).await {
            match config::BROKER_FINGERPRINT {
                None => {
                    let (s, c) = connect_and_run(
                        socket,
                        false,
                        &mut out,
                        &mut inbuf,
                        &client_id,
                        &will_topic,
                        keep_alive,
                    )
                    .await;
                    socket = s;
                    connected = c;
                }
                Some(pin) => {
                    let mut tls = TlsConnection::new(socket, &mut tls_read, &mut tls_write);
                    tls.set_flush_policy(FlushPolicy::Relaxed);
                    if open_tls(&mut tls, pin).await {
                        let (t, c) = connect_and_run(
                            tls,
                            true,
                            &mut out,
                            &mut inbuf,
                            &client_id,
                            &will_topic,
                            keep_alive,
                        )
                        .await;
                        tls = t;
                        connected = c;
                    }
                    // close_notify (best effort; errors on a dead socket) and the
                    // socket back for the TCP close below.
                    socket = match tls.close().await {
                        Ok(s) | Err((s, _)) => s,
                    };
                }
            }
        }
        if connected {
            socket.close();
            let _ = with_timeout(Duration::from_secs(1), socket.flush()).await;
            log::info!("mqtt: session closed");
        }
        socket.abort();
        with_node(|node, now| node.handle_mqtt_disconnected(now));
    }
}
