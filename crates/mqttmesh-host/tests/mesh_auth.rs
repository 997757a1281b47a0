//! The authenticated join over real TCP (`docs/PROTOCOL.md` "Join handshake"): a raw
//! client on loopback plays a joining node against a running mesh node whose broker is
//! a real Mosquitto started by the test. With the mesh's key it is accepted and its
//! publication reaches the broker; with another password's key it is refused with
//! `JoinReject { Auth }`, the node counts it, and nothing it sends reaches the broker.
//!
//! Every wait is on a condition with a deadline; nothing sleeps to synchronise.

use std::net::SocketAddr;
use std::time::Duration;

use mqttmesh_core::config::DEFAULT_MESH_PASSWORD;
use mqttmesh_core::link::{Deframer, Frame, JoinKey, JoinRequest, Reason, Transcript, MAX_FRAME};
use mqttmesh_core::MsgType;
use mqttmesh_host::mesh::{render_tree, Mesh, MeshSpec};
use mqttmesh_host::mosquitto::Mosquitto;
use mqttmesh_host::observer::Observer;
use mqttmesh_host::radio::Timing;
use mqttmesh_host::topology;
use mqttmesh_testkit as testkit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);
const OUT: &str = "esp8266-out/";

fn encode(frame: &Frame<'_>) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    let n = frame.encode(&mut buf).expect("valid test frame");
    buf[..n].to_vec()
}

/// A raw link to a node's mesh port.
struct Raw {
    stream: TcpStream,
    deframer: Deframer,
    /// Bytes read but not yet fed to the deframer.
    pending: Vec<u8>,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("the mesh port accepts");
        Raw {
            stream,
            deframer: Deframer::new(),
            pending: Vec::new(),
        }
    }

    /// The next frame body, or `None` when the node closed the link.
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(body) = self.deframer.frame() {
                let body = body.to_vec();
                self.deframer.consume();
                return Some(body);
            }
            if !self.pending.is_empty() {
                let taken = self
                    .deframer
                    .feed(&self.pending)
                    .expect("the node frames correctly");
                self.pending.drain(..taken);
                continue;
            }
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
                .await
                .expect("the node answers in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Runs the join as `id`, proving with `key`; the node's answer to the proof.
    async fn join(&mut self, id: &str, key: &JoinKey) -> Vec<u8> {
        let request = JoinRequest {
            nonce: [0x42; 16],
            node_id: id,
            chip_id: 0x0B0B0B,
            firmware_id: 0x1337,
            firmware_version: "0.1",
            subtree_height: 0,
        };
        self.send(&encode(&Frame::JoinRequest(request)))
            .await
            .expect("send the request");
        let challenge = self.next().await.expect("a challenge");
        let Ok(Frame::Challenge {
            nonce, parent_id, ..
        }) = Frame::decode(&challenge)
        else {
            panic!("expected a challenge, got {challenge:02x?}");
        };
        let t = Transcript::new(&request, &nonce, parent_id).expect("valid request");
        self.send(&encode(&Frame::Proof {
            tag: key.child_tag(&t),
        }))
        .await
        .expect("send the proof");
        self.next().await.expect("an answer to the proof")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_join_is_refused_over_tcp_and_nothing_is_relayed() {
    let broker = Mosquitto::start().expect("mosquitto starts (scripts/test installs it)");
    let cfg = testkit::config(broker.addr());
    let mesh_key = JoinKey::derive(&cfg.mesh_password, &cfg.mesh_ssid_base);
    assert_eq!(cfg.mesh_password.as_str(), DEFAULT_MESH_PASSWORD);
    let observer = Observer::start(broker.addr(), OUT, "mesh-auth-observer")
        .await
        .expect("observer connects");
    let mesh = Mesh::start(MeshSpec {
        timing: Timing::fast(),
        seed: 41,
        ..MeshSpec::new(topology::line(2), cfg, broker.addr())
    })
    .await
    .expect("nodes start");
    assert!(
        mesh.wait_for(WAIT, |m| m.all_online()).await,
        "the mesh did not form:\n{}",
        render_tree(&mesh.rows())
    );
    // Node 1 hangs below node 0: its parent address is node 0's mesh port.
    let addr = mesh.radio().parent_addr(1).expect("node 1 is below node 0");

    // The wrong password: refused with Auth, counted, and the link closed.
    let wrong = JoinKey::derive(
        "not-the-mesh-password",
        &testkit::config(broker.addr()).mesh_ssid_base,
    );
    let mut raw = Raw::connect(addr).await;
    let answer = raw.join("0B0B0B", &wrong).await;
    assert_eq!(
        Frame::decode(&answer),
        Ok(Frame::JoinReject {
            reason: Reason::Auth
        })
    );
    let publish = encode(&Frame::Publish {
        id: 0,
        origin: "0B0B0B",
        msg_type: MsgType::Qos0,
        topic: "esp8266-out/0B0B0B/sneaky",
        payload: b"x",
    });
    // The node may already have closed the link: a failed write is fine.
    let _ = raw.send(&publish).await;
    assert_eq!(raw.next().await, None, "the node closed the link");
    assert!(
        mesh.wait_for(WAIT, |m| m.statuses()[0].counters.auth_failures == 1)
            .await,
        "the refusal was counted: {:?}",
        mesh.statuses()[0].counters
    );
    assert!(!mesh.statuses()[0].children.iter().any(|c| c == "0B0B0B"));

    // The mesh's own key: accepted, and its publication reaches the broker.
    let mut good = Raw::connect(addr).await;
    let answer = good.join("0C0C0C", &mesh_key).await;
    assert!(
        matches!(Frame::decode(&answer), Ok(Frame::JoinAccept { .. })),
        "{answer:02x?}"
    );
    good.send(&encode(&Frame::Publish {
        id: 0,
        origin: "0C0C0C",
        msg_type: MsgType::Qos1,
        topic: "esp8266-out/0C0C0C/hello",
        payload: b"y",
    }))
    .await
    .expect("send");
    assert!(
        observer
            .wait_for(WAIT, |o| !o
                .messages(|t| t == "esp8266-out/0C0C0C/hello")
                .is_empty())
            .await,
        "the authenticated child's publication reached the broker"
    );
    assert!(observer.messages(|t| t.contains("0B0B0B")).is_empty());
    mesh.shutdown();
}
