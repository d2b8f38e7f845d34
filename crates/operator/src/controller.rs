//! The controller: RestartRuns in, engines driving them out.
//!
//! Kept in one file, though long: reconcile, the driver that steers an
//! engine from the spec, and the Events it publishes share one lifecycle.
//!
//! Reconcile is short, as kube-runtime wants it: it makes sure that each
//! unfinished RestartRun has one live driver and hands the driver the
//! latest spec. The driver is a task that owns the run's [`Engine`] for as
//! long as the run goes on: it starts it, pauses it when the spec says so,
//! rolls it back when asked, and records a failure-pause in the spec so a
//! person resumes by setting `paused` back to false. A driver that dies (its
//! store failed, the operator restarted) is replaced on the next pass by
//! one that resumes from the run's journal: the same fold as
//! `blackstart resume`, so healthy systems are never started again.
//!
//! Two replicas never drive the same run: only the holder of the Lease runs
//! this controller, and the store refuses to write over a journal that
//! someone else extended.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use blackstart_engine::step::{ProbeHook, StepContext, kubernetes::Cluster};
use blackstart_engine::{Engine, Event, Record, RunPhase, StagePhase, SystemPhase};
use blackstart_model::Plan;

use crate::crd::{FINALIZER, Playbook, RestartRun, RestartRunSpec};
use crate::metrics::Metrics;
use crate::requests::SpecRequests;
use crate::store::{StatusStore, StoreError};
use crate::switches::Switches;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("RestartRun {0} has no namespace; RestartRuns are namespaced")]
    NoNamespace(String),
    #[error("cannot read or patch RestartRun {run}: {source}")]
    Patch { run: String, source: kube::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("RestartRun {run}: {reason}")]
    Engine { run: String, reason: String },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Timings a test shortens.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a driver looks for new approvals.
    pub poll: Duration,
    /// The timeout of a step that sets none.
    pub step_timeout: Duration,
    /// How long a deleted run may take to pause before its work is cut.
    pub drain: Duration,
    /// How often a live run is looked at again without any change.
    pub recheck: Duration,
    /// How soon a run whose Playbook is missing or invalid is tried again.
    pub retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll: Duration::from_millis(500),
            step_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(30),
            recheck: Duration::from_secs(60),
            retry: Duration::from_secs(30),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    drivers: Mutex<HashMap<String, Driver>>,
    /// Where sites' kubeconfig Secrets are read: the operator's own namespace.
    pub secrets_namespace: String,
    /// Turned true by [`Context::abandon`]: appends waiting on the API
    /// server end, so the drivers' tasks can be dropped at once.
    abandoned: watch::Sender<bool>,
    /// Where the journal's writes run: a client and a runtime of their own
    /// (see [`StoreIo`]).
    pub store_io: StoreIo,
}

/// The journal's writes, apart from the runs they record.
///
/// The engine's store interface is synchronous, so a run's task waits for
/// each append in `block_in_place`, and the append drives its HTTP request
/// with `block_on`. If that request's connection belonged to the runtime
/// whose workers are all waiting so (two hundred systems starting at once
/// is two hundred appends waiting for the journal's one writer), nothing
/// would drive it: the run would stop, with no error. So the journal has
/// its own client, whose connections live on a runtime of their own, on
/// its own thread, which the run's tasks never occupy.
#[derive(Clone)]
pub struct StoreIo {
    pub client: Client,
    /// `None` in the tests' mocked API server, whose every request is
    /// answered in-process.
    pub runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for StoreIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreIo")
            .field("own_runtime", &self.runtime.is_some())
            .finish_non_exhaustive()
    }
}

impl StoreIo {
    /// A client of its own for `config`, on a runtime of its own, on a
    /// thread that lives as long as the process.
    pub fn dedicated(config: kube::Config) -> Result<StoreIo, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("journal-io".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("journal-io-worker")
                    .enable_all()
                    .build();
                match runtime {
                    Ok(rt) => {
                        let client = {
                            let _in = rt.enter();
                            Client::try_from(config).map_err(|e| e.to_string())
                        };
                        let _ = tx.send(client.map(|c| (c, rt.handle().clone())));
                        rt.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            })
            .map_err(|e| format!("cannot start the journal's thread: {e}"))?;
        let (client, runtime) = rx
            .recv()
            .map_err(|_| "the journal's thread ended at once".to_owned())??;
        Ok(StoreIo {
            client,
            runtime: Some(runtime),
        })
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The handles of one run's driver task.
struct Driver {
    uid: String,
    spec: watch::Sender<RestartRunSpec>,
    stop: watch::Sender<bool>,
    generation: Arc<AtomicI64>,
    task: JoinHandle<()>,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Context {
        let client_for_store = client.clone();
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            settings,
            drivers: Mutex::new(HashMap::new()),
            secrets_namespace: crate::LEASE_NAMESPACE.to_owned(),
            abandoned: watch::channel(false).0,
            store_io: StoreIo {
                client: client_for_store,
                runtime: None,
            },
        }
    }

    /// Writes journals through `io` (see [`StoreIo`]).
    pub fn with_store_io(mut self, io: StoreIo) -> Context {
        self.store_io = io;
        self
    }

    /// Reads sites' kubeconfig Secrets in `namespace` (the operator's own).
    pub fn with_secrets_namespace(mut self, namespace: String) -> Context {
        self.secrets_namespace = namespace;
        self
    }

    fn drivers(&self) -> MutexGuard<'_, HashMap<String, Driver>> {
        self.drivers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a driver is at work on the run `namespace/name`.
    pub fn driving(&self, key: &str) -> bool {
        self.drivers()
            .get(key)
            .is_some_and(|d| !d.task.is_finished())
    }

    /// Stops every driver at once, without waiting: for an operator that
    /// lost its lease, whose work another replica resumes.
    pub fn abandon(&self) {
        self.abandoned.send_replace(true);
        for (_, d) in self.drivers().drain() {
            d.task.abort();
        }
    }
}

/// A context that goes (the operator ends) lets its drivers go at once,
/// and ends the appends they wait on, rather than holding the runtime.
impl Drop for Context {
    fn drop(&mut self) {
        self.abandon();
    }
}

fn key(run: &RestartRun) -> String {
    format!("{}/{}", run.namespace().unwrap_or_default(), run.name_any())
}

/// One pass over one RestartRun.
pub async fn reconcile(run: Arc<RestartRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled();
    let ns = run
        .namespace()
        .ok_or_else(|| Error::NoNamespace(run.name_any()))?;
    let api: Api<RestartRun> = Api::namespaced(ctx.client.clone(), &ns);
    ctx.metrics.set_phase(&key(&run), run.phase());
    finalizer(&api, FINALIZER, run, |event| async {
        match event {
            Finalizer::Apply(run) => apply(run, &ctx, &api).await,
            Finalizer::Cleanup(run) => cleanup(&run, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// What a failed reconcile does: try again soon.
pub fn error_policy(run: Arc<RestartRun>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed();
    tracing::warn!(run = %key(&run), error = %error, "reconcile failed");
    Action::requeue(ctx.settings.retry)
}

async fn apply(
    run: Arc<RestartRun>,
    ctx: &Context,
    api: &Api<RestartRun>,
) -> Result<Action, Error> {
    let key = key(&run);
    let uid = run.uid().unwrap_or_default();
    let generation = run.metadata.generation.unwrap_or(0);
    {
        let mut drivers = ctx.drivers();
        if let Some(d) = drivers.get(&key) {
            if d.uid == uid && !d.task.is_finished() {
                d.generation.store(generation, Ordering::Relaxed);
                d.spec.send_if_modified(|spec| {
                    let changed = *spec != run.spec;
                    if changed {
                        spec.clone_from(&run.spec);
                    }
                    changed
                });
                return Ok(Action::requeue(ctx.settings.recheck));
            }
            drivers.remove(&key);
        }
    }
    if run.has_ended() && !(run.spec.rollback && run.phase() != "RolledBack") {
        return Ok(Action::await_change());
    }
    // The watch cache may lag behind what a driver that just died wrote:
    // a new driver starts from the API server's own copy.
    let run = api
        .get(&run.name_any())
        .await
        .map_err(|source| Error::Patch {
            run: key.clone(),
            source,
        })?;
    let generation = Arc::new(AtomicI64::new(run.metadata.generation.unwrap_or(0)));
    let (heralds, herald_rx) = mpsc::channel(HERALD_BUFFER);
    // The store reads and writes with the journal's own client, on its own
    // runtime (see `StoreIo`).
    let store_api: Api<RestartRun> = Api::namespaced(
        ctx.store_io.client.clone(),
        &run.namespace().unwrap_or_default(),
    );
    let load = StatusStore::load(
        store_api,
        run.clone(),
        Arc::clone(&generation),
        Some(heralds),
        ctx.store_io.runtime.clone(),
    );
    let store = match &ctx.store_io.runtime {
        Some(io) => io.spawn(load).await.map_err(|e| Error::Engine {
            run: key.clone(),
            reason: format!("loading its journal ended early: {e}"),
        })??,
        None => load.await?,
    }
    .abandoned_with(ctx.abandoned.subscribe());
    let new_run = store.records().is_empty();
    // A new run's sites are reached before it starts (nothing starts when
    // one cannot be); a run under way reaches them from its journal's plan.
    let (playbook_name, reached) = if new_run {
        let plan = match plan_for(&run, ctx)
            .await
            .and_then(|plan| secrets_set(&plan).map(|()| plan))
            .and_then(|plan| ssh_client_for(&plan, std::env::var_os("PATH")).map(|()| plan))
        {
            Ok(plan) => site_clusters(&plan, ctx).await.map(|c| (plan, c)),
            Err(e) => Err(e),
        };
        match plan {
            Ok((plan, clusters)) => {
                let name = plan.playbook.clone();
                blackstart_engine::RunStore::append(
                    &store,
                    &Event::RunStarted {
                        run: run.name_any(),
                        playbook: plan.playbook.clone(),
                        playbook_hash: plan.playbook_hash.clone(),
                        plan: Box::new(plan),
                        playbook_path: None,
                        drill: false,
                        require_signatures: false,
                    },
                )?;
                (name, Some(clusters))
            }
            Err(problem) => {
                not_started(&run, ctx, api, &problem).await?;
                return Ok(Action::requeue(ctx.settings.retry));
            }
        }
    } else {
        (run.spec.playbook_ref.name.clone(), None)
    };
    let records = store.records();
    let own_clusters = match (reached, records.first().map(|r| &r.event)) {
        (Some(clusters), _) => Ok(clusters),
        (None, Some(Event::RunStarted { plan, .. })) => site_clusters(plan, ctx).await,
        (None, _) => Ok(HashMap::new()),
    };
    let own_clusters = match own_clusters {
        Ok(c) => c,
        Err(problem) => {
            // Nothing is driven until the site can be reached: its steps
            // never go to another cluster instead.
            tracing::warn!(run = %key, problem, "a site's cluster cannot be reached");
            publish(
                &ctx.recorder,
                &run.object_ref(&()),
                EventType::Warning,
                "SiteUnreachable",
                &problem,
                "Resume",
            )
            .await;
            return Ok(Action::requeue(ctx.settings.retry));
        }
    };
    let ns = run.namespace().unwrap_or_default();
    let counter = ctx.metrics.probe_failures(&playbook_name);
    let retries = ctx.metrics.api_retries(&playbook_name);
    let cx = StepContext::new(
        blackstart_engine::secrets::Secrets::from_env(),
        ctx.settings.step_timeout,
    )
    .map_err(|reason| Error::Engine {
        run: key.clone(),
        reason,
    })?
    .with_cluster(Cluster {
        client: ctx.client.clone(),
        namespace: ns,
    });
    let cx = StepContext {
        site_clusters: Arc::new(own_clusters),
        on_probe_failure: Some(ProbeHook(Arc::new(move || {
            counter.inc();
        }))),
        on_api_retry: Some(ProbeHook(Arc::new(move || {
            retries.inc();
        }))),
        ..cx
    };
    let (spec_tx, spec_rx) = watch::channel(run.spec.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (pause_tx, pause_rx) = watch::channel(run.spec.paused);
    let requests = Arc::new(SpecRequests::new(spec_rx.clone(), &records));
    let engine =
        Engine::new(store, &records, cx, requests, pause_rx, ctx.settings.poll).map_err(|e| {
            Error::Engine {
                run: key.clone(),
                reason: e.to_string(),
            }
        })?;
    let herald = Herald {
        recorder: ctx.recorder.clone(),
        reference: run.object_ref(&()),
        metrics: Arc::clone(&ctx.metrics),
        playbook: playbook_name,
        run: key.clone(),
    };
    tokio::spawn(herald.announce(herald_rx));
    let driver = Steering {
        switches: Arc::new(Switches::new(engine.clone(), &run.spec, &records)),
        engine,
        spec: spec_rx,
        stop: stop_rx,
        pause: pause_tx,
        api: api.clone(),
        name: run.name_any(),
        recorder: ctx.recorder.clone(),
        reference: run.object_ref(&()),
    };
    let task = tokio::spawn(driver.drive());
    ctx.drivers().insert(
        key,
        Driver {
            uid,
            spec: spec_tx,
            stop: stop_tx,
            generation,
            task,
        },
    );
    Ok(Action::requeue(ctx.settings.recheck))
}

/// A deleted run: pause it, give its in-flight steps `drain` to finish,
/// then cut what is left. Nothing is stopped: deleting a record of a
/// restart must not undo the restart.
async fn cleanup(run: &RestartRun, ctx: &Context) -> Result<Action, Error> {
    let key = key(run);
    let driver = ctx.drivers().remove(&key);
    if let Some(d) = driver {
        d.stop.send_replace(true);
        let mut task = d.task;
        if tokio::time::timeout(ctx.settings.drain, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
    ctx.metrics.forget(&key);
    tracing::info!(run = %key, "run deleted; its driver stopped");
    Ok(Action::await_change())
}

/// The most systems one RestartRun takes: what this release is measured
/// at. The journal itself has no limit (it is in segments), and the status
/// is a summary; the Playbook object must still fit the API server's
/// 1.5 MiB, about 6,000 tersely written systems.
pub const MAX_SYSTEMS: usize = 10_000;

/// The plan of a new run, or why there is none yet.
async fn plan_for(run: &RestartRun, ctx: &Context) -> Result<Plan, String> {
    let ns = run.namespace().unwrap_or_default();
    let name = &run.spec.playbook_ref.name;
    let playbooks: Api<Playbook> = Api::namespaced(ctx.client.clone(), &ns);
    let pb = match playbooks.get_opt(name).await {
        Ok(Some(pb)) => pb,
        Ok(None) => return Err(format!("Playbook {ns}/{name} does not exist")),
        Err(e) => return Err(format!("cannot read Playbook {ns}/{name}: {e}")),
    };
    let plan = plan_playbook(&pb)?;
    if plan.system_count() > MAX_SYSTEMS {
        return Err(format!(
            "Playbook {ns}/{name} has {} systems; one RestartRun takes at most {MAX_SYSTEMS}: split it into several Playbooks, or run it with the CLI",
            plan.system_count()
        ));
    }
    Ok(plan)
}

/// Checks a Playbook object exactly as `blackstart validate` checks a file
/// (the object is rendered as JSON, which is YAML) and plans it.
pub fn plan_playbook(pb: &Playbook) -> Result<Plan, String> {
    let name = pb.name_any();
    let doc = json!({
        "apiVersion": blackstart_model::playbook::API_VERSION,
        "kind": blackstart_model::playbook::KIND,
        "metadata": {"name": name},
        "spec": pb.spec,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    match blackstart_model::load(text.as_bytes()) {
        Ok(valid) => Ok(Plan::build(valid)),
        Err(diags) => {
            let file = format!("Playbook {}/{name}", pb.namespace().unwrap_or_default());
            let errors: Vec<String> = diags
                .items
                .iter()
                .filter(|d| d.severity == blackstart_model::Severity::Error)
                .map(|d| d.message.clone())
                .collect();
            Err(format!("{file} is not valid: {}", errors.join("; ")))
        }
    }
}

/// Says in the status and in an Event why a run cannot start yet.
/// Every `${env:NAME}` the plan reads is set in the operator's environment
/// (from its Deployment's Secret), or the run does not start: a missing
/// secret found mid-restart would stop it half-way.
fn secrets_set(plan: &Plan) -> Result<(), String> {
    let secrets = blackstart_engine::secrets::Secrets::from_env();
    secrets.preload(plan.env.iter().map(String::as_str)).map_err(|missing| {
        let list: Vec<String> = missing.iter().map(|n| format!("${{env:{n}}}")).collect();
        format!(
            "the playbook reads {}, which {} not set in the operator's environment; nothing was started: add {} to the Secret blackstart-playbook-env (the operator's envFrom) and restart the operator",
            list.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            if missing.len() == 1 { "it" } else { "them" },
        )
    })
}

/// A plan with sites reached over ssh needs the OpenSSH client, which the
/// shipped (distroless) image does not have: such a run is not started,
/// rather than failing at its first remote step.
pub(crate) fn ssh_client_for(plan: &Plan, path: Option<std::ffi::OsString>) -> Result<(), String> {
    let Some(site) = plan
        .connections
        .iter()
        .find_map(|(id, c)| c.ssh.as_ref().map(|_| id))
    else {
        return Ok(());
    };
    let found =
        path.is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("ssh").is_file()));
    if found {
        Ok(())
    } else {
        Err(format!(
            "site `{site}` is reached over ssh (connect.ssh), but the operator has no ssh client on its PATH; nothing was started: run this playbook from a terminal, or give the operator an image with Debian's openssh-client"
        ))
    }
}

/// The clusters of the sites whose kubernetes steps have a cluster of
/// their own, each from the kubeconfig in the Secret the playbook names
/// (`connect.kubernetes.secretRef`), read in the operator's own namespace.
async fn site_clusters(plan: &Plan, ctx: &Context) -> Result<HashMap<String, Cluster>, String> {
    use k8s_openapi::api::core::v1::Secret;
    let ns = &ctx.secrets_namespace;
    let mut out = HashMap::new();
    for site in blackstart_engine::step::kubernetes::needs(plan).1 {
        let kube = plan
            .connections
            .get(&site)
            .and_then(|c| c.kubernetes.clone())
            .unwrap_or_default();
        let Some(name) = kube.secret_ref else {
            return Err(format!(
                "site `{site}` names a kubeconfig context but no secretRef: the operator reads a site's kubeconfig only from a Secret in its own namespace ({ns}); add connect.kubernetes.secretRef"
            ));
        };
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        let secret = secrets
            .get(&name)
            .await
            .map_err(|e| format!("site `{site}`: cannot read Secret {ns}/{name}: {e}"))?;
        let text = secret
            .data
            .and_then(|d| d.get("kubeconfig").cloned())
            .and_then(|b| String::from_utf8(b.0).ok())
            .ok_or_else(|| {
                format!("site `{site}`: Secret {ns}/{name} has no `kubeconfig` key in UTF-8")
            })?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).map_err(|e| {
            format!("site `{site}`: the kubeconfig in Secret {ns}/{name} cannot be read: {e}")
        })?;
        let options = kube::config::KubeConfigOptions {
            context: kube.context.clone(),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| {
                format!("site `{site}`: the kubeconfig in Secret {ns}/{name} cannot be used: {e}")
            })?;
        let cluster = Cluster::from_config(config)
            .map_err(|e| format!("site `{site}`: no client from Secret {ns}/{name}: {e}"))?;
        out.insert(site, cluster);
    }
    Ok(out)
}

async fn not_started(
    run: &RestartRun,
    ctx: &Context,
    api: &Api<RestartRun>,
    problem: &str,
) -> Result<(), Error> {
    tracing::warn!(run = %key(run), problem, "run cannot start");
    publish(
        &ctx.recorder,
        &run.object_ref(&()),
        EventType::Warning,
        "PlaybookNotUsable",
        problem,
        "Plan",
    )
    .await;
    let patch = json!({"status": {
        "phase": "Pending",
        "reason": problem,
        "observedGeneration": run.metadata.generation,
    }});
    api.patch_status(
        &run.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|source| Error::Patch {
        run: key(run),
        source,
    })?;
    Ok(())
}

async fn publish(
    recorder: &Recorder,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
) {
    // An Event's note is at most 1 KiB.
    let mut note = note.to_owned();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push('…');
    }
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, reference).await {
        tracing::warn!(reason, error = %e, "cannot publish a Kubernetes Event");
    }
}

/// One run's driver: the engine and what steers it.
struct Steering {
    engine: Engine<StatusStore>,
    switches: Arc<Switches>,
    spec: watch::Receiver<RestartRunSpec>,
    stop: watch::Receiver<bool>,
    pause: watch::Sender<bool>,
    api: Api<RestartRun>,
    name: String,
    recorder: Recorder,
    reference: k8s_openapi::api::core::v1::ObjectReference,
}

impl Steering {
    async fn drive(mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            let spec = self.spec.borrow().clone();
            let phase = self.engine.with_state(|s| s.phase);
            if let Some(by) = self.switches.rollback(&spec) {
                let reason = spec
                    .rollback_reason
                    .clone()
                    .unwrap_or_else(|| "rollback requested in the RestartRun's spec".to_owned());
                if phase != RunPhase::RolledBack
                    && let Err(e) = self.engine.rollback(&reason, by.as_deref()).await
                {
                    self.failed(&e.to_string()).await;
                }
                return;
            }
            if phase.is_final() {
                // A finished run waits only for a rollback that is taken.
                if spec.rollback && self.wait_for_change().await {
                    continue;
                }
                return;
            }
            let paused = self.switches.paused(&spec);
            if paused && phase != RunPhase::Running {
                if !self.wait_for_change().await {
                    return;
                }
                continue;
            }
            self.pause.send_replace(paused);
            let result = {
                let steer = steer(
                    self.engine.clone(),
                    Arc::clone(&self.switches),
                    self.spec.clone(),
                    self.stop.clone(),
                    self.pause.clone(),
                );
                tokio::select! {
                    result = self.engine.run() => result,
                    () = steer => continue,
                }
            };
            match result {
                Ok(RunPhase::Paused) => {
                    let spec = self.spec.borrow().clone();
                    let asked =
                        self.switches.paused(&spec) || self.switches.rollback(&spec).is_some();
                    if !asked && !*self.stop.borrow() {
                        self.record_failure_pause().await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.failed(&e.to_string()).await;
                    return;
                }
            }
        }
    }

    /// Waits for a new spec or deletion; false when nothing can come.
    async fn wait_for_change(&mut self) -> bool {
        tokio::select! {
            r = self.spec.changed() => r.is_ok(),
            r = self.stop.changed() => r.is_ok(),
        }
    }

    /// The engine paused itself (a stage failed and its gate says pause):
    /// the spec says so too, so that resuming is setting it back to false.
    async fn record_failure_pause(&mut self) {
        let patch = json!({"spec": {"paused": true}});
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                // Wait until the watch brings the paused spec back, so the
                // loop does not resume on the stale one.
                let mut spec = self.spec.clone();
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = spec.wait_for(|s| s.paused || s.rollback) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
            Err(e) => {
                publish(
                    &self.recorder,
                    &self.reference,
                    EventType::Warning,
                    "PauseNotRecorded",
                    &format!("the run paused but spec.paused could not be set: {e}; set it to true, then false, to resume"),
                    "Pause",
                )
                .await;
                self.wait_for_change().await;
            }
        }
    }

    async fn failed(&self, reason: &str) {
        tracing::error!(run = %self.name, reason, "driver stopped");
        publish(
            &self.recorder,
            &self.reference,
            EventType::Warning,
            "DriverStopped",
            &format!("{reason}; the operator resumes the run from its status"),
            "Drive",
        )
        .await;
    }
}

/// Keeps the engine's pause switch in line with the spec (and deletion)
/// while the engine runs; never ends on its own.
async fn steer(
    engine: Engine<StatusStore>,
    switches: Arc<Switches>,
    mut spec: watch::Receiver<RestartRunSpec>,
    mut stop: watch::Receiver<bool>,
    pause: watch::Sender<bool>,
) {
    loop {
        let alive = tokio::select! {
            r = spec.changed() => r.is_ok(),
            r = stop.changed() => r.is_ok(),
        };
        if !alive {
            std::future::pending::<()>().await;
        }
        let s = spec.borrow().clone();
        let rollback = switches.rollback(&s).is_some();
        if *stop.borrow() {
            engine.pause_because(
                "the RestartRun was deleted: no new starts; what the run started is left as it is",
            );
        } else if rollback {
            // The pause that stops new starts is the rollback's first step,
            // and the journal says rollback, not pause.
            engine.rollback_comes_next();
        }
        pause.send_replace(switches.paused(&s) || rollback || *stop.borrow());
    }
}

/// Turns a run's records into Kubernetes Events and stage metrics.
struct Herald {
    recorder: Recorder,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    metrics: Arc<Metrics>,
    playbook: String,
    run: String,
}

impl Herald {
    async fn announce(self, mut records: mpsc::Receiver<Record>) {
        let mut stage_start: HashMap<String, std::time::SystemTime> = HashMap::new();
        while let Some(record) = records.recv().await {
            let at = humantime::parse_rfc3339(&record.at).ok();
            if let Event::Stage { stage, phase, .. } = &record.event {
                match phase {
                    StagePhase::Running => {
                        if let Some(at) = at {
                            stage_start.insert(stage.clone(), at);
                        }
                    }
                    StagePhase::Succeeded | StagePhase::Failed | StagePhase::RolledBack => {
                        if let (Some(start), Some(end)) = (stage_start.remove(stage), at)
                            && let Ok(took) = end.duration_since(start)
                        {
                            self.metrics
                                .stage_finished(&self.playbook, took.as_secs_f64());
                        }
                    }
                    _ => {}
                }
            }
            if let Event::Run { phase, .. } = &record.event {
                self.metrics.set_phase(&self.run, &format!("{phase:?}"));
            }
            if let Some((type_, reason, note, action)) = describe(&record.event) {
                publish(
                    &self.recorder,
                    &self.reference,
                    type_,
                    &reason,
                    &note,
                    &action,
                )
                .await;
            }
        }
    }
}

/// How many records may wait for the Events publisher before announcements
/// are left out rather than hold the run up.
const HERALD_BUFFER: usize = 1024;

/// The Kubernetes Event for a record, if it is one people should see in
/// `kubectl describe`: run and stage transitions, gates, rollbacks,
/// approvals, failures. The reason is a CamelCase word from this closed
/// set; the note is the engine's one text for the event, as `audit` shows it.
pub fn describe(event: &Event) -> Option<(EventType, String, String, String)> {
    use EventType::{Normal, Warning};
    let (type_, reason, action) = match event {
        Event::RunStarted { .. } => (Normal, "Planned".to_owned(), "Plan".to_owned()),
        Event::Run { phase, .. } => {
            let type_ = match phase {
                RunPhase::Failed | RunPhase::RolledBack => Warning,
                _ => Normal,
            };
            (type_, format!("Run{phase:?}"), "Run".to_owned())
        }
        Event::Stage { stage, phase, .. } => {
            let (type_, reason) = match phase {
                StagePhase::Running => (Normal, "StageStarted"),
                StagePhase::Gate => (Normal, "GateReached"),
                StagePhase::Succeeded => (Normal, "GatePassed"),
                StagePhase::Failed => (Warning, "StageFailed"),
                StagePhase::RolledBack => (Warning, "StageRolledBack"),
                StagePhase::Pending | StagePhase::Skipped => return None,
            };
            (type_, reason.to_owned(), subject("Stage", stage))
        }
        Event::RollbackBegun { stage, .. } => (
            Warning,
            "RollbackBegun".to_owned(),
            stage
                .as_deref()
                .map_or_else(|| "Rollback".to_owned(), |s| subject("Rollback", s)),
        ),
        Event::SiteHeld { site, .. } => (Warning, "SiteHeld".to_owned(), subject("Hold", site)),
        Event::Approved { stage, .. } => (Normal, "Approved".to_owned(), subject("Approve", stage)),
        Event::Denied { stage, .. } => (Warning, "Denied".to_owned(), subject("Deny", stage)),
        Event::KeyRevoked { key, .. } => (Warning, "KeyRevoked".to_owned(), subject("Revoke", key)),
        Event::Refused {
            decision,
            subject: what,
            ..
        } => (
            Warning,
            "DecisionRefused".to_owned(),
            subject(&format!("Refuse {decision}"), what),
        ),
        Event::System {
            system,
            phase: SystemPhase::Failed,
            ..
        } => (Warning, "SystemFailed".to_owned(), subject("Start", system)),
        _ => return None,
    };
    Some((type_, reason, event.describe(), action))
}

/// An Event's action naming what it acted on. Kubernetes folds Events with
/// the same type, reason and action into one series that keeps the first
/// note, so a stage's name in the action keeps each stage's Events apart.
/// At most 128 bytes, as the API server takes.
fn subject(verb: &str, what: &str) -> String {
    let mut action = format!("{verb} {what}");
    let mut cut = action.len().min(128);
    while !action.is_char_boundary(cut) {
        cut -= 1;
    }
    action.truncate(cut);
    action
}
