//! Embedded MQTT broker: rumqttd 0.20 on a dedicated thread, for tests, the
//! simulator and the CLI when no external broker is given.
//!
//! [`EmbeddedBroker::start`] returns once the broker has answered an MQTT 3.1.1
//! CONNECT with a CONNACK, so callers can connect straight away.
//!
//! # Lifetime
//!
//! rumqttd 0.20 has no shutdown API: [`rumqttd::Broker::start`] blocks forever
//! and its router and server threads hold the listening socket. The broker thread
//! therefore lives until the process exits; dropping [`EmbeddedBroker`] only
//! detaches it. A broker per test is still cheap (two idle threads once its
//! clients are gone); for stop/restart fault tests use
//! [`crate::mosquitto::Mosquitto`].
//!
//! # What rumqttd 0.20 does, and what it does not
//!
//! Read from its source (`router/routing.rs`, `router/iobufs.rs`,
//! `link/remote.rs`, `server/broker.rs`); they shape how mqttmesh may use it:
//!
//! - It speaks MQTT 3.1.1 on the one listener configured here. Retained messages
//!   (an empty retained payload clears them) and last will (published when the
//!   TCP link drops without DISCONNECT, cancelled by a clean DISCONNECT) work.
//! - A subscription receives at most as many retained messages as it has
//!   delivery slots at subscribe time; the rest are silently dropped: 100 for
//!   QoS 1/2 (the hard-coded per-connection outgoing inflight, `MAX_INFLIGHT`),
//!   [`MAX_OUTGOING_PACKET_COUNT`] for QoS 0. Subscribe with QoS 0 when many
//!   retained topics must be seen at once.
//! - A client id containing `+`, `$`, `#` or `/` is refused by closing the
//!   connection without a CONNACK (rumqttc reports `ConnectionAborted`); so is
//!   a connection over [`MAX_CONNECTIONS`] and a keep-alive of 0.
//! - Messages are kept per subscription filter in an in-memory commit log of at
//!   most [`MAX_SEGMENT_COUNT`] × [`MAX_SEGMENT_SIZE`] bytes, which a busy
//!   filter fills and keeps; a subscriber that lags further behind than that
//!   skips the oldest messages. Publishes to a topic nobody subscribes to are
//!   not stored (unless retained).
//! - All client connections are served by one current-thread tokio runtime on
//!   one thread, and routing is done by one more thread. Each CONNECT blocks
//!   that server thread until the router acknowledges it, so connecting is
//!   serial (about 2000 clients in 5 s on a 2-core box, where Mosquitto takes
//!   1.2 s); steady traffic of 300 clients at 10 msg/s is not throttled.
//! - It logs through `tracing`; nothing is printed unless the process installs
//!   a subscriber. It logs ordinary disconnects at error level, so filter it
//!   out (`rumqttd=off`) rather than down to warnings.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Error starting a test broker (embedded or Mosquitto).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The `mosquitto` binary is neither on `PATH` nor at `/usr/sbin/mosquitto`.
    #[error(
        "mosquitto is not installed (looked on PATH and at /usr/sbin/mosquitto); \
         install it with `apt-get install mosquitto`"
    )]
    NotInstalled,
    /// Creating the broker's temp dir or config file failed.
    #[error("cannot write the broker configuration: {0}")]
    Config(#[source] io::Error),
    /// Spawning the broker process or thread failed.
    #[error("cannot start the broker: {0}")]
    Spawn(#[source] io::Error),
    /// No free port could be reserved.
    #[error("cannot reserve a free port: {0}")]
    Bind(#[source] io::Error),
    /// The broker exited (or its server thread ended) before accepting clients;
    /// usually its port was taken.
    #[error("broker on port {port} exited during startup; log:\n{log}")]
    Exited {
        /// The port the broker was told to listen on.
        port: u16,
        /// What the broker logged.
        log: String,
    },
    /// The broker did not answer an MQTT CONNECT before the startup deadline.
    #[error("broker on port {port} did not accept MQTT connections within {STARTUP_DEADLINE:?}; log:\n{log}")]
    NotReady {
        /// The port the broker was told to listen on.
        port: u16,
        /// What the broker logged.
        log: String,
    },
}

/// How long a broker may take to accept its first MQTT connection.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(10);
/// How often a free port is picked again after losing a bind race.
const BIND_ATTEMPTS: u32 = 5;
/// Pause between two readiness probes (polling interval, not synchronisation).
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Maximum number of concurrent client connections.
pub const MAX_CONNECTIONS: usize = 4096;
/// Maximum size in bytes of one incoming MQTT packet (payload plus headers).
pub const MAX_PAYLOAD_SIZE: usize = 1024 * 1024;
/// Packets a connection may hand the router in one batch.
pub const MAX_INFLIGHT_COUNT: usize = 500;
/// QoS 0 messages read for a subscriber in one router pass; also the cap on
/// retained messages a QoS 0 subscription receives.
pub const MAX_OUTGOING_PACKET_COUNT: u64 = 4096;
/// Size of one in-memory commit-log segment per subscription filter.
pub const MAX_SEGMENT_SIZE: usize = 1024 * 1024;
/// Segments kept per subscription filter before the oldest is dropped.
pub const MAX_SEGMENT_COUNT: usize = 8;
/// How long a new TCP connection may take to send CONNECT (u16 in rumqttd).
const CONNECT_TIMEOUT_MS: u16 = 60_000;

/// An in-process rumqttd broker listening on a loopback address.
///
/// The broker thread runs until the process exits (see the module doc).
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts a broker on `bind` and waits until it answers MQTT.
    ///
    /// A port of 0 picks a free port (retrying a few times if another process
    /// takes it first). `bind` should be a loopback address. Blocks the calling
    /// thread for the startup (typically a few milliseconds).
    pub fn start(bind: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        if bind.port() != 0 {
            return Self::start_on(bind);
        }
        let mut last = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port(bind.ip()).map_err(BrokerError::Bind)?;
            // A failed attempt leaves its idle rumqttd router thread behind.
            match Self::start_on(SocketAddr::new(bind.ip(), port)) {
                Err(e @ BrokerError::Exited { .. }) => last = Some(e),
                other => return other,
            }
        }
        // The loop ran at least once and only continues after storing an error.
        Err(last.expect("BIND_ATTEMPTS > 0"))
    }

    fn start_on(addr: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        let config = config(addr);
        let thread = thread::Builder::new()
            .name(format!("rumqttd-{}", addr.port()))
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // Returns only if the server thread ended, e.g. the bind failed;
                // the wait loop below sees the thread finish and reports it.
                let _ = broker.start();
            })
            .map_err(BrokerError::Spawn)?;
        let probe = probe_addr(addr);
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if thread.is_finished() {
                return Err(BrokerError::Exited {
                    port: addr.port(),
                    log: "rumqttd server thread ended (port in use?)".into(),
                });
            }
            if probe_mqtt(probe, PROBE_INTERVAL * 10).is_ok() {
                return Ok(EmbeddedBroker { addr, thread });
            }
            if Instant::now() >= deadline {
                return Err(BrokerError::NotReady {
                    port: addr.port(),
                    log: "rumqttd logs through tracing; install a subscriber to see it".into(),
                });
            }
            thread::sleep(PROBE_INTERVAL);
        }
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the broker listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Whether the broker's server thread is still running.
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }
}

/// The rumqttd configuration: one MQTT 3.1.1 listener on `addr`, no console,
/// metrics, websocket, TLS or authentication.
fn config(addr: SocketAddr) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: CONNECT_TIMEOUT_MS,
        max_payload_size: MAX_PAYLOAD_SIZE,
        max_inflight_count: MAX_INFLIGHT_COUNT,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: format!("mqttmesh-v4-{}", addr.port()),
        listen: addr,
        tls: None,
        // rumqttd sleeps this long after every accept; 0 lets thousands of
        // clients connect at once.
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: MAX_OUTGOING_PACKET_COUNT,
            max_segment_size: MAX_SEGMENT_SIZE,
            max_segment_count: MAX_SEGMENT_COUNT,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some([("v4".to_owned(), server)].into_iter().collect()),
        ..Config::default()
    }
}

/// Reserves a free port on `ip` by binding port 0 and releasing it. Another
/// process may take it before the broker binds; callers retry on that race.
pub(crate) fn free_port(ip: IpAddr) -> io::Result<u16> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Where to connect to reach a listener bound on `addr` (an unspecified bind
/// address is reached over loopback).
pub(crate) fn probe_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// Checks that an MQTT 3.1.1 broker answers at `addr`: CONNECT (clean session),
/// expect a CONNACK (accepted or not), DISCONNECT. Each step may take `timeout`.
pub(crate) fn probe_mqtt(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    static PROBES: AtomicU32 = AtomicU32::new(0);
    // rumqttd rejects '/', '+', '$' and '#' in client ids.
    let id = format!(
        "mqttmesh-probe-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, Ordering::Relaxed)
    );
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&connect_packet(&id))?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    // Any CONNACK means the broker is up: one that refuses anonymous clients answers
    // "not authorised" (5), and that is ready too.
    if connack[..2] != CONNACK_ACCEPTED[..2] {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected reply to CONNECT: {connack:02x?}"),
        ));
    }
    stream.write_all(&DISCONNECT)
}

/// CONNACK, remaining length 2, no session present, return code 0 (accepted).
const CONNACK_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
/// DISCONNECT, remaining length 0.
const DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// An MQTT 3.1.1 CONNECT packet: clean session, keep-alive 10 s, no will,
/// no credentials. `id` must be shorter than 116 bytes so the remaining length
/// fits one byte.
fn connect_packet(id: &str) -> Vec<u8> {
    const VARIABLE_HEADER: [u8; 10] = [
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, // protocol level 4 = 3.1.1
        0x02, // flags: clean session
        0x00, 0x0a, // keep-alive seconds
    ];
    let remaining = VARIABLE_HEADER.len() + 2 + id.len();
    assert!(remaining < 0x80, "probe client id too long");
    let mut packet = Vec::with_capacity(2 + remaining);
    packet.extend_from_slice(&[0x10, remaining as u8]);
    packet.extend_from_slice(&VARIABLE_HEADER);
    packet.extend_from_slice(&(id.len() as u16).to_be_bytes());
    packet.extend_from_slice(id.as_bytes());
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_matches_mqtt_3_1_1_layout() {
        let packet = connect_packet("ab");
        assert_eq!(
            packet,
            [
                0x10, 0x0e, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x0a, 0x00, 0x02,
                b'a', b'b'
            ]
        );
    }

    #[test]
    fn unspecified_bind_is_probed_over_loopback() {
        let any: SocketAddr = "0.0.0.0:1883".parse().unwrap();
        assert_eq!(probe_addr(any), "127.0.0.1:1883".parse().unwrap());
        let lo: SocketAddr = "127.0.0.2:1883".parse().unwrap();
        assert_eq!(probe_addr(lo), lo);
    }

    #[test]
    fn config_listens_only_on_the_given_address_over_v4() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let config = config(addr);
        let v4 = config.v4.as_ref().unwrap();
        assert_eq!(v4.len(), 1);
        assert_eq!(v4.values().next().unwrap().listen, addr);
        assert!(config.v5.is_none() && config.ws.is_none());
        assert!(config.console.is_none() && config.prometheus.is_none());
        assert!(config.metrics.is_none() && config.bridge.is_none());
    }
}
