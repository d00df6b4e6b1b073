//! Fixture paths and reference data shared by the integration tests.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The checkout: where this test binary was built, or `PROMPTCAM_TEST_REPO` for a binary
/// carried to another machine (scripts/gpu-check.sh).
pub fn repo() -> PathBuf {
    std::env::var_os("PROMPTCAM_TEST_REPO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The promptcam binary built with these tests, or `PROMPTCAM_TEST_BIN` (a carried one).
fn binary() -> std::ffi::OsString {
    std::env::var_os("PROMPTCAM_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_promptcam").into())
}

pub fn path(rel: &str) -> PathBuf {
    repo().join(rel)
}

pub fn image(name: &str) -> PathBuf {
    path("tests/fixtures/images").join(name)
}

/// The bundled demo config without its `[http]` table (which listens on the fixed port 9464):
/// for tests that run it next to others, each adding what it needs.
pub fn demo_without_http() -> String {
    let demo = std::fs::read_to_string(path("config/demo.toml")).unwrap();
    let cut = demo
        .find("\n# The pages on")
        .or_else(|| demo.find("\n[http]"))
        .expect("the demo's [http] table");
    let rest = &demo[cut..];
    assert!(
        !rest.contains("[[cameras]]"),
        "[http] is the demo's last table"
    );
    demo[..cut + 1].to_string()
}

pub fn reference(name: &str) -> Value {
    let p = path("tests/fixtures/reference").join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap() as f32)
        .collect()
}

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "promptcam-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a model directory, leaving out the onnx files for which `keep` is false.
pub fn copy_model(src: &Path, dst: &Path, keep: impl Fn(&str) -> bool) {
    std::fs::create_dir_all(dst.join("onnx")).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    for e in std::fs::read_dir(src.join("onnx")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if keep(&name) {
            std::fs::copy(e.path(), dst.join("onnx").join(&name)).unwrap();
        }
    }
}

/// The promptcam binary as a command; under a cross-build's emulator (`PROMPTCAM_TEST_RUNNER`,
/// e.g. "qemu-aarch64-static -L /usr/aarch64-linux-gnu", set by scripts/aarch64-check.sh) the
/// binary runs through it.
pub fn promptcam_command() -> std::process::Command {
    match std::env::var("PROMPTCAM_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut words = runner.split_whitespace();
            let mut cmd = std::process::Command::new(words.next().unwrap_or_default());
            cmd.args(words).arg(binary());
            cmd
        }
        _ => std::process::Command::new(binary()),
    }
}

/// Runs the promptcam binary, returning (status code, stdout, stderr).
pub fn promptcam(args: &[&str]) -> (i32, String, String) {
    let out = promptcam_command().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Reads one request head; `None` when the client closed the connection.
pub fn read_request(reader: &mut std::io::BufReader<std::net::TcpStream>) -> Option<String> {
    use std::io::BufRead;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            return Some(head);
        }
    }
}
