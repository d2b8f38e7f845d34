//! Kubernetes workloads as steps: scale a Deployment or StatefulSet, restart
//! its pods, and check that its rollout is done.
//!
//! Both kinds are read as untyped objects: the fields a restart needs
//! (`spec.replicas`, `metadata.generation`, the status counts) have the same
//! names in both, so one code path serves both and neither kind's full type
//! is decoded on every probe. What a stop must restore is kept on the
//! workload itself, in an annotation, so it survives a crashed CLI or a
//! rescheduled operator with nothing else to remember.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{Value, json};

use blackstart_model::playbook::{KubernetesAction, Workload, WorkloadKind};

use super::{Outcome, StepContext, retry};

/// The replicas a workload had before blackstart first scaled it.
pub const REPLICAS_BEFORE: &str = "blackstart.dev/replicas-before";
/// What `kubectl rollout restart` sets on the pod template.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// The field manager blackstart's patches are recorded under.
pub const FIELD_MANAGER: &str = "blackstart";

/// The cluster kubernetes steps talk to, and the namespace of workloads
/// that name none.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
}

impl Cluster {
    /// The cluster of a loaded kubeconfig: a site's context, or the one in
    /// its Secret; workloads that name no namespace are in the context's.
    pub fn from_config(config: kube::Config) -> Result<Cluster, kube::Error> {
        let namespace = config.default_namespace.clone();
        Ok(Cluster {
            client: kube::Client::try_from(config)?,
            namespace,
        })
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn api(cluster: &Cluster, w: &Workload) -> Api<DynamicObject> {
    let resource = match w.kind {
        WorkloadKind::Deployment => {
            ApiResource::erase::<k8s_openapi::api::apps::v1::Deployment>(&())
        }
        WorkloadKind::StatefulSet => {
            ApiResource::erase::<k8s_openapi::api::apps::v1::StatefulSet>(&())
        }
    };
    let ns = w.namespace.as_deref().unwrap_or(&cluster.namespace);
    Api::namespaced_with(cluster.client.clone(), ns, &resource)
}

fn cluster<'a>(cx: &'a StepContext, what: &str) -> Result<&'a Cluster, Outcome> {
    cx.cluster.as_ref().ok_or_else(|| {
        Outcome::failed(format!(
            "{what}: no Kubernetes cluster to talk to (no kubeconfig or in-cluster config was found, or none for the site's connect.kubernetes)"
        ))
    })
}

/// Says what went wrong with an API call in one line: the object, the
/// verb, the API server's own message when it sent one, and how many tries
/// it took when transient errors were retried.
fn api_error(w: &Workload, verb: &str, e: &retry::GaveUp) -> String {
    let tries = if e.tries > 1 {
        format!(", after {} tries", e.tries)
    } else {
        String::new()
    };
    match &e.error {
        kube::Error::Api(s) => format!("{w}: {verb} failed: {} ({}{tries})", s.message, s.code),
        other => format!("{w}: {verb} failed: {other}{}", tries),
    }
}

/// A successful outcome, saying how many transient errors it went through.
fn ok_after(detail: String, retries: u32) -> Outcome {
    let detail = if retries == 0 {
        detail
    } else {
        format!("{detail} (after {retries} retries of transient API errors)")
    };
    Outcome {
        retries,
        ..Outcome::ok(detail)
    }
}

async fn with_timeout(
    cx: &StepContext,
    w: &Workload,
    step: impl Future<Output = Outcome>,
) -> Outcome {
    match tokio::time::timeout(cx.timeout, step).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::failed(format!(
            "{w}: the API server did not answer within {}",
            humantime::format_duration(cx.timeout)
        )),
    }
}

/// Calls the API server, retrying transient errors within the step's
/// time (a little inside it, so the last error is what the step reports).
async fn call<T, F, Fut>(cx: &StepContext, call: F) -> Result<(T, u32), retry::GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let deadline = tokio::time::Instant::now() + cx.timeout.mul_f64(0.9);
    let hook = cx.on_api_retry.clone();
    let on_retry = move || {
        if let Some(h) = &hook {
            (h.0)();
        }
    };
    retry::until(deadline, &on_retry, call).await
}

/// Runs a kubernetes start or stop.
pub(super) async fn act(a: &KubernetesAction, cx: &StepContext) -> Outcome {
    let w = a.workload();
    let cluster = match cluster(cx, &a.summary()) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let api = api(cluster, &w);
    with_timeout(cx, &w, async {
        let mut retries = 0;
        let patch = if a.rollout_restart {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}})
        } else {
            let current = match call(cx, || api.get(&a.name)).await {
                Ok((obj, n)) => {
                    retries += n;
                    obj
                }
                Err(e) => return Outcome::failed(api_error(&w, "get", &e)),
            };
            let replicas = current
                .data
                .pointer("/spec/replicas")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let before = current
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REPLICAS_BEFORE))
                .and_then(|v| v.parse::<u64>().ok());
            match a.replicas {
                // Remember the first count only: a start repeated after a
                // crash must not overwrite it with its own.
                Some(n) => match before {
                    Some(_) => json!({"spec": {"replicas": n}}),
                    None => json!({
                        "metadata": {"annotations": {REPLICAS_BEFORE: replicas.to_string()}},
                        "spec": {"replicas": n},
                    }),
                },
                None => json!({
                    "metadata": {"annotations": {REPLICAS_BEFORE: null}},
                    "spec": {"replicas": before.unwrap_or(0)},
                }),
            }
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        // A merge patch of absolute values: sending it again is harmless.
        let patch = Patch::Merge(&patch);
        match call(cx, || api.patch(&a.name, &params, &patch)).await {
            Ok((_, n)) => ok_after(a.summary(), retries + n),
            Err(e) => Outcome::failed(api_error(&w, "patch", &e)),
        }
    })
    .await
}

/// Whether the workload's rollout is done, as `kubectl rollout status` judges it.
pub(super) async fn ready(w: &Workload, cx: &StepContext) -> Outcome {
    let cluster = match cluster(cx, &w.to_string()) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let api = api(cluster, w);
    let ns = |w: &Workload| {
        w.namespace
            .clone()
            .unwrap_or_else(|| cluster.namespace.clone())
    };
    let expected = cx
        .scaled
        .as_ref()
        .filter(|(s, _)| s.kind == w.kind && s.name == w.name && ns(s) == ns(w))
        .map(|(_, n)| i64::from(*n));
    with_timeout(cx, w, async {
        match call(cx, || api.get(&w.name)).await {
            Ok((obj, _)) => judge(w, &obj, expected),
            Err(e) => Outcome::failed(api_error(w, "get", &e)),
        }
    })
    .await
}

/// The rollout is done when the controller has seen the latest spec and
/// every desired replica is updated, ready and available. A workload that
/// desires no replicas runs nothing, so it is never ready; with `expected`
/// (the count the system's start set), it must desire exactly that many.
pub fn judge(w: &Workload, obj: &DynamicObject, expected: Option<i64>) -> Outcome {
    let count = |path: &str| obj.data.pointer(path).and_then(Value::as_i64).unwrap_or(0);
    let desired = obj
        .data
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if desired == 0 {
        return Outcome::failed(format!(
            "{w}: scaled to 0 replicas: nothing runs, so it is not ready"
        ));
    }
    if let Some(n) = expected.filter(|n| *n != desired) {
        return Outcome::failed(format!(
            "{w}: {desired} replicas desired where its start set {n}: it does not run as started"
        ));
    }
    let generation = obj.metadata.generation.unwrap_or(0);
    let observed = count("/status/observedGeneration");
    if observed < generation {
        return Outcome::failed(format!(
            "{w}: its controller has not seen the latest spec yet (generation {generation}, observed {observed})"
        ));
    }
    let updated = count("/status/updatedReplicas");
    let ready = count("/status/readyReplicas");
    let available = count("/status/availableReplicas");
    let total = count("/status/replicas");
    if updated < desired {
        return Outcome::failed(format!("{w}: {updated} of {desired} replicas updated"));
    }
    if total > updated {
        return Outcome::failed(format!(
            "{w}: replicas of an older spec still running: {}",
            total - updated
        ));
    }
    if ready < desired || available < desired {
        return Outcome::failed(format!(
            "{w}: {ready} of {desired} replicas ready, {available} available"
        ));
    }
    Outcome::ok(format!("{w}: {desired} of {desired} replicas ready"))
}

/// The preflight of one workload, changing nothing: it exists, and the
/// credentials in use may read it and patch it (a SelfSubjectAccessReview
/// each, as `kubectl auth can-i` asks). `Ok` says what was found.
pub async fn preflight(cluster: &Cluster, w: &Workload) -> Result<String, String> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let ns = w.namespace.as_deref().unwrap_or(&cluster.namespace);
    let obj = api(cluster, w).get(&w.name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => format!("{w} not found in namespace {ns}"),
        kube::Error::Api(s) => format!("{w}: get failed: {} ({})", s.message, s.code),
        other => format!("{w}: get failed: {other}"),
    })?;
    let resource = match w.kind {
        WorkloadKind::Deployment => "deployments",
        WorkloadKind::StatefulSet => "statefulsets",
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(cluster.client.clone());
    for verb in ["get", "patch"] {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some("apps".to_owned()),
                    resource: Some(resource.to_owned()),
                    verb: Some(verb.to_owned()),
                    namespace: Some(ns.to_owned()),
                    name: Some(w.name.clone()),
                    ..ResourceAttributes::default()
                }),
                ..SelfSubjectAccessReviewSpec::default()
            },
            ..SelfSubjectAccessReview::default()
        };
        let answer = reviews
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| format!("{w}: cannot ask whether `{verb}` is allowed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if !status.allowed {
            let why = status.reason.filter(|r| !r.is_empty()).unwrap_or_default();
            return Err(format!(
                "{w}: `{verb}` is not allowed for these credentials{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ));
        }
    }
    let replicas = obj.data["spec"]["replicas"].as_i64().unwrap_or(0);
    Ok(format!(
        "present in {ns} ({replicas} replicas); get and patch allowed"
    ))
}

/// What the plan's kubernetes steps and probes need: the kubeconfig's
/// current context (or the pod's own config), for systems at sites without
/// `connect.kubernetes`; and the sites that have one, in plan order.
pub fn needs(plan: &blackstart_model::Plan) -> (bool, Vec<String>) {
    let mut default = false;
    let mut sites: Vec<String> = Vec::new();
    for (_, s) in plan.systems() {
        let uses = std::iter::once(&s.start)
            .chain(s.stop.as_ref())
            .any(|a| matches!(a, blackstart_model::playbook::Action::Kubernetes(_)))
            || s.verify
                .iter()
                .chain(&s.health)
                .any(|c| matches!(c, blackstart_model::playbook::Check::Kubernetes(_)));
        if !uses {
            continue;
        }
        match plan
            .connections
            .get(s.site.as_str())
            .and_then(|c| c.kubernetes.as_ref())
        {
            Some(_) if !sites.iter().any(|x| x == s.site) => sites.push(s.site.to_string()),
            Some(_) => {}
            None => default = true,
        }
    }
    (default, sites)
}
