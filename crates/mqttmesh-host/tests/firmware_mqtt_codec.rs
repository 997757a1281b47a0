//! The ESP32-C3 firmware's MQTT 3.1.1 codec (`firmware/esp32c3/src/mqtt_codec.rs`),
//! compiled for the host and spoken to a real Mosquitto started by the test on a free
//! port: CONNECT with a will and a clean session, SUBSCRIBE, PUBLISH at QoS 0 and 1
//! both ways, PUBACK, PINGREQ, the last will (live and retained), and hostile input
//! through the decoder. The firmware itself cannot run here; its broker session uses
//! exactly these functions.
//!
//! Every wait is a read with a deadline; nothing sleeps to synchronise.

#[allow(dead_code)]
#[path = "../../../firmware/esp32c3/src/mqtt_codec.rs"]
mod mqtt_codec;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mqtt_codec::{self as codec, Connect, Incoming};
use mqttmesh_host::mosquitto::Mosquitto;

const MAX_PACKET: usize = 1536;
const WAIT: Duration = Duration::from_secs(10);

/// One client speaking only the firmware codec.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    out: [u8; MAX_PACKET],
}

impl Client {
    fn connect(broker: SocketAddr, id: &str, will_topic: &str) -> Client {
        let stream = TcpStream::connect(broker).expect("connect to the test broker");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        let mut c = Client {
            stream,
            buf: Vec::new(),
            out: [0; MAX_PACKET],
        };
        let len = codec::connect(
            &mut c.out,
            &Connect {
                client_id: id,
                keep_alive_secs: 30,
                will_topic,
                will_payload: b"offline",
                username: None,
                password: None,
            },
        )
        .expect("CONNECT fits");
        c.send(len);
        let code = c.next(|p| match p {
            Incoming::ConnAck { code } => Some(code),
            _ => None,
        });
        assert_eq!(code, 0, "broker accepted the CONNECT");
        c
    }

    fn send(&mut self, len: usize) {
        self.stream
            .write_all(&self.out[..len])
            .expect("write to the broker");
    }

    /// Reads packets until `pick` returns `Some`, acknowledging QoS 1 publications.
    fn next<T>(&mut self, mut pick: impl FnMut(Incoming<'_>) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            while let Some(len) =
                codec::frame_len(&self.buf, MAX_PACKET).expect("well-formed length")
            {
                let packet: Vec<u8> = self.buf.drain(..len).collect();
                let incoming = codec::decode(&packet).expect("broker packets decode");
                if let Incoming::Publish {
                    qos: 1,
                    id: Some(id),
                    ..
                } = incoming
                {
                    let n = codec::puback(&mut self.out, id).expect("PUBACK fits");
                    self.send(n);
                }
                if let Some(t) = pick(incoming) {
                    return t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no expected packet from the broker within {WAIT:?}"
            );
            let mut chunk = [0u8; 512];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("broker closed the connection"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("read from the broker: {e}"),
            }
        }
    }

    fn subscribe(&mut self, id: u16, filter: &str) {
        let len = codec::subscribe(&mut self.out, id, filter, 1).expect("SUBSCRIBE fits");
        self.send(len);
        let granted = self.next(|p| match p {
            Incoming::SubAck { id: got, granted } if got == id => Some(granted),
            _ => None,
        });
        assert_eq!(granted, 1, "QoS 1 granted for {filter}");
    }

    /// Waits for a publication on `topic`; returns (payload, qos, retain).
    fn expect_publish(&mut self, topic: &str) -> (Vec<u8>, u8, bool) {
        self.next(|p| match p {
            Incoming::Publish {
                topic: t,
                payload,
                qos,
                retain,
                ..
            } if t == topic => Some((payload.to_vec(), qos, retain)),
            _ => None,
        })
    }
}

#[test]
fn firmware_codec_talks_to_mosquitto() {
    let broker = Mosquitto::start().expect("start Mosquitto (apt-get install mosquitto)");
    let addr = broker.addr();

    let mut node = Client::connect(addr, "mqttmesh-00A1B2", "esp8266-out/00A1B2/info/available");
    node.subscribe(1, "esp8266-in/#");

    // QoS 1 both ways: the node's own publication comes back through its subscription
    // (acknowledged by `next`), and the broker acknowledges it.
    let len =
        codec::publish(&mut node.out, "esp8266-in/00A1B2/led", b"on", 1, false, 7).expect("fits");
    node.send(len);
    let (payload, qos, retain) = node.expect_publish("esp8266-in/00A1B2/led");
    assert_eq!((payload.as_slice(), qos, retain), (&b"on"[..], 1, false));

    // A large payload (the node's maximum, 1024 bytes) with a two-byte length.
    let big = vec![0x5A; 1024];
    let len = codec::publish(
        &mut node.out,
        "esp8266-in/broadcast/blob",
        &big,
        0,
        false,
        0,
    )
    .expect("fits");
    node.send(len);
    assert_eq!(node.expect_publish("esp8266-in/broadcast/blob").0, big);

    let len = codec::pingreq(&mut node.out).expect("fits");
    node.send(len);
    node.next(|p| matches!(p, Incoming::PingResp).then_some(()));

    // The will: a watcher sees `offline` when the node vanishes without DISCONNECT, and
    // a later subscriber gets it retained.
    let mut watcher = Client::connect(addr, "watcher", "watcher/will");
    watcher.subscribe(2, "esp8266-out/+/info/available");
    drop(node);
    let (payload, qos, _) = watcher.expect_publish("esp8266-out/00A1B2/info/available");
    assert_eq!((payload.as_slice(), qos), (&b"offline"[..], 1));
    let mut late = Client::connect(addr, "late", "late/will");
    late.subscribe(3, "esp8266-out/+/info/available");
    let (payload, _, retain) = late.expect_publish("esp8266-out/00A1B2/info/available");
    assert_eq!((payload.as_slice(), retain), (&b"offline"[..], true));

    // A clean DISCONNECT suppresses the will.
    let len = codec::disconnect(&mut late.out).expect("fits");
    late.send(len);
}

#[test]
fn hostile_broker_bytes_never_panic() {
    // Every truncation of valid packets, then seeded pseudo-random bytes.
    let mut out = [0u8; MAX_PACKET];
    let len = codec::publish(&mut out, "esp8266-in/x/y", b"payload", 1, true, 9).expect("fits");
    for cut in 0..=len {
        let bytes = &out[..cut];
        if let Ok(Some(n)) = codec::frame_len(bytes, MAX_PACKET) {
            let _ = codec::decode(&bytes[..n]);
        }
        let _ = codec::decode(bytes);
    }
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20_000 {
        let mut bytes = [0u8; 24];
        for b in &mut bytes {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        let n = (seed % 25) as usize;
        let _ = codec::frame_len(&bytes[..n], MAX_PACKET);
        let _ = codec::decode(&bytes[..n]);
    }
    // A declared length above the maximum is refused before anything is buffered.
    assert_eq!(
        codec::frame_len(&[0x30, 0xFF, 0xFF, 0x7F], MAX_PACKET),
        Err(codec::CodecError::BadLength)
    );
    // Five length bytes are malformed.
    assert_eq!(
        codec::frame_len(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01], usize::MAX),
        Err(codec::CodecError::BadLength)
    );
}

#[test]
fn encodings_match_the_specification_bytes() {
    let mut out = [0u8; 64];
    // MQTT 3.1.1 §3.12 and §3.14: two-byte packets.
    let n = codec::pingreq(&mut out).unwrap();
    assert_eq!(&out[..n], &[0xC0, 0x00]);
    let n = codec::disconnect(&mut out).unwrap();
    assert_eq!(&out[..n], &[0xE0, 0x00]);
    // §3.8: SUBSCRIBE has flags 0b0010, packet id, filter, requested QoS.
    let n = codec::subscribe(&mut out, 0x0102, "a/#", 1).unwrap();
    assert_eq!(
        &out[..n],
        &[0x82, 0x08, 0x01, 0x02, 0x00, 0x03, b'a', b'/', b'#', 0x01]
    );
    // §3.3: retained QoS 1 PUBLISH.
    let n = codec::publish(&mut out, "t", b"x", 1, true, 5).unwrap();
    assert_eq!(&out[..n], &[0x33, 0x06, 0x00, 0x01, b't', 0x00, 0x05, b'x']);
    // Too small a buffer is an error, not a panic.
    assert_eq!(
        codec::publish(&mut out[..4], "t", b"x", 1, true, 5),
        Err(codec::CodecError::BufferTooSmall)
    );
}
