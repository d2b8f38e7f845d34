//! Driving a run once it has begun, for every command that does
//! (`apply`, `drill`, `resume`, `rollback`, `retry`): the engine to the end
//! of the run or a pause, with its progress printed, the signals that
//! pause or interrupt it, pause and rollback asked from another terminal,
//! and a drill's stand-in who decides as the playbook's people would.

use std::sync::Arc;
use std::time::Duration;

use blackstart_engine::decision::{Decision, Kind};
use blackstart_engine::journal::Record;
use blackstart_engine::secrets::Secrets;
use blackstart_engine::step::StepContext;
use blackstart_engine::{
    Engine, Event, FileJournal, Inbox, RunDir, RunPhase, StagePhase, SystemPhase, WaitingFor,
};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::progress::progress;
use super::*;
use crate::{CliError, exit};

pub(super) enum Mode {
    /// Who starts or resumes it, if they said.
    Run(Option<String>),
    /// A held site or a failed system started again, by whom.
    Retry(Decision),
    /// Who asked for it, checked as any decision is.
    Rollback(Option<Decision>),
}

/// Runs the engine to the end of the run (or a pause) with progress lines;
/// with `steward`, a drill's stand-in approves every gate and confirms
/// every manual step.
pub(super) fn drive(
    rt: &tokio::runtime::Runtime,
    journal: FileJournal,
    records: Vec<Record>,
    dir: &RunDir,
    mode: Mode,
    steward: bool,
    secrets: Secrets,
) -> Result<u8, CliError> {
    rt.block_on(async {
        let (pause, paused) = tokio::sync::watch::channel(false);
        let mut cx = StepContext::new(secrets, STEP_TIMEOUT).map_err(CliError::Runtime)?;
        cx.inherit_env = plan_of(&records).map(|p| p.inherit_env.clone()).unwrap_or_default();
        let cx = match plan_of(&records) {
            Some(plan) => {
                let (default, own) = crate::cluster::clusters_for(plan).await?;
                StepContext {
                    cluster: default,
                    site_clusters: Arc::new(own),
                    ..cx
                }
            }
            None => cx,
        };
        let engine = Engine::new(journal, &records, cx, Arc::new(Inbox::new(dir)), paused, POLL)?;
        // The engine has folded them and holds the plan: a large run's
        // records (its plan among them) are not kept twice.
        drop(records);
        let (stop_progress, stopped) = tokio::sync::watch::channel(false);
        // Subscribed before the run begins, so no record is missed.
        let progress = tokio::spawn(progress(engine.clone(), engine.subscribe(), stopped));
        let steward = steward.then(|| tokio::spawn(steward_task(engine.clone())));
        let pause = Arc::new(pause);
        // Listening starts here, before the run does: a Ctrl-C in the first
        // moments of a run pauses it like any other.
        let signals = tokio::spawn(on_signals(listen(), engine.clone(), Arc::clone(&pause)));
        let asked_rollback: AskedRollback = Arc::new(std::sync::Mutex::new(None));
        let asked = tokio::spawn(asked_from_afar(
            engine.clone(),
            engine.subscribe(),
            Arc::clone(&pause),
            Arc::clone(&asked_rollback),
        ));
        let ended = match &mode {
            Mode::Run(by) => {
                if let Some(by) = by {
                    engine.driven_by(by);
                }
                match engine.run().await {
                // `rollback` from another terminal: the pause made way for it.
                Ok(RunPhase::Paused) => {
                    let asked = asked_rollback.lock().unwrap_or_else(|p| p.into_inner()).take();
                    match asked {
                        Some((by, reason)) => {
                            let reason: String = reason.unwrap_or_else(|| format!("rolled back as {by} asked"));
                            engine.rollback(&reason, Some(&by)).await
                        }
                        None => Ok(RunPhase::Paused),
                    }
                }
                other => other,
            }
            }
            Mode::Retry(d) => match engine.decide(d)? {
                Ok(()) => {
                    engine.driven_by(&d.by);
                    engine.run().await
                }
                Err(why) => return Err(CliError::Usage(format!("the retry was refused: {why}"))),
            },
            Mode::Rollback(asked) => match asked {
                Some(d) => match engine.decide(d)? {
                    Ok(()) => {
                        let reason = d.reason.clone().unwrap_or_else(|| format!("rolled back as {} asked", d.by));
                        engine.rollback(&reason, Some(&d.by)).await
                    }
                    Err(why) => return Err(CliError::Usage(format!("the rollback was refused: {why}"))),
                },
                None => engine.rollback("rolled back by the commander", None).await,
            },
        };
        let phase = match ended {
            // A second Ctrl-C ended it; the signal task exits 130 as well.
            Err(blackstart_engine::EngineError::Interrupted) => return Ok(exit::INTERRUPTED),
            other => other?,
        };
        signals.abort();
        asked.abort();
        if let Some(s) = steward {
            s.abort();
        }
        stop_progress.send_replace(true);
        let _ = progress.await;
        let state = engine.state();
        let run = &state.run;
        Ok(match (mode, phase) {
            (_, RunPhase::Succeeded) => {
                note(&format!("run {run} succeeded"));
                exit::SUCCESS
            }
            (Mode::Rollback(_), RunPhase::RolledBack)
                if state.systems.iter().all(|s| s.phase != SystemPhase::Failed || !s.started) =>
            {
                note(&format!("run {run} rolled back"));
                exit::SUCCESS
            }
            (_, RunPhase::Paused) => {
                note(&format!("run {run} is paused: `blackstart resume {run}` carries on, `blackstart rollback {run}` undoes it"));
                exit::FAILED
            }
            (_, phase) => {
                note(&format!("run {run} ended {phase:?}{}",
                    state.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                ));
                exit::FAILED
            }
        })
    })
}

/// Takes SIGINT and SIGTERM over from their default (or from being
/// ignored, as they are for a job started in the background). It is called
/// where the run begins, not in a task that may first run after the engine
/// has started a step: a signal in between would otherwise kill, or be
/// ignored.
fn listen() -> Option<(Signal, Signal)> {
    Some((
        signal(SignalKind::interrupt()).ok()?,
        signal(SignalKind::terminate()).ok()?,
    ))
}

/// SIGINT (Ctrl-C) or SIGTERM: the first pauses (no new steps; steps under
/// way finish), the second kills the steps under way, journals them as
/// interrupted and exits 130, so nothing is left running that the journal
/// does not know ended.
async fn on_signals(
    listening: Option<(Signal, Signal)>,
    engine: Engine<FileJournal>,
    pause: Arc<tokio::sync::watch::Sender<bool>>,
) {
    let Some((mut int, mut term)) = listening else {
        note("cannot listen for Ctrl-C or SIGTERM; they will kill blackstart without a pause");
        return;
    };
    let mut next = async || {
        tokio::select! {
            _ = int.recv() => "Ctrl-C",
            _ = term.recv() => "SIGTERM",
        }
    };
    let first = next().await;
    note(&format!(
        "{first}: pausing: no new starts; steps under way finish or time out (Ctrl-C again to stop them at once)"
    ));
    pause.send_replace(true);
    let second = next().await;
    let ended = engine.interrupt();
    note(&format!(
        "{second} again: {ended} step(s) under way killed and journaled as interrupted; `blackstart resume {}` carries on",
        engine.with_state(|s| s.run.clone())
    ));
    std::process::exit(i32::from(exit::INTERRUPTED));
}

/// A rollback asked from another terminal: who, and why.
type AskedRollback = Arc<std::sync::Mutex<Option<(String, Option<String>)>>>;

/// Pause and rollback asked from another terminal (journaled by the engine
/// as it takes them from the inbox): the same graceful pause as Ctrl-C,
/// named after who asked; for a rollback, the pause makes way for it and
/// is not journaled as a pause of its own.
async fn asked_from_afar(
    engine: Engine<FileJournal>,
    mut records: tokio::sync::broadcast::Receiver<Arc<Record>>,
    pause: Arc<tokio::sync::watch::Sender<bool>>,
    rollback: AskedRollback,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let record = match records.recv().await {
            Ok(r) => r,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        match &record.event {
            Event::PauseRequested { by, reason, .. } => {
                engine.pause_because(&format!(
                    "paused by {by}{}",
                    reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ));
                note(&format!(
                    "{by} asked for a pause: no new starts; steps under way finish"
                ));
                pause.send_replace(true);
            }
            Event::RollbackRequested { by, reason, .. } => {
                *rollback.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((by.clone(), reason.clone()));
                engine.rollback_comes_next();
                note(&format!(
                    "{by} asked for a rollback: no new starts; then what the run started is stopped"
                ));
                pause.send_replace(true);
            }
            _ => {}
        }
    }
}

/// Approves every gate and confirms every manual step, so that a drill
/// runs unattended. It decides as the playbook's people would: each role
/// by one of its members (unsigned: a drill rehearses the plan, not the
/// keys), one person per role of a gate, so a gate that no set of distinct
/// people could open fails the drill as it would fail the restart. Without
/// `spec.roles`, as `drill-ROLE`.
async fn steward_task(engine: Engine<FileJournal>) {
    // Woken by every record, so a gate or a manual step is answered the
    // moment it waits (through the engine's own decision path, not the
    // inbox it polls): the drill then takes what the plan estimates.
    let mut records = engine.subscribe();
    let mut asked: std::collections::HashSet<String> = std::collections::HashSet::new();
    let plan = engine.plan().clone();
    let members = |role: &str| -> Vec<String> {
        match &plan.roles {
            Some(roles) => roles
                .iter()
                .filter(|r| r.name == role)
                .flat_map(|r| r.members.iter().map(|m| m.name.clone()))
                .collect(),
            None => vec![format!("drill-{role}")],
        }
    };
    loop {
        let mut requests = Vec::new();
        engine.with_state(|state| {
            for (stage, planned) in state.stages.iter().zip(&plan.stages) {
                if stage.phase != StagePhase::Gate {
                    continue;
                }
                let mut chosen: Vec<String> = Vec::new();
                for role in &planned.gate.approvals {
                    let Some(by) = members(role).into_iter().find(|m| !chosen.contains(m)) else {
                        continue;
                    };
                    chosen.push(by.clone());
                    if asked.insert(format!("{}/{role}/{:?}", stage.name, stage.gate_since)) {
                        requests.push(Decision {
                            role: Some(role.clone()),
                            ..Decision::new(Kind::Approve, &stage.name, &by)
                        });
                    }
                }
            }
            for sys in &state.systems {
                let waiting = sys.waiting_for == Some(WaitingFor::ManualStep);
                if !waiting || sys.confirmed_by.is_some() {
                    continue;
                }
                let planned = plan.systems().find(|(_, s)| s.id == sys.id);
                let role = planned.and_then(|(stage, s)| {
                    [Some(&s.start), s.stop.as_ref()]
                        .into_iter()
                        .flatten()
                        .find_map(|a| match a {
                            blackstart_model::playbook::Action::Manual(m) => m.role.clone(),
                            _ => None,
                        })
                        .or_else(|| stage.gate.approvals.first().cloned())
                });
                let by = match (&plan.roles, role) {
                    (Some(_), Some(role)) => members(&role).into_iter().next(),
                    _ => Some("drill".to_owned()),
                };
                if let Some(by) = by
                    && asked.insert(format!("{}/{:?}", sys.id, sys.waiting_since))
                {
                    requests.push(Decision::new(Kind::Confirm, &sys.id, &by));
                }
            }
        });
        for decision in &requests {
            // A refused one (the gate moved on meanwhile) is simply not taken.
            let _ = engine.decide(decision);
        }
        // Until a record that opens a wait (a gate, a manual step): the
        // state is not scanned for the thousands of records in between. A
        // bound in case the stream lagged past one.
        let _ = tokio::time::timeout(Duration::from_millis(250), async {
            loop {
                match records.recv().await {
                    Ok(r) if opens_a_wait(&r.event) => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}

/// Whether a record makes the run wait for a person: a gate, a manual step.
fn opens_a_wait(event: &Event) -> bool {
    matches!(
        event,
        Event::Stage {
            phase: StagePhase::Gate,
            ..
        } | Event::System {
            waiting_for: Some(WaitingFor::ManualStep),
            ..
        }
    )
}
