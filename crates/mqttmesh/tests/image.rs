//! `mqttmesh make-image` and `mqttmesh image-info`, run as the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_mqttmesh");

/// A fresh temp dir for one test, removed on drop (this crate has no tempfile).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("mqttmesh-image-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run mqttmesh")
}

fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

#[test]
fn make_image_then_image_info_reports_what_was_written() {
    let dir = TempDir::new("make_then");
    let bin = dir.path().join("fw.bin");
    let out = run(&[
        "make-image",
        "--version",
        "3.1.4",
        "--project",
        "probe",
        "--size",
        "64K",
        "--seed",
        "5",
        "--out",
        path(&bin),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let made = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        made.contains("65536 bytes") && made.contains("3.1.4"),
        "{made}"
    );
    let bytes = std::fs::read(&bin).unwrap();
    assert_eq!(bytes.len(), 65536);
    let sha = mqttmesh_host::image::sha256(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    assert!(made.contains(&sha), "{made}");

    let out = run(&["image-info", path(&bin)]);
    assert!(out.status.success(), "{}", text(&out));
    let info = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "version    3.1.4",
        "project    probe",
        "65536 bytes",
        "checksum   ok",
        &sha,
    ] {
        assert!(info.contains(want), "missing `{want}` in\n{info}");
    }
}

#[test]
fn image_info_fails_on_a_corrupted_image_and_on_other_files() {
    let dir = TempDir::new("corrupt");
    let bin = dir.path().join("fw.bin");
    let out = run(&[
        "make-image",
        "--version",
        "1",
        "--size",
        "4096",
        "--out",
        path(&bin),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&bin, &bytes).unwrap();
    let out = run(&["image-info", path(&bin)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("INVALID"),
        "{}",
        text(&out)
    );

    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "hello").unwrap();
    let out = run(&["image-info", path(&other)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an ESP-IDF application image"),
        "{}",
        text(&out)
    );

    let out = run(&["image-info", path(&dir.path().join("missing.bin"))]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "{}",
        text(&out)
    );
}

#[test]
fn make_image_refuses_a_version_too_long_for_the_descriptor() {
    let dir = TempDir::new("too_long");
    let bin = dir.path().join("fw.bin");
    let long = "1".repeat(32);
    let out = run(&["make-image", "--version", &long, "--out", path(&bin)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 31 bytes"),
        "{}",
        text(&out)
    );
    assert!(!bin.exists());
}
