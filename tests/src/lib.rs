//! Helpers for the end-to-end suite in `tests/`: find (and if need be build)
//! the `blackstart` binary and run it the way a user would.

pub mod apiserver;
pub mod browser;
pub mod kube_api;
pub mod sshd;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// A scratch directory for runs: playbooks written into it, a state dir
/// under it, and the `log` file that the playbooks' steps append to. Each
/// command runs `blackstart` with `--state-dir` set to it.
#[derive(Debug)]
pub struct Scratch {
    pub tmp: tempfile::TempDir,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            tmp: tempfile::tempdir().expect("a temporary directory can be made"),
        }
    }
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }
    /// Writes `name` into the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir().join(name);
        std::fs::write(&path, text).expect("the scratch directory is writable");
        path.display().to_string()
    }
    pub fn state_dir(&self) -> String {
        self.dir().join("state").display().to_string()
    }
    pub fn journal(&self, run: &str) -> PathBuf {
        self.dir()
            .join("state/runs")
            .join(run)
            .join("journal.jsonl")
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(binary());
        c.args(args).args(["--state-dir", &self.state_dir()]);
        c
    }
    pub fn run(&self, args: &[&str]) -> Run {
        self.cmd(args).output().expect("blackstart runs").into()
    }
    /// Starts `blackstart ARGS…` without waiting for it; its output is dropped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("blackstart runs")
    }
    /// `status RUN --format json`, or null while there is no such run.
    pub fn status(&self, run: &str) -> serde_json::Value {
        let out = self.run(&["status", run, "--format", "json"]);
        serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
    /// Waits, bounded, until the run's status satisfies `ready`.
    pub fn wait(&self, run: &str, what: &str, ready: impl Fn(&serde_json::Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status(run);
            if ready(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    /// The lines of `log`, as the steps wrote them.
    pub fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
    /// The journal's events, as JSON.
    pub fn events(&self, run: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.journal(run))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|r| r["event"].clone())
            .collect()
    }
}

/// Waits, bounded, for a child to end; its exit code (-1 for a signal).
pub fn wait_exit(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the process did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
