//! The scheduler on real processes and a real journal: order, limits,
//! gates, every onFailure, approvals and confirmations from "a second
//! terminal" (the inbox), pause and resume, and resume after a crash.
//!
//! One file, though long: every scenario shares the same small plant of
//! shell steps and marker files, and reads as one catalogue of what the
//! scheduler promises.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use blackstart_engine::event::StepKind;
use blackstart_engine::journal;
use blackstart_engine::process::Process;
use blackstart_engine::secrets::Secrets;
use blackstart_engine::step::StepContext;
use blackstart_engine::{
    Engine, Event, FileJournal, Inbox, Request, RunDir, RunPhase, RunState, StagePhase,
    SystemPhase, WaitingFor,
};
use tokio::sync::watch;

struct Lab {
    tmp: tempfile::TempDir,
    dir: RunDir,
    pause: watch::Sender<bool>,
}

impl Lab {
    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn engine_for(
        &self,
        journal: FileJournal,
        records: &[blackstart_engine::Record],
    ) -> Engine<FileJournal> {
        let cx = StepContext::new(
            Secrets::with_lookup(Arc::new(|_| None)),
            Duration::from_secs(10),
        )
        .unwrap();
        Engine::new(
            journal,
            records,
            cx,
            Arc::new(Inbox::new(&self.dir)),
            self.pause.subscribe(),
            Duration::from_millis(20),
        )
        .unwrap()
    }

    /// Reopens the journal as `resume` does and returns a fresh engine.
    fn resume(&self) -> Engine<FileJournal> {
        let (journal, records) = self.reopen();
        self.engine_for(journal, &records)
    }

    /// Opens the journal for writing once the engine before has let go of
    /// it. The lock belongs to the open file, and a child that another test
    /// of this process forks holds a copy of every open file until it execs
    /// (close-on-exec): for that instant the lock is still held.
    fn reopen(&self) -> (FileJournal, Vec<blackstart_engine::Record>) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match FileJournal::open(&self.dir) {
                Err(blackstart_engine::JournalError::Locked { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other.unwrap(),
            }
        }
    }

    fn state(&self) -> RunState {
        let records = journal::read(&self.dir).unwrap();
        RunState::fold(records.iter().map(|r| (r.seq, &r.event))).unwrap()
    }
}

/// Waits, at most 10 s, until the engine's state satisfies `ready`.
async fn wait_for(engine: &Engine<FileJournal>, what: &str, ready: impl Fn(&RunState) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !engine.with_state(&ready) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            engine.state()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a run of `yaml`, where `{dir}` stands for the test's directory.
fn lab(yaml: &str) -> (Lab, Engine<FileJournal>) {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = yaml.replace("{dir}", tmp.path().to_str().unwrap());
    let plan = blackstart_model::Plan::build(
        blackstart_model::load(yaml.as_bytes())
            .unwrap_or_else(|d| panic!("{}", d.render("lab.yaml"))),
    );
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    let started = Event::RunStarted {
        run: "r1".into(),
        playbook: plan.playbook.clone(),
        playbook_hash: plan.playbook_hash.clone(),
        plan: Box::new(plan),
        playbook_path: None,
        drill: false,
        require_signatures: false,
    };
    let journal = FileJournal::create(&dir, &started).unwrap();
    let records = journal.load().unwrap();
    let lab = Lab {
        tmp,
        dir,
        pause: watch::channel(false).0,
    };
    let engine = lab.engine_for(journal, &records);
    (lab, engine)
}

const HEAD: &str = "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: { name: lab }\nspec:\n  defaults: { probe: { interval: 50ms, timeout: 2s } }\n  sites: [ { id: dc } ]\n";

/// A system that logs `start ID` and `stop ID`, healthy once `{dir}/ID.ok`
/// exists (its start creates it unless `fail` is set).
fn system(id: &str, tier: &str, deps: &[&str], fail: bool) -> String {
    let start = if fail {
        format!("echo start {id} >> {{dir}}/log; echo 'cannot bind port' >&2; exit 4")
    } else {
        format!("echo start {id} >> {{dir}}/log; touch {{dir}}/{id}.ok")
    };
    format!(
        "    - {{ id: {id}, site: dc, tier: {tier}, dependsOn: [{}],\n        start: {{ exec: {{ command: [sh, -c, \"{start}\"] }} }},\n        stop: {{ exec: {{ command: [sh, -c, \"echo stop {id} >> {{dir}}/log; rm -f {{dir}}/{id}.ok\"] }} }},\n        health: [ {{ exec: {{ command: [test, -f, \"{{dir}}/{id}.ok\"] }} }} ] }}\n",
        deps.join(", ")
    )
}

fn playbook(systems: &[String], stages: &str) -> String {
    format!("{HEAD}  systems:\n{}  stages:\n{stages}", systems.concat())
}

const TWO_STAGES: &str = "    - { name: data, select: { tiers: [data] } }\n    - { name: apps, select: { tiers: [app] }, gate: { onFailure: rollback } }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_in_dependency_order_and_succeeds() {
    let yaml = playbook(
        &[
            system("db", "data", &[], false),
            system("cache", "data", &[], false),
            system("queue", "data", &["db", "cache"], false),
            system("api", "app", &["queue"], false),
            system("web", "app", &["api"], false),
        ],
        TWO_STAGES,
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Succeeded);
    let log = lab.log();
    let at = |line: &str| {
        log.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line} missing: {log:?}"))
    };
    assert!(at("start queue") > at("start db") && at("start queue") > at("start cache"));
    assert!(at("start api") > at("start queue") && at("start web") > at("start api"));
    let state = lab.state();
    assert_eq!(state.phase, RunPhase::Succeeded);
    assert!(
        state
            .systems
            .iter()
            .all(|s| s.phase == SystemPhase::Healthy),
        "{state:?}"
    );
    assert!(
        state
            .stages
            .iter()
            .all(|s| s.phase == StagePhase::Succeeded)
    );
}

/// A start is journaled in two writes, not four: Starting with its
/// attempt begun, then the attempt's output with its end. Each pair is
/// adjacent in the journal, however many systems start at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_journals_its_phase_with_its_attempt_and_its_output_with_its_end() {
    let systems: Vec<String> = (0..6)
        .map(|i| system(&format!("s{i}"), "data", &[], false))
        .collect();
    let yaml = playbook(
        &systems,
        "    - { name: data, select: { tiers: [data] }, maxParallel: 6 }\n",
    )
    .replace("touch {dir}", "echo up; touch {dir}");
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Succeeded);
    let records = journal::read(&lab.dir).unwrap();
    let mut pairs = 0;
    for pair in records.windows(2) {
        match (&pair[0].event, &pair[1].event) {
            (
                Event::System {
                    system,
                    phase: SystemPhase::Starting,
                    ..
                },
                next,
            ) => {
                assert!(
                    matches!(next, Event::AttemptBegun { system: s, .. } if s == system),
                    "{system}'s Starting is followed by {next:?}"
                );
                pairs += 1;
            }
            (Event::Output { system, step, .. }, next) if step == "start" => {
                assert!(
                    matches!(next, Event::AttemptEnded { system: s, .. } if s == system),
                    "{system}'s output is followed by {next:?}"
                );
                pairs += 1;
            }
            _ => {}
        }
    }
    assert_eq!(pairs, 12, "a Starting and an output for each of 6 systems");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_record_once_in_the_journal_s_order() {
    // A hundred and fifty starts that end together: their tasks write,
    // wait for the disk at once, and apply their records in turn. A task
    // that applied its own as soon as its wait ended would tell watchers
    // records out of order.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let systems: Vec<String> = (0..150)
        .map(|i| {
            format!(
                "    - {{ id: s{i:03}, site: dc, tier: app, start: {{ noop: {{}} }}, health: [ {{ tcp: {{ address: \"{addr}\" }} }} ] }}\n"
            )
        })
        .collect();
    let yaml = playbook(&systems, "    - { name: all, select: { tiers: [app] } }\n");
    let (lab, engine) = lab(&yaml);
    let mut told = engine.subscribe();
    assert_eq!(engine.run().await.unwrap(), RunPhase::Succeeded);
    let mut seqs = Vec::new();
    while let Ok(record) = told.try_recv() {
        seqs.push(record.seq);
    }
    let on_disk: Vec<u64> = journal::read(&lab.dir)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .skip(1)
        .collect();
    assert!(on_disk.len() > 600, "{} records", on_disk.len());
    assert_eq!(seqs, on_disk);
    let state = engine.state();
    assert!(
        state
            .systems
            .iter()
            .all(|s| s.phase == SystemPhase::Healthy)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_than_max_parallel_at_once() {
    let slow = |id: &str| {
        format!(
            "    - {{ id: {id}, site: dc, tier: data, start: {{ exec: {{ command: [sh, -c, \"echo + >> {{dir}}/log; sleep 0.15; echo - >> {{dir}}/log\"] }} }} }}\n"
        )
    };
    let systems: Vec<String> = (0..6).map(|i| slow(&format!("s{i}"))).collect();
    let (lab, engine) = lab(&playbook(
        &systems,
        "    - { name: data, select: { tiers: [data] }, maxParallel: 2 }\n",
    ));
    assert_eq!(engine.run().await.unwrap(), RunPhase::Succeeded);
    let (mut running, mut most) = (0i32, 0i32);
    for line in lab.log() {
        running += if line == "+" { 1 } else { -1 };
        most = most.max(running);
    }
    assert_eq!(most, 2, "{:?}", lab.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stage_rolls_back_what_it_started_and_keeps_earlier_stages() {
    let yaml = playbook(
        &[
            system("db", "data", &[], false),
            system("api", "app", &["db"], false),
            system("worker", "app", &["api"], false),
            system("web", "app", &["api"], true),
            system("report", "report", &[], false),
        ],
        &format!("{TWO_STAGES}    - {{ name: reports, select: {{ tiers: [report] }} }}\n"),
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::RolledBack);
    let state = lab.state();
    assert_eq!(
        state.system("db").unwrap().phase,
        SystemPhase::Healthy,
        "the data stage stays up"
    );
    assert_eq!(state.system("api").unwrap().phase, SystemPhase::RolledBack);
    assert_eq!(state.system("web").unwrap().phase, SystemPhase::RolledBack);
    assert_eq!(state.system("report").unwrap().phase, SystemPhase::Skipped);
    assert_eq!(state.stage("apps").unwrap().phase, StagePhase::RolledBack);
    assert_eq!(state.stage("reports").unwrap().phase, StagePhase::Skipped);
    assert!(
        state
            .reason
            .as_deref()
            .unwrap()
            .contains("web: start failed: `sh` exited 4"),
        "{:?}",
        state.reason
    );
    let log = lab.log();
    assert!(!log.contains(&"stop db".to_owned()));
    // Dependents first: whatever of web and worker was started stops before api.
    let api = log.iter().position(|l| l == "stop api").unwrap();
    assert!(
        log.iter().position(|l| l == "stop web").unwrap() < api,
        "{log:?}"
    );
    // What the failed start printed is in the journal.
    let records = journal::read(&lab.dir).unwrap();
    assert!(records.iter().any(|r| matches!(&r.event, Event::Output { system, output, exit_code: Some(4), .. } if system == "web" && output.contains("cannot bind port"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_run_and_resume_carries_on_without_restarting_healthy_systems() {
    let yaml = playbook(
        &[
            system("db", "data", &[], false),
            system("api", "app", &["db"], false),
            {
                // Fails until {dir}/fixed exists.
                "    - { id: web, site: dc, tier: app, dependsOn: [api], start: { exec: { command: [sh, -c, \"echo start web >> {dir}/log; test -f {dir}/fixed\"] } } }\n".to_owned()
            },
        ],
        "    - { name: data, select: { tiers: [data] } }\n    - { name: apps, select: { tiers: [app] }, gate: { onFailure: pause } }\n",
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Paused);
    assert_eq!(lab.state().stage("apps").unwrap().phase, StagePhase::Failed);
    drop(engine);
    std::fs::write(lab.path().join("fixed"), "").unwrap();
    assert_eq!(lab.resume().run().await.unwrap(), RunPhase::Succeeded);
    let log = lab.log();
    let count = |line: &str| log.iter().filter(|l| *l == line).count();
    assert_eq!(
        (count("start db"), count("start api"), count("start web")),
        (1, 1, 2),
        "{log:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_ends_the_run_failed_and_stops_nothing() {
    let yaml = playbook(
        &[
            system("db", "data", &[], false),
            system("bad", "data", &["db"], true),
        ],
        "    - { name: data, select: { tiers: [data] }, gate: { onFailure: abort } }\n",
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Failed);
    assert!(!lab.log().iter().any(|l| l.starts_with("stop")));
    assert_eq!(
        lab.state().system("db").unwrap().phase,
        SystemPhase::Healthy
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_start_is_timed_out() {
    let yaml = format!(
        "{HEAD}  systems:\n    - {{ id: hung, site: dc, startTimeout: 400ms, start: {{ exec: {{ command: [sleep, \"30\"] }} }} }}\n  stages:\n    - {{ name: all, select: {{ sites: [dc] }}, gate: {{ onFailure: abort }} }}\n"
    );
    let (lab, engine) = lab(&yaml);
    let begun = std::time::Instant::now();
    assert_eq!(engine.run().await.unwrap(), RunPhase::Failed);
    assert!(begun.elapsed() < Duration::from_secs(10));
    let hung = lab.state().system("hung").unwrap().clone();
    assert_eq!(hung.phase, SystemPhase::Failed);
    assert_eq!(
        hung.reason.as_deref(),
        Some("its verify checks and start did not finish within its startTimeout of 400ms")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_waits_for_approval_and_a_manual_step_for_confirmation() {
    let yaml = format!(
        "{HEAD}  systems:\n    - {{ id: plc, site: dc, tier: ot, start: {{ manual: {{ instruction: Reconnect the PLC gateway }} }} }}\n    - {{ id: mes, site: dc, tier: app, dependsOn: [plc], start: {{ noop: {{}} }} }}\n  stages:\n    - {{ name: ot, select: {{ tiers: [ot] }}, gate: {{ approvals: [incident-commander, plant-manager] }} }}\n    - {{ name: apps, select: {{ tiers: [app] }} }}\n"
    );
    let (lab, engine) = lab(&yaml);
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    let inbox = Inbox::new(&lab.dir);
    wait_for(&engine, "the manual step", |s| {
        s.system("plc")
            .is_some_and(|p| p.waiting_for == Some(WaitingFor::ManualStep))
    })
    .await;
    inbox
        .submit(&Request::Confirm {
            system: "plc".into(),
            by: "olga".into(),
            proof: Default::default(),
        })
        .unwrap();
    wait_for(&engine, "the gate", |s| {
        s.stage("ot").is_some_and(|st| st.phase == StagePhase::Gate)
    })
    .await;
    inbox
        .submit(&Request::Approve {
            stage: "ot".into(),
            by: "alice".into(),
            role: Some("incident-commander".into()),
            proof: Default::default(),
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        engine.state().stage("ot").unwrap().phase,
        StagePhase::Gate,
        "one of two roles is not enough"
    );
    inbox
        .submit(&Request::Approve {
            stage: "ot".into(),
            by: "bob".into(),
            role: Some("plant-manager".into()),
            proof: Default::default(),
        })
        .unwrap();
    assert_eq!(run.await.unwrap().unwrap(), RunPhase::Succeeded);
    let state = lab.state();
    assert_eq!(
        state.system("plc").unwrap().confirmed_by.as_deref(),
        Some("olga")
    );
    assert_eq!(state.stage("ot").unwrap().approvals.len(), 2);
    assert!(
        blackstart_engine::RequestSource::pending(&inbox)
            .unwrap()
            .is_empty(),
        "requests are acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_lost_during_the_soak_fails_the_gate() {
    // Healthy for the first two probes, then down for good.
    let health =
        "n=$(cat {dir}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {dir}/n; [ $n -le 2 ]";
    let yaml = format!(
        "{HEAD}  systems:\n    - {{ id: db, site: dc, start: {{ noop: {{}} }}, stop: {{ exec: {{ command: [sh, -c, \"echo stop db >> {{dir}}/log\"] }} }},\n        probe: {{ failureThreshold: 2 }}, health: [ {{ exec: {{ command: [sh, -c, \"{health}\"] }} }} ] }}\n  stages:\n    - {{ name: all, select: {{ sites: [dc] }}, gate: {{ soak: 5s, onFailure: rollback }} }}\n"
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::RolledBack);
    assert_eq!(lab.log(), ["stop db"]);
    let reason = lab.state().reason.unwrap();
    assert!(
        reason.contains("db: unhealthy during the soak: unhealthy 2 times in a row"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_stops_new_starts_and_resume_carries_on() {
    let yaml = playbook(
        &[
            system("db", "data", &[], false),
            system("api", "app", &["db"], false),
        ],
        TWO_STAGES,
    );
    let (lab, engine) = lab(&yaml);
    lab.pause.send_replace(true);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Paused);
    assert!(
        lab.log().is_empty(),
        "nothing starts while paused: {:?}",
        lab.log()
    );
    drop(engine);
    lab.pause.send_replace(false);
    assert_eq!(lab.resume().run().await.unwrap(), RunPhase::Succeeded);
    assert_eq!(lab.log(), ["start db", "start api"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_crash_reprobes_in_flight_systems_instead_of_restarting_them() {
    let yaml = playbook(
        &[
            system("db", "data", &[], false),
            system("api", "app", &["db"], false),
        ],
        TWO_STAGES,
    );
    for up in [true, false] {
        let (lab, engine) = lab(&yaml);
        // As if the process died while db's start ran: the journal has its
        // attempt begun and its process, long gone, and no end.
        drop(engine);
        {
            let (j, _) = lab.reopen();
            let gone = Process {
                pid: i32::MAX,
                pgid: i32::MAX,
                start_ticks: 1,
                boot: blackstart_engine::process::boot_id(),
            };
            for e in [
                Event::Run {
                    phase: RunPhase::Running,
                    reason: None,
                },
                Event::Stage {
                    stage: "data".into(),
                    phase: StagePhase::Running,
                    reason: None,
                },
                Event::System {
                    system: "db".into(),
                    phase: SystemPhase::Starting,
                    reason: None,
                    waiting_for: None,
                },
                Event::AttemptBegun {
                    system: "db".into(),
                    step: StepKind::Start,
                    attempt: 1,
                },
                Event::AttemptRunning {
                    system: "db".into(),
                    step: StepKind::Start,
                    attempt: 1,
                    process: gone,
                },
            ] {
                j.append(&e).unwrap();
            }
        }
        if up {
            std::fs::write(lab.path().join("db.ok"), "").unwrap();
        }
        assert_eq!(lab.resume().run().await.unwrap(), RunPhase::Succeeded);
        let db = lab.state().system("db").unwrap().clone();
        if up {
            assert_eq!(
                lab.log(),
                ["start api"],
                "db was healthy and was not started again"
            );
            assert_eq!(
                db.reason.as_deref(),
                Some("healthy when the run resumed; its start was not run again")
            );
            assert_eq!(db.attempts, 1);
        } else {
            assert_eq!(
                lab.log(),
                ["start db", "start api"],
                "health said down, the first attempt had certainly ended: started again"
            );
            assert_eq!(db.attempts, 2);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_of_a_finished_run_stops_everything_dependents_first() {
    let yaml = playbook(
        &[
            system("db", "data", &[], false),
            system("api", "app", &["db"], false),
            system("web", "app", &["api"], false),
        ],
        TWO_STAGES,
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Succeeded);
    drop(engine);
    assert_eq!(
        lab.resume()
            .rollback("rolled back by the commander", None)
            .await
            .unwrap(),
        RunPhase::RolledBack
    );
    let stops: Vec<String> = lab
        .log()
        .into_iter()
        .filter(|l| l.starts_with("stop"))
        .collect();
    assert_eq!(stops, ["stop web", "stop api", "stop db"]);
    let state = lab.state();
    assert!(
        state
            .systems
            .iter()
            .all(|s| s.phase == SystemPhase::RolledBack)
    );
    assert_eq!(state.phase, RunPhase::RolledBack);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_cancels_starts_in_flight_and_manual_stops_wait_for_a_person() {
    let yaml = format!(
        "{HEAD}  systems:\n    - {{ id: gateway, site: dc, start: {{ manual: {{ instruction: Reconnect the gateway }} }}, stop: {{ manual: {{ instruction: Disconnect the gateway }} }} }}\n    - {{ id: slow, site: dc, dependsOn: [gateway], start: {{ exec: {{ command: [sleep, \"30\"] }} }}, stop: {{ noop: {{}} }} }}\n    - {{ id: bad, site: dc, dependsOn: [gateway], start: {{ exec: {{ command: [sh, -c, \"sleep 0.3; exit 1\"] }} }} }}\n  stages:\n    - {{ name: all, select: {{ sites: [dc] }}, gate: {{ onFailure: rollback }} }}\n"
    );
    let (lab, engine) = lab(&yaml);
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    let inbox = Inbox::new(&lab.dir);
    wait_for(&engine, "the manual start", |s| {
        s.system("gateway")
            .is_some_and(|g| g.reason.as_deref().is_some_and(|r| r.contains("Reconnect")))
    })
    .await;
    inbox
        .submit(&Request::Confirm {
            system: "gateway".into(),
            by: "olga".into(),
            proof: Default::default(),
        })
        .unwrap();
    // `bad` fails, which cancels `slow` mid-start; the rollback then waits at the gateway.
    wait_for(&engine, "the manual stop", |s| {
        s.system("gateway")
            .is_some_and(|g| g.phase == SystemPhase::Stopping && g.confirmed_by.is_none())
    })
    .await;
    let slow = engine.state().system("slow").unwrap().clone();
    assert_eq!(
        slow.phase,
        SystemPhase::RolledBack,
        "cancelled mid-start, then stopped: {slow:?}"
    );
    inbox
        .submit(&Request::Confirm {
            system: "gateway".into(),
            by: "olga".into(),
            proof: Default::default(),
        })
        .unwrap();
    assert_eq!(run.await.unwrap().unwrap(), RunPhase::RolledBack);
    let state = lab.state();
    assert_eq!(
        state.system("gateway").unwrap().phase,
        SystemPhase::RolledBack
    );
    let records = journal::read(&lab.dir).unwrap();
    assert!(records.iter().any(|r| matches!(&r.event, Event::System { system, reason: Some(reason), .. } if system == "slow" && reason == "start cancelled: the stage failed")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_s_time_on_a_manual_step_is_not_counted_and_a_pause_holds_it() {
    let yaml = format!(
        "{HEAD}  systems:\n    - {{ id: plc, site: dc, startTimeout: 300ms, start: {{ manual: {{ instruction: Reconnect the PLC gateway }} }}, health: [ {{ exec: {{ command: [test, -f, \"{{dir}}/plc.ok\"] }} }} ] }}\n  stages:\n    - {{ name: ot, select: {{ sites: [dc] }}, gate: {{ onFailure: rollback }} }}\n"
    );
    let (lab, engine) = lab(&yaml);
    let waiting = |s: &RunState| {
        s.system("plc")
            .is_some_and(|p| p.waiting_for == Some(WaitingFor::ManualStep))
    };
    // A pause while the person works holds the run; nothing times out.
    let run = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run().await }
    });
    wait_for(&engine, "the manual step", waiting).await;
    tokio::time::sleep(Duration::from_millis(600)).await; // twice its startTimeout
    lab.pause.send_replace(true);
    assert_eq!(run.await.unwrap().unwrap(), RunPhase::Paused);
    assert_eq!(
        lab.state().system("plc").unwrap().phase,
        SystemPhase::Starting
    );
    drop(engine);
    // The person finishes and confirms; resume takes it, and the probes get
    // the whole startTimeout from the confirmation on.
    lab.pause.send_replace(false);
    std::fs::write(lab.path().join("plc.ok"), "").unwrap();
    Inbox::new(&lab.dir)
        .submit(&Request::Confirm {
            system: "plc".into(),
            by: "olga".into(),
            proof: Default::default(),
        })
        .unwrap();
    assert_eq!(lab.resume().run().await.unwrap(), RunPhase::Succeeded);
    assert_eq!(
        lab.state().system("plc").unwrap().phase,
        SystemPhase::Healthy
    );
}

/// A gate whose approvals do not come within `approvalTimeout` fails, and
/// its `onTimeout` applies (here: roll the stage back), naming the roles
/// still missing; with approvals in time it would have passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_whose_approvals_time_out_applies_on_timeout() {
    let yaml = playbook(
        &[system("db", "data", &[], false)],
        "    - { name: data, select: { tiers: [data] }, gate: { approvals: [incident-commander], approvalTimeout: 400ms, onTimeout: rollback } }\n",
    );
    let (lab, engine) = lab(&yaml);
    let begin = std::time::Instant::now();
    assert_eq!(engine.run().await.unwrap(), RunPhase::RolledBack);
    assert!(begin.elapsed() >= Duration::from_millis(400));
    let state = lab.state();
    assert_eq!(state.system("db").unwrap().phase, SystemPhase::RolledBack);
    let reason = state.reason.unwrap_or_default();
    assert!(
        reason.contains(
            "no approval within its approvalTimeout of 400ms (still missing: incident-commander)"
        ),
        "{reason}"
    );
}

/// An optional system's failure is recorded and does not fail its gate:
/// what depends on it, in its stage and in later ones, is Blocked and never
/// started, the rest goes on, and the run ends Degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_failure_blocks_its_dependents_and_the_run_ends_degraded() {
    let sys = |id: &str, tier: &str, deps: &str, extra: &str, fail: bool| {
        let cmd = if fail {
            format!("echo start {id} >> {{dir}}/log; exit 3")
        } else {
            format!("echo start {id} >> {{dir}}/log")
        };
        format!(
            "    - {{ id: {id}, site: dc, tier: {tier}, dependsOn: [{deps}]{extra}, start: {{ exec: {{ command: [sh, -c, \"{cmd}\"] }} }} }}\n"
        )
    };
    let yaml = playbook(
        &[
            sys("db", "data", "", "", false),
            sys("reports", "data", "", ", optional: true", true),
            sys("report-cache", "data", "reports", "", false),
            sys("web", "app", "db", "", false),
            sys("analytics", "app", "report-cache", "", false),
        ],
        TWO_STAGES,
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Degraded);
    let mut log = lab.log();
    log.sort();
    assert_eq!(log, ["start db", "start reports", "start web"]);
    let state = lab.state();
    let phase = |id: &str| state.system(id).unwrap().phase;
    assert_eq!(phase("reports"), SystemPhase::Failed);
    assert_eq!(phase("report-cache"), SystemPhase::Blocked);
    assert_eq!(phase("analytics"), SystemPhase::Blocked);
    assert_eq!(phase("web"), SystemPhase::Healthy);
    assert_eq!(
        state.stage("data").unwrap().phase,
        StagePhase::Succeeded,
        "the optional failure did not fail the gate"
    );
    let why = state.reason.clone().unwrap_or_default();
    assert!(
        why.contains("failed: reports")
            && why.contains("Blocked, never started: report-cache, analytics"),
        "{why}"
    );
    assert!(
        state
            .system("analytics")
            .unwrap()
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("report-cache, which it depends on, is Blocked")),
        "{state:?}"
    );
}

/// `retry.attempts` counts every start: a start that fails twice and then
/// works is Healthy after three; one that always fails is Failed after
/// exactly its attempts, each journaled, and what a failed attempt left
/// running is ended before the next begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_system_starts_at_most_its_attempts_and_ends_what_a_failed_one_left() {
    // flaky works on its third start; doomed never does, and leaves a
    // sleeper behind each time.
    let flaky = "n=$(cat {dir}/flaky.n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {dir}/flaky.n; echo start flaky >> {dir}/log; [ $n -ge 3 ]";
    let doomed = "sleep 30 & echo $! >> {dir}/left; echo start doomed >> {dir}/log; exit 1";
    let yaml = format!(
        "{HEAD}  defaults: {{ retry: {{ attempts: 3, backoff: 50ms }} }}\n  systems:\n    - {{ id: flaky, site: dc, tier: data, start: {{ exec: {{ command: [sh, -c, \"{flaky}\"] }} }} }}\n    - {{ id: doomed, site: dc, tier: app, retry: {{ attempts: 2 }}, start: {{ exec: {{ command: [sh, -c, \"{doomed}\"] }} }} }}\n  stages:\n    - {{ name: data, select: {{ tiers: [data] }} }}\n    - {{ name: apps, select: {{ tiers: [app] }}, gate: {{ onFailure: abort }} }}\n"
    )
    .replace("  defaults: { probe: { interval: 50ms, timeout: 2s } }\n", "");
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Failed);
    let log = lab.log();
    let count = |what: &str| log.iter().filter(|l| *l == what).count();
    assert_eq!(count("start flaky"), 3, "{log:?}");
    assert_eq!(
        count("start doomed"),
        2,
        "attempts: 2 is at most two starts: {log:?}"
    );
    let state = lab.state();
    assert_eq!(state.system("flaky").unwrap().phase, SystemPhase::Healthy);
    assert_eq!(state.system("doomed").unwrap().phase, SystemPhase::Failed);
    assert_eq!(state.system("doomed").unwrap().attempts, 2);
    drop(engine);
    let records = lab.reopen().1;
    let begun = records
        .iter()
        .filter(|r| matches!(&r.event, Event::AttemptBegun { system, .. } if system == "flaky"))
        .count();
    assert_eq!(begun, 3, "each attempt is journaled");
    assert!(
        records.iter().any(|r| matches!(
            &r.event,
            Event::System { system, reason: Some(why), .. }
                if system == "doomed" && why.starts_with("attempt 1 of 2 failed: start failed")
                    && why.contains("1 process(es) it left running were ended")
        )),
        "the journal says which attempt failed, and what was ended"
    );
    // The sleeper of the first attempt was ended before the second began.
    let first: i32 = std::fs::read_to_string(lab.path().join("left"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        std::fs::read_to_string(format!("/proc/{first}/stat")).map_or(true, |s| s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')),
        "the first attempt's sleeper still runs"
    );
    // The last attempt's is the rollback's to stop (here abort leaves it).
    for pid in std::fs::read_to_string(lab.path().join("left"))
        .unwrap()
        .lines()
    {
        let _ = Command::new("kill").arg(pid).status();
    }
}

/// `failureDomain: site`: a failure at one site rolls back that site's part
/// of the stage only; the other site is not stopped and passes the gate,
/// what depends on the held site is Blocked, the rest goes on, and the run
/// ends Degraded naming the held site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_failure_holds_that_site_only_and_the_run_ends_degraded() {
    let sys = |id: &str, site: &str, tier: &str, deps: &str, fail: bool| {
        let start = if fail {
            format!("echo start {id} >> {{dir}}/log; exit 5")
        } else {
            format!("echo start {id} >> {{dir}}/log")
        };
        format!(
            "    - {{ id: {id}, site: {site}, tier: {tier}, dependsOn: [{deps}], start: {{ exec: {{ command: [sh, -c, \"{start}\"] }} }}, stop: {{ exec: {{ command: [sh, -c, \"echo stop {id} >> {{dir}}/log\"] }} }} }}\n"
        )
    };
    let yaml = format!(
        "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: {{ name: sites }}\nspec:\n  sites: [ {{ id: nitra }}, {{ id: pune }}, {{ id: hq }} ]\n  systems:\n{}{}{}{}{}{}  stages:\n    - {{ name: plants, select: {{ tiers: [plant] }}, failureDomain: site, gate: {{ onFailure: rollback }} }}\n    - {{ name: dealers, select: {{ tiers: [dealer] }} }}\n",
        sys("nitra-db", "nitra", "plant", "", false),
        sys("nitra-mes", "nitra", "plant", "nitra-db", true),
        sys("pune-db", "pune", "plant", "", false),
        sys("pune-mes", "pune", "plant", "pune-db", false),
        sys("dealer-nitra", "hq", "dealer", "nitra-mes", false),
        sys("dealer-pune", "hq", "dealer", "pune-mes", false),
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Degraded);
    let log = lab.log();
    let pos = |l: &str| log.iter().position(|x| x == l);
    for started in [
        "start nitra-db",
        "start nitra-mes",
        "start pune-db",
        "start pune-mes",
        "start dealer-pune",
    ] {
        assert!(pos(started).is_some(), "{started}: {log:?}");
    }
    assert!(
        pos("start dealer-nitra").is_none(),
        "Blocked, never started: {log:?}"
    );
    assert!(
        !log.iter().any(|l| l.starts_with("stop pune")),
        "the other site is not stopped: {log:?}"
    );
    assert!(
        pos("stop nitra-mes") < pos("stop nitra-db") && pos("stop nitra-db").is_some(),
        "the held site rolled back, dependents first: {log:?}"
    );
    let state = lab.state();
    let phase = |id: &str| state.system(id).unwrap().phase;
    assert_eq!(phase("pune-mes"), SystemPhase::Healthy);
    assert_eq!(phase("nitra-db"), SystemPhase::RolledBack);
    assert_eq!(phase("dealer-nitra"), SystemPhase::Blocked);
    assert_eq!(phase("dealer-pune"), SystemPhase::Healthy);
    assert_eq!(state.stage("plants").unwrap().phase, StagePhase::Succeeded);
    assert_eq!(state.held.len(), 1);
    assert_eq!(state.held[0].site, "nitra");
    let why = state.reason.clone().unwrap_or_default();
    assert!(why.contains("site nitra held in stage plants"), "{why}");
    assert!(
        state
            .system("dealer-nitra")
            .and_then(|s| s.reason.clone())
            .is_some_and(|r| r.contains(
                "nitra-mes, which it depends on, is at site nitra, held in stage plants"
            )),
        "{state:?}"
    );
}

/// `retry RUN SYSTEM` of a system whose failure paused its site's part
/// (`failureDomain: site`, `onFailure: pause`): the rest of the site is
/// Healthy, so that one system starts again, the hold ends, what it Blocked
/// starts, and the run ends Succeeded with nothing else started twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_sites_one_failed_system_is_retried_alone() {
    use blackstart_engine::decision::{Decision, Kind};
    let sys = |id: &str, site: &str, tier: &str, deps: &str, cmd: &str| {
        format!(
            "    - {{ id: {id}, site: {site}, tier: {tier}, dependsOn: [{deps}], start: {{ exec: {{ command: [sh, -c, \"echo start {id} >> {{dir}}/log; {cmd}\"] }} }}, stop: {{ exec: {{ command: [sh, -c, \"echo stop {id} >> {{dir}}/log\"] }} }} }}\n"
        )
    };
    let yaml = format!(
        "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: {{ name: sites }}\nspec:\n  sites: [ {{ id: nitra }}, {{ id: hq }} ]\n  systems:\n{}{}{}  stages:\n    - {{ name: plants, select: {{ tiers: [plant] }}, failureDomain: site, gate: {{ onFailure: pause }} }}\n    - {{ name: dealers, select: {{ tiers: [dealer] }} }}\n",
        sys("nitra-db", "nitra", "plant", "", "true"),
        sys(
            "nitra-mes",
            "nitra",
            "plant",
            "nitra-db",
            "test -f {dir}/fixed"
        ),
        sys("dealer-nitra", "hq", "dealer", "nitra-mes", "true"),
    );
    let (lab, engine) = lab(&yaml);
    assert_eq!(engine.run().await.unwrap(), RunPhase::Degraded);
    let state = lab.state();
    assert_eq!(
        state.system("nitra-mes").unwrap().phase,
        SystemPhase::Failed
    );
    assert_eq!(
        state.system("nitra-db").unwrap().phase,
        SystemPhase::Healthy
    );
    assert_eq!(state.held.len(), 1);
    drop(engine);

    std::fs::write(lab.path().join("fixed"), "").unwrap();
    let engine = lab.resume();
    engine
        .decide(&Decision::new(Kind::Retry, "nitra-mes", "alice"))
        .unwrap()
        .unwrap();
    assert!(engine.state().held.is_empty(), "the hold ended with it");
    assert_eq!(engine.run().await.unwrap(), RunPhase::Succeeded);
    let log = lab.log();
    let count = |l: &str| log.iter().filter(|x| *x == l).count();
    assert_eq!(count("start nitra-mes"), 2, "{log:?}");
    assert_eq!(count("start nitra-db"), 1, "{log:?}");
    assert_eq!(count("start dealer-nitra"), 1, "{log:?}");
    assert!(!log.iter().any(|l| l.starts_with("stop")), "{log:?}");
}
