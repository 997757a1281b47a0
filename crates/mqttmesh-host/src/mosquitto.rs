//! A real Mosquitto broker process on a free loopback port, for end-to-end and
//! fault tests (STYLE.md §6).
//!
//! [`Mosquitto::start`] writes a config file into a fresh temp dir, spawns the
//! `mosquitto` binary and returns once it answers an MQTT CONNECT. The process
//! is killed and reaped, and the temp dir removed, when the value is dropped.
//! [`Mosquitto::stop`] and [`Mosquitto::restart`] simulate a broker crash and
//! recovery on the same port. Only `std::process` is used, so this works from
//! sync code and from any async runtime (calls block briefly).
//!
//! [`Mosquitto::start_secure`] adds a TLS listener on a second free port and a
//! password file made with Mosquitto's own `mosquitto_passwd` (see [`Secure`]).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Instant;

use crate::broker::{free_port, probe_mqtt, BrokerError, PROBE_INTERVAL, STARTUP_DEADLINE};

mod secure;

pub use secure::{Secure, TlsListener};

/// Where Debian and Ubuntu install the binary (not on a normal user's PATH).
const SBIN_MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// How often a free port is picked again after losing a bind race.
const BIND_ATTEMPTS: u32 = 5;

/// A running (or stopped) `mosquitto` process owned by this value.
#[derive(Debug)]
pub struct Mosquitto {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    tls_port: Option<u16>,
    child: Option<Child>,
}

impl Mosquitto {
    /// Whether the `mosquitto` binary can be found.
    pub fn available() -> bool {
        binary().is_some()
    }

    /// Starts Mosquitto on a free loopback port with the default test config.
    pub fn start() -> Result<Mosquitto, BrokerError> {
        Self::start_with("")
    }

    /// Starts Mosquitto with `extra_config_lines` appended to the generated
    /// config (e.g. TLS or password options for an extra listener). Files they
    /// name (certificates, password files) must exist before the call.
    pub fn start_with(extra_config_lines: &str) -> Result<Mosquitto, BrokerError> {
        Self::launch(|_, _| Ok(extra_config_lines.to_string()), false)
    }

    /// Starts Mosquitto with what `secure` asks for: a TLS listener on its own free
    /// port ([`Mosquitto::tls_port`]) and a password file (anonymous clients refused).
    pub fn start_secure(secure: &Secure) -> Result<Mosquitto, BrokerError> {
        Self::launch(
            |dir, tls_port| secure.config_lines(dir, tls_port),
            secure.tls.is_some(),
        )
    }

    /// Picks free ports (a second one with `tls`) and starts the broker with the extra
    /// config lines `extra(dir, tls_port)` returns; again on a bind race.
    fn launch(
        extra: impl Fn(&Path, Option<u16>) -> Result<String, BrokerError>,
        tls: bool,
    ) -> Result<Mosquitto, BrokerError> {
        let binary = binary().ok_or(BrokerError::NotInstalled)?;
        let dir = unique_temp_dir().map_err(BrokerError::Config)?;
        let mut mosquitto = Mosquitto {
            binary,
            dir,
            port: 0,
            tls_port: None,
            child: None,
        };
        let mut last = None;
        for _ in 0..BIND_ATTEMPTS {
            let loopback = Ipv4Addr::LOCALHOST.into();
            mosquitto.port = free_port(loopback).map_err(BrokerError::Bind)?;
            mosquitto.tls_port = match tls {
                true => Some(secure::second_free_port(mosquitto.port)?),
                false => None,
            };
            let lines = extra(&mosquitto.dir, mosquitto.tls_port)?;
            fs::write(
                mosquitto.config_path(),
                config(mosquitto.port, &mosquitto.log_path(), &lines),
            )
            .map_err(BrokerError::Config)?;
            match mosquitto.spawn_and_wait() {
                Ok(()) => return Ok(mosquitto),
                // Lost the race for the port to another process: pick another.
                Err(e) if port_taken(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        // The loop ran at least once and only continues after storing an error.
        Err(last.expect("BIND_ATTEMPTS > 0"))
    }

    /// The port Mosquitto listens on (stable across [`Mosquitto::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The loopback address Mosquitto listens on.
    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// The port of the TLS listener ([`Mosquitto::start_secure`] with TLS only).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The loopback address of the TLS listener, if any.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_port.map(|port| (Ipv4Addr::LOCALHOST, port).into())
    }

    /// The temp dir holding the config and log; removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running (it has not been stopped and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the broker (SIGKILL, like a crash: no will suppression, no clean
    /// close) and reaps it. Afterwards the port refuses connections.
    /// Does nothing if already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean the process already exited; wait() still reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker if running and starts it again on the same port with the
    /// same config, returning once it accepts MQTT connections. Fails with
    /// [`BrokerError::Exited`] if another process took the port meanwhile.
    pub fn restart(&mut self) -> Result<(), BrokerError> {
        self.stop();
        self.spawn_and_wait()
    }

    /// Mosquitto's log so far (for test failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path().display()))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("mosquitto.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    /// Spawns the process and polls until it answers MQTT, it exits, or the
    /// startup deadline passes.
    fn spawn_and_wait(&mut self) -> Result<(), BrokerError> {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Errors before the log file is opened (bad config) go to stderr.
            .stderr(fs::File::create(self.dir.join("stderr.log")).map_err(BrokerError::Config)?)
            .spawn()
            .map_err(BrokerError::Spawn)?;
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if !self.is_running() {
                self.stop();
                return Err(BrokerError::Exited {
                    port: self.port,
                    log: self.startup_log(),
                });
            }
            if probe_mqtt(self.addr(), PROBE_INTERVAL * 10).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(BrokerError::NotReady {
                    port: self.port,
                    log: self.startup_log(),
                });
            }
            thread::sleep(PROBE_INTERVAL);
        }
    }

    fn startup_log(&self) -> String {
        let stderr = fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        format!("{stderr}{}", self.log())
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        // Best effort: a leftover temp dir is harmless.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn port_taken(error: &BrokerError) -> bool {
    matches!(error, BrokerError::Exited { log, .. } if log.contains("Address already in use"))
}

/// The generated config: one plain listener on loopback, anonymous access, no
/// persistence, a deep per-client queue, log to a file in the temp dir.
fn config(port: u16, log_path: &Path, extra_config_lines: &str) -> String {
    // Extra lines that set their own access rules replace the anonymous default.
    let anonymous = if extra_config_lines.contains("allow_anonymous") {
        ""
    } else {
        "allow_anonymous true\n"
    };
    format!(
        "# generated by mqttmesh-host for tests\n\
         # as root, stay root so the log file in our temp dir stays writable\n\
         user root\n\
         {anonymous}\
         persistence false\n\
         max_queued_messages 10000\n\
         set_tcp_nodelay true\n\
         log_dest file {log}\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         log_type information\n\
         connection_messages true\n\
         log_timestamp true\n\
         listener {port} 127.0.0.1\n\
         {extra_config_lines}\n",
        log = log_path.display(),
    )
}

/// The `mosquitto` binary on PATH, else the Debian location.
fn binary() -> Option<PathBuf> {
    find_binary(std::env::var_os("PATH"), Path::new(SBIN_MOSQUITTO))
}

fn find_binary(path: Option<std::ffi::OsString>, fallback: &Path) -> Option<PathBuf> {
    let on_path = path.and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("mosquitto"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| fallback.is_file().then(|| fallback.to_path_buf()))
}

/// A new empty dir under the system temp dir, unique per process and call.
fn unique_temp_dir() -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "mqttmesh-mosquitto-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let dir = std::env::temp_dir().join(name);
    // A leftover from a crashed run with a recycled pid: start clean.
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_loopback_only() {
        let text = config(4321, Path::new("/tmp/x.log"), "max_keepalive 60");
        let listeners: Vec<&str> = text.lines().filter(|l| l.starts_with("listener")).collect();
        assert_eq!(listeners, ["listener 4321 127.0.0.1"]);
        assert!(text.contains("log_dest file /tmp/x.log\n"));
        assert!(text.ends_with("max_keepalive 60\n"));
    }

    #[test]
    fn missing_binary_is_reported_with_the_install_command() {
        let empty = unique_temp_dir().unwrap();
        let found = find_binary(Some(empty.clone().into()), &empty.join("mosquitto"));
        fs::remove_dir_all(&empty).unwrap();
        assert_eq!(found, None);
        let message = BrokerError::NotInstalled.to_string();
        assert!(message.contains("apt-get install mosquitto"), "{message}");
    }

    #[test]
    fn temp_dirs_are_unique() {
        let a = unique_temp_dir().unwrap();
        let b = unique_temp_dir().unwrap();
        assert_ne!(a, b);
        fs::remove_dir_all(a).unwrap();
        fs::remove_dir_all(b).unwrap();
    }
}
