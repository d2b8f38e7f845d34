//! The run commands end to end, as a commander uses them from two
//! terminals: apply, status, approve, confirm, resume after kill -9,
//! rollback, audit, and the exit codes of each.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blackstart_tests::{Scratch, system_phase, wait_exit};

/// A lab whose systems log their starts and stops; `app` waits for an
/// approval of the data stage, and `web` for a person's confirmation.
fn lab_yaml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: lab }}
spec:
  defaults: {{ probe: {{ interval: 100ms, timeout: 1s }} }}
  sites: [ {{ id: dc }} ]
  systems:
    - id: db
      site: dc
      tier: data
      start: {{ exec: {{ command: [sh, -c, \"echo start db >> {d}/log; touch {d}/db.ok\"] }} }}
      stop: {{ exec: {{ command: [sh, -c, \"echo stop db >> {d}/log; rm -f {d}/db.ok\"] }} }}
      health: [ {{ exec: {{ command: [test, -f, {d}/db.ok] }} }} ]
    - id: app
      site: dc
      tier: app
      dependsOn: [db]
      start: {{ exec: {{ command: [sh, -c, \"echo start app >> {d}/log; sleep 0.3; touch {d}/app.ok\"] }} }}
      stop: {{ exec: {{ command: [sh, -c, \"echo stop app >> {d}/log; rm -f {d}/app.ok\"] }} }}
      health: [ {{ exec: {{ command: [test, -f, {d}/app.ok] }} }} ]
    - id: web
      site: dc
      tier: app
      dependsOn: [app]
      start: {{ manual: {{ instruction: Open the firewall for the web tier }} }}
      stop: {{ noop: {{}} }}
  stages:
    - {{ name: data, select: {{ tiers: [data] }}, gate: {{ approvals: [incident-commander] }} }}
    - {{ name: apps, select: {{ tiers: [app] }}, gate: {{ onFailure: rollback }} }}
"
    )
}

/// The lab playbook in a scratch directory.
struct Lab(Scratch);

impl std::ops::Deref for Lab {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        &self.0
    }
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab(Scratch::new());
        lab.write("lab.yaml", &lab_yaml(lab.dir()));
        lab
    }
    fn file(&self) -> String {
        self.dir().join("lab.yaml").display().to_string()
    }
}

fn phase_of(status: &serde_json::Value, kind: &str, key: &str, name: &str) -> String {
    status[kind]
        .as_array()
        .and_then(|items| items.iter().find(|i| i[key] == name))
        .map_or(String::new(), |i| {
            i["phase"].as_str().unwrap_or("").to_owned()
        })
}

#[test]
fn a_run_steered_from_a_second_terminal() {
    let lab = Lab::new();
    let mut apply = lab.spawn(&["apply", &lab.file(), "--run-id", "r1"]);
    lab.wait("r1", "the data gate", |s| {
        phase_of(s, "stages", "name", "data") == "Gate"
    });
    assert_eq!(lab.status("r1")["phase"], "Running");

    // A second apply or resume of the live run is refused.
    assert_eq!(lab.run(&["resume", "r1"]).code, 4);
    let again = lab.run(&["apply", &lab.file(), "--run-id", "r1"]);
    assert_eq!(again.code, 4, "{}", again.stderr);
    assert!(
        again.stderr.contains("is locked by another process (pid"),
        "{}",
        again.stderr
    );

    // Wrong approvals are refused with the way out; the right one is taken.
    let wrong = lab.run(&[
        "approve", "r1", "data", "--by", "alice", "--role", "janitor",
    ]);
    assert_eq!(wrong.code, 2);
    assert!(
        wrong.stderr.contains("it needs: incident-commander"),
        "{}",
        wrong.stderr
    );
    assert_eq!(lab.run(&["approve", "r1", "nope", "--by", "alice"]).code, 2);
    assert_eq!(lab.run(&["approve", "r1", "data", "--by", "alice"]).code, 0);

    lab.wait("r1", "the manual step", |s| {
        s["systems"].as_array().is_some_and(|v| {
            v.iter().any(|x| {
                x["id"] == "web"
                    && x["reason"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("waiting for confirmation"))
            })
        })
    });
    assert_eq!(lab.run(&["confirm", "r1", "web", "--by", "olga"]).code, 0);
    assert_eq!(wait_exit(&mut apply, Duration::from_secs(30)), 0);

    let status = lab.status("r1");
    assert_eq!(status["phase"], "Succeeded");
    for id in ["db", "app", "web"] {
        assert_eq!(system_phase(&status, id), "Healthy", "{status}");
    }
    assert_eq!(lab.log(), ["start db", "start app"]);
    assert_eq!(
        lab.run(&["approve", "r1", "data", "--by", "bob"]).code,
        2,
        "an ended run takes no approvals"
    );

    // The audit verifies, and names the first record that was altered.
    let verify = lab.run(&["audit", "r1", "--verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    assert!(verify.stdout.contains("hash chain intact"));
    let audit = lab.run(&["audit", "r1", "--format", "markdown"]);
    assert!(
        audit.stdout.contains("```mermaid\ngantt"),
        "{}",
        audit.stdout
    );
    assert!(
        audit
            .stdout
            .contains("stage data approved by alice as incident-commander")
    );
    let journal = Path::new(&lab.state_dir()).join("runs/r1/journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(
        &journal,
        text.replacen("\"by\":\"alice\"", "\"by\":\"mallory\"", 1),
    )
    .unwrap();
    let tampered = lab.run(&["audit", "r1", "--verify"]);
    assert_eq!(tampered.code, 1);
    assert!(
        tampered.stderr.contains("journal.jsonl:")
            && tampered.stderr.contains("does not match its hash"),
        "{}",
        tampered.stderr
    );

    // A finished run's id cannot be reused.
    assert_eq!(lab.run(&["apply", &lab.file(), "--run-id", "r1"]).code, 2);
}

#[test]
fn kill_9_then_resume_finishes_without_restarting_healthy_systems() {
    let lab = Lab::new();
    let mut apply = lab.spawn(&["apply", &lab.file(), "--run-id", "r2"]);
    lab.wait("r2", "the data gate", |s| {
        phase_of(s, "stages", "name", "data") == "Gate"
    });
    apply.kill().unwrap(); // SIGKILL: no cleanup, the lock dies with the process
    apply.wait().unwrap();
    assert_eq!(
        lab.status("r2")["phase"],
        "Running",
        "the journal still says what was happening"
    );
    assert_eq!(lab.run(&["approve", "r2", "data", "--by", "alice"]).code, 0);
    let mut resume = lab.spawn(&["resume", "r2"]);
    // Kill again mid-start of app, then resume once more.
    lab.wait("r2", "app starting", |s| {
        system_phase(s, "app") == "Starting"
    });
    resume.kill().unwrap();
    resume.wait().unwrap();
    std::thread::sleep(Duration::from_millis(400)); // app's own start finishes meanwhile
    let mut resume = lab.spawn(&["resume", "r2"]);
    lab.wait("r2", "the manual step", |s| {
        system_phase(s, "web") == "Starting"
    });
    assert_eq!(lab.run(&["confirm", "r2", "web", "--by", "olga"]).code, 0);
    assert_eq!(wait_exit(&mut resume, Duration::from_secs(30)), 0);
    assert_eq!(lab.status("r2")["phase"], "Succeeded");
    let log = lab.log();
    assert_eq!(
        log.iter().filter(|l| *l == "start db").count(),
        1,
        "db was healthy and never restarted: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| *l == "start app").count(),
        1,
        "app's start, cut short by the kill, ran on to its end and was not run again: {log:?}"
    );
    assert_eq!(lab.run(&["audit", "r2", "--verify"]).code, 0);
}

#[test]
fn stale_plans_are_refused_and_rollback_undoes_a_run() {
    let lab = Lab::new();
    let plan = lab.tmp.path().join("plan.json").display().to_string();
    assert_eq!(
        blackstart_tests::blackstart(&["plan", &lab.file(), "-o", &plan]).code,
        0
    );
    let yaml = std::fs::read_to_string(lab.file())
        .unwrap()
        .replace("interval: 100ms", "interval: 200ms");
    std::fs::write(lab.file(), yaml).unwrap();
    let stale = lab.run(&["apply", &lab.file(), "--plan", &plan, "--run-id", "r3"]);
    assert_eq!(stale.code, 3, "{}", stale.stderr);
    assert!(
        stale
            .stderr
            .contains("the playbook changed since its plan was reviewed"),
        "{}",
        stale.stderr
    );
    assert!(lab.log().is_empty(), "nothing ran");

    // Approve ahead of time: requests wait in the inbox for the run.
    let mut apply = lab.spawn(&["apply", &lab.file(), "--run-id", "r4"]);
    lab.wait("r4", "the data gate", |s| {
        phase_of(s, "stages", "name", "data") == "Gate"
    });
    assert_eq!(lab.run(&["approve", "r4", "data", "--by", "alice"]).code, 0);
    lab.wait("r4", "web waiting", |s| {
        system_phase(s, "web") == "Starting"
    });
    assert_eq!(lab.run(&["confirm", "r4", "web", "--by", "olga"]).code, 0);
    assert_eq!(wait_exit(&mut apply, Duration::from_secs(30)), 0);
    let rollback = lab.run(&["rollback", "r4"]);
    assert_eq!(rollback.code, 0, "{}", rollback.stderr);
    let stops: Vec<String> = lab
        .log()
        .into_iter()
        .filter(|l| l.starts_with("stop"))
        .collect();
    assert_eq!(stops, ["stop app", "stop db"], "dependents first");
    assert_eq!(lab.status("r4")["phase"], "RolledBack");
    assert_eq!(lab.run(&["status", "no-such-run"]).code, 2);
}

#[test]
fn ctrl_c_pauses_gracefully_and_resume_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    let slow = |id: &str, deps: &str| {
        format!(
            "    - {{ id: {id}, site: dc, dependsOn: [{deps}], start: {{ exec: {{ command: [sh, -c, \"echo start {id} >> {d}/log; sleep 0.8; echo done {id} >> {d}/log\"] }} }} }}\n"
        )
    };
    let yaml = format!(
        "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: {{ name: slow }}\nspec:\n  sites: [ {{ id: dc }} ]\n  systems:\n{}{}{}  stages:\n    - {{ name: all, select: {{ sites: [dc] }} }}\n",
        slow("one", ""),
        slow("two", "one"),
        slow("three", "two")
    );
    std::fs::write(tmp.path().join("slow.yaml"), yaml).unwrap();
    let lab = Lab(Scratch { tmp });
    let mut apply = lab.spawn(&[
        "apply",
        &lab.tmp.path().join("slow.yaml").display().to_string(),
        "--run-id",
        "c1",
    ]);
    lab.wait("c1", "one starting", |s| {
        system_phase(s, "one") == "Starting"
    });
    let sigint = Command::new("kill")
        .args(["-INT", &apply.id().to_string()])
        .status()
        .unwrap();
    assert!(sigint.success());
    assert_eq!(
        wait_exit(&mut apply, Duration::from_secs(30)),
        1,
        "a paused run exits 1"
    );
    let status = lab.status("c1");
    assert_eq!(status["phase"], "Paused", "{status}");
    assert_eq!(
        system_phase(&status, "one"),
        "Healthy",
        "the step under way finished"
    );
    assert_eq!(
        system_phase(&status, "two"),
        "Pending",
        "nothing new started"
    );
    assert_eq!(lab.log(), ["start one", "done one"]);
    assert_eq!(lab.run(&["resume", "c1"]).code, 0);
    assert_eq!(lab.status("c1")["phase"], "Succeeded");
    assert_eq!(
        lab.log(),
        [
            "start one",
            "done one",
            "start two",
            "done two",
            "start three",
            "done three"
        ]
    );
}

/// A rollback whose stop is a manual step waits for `confirm` from another
/// terminal; killed while it waits, it is finished by running it again, and
/// nothing is stopped twice.
#[test]
fn a_rollback_with_a_manual_stop_waits_for_confirm_and_survives_kill_9() {
    let s = Scratch::new();
    let d = s.dir().display().to_string();
    let file = s.write(
        "fw.yaml",
        &format!(
            "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: fw }}
spec:
  sites: [ {{ id: dc }} ]
  systems:
    - id: db
      site: dc
      start: {{ exec: {{ command: [sh, -c, \"echo start db >> {d}/log\"] }} }}
      stop: {{ exec: {{ command: [sh, -c, \"echo stop db >> {d}/log\"] }} }}
    - id: firewall
      site: dc
      dependsOn: [db]
      start: {{ exec: {{ command: [sh, -c, \"echo start firewall >> {d}/log\"] }} }}
      stop: {{ manual: {{ instruction: Close the dealer VPN on the firewall by hand }} }}
  stages:
    - {{ name: all, select: {{ sites: [dc] }} }}
"
        ),
    );
    assert_eq!(s.run(&["apply", &file, "--run-id", "m1"]).code, 0);
    let waiting = |st: &serde_json::Value| {
        st["systems"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["id"] == "firewall" && x["waitingFor"] == "manual-step")
    };
    let mut rollback = s.spawn(&["rollback", "m1"]);
    s.wait("m1", "the manual stop", waiting);
    rollback.kill().unwrap(); // SIGKILL, while a person is asked to act
    rollback.wait().unwrap();
    let mut again = s.spawn(&["rollback", "m1"]);
    s.wait("m1", "the manual stop, again", |st| {
        waiting(st) && st["interrupted"] != true
    });
    assert_eq!(
        s.run(&["confirm", "m1", "firewall", "--by", "olga"]).code,
        0
    );
    assert_eq!(wait_exit(&mut again, Duration::from_secs(30)), 0);
    assert_eq!(s.status("m1")["phase"], "RolledBack");
    assert_eq!(
        s.log(),
        ["start db", "start firewall", "stop db"],
        "db stopped once, after the firewall was closed by hand"
    );
    let begun = s
        .events("m1")
        .iter()
        .filter(|e| e["type"] == "rollbackBegun")
        .count();
    assert_eq!(begun, 1, "the second rollback finished the first");
    let asked = s
        .events("m1")
        .iter()
        .filter(|e| e["system"] == "firewall" && e["waitingFor"] == "manual-step")
        .count();
    assert_eq!(
        asked, 1,
        "the second rollback went on with the same wait: a confirmation given for it counts"
    );
    assert_eq!(s.run(&["audit", "m1", "--verify"]).code, 0);
}

/// A site held by a failure is started again with `retry --site` once the
/// run has ended Degraded: the held site's systems and what they Blocked
/// start again, the other site's are not touched, and the run ends
/// Succeeded.
#[test]
fn retry_site_starts_a_held_site_again_and_the_run_succeeds() {
    let s = Scratch::new();
    let d = s.dir().display().to_string();
    let sys = |id: &str, site: &str, tier: &str, deps: &str, cmd: &str| {
        format!(
            "    - {{ id: {id}, site: {site}, tier: {tier}, dependsOn: [{deps}], start: {{ exec: {{ command: [sh, -c, \"echo start {id} >> {d}/log; {cmd}\"] }} }}, stop: {{ exec: {{ command: [sh, -c, \"echo stop {id} >> {d}/log\"] }} }} }}\n"
        )
    };
    let file = s.write(
        "sites.yaml",
        &format!(
            "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: {{ name: sites }}\nspec:\n  sites: [ {{ id: nitra }}, {{ id: pune }}, {{ id: hq }} ]\n  systems:\n{}{}{}{}  stages:\n    - {{ name: plants, select: {{ tiers: [plant] }}, failureDomain: site, gate: {{ onFailure: rollback }} }}\n    - {{ name: dealers, select: {{ tiers: [dealer] }} }}\n",
            sys("nitra-mes", "nitra", "plant", "", &format!("test -f {d}/nitra-fixed")),
            sys("pune-mes", "pune", "plant", "", "true"),
            sys("dealer-nitra", "hq", "dealer", "nitra-mes", "true"),
            sys("dealer-pune", "hq", "dealer", "pune-mes", "true"),
        ),
    );
    let first = s.run(&["apply", &file, "--run-id", "s1"]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert_eq!(s.status("s1")["phase"], "Degraded");
    let text = s.run(&["status", "s1"]).stdout;
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("nitra") && l.contains("Held in stage plants"))
            && text
                .lines()
                .any(|l| l.trim_start().starts_with("pune") && l.trim_end().ends_with("Up")),
        "{text}"
    );
    let resume = s.run(&["resume", "s1"]);
    assert!(
        resume
            .stderr
            .contains("`blackstart retry s1 --site nitra --by NAME` starts a held site again"),
        "{}",
        resume.stderr
    );
    let wrong = s.run(&["retry", "s1", "--site", "pune", "--by", "alice"]);
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert!(
        wrong
            .stderr
            .contains("site pune is not held in run s1; held: nitra"),
        "{}",
        wrong.stderr
    );

    std::fs::write(s.dir().join("nitra-fixed"), "").unwrap();
    let retried = s.run(&["retry", "s1", "--site", "nitra", "--by", "alice"]);
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    let status = s.status("s1");
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert!(status["held"].is_null(), "{status}");
    let log = s.log();
    let count = |l: &str| log.iter().filter(|x| *x == l).count();
    assert_eq!(count("start nitra-mes"), 2, "{log:?}");
    assert_eq!(
        count("stop nitra-mes"),
        1,
        "the held site was rolled back: {log:?}"
    );
    assert_eq!(
        count("start pune-mes"),
        1,
        "the other site is not started twice: {log:?}"
    );
    assert_eq!(count("start dealer-pune"), 1, "{log:?}");
    assert_eq!(
        count("start dealer-nitra"),
        1,
        "Blocked, then started once: {log:?}"
    );
    let events = s.events("s1");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "siteRetried" && e["by"] == "alice"),
        "{events:#?}"
    );
    assert_eq!(s.run(&["audit", "s1", "--verify"]).code, 0);
}

/// `retry RUN SYSTEM` starts a failed system again once the run has ended
/// Degraded: a failed optional system, and the systems it Blocked, start
/// again, and nothing healthy does. A system of a held site whose rest was
/// rolled back is refused, naming `retry --site`.
#[test]
fn retry_system_starts_a_failed_optional_system_again() {
    let s = Scratch::new();
    let d = s.dir().display().to_string();
    let sys = |id: &str, site: &str, deps: &str, extra: &str, cmd: &str| {
        format!(
            "    - {{ id: {id}, site: {site}, dependsOn: [{deps}],{extra} start: {{ exec: {{ command: [sh, -c, \"echo start {id} >> {d}/log; {cmd}\"] }} }}, stop: {{ exec: {{ command: [sh, -c, \"echo stop {id} >> {d}/log\"] }} }} }}\n"
        )
    };
    let file = s.write(
        "opt.yaml",
        &format!(
            "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: {{ name: opt }}\nspec:\n  sites: [ {{ id: hq }}, {{ id: nitra }} ]\n  systems:\n{}{}{}{}{}  stages:\n    - {{ name: plants, select: {{ sites: [nitra] }}, failureDomain: site, gate: {{ onFailure: rollback }} }}\n    - {{ name: business, select: {{ sites: [hq] }} }}\n",
            sys("nitra-plc", "nitra", "", "", "true"),
            sys("nitra-mes", "nitra", "nitra-plc", "", "false"),
            sys("erp", "hq", "", "", "true"),
            sys("warranty", "hq", "erp", " optional: true,", &format!("test -f {d}/warranty-fixed")),
            sys("claims", "hq", "warranty", "", "true"),
        ),
    );
    let first = s.run(&["apply", &file, "--run-id", "o1"]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    let status = s.status("o1");
    assert_eq!(status["phase"], "Degraded", "{status}");
    assert_eq!(system_phase(&status, "warranty"), "Failed");
    assert_eq!(system_phase(&status, "claims"), "Blocked");

    let healthy = s.run(&["retry", "o1", "erp", "--by", "alice"]);
    assert_eq!(healthy.code, 2, "{}", healthy.stderr);
    assert!(
        healthy
            .stderr
            .contains("`erp` is Healthy: `retry` starts again a failed system"),
        "{}",
        healthy.stderr
    );
    let held = s.run(&["retry", "o1", "nitra-mes", "--by", "alice"]);
    assert_eq!(held.code, 2, "{}", held.stderr);
    assert!(
        held.stderr.contains("site nitra is held in stage plants with nitra-plc not Healthy too: `retry o1 --site nitra`"),
        "{}",
        held.stderr
    );

    std::fs::write(s.dir().join("warranty-fixed"), "").unwrap();
    let retried = s.run(&["retry", "o1", "warranty", "--by", "alice"]);
    assert_eq!(
        retried.code, 1,
        "still Degraded: nitra is held; {}",
        retried.stderr
    );
    let status = s.status("o1");
    assert_eq!(status["phase"], "Degraded", "{status}");
    assert_eq!(system_phase(&status, "warranty"), "Healthy", "{status}");
    assert_eq!(system_phase(&status, "claims"), "Healthy", "{status}");
    let log = s.log();
    let count = |l: &str| log.iter().filter(|x| *x == l).count();
    assert_eq!(count("start warranty"), 2, "{log:?}");
    assert_eq!(
        count("start claims"),
        1,
        "Blocked, then started once: {log:?}"
    );
    assert_eq!(
        count("start erp"),
        1,
        "a healthy system is not started again: {log:?}"
    );
    assert!(
        s.events("o1").iter().any(|e| e["type"] == "retryRequested"
            && e["system"] == "warranty"
            && e["by"] == "alice")
    );
    // The same retry, asked again, is refused: warranty is Healthy now.
    assert_eq!(s.run(&["retry", "o1", "warranty", "--by", "alice"]).code, 2);
    assert_eq!(s.run(&["audit", "o1", "--verify"]).code, 0);
}

/// kill -9 while a held site's part is being rolled back, then resume: the
/// site's rollback is finished, nothing is stopped twice, the other site is
/// not touched, and the run ends Degraded.
#[test]
fn kill_9_during_a_site_rollback_then_resume_finishes_it_once() {
    let s = Scratch::new();
    let d = s.dir().display().to_string();
    // Each system is up while its file exists: health tells a resumed run
    // how a stop the kill cut short ended.
    let sys = |id: &str, site: &str, deps: &str, start: &str, stop: &str| {
        format!(
            "    - {{ id: {id}, site: {site}, dependsOn: [{deps}], start: {{ exec: {{ command: [sh, -c, \"echo start {id} >> {d}/log; {start}\"] }} }}, stop: {{ exec: {{ command: [sh, -c, \"echo stop {id} >> {d}/log; {stop}; rm -f {d}/{id}.up\"] }} }}, health: [ {{ exec: {{ command: [test, -f, {d}/{id}.up] }} }} ] }}\n"
        )
    };
    let file = s.write(
        "sites.yaml",
        &format!(
            "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: {{ name: sites }}\nspec:\n  defaults: {{ startTimeout: 3s, probe: {{ interval: 50ms, timeout: 1s }} }}\n  sites: [ {{ id: nitra }}, {{ id: pune }} ]\n  systems:\n{}{}{}  stages:\n    - {{ name: plants, select: {{ sites: [nitra, pune] }}, failureDomain: site, gate: {{ onFailure: rollback }} }}\n",
            // nitra-db's stop is slow: the kill lands while it runs.
            sys("nitra-db", "nitra", "", &format!("touch {d}/nitra-db.up"), "sleep 1"),
            sys("nitra-mes", "nitra", "nitra-db", "exit 2", "true"),
            sys("pune-mes", "pune", "", &format!("touch {d}/pune-mes.up"), "true"),
        ),
    );
    let mut apply = s.spawn(&["apply", &file, "--run-id", "k1"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !s.log().iter().any(|l| l == "stop nitra-db") {
        assert!(
            std::time::Instant::now() < deadline,
            "the site rollback never began: {:?}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    apply.kill().unwrap();
    apply.wait().unwrap();
    let resume = s.run(&["resume", "k1"]);
    assert_eq!(resume.code, 1, "{}", resume.stderr);
    let status = s.status("k1");
    assert_eq!(status["phase"], "Degraded", "{status}");
    let log = s.log();
    let count = |l: &str| log.iter().filter(|x| *x == l).count();
    assert_eq!(count("stop nitra-db"), 1, "not stopped twice: {log:?}");
    assert_eq!(count("stop nitra-mes"), 1, "{log:?}");
    assert_eq!(count("start pune-mes"), 1, "{log:?}");
    assert!(!log.iter().any(|l| l == "stop pune-mes"), "{log:?}");
    assert_eq!(s.run(&["audit", "k1", "--verify"]).code, 0);
}
