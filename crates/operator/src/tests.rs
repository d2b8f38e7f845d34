//! Reconcile scenarios against the mocked API server, one per behaviour.
//! They run on tokio's multi-threaded runtime, as the operator does: the
//! status store blocks in place while it patches.
//!
//! One file, though long: every scenario shares the plant, the fake and its
//! helpers, and reads as one catalogue of what the operator promises.

use std::time::Duration;

use http::Method;
use serde_json::json;

use blackstart_engine::{Event, Record};

use crate::crd::RestartRun;
use crate::fixtures::{FakeApi, phase_is, plant, reconcile_until};

const LIMIT: Duration = Duration::from_secs(30);

fn journal(run: &RestartRun) -> Vec<Record> {
    run.status.clone().unwrap_or_default().journal
}

fn stage_phase(run: &RestartRun, stage: &str) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.stages.iter().find(|st| st.name == stage))
        .map(|st| st.phase.clone())
        .unwrap_or_default()
}

fn replicas(fake: &FakeApi, deployment: &str) -> i64 {
    fake.get("deployments", deployment)["spec"]["replicas"]
        .as_i64()
        .unwrap_or(-1)
}

/// How often each system was started, from the journal.
fn starts(run: &RestartRun, system: &str) -> usize {
    journal(run)
        .iter()
        .filter(|r| {
            matches!(&r.event, Event::System { system: s, phase: blackstart_engine::SystemPhase::Starting, reason: None, .. } if s == system)
        })
        .count()
}

/// Whether the run's status says why it stands (not started, say).
fn has_reason(run: &RestartRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.reason.as_ref())
        .is_some()
}

fn condition(run: &RestartRun, type_: &str) -> String {
    run.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// Reconciles run-1 until its first gate waits for an approval.
async fn at_the_gate(fake: &FakeApi, ctx: &std::sync::Arc<crate::Context>) -> RestartRun {
    reconcile_until(fake, ctx, "run-1", LIMIT, |r| {
        condition(r, "AwaitingApproval") == "True"
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_run_gets_a_finalizer_then_its_plan_and_status() {
    let fake = plant("{}", false);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, |r| !journal(r).is_empty()).await;

    let requests: Vec<(Method, String)> = fake
        .log()
        .into_iter()
        .map(|l| (l.method, l.path))
        .take(6)
        .collect();
    let base = "/apis/blackstart.dev/v1alpha1/namespaces/plant";
    let maps = "/api/v1/namespaces/plant/configmaps";
    assert_eq!(
        requests,
        [
            (Method::PATCH, format!("{base}/restartruns/run-1")),
            (Method::GET, format!("{base}/restartruns/run-1")),
            (Method::GET, format!("{maps}/run-1-journal-0000")),
            (Method::GET, format!("{base}/playbooks/plant")),
            (Method::POST, maps.to_owned()),
            (Method::PATCH, format!("{base}/restartruns/run-1/status")),
        ],
        "first the finalizer, then a fresh read and the journal (none yet), the playbook, the plan into the journal, and the summary into the status"
    );
    assert_eq!(
        run.metadata.finalizers.as_deref(),
        Some(&["blackstart.dev/run".to_owned()][..])
    );
    let status = run.status.clone().unwrap_or_default();
    assert!(
        status
            .plan_hash
            .as_deref()
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    assert_eq!(
        status
            .stages
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["data", "apps"]
    );
    assert_eq!(status.system_counts.values().sum::<u32>(), 3);
    assert!(
        status
            .systems
            .iter()
            .all(|s| s.phase != "Pending" && s.phase != "Healthy"),
        "pending and healthy systems are counted, not listed: {:?}",
        status.systems
    );
    assert_eq!(status.observed_generation, Some(1));
    // The journal is in its segment, owned by the run; the status only
    // says how long it is and where it ends.
    let raw = fake.raw_run("run-1").status.unwrap_or_default();
    assert!(raw.journal.is_empty());
    assert_eq!(raw.journal_segments, Some(1));
    let length = raw.journal_length.expect("the journal's length");
    let journal = fake.journal("run-1");
    let head = journal
        .iter()
        .find(|r| r.seq == length)
        .expect("the head is in the journal");
    assert_eq!(raw.journal_head.as_deref(), Some(head.hash.as_str()));
    let segment = fake.get("configmaps", "run-1-journal-0000");
    assert_eq!(
        segment["metadata"]["ownerReferences"][0]["kind"],
        "RestartRun"
    );
    assert_eq!(
        segment["metadata"]["labels"]["blackstart.dev/journal-of"],
        "run-1"
    );
    match &status.journal[0].event {
        Event::RunStarted { playbook, plan, .. } => {
            assert_eq!(playbook, "plant");
            assert_eq!(plan.system_count(), 3);
        }
        other => panic!("the first record is {other:?}"),
    }
    // The status write is a JSON Patch guarded by the resourceVersion read.
    let write = fake
        .log()
        .into_iter()
        .find(|l| l.path.ends_with("/status"))
        .expect("a status write");
    assert!(
        write
            .content_type
            .starts_with("application/json-patch+json")
    );
    assert_eq!(write.body[0]["path"], json!("/metadata/resourceVersion"));
    assert!(fake.events().iter().any(|(reason, _)| reason == "Planned"));
    ctx.abandon();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_progress_in_order_and_scale_up_from_zero() {
    let fake = plant("{}", false);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;

    assert_eq!(replicas(&fake, "parts-db"), 1);
    assert_eq!(replicas(&fake, "dealer-portal"), 2);
    assert_eq!(replicas(&fake, "parts-api"), 2);
    assert_eq!(
        fake.get("deployments", "dealer-portal")["metadata"]["annotations"]["blackstart.dev/replicas-before"],
        json!("0"),
        "what a stop restores is kept on the workload"
    );
    // The database was healthy before either app started.
    let records = journal(&run);
    let position = |pred: &dyn Fn(&Event) -> bool| records.iter().position(|r| pred(&r.event));
    let db_healthy = position(
        &|e| matches!(e, Event::System { system, phase: blackstart_engine::SystemPhase::Healthy, .. } if system == "parts-db"),
    );
    let app_starting = position(
        &|e| matches!(e, Event::System { system, phase: blackstart_engine::SystemPhase::Starting, .. } if system != "parts-db"),
    );
    assert!(db_healthy < app_starting, "{records:#?}");
    Record::verify_chain(&records).expect("the status journal verifies");
    assert_eq!(condition(&run, "Succeeded"), "True");
    assert!(
        run.status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .is_some()
    );
    // In order: once RunSucceeded is published, so are the stages' Events
    // and their metrics.
    for wanted in ["StageStarted", "GateReached", "GatePassed", "RunSucceeded"] {
        event_published(&fake, wanted).await;
    }
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("blackstart_stage_duration_seconds_count{playbook=\"plant\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("blackstart_runs{phase=\"Succeeded\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_waits_for_its_approval_given_in_the_spec() {
    let fake = plant("{ approvals: [incident-commander] }", false);
    let ctx = fake.context();
    let run = at_the_gate(&fake, &ctx).await;
    assert_eq!(stage_phase(&run, "data"), "Gate");
    assert_eq!(
        run.status.as_ref().and_then(|s| s.stage.clone()).as_deref(),
        Some("data")
    );
    // Waiting a while more starts nothing of the next stage.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, |_| true).await;
    assert_eq!(stage_phase(&run, "apps"), "Pending");
    assert_eq!(replicas(&fake, "dealer-portal"), 0);

    // What `blackstart approve --k8s` and the documented kubectl patch do.
    fake.patch_spec(
        "run-1",
        json!({"approvals": [{"stage": "data", "by": "alice", "role": "incident-commander"}]}),
    );
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;
    assert!(journal(&run).iter().any(|r| matches!(&r.event,
        Event::Approved { stage, by, role, .. } if stage == "data" && by == "alice" && role.as_deref() == Some("incident-commander"))));
    assert_eq!(condition(&run, "AwaitingApproval"), "False");
    assert!(
        fake.events()
            .iter()
            .any(|(r, n)| r == "Approved" && n.contains("alice"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stage_rolls_back_by_scaling_down() {
    let fake = plant("{}", true);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("RolledBack")).await;

    assert_eq!(stage_phase(&run, "data"), "Succeeded");
    assert_eq!(stage_phase(&run, "apps"), "RolledBack");
    assert_eq!(replicas(&fake, "parts-db"), 1, "an earlier stage stays up");
    assert_eq!(replicas(&fake, "dealer-portal"), 0, "back to what it was");
    assert_eq!(replicas(&fake, "parts-api"), 0);
    assert!(
        fake.get("deployments", "parts-api")["metadata"]["annotations"]
            .get("blackstart.dev/replicas-before")
            .is_none(),
        "a restored workload forgets what it was"
    );
    let reason = run.status.and_then(|s| s.reason).unwrap_or_default();
    assert!(reason.contains("dealer-portal"), "{reason}");
    assert!(reason.contains("startTimeout"), "{reason}");
    for reason in ["RollbackBegun", "StageRolledBack"] {
        event_published(&fake, reason).await;
    }
}

/// Waits, bounded, until an Event with `reason` reached the API server:
/// Events are published off the run's path, after the status it follows.
async fn event_published(fake: &FakeApi, reason: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !fake.events().iter().any(|(r, _)| r == reason) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} Event: {:?}",
            fake.events()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_resumes_from_the_status() {
    let fake = plant("{ approvals: [incident-commander] }", false);
    let first = fake.context();
    at_the_gate(&fake, &first).await;
    // The operator dies: its drivers and memory are gone, the status stays.
    first.abandon();
    drop(first);
    let scaled_before = fake
        .log()
        .iter()
        .filter(|l| l.method == Method::PATCH && l.path.ends_with("/deployments/parts-db"))
        .count();

    fake.patch_spec(
        "run-1",
        json!({"approvals": [{"stage": "data", "by": "alice"}]}),
    );
    let second = fake.context();
    let run = reconcile_until(&fake, &second, "run-1", LIMIT, phase_is("Succeeded")).await;

    assert_eq!(
        starts(&run, "parts-db"),
        1,
        "a healthy system is not started again"
    );
    let scaled_after = fake
        .log()
        .iter()
        .filter(|l| l.method == Method::PATCH && l.path.ends_with("/deployments/parts-db"))
        .count();
    assert_eq!(scaled_before, scaled_after, "parts-db was not scaled again");
    assert_eq!(starts(&run, "dealer-portal"), 1);
    Record::verify_chain(&journal(&run)).expect("one unbroken journal across both operators");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_on_a_status_patch_is_retried() {
    let fake = plant("{}", false);
    fake.conflict_next_status_patches(2);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;

    let log = fake.log();
    let conflicts = log.iter().filter(|l| l.status == 409).count();
    assert_eq!(conflicts, 2);
    // Each conflict is followed by a fresh read of the status.
    let first = log
        .iter()
        .position(|l| l.status == 409)
        .expect("a conflict");
    assert_eq!(log[first + 1].method, Method::GET);
    assert!(log[first + 1].path.ends_with("/restartruns/run-1/status"));
    Record::verify_chain(&journal(&run)).expect("no record lost or doubled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_extended_by_someone_else_is_not_written_over() {
    let fake = plant("{ approvals: [incident-commander] }", false);
    let ctx = fake.context();
    at_the_gate(&fake, &ctx).await;
    // Two writers read the journal as it is now; the first then appends a
    // record the second does not know.
    let stale = crate::store::StatusStore::load(
        fake.runs(&ctx),
        fake.raw_run("run-1"),
        std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1)),
        None,
        None,
    )
    .await
    .expect("a store on the journal");
    let store = crate::store::StatusStore::load(
        fake.runs(&ctx),
        fake.raw_run("run-1"),
        std::sync::Arc::new(std::sync::atomic::AtomicI64::new(1)),
        None,
        None,
    )
    .await
    .expect("a second store on the same journal");
    store
        .append_async(&Event::Approved {
            stage: "data".into(),
            by: "mallory".into(),
            role: None,
            proof: Default::default(),
        })
        .await
        .expect("the current store appends");
    let err = stale
        .append_async(&Event::Approved {
            stage: "data".into(),
            by: "eve".into(),
            role: None,
            proof: Default::default(),
        })
        .await
        .expect_err("the stale store must refuse");
    assert!(err.to_string().contains("did not write"), "{err}");
    ctx.abandon();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_playbook_is_reported_not_started() {
    let fake = FakeApi::default();
    fake.create(
        "restartruns",
        crate::fixtures::restart_run("run-1", "nowhere"),
    );
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, has_reason).await;
    assert_eq!(run.phase(), "Pending");
    assert!(
        run.status
            .and_then(|s| s.reason)
            .is_some_and(|r| r.contains("Playbook plant/nowhere does not exist"))
    );
    assert!(fake.events().iter().any(|(r, _)| r == "PlaybookNotUsable"));
}

/// A playbook that reads a secret the operator's pod does not have is not
/// started: the RestartRun says which, before anything is scaled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_reported_before_anything_starts() {
    let (yaml, deployments) = crate::fixtures::plant_playbook("{}", false);
    let yaml = yaml.replace(
        "      health: [ { kubernetes: { kind: Deployment, name: parts-db } } ]\n",
        "      health: [ { kubernetes: { kind: Deployment, name: parts-db } }, { http: { url: \"http://127.0.0.1:1/?t=${env:BLACKSTART_TEST_NEVER_SET_TOKEN}\" } } ]\n",
    );
    assert!(yaml.contains("NEVER_SET"));
    let fake = crate::fixtures::plant_with(&yaml, deployments);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, has_reason).await;
    assert_eq!(run.phase(), "Pending");
    let reason = run.status.and_then(|s| s.reason).unwrap_or_default();
    assert!(
        reason.contains("${env:BLACKSTART_TEST_NEVER_SET_TOKEN}, which is not set in the operator's environment; nothing was started"),
        "{reason}"
    );
    assert_eq!(replicas(&fake, "parts-db"), 0, "nothing was scaled");
    assert!(
        fake.events()
            .iter()
            .any(|(r, n)| r == "PlaybookNotUsable" && n.contains("NEVER_SET"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_in_the_spec_holds_the_run_and_unpausing_resumes_it() {
    let fake = plant("{}", false);
    fake.patch_spec("run-1", json!({"paused": true}));
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, |r| !journal(r).is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replicas(&fake, "parts-db"),
        0,
        "a paused run starts nothing"
    );
    assert_eq!(run.phase(), "Pending");
    fake.patch_spec("run-1", json!({"paused": false}));
    reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_in_the_spec_stops_what_the_run_started() {
    let fake = plant("{ approvals: [incident-commander] }", false);
    let ctx = fake.context();
    at_the_gate(&fake, &ctx).await;
    assert_eq!(replicas(&fake, "parts-db"), 1);
    fake.patch_spec("run-1", json!({"rollback": true, "rollbackBy": "alice"}));
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("RolledBack")).await;
    assert_eq!(replicas(&fake, "parts-db"), 0);
    assert_eq!(stage_phase(&run, "apps"), "Skipped");
    // Journaled as what it is: a rollback, by whoever asked; not a pause.
    let records = journal(&run);
    assert!(
        !records.iter().any(|r| matches!(
            &r.event,
            Event::Run {
                phase: blackstart_engine::RunPhase::Paused,
                ..
            }
        )),
        "{records:#?}"
    );
    let begun = records.iter().find_map(|r| match &r.event {
        Event::RollbackBegun { by, reason, .. } => Some((by.clone(), reason.clone())),
        _ => None,
    });
    assert_eq!(
        begun,
        Some((
            Some("alice".to_owned()),
            "rollback requested in the RestartRun's spec".to_owned()
        ))
    );
}

/// The README's kubectl command for an approval, a JSON Patch that adds to
/// `/spec/approvals/-`, works on a fresh run (the CRD defaults the list to
/// `[]`) and keeps the approvals given before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_kubectl_approval_patch_works_on_a_fresh_run_and_keeps_earlier_ones() {
    use kube::api::{Patch, PatchParams};
    let fake = plant("{ approvals: [incident-commander] }", false);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("the README");
    let documented = r#"'[{"op":"add","path":"/spec/approvals/-","value":{"stage":"data","by":"alice","role":"incident-commander"}}]'"#;
    assert!(
        readme.contains(documented),
        "the README shows the patch tested here"
    );
    let ctx = fake.context();
    // An approval counts only once the gate waits: patched then.
    at_the_gate(&fake, &ctx).await;
    assert!(fake.run("run-1").spec.approvals.is_empty());
    let runs = fake.runs(&ctx);
    let add = |by: &str| -> json_patch::Patch {
        serde_json::from_value(json!([{"op": "add", "path": "/spec/approvals/-", "value": {"stage": "data", "by": by, "role": "incident-commander"}}]))
            .expect("a JSON Patch")
    };
    for by in ["alice", "bob"] {
        runs.patch(
            "run-1",
            &PatchParams::default(),
            &Patch::Json::<()>(add(by)),
        )
        .await
        .expect("the patch applies");
    }
    let approvals = fake.run("run-1").spec.approvals;
    let by: Vec<&str> = approvals.iter().map(|a| a.by.as_str()).collect();
    assert_eq!(by, ["alice", "bob"]);
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;
    healthy_means_running(&fake, &run);
}

/// `deny --k8s`: a denial checked as the operator will, written to
/// spec.denials, fails the gate; its onFailure (here rollback of the first
/// stage's default, pause) applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_in_the_spec_fails_the_gate() {
    let fake = plant("{ approvals: [incident-commander] }", false);
    let ctx = fake.context();
    at_the_gate(&fake, &ctx).await;
    let d = blackstart_engine::decision::Decision {
        role: Some("incident-commander".into()),
        reason: Some("EDR alerts on parts-db".into()),
        ..blackstart_engine::decision::Decision::new(
            blackstart_engine::decision::Kind::Deny,
            "data",
            "carol",
        )
    };
    crate::steer::decide(ctx.client.clone(), crate::fixtures::NS, "run-1", &d)
        .await
        .expect("the denial is written");
    assert_eq!(fake.run("run-1").spec.denials.len(), 1);
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Paused")).await;
    assert_eq!(stage_phase(&run, "data"), "Failed");
    assert!(
        run.status
            .as_ref()
            .and_then(|s| s.reason.clone())
            .is_some_and(
                |r| r.contains("denied by carol as incident-commander: EDR alerts on parts-db")
            ),
        "{:?}",
        run.status.as_ref().and_then(|s| s.reason.clone())
    );
    event_published(&fake, "Denied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_pause_is_written_into_the_spec() {
    // The apps stage's gate pauses instead of rolling back.
    let fake = FakeApi::default();
    let (yaml, deployments) = crate::fixtures::plant_playbook("{}", true);
    let yaml = yaml.replace(
        "gate: { onFailure: rollback }",
        "gate: { onFailure: pause }",
    );
    fake.create("playbooks", crate::fixtures::playbook(&yaml));
    for d in deployments {
        fake.create("deployments", d);
    }
    fake.create(
        "restartruns",
        crate::fixtures::restart_run("run-1", "plant"),
    );
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, |r| r.spec.paused).await;
    assert_eq!(run.phase(), "Paused");
    assert_eq!(condition(&run, "Paused"), "True");
    ctx.abandon();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_run_stops_its_driver_and_releases_the_finalizer() {
    let fake = plant("{ approvals: [incident-commander] }", false);
    let ctx = fake.context();
    at_the_gate(&fake, &ctx).await;
    assert!(ctx.driving("plant/run-1"));
    // What the API server does on `kubectl delete`: mark it, keep it.
    let mut run = fake.run("run-1");
    run.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-11-22T10:05:00Z".parse().expect("a timestamp"),
    ));
    let action = crate::controller::reconcile(std::sync::Arc::new(run), ctx.clone())
        .await
        .expect("cleanup succeeds");
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(!ctx.driving("plant/run-1"));
    let finalizers = fake.run("run-1").metadata.finalizers.unwrap_or_default();
    assert!(finalizers.is_empty(), "{finalizers:?}");
    assert_eq!(
        replicas(&fake, "parts-db"),
        1,
        "deleting a run does not undo it"
    );
    // The journal says why the run stopped: not a commander's pause.
    let last = journal(&fake.run("run-1"))
        .last()
        .map(|r| r.event.clone())
        .expect("a journal");
    assert!(
        matches!(&last, Event::Run { phase: blackstart_engine::RunPhase::Paused, reason: Some(r) } if r.starts_with("the RestartRun was deleted")),
        "{last:?}"
    );
}

/// Kubernetes folds Events of the same type, reason and action into one
/// series keeping the first note; each stage's transitions stay apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_stage_has_its_own_events() {
    let fake = plant("{}", false);
    let ctx = fake.context();
    reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;
    event_published(&fake, "RunSucceeded").await;
    let events = fake.events();
    for reason in ["StageStarted", "GateReached", "GatePassed"] {
        let notes: Vec<&str> = events
            .iter()
            .filter(|(r, _)| r == reason)
            .map(|(_, n)| n.as_str())
            .collect();
        assert_eq!(notes.len(), 2, "{reason}: {events:#?}");
        assert!(notes[0].contains("stage data"), "{notes:?}");
        assert!(notes[1].contains("stage apps"), "{notes:?}");
    }
}

#[test]
fn the_crds_are_structural() {
    for crd in crate::crd::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("every version has a schema");
            let value = serde_json::to_value(schema).expect("a schema serializes");
            let mut problems = Vec::new();
            structural(&value, "", &mut problems);
            assert!(problems.is_empty(), "{name}: {problems:#?}");
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
                    || name.starts_with("playbooks"),
                "{name} has a status subresource"
            );
        }
    }
}

/// The rules of a structural schema that a derived one can break: a type
/// everywhere (unless unknown fields are kept), no `$ref`, no
/// `additionalProperties: false`, not both `properties` and
/// `additionalProperties`, and nothing but `required` (or hoisted
/// properties without types) under `oneOf`/`anyOf`.
fn structural(node: &serde_json::Value, at: &str, problems: &mut Vec<String>) {
    let Some(map) = node.as_object() else {
        return;
    };
    let keeps_unknown = map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || map.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if !map.contains_key("type") && !keeps_unknown {
        problems.push(format!("{at}: no type"));
    }
    if map.contains_key("$ref") {
        problems.push(format!("{at}: $ref"));
    }
    if map.get("additionalProperties") == Some(&json!(false)) {
        problems.push(format!("{at}: additionalProperties: false"));
    }
    if map.contains_key("properties") && map.contains_key("additionalProperties") {
        problems.push(format!("{at}: both properties and additionalProperties"));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for (i, sub) in map
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let allowed = sub
                .as_object()
                .is_some_and(|m| m.keys().all(|k| k == "required"));
            if !allowed {
                problems.push(format!("{at}/{key}/{i}: more than `required`: {sub}"));
            }
        }
    }
    if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
        for (name, sub) in props {
            structural(sub, &format!("{at}.{name}"), problems);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = map.get(key) {
            structural(sub, &format!("{at}[{key}]"), problems);
        }
    }
}

fn approval(stage: &str, by: &str, role: Option<String>) -> blackstart_engine::decision::Decision {
    use blackstart_engine::decision::{Decision, Kind};
    Decision {
        role,
        ..Decision::new(Kind::Approve, stage, by)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_checks_the_run_then_appends_to_the_spec() {
    let fake = plant("{ approvals: [incident-commander] }", false);
    let ctx = fake.context();
    at_the_gate(&fake, &ctx).await;
    let client = ctx.client.clone();
    let err = crate::steer::decide(
        client.clone(),
        crate::fixtures::NS,
        "run-1",
        &approval("dta", "alice", None),
    )
    .await
    .expect_err("an unknown stage is refused");
    assert_eq!(
        err.to_string(),
        "run run-1 has no stage `dta`; its stages are: data, apps"
    );
    let err = crate::steer::decide(
        client.clone(),
        crate::fixtures::NS,
        "run-1",
        &approval("data", "alice", Some("cfo".into())),
    )
    .await
    .expect_err("a role the gate does not need is refused");
    assert!(
        err.to_string().contains("does not need approval by `cfo`"),
        "{err}"
    );
    // `confirm --k8s` goes through the same checks: parts-db waits for no
    // confirmation.
    let confirm = blackstart_engine::decision::Decision::new(
        blackstart_engine::decision::Kind::Confirm,
        "parts-db",
        "alice",
    );
    let err = crate::steer::decide(client.clone(), crate::fixtures::NS, "run-1", &confirm)
        .await
        .expect_err("a system that waits for nothing is not confirmed");
    assert!(
        err.to_string()
            .contains("`parts-db` is Healthy and waits for no confirmation"),
        "{err}"
    );
    assert!(fake.run("run-1").spec.confirmations.is_empty());
    let err = crate::steer::decide(
        client.clone(),
        crate::fixtures::NS,
        "run-9",
        &approval("data", "alice", None),
    )
    .await
    .expect_err("an unknown run is refused");
    assert!(matches!(err, crate::steer::SteerError::NotFound { .. }));

    let role = crate::steer::decide(
        client.clone(),
        crate::fixtures::NS,
        "run-1",
        &approval("data", "alice", None),
    )
    .await
    .expect("approved");
    assert_eq!(role.as_deref(), Some("incident-commander"));
    crate::steer::decide(
        client,
        crate::fixtures::NS,
        "run-1",
        &approval("data", "bob", None),
    )
    .await
    .expect("a second approval appends");
    let approvals = fake.run("run-1").spec.approvals;
    assert_eq!(
        approvals.iter().map(|a| a.by.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;
    let records = journal(&run);
    let approved: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Approved { by, .. } => Some(by.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(approved, ["alice", "bob"]);
}

/// `kubectl apply -f playbooks/x.yaml` must work: every example playbook
/// reads as the Playbook resource, and planning the resource gives the
/// plan the CLI gives for the file, to the hash.
#[test]
fn every_example_playbook_is_a_playbook_resource_with_the_same_plan() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<std::path::PathBuf> = ["playbooks", "manifests/examples"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).expect("the directory exists"))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("kind: Playbook")))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let resource: crate::crd::Playbook = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a Playbook resource: {e}", path.display()));
        let from_resource = crate::controller::plan_playbook(&resource)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let from_file = blackstart_model::Plan::build(
            blackstart_model::load(text.as_bytes()).expect("the example is valid"),
        );
        assert_eq!(
            from_resource.playbook_hash,
            from_file.playbook_hash,
            "{}",
            path.display()
        );
        assert_eq!(from_resource, from_file, "{}", path.display());
    }
}

#[test]
fn a_rollout_is_ready_only_when_observed_updated_and_available() {
    use blackstart_engine::step::kubernetes::judge;
    use blackstart_model::playbook::{Workload, WorkloadKind};
    let w = Workload {
        kind: WorkloadKind::Deployment,
        name: "portal".into(),
        namespace: Some("dealers".into()),
    };
    let with =
        |replicas: i64, generation: i64, status: serde_json::Value| -> kube::api::DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "portal", "generation": generation},
                "spec": {"replicas": replicas},
                "status": status,
            }))
            .expect("a valid object")
        };
    let obj = |generation: i64, status: serde_json::Value| with(3, generation, status);
    let full = json!({"observedGeneration": 5, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3});
    assert!(judge(&w, &obj(5, full.clone()), None).ok);
    assert!(judge(&w, &obj(5, full.clone()), Some(3)).ok);
    // At 0 desired replicas every count agrees, and nothing runs.
    let zero = with(0, 5, json!({"observedGeneration": 5}));
    let outcome = judge(&w, &zero, None);
    assert!(!outcome.ok);
    assert_eq!(
        outcome.detail,
        "Deployment dealers/portal: scaled to 0 replicas: nothing runs, so it is not ready"
    );
    // Ready, but not at the count the start set: someone scaled it since.
    let outcome = judge(&w, &obj(5, full.clone()), Some(5));
    assert!(!outcome.ok);
    assert_eq!(
        outcome.detail,
        "Deployment dealers/portal: 3 replicas desired where its start set 5: it does not run as started"
    );
    let cases = [
        (
            obj(6, full),
            "its controller has not seen the latest spec yet (generation 6, observed 5)",
        ),
        (
            obj(
                5,
                json!({"observedGeneration": 5, "replicas": 4, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}),
            ),
            "replicas of an older spec still running: 1",
        ),
        (
            obj(
                5,
                json!({"observedGeneration": 5, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3}),
            ),
            "2 of 3 replicas updated",
        ),
        (
            obj(
                5,
                json!({"observedGeneration": 5, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 1}),
            ),
            "3 of 3 replicas ready, 1 available",
        ),
    ];
    for (o, want) in cases {
        let outcome = judge(&w, &o, None);
        assert!(!outcome.ok);
        assert_eq!(outcome.detail, format!("Deployment dealers/portal: {want}"));
    }
}

/// GETs `path` from the metrics server over a real socket.
async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut response = String::new();
    tokio::time::timeout(LIMIT, stream.read_to_string(&mut response))
        .await
        .expect("answers in time")
        .expect("reads");
    response
}

#[tokio::test]
async fn metrics_and_health_are_served_over_http() {
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    metrics.set_phase("plant/run-1", "Running");
    metrics.set_phase("plant/run-2", "Running");
    metrics.set_phase("plant/run-1", "Succeeded");
    metrics.probe_failures("plant").inc();
    metrics.stage_finished("plant", 42.0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(crate::metrics::serve(
        listener,
        std::sync::Arc::clone(&metrics),
    ));

    let body = get(addr, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("application/openmetrics-text"), "{body}");
    for line in [
        "blackstart_runs{phase=\"Running\"} 1",
        "blackstart_runs{phase=\"Succeeded\"} 1",
        "blackstart_runs{phase=\"Failed\"} 0",
        "blackstart_probe_failures_total{playbook=\"plant\"} 1",
        "blackstart_stage_duration_seconds_count{playbook=\"plant\"} 1",
        "blackstart_stage_duration_seconds_bucket{le=\"64.0\",playbook=\"plant\"} 1",
    ] {
        assert!(body.contains(line), "no `{line}` in {body}");
    }
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    let ready = get(addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("standby"),
        "{ready}"
    );
    metrics
        .leading
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(get(addr, "/readyz").await.contains("leading"));
    assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_steps_scale_restart_restore_and_report_api_errors() {
    use blackstart_engine::step::{StepContext, kubernetes::Cluster, run_action, run_check};
    use blackstart_model::playbook::{Action, Check, KubernetesAction, Workload, WorkloadKind};
    let fake = FakeApi::default();
    let mut db = crate::fixtures::deployment("parts-db", false);
    db["spec"]["replicas"] = json!(2);
    fake.create("deployments", db);
    let cx = StepContext::new(blackstart_engine::secrets::Secrets::from_env(), LIMIT)
        .expect("a step context")
        .with_cluster(Cluster {
            client: fake.client(),
            namespace: crate::fixtures::NS.into(),
        });
    let action = |replicas: Option<u32>, rollout_restart: bool, name: &str| {
        Action::Kubernetes(KubernetesAction {
            kind: WorkloadKind::Deployment,
            name: name.into(),
            namespace: None,
            replicas,
            rollout_restart,
        })
    };
    let annotation = |f: &FakeApi| {
        f.get("deployments", "parts-db")["metadata"]["annotations"]["blackstart.dev/replicas-before"].clone()
    };

    let outcome = run_action(&action(Some(5), false, "parts-db"), &cx).await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(replicas(&fake, "parts-db"), 5);
    assert_eq!(annotation(&fake), json!("2"));
    // A start repeated (a resume) keeps the first count.
    assert!(
        run_action(&action(Some(6), false, "parts-db"), &cx)
            .await
            .ok
    );
    assert_eq!(annotation(&fake), json!("2"));

    let outcome = run_action(&action(None, true, "parts-db"), &cx).await;
    assert_eq!(outcome.detail, "rollout restart Deployment parts-db");
    let restarted = &fake.get("deployments", "parts-db")["spec"]["template"]["metadata"]["annotations"]
        ["kubectl.kubernetes.io/restartedAt"];
    assert!(
        restarted.as_str().is_some_and(|t| t.starts_with("20")),
        "{restarted}"
    );

    let ready = Check::Kubernetes(Workload {
        kind: WorkloadKind::Deployment,
        name: "parts-db".into(),
        namespace: None,
    });
    let outcome = run_check(&ready, &cx).await;
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.detail, "Deployment parts-db: 6 of 6 replicas ready");

    // The stop: back to what it was before blackstart scaled it.
    assert!(run_action(&action(None, false, "parts-db"), &cx).await.ok);
    assert_eq!(replicas(&fake, "parts-db"), 2);
    assert_eq!(annotation(&fake), serde_json::Value::Null);

    let missing = run_action(&action(Some(1), false, "nowhere"), &cx).await;
    assert!(!missing.ok);
    assert!(
        missing.detail.starts_with("Deployment nowhere: "),
        "{}",
        missing.detail
    );
    assert!(missing.detail.ends_with("(404)"), "{}", missing.detail);

    let no_cluster = StepContext::new(blackstart_engine::secrets::Secrets::from_env(), LIMIT)
        .expect("a step context");
    let outcome = run_check(&ready, &no_cluster).await;
    assert!(!outcome.ok);
    assert!(
        outcome.detail.contains("no Kubernetes cluster to talk to"),
        "{}",
        outcome.detail
    );
}

#[test]
fn a_confirmation_in_the_spec_is_taken_once_even_across_an_operator_restart() {
    use crate::crd::{ConfirmationEntry, RestartRunSpec};
    use blackstart_engine::RequestSource;
    let spec = RestartRunSpec {
        confirmations: vec![
            ConfirmationEntry {
                system: "plc".into(),
                by: "olga".into(),
                at: None,
                signed: Default::default(),
            },
            ConfirmationEntry {
                system: "plc".into(),
                by: "olga".into(),
                at: None,
                signed: Default::default(),
            },
        ],
        ..RestartRunSpec::default()
    };
    let (tx, rx) = tokio::sync::watch::channel(spec.clone());
    let confirmations = |source: &crate::requests::SpecRequests| {
        source
            .pending()
            .expect("pending requests")
            .into_iter()
            .filter(|(_, r)| matches!(r, Ok(blackstart_engine::Request::Confirm { .. })))
            .map(|(token, _)| token)
            .collect::<Vec<_>>()
    };
    // A fresh operator, nothing recorded: both are offered.
    let source = crate::requests::SpecRequests::new(rx.clone(), &[]);
    let tokens = confirmations(&source);
    assert_eq!(tokens.len(), 2);
    source.ack(&tokens[0]).expect("acked");
    assert_eq!(confirmations(&source), tokens[1..]);

    // A restarted operator whose journal recorded one (the start's): only
    // the second (the manual stop's) is still offered.
    let started = Record::next(
        None,
        Event::Run {
            phase: blackstart_engine::RunPhase::Running,
            reason: None,
        },
    );
    let confirmed = Record::next(
        Some(&started),
        Event::Confirmed {
            system: "plc".into(),
            by: "olga".into(),
            proof: Default::default(),
        },
    );
    let restarted = crate::requests::SpecRequests::new(rx, &[started, confirmed]);
    assert_eq!(confirmations(&restarted), tokens[1..]);
    // A confirmation added later is offered too.
    tx.send_modify(|s| {
        s.confirmations.push(ConfirmationEntry {
            system: "gw".into(),
            by: "ali".into(),
            at: None,
            signed: Default::default(),
        })
    });
    assert_eq!(confirmations(&restarted).len(), 2);
}

/// Every system the journal calls Healthy at the end runs at the replicas
/// its start set: the check each scenario makes that "Healthy" was true.
fn healthy_means_running(fake: &FakeApi, run: &RestartRun) {
    let state = blackstart_engine::RunState::fold(journal(run).iter().map(|r| (r.seq, &r.event)))
        .expect("the journal folds");
    let (_, deployments) = crate::fixtures::plant_playbook("{}", false);
    let set = |id: &str| match id {
        "parts-db" => 1,
        _ => 2,
    };
    for s in &state.systems {
        if s.phase == blackstart_engine::SystemPhase::Healthy {
            assert!(deployments.iter().any(|d| d["metadata"]["name"] == s.id));
            let d = fake.get("deployments", &s.id);
            assert_eq!(
                d["spec"]["replicas"],
                json!(set(&s.id)),
                "{} is Healthy",
                s.id
            );
            assert_eq!(
                d["status"]["readyReplicas"],
                json!(set(&s.id)),
                "{} is Healthy",
                s.id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_on_a_scale_patch_is_retried_not_rolled_back() {
    let fake = plant("{}", false);
    fake.fail_next(Method::PATCH, "/deployments/parts-api", 500, 2);
    fake.fail_next(Method::GET, "/deployments/parts-db", 503, 1);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;

    healthy_means_running(&fake, &run);
    // Summed up in one line, not one record per retry.
    let ended: Vec<String> = journal(&run)
        .iter()
        .filter_map(|r| match &r.event {
            Event::AttemptEnded {
                system,
                reason: Some(reason),
                ..
            } if system == "parts-api" => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        ended,
        ["scale Deployment parts-api to 2 (after 2 retries of transient API errors)"]
    );
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains("blackstart_api_retries_total{playbook=\"plant\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_api_error_fails_at_once_naming_the_object_and_verb() {
    let fake = plant("{}", false);
    fake.fail_next(Method::PATCH, "/deployments/parts-db", 403, 1);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, |r| {
        r.phase() == "RolledBack" || r.phase() == "Paused"
    })
    .await;
    let patches = fake
        .log()
        .iter()
        .filter(|l| l.method == Method::PATCH && l.path.ends_with("/deployments/parts-db"))
        .filter(|l| l.status == 403)
        .count();
    assert_eq!(patches, 1, "a 403 is not asked again");
    let failed = journal(&run).iter().find_map(|r| match &r.event {
        Event::System {
            system,
            phase: blackstart_engine::SystemPhase::Failed,
            reason,
            ..
        } if system == "parts-db" => reason.clone(),
        _ => None,
    });
    let failed = failed.expect("parts-db failed");
    assert!(
        failed.contains("Deployment parts-db: patch failed: injected fault on")
            && failed.ends_with("(403)"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_answered_500_are_retried_and_one_that_landed_is_not_written_twice() {
    let fake = plant("{}", false);
    fake.fail_next(Method::PATCH, "/restartruns/run-1/status", 500, 2);
    fake.fail_next_after_applying(Method::PATCH, "/restartruns/run-1/status", 503, 2);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;
    Record::verify_chain(&journal(&run)).expect("no record lost or doubled");
    let statuses: Vec<u16> = fake
        .log()
        .iter()
        .filter(|l| l.method == Method::PATCH && l.path.ends_with("/restartruns/run-1/status"))
        .map(|l| l.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s >= 500).count(),
        4,
        "{statuses:?}"
    );
    healthy_means_running(&fake, &run);
}

/// The false green of an earlier release: a readiness check found a
/// workload at 0 desired replicas "ready" (0 of 0), and a system that
/// never ran was recorded Healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_at_zero_replicas_is_never_healthy() {
    let yaml = r#"apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: plant }
spec:
  defaults:
    startTimeout: 1s
    probe: { interval: 50ms, timeout: 1s }
  sites: [ { id: engine-plant } ]
  systems:
    - id: parts-db
      site: engine-plant
      start: { kubernetes: { kind: Deployment, name: parts-db, rolloutRestart: true } }
      health: [ { kubernetes: { kind: Deployment, name: parts-db } } ]
  stages:
    - { name: data, select: { sites: [engine-plant] }, gate: { onFailure: pause } }
"#;
    let fake =
        crate::fixtures::plant_with(yaml, vec![crate::fixtures::deployment("parts-db", false)]);
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Paused")).await;
    let records = journal(&run);
    assert!(
        !records.iter().any(|r| matches!(
            &r.event,
            Event::System {
                phase: blackstart_engine::SystemPhase::Healthy,
                ..
            }
        )),
        "{records:#?}"
    );
    let failed = records.iter().find_map(|r| match &r.event {
        Event::System {
            phase: blackstart_engine::SystemPhase::Failed,
            reason: Some(reason),
            ..
        } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        failed
            .as_deref()
            .is_some_and(|r| r.contains("scaled to 0 replicas: nothing runs")),
        "{failed:?}"
    );
}

/// The operator is killed while a scale PATCH is in flight (it never
/// landed). The next operator drives the start again, says so in the
/// journal, and calls the system Healthy only at the replicas it set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_cut_short_by_a_crash_is_driven_again_before_it_is_probed() {
    let fake = plant("{}", false);
    fake.hang_patches(Some("/deployments/parts-db"));
    let first = fake.context();
    reconcile_until(&fake, &first, "run-1", LIMIT, |_| {
        fake.log()
            .iter()
            .any(|l| l.status == 0 && l.path.ends_with("/deployments/parts-db"))
    })
    .await;
    first.abandon();
    drop(first);
    assert_eq!(replicas(&fake, "parts-db"), 0, "the PATCH never landed");
    fake.hang_patches(None);

    let second = fake.context();
    let run = reconcile_until(&fake, &second, "run-1", LIMIT, phase_is("Succeeded")).await;
    let redriven = journal(&run).iter().any(|r| {
        matches!(&r.event, Event::System { system, phase: blackstart_engine::SystemPhase::Starting, reason: Some(reason), .. }
            if system == "parts-db" && reason.starts_with("driven again"))
    });
    assert!(redriven, "{:#?}", journal(&run));
    healthy_means_running(&fake, &run);
    Record::verify_chain(&journal(&run)).expect("one journal across both operators");
}

/// A leader stops when it cannot confirm it holds the Lease: another
/// replica holds it, or no read succeeded for the window (renewals fail
/// too, and the Lease may expire under it). While it holds, it goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stops_when_it_cannot_confirm_its_lease() {
    use k8s_openapi::api::coordination::v1::Lease;
    let lease = |holder: &str| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": crate::NAME},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30},
        })
    };
    let (every, within) = (Duration::from_millis(20), Duration::from_millis(300));
    let held = |fake: &FakeApi| {
        let leases: kube::Api<Lease> = kube::Api::namespaced(fake.client(), crate::fixtures::NS);
        crate::still_held(leases, "replica-a".into(), every, within)
    };

    let fake = FakeApi::default();
    fake.create("leases", lease("replica-a"));
    assert!(
        tokio::time::timeout(Duration::from_millis(600), held(&fake))
            .await
            .is_err(),
        "it holds the Lease, so it goes on"
    );

    fake.create("leases", lease("replica-b"));
    tokio::time::timeout(Duration::from_secs(5), held(&fake))
        .await
        .expect("another replica holds the Lease: stop");

    let fake = FakeApi::default();
    fake.create("leases", lease("replica-a"));
    fake.fail_next(Method::GET, "/leases/blackstart-operator", 503, 1000);
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), held(&fake))
        .await
        .expect("the Lease cannot be read: stop within the window");
    assert!(started.elapsed() >= within);
}

/// Signs `text` with a test key (`tests/keys/`) through `ssh-keygen -Y
/// sign`, as `--key` does.
fn ssh_sign(name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/keys");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join(name);
    std::fs::copy(keys.join(name), &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = dir.path().join("decision");
    std::fs::write(&file, text).unwrap();
    let signed = std::process::Command::new("ssh-keygen")
        .args(["-q", "-Y", "sign", "-n", "blackstart", "-f"])
        .arg(&key)
        .arg(&file)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    std::fs::read_to_string(dir.path().join("decision.sig")).unwrap()
}

/// The plant playbook with roles: alice (an incident commander) has a key
/// enrolled, carol (an auditor) has none.
fn plant_with_people() -> FakeApi {
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/keys");
    let alice_pub = std::fs::read_to_string(keys.join("alice.pub")).unwrap();
    let (yaml, deployments) =
        crate::fixtures::plant_playbook("{ approvals: [incident-commander] }", false);
    let yaml = yaml.replace(
        "  sites:\n",
        &format!(
            "  roles:\n    - {{ name: incident-commander, members: [ {{ name: alice, key: \"{}\" }} ] }}\n    - {{ name: auditor, members: [ {{ name: carol }} ] }}\n  sites:\n",
            alice_pub.trim()
        ),
    );
    crate::fixtures::plant_with(&yaml, deployments)
}

/// Pause and rollback through the spec are decisions too: with the
/// playbook's people named, an unnamed or unsigned rollback is refused
/// (journaled, an Event) and changes nothing; the signed pause and
/// rollback that `pause --k8s` and `rollback --k8s` write are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_rollback_in_the_spec_are_checked_and_signed_decisions() {
    use blackstart_engine::decision::{self, Decision, Kind};
    let fake = plant_with_people();
    let ctx = fake.context();
    at_the_gate(&fake, &ctx).await;
    let refusals = |r: &RestartRun| {
        journal(r)
            .into_iter()
            .filter_map(|rec| match rec.event {
                Event::Refused {
                    decision, reason, ..
                } => Some(format!("{decision}: {reason}")),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    fake.patch_spec("run-1", json!({"rollback": true}));
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, |r| !refusals(r).is_empty()).await;
    assert!(
        refusals(&run)[0].contains("rollback:  is a member of no role"),
        "{:?}",
        refusals(&run)
    );
    event_published(&fake, "DecisionRefused").await;
    fake.patch_spec("run-1", json!({"rollback": true, "rollbackBy": "alice"}));
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, |r| refusals(r).len() == 2).await;
    assert!(
        refusals(&run)[1].contains("must be signed"),
        "{:?}",
        refusals(&run)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        replicas(&fake, "parts-db"),
        1,
        "a refused rollback stops nothing"
    );
    assert_eq!(stage_phase(&run, "data"), "Gate");
    fake.patch_spec("run-1", json!({"rollback": false, "rollbackBy": null}));

    // Signed, as `pause --k8s --key` writes it: the run pauses, named.
    let client = ctx.client.clone();
    let sign = |d: Decision| {
        let client = client.clone();
        async move {
            let (plan, state) =
                crate::steer::plan_and_state(client.clone(), crate::fixtures::NS, "run-1")
                    .await
                    .expect("the run");
            let d = Decision {
                role: Some("incident-commander".into()),
                ..d
            };
            let signature = ssh_sign(
                "alice",
                &decision::message("run-1", &plan.playbook_hash, &d, state.head),
            );
            let mut d = d;
            d.proof.wait = Some(state.head);
            d.proof.signature = Some(signature);
            crate::steer::decide(client, crate::fixtures::NS, "run-1", &d)
                .await
                .expect("taken by the same checks the operator makes")
        }
    };
    let pause = Decision {
        reason: Some("EDR alert".into()),
        ..Decision::new(Kind::Pause, "", "alice")
    };
    sign(pause).await;
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Paused")).await;
    assert_eq!(
        run.status
            .as_ref()
            .and_then(|s| s.reason.clone())
            .as_deref(),
        Some("paused by alice: EDR alert")
    );
    sign(Decision::new(Kind::Rollback, "", "alice")).await;
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("RolledBack")).await;
    assert_eq!(replicas(&fake, "parts-db"), 0);
    let records = journal(&run);
    let asked: Vec<&str> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::PauseRequested { proof, .. } if proof.key.is_some() => Some("pause"),
            Event::RollbackRequested { proof, .. } if proof.key.is_some() => Some("rollback"),
            _ => None,
        })
        .collect();
    assert_eq!(asked, ["pause", "rollback"], "each taken once, signed");
    let (plan, _) = crate::steer::plan_and_state(ctx.client.clone(), crate::fixtures::NS, "run-1")
        .await
        .expect("the run");
    for r in &records {
        decision::recheck(&plan, "run-1", false, &[], &r.event)
            .expect("every decision verifies again");
    }
}

/// The operator takes the same decisions as the CLI: with roles and keys
/// enrolled, an unsigned approval in the spec is refused (journaled, and an
/// Event says why), a signed one is taken, and its signature verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_approval_in_the_spec_is_taken_and_an_unsigned_one_refused() {
    use blackstart_engine::decision::{self, Decision, Kind};
    let fake = plant_with_people();
    let ctx = fake.context();
    at_the_gate(&fake, &ctx).await;

    // Unsigned, from a member whose key is enrolled: refused, with an Event.
    fake.patch_spec(
        "run-1",
        json!({"approvals": [{"stage": "data", "by": "alice", "role": "incident-commander"}]}),
    );
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, |r| {
        journal(r)
            .iter()
            .any(|rec| matches!(rec.event, Event::Refused { .. }))
    })
    .await;
    event_published(&fake, "DecisionRefused").await;
    assert_eq!(stage_phase(&run, "data"), "Gate");
    let refused = reconcile_until(&fake, &ctx, "run-1", LIMIT, |r| {
        condition(r, "DecisionRefused") == "True"
    })
    .await;
    let message = refused
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "DecisionRefused"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("by alice refused"), "{message}");
    let first_refusal = journal(&run).into_iter().find_map(|r| match r.event {
        Event::Refused { reason, .. } => Some(reason),
        _ => None,
    });
    assert!(
        first_refusal
            .as_deref()
            .is_some_and(|r| r.contains("must be signed")),
        "{first_refusal:?}"
    );

    // Signed with ssh-keygen over the decision's text, as `approve --k8s
    // --key` does.
    let (plan, state) =
        crate::steer::plan_and_state(ctx.client.clone(), crate::fixtures::NS, "run-1")
            .await
            .expect("the run");
    let d = Decision {
        role: Some("incident-commander".into()),
        ..Decision::new(Kind::Approve, "data", "alice")
    };
    let wait = state
        .stage("data")
        .and_then(|s| s.gate_since)
        .expect("the gate waits");
    let signature = ssh_sign(
        "alice",
        &decision::message("run-1", &plan.playbook_hash, &d, wait),
    );
    fake.patch_spec(
        "run-1",
        json!({"approvals": [
            {"stage": "data", "by": "alice", "role": "incident-commander"},
            {"stage": "data", "by": "alice", "role": "incident-commander", "wait": wait, "signature": signature},
        ]}),
    );
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;
    assert_eq!(
        condition(&run, "DecisionRefused"),
        "False",
        "a taken decision clears it"
    );
    let records = journal(&run);
    let approved = records.iter().find_map(|r| match &r.event {
        Event::Approved { proof, .. } => Some(proof.clone()),
        _ => None,
    });
    assert!(approved.is_some_and(|p| p.key.is_some_and(|k| k.starts_with("SHA256:"))));
    for r in &records {
        decision::recheck(&plan, "run-1", false, &[], &r.event)
            .expect("every decision verifies again");
    }
    healthy_means_running(&fake, &run);
}

/// The plant playbook with its site reached through the kubeconfig in the
/// Secret `plant-kubeconfig`.
fn plant_behind_a_secret() -> FakeApi {
    let (yaml, deployments) = crate::fixtures::plant_playbook("{}", false);
    let yaml = yaml.replace(
        "    - id: engine-plant\n",
        "    - id: engine-plant\n      connect: { kubernetes: { secretRef: plant-kubeconfig } }\n",
    );
    assert!(yaml.contains("secretRef"));
    crate::fixtures::plant_with(&yaml, deployments)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_steps_go_to_the_cluster_in_its_secret_and_nowhere_else() {
    let site = blackstart_tests::kube_api::Api::start();
    let fake = plant_behind_a_secret();
    let kubeconfig = site.kubeconfig("plant-prod", crate::fixtures::NS);
    // Serialized by k8s-openapi, which encodes the data as the API server does.
    let secret = k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("plant-kubeconfig".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "kubeconfig".to_owned(),
                k8s_openapi::ByteString(kubeconfig.into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    };
    fake.create("secrets", serde_json::to_value(secret).unwrap_or_default());
    let ctx = fake.context();
    reconcile_until(&fake, &ctx, "run-1", LIMIT, phase_is("Succeeded")).await;
    assert_eq!(site.replicas("parts-db"), Some(1));
    assert_eq!(site.replicas("dealer-portal"), Some(2));
    // The operator's own cluster was read for the Secret, never scaled.
    assert_eq!(replicas(&fake, "parts-db"), 0);
    assert!(
        fake.log()
            .iter()
            .all(|l| !(l.method == Method::PATCH && l.path.contains("/deployments/"))),
        "a step went to the operator's cluster"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_missing_secret_is_reported_before_anything_starts() {
    let fake = plant_behind_a_secret();
    let ctx = fake.context();
    let run = reconcile_until(&fake, &ctx, "run-1", LIMIT, has_reason).await;
    assert_eq!(run.phase(), "Pending");
    let reason = run.status.and_then(|s| s.reason).unwrap_or_default();
    assert!(
        reason.contains("site `engine-plant`: cannot read Secret plant/plant-kubeconfig"),
        "{reason}"
    );
    assert!(
        journal(&fake.run("run-1")).is_empty(),
        "the run was started"
    );
}

#[test]
fn a_playbook_with_ssh_sites_needs_an_ssh_client_on_the_operators_path() {
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMdBAnvXRz4FgxmUlVadVsuePkBOXOx7CMuLOVeBIS8+ h";
    let (yaml, _) = crate::fixtures::plant_playbook("{}", false);
    let plan = |yaml: &str| {
        blackstart_model::Plan::build(blackstart_model::load(yaml.as_bytes()).unwrap())
    };
    let plain = plan(&yaml);
    let remote = plan(&yaml.replace(
        "    - id: engine-plant\n",
        &format!("    - id: engine-plant\n      connect: {{ ssh: {{ host: ops.plant.example, hostKey: \"{key}\" }} }}\n"),
    ));
    let empty = tempfile::tempdir().unwrap();
    let without = Some(empty.path().as_os_str().to_owned());
    assert!(crate::controller::ssh_client_for(&plain, without.clone()).is_ok());
    let refused = crate::controller::ssh_client_for(&remote, without).unwrap_err();
    assert!(
        refused.contains("site `engine-plant` is reached over ssh")
            && refused.contains("nothing was started"),
        "{refused}"
    );
    std::fs::write(empty.path().join("ssh"), "").unwrap();
    let with = Some(empty.path().as_os_str().to_owned());
    assert!(crate::controller::ssh_client_for(&remote, with).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_the_release_before_is_carried_over_and_resumed() {
    let fake = plant("{ approvals: [incident-commander] }", false);
    let first = fake.context();
    at_the_gate(&fake, &first).await;
    first.abandon();
    // As the release before left it: the journal in the status.
    let before = fake.journal("run-1");
    fake.as_the_release_before("run-1");
    assert!(fake.journal("run-1").is_empty());
    fake.patch_spec(
        "run-1",
        json!({"approvals": [{"stage": "data", "by": "alice"}]}),
    );
    let second = fake.context();
    let run = reconcile_until(&fake, &second, "run-1", LIMIT, phase_is("Succeeded")).await;
    let raw = fake.raw_run("run-1").status.unwrap_or_default();
    assert!(raw.journal.is_empty(), "the journal left the status");
    let journal = fake.journal("run-1");
    assert_eq!(
        &journal[..before.len()],
        &before[..],
        "the old records, unchanged, come first"
    );
    assert!(journal.len() > before.len());
    Record::verify_chain(&journal).expect("one chain across both releases");
    assert_eq!(
        starts(&run, "parts-db"),
        1,
        "a healthy system is not started again"
    );
    second.abandon();
}
