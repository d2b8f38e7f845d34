//! The operator's RunStore: a run's journal in ConfigMap segments
//! ([`crate::segments`]), and the summary kubectl shows in its RestartRun's
//! status.
//!
//! Each event is first appended to the journal (durable, and fenced: a
//! writer whose view is stale stops rather than fork the run's history),
//! then the status summary (phase, stage, each stage's phase, systems per
//! phase and the ones that need a look, conditions, the journal's length
//! and head) is replaced with what the journal now folds to. The summary
//! write carries the resourceVersion the store last saw; a conflict (a
//! person approving bumps the version) is retried after a fresh read, and
//! an answer lost on the way is simply written again (the summary is the
//! same). A crash between the two writes leaves the summary one event
//! behind until the next: the journal is what counts.
//!
//! A RestartRun written by the release before, with its journal in
//! `status.journal`, has that journal moved into segments when it is
//! loaded, and the status field removed.
//!
//! The engine's store interface is synchronous (the file journal's fsync
//! is), so the HTTP round trip runs inside `block_in_place`, which needs
//! tokio's multi-threaded runtime; on any other the store says so instead
//! of panicking.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use tokio::sync::mpsc;

use blackstart_engine::step::retry::{backoff, retry_after, transient};
use blackstart_engine::{Event, Record, RunPhase, RunState, RunStore, StagePhase, SystemPhase};
use blackstart_model::Plan;

use crate::crd::{
    Condition, NOTABLE_SYSTEMS, RestartRun, RestartRunStatus, StageStatus, SystemStatus,
};
use crate::segments::{SegmentError, Segments};

/// How often a conflicting status patch is tried again after a fresh read.
pub const CONFLICT_RETRIES: usize = 5;
/// How many writes with an unknown outcome (5xx, 429, a dropped
/// connection) are retried, with backoff, before the run stops: about 20 s.
pub const STATUS_RETRIES: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot patch the status of RestartRun {run}: {source}")]
    Patch { run: String, source: kube::Error },
    #[error("cannot read RestartRun {run}: {source}")]
    Read { run: String, source: kube::Error },
    #[error(
        "the journal of RestartRun {run} was written by someone else (it has {theirs} records, this operator {ours}); stopped writing so the run's history does not fork"
    )]
    Fenced {
        run: String,
        ours: usize,
        theirs: usize,
    },
    #[error(
        "RestartRun {run}: the status kept changing; gave up after {CONFLICT_RETRIES} conflicts"
    )]
    Contended { run: String },
    #[error("RestartRun {run}: {reason}")]
    Fold { run: String, reason: String },
    #[error("RestartRun {run}: {source}")]
    Journal { run: String, source: SegmentError },
    #[error(
        "RestartRun {run}: an earlier write to its journal failed ({reason}); this operator writes no more to it, and the next driver reads it afresh"
    )]
    Failed { run: String, reason: String },
    #[error("the status store needs tokio's multi-threaded runtime")]
    Runtime,
    #[error(
        "RestartRun {run}: the operator gave its runs up (a lost Lease, a shutdown); the next leader resumes it"
    )]
    Abandoned { run: String },
}

/// The RunStore of one RestartRun.
pub struct StatusStore {
    api: Api<RestartRun>,
    name: String,
    /// The generation of the spec the operator last acted on.
    generation: Arc<AtomicI64>,
    /// Every appended record goes here too, for Kubernetes Events and metrics.
    heralds: Option<mpsc::Sender<Record>>,
    /// The journal's segments, held from a record's making to its landing:
    /// appends come from many tasks at once, and each record must follow
    /// the one before.
    writer: tokio::sync::Mutex<Segments>,
    /// The runtime whose thread drives the store's HTTP requests, when it
    /// has one of its own (see `controller::StoreIo`).
    io: Option<tokio::runtime::Handle>,
    /// Set when the operator gives its runs up (a lost Lease, a shutdown):
    /// an append still waiting for the API server ends then, so that the
    /// thread it blocks is freed and the run's task can be dropped.
    abandoned: Option<tokio::sync::watch::Receiver<bool>>,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StatusStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusStore")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// What the journal holds.
    records: Vec<Record>,
    /// Made, in the state, and waiting for the writer (a group commit).
    pending: Vec<Record>,
    /// Why a write failed; the store writes nothing after it.
    failed: Option<String>,
    /// The last record made, written or not: the next one follows it.
    made: Option<Record>,
    state: Option<RunState>,
    conditions: Vec<Condition>,
    resource_version: Option<String>,
    /// How many segments the journal has, for the summary.
    segments: usize,
    /// Whether the RestartRun has a status yet (the first summary adds it).
    has_status: bool,
}

/// The owner reference that ties a run's segments to it, so that deleting
/// the RestartRun deletes them.
fn owner_of(run: &RestartRun) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: RestartRun::api_version(&()).into_owned(),
        kind: RestartRun::kind(&()).into_owned(),
        name: run.metadata.name.clone()?,
        uid: run.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

/// The ConfigMaps of a run's namespace, where its segments are.
pub fn segments_api(api: &Api<RestartRun>, run: &RestartRun) -> Api<ConfigMap> {
    let client: kube::Client = api.clone().into_client();
    match &run.metadata.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::default_namespaced(client),
    }
}

/// A run's journal as the API server holds it: its segments, or for a run
/// of the release before, its status.
pub async fn read_journal(
    api: &Api<RestartRun>,
    run: &RestartRun,
) -> Result<Vec<Record>, StoreError> {
    let name = run.metadata.name.clone().unwrap_or_default();
    let (_, records) = Segments::read(segments_api(api, run), &name, None)
        .await
        .map_err(|source| StoreError::Journal { run: name, source })?;
    if records.is_empty() {
        return Ok(run.status.clone().unwrap_or_default().journal);
    }
    Ok(records)
}

impl StatusStore {
    /// A store for `run` as read from the API server: its journal, read
    /// from its segments and checked. A journal still in the status (the
    /// release before) is moved into segments first.
    pub async fn load(
        api: Api<RestartRun>,
        run: RestartRun,
        generation: Arc<AtomicI64>,
        heralds: Option<mpsc::Sender<Record>>,
        io: Option<tokio::runtime::Handle>,
    ) -> Result<StatusStore, StoreError> {
        let run = &run;
        let name = run.metadata.name.clone().unwrap_or_default();
        let status = run.status.clone().unwrap_or_default();
        let journal_err = |source| StoreError::Journal {
            run: name.clone(),
            source,
        };
        let (mut segments, mut records) =
            Segments::read(segments_api(&api, run), &name, owner_of(run))
                .await
                .map_err(journal_err)?;
        let mut resource_version = run.metadata.resource_version.clone();
        if records.is_empty() && !status.journal.is_empty() {
            Record::verify_chain(&status.journal).map_err(|reason| StoreError::Fold {
                run: name.clone(),
                reason: format!("its journal does not verify: {reason}"),
            })?;
            segments
                .append(&status.journal)
                .await
                .map_err(journal_err)?;
            records = status.journal.clone();
            resource_version = carried_over(&api, &name, &records, segments.count()).await?;
        }
        Record::verify_chain(&records).map_err(|reason| StoreError::Fold {
            run: name.clone(),
            reason: format!("its journal does not verify: {reason}"),
        })?;
        let state = if records.is_empty() {
            None
        } else {
            Some(
                RunState::fold(records.iter().map(|r| (r.seq, &r.event))).map_err(|e| {
                    StoreError::Fold {
                        run: name.clone(),
                        reason: e.to_string(),
                    }
                })?,
            )
        };
        let count = segments.count();
        Ok(StatusStore {
            api,
            name,
            generation,
            heralds,
            writer: tokio::sync::Mutex::new(segments),
            io,
            abandoned: None,
            inner: Mutex::new(Inner {
                records,
                pending: Vec::new(),
                failed: None,
                made: None,
                state,
                conditions: status.conditions,
                resource_version,
                segments: count,
                has_status: run.status.is_some(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn records(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// The same store, whose waiting appends end when `abandoned` turns true.
    pub fn abandoned_with(self, abandoned: tokio::sync::watch::Receiver<bool>) -> StatusStore {
        StatusStore {
            abandoned: Some(abandoned),
            ..self
        }
    }

    /// Appends from async code: the same as [`RunStore::append`], without
    /// blocking a runtime thread.
    pub async fn append_async(&self, event: &Event) -> Result<Record, StoreError> {
        let record = self.prepare(event)?;
        // Group commit: whoever holds the writer writes every record made
        // while it waited, in one request per segment and one summary.
        let mut segments = self.writer.lock().await;
        let batch = {
            let mut g = self.lock();
            if let Some(why) = &g.failed {
                return Err(StoreError::Failed {
                    run: self.name.clone(),
                    reason: why.clone(),
                });
            }
            if g.records.last().is_some_and(|r| r.seq >= record.seq) {
                // Written by the writer before this one.
                return Ok(record);
            }
            std::mem::take(&mut g.pending)
        };
        if let Err(source) = segments.append(&batch).await {
            // The state took these events in; the journal did not. Like a
            // journal file after a failed fsync, the store writes no more:
            // the next driver reads the journal afresh.
            let mut g = self.lock();
            g.failed = Some(source.to_string());
            g.state = None;
            return Err(StoreError::Journal {
                run: self.name.clone(),
                source,
            });
        }
        // In the journal: the records are this run's history from now on,
        // whatever becomes of the summary.
        let last = {
            let mut g = self.lock();
            g.records.extend(batch.iter().cloned());
            g.segments = segments.count();
            batch.last().cloned()
        };
        for r in &batch {
            self.herald(r);
        }
        if let Some(last) = last {
            self.write_summary(&last).await?;
        }
        Ok(record)
    }

    /// Tells the Events publisher. Announcing never holds the run up: when
    /// the publisher is that far behind, this one is left out (the journal
    /// has it).
    fn herald(&self, record: &Record) {
        if let Some(h) = &self.heralds
            && let Err(mpsc::error::TrySendError::Full(r)) = h.try_send(record.clone())
        {
            tracing::warn!(
                seq = r.seq,
                "the Events publisher is behind; an Event was left out"
            );
        }
    }

    /// Replaces the status summary with what the journal now folds to.
    async fn write_summary(&self, record: &Record) -> Result<(), StoreError> {
        let ops = self.summary_ops(record)?;
        let (mut conflicts, mut unsure, mut delays) = (0, 0, backoff());
        loop {
            let rv = self.lock().resource_version.clone();
            let mut all = Vec::with_capacity(ops.len() + 1);
            if let Some(rv) = rv {
                // The precondition: the API server answers 409 if the
                // object changed since this version.
                all.push(PatchOperation::Replace(ReplaceOperation {
                    path: pointer("/metadata/resourceVersion"),
                    value: Value::String(rv),
                }));
            }
            all.extend(ops.iter().cloned());
            let patch = Patch::Json::<()>(json_patch::Patch(all));
            match self
                .api
                .patch_status(&self.name, &PatchParams::default(), &patch)
                .await
            {
                Ok(obj) => {
                    let mut g = self.lock();
                    g.resource_version = obj.metadata.resource_version.clone();
                    g.has_status = true;
                    if let Some(status) = obj.status {
                        g.conditions = status.conditions;
                    }
                    return Ok(());
                }
                // A 5xx, a 429 or a dropped connection: the summary is the
                // same whether or not it landed, so it is written again,
                // from a fresh read (it may have moved the version).
                Err(e) if transient(&e) && unsure < STATUS_RETRIES => {
                    unsure += 1;
                    let backed_off = delays.next().unwrap_or(Duration::from_secs(2));
                    tokio::time::sleep(retry_after(&e).unwrap_or(backed_off)).await;
                    let _ = self.refresh().await;
                }
                Err(kube::Error::Api(s)) if s.code == 409 && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    self.refresh().await?;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    return Err(StoreError::Contended {
                        run: self.name.clone(),
                    });
                }
                Err(source) => {
                    return Err(StoreError::Patch {
                        run: self.name.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Takes the RestartRun's current resourceVersion for another try.
    async fn refresh(&self) -> Result<(), StoreError> {
        let fresh = self
            .api
            .get_status(&self.name)
            .await
            .map_err(|source| StoreError::Read {
                run: self.name.clone(),
                source,
            })?;
        let mut g = self.lock();
        g.has_status = fresh.status.is_some();
        g.resource_version = fresh.metadata.resource_version;
        Ok(())
    }

    /// The record for `event`, taken into the state. The fold refuses an
    /// event that cannot follow (an unknown system, a second start) before
    /// it changes anything, so no such record is written. Applied in place,
    /// not to a copy: at 10,000 systems a copy per event would cost more
    /// than the API server's round trips.
    fn prepare(&self, event: &Event) -> Result<Record, StoreError> {
        let mut g = self.lock();
        if let Some(why) = &g.failed {
            return Err(StoreError::Failed {
                run: self.name.clone(),
                reason: why.clone(),
            });
        }
        // After the last record made: one waiting, one being written, or
        // one in the journal.
        let record = Record::next(g.made.as_ref().or(g.records.last()), event.clone());
        let fold_err = |e: blackstart_engine::FoldError| StoreError::Fold {
            run: self.name.clone(),
            reason: e.to_string(),
        };
        match g.state.as_mut() {
            Some(state) => state.apply(record.seq, &record.event).map_err(fold_err)?,
            // A new run (its first record must be RunStarted, as the fold
            // says), or one whose last append failed: folded afresh.
            None => {
                let state = RunState::fold(
                    g.records
                        .iter()
                        .chain(&g.pending)
                        .chain([&record])
                        .map(|r| (r.seq, &r.event)),
                )
                .map_err(fold_err)?;
                g.state = Some(state);
            }
        }
        g.pending.push(record.clone());
        g.made = Some(record.clone());
        Ok(record)
    }

    /// The patch that writes the summary of `state`, `record` being the
    /// journal's last.
    fn summary_ops(&self, record: &Record) -> Result<Vec<PatchOperation>, StoreError> {
        let g = self.lock();
        let Some(state) = g.state.as_ref() else {
            return Ok(Vec::new());
        };
        // The plan is the first record's.
        let first = g.records.first().unwrap_or(record);
        let Event::RunStarted { plan, .. } = &first.event else {
            return Err(StoreError::Fold {
                run: self.name.clone(),
                reason: "the first event of a run must be RunStarted".into(),
            });
        };
        let summary = RestartRunStatus {
            journal_length: Some(record.seq),
            journal_head: Some(record.hash.clone()),
            journal_segments: Some(g.segments as u32),
            ..summarize(
                state,
                plan,
                &first.at,
                &record.at,
                &g.conditions,
                self.generation.load(Ordering::Relaxed),
            )
        };
        if !g.has_status {
            return Ok(vec![add(
                "/status",
                serde_json::to_value(&summary).unwrap_or(Value::Null),
            )]);
        }
        let summary = serde_json::to_value(&summary).unwrap_or(Value::Null);
        Ok(SUMMARY_FIELDS
            .iter()
            .map(|field| {
                // A field the summary leaves out is empty now: a list or a
                // map as an empty one (a null would not read back), any
                // other as null.
                let value = summary.get(field).cloned().unwrap_or(match *field {
                    "stages" | "systems" | "conditions" => Value::Array(Vec::new()),
                    "systemCounts" => Value::Object(serde_json::Map::new()),
                    _ => Value::Null,
                });
                add(&format!("/status/{field}"), value)
            })
            .collect())
    }
}

/// After the journal of the release before was moved into segments: the
/// status loses it and says where it went. Returns the new resourceVersion.
async fn carried_over(
    api: &Api<RestartRun>,
    name: &str,
    records: &[Record],
    segments: usize,
) -> Result<Option<String>, StoreError> {
    let last = records.last();
    let ops = vec![
        PatchOperation::Remove(RemoveOperation {
            path: pointer("/status/journal"),
        }),
        add(
            "/status/journalLength",
            serde_json::json!(last.map(|r| r.seq)),
        ),
        add(
            "/status/journalHead",
            serde_json::json!(last.map(|r| &r.hash)),
        ),
        add("/status/journalSegments", serde_json::json!(segments)),
    ];
    let patch = Patch::Json::<()>(json_patch::Patch(ops));
    let obj = api
        .patch_status(name, &PatchParams::default(), &patch)
        .await
        .map_err(|source| StoreError::Patch {
            run: name.to_owned(),
            source,
        })?;
    Ok(obj.metadata.resource_version)
}

/// The status fields derived from the journal, replaced with each event.
const SUMMARY_FIELDS: [&str; 14] = [
    "phase",
    "reason",
    "planHash",
    "stage",
    "stages",
    "systemCounts",
    "systems",
    "conditions",
    "observedGeneration",
    "startTime",
    "completionTime",
    "journalLength",
    "journalHead",
    "journalSegments",
];

fn pointer(path: &str) -> PointerBuf {
    PointerBuf::parse(path).expect("status paths are valid JSON pointers")
}

fn add(path: &str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(path),
        value,
    })
}

impl RunStore for StatusStore {
    type Error = StoreError;

    fn append(&self, event: &Event) -> Result<Record, StoreError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| StoreError::Runtime)?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(StoreError::Runtime);
        }
        let mut abandoned = self.abandoned.clone();
        // Driven on the store's own runtime when it has one, so that its
        // requests never wait for the workers this call is blocking.
        let io = self.io.clone().unwrap_or(handle);
        tokio::task::block_in_place(|| {
            io.block_on(async {
                tokio::select! {
                    r = self.append_async(event) => r,
                    () = async {
                        match abandoned.as_mut() {
                            Some(a) => {
                                let _ = a.wait_for(|a| *a).await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    } => Err(StoreError::Abandoned { run: self.name.clone() }),
                }
            })
        })
    }

    fn load(&self) -> Result<Vec<Record>, StoreError> {
        Ok(self.records())
    }
}

/// What kubectl shows, folded from the journal.
/// `started` is when the run's first record was made, `now` its latest's.
pub fn summarize(
    state: &RunState,
    plan: &Plan,
    started: &str,
    now: &str,
    previous: &[Condition],
    generation: i64,
) -> RestartRunStatus {
    let phase = format!("{:?}", state.phase);
    let stages: Vec<StageStatus> = state
        .stages
        .iter()
        .map(|st| stage_status(plan, st))
        .collect();
    // The stage under way: the last one that left Pending.
    let stage = stages
        .iter()
        .rev()
        .find(|s| s.phase != "Pending" && s.phase != "Skipped")
        .map(|s| s.name.clone());
    let awaiting: Vec<&str> = stages
        .iter()
        .flat_map(|s| s.awaiting.iter().map(String::as_str))
        .collect();
    let conditions = conditions(
        state,
        stage.as_deref(),
        &awaiting,
        previous,
        now,
        generation,
    );
    RestartRunStatus {
        phase: Some(phase),
        reason: state.reason.clone(),
        plan_hash: Some(state.playbook_hash.clone()),
        stage,
        stages,
        system_counts: state.systems.iter().fold(
            std::collections::BTreeMap::new(),
            |mut counts, s| {
                *counts.entry(format!("{:?}", s.phase)).or_insert(0) += 1;
                counts
            },
        ),
        systems: state
            .systems
            .iter()
            .filter(|s| {
                !matches!(
                    s.phase,
                    SystemPhase::Pending
                        | SystemPhase::Healthy
                        | SystemPhase::Skipped
                        | SystemPhase::RolledBack
                ) || s.reason.is_some() && s.phase != SystemPhase::Healthy
            })
            .take(NOTABLE_SYSTEMS)
            .map(|s| SystemStatus {
                id: s.id.clone(),
                stage: s.stage.clone(),
                phase: format!("{:?}", s.phase),
                reason: s.reason.clone(),
            })
            .collect(),
        conditions,
        observed_generation: Some(generation),
        start_time: Some(started.to_owned()),
        completion_time: state.phase.is_final().then(|| now.to_owned()),
        ..RestartRunStatus::default()
    }
}

/// One stage as kubectl shows it: its phase, who approved, and at a gate
/// the roles it still waits for.
fn stage_status(plan: &Plan, st: &blackstart_engine::state::StageState) -> StageStatus {
    let roles = plan
        .stages
        .iter()
        .find(|p| p.name == st.name)
        .map(|p| p.gate.approvals.clone())
        .unwrap_or_default();
    let awaiting = if st.phase == StagePhase::Gate {
        roles
            .iter()
            .filter(|role| {
                !st.approvals.iter().any(|a| match &a.role {
                    Some(r) => r == *role,
                    None => roles.len() == 1,
                })
            })
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    StageStatus {
        name: st.name.clone(),
        phase: format!("{:?}", st.phase),
        approvals: st
            .approvals
            .iter()
            .map(|a| match &a.role {
                Some(r) => format!("{} ({r})", a.by),
                None => a.by.clone(),
            })
            .collect(),
        awaiting,
    }
}

/// The Kubernetes conditions, each keeping its transition time while its
/// status stays the same.
fn conditions(
    state: &RunState,
    stage: Option<&str>,
    awaiting: &[&str],
    previous: &[Condition],
    now: &str,
    generation: i64,
) -> Vec<Condition> {
    let phase = format!("{:?}", state.phase);
    let mut conditions = Vec::new();
    let mut set = |type_: &str, on: bool, why: &str, message: String| {
        let status = if on { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
        conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: why.to_owned(),
            message,
            last_transition_time: since,
            observed_generation: Some(generation),
        });
    };
    let message = state.reason.clone().unwrap_or_default();
    set(
        "Progressing",
        matches!(state.phase, RunPhase::Running),
        &phase,
        message.clone(),
    );
    let waiting = !awaiting.is_empty();
    set(
        "AwaitingApproval",
        waiting,
        if waiting {
            "GateWaiting"
        } else {
            "NoGateWaiting"
        },
        if waiting {
            format!(
                "stage `{}` waits for: {}",
                stage.unwrap_or_default(),
                awaiting.join(", ")
            )
        } else {
            String::new()
        },
    );
    set(
        "Paused",
        matches!(state.phase, RunPhase::Paused),
        &phase,
        message.clone(),
    );
    set(
        "Succeeded",
        matches!(state.phase, RunPhase::Succeeded),
        &phase,
        message,
    );
    // A decision in the spec that was refused (unsigned where a key is
    // enrolled, too early, by a non-member), until one is taken after it.
    set(
        "DecisionRefused",
        state.refused.is_some(),
        if state.refused.is_some() {
            "Refused"
        } else {
            "NoneRefused"
        },
        state.refused.clone().unwrap_or_default(),
    );
    conditions
}
