//! Test support shared by the host's and the CLI's integration tests (and the relay
//! benchmark): the node configuration every loopback mesh test starts from, and a
//! throw-away certificate authority for a Mosquitto with a TLS listener.
//!
//! Not published; only `[dev-dependencies]` use it.

use std::net::SocketAddr;
use std::sync::Arc;

use mqttmesh_core::config::{Builder, Config, Timing};
use mqttmesh_host::mosquitto::{Mosquitto, Secure, TlsListener};
use mqttmesh_host::mqtt_tls::Trust;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use sha1::Digest as _;

/// Firmware ID of the test meshes.
pub const FIRMWARE_ID: u32 = 0x1337;

/// The configuration builder a loopback test mesh starts from: firmware
/// [`FIRMWARE_ID`] "0.1", the emulated router's network, `broker`, and the fast node
/// timing profile. Add what the test needs, then `build()`.
pub fn config_builder(broker: SocketAddr) -> Builder {
    Config::builder()
        .firmware(FIRMWARE_ID, "0.1")
        .network("mqttmesh-router", "router-password")
        .broker(&broker.ip().to_string(), broker.port())
        .timing(Timing::fast())
}

/// [`config_builder`] built as it is.
pub fn config(broker: SocketAddr) -> Config {
    config_builder(broker)
        .build()
        .expect("the test configuration is valid")
}

/// A certificate authority and a broker certificate it signed for `127.0.0.1` and
/// `localhost`, made fresh for one test.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate, PEM (what `--ca-file` reads).
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: Vec<u8>,
    /// The broker certificate, DER (what pins hash).
    pub leaf_der: Vec<u8>,
    /// The broker's certificate and key, for Mosquitto's TLS listener.
    pub listener: TlsListener,
}

impl Pki {
    /// A new CA named `ca_name` and a broker certificate it signed.
    pub fn new(ca_name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("broker key");
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("broker params");
        leaf.distinguished_name
            .push(DnType::CommonName, "mqttmesh test broker");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_cert = leaf.signed_by(&key, &issuer).expect("broker certificate");
        Pki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            leaf_der: leaf_cert.der().to_vec(),
            listener: TlsListener {
                cert_pem: leaf_cert.pem().into_bytes(),
                key_pem: key.serialize_pem().into_bytes(),
            },
        }
    }

    /// Trust anchors holding only this CA.
    pub fn trust(&self) -> Trust {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone().into()).expect("CA is a root");
        Trust::Roots(Arc::new(roots))
    }

    /// SHA-1 of the broker certificate.
    pub fn sha1(&self) -> [u8; 20] {
        sha1::Sha1::digest(&self.leaf_der).into()
    }

    /// SHA-256 of the broker certificate.
    pub fn sha256(&self) -> [u8; 32] {
        sha2::Sha256::digest(&self.leaf_der).into()
    }

    /// A Mosquitto serving this broker certificate on its TLS listener, refusing
    /// anonymous clients and accepting `user` with `password`.
    pub fn broker(&self, user: &str, password: &str) -> Mosquitto {
        Mosquitto::start_secure(&Secure {
            tls: Some(self.listener.clone()),
            users: vec![(user.into(), password.into())],
        })
        .expect("mosquitto with TLS and a password file starts")
    }
}
