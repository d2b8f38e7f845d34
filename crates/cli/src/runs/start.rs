//! Beginning and driving a run: `apply`, `drill`, `resume`, `rollback`,
//! with the checks only a command line makes first (the playbook file still
//! compiles to the journal's plan, every secret is set), the signals that
//! pause or interrupt it, and a drill's steward.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blackstart_engine::decision::{Decision, Kind};
use blackstart_engine::journal::{self, Record};
use blackstart_engine::secrets::Secrets;
use blackstart_engine::step::StepContext;
use blackstart_engine::{
    Engine, Event, FileJournal, Inbox, RunDir, RunPhase, StagePhase, SystemPhase, WaitingFor,
};
use blackstart_model::Plan;
use blackstart_model::playbook::{Action, Check};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::progress::progress;
use super::*;
use crate::{CliError, exit};

/// How `resume` and `rollback` check the journal against its playbook.
#[derive(Debug, Default)]
pub struct Trust {
    /// Instead of the playbook file `apply` journaled.
    pub playbook: Option<PathBuf>,
    /// Go on without a readable playbook.
    pub trust_journal: bool,
}

/// The playbook file as the journal records it: absolute, so `resume`
/// finds it from any directory; none for standard input.
fn journaled_path(file: &Path) -> Option<String> {
    (file != Path::new("-"))
        .then(|| std::fs::canonicalize(file).ok())
        .flatten()
        .map(|p| p.display().to_string())
}

/// The secrets a (non-drill) run needs, every one resolved and registered
/// for redaction before anything starts; a missing one is refused (exit 2)
/// with every name that is missing. Values the plan passes through
/// `inheritEnv` are redacted too.
fn secrets_for(plan: &Plan, drill: bool) -> Result<Secrets, CliError> {
    let secrets = Secrets::from_env();
    if drill {
        return Ok(secrets);
    }
    if let Err(missing) = secrets.preload(plan.env.iter().map(String::as_str)) {
        let list: Vec<String> = missing.iter().map(|n| format!("${{env:{n}}}")).collect();
        return Err(CliError::Usage(format!(
            "the playbook reads {}, which {} not set; nothing was started: set {} and run again",
            list.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            if missing.len() == 1 { "it" } else { "them" },
        )));
    }
    let inherited = plan
        .inherit_env
        .iter()
        .chain(plan.systems().flat_map(|(_, s)| {
            let actions = std::iter::once(&s.start).chain(s.stop.as_ref());
            actions
                .filter_map(|a| match a {
                    Action::Exec(e) => Some(&e.inherit_env),
                    _ => None,
                })
                .chain(s.verify.iter().chain(&s.health).filter_map(|c| match c {
                    Check::Exec(e) => Some(&e.inherit_env),
                    _ => None,
                }))
                .flatten()
        }));
    let values: Vec<String> = inherited
        .filter(|n| !blackstart_engine::step::ALWAYS_INHERITED.contains(&n.as_str()))
        .filter_map(|n| std::env::var(n).ok())
        .collect();
    secrets.register(values);
    Ok(secrets)
}

/// `apply FILE [--plan plan.json]`: starts a new run of a playbook.
pub fn apply(
    plan: Plan,
    file: &Path,
    reviewed: Option<&Path>,
    state_dir: &Path,
    run_id: Option<String>,
    by: Option<String>,
) -> Result<u8, CliError> {
    if let Some(path) = reviewed {
        let bytes = crate::read_regular(path, crate::MAX_PLAN_BYTES, "a plan")?;
        let reviewed: Plan = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Usage(format!(
                "{} is not a blackstart JSON plan: {e}",
                path.display()
            ))
        })?;
        if reviewed.playbook_hash != plan.playbook_hash {
            return Err(CliError::StalePlan {
                reviewed: reviewed.playbook_hash,
                now: plan.playbook_hash,
            });
        }
    }
    let secrets = secrets_for(&plan, false)?;
    let run = run_id.unwrap_or_else(|| default_run_id(&plan));
    let dir = run_dir(state_dir, &run)?;
    let started = Event::RunStarted {
        run: run.clone(),
        playbook: plan.playbook.clone(),
        playbook_hash: plan.playbook_hash.clone(),
        plan: Box::new(plan),
        playbook_path: journaled_path(file),
        drill: false,
        require_signatures: false,
    };
    let journal = FileJournal::create(&dir, &started)?;
    note(&format!(
        "run {run} started; journal {}",
        journal.path().display()
    ));
    let records = journal.load()?;
    drive(
        &runtime()?,
        journal,
        &records,
        &dir,
        Mode::Run(by),
        false,
        secrets,
    )
}

/// Who decides a drill's gates and manual steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deciders {
    /// A stand-in: each role by one of its members, unsigned.
    StandIn,
    /// People, from another terminal; unsigned decisions by members count.
    People,
    /// People, signing as in a real run.
    PeopleSigning,
}

/// `drill FILE`: the real engine, probes and journal against the simulated
/// plant. Gates are approved and manual steps confirmed by a stand-in
/// unless `manual` is set.
pub fn drill(
    plan: Plan,
    file: &Path,
    faults: &std::collections::HashMap<String, blackstart_sim::Fault>,
    speed: f64,
    state_dir: &Path,
    run_id: Option<String>,
    deciders: Deciders,
) -> Result<u8, CliError> {
    let rt = runtime()?;
    let plant = rt
        .block_on(blackstart_sim::Plant::start(&plan, speed, faults))
        .map_err(|e| CliError::Runtime(format!("cannot start the simulated plant: {e}")))?;
    let drilled = blackstart_sim::drill_plan(&plan, &plant.url(), speed);
    let run = run_id.unwrap_or_else(|| format!("drill-{}", default_run_id(&plan)));
    let dir = run_dir(state_dir, &run)?;
    let started = Event::RunStarted {
        run: run.clone(),
        playbook: plan.playbook.clone(),
        playbook_hash: plan.playbook_hash.clone(),
        plan: Box::new(drilled),
        playbook_path: journaled_path(file),
        drill: true,
        require_signatures: deciders == Deciders::PeopleSigning,
    };
    let journal = FileJournal::create(&dir, &started)?;
    note(&format!(
        "drill {run} of {} against the simulated plant at {} ({} systems, {speed}x speed); journal {}",
        plan.playbook,
        plant.url(),
        plan.system_count(),
        journal.path().display()
    ));
    let connected = plan.connections.len();
    if connected > 0 {
        note(&format!(
            "{connected} site connection(s) simulated: no ssh session is opened and no kubeconfig context is used; `blackstart check` tests them"
        ));
    }
    let records = journal.load()?;
    let steward = deciders == Deciders::StandIn;
    let secrets = secrets_for(&plan, true)?;
    let code = drive(
        &rt,
        journal,
        &records,
        &dir,
        Mode::Run(None),
        steward,
        secrets,
    );
    let counts = plant.counts();
    note(&format!(
        "the plant saw {} starts, {} stops, {} health probes",
        counts.starts, counts.stops, counts.probes
    ));
    drop(plant);
    code
}

/// Opens a run's journal for `resume` or `rollback`, after making sure its
/// plan is what the playbook compiles to: the journal alone cannot prove
/// itself (whoever rewrites a record can re-hash the chain after it), the
/// reviewed playbook file can.
fn open_checked(dir: &RunDir, trust: &Trust) -> Result<(FileJournal, Vec<Record>), CliError> {
    let (journal, records) = FileJournal::open(dir)?;
    let Some(Event::RunStarted {
        playbook_hash,
        plan,
        playbook_path,
        drill,
        ..
    }) = records.first().map(|r| &r.event)
    else {
        return Err(CliError::Runtime("the journal holds no plan".into()));
    };
    if &plan.playbook_hash != playbook_hash {
        return Err(CliError::Mismatch(format!(
            "the journal of run {} is not consistent: its plan is for {}, its run for {playbook_hash}; the journal was altered, nothing was done",
            dir.run, plan.playbook_hash
        )));
    }
    let path = trust
        .playbook
        .clone()
        .or_else(|| playbook_path.as_ref().map(PathBuf::from));
    let bytes = match &path {
        Some(p) => match crate::read_limited(p) {
            Ok(b) => Some(b),
            Err(e) if trust.trust_journal => {
                note(&format!(
                    "{e}; going on from the journal's plan, as --trust-journal says"
                ));
                None
            }
            Err(e) => {
                return Err(CliError::Mismatch(format!(
                    "{e}: the journal's plan cannot be checked against its playbook; give the playbook with --playbook FILE, or --trust-journal to go on from the journal's own copy"
                )));
            }
        },
        None if trust.trust_journal => {
            note(
                "the journal names no playbook file; going on from its plan, as --trust-journal says",
            );
            None
        }
        None => {
            return Err(CliError::Mismatch(format!(
                "the journal of run {} names no playbook file to check its plan against (written by an older release, or from standard input); give it with --playbook FILE, or --trust-journal to go on from the journal's own copy",
                dir.run
            )));
        }
    };
    if let (Some(bytes), Some(path)) = (bytes, &path) {
        let fresh =
            Plan::build(
                blackstart_model::load(&bytes).map_err(|diags| CliError::Invalid {
                    path: path.display().to_string(),
                    diags,
                })?,
            );
        if &fresh.playbook_hash != playbook_hash {
            return Err(CliError::Mismatch(format!(
                "{} is now {}, but run {} ran {playbook_hash}: the playbook changed since the run began; resume with the playbook it ran (--playbook FILE)",
                path.display(),
                fresh.playbook_hash,
                dir.run
            )));
        }
        // A drill's plan has the simulated plant's steps in place of the
        // playbook's, so only the hash can be compared.
        if !drill && fresh != **plan {
            return Err(CliError::Mismatch(format!(
                "the plan in the journal of run {} is not what {} compiles to, though the hashes agree: the journal was altered; nothing was done",
                dir.run,
                path.display()
            )));
        }
    }
    Ok((journal, records))
}

/// The secrets a run the journal holds needs again (none for a drill).
fn secrets_of(records: &[Record]) -> Result<Secrets, CliError> {
    let drill = matches!(
        records.first().map(|r| &r.event),
        Some(Event::RunStarted { drill: true, .. })
    );
    secrets_for(journal_plan(records)?, drill)
}

/// `resume RUN`: carries on a paused or interrupted run.
pub fn resume(
    state_dir: &Path,
    run: &str,
    trust: &Trust,
    by: Option<String>,
) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    // An ended run has nothing to resume: said so, without taking it over.
    let ended = folded(&journal::read(&dir)?)?;
    if ended.phase.is_final() {
        note(&format!(
            "run {run} has ended ({:?}{}); there is nothing to resume{}",
            ended.phase,
            ended
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            match ended.held.first() {
                _ if ended.phase == RunPhase::Succeeded => String::new(),
                Some(h) => format!(
                    "; `blackstart retry {run} --site {} --by NAME` starts a held site again",
                    h.site
                ),
                None => "; a new run (`blackstart apply`) starts the restart again".to_owned(),
            }
        ));
        return Ok(if ended.phase == RunPhase::Succeeded {
            exit::SUCCESS
        } else {
            exit::FAILED
        });
    }
    let (journal, records) = open_checked(&dir, trust)?;
    let secrets = secrets_of(&records)?;
    note(&format!("resuming run {run} from event {}", records.len()));
    drive(
        &runtime()?,
        journal,
        &records,
        &dir,
        Mode::Run(by),
        false,
        secrets,
    )
}

/// `rollback RUN`: stops everything the run started, dependents first.
pub fn rollback(
    state_dir: &Path,
    run: &str,
    trust: &Trust,
    asked: Option<Decision>,
    dry_run: bool,
    signing: &super::Signing,
) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    if !dry_run && super::decide::driven(state_dir, run)? {
        // Another process drives the run: it rolls back, as asked.
        let Some(d) = asked else {
            return Err(CliError::Usage(format!(
                "run {run} is driven by another process; say who asks with --by NAME, and it rolls back"
            )));
        };
        return super::decide(state_dir, run, d, signing);
    }
    if dry_run {
        // What it would stop, in order; nothing is locked or changed.
        let records = journal::read(&dir)?;
        let state = folded(&records)?;
        let plan = journal_plan(&records)?;
        let order = state.rollback_order(plan);
        let mut out = String::new();
        if order.is_empty() {
            out.push_str(&format!("run {run}: a rollback would stop nothing\n"));
        } else {
            out.push_str(&format!(
                "run {run}: a rollback would stop, in this order (nothing was changed):\n"
            ));
            for (k, id) in order.iter().enumerate() {
                let how = plan
                    .systems()
                    .find(|(_, s)| &s.id == id)
                    .map(|(_, s)| match &s.stop {
                        Some(a) => a.summary(),
                        None => "no stop action: left as it is".to_owned(),
                    })
                    .unwrap_or_default();
                out.push_str(&format!("{:>4}. {id}  ({how})\n", k + 1));
            }
        }
        crate::write_output(None, &out)?;
        return Ok(exit::SUCCESS);
    }
    let (journal, records) = open_checked(&dir, trust)?;
    let state = folded(&records)?;
    if state.nothing_to_roll_back() {
        let still_up: Vec<&str> = state
            .systems
            .iter()
            .filter(|s| s.started && s.phase == SystemPhase::Failed)
            .map(|s| s.id.as_str())
            .collect();
        let tail = if still_up.is_empty() {
            String::new()
        } else {
            format!(
                "; the stop of {} failed then: stop {} by hand",
                still_up.join(", "),
                if still_up.len() == 1 { "it" } else { "them" }
            )
        };
        note(&format!(
            "run {run} was rolled back already; nothing was changed{tail}"
        ));
        return Ok(exit::SUCCESS);
    }
    // Who asks is checked (and signed) as from any other terminal, and
    // journaled as taken before the first stop.
    let plan = journal_plan(&records)?;
    let asked = match asked {
        Some(d) => match taken_here(plan, &state, d, signing)? {
            None => return Ok(exit::SUCCESS),
            some => some,
        },
        None if plan.roles.is_some() => {
            return Err(CliError::Usage(format!(
                "the playbook of run {run} names its people (spec.roles): say who asks with --by NAME"
            )));
        }
        None => None,
    };
    let secrets = secrets_of(&records)?;
    drive(
        &runtime()?,
        journal,
        &records,
        &dir,
        Mode::Rollback(asked),
        false,
        secrets,
    )
}

/// A decision this process takes itself (it drives the run next): checked
/// and signed as from any terminal. `None` when `--message` asked only for
/// the text to sign, which is printed.
fn taken_here(
    plan: &Plan,
    state: &blackstart_engine::RunState,
    d: Decision,
    signing: &super::Signing,
) -> Result<Option<Decision>, CliError> {
    match super::decide::prepare(plan, state, d, signing)? {
        super::decide::Prepared::Message(text) => {
            crate::write_output(None, &text)?;
            Ok(None)
        }
        super::decide::Prepared::Ready(request) => Ok(Some(request.decision())),
    }
}

/// `retry RUN --site SITE --by NAME` and `retry RUN SYSTEM --by NAME`: a
/// held site, or a failed system, starts again. Checked (and signed) as any
/// decision, journaled, then this process drives the run on, as `resume`
/// does. A `retry RUN SYSTEM` of a start a crash cut short goes to the
/// process that drives the run, as other decisions do.
pub fn retry(
    state_dir: &Path,
    run: &str,
    d: Decision,
    signing: &super::Signing,
) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    if d.kind == Kind::Retry {
        let state = folded(&journal::read(&dir)?)?;
        let cut_short = state.system(&d.subject).is_none_or(|s| s.start_cut_short());
        if cut_short {
            return super::decide::decide(state_dir, run, d, signing);
        }
    }
    if super::decide::driven(state_dir, run)? {
        return Err(CliError::Usage(format!(
            "run {run} is driven by another process: a held site or failed system is retried once the run has ended Degraded, or after `blackstart pause {run}`"
        )));
    }
    let (journal, records) = open_checked(&dir, &Trust::default())?;
    let state = folded(&records)?;
    let plan = journal_plan(&records)?;
    let Some(asked) = taken_here(plan, &state, d, signing)? else {
        return Ok(exit::SUCCESS);
    };
    let secrets = secrets_of(&records)?;
    drive(
        &runtime()?,
        journal,
        &records,
        &dir,
        Mode::Retry(asked),
        false,
        secrets,
    )
}

enum Mode {
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
fn drive(
    rt: &tokio::runtime::Runtime,
    journal: FileJournal,
    records: &[Record],
    dir: &RunDir,
    mode: Mode,
    steward: bool,
    secrets: Secrets,
) -> Result<u8, CliError> {
    rt.block_on(async {
        let (pause, paused) = tokio::sync::watch::channel(false);
        let mut cx = StepContext::new(secrets, STEP_TIMEOUT).map_err(CliError::Runtime)?;
        cx.inherit_env = plan_of(records).map(|p| p.inherit_env.clone()).unwrap_or_default();
        let cx = match plan_of(records) {
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
        let engine = Engine::new(journal, records, cx, Arc::new(Inbox::new(dir)), paused, POLL)?;
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
