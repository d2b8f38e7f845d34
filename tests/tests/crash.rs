//! Crash and hostile-environment safety, end to end: the `blackstart`
//! binary killed at many points (kill -9, SIGTERM, a second Ctrl-C), hostile
//! children and files, a deleted lock, a tampered journal. Each test checks
//! an invariant after the fact (no start or stop ran twice, the journal
//! verifies) rather than one hand-picked moment.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blackstart_tests::{Run, Scratch, system_phase, wait_exit};

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A small, reproducible sequence of pseudo-random numbers (an LCG): the
/// kill points differ from one to the next, and a failure can be replayed.
struct Points(u64);

impl Points {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

/// Systems that log `start ID MARKER` and `stop ID MARKER` (the marker
/// names the run, system, step and attempt), take a while to start and
/// stop, and are healthy while `ID.ok` exists. `bad` (if any) starts but
/// never becomes healthy.
fn slow_playbook(dir: &Path, ids: &[(&str, &str, &str)], bad: Option<&str>, gate: &str) -> String {
    let d = dir.display();
    let mut systems = String::new();
    for (id, tier, deps) in ids {
        let ok = if Some(*id) == bad { "never" } else { id };
        systems.push_str(&format!(
            "    - id: {id}
      site: dc
      tier: {tier}
      dependsOn: [{deps}]
      start: {{ exec: {{ command: [sh, -c, \"echo start {id} $BLACKSTART_STEP >> {d}/log; sleep 0.25; touch {d}/{ok}.ok\"] }} }}
      stop: {{ exec: {{ command: [sh, -c, \"echo stop {id} $BLACKSTART_STEP >> {d}/log; sleep 0.25; rm -f {d}/{id}.ok\"] }} }}
      health: [ {{ exec: {{ command: [test, -f, {d}/{id}.ok] }} }} ]
"
        ));
    }
    format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: crash }}
spec:
  defaults: {{ startTimeout: 3s, probe: {{ interval: 50ms, timeout: 1s, failureThreshold: 2 }} }}
  sites: [ {{ id: dc }} ]
  systems:
{systems}  stages:
    - {{ name: data, select: {{ tiers: [data] }} }}
    - {{ name: apps, select: {{ tiers: [app] }}, gate: {{ onFailure: {gate} }} }}
"
    )
}

const FIVE: [(&str, &str, &str); 5] = [
    ("db", "data", ""),
    ("cache", "data", ""),
    ("api", "app", "db, cache"),
    ("web", "app", "api"),
    ("jobs", "app", "db"),
];

/// Runs `first`, then `resume`s, killing each with SIGKILL after a
/// pseudo-random delay, `kills` times; then lets the last one finish.
/// Returns the exit code of the last one.
fn kill_repeatedly(
    s: &Scratch,
    run: &str,
    first: &[&str],
    points: &mut Points,
    kills: usize,
) -> i32 {
    let resume = ["resume", run];
    for k in 0..=kills {
        let args: &[&str] = if k == 0 { first } else { &resume };
        let mut child = s.spawn(args);
        if k == kills {
            return wait_exit(&mut child, Duration::from_secs(60));
        }
        std::thread::sleep(Duration::from_millis(points.next_ms(900) + 30));
        let _ = child.kill(); // SIGKILL: no cleanup at all
        let _ = child.wait();
    }
    unreachable!("the loop returns on its last round")
}

/// How many times `step` (start or stop) of `id` ran, by the log.
fn count(log: &[String], step: &str, id: &str) -> usize {
    let prefix = format!("{step} {id} ");
    log.iter().filter(|l| l.starts_with(&prefix)).count()
}

/// The crash invariant, checked on the log the steps wrote and the
/// journal: no attempt ran twice (each logged marker once), and none ran
/// that the journal does not show (each marker has its `attemptBegun`).
fn no_attempt_twice_none_unrecorded(s: &Scratch, run: &str, log: &[String]) {
    let mut seen = std::collections::HashSet::new();
    let begun: std::collections::HashSet<String> = s
        .events(run)
        .iter()
        .filter(|e| e["type"] == "attemptBegun")
        .map(|e| {
            format!(
                "{run}/{}/{}/{}",
                e["system"].as_str().unwrap_or(""),
                e["step"].as_str().unwrap_or(""),
                e["attempt"]
            )
        })
        .collect();
    for line in log {
        assert!(
            seen.insert(line.clone()),
            "an attempt ran twice: {line}: {log:?}"
        );
        let marker = line.rsplit(' ').next().unwrap_or("");
        assert!(
            begun.contains(marker),
            "{line} ran, the journal shows no such attempt: {begun:?}"
        );
    }
}

#[test]
fn kill_9_at_random_points_during_starts_never_starts_anything_twice() {
    let mut points = Points(0x5eed_0001);
    let mut kill_points = 0;
    for round in 0..4 {
        let s = Scratch::new();
        let file = s.write("crash.yaml", &slow_playbook(s.dir(), &FIVE, None, "pause"));
        let run = format!("k{round}");
        let kills = 6;
        let code = kill_repeatedly(
            &s,
            &run,
            &["apply", &file, "--run-id", &run],
            &mut points,
            kills,
        );
        kill_points += kills;
        let log = s.log();
        assert_eq!(code, 0, "round {round}: {log:?} {}", s.status(&run));
        assert_eq!(s.status(&run)["phase"], "Succeeded");
        no_attempt_twice_none_unrecorded(&s, &run, &log);
        for (id, _, _) in FIVE {
            // Each start succeeds, and a start cut short by the kill runs
            // on to its end, so none ever needs a second attempt.
            assert_eq!(
                count(&log, "start", id),
                1,
                "round {round}: {id} started twice or never: {log:?}"
            );
        }
        let verify = s.run(&["audit", &run, "--verify"]);
        assert_eq!(verify.code, 0, "{}", verify.stderr);
    }
    assert!(kill_points >= 20);
}

#[test]
fn kill_9_during_an_automatic_rollback_resumes_the_rollback_and_stops_nothing_twice() {
    let mut points = Points(0x5eed_0002);
    for round in 0..3 {
        let s = Scratch::new();
        let file = s.write(
            "crash.yaml",
            &slow_playbook(s.dir(), &FIVE, Some("jobs"), "rollback"),
        );
        let run = format!("a{round}");
        let code = kill_repeatedly(
            &s,
            &run,
            &["apply", &file, "--run-id", &run],
            &mut points,
            7,
        );
        let log = s.log();
        let status = s.status(&run);
        assert_eq!(code, 1, "round {round}: {log:?} {status}");
        assert_eq!(status["phase"], "RolledBack", "{status}");
        no_attempt_twice_none_unrecorded(&s, &run, &log);
        for (id, _, _) in FIVE {
            // `jobs` never becomes healthy: a start of it that a kill cut
            // short certainly ended with health saying down, so resume may
            // start it again, as a new attempt. The others start once.
            if id != "jobs" {
                assert_eq!(count(&log, "start", id), 1, "{id}: {log:?}");
            }
            assert!(count(&log, "stop", id) <= 1, "{id} stopped twice: {log:?}");
        }
        // Nothing was started once the rollback began, and it undid every app.
        if let Some(first_stop) = log.iter().position(|l| l.starts_with("stop")) {
            assert!(
                log[first_stop..].iter().all(|l| l.starts_with("stop")),
                "a start after the rollback began: {log:?}"
            );
        }
        for app in ["api", "web", "jobs"] {
            let phase = system_phase(&status, app);
            assert!(
                ["RolledBack", "Skipped", "Pending"].contains(&phase.as_str()),
                "{app} is {phase}: {status}"
            );
        }
        assert_eq!(
            system_phase(&status, "db"),
            "Healthy",
            "earlier stages stay up"
        );
        assert_eq!(s.run(&["audit", &run, "--verify"]).code, 0);
        // The stage was rolled back, the run was not: `rollback` stops the
        // earlier stage too, once; asked again, it changes nothing.
        if round == 0 {
            let rollback = s.run(&["rollback", &run, "--by", "alice"]);
            assert_eq!(rollback.code, 0, "{}", rollback.stderr);
            let log = s.log();
            for id in ["db", "cache"] {
                assert_eq!(count(&log, "stop", id), 1, "{id}: {log:?}");
            }
            let again = s.run(&["rollback", &run]);
            assert!(
                again.stderr.contains("rolled back already"),
                "{}",
                again.stderr
            );
            assert_eq!(s.log(), log);
        }
    }
}

#[test]
fn kill_9_during_a_rollback_asked_for_finishes_it_when_asked_again_and_stops_each_once() {
    let mut points = Points(0x5eed_0003);
    for round in 0..3 {
        let s = Scratch::new();
        let file = s.write("crash.yaml", &slow_playbook(s.dir(), &FIVE, None, "pause"));
        let run = format!("m{round}");
        assert_eq!(s.run(&["apply", &file, "--run-id", &run]).code, 0);
        let mut code = -1;
        for k in 0..5 {
            let mut child = s.spawn(&["rollback", &run, "--by", "alice"]);
            if k == 4 {
                code = wait_exit(&mut child, Duration::from_secs(60));
                break;
            }
            std::thread::sleep(Duration::from_millis(points.next_ms(700) + 30));
            let _ = child.kill();
            let _ = child.wait();
            // Killed before its first record, the rollback never began.
            let began = s.events(&run).iter().any(|e| e["type"] == "rollbackBegun");
            let phase = s.status(&run)["phase"].clone();
            if began {
                assert_ne!(
                    phase, "Succeeded",
                    "a run whose rollback began is never Succeeded"
                );
            }
        }
        let log = s.log();
        let status = s.status(&run);
        assert_eq!(code, 0, "{log:?} {status}");
        assert_eq!(status["phase"], "RolledBack");
        assert_eq!(status["rollback"]["by"], "alice");
        no_attempt_twice_none_unrecorded(&s, &run, &log);
        for (id, _, _) in FIVE {
            assert_eq!(count(&log, "stop", id), 1, "{id}: {log:?}");
        }
        // A second rollback of a rolled-back run changes nothing and says so.
        let again = s.run(&["rollback", &run]);
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert!(
            again.stderr.contains("rolled back already"),
            "{}",
            again.stderr
        );
        assert_eq!(s.log(), log);
        // And resume does not start anything.
        let resume = s.run(&["resume", &run]);
        assert_eq!(s.log(), log, "{}", resume.stderr);
        assert_eq!(s.status(&run)["phase"], "RolledBack");
    }
}

/// A playbook whose one system starts with `start` (a shell line), with
/// health checks only when `healthy_file` is given.
fn one_system(dir: &Path, start: &str, healthy_file: Option<&str>) -> String {
    let d = dir.display();
    let health = healthy_file
        .map(|f| format!("      health: [ {{ exec: {{ command: [test, -f, {d}/{f}] }} }} ]\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: one }}
spec:
  defaults: {{ startTimeout: 20s, probe: {{ interval: 50ms, timeout: 1s, failureThreshold: 2 }} }}
  sites: [ {{ id: dc }} ]
  systems:
    - id: sys
      site: dc
      start: {{ exec: {{ command: [sh, -c, \"{start}\"] }} }}
      stop: {{ noop: {{}} }}
{health}  stages:
    - {{ name: all, select: {{ sites: [dc] }} }}
"
    )
}

/// The leader process the journal recorded for the run's last attempt.
fn recorded_pid(s: &Scratch, run: &str) -> Option<i32> {
    s.events(run)
        .iter()
        .rev()
        .find(|e| e["type"] == "attemptRunning")
        .and_then(|e| e["process"]["pid"].as_i64())
        .map(|p| p as i32)
}

/// Applies a one-system playbook whose start logs `start` and sleeps
/// `seconds`, and waits until it is starting; the running `apply` and the
/// playbook's path.
fn apply_until_starting(s: &Scratch, run: &str, seconds: &str) -> (Child, String) {
    let d = s.dir().display().to_string();
    let file = s.write(
        "one.yaml",
        &one_system(
            s.dir(),
            &format!("echo start >> {d}/log; sleep {seconds}"),
            None,
        ),
    );
    let apply = s.spawn(&["apply", &file, "--run-id", run]);
    s.wait(run, "the start", |st| system_phase(st, "sys") == "Starting");
    (apply, file)
}

/// Waits, bounded, until the journal records the run's step process; its pid.
fn until_recorded(s: &Scratch, run: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = recorded_pid(s, run) {
            return pid;
        }
        assert!(Instant::now() < deadline, "the start of {run} never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn sigterm_pauses_like_ctrl_c_and_the_step_under_way_finishes() {
    let s = Scratch::new();
    let d = s.dir().display().to_string();
    let file = s.write(
        "one.yaml",
        &one_system(
            s.dir(),
            &format!("echo start >> {d}/log; sleep 0.6; touch {d}/ok"),
            Some("ok"),
        ),
    );
    let mut apply = s.spawn(&["apply", &file, "--run-id", "t1"]);
    s.wait("t1", "the start", |st| {
        system_phase(st, "sys") == "Starting"
    });
    signal(&apply, "-TERM");
    assert_eq!(
        wait_exit(&mut apply, Duration::from_secs(20)),
        1,
        "a paused run exits 1"
    );
    let status = s.status("t1");
    assert_eq!(status["phase"], "Paused", "{status}");
    assert_eq!(
        system_phase(&status, "sys"),
        "Healthy",
        "the step under way finished"
    );
    assert_eq!(s.log(), ["start"]);
}

#[test]
fn a_second_ctrl_c_kills_the_steps_journals_them_interrupted_and_resume_starts_again() {
    let s = Scratch::new();
    let d = s.dir().display().to_string();
    // The first start hangs; a second one (after resume) succeeds.
    let file = s.write(
        "one.yaml",
        &one_system(
            s.dir(),
            &format!(
                "echo start >> {d}/log; if [ -f {d}/second ]; then touch {d}/ok; else sleep 60; fi"
            ),
            Some("ok"),
        ),
    );
    let mut apply = s.spawn(&["apply", &file, "--run-id", "c2"]);
    let pid = until_recorded(&s, "c2");
    assert!(alive(pid));
    signal(&apply, "-INT");
    std::thread::sleep(Duration::from_millis(200));
    signal(&apply, "-INT");
    assert_eq!(wait_exit(&mut apply, Duration::from_secs(20)), 130);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the step's process outlived blackstart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ended = s
        .events("c2")
        .into_iter()
        .find(|e| e["type"] == "attemptEnded")
        .unwrap_or_default();
    assert_eq!(ended["result"], "Interrupted", "{ended}");
    // Certainly ended, and health says down: resume starts it again.
    std::fs::write(s.dir().join("second"), "").unwrap();
    let resume = s.run(&["resume", "c2"]);
    assert_eq!(resume.code, 0, "{}", resume.stderr);
    assert_eq!(s.log(), ["start", "start"]);
    assert_eq!(s.status("c2")["systems"][0]["attempts"], 2);
}

#[test]
fn a_start_cut_short_without_health_checks_waits_for_confirm_or_retry() {
    for decision in ["retry", "confirm"] {
        let s = Scratch::new();
        let d = s.dir().display().to_string();
        let file = s.write(
            "one.yaml",
            &one_system(s.dir(), &format!("echo start >> {d}/log; sleep 0.5"), None),
        );
        // Kill while the start runs; let its orphan finish.
        let mut apply = s.spawn(&["apply", &file, "--run-id", "n1"]);
        until_recorded(&s, "n1");
        apply.kill().unwrap();
        apply.wait().unwrap();
        let mut resume = s.spawn(&["resume", "n1"]);
        s.wait("n1", "a person", |st| {
            st["systems"][0]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("waiting for a person"))
        });
        assert_eq!(s.log(), ["start"], "not started again blindly");
        if decision == "confirm" {
            // Ctrl-C while the question waits: the run pauses, and the
            // question is asked again by the next resume.
            signal(&resume, "-INT");
            assert_eq!(wait_exit(&mut resume, Duration::from_secs(20)), 1);
            assert_eq!(s.status("n1")["phase"], "Paused");
            resume = s.spawn(&["resume", "n1"]);
            s.wait("n1", "the question again", |st| {
                st["phase"] == "Running"
                    && st["systems"][0]["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("waiting for a person"))
            });
        }
        let decided = s.run(&[decision, "n1", "sys", "--by", "olga"]);
        assert_eq!(decided.code, 0, "{}", decided.stderr);
        assert_eq!(wait_exit(&mut resume, Duration::from_secs(20)), 0);
        if decision == "retry" {
            assert_eq!(s.log(), ["start", "start"], "started again as asked");
        } else {
            assert_eq!(s.log(), ["start"], "confirmed up: not started again");
            let reason = s.status("n1")["systems"][0]["reason"].clone();
            assert!(
                reason.as_str().unwrap().contains("confirmed up by olga"),
                "{reason}"
            );
        }
    }
}

#[test]
fn a_daemonizing_start_that_keeps_stdout_open_succeeds_at_once() {
    let s = Scratch::new();
    let file = s.write(
        "one.yaml",
        &one_system(s.dir(), "sleep 30 & echo daemon started", None),
    );
    // The step's startTimeout is 20 s and the daemon lives 30 s: a step
    // that waited for its output to close would fail, or end after it.
    let apply = s.run(&["apply", &file, "--run-id", "d1"]);
    assert_eq!(apply.code, 0, "{}", apply.stderr);
    let pgid = nix::unistd::Pid::from_raw(recorded_pid(&s, "d1").unwrap());
    assert!(
        nix::sys::signal::killpg(pgid, None).is_ok(),
        "the daemon, still running, was not waited for"
    );
    let output = s
        .events("d1")
        .into_iter()
        .find(|e| e["type"] == "output")
        .unwrap_or_default();
    assert!(
        output["output"]
            .as_str()
            .unwrap_or("")
            .contains("daemon started"),
        "{output}"
    );
    // The daemon runs on (it is the point of a start); clean it up.
    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn a_child_sees_no_secret_it_was_not_given_and_none_reaches_the_journal() {
    let s = Scratch::new();
    let d = s.dir().display();
    let yaml = format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: secrets }}
spec:
  defaults: {{ inheritEnv: [EXTRA_PATHISH] }}
  sites: [ {{ id: dc }} ]
  systems:
    - id: first
      site: dc
      tier: one
      start: {{ exec: {{ command: [sh, -c, \"env > {d}/env.txt; env; echo $STAGE2_TOKEN\"] }} }}
    - id: second
      site: dc
      tier: two
      start: {{ exec: {{ command: [sh, -c, \"echo token is $T; exit 3\"], env: {{ T: \"${{env:STAGE2_TOKEN}}\" }} }} }}
  stages:
    - {{ name: one, select: {{ tiers: [one] }} }}
    - {{ name: two, select: {{ tiers: [two] }}, gate: {{ onFailure: abort }} }}
"
    );
    let file = s.write("secrets.yaml", &yaml);
    let token = "tok\"en\\with-quotes-0123456789";
    // Missing: refused before anything starts.
    let missing = s
        .cmd(&["apply", &file, "--run-id", "s0"])
        .env_remove("STAGE2_TOKEN")
        .output()
        .unwrap();
    let missing: Run = missing.into();
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing.stderr.contains("${env:STAGE2_TOKEN}"),
        "{}",
        missing.stderr
    );
    assert!(!s.journal("s0").exists(), "nothing started");

    let run: Run = s
        .cmd(&["apply", &file, "--run-id", "s1"])
        .env("STAGE2_TOKEN", token)
        .env("EXTRA_PATHISH", "opted-in")
        .env("UNRELATED_SECRET", "must-not-leak")
        .output()
        .unwrap()
        .into();
    assert_eq!(
        run.code, 1,
        "the second stage fails on purpose: {}",
        run.stderr
    );
    let env = std::fs::read_to_string(s.dir().join("env.txt")).unwrap();
    assert!(
        !env.contains("with-quotes"),
        "a stage-1 child saw a stage-2 secret:\n{env}"
    );
    assert!(
        !env.contains("must-not-leak"),
        "inherited what it did not ask for:\n{env}"
    );
    assert!(env.contains("EXTRA_PATHISH=opted-in"), "{env}");
    assert!(env.contains("PATH="), "{env}");
    let journal = std::fs::read_to_string(s.journal("s1")).unwrap();
    for form in [token, "with-quotes-0123456789", "opted-in"] {
        assert!(!journal.contains(form), "{form} reached the journal");
    }
    assert!(journal.contains("token is [redacted]"), "{journal}");
    let status = s.run(&["status", "s1", "--format", "json"]);
    assert!(!status.stdout.contains("with-quotes"));
}

/// The peak resident memory of a process, read from /proc while it runs.
fn peak_rss_kib(child: &mut Child, limit: Duration) -> (i32, u64) {
    let deadline = Instant::now() + limit;
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            peak = peak.max(hwm);
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), peak);
        }
        assert!(Instant::now() < deadline, "did not end within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_step_printing_500_mb_keeps_blackstart_under_64_mib() {
    let s = Scratch::new();
    let file = s.write(
        "one.yaml",
        &one_system(
            s.dir(),
            "head -c 500000000 /dev/zero; echo; echo the end",
            None,
        ),
    );
    let mut apply = s
        .cmd(&["apply", &file, "--run-id", "big"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (code, peak) = peak_rss_kib(&mut apply, Duration::from_secs(120));
    assert_eq!(code, 0);
    assert!(peak > 0, "no memory figure was read");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
    let output = s
        .events("big")
        .into_iter()
        .find(|e| e["type"] == "output")
        .unwrap_or_default();
    let text = output["output"].as_str().unwrap_or("");
    assert!(text.ends_with("the end\n"), "the end of the output is kept");
    assert!(
        text.contains("500000009 bytes in all"),
        "{}",
        &text[..80.min(text.len())]
    );
}

#[test]
fn fifos_and_devices_are_refused_at_once_as_playbooks_and_plans() {
    let s = Scratch::new();
    let fifo = s.dir().join("pipe.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let file = s.write("one.yaml", &one_system(s.dir(), "true", None));
    let validate = blackstart_tests::blackstart(&["validate", fifo.to_str().unwrap()]);
    assert_eq!(validate.code, 2, "{}", validate.stderr);
    assert!(validate.stderr.contains("is a FIFO"), "{}", validate.stderr);
    for args in [
        vec!["apply", fifo.to_str().unwrap()],
        vec!["apply", &file, "--plan", "/dev/zero"],
        vec!["apply", &file, "--plan", fifo.to_str().unwrap()],
    ] {
        let mut child = s
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let code = wait_exit(&mut child, Duration::from_secs(10));
        assert_eq!(code, 2, "{args:?}");
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(err.contains("must be a regular file"), "{args:?}: {err}");
    }
    assert!(s.log().is_empty());
}

#[test]
fn deleting_the_lock_file_does_not_admit_a_second_writer() {
    let s = Scratch::new();
    let (mut apply, _) = apply_until_starting(&s, "l1", "3");
    let run_dir = s.dir().join("state/runs/l1");
    for name in ["lock", "holder"] {
        let _ = std::fs::remove_file(run_dir.join(name));
    }
    let second = s.run(&["resume", "l1"]);
    assert_eq!(second.code, 4, "{}", second.stderr);
    // A rollback asked of a driven run goes to the process that drives it
    // (and needs a name); it never takes the run over.
    let rollback = s.run(&["rollback", "l1"]);
    assert_eq!(rollback.code, 2, "{}", rollback.stderr);
    assert!(
        rollback.stderr.contains("is driven by another process"),
        "{}",
        rollback.stderr
    );
    assert_eq!(wait_exit(&mut apply, Duration::from_secs(20)), 0);
    assert_eq!(s.run(&["audit", "l1", "--verify"]).code, 0);
}

/// Rewrites a journal's lines with `edit` applied to each, then re-hashes
/// the whole chain as an attacker who knows the format would.
fn rechain(path: &Path, edit: impl Fn(usize, &str) -> String) {
    use sha2::Digest;
    let text = std::fs::read_to_string(path).unwrap();
    let mut prev = "0".repeat(64);
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let cut = line.rfind(",\"hash\":\"").unwrap();
        let body = format!("{}}}", &line[..cut]);
        let body = edit(i, &body);
        let at = body.find("\"prev\":\"").unwrap() + 8;
        let body = format!("{}{prev}{}", &body[..at], &body[at + 64..]);
        let hash: String = sha2::Sha256::digest(body.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push_str(&format!(
            "{},\"hash\":\"{hash}\"}}\n",
            &body[..body.len() - 1]
        ));
        prev = hash;
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn a_rewritten_plan_with_a_rehashed_chain_is_refused_by_resume_and_rollback() {
    let s = Scratch::new();
    let (mut apply, file) = apply_until_starting(&s, "x1", "5");
    signal(&apply, "-INT");
    assert_eq!(wait_exit(&mut apply, Duration::from_secs(20)), 1);
    // Inject a command into the journal's plan, and re-hash everything.
    rechain(&s.journal("x1"), |i, body| {
        if i == 0 {
            body.replace("echo start >>", "echo injected >>")
        } else {
            body.to_owned()
        }
    });
    assert_eq!(
        s.run(&["audit", "x1", "--verify"]).code,
        0,
        "the chain alone cannot tell"
    );
    for cmd in ["resume", "rollback"] {
        let refused = s.run(&[cmd, "x1"]);
        assert_eq!(refused.code, 3, "{cmd}: {}", refused.stderr);
        assert!(
            refused.stderr.contains("the journal was altered"),
            "{}",
            refused.stderr
        );
    }
    // Without the playbook the journal is not trusted unless told to.
    std::fs::remove_file(&file).unwrap();
    let refused = s.run(&["resume", "x1"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--trust-journal"),
        "{}",
        refused.stderr
    );
    assert!(!s.log().iter().any(|l| l.contains("injected")));
}

#[test]
fn torn_empty_and_rewritten_journals_are_not_intact() {
    let s = Scratch::new();
    let file = s.write("one.yaml", &one_system(s.dir(), "true", None));
    assert_eq!(s.run(&["apply", &file, "--run-id", "v1"]).code, 0);
    let verify = s.run(&["audit", "v1", "--verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    let head_line = verify
        .stdout
        .lines()
        .find(|l| l.starts_with("head: "))
        .unwrap()
        .to_owned();
    let head = head_line.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(s.run(&["audit", "v1", "--verify", "--head", &head]).code, 0);

    let journal = s.journal("v1");
    let good = std::fs::read(&journal).unwrap();
    // A torn tail.
    let mut torn = good.clone();
    torn.extend_from_slice(b"{\"v\":2,\"seq\":99,");
    std::fs::write(&journal, &torn).unwrap();
    let v = s.run(&["audit", "v1", "--verify"]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    assert!(v.stderr.contains("unfinished write"), "{}", v.stderr);
    // Empty.
    std::fs::write(&journal, b"").unwrap();
    let v = s.run(&["audit", "v1", "--verify"]);
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("empty"), "{}", v.stderr);
    // The tail cut off and the rest re-hashed: whoever kept the head sees it.
    let text = String::from_utf8(good).unwrap();
    let keep: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&journal, keep.join("\n") + "\n").unwrap();
    assert_eq!(s.run(&["audit", "v1", "--verify"]).code, 0);
    let v = s.run(&["audit", "v1", "--verify", "--head", &head]);
    assert_eq!(v.code, 1);
    assert!(v.stderr.contains("is not in the chain"), "{}", v.stderr);
}

#[test]
fn a_start_timeout_names_the_last_probe_error() {
    let s = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: timeout }}
spec:
  defaults: {{ probe: {{ interval: 100ms, timeout: 1s }} }}
  sites: [ {{ id: dc }} ]
  systems:
    - id: web
      site: dc
      startTimeout: 1s
      start: {{ noop: {{}} }}
      health: [ {{ http: {{ url: \"http://127.0.0.1:{port}/healthz\" }} }} ]
  stages:
    - {{ name: all, select: {{ sites: [dc] }}, gate: {{ onFailure: abort }} }}
"
    );
    let file = s.write("timeout.yaml", &yaml);
    assert_eq!(s.run(&["apply", &file, "--run-id", "to"]).code, 1);
    let status = s.status("to");
    let reason = status["systems"][0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("startTimeout of 1s"), "{reason}");
    assert!(
        reason.to_lowercase().contains("connection refused"),
        "{reason}"
    );
}

#[test]
fn a_journal_of_the_previous_release_resumes_and_audits() {
    let s = Scratch::new();
    let fixtures = blackstart_tests::root().join("tests/fixtures/journal-v1");
    let run_dir = s.dir().join("state/runs/fixture");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::copy(
        fixtures.join("journal.jsonl"),
        run_dir.join("journal.jsonl"),
    )
    .unwrap();
    let playbook = fixtures.join("playbook.yaml").display().to_string();
    assert_eq!(s.run(&["audit", "fixture", "--verify"]).code, 0);
    assert_eq!(s.status("fixture")["phase"], "Paused");
    // It names no playbook file: resume asks for one.
    let refused = s.run(&["resume", "fixture"]);
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--playbook FILE"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        s.run(&["approve", "fixture", "data", "--by", "alice"]).code,
        0
    );
    let resumed = s.run(&["resume", "fixture", "--playbook", &playbook]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(s.status("fixture")["phase"], "Succeeded");
    let verify = s.run(&["audit", "fixture", "--verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    let audit = s.run(&["audit", "fixture"]);
    assert!(
        audit.stdout.contains("approved by alice"),
        "{}",
        audit.stdout
    );
}
