//! The local lab: real PostgreSQL, Redis and nginx from Debian's packages,
//! and an app tier, restarted on 127.0.0.1 by `playbooks/local-lab.yaml`.
//!
//! They start servers, so they are `#[ignore]`d: a bare `cargo test` lists
//! them as ignored, and `cargo xtask test` installs the packages and runs
//! them with `--ignored`.
//! The scenarios share fixed ports, so they run one after another here.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use blackstart_tests::{Run, binary, root, system_phase};

struct Lab {
    tmp: tempfile::TempDir,
}

impl Lab {
    fn run(&self, args: &[&str]) -> Run {
        Command::new(binary())
            .current_dir(root())
            .args(args)
            .args([
                "--state-dir",
                &self.tmp.path().join("state").display().to_string(),
            ])
            .env("LAB_DIR", self.tmp.path().join("data"))
            .output()
            .unwrap()
            .into()
    }

    fn status(&self, run: &str) -> serde_json::Value {
        serde_json::from_str(&self.run(&["status", run, "--format", "json"]).stdout).unwrap()
    }
}

impl Drop for Lab {
    /// Whatever a failed assertion left running is stopped.
    fn drop(&mut self) {
        let script = root().join("playbooks/local-lab/lab.sh");
        for args in [
            ["stop", "web", "58081"],
            ["stop", "app", "58080"],
            ["stop", "redis", "56379"],
            ["stop", "postgres", "55432"],
        ] {
            let _ = Command::new(&script)
                .args(args)
                .env("LAB_DIR", self.tmp.path().join("data"))
                .output();
        }
    }
}

/// The body of GET http://127.0.0.1:PORT/healthz, or None if nothing answers.
fn get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    Some(reply)
}

fn pg_ready() -> bool {
    Command::new("pg_isready")
        .args(["-h", "127.0.0.1", "-p", "55432"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
#[ignore = "needs PostgreSQL, Redis and nginx: `cargo xtask test` installs them and runs it"]
fn the_local_lab_restarts_real_services() {
    let lab = Lab {
        tmp: tempfile::tempdir().unwrap(),
    };
    let playbook = root()
        .join("playbooks/local-lab.yaml")
        .display()
        .to_string();

    // Ordered start of the whole lab.
    let run = lab.run(&["apply", &playbook, "--run-id", "lab1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let front = get(58081).expect("nginx answers");
    assert!(
        front.starts_with("HTTP/1.1 200") && front.contains("\"redis\": \"ok\""),
        "{front}"
    );
    let records =
        std::fs::read_to_string(lab.tmp.path().join("state/runs/lab1/journal.jsonl")).unwrap();
    let at = |needle: &str| {
        records
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in the journal"))
    };
    let app_starts = at("\"system\":\"app\",\"phase\":\"Starting\"");
    assert!(at("\"system\":\"postgres\",\"phase\":\"Healthy\"") < app_starts);
    assert!(at("\"system\":\"redis\",\"phase\":\"Healthy\"") < app_starts);
    assert!(app_starts < at("\"system\":\"web\",\"phase\":\"Starting\""));

    // A full rollback of the finished run stops everything, dependents first.
    let rollback = lab.run(&["rollback", "lab1"]);
    assert_eq!(rollback.code, 0, "{}", rollback.stderr);
    assert!(
        get(58081).is_none() && get(58080).is_none(),
        "web and app stopped"
    );
    assert!(!pg_ready(), "postgres stopped");
    let stops: Vec<usize> = [
        "\"system\":\"web\",\"phase\":\"Stopping\"",
        "\"system\":\"app\",\"phase\":\"Stopping\"",
        "\"system\":\"postgres\",\"phase\":\"Stopping\"",
    ]
    .iter()
    .map(|n| {
        std::fs::read_to_string(lab.tmp.path().join("state/runs/lab1/journal.jsonl"))
            .unwrap()
            .find(n)
            .unwrap()
    })
    .collect();
    assert!(
        stops.windows(2).all(|w| w[0] < w[1]),
        "dependents first: {stops:?}"
    );

    // A front end that starts but stays unhealthy (nginx pointed at a dead
    // upstream) is rolled back with the app; the data stage stays up.
    let broken = std::fs::read_to_string(&playbook).unwrap().replace(
        "start, web, \"58081\", \"58080\"",
        "start, web, \"58081\", \"58099\"",
    );
    assert!(broken.contains("58099"));
    let broken_path = lab.tmp.path().join("broken-lab.yaml");
    std::fs::write(&broken_path, broken).unwrap();
    let run = lab.run(&["apply", broken_path.to_str().unwrap(), "--run-id", "lab2"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let status = lab.status("lab2");
    assert_eq!(status["phase"], "RolledBack");
    assert_eq!(system_phase(&status, "web"), "RolledBack");
    assert_eq!(system_phase(&status, "app"), "RolledBack");
    assert_eq!(system_phase(&status, "postgres"), "Healthy");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("web: not healthy"),
        "{status}"
    );
    assert!(pg_ready(), "the data stage stays up");
    assert!(get(58081).is_none(), "the front end was stopped");
    assert_eq!(lab.run(&["rollback", "lab2"]).code, 0);
    assert!(!pg_ready());
    assert_eq!(lab.run(&["audit", "lab2", "--verify"]).code, 0);
}
