//! The scheduler: a plan, executed stage by stage, every transition an event.
//!
//! Inside a stage a system starts as soon as its dependencies in the stage
//! are healthy (those in earlier stages are, or the stage would not have
//! begun) and a `maxParallel` slot is free. The first failure cancels the
//! starts still in flight (their process groups are killed) and the stage's
//! `onFailure` decides: `rollback` stops what the stage started, dependents
//! first; `pause` holds the run for the commander; `abort` ends it Failed.
//! A stage whose systems are all healthy holds its gate: every system keeps
//! being probed through the soak while the approvals are awaited.
//!
//! Everything starts from the state folded from the store, so a first run, a
//! resume after a crash and a resume after a pause are the same code: stages
//! that succeeded are skipped and healthy systems are never started again.
//!
//! The crash invariant: no attempt runs twice, and no attempt runs that the
//! journal does not show. Every start and stop is journaled as begun before
//! it runs, with its leader process once it runs, and as ended. A resume
//! that finds an attempt begun and not ended waits for its leader while it
//! still runs (up to the step's timeout), and then, its outcome unknown:
//! drives it again only when the action is idempotent; else probes the
//! system and starts it again only when health says it is down; and a
//! system with no health checks waits for a person to `confirm` it started
//! or ask to `retry` it. A stop is never run twice: its outcome is read from
//! health, or confirmed by a person.
//!
//! A rollback is journaled as begun, with the systems it will stop, before
//! the first stop; a run in that state resumes as a rollback and can never
//! end `Succeeded`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use blackstart_model::playbook::{Action, OnFailure};
use blackstart_model::{Plan, PlannedStage, PlannedSystem};

use crate::RunStore;
use crate::event::{AttemptResult, Event, RunPhase, StagePhase, StepKind, SystemPhase};
use crate::inbox::{Request, RequestSource};
use crate::journal::Record;
use crate::probe;
use crate::process::{self, Process};
use crate::state::{FoldError, RunState, StepState};
use crate::step::{AttemptHooks, Outcome, StepContext, run_action, run_check};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot record the run: {0}")]
    Store(String),
    #[error(transparent)]
    Fold(#[from] FoldError),
    #[error("cannot read requests: {0}")]
    Requests(String),
    /// The run was interrupted (a second Ctrl-C): nothing more is recorded.
    #[error("the run was interrupted")]
    Interrupted,
}

/// How many records a view may fall behind before it is told it lagged.
pub const RECORDS_BUFFERED: usize = 4096;

/// How one stage's starts ended.
enum Starts {
    AllHealthy,
    Paused,
    Failed(String),
}

/// How one system's task ended.
enum Task {
    Healthy,
    NotStarted,
    Failed(String),
}

/// The request pump of a `run` under way. If that `run` is dropped before
/// it ends (its task aborted), the pump goes with it rather than record
/// requests for a run nobody drives.
struct Pump(Option<tokio::task::JoinHandle<()>>);

impl Drop for Pump {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

/// Runs one run. Cheap to clone; clones drive the same run.
pub struct Engine<S: RunStore + 'static> {
    inner: Arc<Inner<S>>,
}

impl<S: RunStore + 'static> Clone for Engine<S> {
    fn clone(&self) -> Self {
        Engine {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<S> {
    store: S,
    plan: Plan,
    cx: StepContext,
    requests: Arc<dyn RequestSource>,
    state: Mutex<RunState>,
    /// Bumped after every event, for whoever waits on state.
    changed: watch::Sender<u64>,
    /// Every record, as it is recorded: the one stream views are drawn
    /// from. Bounded: a view that falls behind is told how much it missed.
    records: broadcast::Sender<Arc<Record>>,
    pause: watch::Receiver<bool>,
    poll: Duration,
    /// Start and stop attempts under way, by system: what an interrupt
    /// kills. Whoever takes an entry out journals how that attempt ended.
    running: Mutex<HashMap<String, Running>>,
    /// Set by [`Engine::interrupt`]: from then on nothing is recorded.
    interrupted: AtomicBool,
    /// The run began under journal format 1, which recorded no attempts:
    /// a system it left `Starting` may have run its start.
    format_1: bool,
}

/// An attempt under way.
#[derive(Debug, Clone)]
struct Running {
    step: StepKind,
    attempt: u32,
    process: Option<Process>,
}

/// What a crash left of a system's last attempt at a step, once settled.
enum Settled {
    /// No attempt is in doubt: go on as usual.
    Nothing,
    /// The action finished and succeeded; only its health is in question.
    Succeeded,
    Failed(String),
    /// It certainly ended, with an effect nobody saw.
    Unknown,
}

impl<S: RunStore + 'static> std::fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("run", &self.state().run)
            .finish_non_exhaustive()
    }
}

impl<S: RunStore + 'static> Engine<S> {
    /// An engine for the run whose `records` the store holds (a new run's
    /// first record is its `RunStarted`). `pause` turns true to pause the
    /// run gracefully; requests are polled every `poll`.
    pub fn new(
        store: S,
        records: &[Record],
        cx: StepContext,
        requests: Arc<dyn RequestSource>,
        pause: watch::Receiver<bool>,
        poll: Duration,
    ) -> Result<Engine<S>, EngineError> {
        let state = RunState::fold(records.iter().map(|r| (r.seq, &r.event)))?;
        let plan = match records.first().map(|r| &r.event) {
            Some(Event::RunStarted { plan, .. }) => (**plan).clone(),
            _ => return Err(FoldError::Empty.into()),
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                plan,
                cx,
                requests,
                state: Mutex::new(state),
                changed: watch::channel(0).0,
                records: broadcast::channel(RECORDS_BUFFERED).0,
                pause,
                poll,
                running: Mutex::default(),
                interrupted: AtomicBool::new(false),
                format_1: records.first().is_some_and(|r| r.v == 1),
            }),
        })
    }

    /// Kills the process group of every start and stop under way and
    /// journals each attempt as interrupted; from then on the engine
    /// records nothing more. For a second Ctrl-C: the process exits next,
    /// and a resume knows those attempts certainly ended. Returns how many
    /// attempts it ended.
    pub fn interrupt(&self) -> usize {
        let taken: Vec<(String, Running)> = {
            let mut running = self.inner.running_lock();
            self.inner.interrupted.store(true, Ordering::SeqCst);
            running.drain().collect()
        };
        for (_, r) in &taken {
            if let Some(p) = &r.process {
                p.kill_group();
            }
        }
        for (system, r) in &taken {
            // Best effort: a journal that cannot record this leaves the
            // attempt open, and a resume waits for and probes it instead.
            let _ = self.inner.record(Event::AttemptEnded {
                system: system.clone(),
                step: r.step,
                attempt: r.attempt,
                result: AttemptResult::Interrupted,
                reason: Some("interrupted: its process group was killed".to_owned()),
            });
        }
        taken.len()
    }

    pub fn state(&self) -> RunState {
        self.inner.lock().clone()
    }

    /// Looks at the state without copying it: for watchers that look often
    /// at a large run.
    pub fn with_state<T>(&self, look: impl FnOnce(&RunState) -> T) -> T {
        look(&self.inner.lock())
    }

    /// Every record from now on, in order, as it is recorded. A receiver
    /// that falls more than [`RECORDS_BUFFERED`] behind gets `Lagged`.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.inner.records.subscribe()
    }

    /// The plan the run executes, as its journal holds it.
    pub fn plan(&self) -> &Plan {
        &self.inner.plan
    }

    /// Runs (or resumes) the run until it ends or pauses. A run whose
    /// rollback began resumes its rollback.
    pub async fn run(&self) -> Result<RunPhase, EngineError> {
        let mut pump = Pump(Some(self.spawn_request_pump()));
        let rolling_back = self.inner.lock().phase == RunPhase::RollingBack;
        let result = if rolling_back {
            self.inner.finish_rollback().await
        } else {
            self.run_stages().await
        };
        if let Some(handle) = pump.0.take() {
            handle.abort();
            // Wait until the pump is really gone: it holds the engine, and with
            // it the store's lock, which a resume right after must be able to take.
            let _ = handle.await;
        }
        result
    }

    /// Stops everything the run started, dependents first, whatever stage it
    /// was in; for a paused, failed or finished run. A rollback that began
    /// already is finished, not begun again; a run with nothing left to
    /// roll back changes nothing ([`RunState::nothing_to_roll_back`]).
    pub async fn rollback(&self, reason: &str, by: Option<&str>) -> Result<RunPhase, EngineError> {
        let (phase, done) = {
            let state = self.inner.lock();
            (state.phase, state.nothing_to_roll_back())
        };
        match phase {
            _ if done => return Ok(RunPhase::RolledBack),
            RunPhase::RollingBack => {}
            _ => {
                // Later stages first, and inside each its rollback order.
                let systems = self.inner.started_of(
                    self.inner
                        .plan
                        .stages
                        .iter()
                        .rev()
                        .flat_map(|st| st.rollback_order.iter()),
                );
                self.inner.emit(Event::RollbackBegun {
                    stage: None,
                    systems,
                    reason: reason.to_owned(),
                    by: by.map(str::to_owned),
                })?;
            }
        }
        let mut pump = Pump(Some(self.spawn_request_pump()));
        let result = self.inner.finish_rollback().await;
        if let Some(handle) = pump.0.take() {
            handle.abort();
            let _ = handle.await;
        }
        result
    }

    async fn run_stages(&self) -> Result<RunPhase, EngineError> {
        let inner = &self.inner;
        if inner.lock().phase.is_final() {
            return Ok(inner.lock().phase);
        }
        inner.emit(Event::Run {
            phase: RunPhase::Running,
            reason: None,
        })?;
        for stage in &inner.plan.stages {
            let phase = inner.lock().stage(&stage.name).map(|s| s.phase);
            if phase == Some(StagePhase::Succeeded) {
                continue;
            }
            inner.stage_event(&stage.name, StagePhase::Running, None)?;
            match self.start_stage(stage).await? {
                Starts::AllHealthy => {}
                Starts::Paused => return inner.pause_run("paused by the commander"),
                Starts::Failed(reason) => return inner.stage_failed(stage, &reason).await,
            }
            inner.stage_event(&stage.name, StagePhase::Gate, None)?;
            match inner.hold_gate(stage).await? {
                Starts::AllHealthy => {}
                Starts::Paused => return inner.pause_run("paused at the gate by the commander"),
                Starts::Failed(reason) => return inner.stage_failed(stage, &reason).await,
            }
            inner.stage_event(&stage.name, StagePhase::Succeeded, None)?;
        }
        inner.end(RunPhase::Succeeded, "")
    }

    /// Starts the stage's systems, each after its in-stage dependencies.
    async fn start_stage(&self, stage: &PlannedStage) -> Result<Starts, EngineError> {
        let slots = stage
            .max_parallel
            .map_or(stage.systems.len().max(1), |m| m as usize);
        let semaphore = Arc::new(Semaphore::new(slots));
        let done: HashMap<String, watch::Sender<Option<bool>>> = stage
            .systems
            .iter()
            .map(|s| (s.id.clone(), watch::channel(None).0))
            .collect();
        let mut tasks = JoinSet::new();
        for sys in &stage.systems {
            let healthy =
                self.inner.lock().system(&sys.id).map(|s| s.phase) == Some(SystemPhase::Healthy);
            if healthy {
                done[&sys.id].send_replace(Some(true));
                continue;
            }
            let deps: Vec<watch::Receiver<Option<bool>>> = sys
                .depends_on
                .iter()
                .filter_map(|d| done.get(d).map(watch::Sender::subscribe))
                .collect();
            let me = done[&sys.id].clone();
            let engine = self.clone();
            let semaphore = Arc::clone(&semaphore);
            let sys = sys.clone();
            tasks.spawn(async move {
                let result = start_task(engine, sys, deps, semaphore).await;
                me.send_replace(Some(matches!(result, Ok(Task::Healthy))));
                result
            });
        }
        let mut failure: Option<String> = None;
        let mut not_started = false;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(Task::Healthy)) => {}
                Ok(Ok(Task::NotStarted)) => not_started = true,
                Ok(Ok(Task::Failed(reason))) => {
                    if failure.is_none() {
                        failure = Some(reason);
                        // Cancel the starts still in flight: dropping them
                        // kills their process groups.
                        tasks.abort_all();
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(e) if e.is_cancelled() => {}
                Err(e) => failure = failure.or(Some(format!("a start task failed: {e}"))),
            }
        }
        if failure.is_some() {
            self.mark_cancelled(stage)?;
        }
        Ok(match failure {
            Some(reason) => Starts::Failed(reason),
            None if not_started => Starts::Paused,
            None => Starts::AllHealthy,
        })
    }

    /// Says what became of the starts a failure cancelled: one cancelled
    /// while verifying never started (Skipped); one cancelled mid-start
    /// may have started (Failed, and a rollback stops it). Their attempts
    /// were killed with their tasks, and are journaled as interrupted.
    fn mark_cancelled(&self, stage: &PlannedStage) -> Result<(), EngineError> {
        let cancelled: Vec<(String, SystemPhase)> = self.inner.with_cancelled(stage);
        for (id, phase) in cancelled {
            self.inner.abandon_attempt(
                &id,
                "cancelled: the stage failed; its process group was killed",
            )?;
            let (phase, reason) = match phase {
                SystemPhase::Verifying => (
                    SystemPhase::Skipped,
                    "cancelled before it started: the stage failed",
                ),
                _ => (SystemPhase::Failed, "start cancelled: the stage failed"),
            };
            self.inner
                .system_event(&id, phase, Some(reason.to_owned()))?;
        }
        Ok(())
    }

    /// Records people's requests as events while the run goes on.
    fn spawn_request_pump(&self) -> tokio::task::JoinHandle<()> {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            loop {
                // A request that cannot be read now is tried again next time.
                let _ = inner.take_requests();
                tokio::time::sleep(inner.poll).await;
            }
        })
    }
}

impl<S: RunStore + 'static> Inner<S> {
    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn paused(&self) -> bool {
        *self.pause.borrow()
    }

    fn running_lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event, then applies it: state never runs ahead of the
    /// store. After an interrupt nothing more is recorded.
    fn emit(&self, event: Event) -> Result<(), EngineError> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(EngineError::Interrupted);
        }
        self.record(event)
    }

    /// [`Inner::emit`] without the interrupt check, for the interrupt's own records.
    fn record(&self, event: Event) -> Result<(), EngineError> {
        let record = self
            .store
            .append(&event)
            .map_err(|e| EngineError::Store(e.to_string()))?;
        let run = {
            let mut state = self.lock();
            state.apply(record.seq, &event)?;
            state.run.clone()
        };
        log(&run, record.seq, &event);
        self.changed.send_modify(|n| *n += 1);
        // Nobody listening is fine: the journal has it.
        let _ = self.records.send(Arc::new(record));
        Ok(())
    }

    fn system_event(
        &self,
        id: &str,
        phase: SystemPhase,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        self.emit(Event::System {
            system: id.to_owned(),
            phase,
            reason,
        })
    }

    /// The stage's systems caught mid-verify or mid-start.
    fn with_cancelled(&self, stage: &PlannedStage) -> Vec<(String, SystemPhase)> {
        let state = self.lock();
        stage
            .systems
            .iter()
            .filter_map(|s| state.system(&s.id).map(|st| (s.id.clone(), st.phase)))
            .filter(|(_, phase)| matches!(phase, SystemPhase::Verifying | SystemPhase::Starting))
            .collect()
    }

    fn stage_event(
        &self,
        stage: &str,
        phase: StagePhase,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        self.emit(Event::Stage {
            stage: stage.to_owned(),
            phase,
            reason,
        })
    }

    fn system_started(&self, id: &str) -> bool {
        self.lock().system(id).is_some_and(|s| s.started)
    }

    fn output(&self, id: &str, step: &str, outcome: &Outcome) -> Result<(), EngineError> {
        // A silent success says nothing the phase events do not.
        if outcome.output.is_empty() && matches!(outcome.exit_code, None | Some(0)) {
            return Ok(());
        }
        self.emit(Event::Output {
            system: id.to_owned(),
            step: step.to_owned(),
            exit_code: outcome.exit_code,
            output: outcome.output.clone(),
        })
    }

    fn take_requests(&self) -> Result<(), EngineError> {
        for (token, request) in self.requests.pending().map_err(EngineError::Requests)? {
            let event = match request {
                Request::Approve { stage, by, role } => {
                    // Unknown stages and repeated approvals are acknowledged and dropped.
                    let fresh = self
                        .lock()
                        .stage(&stage)
                        .is_some_and(|s| !s.approvals.iter().any(|a| a.by == by && a.role == role));
                    fresh.then_some(Event::Approved { stage, by, role })
                }
                Request::Confirm { system, by } => {
                    let fresh = self
                        .lock()
                        .system(&system)
                        .is_some_and(|s| s.confirmed_by.is_none());
                    fresh.then_some(Event::Confirmed { system, by })
                }
                Request::Retry { system, by } => {
                    let fresh = self
                        .lock()
                        .system(&system)
                        .is_some_and(|s| s.retry_by.is_none());
                    fresh.then_some(Event::RetryRequested { system, by })
                }
            };
            if let Some(event) = event {
                self.emit(event)?;
            }
            self.requests.ack(&token).map_err(EngineError::Requests)?;
        }
        Ok(())
    }

    /// Waits until `ready` holds for the state, re-checking after each event.
    async fn wait_until(&self, ready: impl Fn(&RunState) -> bool) {
        let mut changed = self.changed.subscribe();
        while !ready(&self.lock()) {
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Verify, start, probe: one system from Pending to Healthy or Failed;
    /// first settling what a crash left of an earlier start attempt.
    async fn bring_up(self: &Arc<Self>, sys: &PlannedSystem) -> Result<Task, EngineError> {
        let deadline = tokio::time::Instant::now() + sys.start_timeout.to_std();
        match self.settle(sys, StepKind::Start).await? {
            Settled::Nothing => {}
            Settled::Succeeded => return self.probe_after_start(sys, deadline).await,
            Settled::Failed(reason) => return self.system_failed(&sys.id, reason),
            Settled::Unknown if sys.start.idempotent() => {}
            Settled::Unknown if !sys.health.is_empty() => {
                if self.verdict(sys).await {
                    self.system_event(
                        &sys.id,
                        SystemPhase::Healthy,
                        Some("healthy when the run resumed; its start was not run again".into()),
                    )?;
                    return Ok(Task::Healthy);
                }
            }
            Settled::Unknown => {
                if self.wait_for_person(&sys.id, StepKind::Start).await? {
                    return Ok(Task::Healthy);
                }
            }
        }
        let mut deadline = tokio::time::Instant::now() + sys.start_timeout.to_std();
        let started = async {
            if let Some(reason) = self.verify(sys).await? {
                return Ok(Some(reason));
            }
            self.system_event(&sys.id, SystemPhase::Starting, None)?;
            if let Action::Manual(_) = &sys.start {
                return Ok(None);
            }
            let outcome = self
                .run_attempt(&sys.id, StepKind::Start, &sys.start)
                .await?;
            Ok((!outcome.ok).then(|| format!("start failed: {}", outcome.detail)))
        };
        match tokio::time::timeout_at(deadline, started).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(reason))) => return self.system_failed(&sys.id, reason),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                self.abandon_attempt(
                    &sys.id,
                    "cut short at its startTimeout; its process group was killed",
                )?;
                return self.system_failed(
                    &sys.id,
                    format!(
                        "its verify checks and start did not finish within its startTimeout of {}",
                        sys.start_timeout
                    ),
                );
            }
        }
        if let Action::Manual(m) = &sys.start {
            // A person's time is not counted against startTimeout: it
            // counts from their confirmation. A pause meanwhile holds.
            if !self
                .wait_for_confirmation(&sys.id, SystemPhase::Starting, &m.instruction)
                .await?
            {
                return Ok(Task::NotStarted);
            }
            deadline = tokio::time::Instant::now() + sys.start_timeout.to_std();
        }
        self.probe_after_start(sys, deadline).await
    }

    fn system_failed(&self, id: &str, reason: String) -> Result<Task, EngineError> {
        self.system_event(id, SystemPhase::Failed, Some(reason.clone()))?;
        Ok(Task::Failed(format!("{id}: {reason}")))
    }

    /// Runs the verify checks; `Some(reason)` when one failed.
    async fn verify(&self, sys: &PlannedSystem) -> Result<Option<String>, EngineError> {
        if !sys.verify.is_empty() {
            self.system_event(&sys.id, SystemPhase::Verifying, None)?;
            for (k, check) in sys.verify.iter().enumerate() {
                let outcome = run_check(check, &self.cx).await;
                self.output(&sys.id, &format!("verify[{k}]"), &outcome)?;
                if !outcome.ok {
                    return Ok(Some(format!("integrity check failed: {}", outcome.detail)));
                }
            }
        }
        Ok(None)
    }

    /// Waits for a person to confirm a manual step: true once confirmed,
    /// false when the run pauses first (the step waits again on resume).
    async fn wait_for_confirmation(
        &self,
        id: &str,
        phase: SystemPhase,
        instruction: &str,
    ) -> Result<bool, EngineError> {
        self.system_event(
            id,
            phase,
            Some(format!("waiting for confirmation: {instruction}")),
        )?;
        let system = id.to_owned();
        let confirmed =
            self.wait_until(move |s| s.system(&system).is_some_and(|s| s.confirmed_by.is_some()));
        let mut pause = self.pause.clone();
        tokio::select! {
            () = confirmed => Ok(true),
            Ok(_) = pause.wait_for(|p| *p) => Ok(false),
        }
    }

    /// Probes a started system until it is healthy or the deadline passes;
    /// the failure names the last probe error.
    async fn probe_after_start(
        &self,
        sys: &PlannedSystem,
        deadline: tokio::time::Instant,
    ) -> Result<Task, EngineError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match probe::until_healthy(&sys.health, &sys.probe, left, &self.cx).await {
            Ok(_) => {
                self.system_event(&sys.id, SystemPhase::Healthy, None)?;
                Ok(Task::Healthy)
            }
            Err(never) => self.system_failed(
                &sys.id,
                format!(
                    "not healthy within its startTimeout of {} ({never})",
                    sys.start_timeout
                ),
            ),
        }
    }

    /// Runs one attempt of a start or stop, journaled as begun before it
    /// runs, with its process once that runs, and as ended.
    async fn run_attempt(
        self: &Arc<Self>,
        id: &str,
        step: StepKind,
        action: &Action,
    ) -> Result<Outcome, EngineError> {
        let attempt = {
            let state = self.lock();
            let s = state.system(id);
            match step {
                StepKind::Start => s.map_or(0, |s| s.attempts),
                StepKind::Stop => s
                    .and_then(|s| s.step.as_ref())
                    .filter(|a| a.step == StepKind::Stop)
                    .map_or(0, |a| a.attempt),
            }
        } + 1;
        {
            // Registered before it is journaled, so an interrupt in between
            // still finds it (and journals it interrupted).
            let mut running = self.running_lock();
            if self.interrupted.load(Ordering::SeqCst) {
                return Err(EngineError::Interrupted);
            }
            running.insert(
                id.to_owned(),
                Running {
                    step,
                    attempt,
                    process: None,
                },
            );
        }
        if let Err(e) = self.emit(Event::AttemptBegun {
            system: id.to_owned(),
            step,
            attempt,
        }) {
            self.running_lock().remove(id);
            return Err(e);
        }
        let cx = StepContext {
            attempt: Some(self.hooks(id, step, attempt)),
            ..self.cx.clone()
        };
        let outcome = run_action(action, &cx).await;
        let ours = self
            .running_lock()
            .remove(id)
            .is_some_and(|r| (r.step, r.attempt) == (step, attempt));
        if !ours {
            // An interrupt took it and journaled how it ended.
            return Err(EngineError::Interrupted);
        }
        self.output(id, step.as_str(), &outcome)?;
        self.emit(Event::AttemptEnded {
            system: id.to_owned(),
            step,
            attempt,
            result: if outcome.ok {
                AttemptResult::Succeeded
            } else {
                AttemptResult::Failed
            },
            reason: (!outcome.ok).then(|| outcome.detail.clone()),
        })?;
        Ok(outcome)
    }

    /// What an attempt tells the run: its process, journaled before the
    /// step waits for it.
    fn hooks(self: &Arc<Self>, id: &str, step: StepKind, attempt: u32) -> AttemptHooks {
        let inner = Arc::clone(self);
        let system = id.to_owned();
        let run = self.lock().run.clone();
        AttemptHooks {
            marker: process::marker(&run, id, step.as_str(), attempt),
            spawned: Arc::new(move |process: Process| {
                {
                    let mut running = inner.running_lock();
                    match running.get_mut(&system) {
                        Some(r) if (r.step, r.attempt) == (step, attempt) => {
                            r.process = Some(process.clone());
                        }
                        _ => return Err("the run was interrupted".to_owned()),
                    }
                }
                inner
                    .emit(Event::AttemptRunning {
                        system: system.clone(),
                        step,
                        attempt,
                        process,
                    })
                    .map_err(|e| e.to_string())
            }),
        }
    }

    /// Journals the end of an attempt whose task was dropped (a timeout, a
    /// cancelled start): dropping it killed its process group.
    fn abandon_attempt(&self, id: &str, reason: &str) -> Result<(), EngineError> {
        let taken = self.running_lock().remove(id);
        if let Some(r) = taken {
            self.emit(Event::AttemptEnded {
                system: id.to_owned(),
                step: r.step,
                attempt: r.attempt,
                result: AttemptResult::Interrupted,
                reason: Some(reason.to_owned()),
            })?;
        }
        Ok(())
    }

    /// Settles what a crash left of the system's last attempt at `step`:
    /// waits for a leader that still runs, and says how it ended.
    async fn settle(&self, sys: &PlannedSystem, step: StepKind) -> Result<Settled, EngineError> {
        let last = {
            let state = self.lock();
            let s = state.system(&sys.id);
            let in_flight = s.is_some_and(|s| match step {
                StepKind::Start => {
                    matches!(s.phase, SystemPhase::Verifying | SystemPhase::Starting)
                }
                StepKind::Stop => true,
            });
            s.and_then(|s| s.step.clone())
                .filter(|a| in_flight && a.step == step)
        };
        let Some(mut last) = last else {
            let legacy = self.format_1
                && step == StepKind::Start
                && self.lock().system(&sys.id).map(|s| s.phase) == Some(SystemPhase::Starting);
            // Format 1 said `Starting` just before the start ran, and
            // nothing after: it may have run.
            return Ok(if legacy && !matches!(sys.start, Action::Manual(_)) {
                Settled::Unknown
            } else {
                Settled::Nothing
            });
        };
        if last.open() {
            let action = match step {
                StepKind::Start => Some(&sys.start),
                StepKind::Stop => sys.stop.as_ref(),
            };
            self.end_open_attempt(sys, action, &last).await?;
            last = self
                .lock()
                .system(&sys.id)
                .and_then(|s| s.step.clone())
                .unwrap_or(last);
        }
        Ok(match last.result {
            None => Settled::Unknown,
            Some(AttemptResult::Succeeded) => Settled::Succeeded,
            Some(AttemptResult::Failed) => Settled::Failed(format!(
                "its {} failed before the run was interrupted",
                step.as_str()
            )),
            Some(AttemptResult::Interrupted | AttemptResult::Unknown) => Settled::Unknown,
        })
    }

    /// An attempt begun and not ended, found on resume: if its leader still
    /// runs, wait for it (up to the step's timeout, then kill its group),
    /// and journal how it ended.
    async fn end_open_attempt(
        &self,
        sys: &PlannedSystem,
        action: Option<&Action>,
        last: &StepState,
    ) -> Result<(), EngineError> {
        let run = self.lock().run.clone();
        let marker = process::marker(&run, &sys.id, last.step.as_str(), last.attempt);
        let leader = match &last.process {
            Some(p) => Some(p.clone()),
            // Spawned in the instant before its pid was journaled?
            None if matches!(action, Some(Action::Exec(_))) => process::find_marked(&marker)
                .inspect(|p| {
                    let _ = self.emit(Event::AttemptRunning {
                        system: sys.id.clone(),
                        step: last.step,
                        attempt: last.attempt,
                        process: p.clone(),
                    });
                }),
            None => None,
        };
        let ended = |result, reason: String| Event::AttemptEnded {
            system: sys.id.clone(),
            step: last.step,
            attempt: last.attempt,
            result,
            reason: Some(reason),
        };
        if let Some(p) = leader.filter(Process::alive) {
            let timeout = match action {
                Some(Action::Exec(e)) => e.timeout.map_or(self.cx.timeout, |d| d.to_std()),
                _ => self.cx.timeout,
            }
            .min(sys.start_timeout.to_std());
            let phase = self.lock().system(&sys.id).map(|s| s.phase);
            self.system_event(
                &sys.id,
                phase.unwrap_or(SystemPhase::Starting),
                Some(format!(
                    "its {} (pid {}) still runs from before the run resumed: waiting for it, up to {}",
                    last.step.as_str(),
                    p.pid,
                    humantime::format_duration(timeout)
                )),
            )?;
            let until = tokio::time::Instant::now() + timeout;
            while p.alive() && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if p.alive() {
                p.kill_group();
                return self.emit(ended(
                    AttemptResult::Failed,
                    format!(
                        "still running {} after the run resumed; its process group was killed",
                        humantime::format_duration(timeout)
                    ),
                ));
            }
        }
        self.emit(ended(
            AttemptResult::Unknown,
            "it ended while no blackstart watched it: how is not known".to_owned(),
        ))
    }

    /// Whether health says the system is up: `successThreshold` passing
    /// rounds in a row say up, `failureThreshold` failing ones say down.
    async fn verdict(&self, sys: &PlannedSystem) -> bool {
        let cx = StepContext {
            timeout: sys.probe.timeout.to_std(),
            ..self.cx.clone()
        };
        let (mut ok, mut failed) = (0u32, 0u32);
        loop {
            if probe::round(&sys.health, &cx).await.ok {
                ok += 1;
                failed = 0;
                if ok >= sys.probe.success_threshold.max(1) {
                    return true;
                }
            } else {
                failed += 1;
                ok = 0;
                if failed >= sys.probe.failure_threshold.max(1) {
                    return false;
                }
            }
            tokio::time::sleep(sys.probe.interval.to_std()).await;
        }
    }

    /// A start or stop whose outcome a crash made unknown, on a system
    /// without health checks to tell: a person confirms it (true) or asks
    /// for a new attempt (false; stops are never run twice, so only starts).
    async fn wait_for_person(&self, id: &str, step: StepKind) -> Result<bool, EngineError> {
        let run = self.lock().run.clone();
        let (phase, ask) = match step {
            StepKind::Start => (
                SystemPhase::Starting,
                format!(
                    "waiting for a person: its start was cut short by a crash and it has no health checks to tell; `blackstart confirm {run} {id} --by NAME` if it is up, `blackstart retry {run} {id} --by NAME` to start it again"
                ),
            ),
            StepKind::Stop => (
                SystemPhase::Stopping,
                format!(
                    "waiting for a person: its stop was cut short by a crash and it has no health checks to tell; `blackstart confirm {run} {id} --by NAME` once it is down"
                ),
            ),
        };
        self.system_event(id, phase, Some(ask))?;
        let system = id.to_owned();
        self.wait_until(move |s| {
            s.system(&system).is_some_and(|s| {
                s.confirmed_by.is_some() || (step == StepKind::Start && s.retry_by.is_some())
            })
        })
        .await;
        let (confirmed, retry) = self
            .lock()
            .system(id)
            .map(|s| (s.confirmed_by.clone(), s.retry_by.clone()))
            .unwrap_or_default();
        match (confirmed, retry) {
            (Some(by), _) => {
                let (phase, what) = match step {
                    StepKind::Start => (SystemPhase::Healthy, "up"),
                    StepKind::Stop => (SystemPhase::RolledBack, "down"),
                };
                self.system_event(
                    id,
                    phase,
                    Some(format!(
                        "confirmed {what} by {by} after a crash cut its {} short",
                        step.as_str()
                    )),
                )?;
                Ok(true)
            }
            (None, Some(by)) => {
                self.system_event(
                    id,
                    SystemPhase::Starting,
                    Some(format!("started again as {by} asked")),
                )?;
                Ok(false)
            }
            (None, None) => Ok(false),
        }
    }

    /// The gate: soak with every system probed, and the approvals.
    async fn hold_gate(self: &Arc<Self>, stage: &PlannedStage) -> Result<Starts, EngineError>
    where
        S: 'static,
    {
        let soak = stage.gate.soak.map_or(Duration::ZERO, |d| d.to_std());
        let mut watches = JoinSet::new();
        for sys in &stage.systems {
            let (inner, sys) = (Arc::clone(self), sys.clone());
            watches.spawn(async move {
                probe::watch(&sys.health, &sys.probe, soak, &inner.cx)
                    .await
                    .map_err(|e| (sys.id.clone(), e))
            });
        }
        let roles = stage.gate.approvals.clone();
        let name = stage.name.clone();
        let approvals = self.wait_until(move |s| {
            s.stage(&name)
                .is_some_and(|st| approved(&roles, &st.approvals))
        });
        tokio::pin!(approvals);
        let mut pause = self.pause.clone();
        let (mut soaked, mut approved_all) = (watches.is_empty(), false);
        loop {
            if soaked && approved_all {
                return Ok(Starts::AllHealthy);
            }
            tokio::select! {
                joined = watches.join_next(), if !soaked => match joined {
                    None => soaked = true,
                    Some(Ok(Ok(()))) => {}
                    Some(Err(e)) => {
                        // A watcher that panicked proved nothing healthy.
                        watches.abort_all();
                        return Ok(Starts::Failed(format!("a health watch of the soak failed: {e}")));
                    }
                    Some(Ok(Err((id, reason)))) => {
                        watches.abort_all();
                        let reason = format!("unhealthy during the soak: {reason}");
                        self.system_event(&id, SystemPhase::Failed, Some(reason.clone()))?;
                        return Ok(Starts::Failed(format!("{id}: {reason}")));
                    }
                },
                () = &mut approvals, if !approved_all => approved_all = true,
                Ok(()) = pause.changed() => {
                    if *pause.borrow() {
                        return Ok(Starts::Paused);
                    }
                }
            }
        }
    }

    fn pause_run(&self, reason: &str) -> Result<RunPhase, EngineError> {
        self.emit(Event::Run {
            phase: RunPhase::Paused,
            reason: Some(reason.to_owned()),
        })?;
        Ok(RunPhase::Paused)
    }

    async fn stage_failed(
        self: &Arc<Self>,
        stage: &PlannedStage,
        reason: &str,
    ) -> Result<RunPhase, EngineError> {
        let reason = format!("stage `{}` failed: {reason}", stage.name);
        match stage.gate.on_failure {
            OnFailure::Rollback => {
                let systems = self.started_of(stage.rollback_order.iter());
                self.emit(Event::RollbackBegun {
                    stage: Some(stage.name.clone()),
                    systems,
                    reason,
                    by: None,
                })?;
                self.finish_rollback().await
            }
            OnFailure::Pause => {
                self.stage_event(&stage.name, StagePhase::Failed, Some(reason.clone()))?;
                self.pause_run(&reason)
            }
            OnFailure::Abort => {
                self.stage_event(&stage.name, StagePhase::Failed, Some(reason.clone()))?;
                self.end(RunPhase::Failed, &reason)
            }
        }
    }

    /// Of the given systems, in their order, those whose start ever began.
    fn started_of<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Vec<String> {
        let state = self.lock();
        ids.filter(|id| {
            state
                .system(id)
                .is_some_and(|s| s.started && s.phase != SystemPhase::RolledBack)
        })
        .cloned()
        .collect()
    }

    /// Carries the rollback the journal says began to its end: stops what
    /// it lists that is not stopped yet, then ends the run RolledBack.
    async fn finish_rollback(self: &Arc<Self>) -> Result<RunPhase, EngineError> {
        let rollback = self.lock().rollback.clone();
        let Some(rollback) = rollback else {
            let phase = self.lock().phase;
            return Ok(phase);
        };
        self.stop_systems(&rollback.systems).await?;
        match &rollback.stage {
            Some(stage) => {
                self.stage_event(stage, StagePhase::RolledBack, Some(rollback.reason.clone()))?;
            }
            None => {
                for stage in &self.plan.stages {
                    let touched = stage.systems.iter().any(|s| self.system_started(&s.id));
                    let phase = if touched {
                        StagePhase::RolledBack
                    } else {
                        StagePhase::Skipped
                    };
                    self.stage_event(&stage.name, phase, None)?;
                }
            }
        }
        self.end(RunPhase::RolledBack, &rollback.reason)
    }

    /// Stops, in the order given, every listed system not stopped yet.
    async fn stop_systems(self: &Arc<Self>, order: &[String]) -> Result<(), EngineError> {
        let planned: HashMap<&str, &PlannedSystem> = self
            .plan
            .systems()
            .map(|(_, s)| (s.id.as_str(), s))
            .collect();
        for id in order {
            if let Some(sys) = planned.get(id.as_str()) {
                self.stop_one(sys).await?;
            }
        }
        Ok(())
    }

    /// Stops one system, once: a stop a crash cut short is not run again;
    /// its outcome is read from health, or confirmed by a person.
    async fn stop_one(self: &Arc<Self>, sys: &PlannedSystem) -> Result<(), EngineError> {
        let id = &sys.id;
        let (started, phase) = {
            let state = self.lock();
            let s = state.system(id);
            (s.is_some_and(|s| s.started), s.map(|s| s.phase))
        };
        if !started || phase == Some(SystemPhase::RolledBack) {
            return Ok(());
        }
        match self.settle(sys, StepKind::Stop).await? {
            Settled::Nothing => {}
            Settled::Succeeded => {
                return self.system_event(id, SystemPhase::RolledBack, None);
            }
            Settled::Failed(_) => {
                if phase != Some(SystemPhase::Failed) {
                    self.system_event(
                        id,
                        SystemPhase::Failed,
                        Some("its stop failed before the run was interrupted".into()),
                    )?;
                }
                return Ok(());
            }
            Settled::Unknown if !sys.health.is_empty() => {
                return if self.verdict(sys).await {
                    self.system_event(
                        id,
                        SystemPhase::Failed,
                        Some("still healthy after a crash cut its stop short; the stop was not run twice: stop it by hand".into()),
                    )
                } else {
                    self.system_event(
                        id,
                        SystemPhase::RolledBack,
                        Some("down after a crash cut its stop short".into()),
                    )
                };
            }
            Settled::Unknown => {
                self.wait_for_person(id, StepKind::Stop).await?;
                return Ok(());
            }
        }
        self.system_event(id, SystemPhase::Stopping, None)?;
        let Some(stop) = &sys.stop else {
            return self.system_event(
                id,
                SystemPhase::RolledBack,
                Some("no stop action: left as it was".into()),
            );
        };
        if let Action::Manual(m) = stop {
            self.system_event(
                id,
                SystemPhase::Stopping,
                Some(format!("waiting for confirmation: {}", m.instruction)),
            )?;
            let system = id.clone();
            self.wait_until(move |s| s.system(&system).is_some_and(|s| s.confirmed_by.is_some()))
                .await;
            return self.system_event(id, SystemPhase::RolledBack, None);
        }
        let outcome = self.run_attempt(id, StepKind::Stop, stop).await?;
        if outcome.ok {
            self.system_event(id, SystemPhase::RolledBack, None)
        } else {
            self.system_event(
                id,
                SystemPhase::Failed,
                Some(format!("stop failed: {}", outcome.detail)),
            )
        }
    }

    /// Ends the run: what never started is marked Skipped first. A run
    /// whose rollback began never ends Succeeded.
    fn end(&self, phase: RunPhase, reason: &str) -> Result<RunPhase, EngineError> {
        let phase = if phase == RunPhase::Succeeded && self.lock().rollback.is_some() {
            RunPhase::RolledBack
        } else {
            phase
        };
        if phase != RunPhase::Succeeded {
            let (systems, stages): (Vec<String>, Vec<String>) = {
                let state = self.lock();
                (
                    state
                        .systems
                        .iter()
                        .filter(|s| s.phase == SystemPhase::Pending)
                        .map(|s| s.id.clone())
                        .collect(),
                    state
                        .stages
                        .iter()
                        .filter(|s| s.phase == StagePhase::Pending)
                        .map(|s| s.name.clone())
                        .collect(),
                )
            };
            for id in systems {
                self.system_event(&id, SystemPhase::Skipped, None)?;
            }
            for name in stages {
                self.stage_event(&name, StagePhase::Skipped, None)?;
            }
        }
        let reason = (!reason.is_empty()).then(|| reason.to_owned());
        self.emit(Event::Run { phase, reason })?;
        Ok(phase)
    }
}

/// One system's start: after its dependencies, within a free slot, unless
/// the run is pausing.
async fn start_task<S: RunStore + 'static>(
    engine: Engine<S>,
    sys: PlannedSystem,
    mut deps: Vec<watch::Receiver<Option<bool>>>,
    semaphore: Arc<Semaphore>,
) -> Result<Task, EngineError> {
    for dep in &mut deps {
        let healthy = matches!(
            dep.wait_for(Option::is_some).await.map(|v| *v),
            Ok(Some(true))
        );
        if !healthy {
            return Ok(Task::NotStarted);
        }
    }
    if engine.inner.paused() {
        return Ok(Task::NotStarted);
    }
    let Ok(_permit) = semaphore.acquire().await else {
        return Ok(Task::NotStarted);
    };
    if engine.inner.paused() {
        return Ok(Task::NotStarted);
    }
    engine.inner.bring_up(&sys).await
}

/// Every recorded transition as a structured log event, for `--log-format
/// json` and whoever else subscribes. Output is at debug: it can be long.
fn log(run: &str, seq: u64, event: &Event) {
    match event {
        Event::RunStarted {
            playbook,
            playbook_hash,
            ..
        } => {
            tracing::info!(run, seq, playbook = %playbook, playbook_hash = %playbook_hash, "run started");
        }
        Event::Run { phase, reason } => {
            tracing::info!(run, seq, phase = ?phase, reason = reason.as_deref(), "run")
        }
        Event::Stage {
            stage,
            phase,
            reason,
        } => {
            tracing::info!(run, seq, stage = %stage, phase = ?phase, reason = reason.as_deref(), "stage");
        }
        Event::System {
            system,
            phase,
            reason,
        } => {
            tracing::info!(run, seq, system = %system, phase = ?phase, reason = reason.as_deref(), "system");
        }
        Event::Output {
            system,
            step,
            exit_code,
            output,
        } => {
            tracing::debug!(run, seq, system = %system, step = %step, exit_code = ?exit_code, output = %output, "output");
        }
        Event::Approved { stage, by, role } => {
            tracing::info!(run, seq, stage = %stage, by = %by, role = role.as_deref(), "approved");
        }
        Event::Confirmed { system, by } => {
            tracing::info!(run, seq, system = %system, by = %by, "confirmed")
        }
        Event::TornWriteDiscarded { bytes } => {
            tracing::warn!(run, seq, bytes, "torn write discarded")
        }
        Event::RetryRequested { system, by } => {
            tracing::info!(run, seq, system = %system, by = %by, "retry requested")
        }
        Event::AttemptBegun {
            system,
            step,
            attempt,
        } => {
            tracing::info!(run, seq, system = %system, step = step.as_str(), attempt, "attempt begun")
        }
        Event::AttemptRunning {
            system,
            step,
            attempt,
            process,
        } => {
            tracing::info!(run, seq, system = %system, step = step.as_str(), attempt, pid = process.pid, "attempt running")
        }
        Event::AttemptEnded {
            system,
            step,
            attempt,
            result,
            reason,
        } => {
            tracing::info!(run, seq, system = %system, step = step.as_str(), attempt, result = ?result, reason = reason.as_deref(), "attempt ended")
        }
        Event::RollbackBegun {
            stage,
            systems,
            reason,
            by,
        } => {
            tracing::info!(run, seq, stage = stage.as_deref(), systems = systems.len(), reason = %reason, by = by.as_deref(), "rollback begun")
        }
        Event::SetAside {
            file,
            bytes,
            reason,
        } => {
            tracing::info!(run, seq, file = %file, bytes, reason = %reason, "journal tail set aside")
        }
    }
}

/// Whether every required role has an approval. An approval without a role
/// counts for a gate that requires exactly one.
pub fn approved(required: &[String], given: &[crate::state::Approval]) -> bool {
    required.iter().all(|role| {
        given.iter().any(|a| match &a.role {
            Some(r) => r == role,
            None => required.len() == 1,
        })
    })
}
