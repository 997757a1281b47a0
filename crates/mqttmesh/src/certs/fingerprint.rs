//! `mqttmesh fingerprint`: connect to a TLS port, read the leaf certificate, print what
//! a firmware build needs to pin it (issue 4 §3), and warn about signature algorithms
//! that small-device TLS stacks cannot verify.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use mqttmesh_host::tls_leaf::{AnyLeaf, LeafVerifier};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{byte_array, colon_hex, sha1, sha256};

/// `mqttmesh fingerprint` arguments.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// Broker host name or IP address.
    #[arg(long)]
    host: String,
    /// TLS port of the broker.
    #[arg(long, default_value_t = 8883)]
    port: u16,
    /// Server name sent in the TLS handshake (SNI); default: --host. Brokers that serve
    /// several names pick the certificate by it.
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Seconds to wait for the connection and the handshake.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
}

/// `mqttmesh fingerprint`.
pub fn run(args: FingerprintArgs) -> Result<ExitCode> {
    if args.timeout == 0 {
        bail!("--timeout must be at least 1 second");
    }
    let timeout = Duration::from_secs(args.timeout);
    let target = format!("{}:{}", args.host, args.port);
    let name = args.server_name.as_deref().unwrap_or(&args.host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| anyhow!("--server-name {name:?} is not a DNS name or IP address: {e}"))?;
    let mut tcp = connect(&args.host, args.port, timeout)?;
    let chain = handshake(&mut tcp, server_name, &target, timeout)?;
    let leaf = chain
        .first()
        .with_context(|| format!("{target} completed the TLS handshake without a certificate"))?;
    print_report(&target, name, leaf, chain.len())?;
    Ok(ExitCode::SUCCESS)
}

fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let target = format!("{host}:{port}");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}; check --host"))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => bail!(
            "cannot connect to {target}: connection refused; is the broker listening there? \
             check --host/--port"
        ),
        Some(e) if is_timeout(&e) => bail!(
            "cannot connect to {target}: no answer within {} s; check --host/--port and \
             firewalls, or raise --timeout",
            timeout.as_secs()
        ),
        Some(e) => Err(e).with_context(|| format!("cannot connect to {target}")),
        None => bail!("{host} resolves to no address; check --host"),
    }
}

/// Runs the TLS handshake and returns the peer's chain, leaf first.
fn handshake(
    tcp: &mut TcpStream,
    server_name: ServerName<'static>,
    target: &str,
    timeout: Duration,
) -> Result<Vec<CertificateDer<'static>>> {
    let setup = |e: io::Error| anyhow!("cannot set socket timeouts: {e}");
    tcp.set_read_timeout(Some(timeout)).map_err(setup)?;
    tcp.set_write_timeout(Some(timeout)).map_err(setup)?;
    let mut conn = ClientConnection::new(client_config()?, server_name)
        .context("cannot start the TLS handshake")?;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(tcp) {
            return Err(handshake_error(&e, target, timeout));
        }
    }
    conn.peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
        .with_context(|| format!("{target} completed the TLS handshake without a certificate"))
}

fn client_config() -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no protocol version")?
        .dangerous()
        // Any certificate: this tool only reads the chain to print it, it never trusts
        // the connection or sends anything over it. Handshake signatures are still
        // checked, so the server proves it holds the key of the certificate we print.
        .with_custom_certificate_verifier(Arc::new(LeafVerifier::new(AnyLeaf, provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Turns a failed handshake into what the user should check. A peer that closes,
/// resets, stays silent or answers with bytes that are not TLS records is taken for a
/// port that does not speak TLS (most often the plain MQTT port).
fn handshake_error(e: &io::Error, target: &str, timeout: Duration) -> anyhow::Error {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let not_tls = |why: &str| {
        anyhow!(
            "TLS handshake with {target} failed: the port does not speak TLS ({why}); is it \
             the plain MQTT port? TLS brokers usually listen on 8883, check --port"
        )
    };
    match tls {
        Some(rustls::Error::InvalidMessage(m)) => {
            not_tls(&format!("the peer sent bytes that are not TLS: {m:?}"))
        }
        Some(rustls::Error::AlertReceived(alert)) => anyhow!(
            "TLS handshake with {target} failed: the server refused it with alert {alert:?}"
        ),
        Some(other) => anyhow!("TLS handshake with {target} failed: {other}"),
        None if is_timeout(e) => not_tls(&format!(
            "no TLS answer within {} s; raise --timeout if the link is slow",
            timeout.as_secs()
        )),
        None if matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        ) =>
        {
            not_tls("the peer closed the connection on our TLS hello")
        }
        None => anyhow!("TLS handshake with {target} failed: {e}"),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn print_report(target: &str, name: &str, leaf: &CertificateDer<'_>, chain: usize) -> Result<()> {
    let der = leaf.as_ref();
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| anyhow!("{target} sent a leaf certificate that is not valid X.509: {e}"))?;
    let validity = cert.validity();
    let algorithm = signature_algorithm_name(&cert.signature_algorithm.algorithm.to_id_string());
    println!("server        {target} (server name {name})");
    println!("chain         {chain} certificate(s); the leaf:");
    println!("subject       {}", cert.subject());
    println!("issuer        {}", cert.issuer());
    println!("valid from    {}", validity.not_before);
    println!("valid until   {}", validity.not_after);
    if !validity.is_valid() {
        println!("WARNING: the certificate is not valid now (expired or not yet valid)");
    }
    println!("signature     {algorithm}");
    let sha1 = sha1(der);
    let sha256 = sha256(der);
    println!("SHA-1         {}", colon_hex(&sha1));
    println!("SHA-1 bytes   {}", byte_array(&sha1));
    println!("SHA-256       {}", colon_hex(&sha256));
    println!("SHA-256 bytes {}", byte_array(&sha256));
    if let Some(warning) = small_device_warning(&algorithm) {
        println!("WARNING: {warning}");
    }
    Ok(())
}

/// The usual (OpenSSL) name of a signature algorithm OID, else the dotted OID.
fn signature_algorithm_name(oid: &str) -> String {
    let name = match oid {
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        other => return other.to_owned(),
    };
    name.to_owned()
}

/// Why small-device TLS stacks (BearSSL on ESP8266, mbedTLS built without SHA-512)
/// may fail to verify a certificate signed with `algorithm`, if they may.
fn small_device_warning(algorithm: &str) -> Option<String> {
    let upper = algorithm.to_ascii_uppercase();
    if upper.contains("SHA384") || upper.contains("SHA512") {
        return Some(format!(
            "{algorithm} is SHA-384/512-based; small-device TLS stacks (BearSSL on ESP8266, \
             mbedTLS without SHA-512) commonly cannot verify it. Pin the fingerprint instead \
             of verifying the chain, or use a certificate signed with SHA-256."
        ));
    }
    if upper.starts_with("RSASSAPSS") || upper.starts_with("ED") {
        return Some(format!(
            "{algorithm} is not supported by many small-device TLS stacks (BearSSL); prefer \
             ecdsa-with-SHA256 or sha256WithRSAEncryption."
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_follow_openssl() {
        assert_eq!(
            signature_algorithm_name("1.2.840.10045.4.3.2"),
            "ecdsa-with-SHA256"
        );
        assert_eq!(
            signature_algorithm_name("1.2.840.113549.1.1.11"),
            "sha256WithRSAEncryption"
        );
        assert_eq!(signature_algorithm_name("1.2.3.4"), "1.2.3.4");
    }

    #[test]
    fn sha384_and_sha512_signatures_are_flagged() {
        for alg in [
            "ecdsa-with-SHA384",
            "ecdsa-with-SHA512",
            "sha384WithRSAEncryption",
            "sha512WithRSAEncryption",
        ] {
            let warning = small_device_warning(alg).expect(alg);
            assert!(warning.contains("BearSSL"), "{warning}");
        }
        assert_eq!(small_device_warning("ecdsa-with-SHA256"), None);
        assert_eq!(small_device_warning("sha256WithRSAEncryption"), None);
    }

    #[test]
    fn a_closed_connection_during_the_handshake_means_not_tls() {
        let e = io::Error::from(io::ErrorKind::UnexpectedEof);
        let message = handshake_error(&e, "h:1", Duration::from_secs(1)).to_string();
        assert!(message.contains("does not speak TLS"), "{message}");
        let garbage = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        let message = handshake_error(&garbage, "h:1", Duration::from_secs(1)).to_string();
        assert!(message.contains("does not speak TLS"), "{message}");
    }
}
