//! What the CLI test files share: a temp dir per test and a run of the real binary with
//! a deadline (a run that outlives it is killed and the test fails).

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mqttmesh");

/// A fresh temp dir for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("mqttmesh-test-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How a run ended.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Exit status, time and output, for assertion messages.
    pub fn context(&self) -> String {
        format!(
            "exit {} after {:.1} s\n--- stdout\n{}\n--- stderr\n{}",
            self.status,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `mqttmesh <args>` with output captured in files under `dir` (a full pipe cannot
/// stall it), killing it if it outlives `timeout`.
pub fn mqttmesh(dir: &TempDir, name: &str, args: &[&str], timeout: Duration) -> Run {
    let out_path = dir.path(&format!("{name}.stdout"));
    let err_path = dir.path(&format!("{name}.stderr"));
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .env_remove("RUST_LOG")
        .spawn()
        .expect("spawn mqttmesh");
    let status = loop {
        match child.try_wait().expect("wait for mqttmesh") {
            Some(status) => break status,
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mqttmesh {args:?} still running after {timeout:?}; killed\n--- stdout\n{}\n--- stderr\n{}",
                    fs::read_to_string(&out_path).unwrap_or_default(),
                    fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            // Polling interval of the deadline loop.
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    Run {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}
