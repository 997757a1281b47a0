//! What a node counts and logs of its mesh TLS handshakes. The core never sees a
//! failed handshake, so these live on the host side, in `NodeStatus::mesh_tls`.

use std::net::SocketAddr;

use serde::Serialize;

use super::{colon_hex, HandshakeError};

/// A node's mesh TLS counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MeshTlsCounters {
    /// Parent links that finished the TLS handshake.
    pub parent_handshakes: u64,
    /// Parents refused because their certificate is not the pinned one.
    pub parent_pin_mismatches: u64,
    /// Other failed handshakes with a parent (timeout, not TLS, bad signature).
    pub parent_handshake_failures: u64,
    /// Child connections that finished the TLS handshake.
    pub child_handshakes: u64,
    /// Connections to the mesh port refused: plaintext, garbage, failed or stalled
    /// handshake.
    pub child_handshake_failures: u64,
    /// Handshakes (either side) that timed out; also counted in the two above.
    pub handshake_timeouts: u64,
}

impl MeshTlsCounters {
    /// Adds `other` to these (for mesh totals).
    pub fn add(&mut self, other: &MeshTlsCounters) {
        self.parent_handshakes += other.parent_handshakes;
        self.parent_pin_mismatches += other.parent_pin_mismatches;
        self.parent_handshake_failures += other.parent_handshake_failures;
        self.child_handshakes += other.child_handshakes;
        self.child_handshake_failures += other.child_handshake_failures;
        self.handshake_timeouts += other.handshake_timeouts;
    }

    /// Node `node` refused, or failed to reach over TLS, the parent at `addr`.
    pub(crate) fn parent_refused(&mut self, node: &str, addr: SocketAddr, e: &HandshakeError) {
        match e {
            HandshakeError::Pin(m) => {
                self.parent_pin_mismatches += 1;
                tracing::warn!(target: "mqttmesh::meshtls", node = %node,
                    "refusing the parent at {addr}: its certificate's SHA-1 fingerprint {} is \
                     not the pinned {} (ssl/fingerprint); it serves another mesh certificate",
                    colon_hex(&m.seen), colon_hex(&m.pinned));
                return;
            }
            HandshakeError::Timeout(_) => {
                self.parent_handshake_failures += 1;
                self.handshake_timeouts += 1;
            }
            _ => self.parent_handshake_failures += 1,
        }
        tracing::warn!(target: "mqttmesh::meshtls", node = %node,
            "parent at {addr}: {e}; is mesh TLS on there, with the same files?");
    }

    /// Node `node` closed a connection from `peer` to its mesh port.
    pub(crate) fn child_refused(&mut self, node: &str, peer: SocketAddr, e: &HandshakeError) {
        self.child_handshake_failures += 1;
        if matches!(e, HandshakeError::Timeout(_)) {
            self.handshake_timeouts += 1;
        }
        tracing::warn!(target: "mqttmesh::meshtls", node = %node,
            "refused a connection to the mesh port from {peer}: {e} (mesh TLS is on here; is \
             it on at the child?)");
    }
}
