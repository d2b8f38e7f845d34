//! The operator's RunStore: a RestartRun's status subresource.
//!
//! Each event is one JSON Patch to the status: the record is appended to
//! `status.journal` (nothing before it is ever sent again, so a patch stays
//! small however long the run), and the summary kubectl shows (phase,
//! stage, per-stage and per-system phases, conditions) is replaced with
//! what the journal now folds to. Every patch carries the resourceVersion
//! the store last saw, so the API server refuses it with 409 Conflict if
//! the object changed since. A conflict is expected (a person approving
//! bumps the version) and is retried after a fresh read, but only when the
//! journal the API server holds is still exactly ours: if another process
//! appended, this one stops writing rather than fork the run's history.
//!
//! The engine's store interface is synchronous (the file journal's fsync
//! is), so the HTTP round trip runs inside `block_in_place`, which needs
//! tokio's multi-threaded runtime; on any other the store says so instead
//! of panicking.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use kube::api::{Api, Patch, PatchParams};
use serde_json::Value;
use tokio::sync::mpsc;

use blackstart_engine::step::retry::{backoff, retry_after, transient};
use blackstart_engine::{Event, Record, RunPhase, RunState, RunStore, StagePhase};
use blackstart_model::Plan;

use crate::crd::{Condition, RestartRun, RestartRunStatus, StageStatus, SystemStatus};

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
    /// Held from a record's making to its landing: appends come from many
    /// tasks at once, and each record must follow the one before.
    writer: tokio::sync::Mutex<()>,
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
    records: Vec<Record>,
    state: Option<RunState>,
    conditions: Vec<Condition>,
    resource_version: Option<String>,
}

impl StatusStore {
    /// A store for `run` as read from the API server: its journal, checked.
    pub fn new(
        api: Api<RestartRun>,
        run: &RestartRun,
        generation: Arc<AtomicI64>,
        heralds: Option<mpsc::Sender<Record>>,
    ) -> Result<StatusStore, StoreError> {
        let name = run.metadata.name.clone().unwrap_or_default();
        let status = run.status.clone().unwrap_or_default();
        let records = status.journal;
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
        Ok(StatusStore {
            api,
            name,
            generation,
            heralds,
            writer: tokio::sync::Mutex::new(()),
            abandoned: None,
            inner: Mutex::new(Inner {
                records,
                state,
                conditions: status.conditions,
                resource_version: run.metadata.resource_version.clone(),
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
        let _writing = self.writer.lock().await;
        let (record, next_state, ops) = self.prepare(event)?;
        let mut attempt = 0;
        let (mut unsure, mut delays) = (0, backoff());
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
                    self.committed(&record, next_state, obj);
                    return Ok(record);
                }
                // A 5xx, a 429 or a dropped connection: whether the write
                // landed is unknown, so the status is read before trying
                // again, and a write that did land is taken as done.
                Err(e) if transient(&e) && unsure < STATUS_RETRIES => {
                    unsure += 1;
                    let backed_off = delays.next().unwrap_or(Duration::from_secs(2));
                    tokio::time::sleep(retry_after(&e).unwrap_or(backed_off)).await;
                    if let Some(obj) = self.landed(&record).await? {
                        self.committed(&record, next_state, obj);
                        return Ok(record);
                    }
                }
                Err(kube::Error::Api(s)) if s.code == 409 && attempt < CONFLICT_RETRIES => {
                    attempt += 1;
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

    /// Takes a written record in: the store's copy, and the Events.
    fn committed(&self, record: &Record, next_state: RunState, obj: RestartRun) {
        let mut g = self.lock();
        g.resource_version = obj.metadata.resource_version.clone();
        g.records.push(record.clone());
        g.state = Some(next_state);
        if let Some(status) = obj.status {
            g.conditions = status.conditions;
        }
        drop(g);
        // Announcing never holds the run up: when the Events publisher is
        // that far behind, this one is left out (the journal has it).
        if let Some(h) = &self.heralds
            && let Err(mpsc::error::TrySendError::Full(r)) = h.try_send(record.clone())
        {
            tracing::warn!(
                seq = r.seq,
                "the Events publisher is behind; an Event was left out"
            );
        }
    }

    /// After a write whose outcome is unknown: the object if the journal on
    /// the server already ends with `record` (it landed); otherwise, the
    /// journal still being ours, `None` with the new resourceVersion taken
    /// for another try. A read that fails transiently is `None` too.
    async fn landed(&self, record: &Record) -> Result<Option<RestartRun>, StoreError> {
        let fresh = match self.api.get_status(&self.name).await {
            Ok(fresh) => fresh,
            Err(e) if transient(&e) => return Ok(None),
            Err(source) => {
                return Err(StoreError::Read {
                    run: self.name.clone(),
                    source,
                });
            }
        };
        let theirs = fresh
            .status
            .as_ref()
            .map(|s| s.journal.as_slice())
            .unwrap_or(&[]);
        let mut g = self.lock();
        let ours = g.records.len();
        let same_prefix = theirs.len() >= ours
            && theirs[..ours].last().map(|r| &r.hash) == g.records.last().map(|r| &r.hash);
        if same_prefix && theirs.len() == ours + 1 && theirs[ours].hash == record.hash {
            return Ok(Some(fresh));
        }
        if same_prefix && theirs.len() == ours {
            g.resource_version = fresh.metadata.resource_version;
            return Ok(None);
        }
        Err(StoreError::Fenced {
            run: self.name.clone(),
            ours,
            theirs: theirs.len(),
        })
    }

    /// After a conflict: takes the new resourceVersion if the journal on
    /// the server is still ours, else refuses to write on.
    async fn refresh(&self) -> Result<(), StoreError> {
        let fresh = self
            .api
            .get_status(&self.name)
            .await
            .map_err(|source| StoreError::Read {
                run: self.name.clone(),
                source,
            })?;
        let theirs = fresh
            .status
            .as_ref()
            .map(|s| s.journal.as_slice())
            .unwrap_or(&[]);
        let mut g = self.lock();
        let same = theirs.len() == g.records.len()
            && theirs.last().map(|r| &r.hash) == g.records.last().map(|r| &r.hash);
        if !same {
            return Err(StoreError::Fenced {
                run: self.name.clone(),
                ours: g.records.len(),
                theirs: theirs.len(),
            });
        }
        g.resource_version = fresh.metadata.resource_version;
        Ok(())
    }

    /// The record for `event`, the state after it, and the patch that
    /// writes both.
    fn prepare(
        &self,
        event: &Event,
    ) -> Result<(Record, RunState, Vec<PatchOperation>), StoreError> {
        let g = self.lock();
        let record = Record::next(g.records.last(), event.clone());
        let fold_err = |e: blackstart_engine::FoldError| StoreError::Fold {
            run: self.name.clone(),
            reason: e.to_string(),
        };
        // The plan is the first record's: the one being made, or the one kept.
        let (state, plan) = match (&g.state, g.records.first()) {
            (Some(state), Some(first)) => {
                let mut next = state.clone();
                next.apply(record.seq, &record.event).map_err(fold_err)?;
                (next, &first.event)
            }
            // A new run: its first record must be RunStarted, as the fold says.
            _ => (
                RunState::fold([(record.seq, &record.event)]).map_err(fold_err)?,
                &record.event,
            ),
        };
        let Event::RunStarted { plan, .. } = plan else {
            return Err(StoreError::Fold {
                run: self.name.clone(),
                reason: "the first event of a run must be RunStarted".into(),
            });
        };
        let started = g
            .records
            .first()
            .map_or(record.at.as_str(), |r| r.at.as_str());
        let summary = summarize(
            &state,
            plan,
            started,
            &record.at,
            &g.conditions,
            self.generation.load(Ordering::Relaxed),
        );
        let first = g.records.is_empty();
        drop(g);
        let ops = if first {
            let status = RestartRunStatus {
                journal: vec![record.clone()],
                ..summary
            };
            vec![add(
                "/status",
                serde_json::to_value(&status).unwrap_or(Value::Null),
            )]
        } else {
            let mut ops = vec![add(
                "/status/journal/-",
                serde_json::to_value(&record).unwrap_or(Value::Null),
            )];
            let summary = serde_json::to_value(&summary).unwrap_or(Value::Null);
            for field in SUMMARY_FIELDS {
                let value = summary.get(field).cloned().unwrap_or(Value::Null);
                ops.push(add(&format!("/status/{field}"), value));
            }
            ops
        };
        Ok((record, state, ops))
    }
}

/// The status fields derived from the journal, replaced with each event.
const SUMMARY_FIELDS: [&str; 10] = [
    "phase",
    "reason",
    "planHash",
    "stage",
    "stages",
    "systems",
    "conditions",
    "observedGeneration",
    "startTime",
    "completionTime",
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
        tokio::task::block_in_place(|| {
            handle.block_on(async {
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
        systems: state
            .systems
            .iter()
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
        journal: Vec::new(),
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
