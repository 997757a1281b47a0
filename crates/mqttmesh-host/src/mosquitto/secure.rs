//! A TLS listener and a password file for the test Mosquitto (issue 4 §4).
//!
//! The password file is made by Mosquitto's own `mosquitto_passwd` (shipped with the
//! `mosquitto` package), so the broker checks logins exactly as in production.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::broker::{free_port, BrokerError};

/// Where Debian and Ubuntu install `mosquitto_passwd`.
const USR_BIN_MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
/// Tries at drawing a TLS port different from the plain one.
const PORT_DRAWS: u32 = 16;

/// A TLS listener's certificate and key, PEM encoded.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// The certificate chain the listener serves, leaf first.
    pub cert_pem: Vec<u8>,
    /// The leaf's private key.
    pub key_pem: Vec<u8>,
}

/// What [`super::Mosquitto::start_secure`] adds to the test broker.
#[derive(Debug, Clone, Default)]
pub struct Secure {
    /// A TLS listener on a second loopback port (the plain listener stays).
    pub tls: Option<TlsListener>,
    /// `(user, password)` pairs of a password file. When there are any, anonymous
    /// clients are refused on every listener.
    pub users: Vec<(String, String)>,
}

impl Secure {
    /// Writes the files into `dir` and returns the config lines that use them.
    pub(super) fn config_lines(
        &self,
        dir: &Path,
        tls_port: Option<u16>,
    ) -> Result<String, BrokerError> {
        let mut lines = String::new();
        if !self.users.is_empty() {
            let file = dir.join("passwd");
            write_password_file(&file, &self.users)?;
            lines.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                file.display()
            ));
        }
        if let (Some(tls), Some(port)) = (&self.tls, tls_port) {
            let cert = dir.join("server.pem");
            let key = dir.join("server.key.pem");
            fs::write(&cert, &tls.cert_pem).map_err(BrokerError::Config)?;
            fs::write(&key, &tls.key_pem).map_err(BrokerError::Config)?;
            lines.push_str(&format!(
                "listener {port} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
                cert.display(),
                key.display()
            ));
        }
        Ok(lines)
    }
}

/// A free loopback port other than `taken`.
pub(super) fn second_free_port(taken: u16) -> Result<u16, BrokerError> {
    for _ in 0..PORT_DRAWS {
        let port = free_port(Ipv4Addr::LOCALHOST.into()).map_err(BrokerError::Bind)?;
        if port != taken {
            return Ok(port);
        }
    }
    Err(BrokerError::Bind(io::Error::new(
        io::ErrorKind::AddrInUse,
        "the system keeps handing out the same free port",
    )))
}

/// Runs `mosquitto_passwd -b` once per user (`-c` for the first, to create the file).
fn write_password_file(file: &Path, users: &[(String, String)]) -> Result<(), BrokerError> {
    let tool = mosquitto_passwd().ok_or_else(|| {
        BrokerError::Config(io::Error::new(
            io::ErrorKind::NotFound,
            "mosquitto_passwd is not installed (looked on PATH and at /usr/bin); it ships \
             with the mosquitto package: `apt-get install mosquitto`",
        ))
    })?;
    let _ = fs::remove_file(file);
    for (i, (user, password)) in users.iter().enumerate() {
        let mut command = Command::new(&tool);
        if i == 0 {
            command.arg("-c");
        }
        let out = command
            .arg("-b")
            .arg(file)
            .arg(user)
            .arg(password)
            .stdin(Stdio::null())
            .output()
            .map_err(BrokerError::Spawn)?;
        if !out.status.success() {
            return Err(BrokerError::Config(io::Error::other(format!(
                "mosquitto_passwd failed for user {user:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))));
        }
    }
    Ok(())
}

fn mosquitto_passwd() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("mosquitto_passwd"))
            .find(|candidate| candidate.is_file())
    });
    let fallback = Path::new(USR_BIN_MOSQUITTO_PASSWD);
    on_path.or_else(|| fallback.is_file().then(|| fallback.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_listener_serves_the_written_files_on_loopback() {
        let dir = std::env::temp_dir().join(format!("mqttmesh-secure-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("temp dir");
        let secure = Secure {
            tls: Some(TlsListener {
                cert_pem: b"cert".to_vec(),
                key_pem: b"key".to_vec(),
            }),
            users: Vec::new(),
        };
        let lines = secure.config_lines(&dir, Some(8884)).expect("lines");
        assert!(lines.starts_with("listener 8884 127.0.0.1\n"), "{lines}");
        assert!(!lines.contains("allow_anonymous"), "{lines}");
        assert_eq!(fs::read(dir.join("server.pem")).expect("cert"), b"cert");
        assert_eq!(fs::read(dir.join("server.key.pem")).expect("key"), b"key");
        fs::remove_dir_all(&dir).expect("clean up");
        assert_ne!(second_free_port(1).expect("port"), 1);
    }
}
