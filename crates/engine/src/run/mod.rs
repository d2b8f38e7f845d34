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
//!
//! Files: this one runs stages one after another; `stage` starts one
//! stage's systems; `gate` holds its gate; `start` brings one system up; `attempt` journals and settles start and stop attempts; `rollback`
//! stops what was started; `site` holds a failed site and reaches each
//! site where its connection says; `record` journals every transition
//! before state moves; `end` pauses, fails and ends a run; `log` turns
//! records into `tracing` events.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use blackstart_model::playbook::SmolStr;
use blackstart_model::playbook::{Action, FailureDomain, OnFailure};
use blackstart_model::{Plan, PlannedStage, PlannedSystem};

use crate::RunStore;
use crate::event::{AttemptResult, Event, RunPhase, StagePhase, StepKind, SystemPhase, WaitingFor};
use crate::inbox::RequestSource;
use crate::journal::Record;
use crate::probe;
use crate::process::{self, Process};
use crate::state::{FoldError, RunState};
use crate::step::{AttemptHooks, Outcome, StepContext, run_action, run_check};

mod attempt;
mod end;
mod gate;

use gate::gate_spent;
mod log;
mod notify;
mod record;
mod rollback;
mod site;
mod stage;
mod start;

use attempt::{Running, Settled};
use log::log;
use record::{stage, system};

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
    /// The gate's approvals did not come within `approvalTimeout`.
    TimedOut(String),
}

/// How one system's task ended.
enum Task {
    Healthy,
    NotStarted,
    Failed(String),
    /// Not started: something it depends on failed (optional) or is
    /// Blocked itself. Journaled as Blocked; the gate goes on without it.
    Blocked,
}

/// What a system's start came to, for the systems that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Healthy,
    /// An optional system failed, or a system is Blocked: its dependents
    /// are Blocked, and the stage goes on.
    Blocked,
    /// Not started (a pause), or failed (the stage fails).
    Stopped,
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
    /// The sites reached over ssh, each with its one shared connection.
    ssh: crate::step::ssh::Sites,
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
    /// A rollback was asked for and comes next: the pause that stops new
    /// starts for it is not journaled as a pause of its own.
    rollback_next: AtomicBool,
    /// Why the coming pause happens, when not a person's plain pause.
    pause_reason: Mutex<Option<String>>,
    /// Who started or resumed the run, for its Running record.
    by: Mutex<Option<String>>,
    /// For a gate that was waiting when the run resumed: how long it had
    /// waited while a process drove the run (counted against its
    /// `approvalTimeout`; the time nobody drove the run is not).
    gate_spent: HashMap<String, Duration>,
    /// The run began under journal format 1, which recorded no attempts:
    /// a system it left `Starting` may have run its start.
    format_1: bool,
    /// The journal's last record (seq, hash): what a notification names.
    head: Mutex<(u64, String)>,
    /// Held while writing to the store: records are queued in its order.
    writing: Mutex<()>,
    /// Records written and not yet applied (`record.rs`).
    pending: Mutex<record::Pending>,
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
        let spent = gate_spent(&state, records);
        let plan = match records.first().map(|r| &r.event) {
            Some(Event::RunStarted { plan, .. }) => (**plan).clone(),
            _ => return Err(FoldError::Empty.into()),
        };
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                ssh: crate::step::ssh::Sites::new(&plan.connections),
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
                rollback_next: AtomicBool::new(false),
                pause_reason: Mutex::new(None),
                by: Mutex::new(None),
                gate_spent: spent,
                format_1: records.first().is_some_and(|r| r.v == 1),
                head: Mutex::new(
                    records
                        .last()
                        .map(|r| (r.seq, r.hash.clone()))
                        .unwrap_or_default(),
                ),
                writing: Mutex::new(()),
                pending: Mutex::default(),
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

    /// Says that the coming pause (no new starts; steps under way finish)
    /// is the start of a rollback: [`Engine::run`] then returns `Paused`
    /// without journaling a pause, and [`Engine::rollback`] journals what
    /// it is. For the operator's `spec.rollback`, which stops the run
    /// through the same pause switch as `spec.paused`.
    pub fn rollback_comes_next(&self) {
        self.inner.rollback_next.store(true, Ordering::SeqCst);
    }

    /// Says why the coming pause happens (the journal's reason), when it
    /// is not a person pausing: the operator's RestartRun being deleted.
    pub fn pause_because(&self, reason: &str) {
        *self
            .inner
            .pause_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
    }

    /// Who starts (or resumes) the run: the journal's Running record names
    /// them, so every action has a person.
    pub fn driven_by(&self, by: &str) {
        *self.inner.by.lock().unwrap_or_else(|p| p.into_inner()) = Some(by.to_owned());
    }

    /// Takes a decision made in this process (a `rollback` run from this
    /// terminal) as the inbox's are taken: checked, then journaled as
    /// taken or as refused. `Ok(Err(why))` when it was refused.
    pub fn decide(&self, d: &crate::decision::Decision) -> Result<Result<(), String>, EngineError> {
        self.inner.decide(d)
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
        let notifier = notify::Notifier::start(&self.inner);
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
        if let Some(n) = notifier {
            n.finish().await;
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
                let systems = self.inner.lock().rollback_order(&self.inner.plan);
                self.inner
                    .emit(Event::RollbackBegun {
                        stage: None,
                        systems,
                        reason: reason.to_owned(),
                        by: by.map(str::to_owned),
                    })
                    .await?;
            }
        }
        let mut pump = Pump(Some(self.spawn_request_pump()));
        let notifier = notify::Notifier::start(&self.inner);
        let result = self.inner.finish_rollback().await;
        if let Some(handle) = pump.0.take() {
            handle.abort();
            let _ = handle.await;
        }
        if let Some(n) = notifier {
            n.finish().await;
        }
        result
    }

    async fn run_stages(&self) -> Result<RunPhase, EngineError> {
        let inner = &self.inner;
        if inner.lock().phase.is_final() {
            return Ok(inner.lock().phase);
        }
        let by = inner.by.lock().unwrap_or_else(|p| p.into_inner()).clone();
        inner
            .emit(Event::Run {
                phase: RunPhase::Running,
                reason: by.map(|b| format!("driven by {b}")),
            })
            .await?;
        for stage in &inner.plan.stages {
            let phase = inner.lock().stage(&stage.name).map(|s| s.phase);
            if phase == Some(StagePhase::Succeeded) {
                continue;
            }
            // A run resumed at an open gate goes on waiting at that gate:
            // the wait, and the decisions signed for it, stay the same.
            let at_gate = phase == Some(StagePhase::Gate) && inner.all_healthy(stage);
            if !at_gate {
                inner
                    .stage_event(&stage.name, StagePhase::Running, None)
                    .await?;
                match self.start_stage(stage).await? {
                    Starts::AllHealthy => {}
                    Starts::Paused => return inner.commander_pause("paused by the commander"),
                    Starts::Failed(reason) | Starts::TimedOut(reason) => {
                        return inner.stage_failed(stage, &reason).await;
                    }
                }
                inner
                    .stage_event(&stage.name, StagePhase::Gate, None)
                    .await?;
            }
            match inner.hold_gate(stage).await? {
                Starts::AllHealthy => {}
                Starts::Paused => {
                    return inner.commander_pause("paused at the gate by the commander");
                }
                Starts::Failed(reason) => return inner.stage_failed(stage, &reason).await,
                Starts::TimedOut(reason) => {
                    let policy = stage.gate.on_timeout.unwrap_or(OnFailure::Pause);
                    return inner.stage_failed_as(stage, &reason, policy).await;
                }
            }
            inner
                .stage_event(&stage.name, StagePhase::Succeeded, None)
                .await?;
        }
        let degraded = inner.lock().degraded();
        match degraded {
            Some(why) => inner.end(RunPhase::Degraded, &why),
            None => inner.end(RunPhase::Succeeded, ""),
        }
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
    /// The state, with every durable record applied first: a task dropped
    /// while it waited for the disk left its records for whoever looks.
    fn lock(&self) -> MutexGuard<'_, RunState> {
        // A record that does not fold fails the next emit; a look goes on.
        let _ = self.catch_up();
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The context a system's health checks run in: they judge the
    /// workload its start scaled at the count the start set.
    fn health_cx(&self, sys: &PlannedSystem) -> StepContext {
        StepContext {
            scaled: sys.start.scales(),
            ..self.site_cx(&sys.site)
        }
    }

    fn paused(&self) -> bool {
        *self.pause.borrow()
    }

    fn running_lock(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the journal shows `id` in `phase`, waiting for a manual
    /// step's confirmation or confirmed already: a run resumed there goes
    /// on with that wait (as at a gate), so a confirmation given for it,
    /// before or while this process took the run over, still counts.
    fn manual_wait_open(&self, id: &str, phase: SystemPhase) -> bool {
        self.lock().system(id).is_some_and(|s| {
            s.phase == phase
                && (s.waiting_for == Some(WaitingFor::ManualStep) || s.confirmed_by.is_some())
        })
    }

    /// The system waits for a person; `ask` says what, in words.
    fn system_waits(
        &self,
        id: &str,
        phase: SystemPhase,
        waiting_for: WaitingFor,
        ask: String,
    ) -> Result<(), EngineError> {
        self.emit_blocking(Event::System {
            system: id.to_owned(),
            phase,
            reason: Some(ask),
            waiting_for: Some(waiting_for),
        })
    }

    /// The stage's systems caught mid-verify or mid-start.
    fn with_cancelled(
        &self,
        stage: &PlannedStage,
        site: Option<&str>,
    ) -> Vec<(SmolStr, SystemPhase)> {
        let state = self.lock();
        stage
            .systems
            .iter()
            .filter(|s| site.is_none_or(|site| s.site == site))
            .filter_map(|s| state.system(&s.id).map(|st| (s.id.clone(), st.phase)))
            .filter(|(_, phase)| matches!(phase, SystemPhase::Verifying | SystemPhase::Starting))
            .collect()
    }

    /// Whether every system the stage's gate waits for is Healthy.
    fn all_healthy(&self, stage: &PlannedStage) -> bool {
        let state = self.lock();
        stage.systems.iter().all(|s| {
            state
                .system(&s.id)
                .is_some_and(|s| !state.gate_waits_for(s) || s.phase == SystemPhase::Healthy)
        })
    }

    fn system_started(&self, id: &str) -> bool {
        self.lock().system(id).is_some_and(|s| s.started)
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
}

/// Why a system is Blocked by `dependency`, in words.
fn blocked_by(state: &RunState, dependency: &str) -> String {
    match state.system(dependency) {
        Some(d) if state.is_held(d) => format!(
            "{dependency}, which it depends on, is at site {}, held in stage {}; never started",
            d.site, d.stage
        ),
        Some(d) if d.phase == SystemPhase::Blocked => {
            format!("{dependency}, which it depends on, is Blocked")
        }
        _ => format!("{dependency}, which it depends on, failed; never started"),
    }
}

/// One system's start: after its dependencies, within a free slot, unless
/// the run is pausing.
async fn start_task<S: RunStore + 'static>(
    engine: Engine<S>,
    sys: PlannedSystem,
    mut deps: Vec<(SmolStr, watch::Receiver<Option<Done>>)>,
    semaphore: Arc<Semaphore>,
) -> Result<Task, EngineError> {
    for (id, dep) in &mut deps {
        match dep.wait_for(Option::is_some).await.map(|v| *v) {
            Ok(Some(Done::Healthy)) => {}
            Ok(Some(Done::Blocked)) => {
                let why = blocked_by(&engine.inner.lock(), id);
                engine
                    .inner
                    .system_event(&sys.id, SystemPhase::Blocked, Some(why))
                    .await?;
                return Ok(Task::Blocked);
            }
            _ => return Ok(Task::NotStarted),
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
    let held = engine.with_state(|s| s.system(&sys.id).is_some_and(|me| s.is_held(me)));
    if held {
        engine.inner.blocked_by_its_site(&sys.id, &sys.site)?;
        return Ok(Task::Blocked);
    }
    // Boxed: a stage spawns one of these per system, most of them waiting
    // for dependencies or a slot; inline, the start's own state (the step,
    // its HTTP request, the probes) made each waiting task 8 KiB.
    Box::pin(engine.inner.bring_up(&sys)).await
}
