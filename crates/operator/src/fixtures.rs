//! Test fixtures: a mocked API server behind `tower_test::mock`, and the
//! objects the scenarios need.
//!
//! The mock plays the API server's side of every request the controller
//! makes, the way kube-rs's `ApiServerVerifier` does, but instead of one
//! scripted answer per request it keeps the objects and answers as the API
//! server would: JSON and merge patches applied, `resourceVersion`
//! preconditions enforced with 409, `generation` bumped on spec changes, the
//! status subresource kept apart from the rest. A Deployment "controller"
//! makes scaled Deployments ready at once, unless one is marked never to
//! be. Every request is logged, so scenarios assert what was asked, in what
//! order, as well as where the objects ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::controller::{Context, Settings};
use crate::crd::{Playbook, RestartRun};
use crate::metrics::Metrics;

pub const NS: &str = "plant";
/// Marks a fake Deployment that never becomes ready.
pub use blackstart_tests::apiserver::NEVER_READY;
/// The fake Deployment controller: the one the stateful API server runs.
use blackstart_tests::apiserver::settle_workload as settle;

/// One request as the mock API server saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: Method,
    pub path: String,
    pub content_type: String,
    pub body: Value,
    pub status: u16,
}

#[derive(Default)]
struct World {
    objects: HashMap<String, Value>,
    log: Vec<Logged>,
    next_rv: u64,
    /// Status patches still to refuse with a conflict, as when a person's
    /// edit lands between the operator's read and its write.
    conflicts: usize,
    /// Injected faults: requests whose method and path end match are
    /// answered with the status (a 5xx, a 429) until the count runs out.
    faults: Vec<Fault>,
    /// Requests whose path ends so are never answered (the operator is
    /// killed while they are in flight) while this is set.
    hang: Option<String>,
}

/// An injected fault: the next `times` requests of `method` to a path
/// ending in `path` are answered with `status`.
#[derive(Debug, Clone)]
struct Fault {
    method: Method,
    path: String,
    status: u16,
    times: usize,
    /// The request is applied before the error is sent, as when the API
    /// server's answer is lost on the way back.
    applied: bool,
}

/// The mocked API server.
#[derive(Clone, Default)]
pub struct FakeApi {
    world: Arc<Mutex<World>>,
}

impl std::fmt::Debug for FakeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FakeApi")
    }
}

fn path_of(kind: &str, name: &str) -> String {
    match kind {
        "playbooks" | "restartruns" => {
            format!("/apis/blackstart.dev/v1alpha1/namespaces/{NS}/{kind}/{name}")
        }
        "deployments" | "statefulsets" => format!("/apis/apps/v1/namespaces/{NS}/{kind}/{name}"),
        "leases" => format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{name}"),
        _ => format!("/api/v1/namespaces/{NS}/{kind}/{name}"),
    }
}

impl FakeApi {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A client whose every request this fake answers.
    pub fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let me = self.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let response = me.answer(request).await;
                send.send_response(response);
            }
        });
        Client::new(service, NS)
    }

    /// A controller context on a fresh client, with timings for tests.
    pub fn context(&self) -> Arc<Context> {
        let settings = Settings {
            poll: Duration::from_millis(20),
            step_timeout: Duration::from_secs(5),
            drain: Duration::from_secs(5),
            recheck: Duration::from_millis(200),
            retry: Duration::from_millis(200),
        };
        let reporter = Reporter {
            controller: "blackstart-operator".into(),
            instance: Some("test".into()),
        };
        Arc::new(
            Context::new(self.client(), reporter, Arc::new(Metrics::new()), settings)
                .with_secrets_namespace(NS.to_owned()),
        )
    }

    pub fn runs(&self, ctx: &Context) -> Api<RestartRun> {
        Api::namespaced(ctx.client.clone(), NS)
    }

    /// Stores an object as `kubectl apply` would create it.
    pub fn create(&self, kind: &str, mut obj: Value) {
        let mut w = self.world();
        w.next_rv += 1;
        let rv = w.next_rv.to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        obj["metadata"]["namespace"] = json!(NS);
        obj["metadata"]["resourceVersion"] = json!(rv);
        obj["metadata"]["generation"] = json!(1);
        obj["metadata"]["uid"] = json!(format!("uid-{name}"));
        obj["metadata"]["creationTimestamp"] = json!("2026-11-22T10:00:00Z");
        if matches!(kind, "deployments" | "statefulsets") {
            settle(&mut obj);
        }
        if kind == "restartruns" {
            default_run(&mut obj);
        }
        w.objects.insert(path_of(kind, &name), obj);
    }

    pub fn get(&self, kind: &str, name: &str) -> Value {
        self.world()
            .objects
            .get(&path_of(kind, name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The RestartRun as the API server holds it.
    pub fn raw_run(&self, name: &str) -> RestartRun {
        serde_json::from_value(self.get("restartruns", name))
            .expect("the fake holds a valid RestartRun")
    }

    /// The RestartRun as the scenarios read it: with its journal, read back
    /// from its segments, in `status.journal` (where the release before
    /// kept it), so a scenario reads one object.
    pub fn run(&self, name: &str) -> RestartRun {
        let mut run = self.raw_run(name);
        let records = self.journal(name);
        if !records.is_empty()
            && let Some(status) = run.status.as_mut()
        {
            status.journal = records;
        }
        run
    }

    /// Makes a run look as the release before left it: its journal in
    /// `status.journal`, no segments, no journal fields in the summary.
    pub fn as_the_release_before(&self, name: &str) {
        let records = self.journal(name);
        let mut w = self.world();
        for index in 0.. {
            let key = path_of("configmaps", &crate::segments::segment_name(name, index));
            if w.objects.remove(&key).is_none() {
                break;
            }
        }
        w.next_rv += 1;
        let rv = w.next_rv.to_string();
        let obj = w
            .objects
            .get_mut(&path_of("restartruns", name))
            .expect("the run exists");
        let status = obj["status"].as_object_mut().expect("the run has a status");
        for field in ["journalLength", "journalHead", "journalSegments"] {
            status.remove(field);
        }
        status.insert(
            "journal".into(),
            serde_json::to_value(records).unwrap_or_default(),
        );
        obj["metadata"]["resourceVersion"] = json!(rv);
    }

    /// A run's journal, from its ConfigMap segments.
    pub fn journal(&self, name: &str) -> Vec<blackstart_engine::Record> {
        let mut data = std::collections::BTreeMap::new();
        for index in 0.. {
            let cm = self.get("configmaps", &crate::segments::segment_name(name, index));
            if cm.is_null() {
                break;
            }
            let held: std::collections::BTreeMap<String, String> =
                serde_json::from_value(cm["data"].clone()).unwrap_or_default();
            data.extend(held);
        }
        crate::segments::records_of(&data, name).expect("the segments read back")
    }

    /// Changes a RestartRun's spec as `kubectl patch --type merge` would.
    pub fn patch_spec(&self, name: &str, spec: Value) {
        let mut w = self.world();
        w.next_rv += 1;
        let rv = w.next_rv.to_string();
        let obj = w
            .objects
            .get_mut(&path_of("restartruns", name))
            .expect("the run exists");
        json_patch::merge(&mut obj["spec"], &spec);
        obj["metadata"]["resourceVersion"] = json!(rv);
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        obj["metadata"]["generation"] = json!(generation);
    }

    /// The next `n` status patches are refused with 409, each after a
    /// bump of the object's resourceVersion, as a concurrent edit does.
    pub fn conflict_next_status_patches(&self, n: usize) {
        self.world().conflicts = n;
    }

    /// The next `times` `method` requests to a path ending in `path` are
    /// answered with `status` (500, 503, 429 …) without being applied.
    pub fn fail_next(&self, method: Method, path: &str, status: u16, times: usize) {
        self.world().faults.push(Fault {
            method,
            path: path.to_owned(),
            status,
            times,
            applied: false,
        });
    }

    /// As [`FakeApi::fail_next`], but each request is applied before the
    /// error is sent back.
    pub fn fail_next_after_applying(&self, method: Method, path: &str, status: u16, times: usize) {
        self.world().faults.push(Fault {
            method,
            path: path.to_owned(),
            status,
            times,
            applied: true,
        });
    }

    /// PATCHes to a path ending in `path` are held unanswered and not
    /// applied, as when the operator dies with the request in flight;
    /// `None` answers the ones that come next.
    pub fn hang_patches(&self, path: Option<&str>) {
        self.world().hang = path.map(str::to_owned);
    }

    pub fn log(&self) -> Vec<Logged> {
        self.world().log.clone()
    }

    /// Events published about the run, as (reason, note).
    pub fn events(&self) -> Vec<(String, String)> {
        let w = self.world();
        let mut events: Vec<(&String, &Value)> = w
            .objects
            .iter()
            .filter(|(k, _)| k.contains("/events/"))
            .collect();
        events.sort_by_key(|(_, v)| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
        });
        events
            .into_iter()
            .map(|(_, v)| {
                (
                    v["reason"].as_str().unwrap_or_default().to_owned(),
                    v["note"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let path = parts.uri.path().to_owned();
        let hang = parts.method == Method::PATCH
            && self
                .world()
                .hang
                .as_deref()
                .is_some_and(|h| path.ends_with(h));
        if hang {
            self.world().log.push(Logged {
                method: parts.method.clone(),
                path,
                content_type,
                body,
                status: 0,
            });
            return std::future::pending().await;
        }
        let (status, answer) = match self.fault(&parts.method, &path) {
            Some((code, applied)) => {
                if applied {
                    let _ = self.handle(&parts.method, &path, &content_type, body.clone());
                }
                status(
                    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    "InternalError",
                    format!("injected fault on {path}"),
                )
            }
            None => self.handle(&parts.method, &path, &content_type, body.clone()),
        };
        self.world().log.push(Logged {
            method: parts.method.clone(),
            path,
            content_type,
            body,
            status: status.as_u16(),
        });
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()))
            .expect("a response from parts that are always valid")
    }

    /// The status of an injected fault that matches, counting it used.
    fn fault(&self, method: &Method, path: &str) -> Option<(u16, bool)> {
        let mut w = self.world();
        let f = w
            .faults
            .iter_mut()
            .find(|f| f.times > 0 && f.method == method && path.ends_with(&f.path))?;
        f.times -= 1;
        Some((f.status, f.applied))
    }

    fn handle(
        &self,
        method: &Method,
        path: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut w = self.world();
        let (key, subresource) = match path.strip_suffix("/status") {
            Some(k) => (k.to_owned(), true),
            None => (path.to_owned(), false),
        };
        match *method {
            Method::GET => match w.objects.get(&key) {
                Some(obj) => (StatusCode::OK, obj.clone()),
                None => not_found(path),
            },
            Method::POST => {
                w.next_rv += 1;
                let rv = w.next_rv.to_string();
                let mut obj = body;
                let name = obj["metadata"]["name"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| {
                        format!(
                            "{}{rv}",
                            obj["metadata"]["generateName"]
                                .as_str()
                                .unwrap_or("object-")
                        )
                    });
                if w.objects.contains_key(&format!("{path}/{name}")) {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("{path}/{name} already exists"),
                    );
                }
                obj["metadata"]["name"] = json!(name);
                obj["metadata"]["resourceVersion"] = json!(rv);
                w.objects.insert(format!("{path}/{name}"), obj.clone());
                (StatusCode::CREATED, obj)
            }
            Method::PATCH => {
                let Some(current) = w.objects.get(&key).cloned() else {
                    return not_found(path);
                };
                if subresource && key.contains("/restartruns/") && w.conflicts > 0 {
                    w.conflicts -= 1;
                    w.next_rv += 1;
                    let rv = w.next_rv.to_string();
                    if let Some(obj) = w.objects.get_mut(&key) {
                        obj["metadata"]["resourceVersion"] = json!(rv);
                    }
                    return conflict(path);
                }
                let mut patched = current.clone();
                if content_type.starts_with("application/json-patch+json") {
                    let mut ops: json_patch::Patch = match serde_json::from_value(body) {
                        Ok(p) => p,
                        Err(e) => return invalid(&e.to_string()),
                    };
                    // The API server's JSON Patch finds a missing path equal
                    // to null; kube's finalizer helper relies on that.
                    ops.0.retain(|op| match op {
                        json_patch::PatchOperation::Test(t) => {
                            !(t.value.is_null() && patched.pointer(t.path.as_str()).is_none())
                        }
                        _ => true,
                    });
                    if let Err(e) = json_patch::patch(&mut patched, &ops) {
                        return invalid(&e.to_string());
                    }
                } else {
                    json_patch::merge(&mut patched, &body);
                }
                let theirs = &patched["metadata"]["resourceVersion"];
                if !theirs.is_null() && theirs != &current["metadata"]["resourceVersion"] {
                    return conflict(path);
                }
                // The status subresource changes the status only; the
                // resource itself changes everything but the status.
                let mut next = current.clone();
                if subresource {
                    next["status"] = patched["status"].clone();
                } else {
                    let status = current["status"].clone();
                    next = patched;
                    next["status"] = status;
                    if next["spec"] != current["spec"] {
                        let generation =
                            current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                        next["metadata"]["generation"] = json!(generation);
                    }
                }
                if next["status"].is_null()
                    && let Some(m) = next.as_object_mut()
                {
                    m.remove("status");
                }
                w.next_rv += 1;
                next["metadata"]["resourceVersion"] = json!(w.next_rv.to_string());
                if key.contains("/deployments/") || key.contains("/statefulsets/") {
                    settle(&mut next);
                }
                w.objects.insert(key, next.clone());
                (StatusCode::OK, next)
            }
            _ => invalid("method not supported by the fake"),
        }
    }
}

/// What the API server fills in from the RestartRun CRD's defaults.
fn default_run(obj: &mut Value) {
    for list in ["approvals", "denials", "confirmations"] {
        if obj["spec"][list].is_null() {
            obj["spec"][list] = json!([]);
        }
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn not_found(path: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{path} not found"),
    )
}

fn conflict(path: &str) -> (StatusCode, Value) {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {path}: the object has been modified; please apply your changes to the latest version and try again"
        ),
    )
}

fn invalid(message: &str) -> (StatusCode, Value) {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        message.to_owned(),
    )
}

/// A Deployment at zero replicas, as after the shutdown.
pub fn deployment(name: &str, never_ready: bool) -> Value {
    let mut annotations = json!({});
    if never_ready {
        annotations[NEVER_READY] = json!("true");
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": []}}},
    })
}

/// A Playbook object from playbook YAML, as `kubectl apply -f` stores it.
pub fn playbook(yaml: &str) -> Value {
    let pb: Playbook = serde_saphyr::from_str(yaml).expect("test playbooks are valid");
    serde_json::to_value(pb).expect("a Playbook serializes")
}

/// A RestartRun of `playbook`, as people create one.
pub fn restart_run(name: &str, playbook: &str) -> Value {
    json!({
        "apiVersion": "blackstart.dev/v1alpha1",
        "kind": "RestartRun",
        "metadata": {"name": name},
        "spec": {"playbookRef": {"name": playbook}},
    })
}

/// The two-stage plant of the scenarios: a database tier, then the app
/// tier, each a Deployment scaled up from zero and probed until ready.
pub fn plant_playbook(gate: &str, app_never_ready: bool) -> (String, Vec<Value>) {
    let yaml = format!(
        r#"apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: plant }}
spec:
  defaults:
    startTimeout: 2s
    probe: {{ interval: 50ms, timeout: 1s }}
  sites:
    - id: engine-plant
  systems:
    - id: parts-db
      site: engine-plant
      tier: data
      start: {{ kubernetes: {{ kind: Deployment, name: parts-db, replicas: 1 }} }}
      stop: {{ kubernetes: {{ kind: Deployment, name: parts-db }} }}
      health: [ {{ kubernetes: {{ kind: Deployment, name: parts-db }} }} ]
    - id: dealer-portal
      site: engine-plant
      tier: app
      dependsOn: [parts-db]
      start: {{ kubernetes: {{ kind: Deployment, name: dealer-portal, replicas: 2 }} }}
      stop: {{ kubernetes: {{ kind: Deployment, name: dealer-portal }} }}
      health: [ {{ kubernetes: {{ kind: Deployment, name: dealer-portal }} }} ]
    - id: parts-api
      site: engine-plant
      tier: app
      dependsOn: [parts-db]
      start: {{ kubernetes: {{ kind: Deployment, name: parts-api, replicas: 2 }} }}
      stop: {{ kubernetes: {{ kind: Deployment, name: parts-api }} }}
      health: [ {{ kubernetes: {{ kind: Deployment, name: parts-api }} }} ]
  stages:
    - name: data
      select: {{ tiers: [data] }}
      gate: {gate}
    - name: apps
      select: {{ tiers: [app] }}
      gate: {{ onFailure: rollback }}
"#
    );
    let deployments = vec![
        deployment("parts-db", false),
        deployment("dealer-portal", app_never_ready),
        deployment("parts-api", false),
    ];
    (yaml, deployments)
}

/// Sets up the plant and one RestartRun `run-1` on a fresh fake.
pub fn plant(gate: &str, app_never_ready: bool) -> FakeApi {
    let (yaml, deployments) = plant_playbook(gate, app_never_ready);
    plant_with(&yaml, deployments)
}

/// A fresh fake with the Playbook `yaml` (named `plant`), `deployments`,
/// and one RestartRun `run-1` of it.
pub fn plant_with(yaml: &str, deployments: Vec<Value>) -> FakeApi {
    let fake = FakeApi::default();
    fake.create("playbooks", playbook(yaml));
    for d in deployments {
        fake.create("deployments", d);
    }
    fake.create("restartruns", restart_run("run-1", "plant"));
    fake
}

/// Reconciles `name` as the watch would (after every change, and on each
/// requeue) until `done` holds for the stored run, or fails after `limit`.
pub async fn reconcile_until(
    fake: &FakeApi,
    ctx: &Arc<Context>,
    name: &str,
    limit: Duration,
    done: impl Fn(&RestartRun) -> bool,
) -> RestartRun {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = None;
    loop {
        let run = fake.run(name);
        if done(&run) {
            return run;
        }
        // The controller sees what the API server has, not the test's view.
        let raw = fake.raw_run(name);
        if tokio::time::Instant::now() >= deadline {
            let log = fake.log();
            let tail: Vec<String> = log
                .iter()
                .rev()
                .take(6)
                .map(|l| format!("{} {} → {}", l.method, l.path, l.status))
                .collect();
            panic!(
                "gave up after {limit:?}; last reconcile: {last:?}; last requests: {tail:#?}; the run is {:#?}",
                run.status
            );
        }
        last = Some(crate::controller::reconcile(Arc::new(raw), Arc::clone(ctx)).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn phase_is(phase: &'static str) -> impl Fn(&RestartRun) -> bool {
    move |run| run.phase() == phase
}
