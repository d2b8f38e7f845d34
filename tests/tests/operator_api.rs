//! `blackstart operator`, the real binary with a kubeconfig, against the
//! project's stateful fake API server (`blackstart_tests::apiserver`): the
//! scenarios a cluster puts an operator through, end to end.
//!
//! Every scenario ends with the same three truths: the run's journal (in
//! its status) is one unbroken hash chain; every system the run calls
//! Healthy is a Deployment running, ready, at the replicas its start set;
//! and the operator never made a request the shipped RBAC refuses.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blackstart_engine::{Record, RunState, SystemPhase};
use blackstart_tests::apiserver::{ApiServer, Faults, NEVER_READY, OPERATOR_TOKEN};
use blackstart_tests::{binary, root};
use serde_json::{Value, json};

const NS: &str = "blackstart-demo";
const RUN: &str = "dealer-restart-1";

/// The fake cluster with the example's workloads, Playbook and RestartRun,
/// and the operators started against it (killed when the test ends).
struct Cluster {
    api: ApiServer,
    dir: tempfile::TempDir,
    operators: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for op in &mut self.operators {
            let _ = op.kill();
            let _ = op.wait();
        }
    }
}

impl Cluster {
    /// The example, with its soaks and start timeout shortened so that a
    /// scenario takes seconds; `tweak` changes the Playbook's text further.
    fn new(tweak: impl Fn(String) -> String) -> Cluster {
        let api = ApiServer::start(&root().join("manifests/rbac/rbac.yaml"));
        let read = |p: &str| std::fs::read_to_string(root().join(p)).unwrap();
        api.apply_yaml(&read("manifests/examples/workloads.yaml"));
        let playbook = read("manifests/examples/playbook-dealer-systems.yaml")
            .replace("soak: 10s", "soak: 1s")
            .replace("startTimeout: 5m", "startTimeout: 20s")
            .replace("interval: 2s", "interval: 500ms");
        api.apply_yaml(&tweak(playbook));
        api.apply_yaml(&read("manifests/examples/restartrun.yaml"));
        let dir = tempfile::tempdir().unwrap();
        // The operator's kubeconfig defaults to `default`, as a laptop's
        // does: the Lease must not follow it.
        std::fs::write(
            dir.path().join("operator.kubeconfig"),
            api.kubeconfig(OPERATOR_TOKEN, "default"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("admin.kubeconfig"),
            api.kubeconfig("admin", NS),
        )
        .unwrap();
        Cluster {
            api,
            dir,
            operators: Vec::new(),
        }
    }

    /// A run of `n` systems (see [`many`]), each a Deployment at 0 replicas.
    fn with_systems(n: usize) -> Cluster {
        let c = Cluster::new(|_| many(n));
        for i in 0..n {
            c.api.create(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": format!("d-{i:05}"), "namespace": NS },
                "spec": { "replicas": 0 },
            }));
        }
        c
    }

    fn kubeconfig(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.kubeconfig"))
    }

    /// Starts `blackstart operator` as `identity`; returns its index.
    fn start_operator(&mut self, identity: &str) -> usize {
        self.start_operator_with(identity, &[])
    }

    /// [`Cluster::start_operator`] with variables in its environment.
    fn start_operator_with(&mut self, identity: &str, env: &[(&str, &str)]) -> usize {
        let log = std::fs::File::create(self.dir.path().join(format!("{identity}.log"))).unwrap();
        let child = Command::new(binary())
            .args([
                "operator",
                "--namespace",
                NS,
                "--listen",
                "127.0.0.1:0",
                "--identity",
                identity,
            ])
            .env("KUBECONFIG", self.kubeconfig("operator"))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.operators.push(child);
        self.operators.len() - 1
    }

    /// kill -9, as a node failure or the OOM killer does.
    fn kill(&mut self, index: usize) {
        let op = &mut self.operators[index];
        op.kill().unwrap();
        op.wait().unwrap();
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                all += &format!(
                    "--- {}\n{}\n",
                    path.display(),
                    std::fs::read_to_string(&path).unwrap_or_default()
                );
            }
        }
        all
    }

    fn run(&self) -> Value {
        self.api.get("blackstart.dev", "restartruns", NS, RUN)
    }

    fn condition(&self, kind: &str) -> String {
        self.run()["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == kind))
            .and_then(|c| c["status"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    fn phase(&self) -> String {
        self.run()["status"]["phase"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits, bounded, for `ok`; on a timeout says where the run stood.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&Cluster) -> bool) {
        let deadline = Instant::now() + limit;
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {limit:?}; the run's status: {:#}\nthe operators' logs:\n{}",
                self.run()["status"],
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `blackstart ARGS…` as a person with the admin kubeconfig: exit code,
    /// standard output, standard error.
    fn blackstart(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(binary())
            .args(args)
            .env("KUBECONFIG", self.kubeconfig("admin"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `blackstart approve RUN STAGE --k8s`, as a person with kubectl would.
    fn approve(&self, stage: &str) {
        let out = Command::new(binary())
            .args(["approve", RUN, stage, "--by", "alice", "--k8s"])
            .env("KUBECONFIG", self.kubeconfig("admin"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "approve --k8s failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The run's journal, from its ConfigMap segments.
    fn journal(&self) -> Vec<Record> {
        let mut data = std::collections::BTreeMap::new();
        for index in 0.. {
            let name = blackstart_operator::segments::segment_name(RUN, index);
            let segment = self.api.get("", "configmaps", NS, &name);
            if segment.is_null() {
                break;
            }
            let held: std::collections::BTreeMap<String, String> =
                serde_json::from_value(segment["data"].clone()).unwrap();
            data.extend(held);
        }
        blackstart_operator::segments::records_of(&data, RUN).unwrap()
    }

    /// The three truths every scenario ends with.
    fn assert_truthful(&self) {
        let journal = self.journal();
        Record::verify_chain(&journal).unwrap_or_else(|e| panic!("the journal's chain: {e}"));
        let status = &self.run()["status"];
        assert_eq!(status["journalLength"], json!(journal.len()));
        assert_eq!(status["journalHead"], json!(journal.last().unwrap().hash));
        let state = RunState::fold(journal.iter().map(|r| (r.seq, &r.event))).unwrap();
        let playbook = self
            .api
            .get("blackstart.dev", "playbooks", NS, "dealer-systems");
        for system in &state.systems {
            if system.phase != SystemPhase::Healthy {
                continue;
            }
            let id = system.id.as_str();
            let set = playbook["spec"]["systems"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == id)
                .map(|s| s["start"]["kubernetes"]["replicas"].clone())
                .unwrap();
            let d = self.api.get("apps", "deployments", NS, id);
            assert!(set.as_i64().unwrap() > 0);
            for field in [
                &d["spec"]["replicas"],
                &d["status"]["readyReplicas"],
                &d["status"]["availableReplicas"],
                &d["status"]["updatedReplicas"],
            ] {
                assert_eq!(field, &set, "{id} is called Healthy: {d:#}");
            }
        }
        assert_eq!(
            self.api.refused(),
            Vec::<String>::new(),
            "requests the shipped RBAC refuses"
        );
    }
}

fn at_the_gate(c: &Cluster) -> bool {
    c.condition("AwaitingApproval") == "True"
}

const LIMIT: Duration = Duration::from_secs(60);

/// The incident room of a cluster: `serve --k8s` shows the RestartRun and
/// what its gate waits for, from its status and its journal's segments,
/// and follows it to the end; the auditor's report comes from the same.
#[test]
fn the_room_serves_a_restart_run_from_the_cluster() {
    use blackstart_tests::browser::http;
    let mut c = Cluster::new(|p| p);
    c.start_operator("replica-a");
    c.wait_for("the gate of `data`", LIMIT, at_the_gate);
    let mut serve = Command::new(binary())
        .args([
            "serve",
            "--k8s",
            "--namespace",
            NS,
            "--listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", c.kubeconfig("admin"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = blackstart_tests::browser::serving_at(&mut serve);

    let (status, _, body) = http("GET", &format!("{url}/api/runs"), None);
    assert_eq!(status, 200, "{body}");
    let runs: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs[0]["run"], RUN, "{runs:#}");
    assert_eq!(runs[0]["playbook"], "dealer-systems");
    assert_eq!(runs[0]["waiting"], true, "{runs:#}");

    let (status, _, body) = http("GET", &format!("{url}/api/runs/{RUN}"), None);
    assert_eq!(status, 200, "{body}");
    let view: Value = serde_json::from_str(&body).unwrap();
    let data = view["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "data")
        .unwrap();
    assert_eq!(data["phase"], "Gate", "{view:#}");
    assert!(
        data["waiting"]["roles"][0]["command"]
            .as_str()
            .unwrap()
            .starts_with(&format!("blackstart approve {RUN} data")),
        "{data:#}"
    );
    let (status, _, page) = http("GET", &format!("{url}/runs/{RUN}"), None);
    assert_eq!(status, 200);
    assert!(page.contains("Gate of stage data"), "{page}");
    let (status, _, _) = http("GET", &format!("{url}/api/runs/no-such-run"), None);
    assert_eq!(status, 404);

    c.approve("data");
    c.wait_for("Succeeded", LIMIT, |c| c.phase() == "Succeeded");
    let (_, _, body) = http("GET", &format!("{url}/api/runs/{RUN}"), None);
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["phase"], "Succeeded", "{view:#}");
    assert!(
        view["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "approve" && d["by"] == "alice"),
        "{view:#}"
    );
    let _ = serve.kill();
    let _ = serve.wait();

    let report = c.blackstart(&["audit", RUN, "--k8s", "--format", "html"]);
    assert_eq!(report.0, 0, "{}", report.2);
    assert!(report.1.contains("Verified: "), "{}", report.1);
    assert!(report.1.contains("hash chain intact"), "{}", report.1);
}

/// The operator tells the room as the CLI does: the same engine sends the
/// same notifications, from the operator's own environment.
#[test]
fn the_operator_tells_the_room_of_its_gate_and_its_end() {
    use blackstart_tests::webhook::{Receiver, TOKEN};
    let hook = Receiver::start();
    let mut c = Cluster::new(|p| {
        p.replace(
            "  sites:\n",
            "  notify:\n    - webhook: { url: \"${env:ROOM_HOOK}\" }\n  sites:\n",
        )
    });
    c.start_operator_with("replica-a", &[("ROOM_HOOK", &hook.url)]);
    c.wait_for("the gate of `data`", LIMIT, at_the_gate);
    hook.wait_for("gate-waiting", |got| {
        got.iter()
            .any(|b| b["event"] == "gate-waiting" && b["stage"] == "data")
    });
    c.approve("data");
    c.wait_for("Succeeded", LIMIT, |c| c.phase() == "Succeeded");
    hook.wait_for("succeeded", |got| {
        got.iter().any(|b| b["event"] == "succeeded")
    });
    let told = hook.events();
    let end = told.iter().find(|b| b["event"] == "succeeded").unwrap();
    assert_eq!(end["run"], RUN);
    assert_eq!(end["playbook"], "dealer-systems");
    // Every attempt is in the run's journal, the token in none.
    let journal = c.journal();
    let text = serde_json::to_string(&journal).unwrap();
    assert!(
        text.contains("\"type\":\"notified\""),
        "no attempt journaled"
    );
    assert!(!text.contains(TOKEN), "the token is in the journal");
    assert!(!serde_json::to_string(&c.run()).unwrap().contains(TOKEN));
    assert!(
        !c.logs().contains(TOKEN),
        "the token is in the operator's log"
    );
    c.assert_truthful();
}

#[test]
fn the_example_run_succeeds_with_an_approval_from_approve_k8s() {
    let mut c = Cluster::new(|p| p);
    c.start_operator("replica-a");
    c.wait_for("the gate of `data`", LIMIT, at_the_gate);
    c.approve("data");
    c.wait_for("Succeeded", LIMIT, |c| c.phase() == "Succeeded");
    c.assert_truthful();
    // The Lease is in the operator's own namespace, not the kubeconfig's.
    let lease = c.api.get(
        "coordination.k8s.io",
        "leases",
        "blackstart-system",
        "blackstart-operator",
    );
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a", "{lease:#}");
    assert!(
        c.api
            .get(
                "coordination.k8s.io",
                "leases",
                "default",
                "blackstart-operator"
            )
            .is_null()
    );
    // Each stage's transitions are Events of their own.
    let events = c.api.all("events.k8s.io", "events");
    let notes: Vec<&str> = events.iter().filter_map(|e| e["note"].as_str()).collect();
    assert!(notes.iter().any(|n| n.contains("dealer-apps")), "{notes:?}");

    // The chain verifies from the segments; one edited record does not.
    let intact = c.blackstart(&["audit", RUN, "--k8s", "--verify"]);
    assert_eq!(intact.0, 0, "{}", intact.2);
    let name = format!("{RUN}-journal-0000");
    let mut segment = c.api.get("", "configmaps", NS, &name);
    let data = segment["data"].as_object_mut().unwrap();
    let (key, record) = data
        .iter_mut()
        .find(|(_, v)| v.as_str().is_some_and(|s| s.contains("\"Healthy\"")))
        .expect("a Healthy record in the first segment");
    let key = key.clone();
    *record = json!(
        record
            .as_str()
            .unwrap()
            .replacen("\"Healthy\"", "\"Failed\"", 1)
    );
    c.api.replace("", "configmaps", NS, segment);
    let edited = c.blackstart(&["audit", RUN, "--k8s", "--verify"]);
    assert_eq!(edited.0, 1, "an edited journal is not intact: {}", edited.1);
    let seq: u64 = key[..10].parse().unwrap();
    assert!(
        edited
            .2
            .contains(&format!("event {seq} does not match its hash")),
        "{}",
        edited.2
    );
}

#[test]
fn killed_twice_once_with_a_scale_patch_in_flight_the_run_resumes_and_succeeds() {
    let mut c = Cluster::new(|p| p);
    c.api.set_faults(Faults {
        hang_patches: Some("/deployments/parts-db".into()),
        ..Faults::default()
    });
    let first = c.start_operator("replica-a");
    let api = c.api.clone();
    c.wait_for("the scale PATCH of parts-db", LIMIT, |_| {
        api.seen()
            .iter()
            .any(|s| s.starts_with("PATCH") && s.contains("/deployments/parts-db"))
    });
    c.kill(first);
    c.api.set_faults(Faults::default());
    // The same identity: the Lease it held is its own again at once.
    let second = c.start_operator("replica-a");
    c.wait_for("the gate of `data`", LIMIT, at_the_gate);
    c.kill(second);
    c.start_operator("replica-a");
    c.approve("data");
    c.wait_for("Succeeded", LIMIT, |c| c.phase() == "Succeeded");
    c.assert_truthful();
    let journal = serde_json::to_string(&c.journal()).unwrap();
    assert!(
        journal.contains("driven again"),
        "the start cut short is driven again, and the journal says so"
    );
}

#[test]
fn conflicts_errors_slow_writes_and_dropped_watches_over_compacted_history_do_not_stop_the_run() {
    let mut c = Cluster::new(|p| p);
    c.api.set_faults(Faults {
        status_conflicts: 35,
        write_errors: 15,
        slow_writes: Duration::from_millis(20),
        drop_watches_after: Some(Duration::from_secs(2)),
        compact: true,
        ..Faults::default()
    });
    c.start_operator("replica-a");
    c.wait_for("the gate of `data`", LIMIT, at_the_gate);
    c.approve("data");
    c.wait_for("Succeeded", LIMIT, |c| c.phase() == "Succeeded");
    c.assert_truthful();
    let (conflicts, errors) = c.api.injected();
    assert!(
        conflicts > 3 && errors > 3,
        "faults injected: {conflicts} conflicts, {errors} errors"
    );
    // The watcher comes back after a drop, meets compacted history (410)
    // and lists again.
    let runs = format!("/apis/blackstart.dev/v1alpha1/namespaces/{NS}/restartruns");
    let api = c.api.clone();
    let count = move |what: &str| {
        let seen = api.seen();
        seen.iter()
            .filter(|s| **s == format!("{what} {runs}"))
            .count()
    };
    c.wait_for("a watch again, a 410, and a list again", LIMIT, |_| {
        count("WATCH") >= 2 && count("EXPIRED") >= 1 && count("GET") >= 2
    });
}

#[test]
fn a_never_ready_deployment_is_rolled_back_and_nothing_is_called_healthy_that_is_not() {
    let mut c = Cluster::new(|p| p);
    let mut portal = c.api.get("apps", "deployments", NS, "dealer-portal");
    portal["metadata"]["annotations"] = json!({ NEVER_READY: "true" });
    portal["metadata"]["name"] = json!("dealer-portal");
    // Replaced as an administrator would, before the run reaches it.
    c.api.replace("apps", "deployments", NS, portal);
    c.start_operator("replica-a");
    c.wait_for("the gate of `data`", LIMIT, at_the_gate);
    c.approve("data");
    c.wait_for("RolledBack", LIMIT, |c| c.phase() == "RolledBack");
    c.assert_truthful();
    let portal = c.api.get("apps", "deployments", NS, "dealer-portal");
    assert_eq!(portal["spec"]["replicas"], 0, "rolled back: {portal:#}");
}

#[test]
fn a_second_operator_waits_for_the_lease_and_takes_the_run_over_when_the_first_dies() {
    let mut c = Cluster::new(|p| p);
    let first = c.start_operator("replica-a");
    c.wait_for("the gate of `data`", LIMIT, at_the_gate);
    // Another replica, whose kubeconfig defaults to another namespace.
    std::fs::write(
        c.kubeconfig("operator"),
        c.api.kubeconfig(OPERATOR_TOKEN, "somewhere-else"),
    )
    .unwrap();
    c.start_operator("replica-b");
    let holder = |c: &Cluster| {
        c.api.get(
            "coordination.k8s.io",
            "leases",
            "blackstart-system",
            "blackstart-operator",
        )["spec"]["holderIdentity"]
            .clone()
    };
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        holder(&c),
        "replica-a",
        "the second replica does not take a held Lease"
    );
    let written_by_a = c.journal().len();
    c.kill(first);
    c.approve("data");
    // The Lease expires 30 s after its last renewal; then replica-b leads.
    c.wait_for("replica-b leading", Duration::from_secs(60), |c| {
        holder(c) == "replica-b"
    });
    c.wait_for("Succeeded", LIMIT, |c| c.phase() == "Succeeded");
    c.assert_truthful();
    assert!(c.journal().len() > written_by_a);
}

/// A playbook of `n` systems, one Deployment each, all in one stage.
fn many(n: usize) -> String {
    let mut o = String::from(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: dealer-systems, namespace: blackstart-demo }
spec:
  defaults:
    startTimeout: 60s
    probe: { interval: 200ms, timeout: 2s, successThreshold: 1, failureThreshold: 3 }
  sites: [ { id: cloud-eu } ]
  systems:
",
    );
    for i in 0..n {
        let k = format!("{{ kind: Deployment, name: d-{i:05} }}");
        o += &format!(
            "    - {{ id: d-{i:05}, site: cloud-eu, tier: app, start: {{ kubernetes: {{ kind: Deployment, name: d-{i:05}, replicas: 1 }} }}, stop: {{ kubernetes: {k} }}, health: [ {{ kubernetes: {k} }} ] }}\n"
        );
    }
    o += "  stages:\n    - { name: all, select: { tiers: [app] }, maxParallel: 200 }\n";
    o
}

#[test]
fn a_run_larger_than_the_status_could_hold_spans_segments_and_succeeds() {
    // More than the 600 systems a journal in the status allowed.
    let n = 700;
    let mut c = Cluster::with_systems(n);
    c.start_operator("replica-a");
    c.wait_for("Succeeded", Duration::from_secs(240), |c| {
        c.phase() == "Succeeded"
    });
    c.assert_truthful();
    let status = &c.run()["status"];
    assert_eq!(status["systemCounts"]["Healthy"], json!(n));
    assert!(
        status["systems"].as_array().is_none_or(|s| s.is_empty()),
        "a healthy system is counted, not listed"
    );
    let segments = status["journalSegments"].as_u64().unwrap();
    assert!(segments > 5, "the journal spans {segments} segments");
    // Records made while a write was under way went in with the next one.
    let writes = c
        .api
        .seen()
        .iter()
        .filter(|s| (s.starts_with("PATCH") || s.starts_with("POST")) && s.contains("/configmaps"))
        .count();
    let records = c.journal().len();
    assert!(
        writes * 2 < records,
        "{writes} segment writes for {records} records"
    );
    let bytes = serde_json::to_string(&c.run()).unwrap().len();
    assert!(
        bytes < 16 * 1024,
        "the RestartRun stays small: {bytes} bytes"
    );

    // The CLI reads the whole chain back from the segments.
    let verify = c.blackstart(&["audit", RUN, "--k8s", "--verify"]);
    assert_eq!(verify.0, 0, "{}", verify.2);
    let head = format!(
        "head: {} {}",
        status["journalLength"],
        status["journalHead"].as_str().unwrap()
    );
    assert!(
        verify.1.contains("hash chain intact") && verify.1.contains(&head),
        "{}",
        verify.1
    );
    let shown = c.blackstart(&["status", RUN, "--k8s", "--format", "json"]);
    assert_eq!(shown.0, 0, "{}", shown.2);
    let shown: serde_json::Value = serde_json::from_str(&shown.1).unwrap();
    assert_eq!(shown["phase"], "Succeeded");
    assert_eq!(shown["systems"].as_array().map(Vec::len), Some(n));
}

/// The operator at its largest: a run of 10,000 systems (or
/// `BLACKSTART_BENCH_SYSTEMS`) whose workloads are ready at once, on the
/// fake API server. Prints wall time, the operator's peak memory and what
/// it wrote; `cargo xtask bench-operator` runs it in release.
#[test]
#[ignore = "a benchmark of minutes, not a test: cargo xtask bench-operator"]
fn benchmark_a_run_of_ten_thousand_systems() {
    let n: usize = std::env::var("BLACKSTART_BENCH_SYSTEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut c = Cluster::with_systems(n);
    // Built before the clock starts.
    let _ = binary();
    let started = Instant::now();
    let op = c.start_operator("replica-a");
    let pid = c.operators[op].id();
    let mut peak_kib = 0u64;
    let deadline = started + Duration::from_secs(1800);
    while c.phase() != "Succeeded" {
        assert!(Instant::now() < deadline, "no end within 30 minutes");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let wall = started.elapsed().as_secs_f64();
    c.assert_truthful();
    let journal = c.journal();
    let journal_bytes: usize = journal
        .iter()
        .map(|r| serde_json::to_string(r).unwrap().len())
        .sum();
    let run_bytes = serde_json::to_string(&c.run()).unwrap().len();
    println!();
    println!(
        "| systems | events | wall time | operator peak RSS | RestartRun | journal | per event |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {} | {wall:.1} s | {:.0} MiB | {:.1} KiB | {:.0} KiB in {} segments | {:.0} bytes |",
        journal.len(),
        peak_kib as f64 / 1024.0,
        run_bytes as f64 / 1024.0,
        journal_bytes as f64 / 1024.0,
        c.run()["status"]["journalSegments"],
        journal_bytes as f64 / journal.len() as f64,
    );
}
