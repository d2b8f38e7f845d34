//! The run commands: apply, resume, rollback, retry, status, approve,
//! confirm, audit.
//!
//! Wiring only: the engine runs, the journal keeps, the inbox carries
//! requests; this module picks the files, prints progress for a person and
//! turns outcomes into DESIGN.md's exit codes. What it checks itself is
//! what only a command line has: that the playbook file a run is resumed
//! with still compiles to the journal's plan, and that every secret is set
//! before anything starts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use blackstart_engine::event::{AttemptResult, StepKind};
use blackstart_engine::journal::{self, Record};
use blackstart_engine::secrets::Secrets;
use blackstart_engine::step::{StepContext, kubernetes::Cluster};
use blackstart_engine::{
    Engine, Event, FileJournal, Inbox, JournalError, Request, RunDir, RunPhase, RunState,
    StagePhase, SystemPhase,
};
use blackstart_model::Plan;
use blackstart_model::playbook::{Action, Check};

use crate::{CliError, exit};

static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether progress and notes go out as JSON log lines.
pub fn set_json(json: bool) {
    JSON.store(json, std::sync::atomic::Ordering::Relaxed);
}

fn json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// A note for the person (or, with `--log-format json`, a log line).
pub fn note(text: &str) {
    if json() {
        tracing::info!("{text}");
    } else {
        eprintln!("blackstart: {text}");
    }
}

/// How often the engine looks for approvals and confirmations.
const POLL: Duration = Duration::from_millis(250);

/// A step's timeout when it sets none (the run's startTimeout still bounds it).
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

pub fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start the async runtime: {e}")))
}

fn run_dir(state_dir: &Path, run: &str) -> Result<RunDir, CliError> {
    Ok(RunDir::new(state_dir, run)?)
}

/// A run id people can type: the playbook's name and the UTC start time.
fn default_run_id(plan: &Plan) -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("{}-{}", plan.playbook, stamp.to_lowercase())
}

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
        Mode::Run,
        None,
        secrets,
    )
}

/// `drill FILE`: the real engine, probes and journal against the simulated
/// plant. Gates are approved and manual steps confirmed as `drill` unless
/// `manual` is set.
pub fn drill(
    plan: Plan,
    file: &Path,
    faults: &std::collections::HashMap<String, blackstart_sim::Fault>,
    speed: f64,
    state_dir: &Path,
    run_id: Option<String>,
    manual: bool,
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
    };
    let journal = FileJournal::create(&dir, &started)?;
    note(&format!(
        "drill {run} of {} against the simulated plant at {} ({} systems, {speed}x speed); journal {}",
        plan.playbook,
        plant.url(),
        plan.system_count(),
        journal.path().display()
    ));
    let records = journal.load()?;
    let steward = (!manual).then_some("drill");
    let secrets = secrets_for(&plan, true)?;
    let code = drive(&rt, journal, &records, &dir, Mode::Run, steward, secrets);
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

fn drill_of(records: &[Record]) -> bool {
    matches!(
        records.first().map(|r| &r.event),
        Some(Event::RunStarted { drill: true, .. })
    )
}

/// `resume RUN`: carries on a paused or interrupted run.
pub fn resume(state_dir: &Path, run: &str, trust: &Trust) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let (journal, records) = open_checked(&dir, trust)?;
    let plan =
        plan_of(&records).ok_or_else(|| CliError::Runtime("the journal holds no plan".into()))?;
    let secrets = secrets_for(plan, drill_of(&records))?;
    note(&format!("resuming run {run} from event {}", records.len()));
    drive(
        &runtime()?,
        journal,
        &records,
        &dir,
        Mode::Run,
        None,
        secrets,
    )
}

/// `rollback RUN`: stops everything the run started, dependents first.
pub fn rollback(
    state_dir: &Path,
    run: &str,
    trust: &Trust,
    by: Option<&str>,
) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
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
    let plan =
        plan_of(&records).ok_or_else(|| CliError::Runtime("the journal holds no plan".into()))?;
    let secrets = secrets_for(plan, drill_of(&records))?;
    let mode = Mode::Rollback(by.map(str::to_owned));
    drive(&runtime()?, journal, &records, &dir, mode, None, secrets)
}

enum Mode {
    Run,
    /// Who asked for it.
    Rollback(Option<String>),
}

/// The cluster of the kubeconfig (or the pod's own), when the run's plan
/// has kubernetes steps; a plan without them never needs one.
async fn cluster_for(records: &[Record]) -> Result<Option<Cluster>, CliError> {
    let Some(plan) = plan_of(records) else {
        return Ok(None);
    };
    let uses_kubernetes = plan.systems().any(|(_, s)| {
        let actions = std::iter::once(&s.start).chain(s.stop.as_ref());
        actions
            .into_iter()
            .any(|a| matches!(a, Action::Kubernetes(_)))
            || s.verify
                .iter()
                .chain(&s.health)
                .any(|c| matches!(c, Check::Kubernetes(_)))
    });
    if !uses_kubernetes {
        return Ok(None);
    }
    let client = kube::Client::try_default().await.map_err(|e| {
        CliError::Runtime(format!(
            "the playbook has kubernetes steps, but no cluster is reachable (kubeconfig or in-cluster config): {e}"
        ))
    })?;
    let namespace = client.default_namespace().to_owned();
    Ok(Some(Cluster { client, namespace }))
}

/// Runs the engine to the end of the run (or a pause) with progress lines;
/// a `steward` name approves every gate and confirms every manual step.
fn drive(
    rt: &tokio::runtime::Runtime,
    journal: FileJournal,
    records: &[Record],
    dir: &RunDir,
    mode: Mode,
    steward: Option<&'static str>,
    secrets: Secrets,
) -> Result<u8, CliError> {
    rt.block_on(async {
        let (pause, paused) = tokio::sync::watch::channel(false);
        let mut cx = StepContext::new(secrets, STEP_TIMEOUT).map_err(CliError::Runtime)?;
        cx.inherit_env = plan_of(records).map(|p| p.inherit_env.clone()).unwrap_or_default();
        let cx = match cluster_for(records).await? {
            Some(cluster) => cx.with_cluster(cluster),
            None => cx,
        };
        let engine = Engine::new(journal, records, cx, Arc::new(Inbox::new(dir)), paused, POLL)?;
        let (stop_progress, stopped) = tokio::sync::watch::channel(false);
        // Subscribed before the run begins, so no record is missed.
        let progress = tokio::spawn(progress(engine.clone(), engine.subscribe(), stopped));
        let steward = steward.map(|by| tokio::spawn(steward_task(engine.clone(), Inbox::new(dir), by)));
        let signals = tokio::spawn(on_signals(engine.clone(), pause));
        let phase = match &mode {
            Mode::Run => engine.run().await?,
            Mode::Rollback(by) => {
                let reason = match by {
                    Some(by) => format!("rolled back as {by} asked"),
                    None => "rolled back by the commander".to_owned(),
                };
                engine.rollback(&reason, by.as_deref()).await?
            }
        };
        signals.abort();
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

/// SIGINT (Ctrl-C) or SIGTERM: the first pauses (no new steps; steps under
/// way finish), the second kills the steps under way, journals them as
/// interrupted and exits 130, so nothing is left running that the journal
/// does not know ended.
async fn on_signals(engine: Engine<FileJournal>, pause: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
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
    std::process::exit(130);
}

/// Approves every gate and confirms every manual step, as `by`: what a drill
/// does so that it runs unattended.
async fn steward_task(engine: Engine<FileJournal>, inbox: Inbox, by: &'static str) {
    let mut asked: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let mut requests = Vec::new();
        engine.with_state(|state| {
            let plan = engine.plan();
            for (stage, planned) in state.stages.iter().zip(&plan.stages) {
                if stage.phase != StagePhase::Gate {
                    continue;
                }
                for role in &planned.gate.approvals {
                    if asked.insert(format!("{}/{role}", stage.name)) {
                        requests.push(Request::Approve {
                            stage: stage.name.clone(),
                            by: by.to_owned(),
                            role: Some(role.clone()),
                        });
                    }
                }
            }
            for sys in &state.systems {
                let waiting = sys
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("waiting for confirmation"));
                if waiting
                    && sys.confirmed_by.is_none()
                    && asked.insert(format!("{}/{:?}", sys.id, sys.phase))
                {
                    requests.push(Request::Confirm {
                        system: sys.id.clone(),
                        by: by.to_owned(),
                    });
                }
            }
        });
        for request in requests {
            let _ = inbox.submit(&request);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Shows a run's progress from its records until told to stop, then the
/// records still queued: a live view on a terminal, plain lines for a log,
/// nothing with `--log-format json` (the engine's log has it all). Every
/// transition is shown, in order, as it was recorded: the lines are drawn
/// from the engine's stream of records, never from sampled state.
async fn progress(
    engine: Engine<FileJournal>,
    mut records: tokio::sync::broadcast::Receiver<Arc<Record>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::io::IsTerminal as _;
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    if json() {
        let _ = stop.changed().await;
        return;
    }
    let live = std::io::stderr().is_terminal().then(|| Live::new(&engine));
    let run = engine.with_state(|s| s.run.clone());
    let show = |record: &Record| {
        for line in progress_lines(&run, engine.plan(), &record.event) {
            match &live {
                // The bars say what is under way; above them go what a
                // person must see or do.
                Some(view) if notable(&record.event) => {
                    let _ = view.multi.println(line);
                }
                Some(_) => {}
                None => eprintln!("{line}"),
            }
        }
    };
    let missed = |n: u64| {
        let line =
            format!("({n} transitions not shown here; `blackstart audit {run}` lists every one)");
        match &live {
            Some(view) => {
                let _ = view.multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    };
    let mut bars = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            received = records.recv() => match received {
                Ok(record) => show(&record),
                Err(RecvError::Lagged(n)) => missed(n),
                Err(RecvError::Closed) => {}
            },
            _ = bars.tick(), if live.is_some() => {
                if let Some(view) = &live {
                    engine.with_state(|now| view.update(now));
                }
            }
            _ = stop.changed() => {
                loop {
                    match records.try_recv() {
                        Ok(record) => show(&record),
                        Err(TryRecvError::Lagged(n)) => missed(n),
                        Err(_) => break,
                    }
                }
                if let Some(view) = &live {
                    engine.with_state(|now| view.update(now));
                    view.finish();
                }
                return;
            }
        }
    }
}

/// The lines a person reads for one record: the audit's words for it,
/// and, where a person must act, the command that does it. Attempts and
/// successful output are left to `audit`: the phases say enough as it runs.
fn progress_lines(run: &str, plan: &Plan, event: &Event) -> Vec<String> {
    let mut lines = Vec::new();
    match event {
        Event::RunStarted { .. }
        | Event::AttemptBegun { .. }
        | Event::AttemptRunning { .. }
        | Event::AttemptEnded { .. } => return lines,
        Event::Output {
            exit_code: None | Some(0),
            ..
        } => return lines,
        Event::System { .. } | Event::Output { .. } => lines.push(format!("  {}", describe(event))),
        _ => lines.push(describe(event)),
    }
    match event {
        Event::Stage {
            stage,
            phase: StagePhase::Gate,
            ..
        } => {
            let roles = plan
                .stages
                .iter()
                .find(|s| &s.name == stage)
                .map(|s| s.gate.approvals.clone())
                .unwrap_or_default();
            if !roles.is_empty() {
                lines.push(format!(
                    "  gate: waiting for approval by {}: `blackstart approve {run} {stage} --by NAME --role ROLE`",
                    roles.join(", ")
                ));
            }
        }
        Event::System {
            system,
            reason: Some(reason),
            ..
        } if reason.starts_with("waiting for confirmation") => lines.push(format!(
            "    confirm with `blackstart confirm {run} {system} --by NAME`"
        )),
        _ => {}
    }
    lines
}

/// What the live view prints above its bars: failures, rollbacks, what a
/// person is waited for or did, and how the run ended.
fn notable(event: &Event) -> bool {
    match event {
        Event::Run { .. }
        | Event::Approved { .. }
        | Event::Confirmed { .. }
        | Event::RetryRequested { .. }
        | Event::RollbackBegun { .. }
        | Event::SetAside { .. }
        | Event::TornWriteDiscarded { .. }
        | Event::Output { .. } => true,
        Event::Stage { phase, .. } => matches!(
            phase,
            StagePhase::Gate | StagePhase::Failed | StagePhase::RolledBack
        ),
        Event::System { phase, reason, .. } => {
            matches!(phase, SystemPhase::Failed | SystemPhase::RolledBack)
                || reason.as_deref().is_some_and(|r| r.starts_with("waiting"))
        }
        Event::RunStarted { .. }
        | Event::AttemptBegun { .. }
        | Event::AttemptRunning { .. }
        | Event::AttemptEnded { .. } => false,
    }
}

/// The live view: a bar per stage (healthy systems of all) with what is
/// under way beside it.
struct Live {
    multi: indicatif::MultiProgress,
    bars: Vec<indicatif::ProgressBar>,
}

impl Live {
    fn new(engine: &Engine<FileJournal>) -> Live {
        let multi = indicatif::MultiProgress::new();
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>24.bold} [{bar:30.green/white}] {pos:>5}/{len:<5} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        let bars = engine
            .plan()
            .stages
            .iter()
            .map(|stage| {
                let bar = multi.add(indicatif::ProgressBar::new(stage.systems.len() as u64));
                bar.set_style(style.clone());
                bar.set_prefix(stage.name.clone());
                bar.set_message("pending");
                bar
            })
            .collect();
        Live { multi, bars }
    }

    fn update(&self, now: &RunState) {
        for (bar, stage) in self.bars.iter().zip(&now.stages) {
            let mine = now.systems.iter().filter(|s| s.stage == stage.name);
            let healthy = mine
                .clone()
                .filter(|s| s.phase == SystemPhase::Healthy)
                .count();
            let busy: Vec<&str> = mine
                .filter(|s| {
                    matches!(
                        s.phase,
                        SystemPhase::Verifying | SystemPhase::Starting | SystemPhase::Stopping
                    )
                })
                .map(|s| s.id.as_str())
                .take(3)
                .collect();
            bar.set_position(healthy as u64);
            let mut message = format!("{:?}", stage.phase);
            if !busy.is_empty() {
                message.push_str(&format!(": {}", busy.join(", ")));
            }
            bar.set_message(message);
        }
    }

    /// Leaves the bars as they are: `finish` would draw a rolled-back or
    /// skipped stage as complete.
    fn finish(&self) {
        for bar in &self.bars {
            bar.abandon();
        }
    }
}

fn folded(records: &[Record]) -> Result<RunState, CliError> {
    RunState::fold(records.iter().map(|r| (r.seq, &r.event)))
        .map_err(|e| CliError::Runtime(e.to_string()))
}

fn plan_of(records: &[Record]) -> Option<&Plan> {
    match records.first().map(|r| &r.event) {
        Some(Event::RunStarted { plan, .. }) => Some(plan),
        _ => None,
    }
}

/// `status RUN`: where the run stands, read without taking its lock.
pub fn status(state_dir: &Path, run: &str, json: bool) -> Result<u8, CliError> {
    let scan = journal::read_scan(&run_dir(state_dir, run)?)?;
    if let Some(rest) = &scan.rest {
        note(&format!(
            "the journal goes on past its valid chain (line {}: {}); this is the state up to event {}",
            rest.line,
            rest.reason,
            scan.records.len()
        ));
    }
    let records = scan.records;
    let state = folded(&records)?;
    if json {
        let mut text = serde_json::to_string_pretty(&state).expect("state always serializes");
        text.push('\n');
        crate::write_output(None, &text)?;
        return Ok(exit::SUCCESS);
    }
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {}  ({} {})",
        state.run, state.playbook, state.playbook_hash
    );
    let _ = writeln!(
        out,
        "phase: {:?}{}",
        state.phase,
        state
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    for stage in &state.stages {
        let approvals: Vec<String> = stage
            .approvals
            .iter()
            .map(|a| {
                format!(
                    "{}{}",
                    a.by,
                    a.role
                        .as_deref()
                        .map(|r| format!(" as {r}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let approved = if approvals.is_empty() {
            String::new()
        } else {
            format!("  approved by {}", approvals.join(", "))
        };
        let _ = writeln!(out, "stage {}: {:?}{approved}", stage.name, stage.phase);
        for sys in state.systems.iter().filter(|s| s.stage == stage.name) {
            let reason = sys
                .reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:<28} {:?}{reason}", sys.id, sys.phase);
        }
    }
    crate::write_output(None, &out)?;
    Ok(exit::SUCCESS)
}

/// Leaves a person's request in the run's inbox, for the process that
/// drives the run (or the next `resume`) to record.
fn hand_over(dir: &RunDir, request: &Request) -> Result<(), CliError> {
    Inbox::new(dir)
        .submit(request)
        .map(|_| ())
        .map_err(|source| CliError::Write {
            path: dir.dir.display().to_string(),
            source,
        })
}

fn live(state: &RunState) -> Result<(), CliError> {
    if state.phase.is_final() {
        return Err(CliError::Usage(format!(
            "run {} has ended ({:?}); nothing to approve or confirm",
            state.run, state.phase
        )));
    }
    Ok(())
}

/// `approve RUN STAGE --by NAME [--role ROLE]`, from any terminal.
pub fn approve(
    state_dir: &Path,
    run: &str,
    stage: &str,
    by: &str,
    role: Option<String>,
) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let records = journal::read(&dir)?;
    let state = folded(&records)?;
    live(&state)?;
    let plan =
        plan_of(&records).ok_or_else(|| CliError::Runtime("the journal holds no plan".into()))?;
    let role = plan
        .approval_role(run, stage, role)
        .map_err(CliError::Usage)?;
    hand_over(
        &dir,
        &Request::Approve {
            stage: stage.to_owned(),
            by: by.to_owned(),
            role: role.clone(),
        },
    )?;
    note(&format!(
        "approval of `{stage}` by {by}{} handed to run {run}; the running apply or the next resume records it",
        role.map(|r| format!(" as {r}")).unwrap_or_default()
    ));
    Ok(exit::SUCCESS)
}

/// `confirm RUN SYSTEM --by NAME`: a person did a manual step.
pub fn confirm(state_dir: &Path, run: &str, system: &str, by: &str) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let records = journal::read(&dir)?;
    let state = folded(&records)?;
    live(&state)?;
    if state.system(system).is_none() {
        return Err(CliError::Usage(format!(
            "run {run} has no system `{system}`"
        )));
    }
    hand_over(
        &dir,
        &Request::Confirm {
            system: system.to_owned(),
            by: by.to_owned(),
        },
    )?;
    note(&format!(
        "confirmation of `{system}` by {by} handed to run {run}"
    ));
    Ok(exit::SUCCESS)
}

/// `retry RUN SYSTEM --by NAME`: a new start attempt of a system whose
/// last start a crash left unknown.
pub fn retry(state_dir: &Path, run: &str, system: &str, by: &str) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let records = journal::read(&dir)?;
    let state = folded(&records)?;
    live(&state)?;
    let Some(sys) = state.system(system) else {
        return Err(CliError::Usage(format!(
            "run {run} has no system `{system}`"
        )));
    };
    let unknown = sys.phase == SystemPhase::Starting
        && sys.step.as_ref().is_some_and(|a| {
            a.step == StepKind::Start
                && matches!(
                    a.result,
                    None | Some(AttemptResult::Unknown | AttemptResult::Interrupted)
                )
        });
    if !unknown {
        return Err(CliError::Usage(format!(
            "`{system}` of run {run} is {:?}{}; `retry` starts again a system whose start a crash cut short",
            sys.phase,
            sys.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )));
    }
    hand_over(
        &dir,
        &Request::Retry {
            system: system.to_owned(),
            by: by.to_owned(),
        },
    )?;
    note(&format!(
        "retry of `{system}` by {by} handed to run {run}; the running apply or the next resume starts it again"
    ));
    Ok(exit::SUCCESS)
}

/// `audit RUN [--verify [--head H]]`: the timeline for the post-incident
/// review, or the check of its chain.
pub fn audit(
    state_dir: &Path,
    run: &str,
    verify: Option<Option<&str>>,
    markdown: bool,
) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    if let Some(head) = verify {
        return verify_journal(&dir, head);
    }
    let records = journal::read(&dir)?;
    let text = if markdown {
        audit_markdown(&records)?
    } else {
        audit_text(&records)
    };
    crate::write_output(None, &text)?;
    Ok(exit::SUCCESS)
}

/// `audit --verify`: intact means every record matches its hash, each
/// follows the one before, the journal is not empty and ends in a complete
/// record, and (with `--head`) the kept head is in the chain.
fn verify_journal(dir: &RunDir, head: Option<&str>) -> Result<u8, CliError> {
    let path = dir.journal();
    let failed = |why: String| {
        note(&format!("{}: verification failed: {why}", path.display()));
        Ok(exit::FAILED)
    };
    let scan = match journal::read_scan(dir) {
        Err(JournalError::Corrupt { line, reason, .. }) => {
            return failed(format!("line {line}: {reason}"));
        }
        other => other?,
    };
    let Some(last) = scan.records.last() else {
        return failed("the journal is empty: it holds no record at all".to_owned());
    };
    if let Some(rest) = &scan.rest {
        return failed(format!(
            "the chain is intact up to event {}, then line {} ({} bytes): {}; `resume` or `rollback` sets those bytes aside beside the journal and goes on from event {}",
            last.seq, rest.line, rest.bytes, rest.reason, last.seq
        ));
    }
    if let Some(head) = head {
        let head = head.trim().trim_start_matches("sha256:");
        if !scan.records.iter().any(|r| r.hash == head) {
            return failed(format!(
                "the head {head} is not in the chain: the journal was rewritten or cut after that head was kept"
            ));
        }
    }
    for r in &scan.records {
        if let Event::SetAside {
            file,
            bytes,
            reason,
        } = &r.event
        {
            note(&format!(
                "event {}: {bytes} bytes after the valid chain were set aside into {} ({reason})",
                r.seq,
                dir.dir.join(file).display()
            ));
        }
    }
    crate::write_output(
        None,
        &format!(
            "{}: {} events, hash chain intact{}\nhead: {} {}\n",
            path.display(),
            scan.records.len(),
            head.map(|h| format!(", head {h} in it"))
                .unwrap_or_default(),
            last.seq,
            last.hash
        ),
    )?;
    Ok(exit::SUCCESS)
}

fn describe(event: &Event) -> String {
    let why = |r: &Option<String>| r.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    match event {
        Event::RunStarted {
            run,
            playbook,
            playbook_hash,
            ..
        } => format!("run {run} of {playbook} started ({playbook_hash})"),
        Event::Run { phase, reason } => format!("run {phase:?}{}", why(reason)),
        Event::Stage {
            stage,
            phase,
            reason,
        } => format!("stage {stage} {phase:?}{}", why(reason)),
        Event::System {
            system,
            phase,
            reason,
        } => format!("{system} {phase:?}{}", why(reason)),
        Event::Output {
            system,
            step,
            exit_code,
            output,
        } => format!(
            "{system} {step} output{}: {}",
            exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default(),
            output.trim_end().lines().last().unwrap_or("")
        ),
        Event::Approved { stage, by, role } => {
            format!(
                "stage {stage} approved by {by}{}",
                role.as_deref()
                    .map(|r| format!(" as {r}"))
                    .unwrap_or_default()
            )
        }
        Event::Confirmed { system, by } => format!("{system} confirmed by {by}"),
        Event::TornWriteDiscarded { bytes } => {
            format!("{bytes} bytes of an unfinished write discarded after a crash")
        }
        Event::RetryRequested { system, by } => format!("{system}: retry asked by {by}"),
        Event::AttemptBegun {
            system,
            step,
            attempt,
        } => format!("{system} {} attempt {attempt} begun", step.as_str()),
        Event::AttemptRunning {
            system,
            step,
            attempt,
            process,
        } => format!(
            "{system} {} attempt {attempt} running as pid {}",
            step.as_str(),
            process.pid
        ),
        Event::AttemptEnded {
            system,
            step,
            attempt,
            result,
            reason,
        } => format!(
            "{system} {} attempt {attempt} ended {result:?}{}",
            step.as_str(),
            why(reason)
        ),
        Event::RollbackBegun {
            stage,
            systems,
            reason,
            by,
        } => format!(
            "rollback{} begun{}: stopping {} ({reason})",
            stage
                .as_deref()
                .map(|s| format!(" of stage {s}"))
                .unwrap_or_default(),
            by.as_deref()
                .map(|b| format!(" by {b}"))
                .unwrap_or_default(),
            if systems.is_empty() {
                "nothing".to_owned()
            } else {
                systems.join(", ")
            }
        ),
        Event::SetAside {
            file,
            bytes,
            reason,
        } => format!("{bytes} bytes after the valid chain set aside into {file} ({reason})"),
    }
}

fn audit_text(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| format!("{:>5}  {}  {}\n", r.seq, r.at, describe(&r.event)))
        .collect()
}

fn audit_markdown(records: &[Record]) -> Result<String, CliError> {
    use std::fmt::Write as _;
    let state = folded(records)?;
    let mut o = format!("## Restart audit: run `{}`\n\n", state.run);
    let _ = writeln!(
        o,
        "Playbook `{}` ({}), ended **{:?}**.\n",
        state.playbook, state.playbook_hash, state.phase
    );
    // When each system began starting and became healthy, for the chart.
    let mut spans: Vec<(String, String, Option<String>)> = Vec::new();
    for r in records {
        if let Event::System { system, phase, .. } = &r.event {
            match phase {
                SystemPhase::Verifying | SystemPhase::Starting
                    if !spans.iter().any(|(s, _, _)| s == system) =>
                {
                    spans.push((system.clone(), r.at.clone(), None));
                }
                SystemPhase::Healthy => {
                    if let Some(span) = spans.iter_mut().find(|(s, _, _)| s == system) {
                        span.2 = Some(r.at.clone());
                    }
                }
                _ => {}
            }
        }
    }
    if !spans.is_empty() {
        o.push_str("```mermaid\ngantt\n  title Starts and health\n  dateFormat YYYY-MM-DDTHH:mm:ss.SSSZ\n  axisFormat %H:%M:%S\n");
        for (system, from, to) in &spans {
            let end = to.clone().unwrap_or_else(|| from.clone());
            let tag = if to.is_some() { "" } else { "crit, " };
            let _ = writeln!(o, "  {system} : {tag}{from}, {end}");
        }
        o.push_str("```\n\n");
    }
    o.push_str("| # | time | event |\n|---:|---|---|\n");
    for r in records {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            r.seq,
            r.at,
            describe(&r.event).replace('|', "\\|")
        );
    }
    Ok(o)
}
