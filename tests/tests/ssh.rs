//! Sites reached over ssh (`connect.ssh`), against a real sshd: Debian's
//! openssh-server, started here on 127.0.0.1 with a host key of its own,
//! logged in to with a key made for the test.
//!
//! They start a server, so they are `#[ignore]`d: a bare `cargo test` lists
//! them as ignored, and `cargo xtask test` installs openssh-server and runs
//! them with `--ignored`.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use blackstart_tests::sshd::{Sshd, keygen};
use blackstart_tests::{Scratch, system_phase};

/// A scratch directory with the site's key in `SITE_KEY` for every command.
struct Site {
    scratch: Scratch,
    key: PathBuf,
}

impl Site {
    fn new(sshd: &Sshd) -> Site {
        Site {
            scratch: Scratch::new(),
            key: sshd.identity(),
        }
    }
    fn run(&self, args: &[&str]) -> blackstart_tests::Run {
        self.scratch
            .cmd(args)
            .env("SITE_KEY", &self.key)
            .env("STEP_SECRET", "s3cr3t value")
            .output()
            .unwrap()
            .into()
    }
    /// A host key the test's sshd does not have, as a `.pub` line.
    fn another_key(&self) -> String {
        keygen(&self.scratch.dir().join("other"));
        std::fs::read_to_string(self.scratch.dir().join("other.pub")).unwrap()
    }
    /// `check` takes no state directory.
    fn check(&self, args: &[&str]) -> blackstart_tests::Run {
        Command::new(blackstart_tests::binary())
            .arg("check")
            .args(args)
            .env("SITE_KEY", &self.key)
            .output()
            .unwrap()
            .into()
    }
    fn d(&self) -> String {
        self.scratch.dir().display().to_string()
    }
    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.scratch.dir().join(name)).unwrap_or_default()
    }
}

fn playbook(connect: &str, systems: &str, on_failure: &str) -> String {
    format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: remote }}
spec:
  defaults: {{ probe: {{ interval: 50ms, timeout: 5s }} }}
  sites: [ {{ id: plant, connect: {connect} }} ]
  systems:
{systems}
  stages:
    - {{ name: all, select: {{ sites: [plant] }}, gate: {{ onFailure: {on_failure} }} }}
"
    )
}

#[test]
#[ignore = "needs Debian's openssh-server: `cargo xtask test` installs it and runs it"]
fn steps_run_on_the_host_over_one_connection_with_arguments_verbatim() {
    let sshd = Sshd::start().unwrap();
    let site = Site::new(&sshd);
    let d = site.d();
    // Every word a shell could misread: spaces, both quotes, a command
    // substitution that would leave a file behind if anything ran it.
    let tricky = format!("a  b \"c\" 'd' $(touch {d}/pwned) `touch {d}/pwned2` ; touch {d}/pwned3");
    let systems = format!(
        "    - id: db
      site: plant
      start:
        exec:
          command: [sh, -c, 'printf \"%s\" \"$1\" > {d}/arg; echo \"$SSH_CONNECTION\" > {d}/where; printf %s \"$SECRET\" > {d}/env', sh, {tricky:?}]
          env: {{ SECRET: \"${{env:STEP_SECRET}}\" }}
      health:
        - exec: {{ command: [sh, -c, 'echo \"$SSH_CONNECTION\" >> {d}/probes; test $(wc -l < {d}/probes) -ge 6'] }}
      probe: {{ successThreshold: 1, failureThreshold: 20 }}
"
    );
    let file = site.scratch.write(
        "p.yaml",
        &playbook(&sshd.connect(&sshd.host_key()), &systems, "rollback"),
    );
    let run = site.run(&["apply", &file, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(site.read("arg"), tricky, "the argument arrives verbatim");
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(
            !site.scratch.dir().join(f).exists(),
            "{f}: a shell ran a word"
        );
    }
    let start_from = site.read("where");
    assert!(
        start_from.starts_with("127.0.0.1 "),
        "the start ran in an ssh session: {start_from:?}"
    );
    assert_eq!(
        site.read("env"),
        "s3cr3t value",
        "the step's environment arrives"
    );
    let probes: Vec<String> = site.read("probes").lines().map(str::to_owned).collect();
    assert!(probes.len() >= 6, "{probes:?}");
    assert!(
        probes.iter().all(|p| *p == start_from.trim()),
        "every probe came over the start's one connection (same client port): {start_from} vs {probes:?}"
    );
    // The secret stays out of the journal and status.
    let journal = std::fs::read_to_string(site.scratch.journal("r1")).unwrap();
    assert!(!journal.contains("s3cr3t"), "{journal}");
}

#[test]
#[ignore = "needs Debian's openssh-server: `cargo xtask test` installs it and runs it"]
fn a_host_showing_another_key_runs_nothing_and_the_site_is_named() {
    let sshd = Sshd::start().unwrap();
    let site = Site::new(&sshd);
    let d = site.d();
    let other = site.another_key();
    let systems = format!(
        "    - id: db
      site: plant
      start: {{ exec: {{ command: [touch, {d}/started] }} }}
      stop: {{ exec: {{ command: [touch, {d}/stopped] }} }}
"
    );
    let file = site.scratch.write(
        "p.yaml",
        &playbook(&sshd.connect(other.trim()), &systems, "rollback"),
    );
    let run = site.run(&["apply", &file, "--run-id", "r1"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        !site.scratch.dir().join("started").exists(),
        "the start ran"
    );
    assert!(!site.scratch.dir().join("stopped").exists(), "the stop ran");
    let status = serde_json::to_string(&site.scratch.status("r1")).unwrap();
    assert!(status.contains("site `plant`"), "{status}");
    assert!(status.contains("hostKey"), "{status}");
}

#[test]
#[ignore = "needs Debian's openssh-server: `cargo xtask test` installs it and runs it"]
fn a_failed_stage_stops_over_ssh_and_a_timeout_kills_the_remote_command() {
    let sshd = Sshd::start().unwrap();
    let site = Site::new(&sshd);
    let d = site.d();
    // `hang` sleeps for a number no other test uses, so it can be looked for.
    let systems = format!(
        "    - id: db
      site: plant
      start: {{ exec: {{ command: [touch, {d}/db.ok] }} }}
      stop: {{ exec: {{ command: [sh, -c, 'echo \"$SSH_CONNECTION\" > {d}/db.stopped'] }} }}
      health: [ {{ exec: {{ command: [test, -f, {d}/db.ok] }} }} ]
    - id: hang
      site: plant
      dependsOn: [db]
      start: {{ exec: {{ command: [sleep, '4747'], timeout: 1s }} }}
"
    );
    let file = site.scratch.write(
        "p.yaml",
        &playbook(&sshd.connect(&sshd.host_key()), &systems, "rollback"),
    );
    let run = site.run(&["apply", &file, "--run-id", "r1"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        site.read("db.stopped").starts_with("127.0.0.1 "),
        "the rollback stopped db over ssh"
    );
    let status = site.scratch.status("r1");
    assert_eq!(system_phase(&status, "db"), "RolledBack", "{status}");
    let text = serde_json::to_string(&status).unwrap();
    assert!(
        text.contains("its process group there was killed"),
        "{text}"
    );
    // Nothing of the timed-out start runs on the host any more.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = Command::new("pgrep")
            .args(["-f", "^sleep 4747$"])
            .output()
            .unwrap();
        if !left.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the remote sleep still runs");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs Debian's openssh-server: `cargo xtask test` installs it and runs it"]
fn check_looks_for_commands_on_the_host_and_for_the_pinned_key() {
    let sshd = Sshd::start().unwrap();
    let site = Site::new(&sshd);
    let d = site.d();
    let systems = format!(
        "    - id: db
      site: plant
      start: {{ exec: {{ command: [touch, {d}/started] }} }}
      health: [ {{ exec: {{ command: [no-such-program-4747] }} }} ]
"
    );
    let good = site.scratch.write(
        "good.yaml",
        &playbook(&sshd.connect(&sshd.host_key()), &systems, "rollback"),
    );
    let run = site.check(&[&good, "--format", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let row = |check: &str| {
        report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"].as_str().unwrap().starts_with(check))
            .unwrap_or_else(|| panic!("no `{check}` row in {report}"))
            .clone()
    };
    assert_eq!(row("ssh ")["result"], "ok", "{report}");
    assert_eq!(row("secret ${env:SITE_KEY}")["result"], "ok", "{report}");
    assert_eq!(row("command touch")["result"], "ok", "{report}");
    assert!(
        row("command touch")["detail"]
            .as_str()
            .unwrap()
            .ends_with("on plant"),
        "{report}"
    );
    assert_eq!(
        row("command no-such-program-4747")["result"],
        "failed",
        "{report}"
    );
    assert_eq!(report["failed"], 1, "{report}");

    let other = site.another_key();
    let bad = site.scratch.write(
        "bad.yaml",
        &playbook(&sshd.connect(other.trim()), &systems, "rollback"),
    );
    let run = site.check(&[&bad]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let ssh_row = run.stdout.lines().find(|l| l.contains("ssh ")).unwrap();
    assert!(
        ssh_row.contains("FAILED")
            && ssh_row.contains("site `plant`")
            && ssh_row.contains("hostKey"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("not looked for: the site's ssh connection is down"),
        "{}",
        run.stdout
    );
    assert!(
        !site.scratch.dir().join("started").exists(),
        "check changed something"
    );
}
