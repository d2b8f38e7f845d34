//! Helpers for the end-to-end suite in `tests/`: find (and if need be build)
//! the `blackstart` binary and run it the way a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root, where `playbooks/` lives.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// The `blackstart` binary of this build profile, built once per test run so
/// the suite never runs a stale binary (a no-op when it is up to date).
pub fn binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("a test knows its own path");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut build = Command::new(cargo);
        build
            .current_dir(root())
            .args(["build", "--quiet", "--package", "blackstart"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo can be run");
        assert!(status.success(), "building the blackstart binary failed");
        profile_dir.join("blackstart")
    })
}

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `blackstart ARGS…` in the workspace root.
pub fn blackstart(args: &[&str]) -> Run {
    Command::new(binary())
        .current_dir(root())
        .args(args)
        .output()
        .expect("the blackstart binary runs")
        .into()
}

/// Runs `blackstart ARGS…` with `input` on standard input.
pub fn blackstart_stdin(args: &[&str], input: &[u8]) -> Run {
    use std::io::Write;
    let mut child = Command::new(binary())
        .current_dir(root())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the blackstart binary runs");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A refused input may close the pipe early; that is the test's subject.
    let _ = stdin.write_all(input);
    drop(stdin);
    child
        .wait_with_output()
        .expect("the binary finishes")
        .into()
}

/// A system's phase in `status --format json` output, or "" if it is not there.
pub fn system_phase(status: &serde_json::Value, id: &str) -> String {
    status["systems"]
        .as_array()
        .and_then(|systems| systems.iter().find(|s| s["id"] == id))
        .and_then(|s| s["phase"].as_str())
        .unwrap_or_default()
        .to_owned()
}
