//! The run commands: apply, resume, rollback, status, approve, confirm, audit.
//!
//! Wiring only: the engine runs, the journal keeps, the inbox carries
//! requests; this module picks the files, prints progress for a person and
//! turns outcomes into DESIGN.md's exit codes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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

/// `apply FILE [--plan plan.json]`: starts a new run of a playbook.
pub fn apply(
    plan: Plan,
    reviewed: Option<&Path>,
    state_dir: &Path,
    run_id: Option<String>,
) -> Result<u8, CliError> {
    if let Some(path) = reviewed {
        let bytes = std::fs::read(path).map_err(|source| CliError::Read {
            path: path.display().to_string(),
            source,
        })?;
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
    let run = run_id.unwrap_or_else(|| default_run_id(&plan));
    let dir = run_dir(state_dir, &run)?;
    let started = Event::RunStarted {
        run: run.clone(),
        playbook: plan.playbook.clone(),
        playbook_hash: plan.playbook_hash.clone(),
        plan: Box::new(plan),
    };
    let journal = FileJournal::create(&dir, &started)?;
    note(&format!(
        "run {run} started; journal {}",
        journal.path().display()
    ));
    let records = journal.load()?;
    drive(&runtime()?, journal, &records, &dir, Mode::Run, None)
}

/// `drill FILE`: the real engine, probes and journal against the simulated
/// plant. Gates are approved and manual steps confirmed as `drill` unless
/// `manual` is set.
pub fn drill(
    plan: Plan,
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
    let code = drive(&rt, journal, &records, &dir, Mode::Run, steward);
    let counts = plant.counts();
    note(&format!(
        "the plant saw {} starts, {} stops, {} health probes",
        counts.starts, counts.stops, counts.probes
    ));
    drop(plant);
    code
}

/// `resume RUN`: carries on a paused or interrupted run.
pub fn resume(state_dir: &Path, run: &str) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let (journal, records) = FileJournal::open(&dir)?;
    note(&format!("resuming run {run} from event {}", records.len()));
    drive(&runtime()?, journal, &records, &dir, Mode::Run, None)
}

/// `rollback RUN`: stops everything the run started, dependents first.
pub fn rollback(state_dir: &Path, run: &str) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let (journal, records) = FileJournal::open(&dir)?;
    drive(&runtime()?, journal, &records, &dir, Mode::Rollback, None)
}

enum Mode {
    Run,
    Rollback,
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
) -> Result<u8, CliError> {
    rt.block_on(async {
        let (pause, paused) = tokio::sync::watch::channel(false);
        let cx = StepContext::new(Secrets::from_env(), STEP_TIMEOUT).map_err(CliError::Runtime)?;
        let cx = match cluster_for(records).await? {
            Some(cluster) => cx.with_cluster(cluster),
            None => cx,
        };
        let engine = Engine::new(journal, records, cx, Arc::new(Inbox::new(dir)), paused, POLL)?;
        let (stop_progress, stopped) = tokio::sync::watch::channel(false);
        let progress = tokio::spawn(progress(engine.clone(), stopped));
        let steward = steward.map(|by| tokio::spawn(steward_task(engine.clone(), Inbox::new(dir), by)));
        let ctrl_c = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                note("pausing: no new starts; steps under way finish or time out (Ctrl-C again to quit at once)");
                pause.send_replace(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    note("quitting; `blackstart resume` carries on from the journal");
                    std::process::exit(130);
                }
            }
        });
        let phase = match mode {
            Mode::Run => engine.run().await?,
            Mode::Rollback => engine.rollback("rolled back by the commander").await?,
        };
        ctrl_c.abort();
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
            (Mode::Rollback, RunPhase::RolledBack)
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

/// What the progress lines compare between two looks at a run.
#[derive(Default)]
struct Seen {
    /// Per stage: the roles its gate waits for.
    roles: Vec<Vec<String>>,
    stages: Vec<(StagePhase, usize)>,
    systems: Vec<(SystemPhase, Option<String>)>,
}

/// Shows a run's progress until told to stop, then a last round so the
/// final transitions are shown too: a live view on a terminal, plain lines
/// for a log, nothing with `--log-format json` (the engine's log has it all).
async fn progress(engine: Engine<FileJournal>, mut stop: tokio::sync::watch::Receiver<bool>) {
    use std::io::IsTerminal as _;
    if json() {
        let _ = stop.changed().await;
        return;
    }
    let roles = engine
        .plan()
        .stages
        .iter()
        .map(|s| s.gate.approvals.clone())
        .collect();
    let mut seen = engine.with_state(|s| Seen {
        roles,
        stages: s
            .stages
            .iter()
            .map(|st| (StagePhase::Pending, st.approvals.len()))
            .collect(),
        systems: s
            .systems
            .iter()
            .map(|_| (SystemPhase::Pending, None))
            .collect(),
    });
    let live = std::io::stderr().is_terminal().then(|| Live::new(&engine));
    loop {
        let stopping = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => false,
            _ = stop.changed() => true,
        };
        engine.with_state(|now| match &live {
            Some(view) => view.update(&mut seen, now),
            None => print_changes(&mut seen, now, &mut |line| eprintln!("{line}")),
        });
        if stopping {
            if let Some(view) = &live {
                view.finish();
            }
            return;
        }
    }
}

/// The live view: a bar per stage (healthy systems of all), what is under
/// way beside it, and notable transitions printed above the bars.
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

    fn update(&self, seen: &mut Seen, now: &RunState) {
        // Failures, gates and manual steps go above the bars; the rest is in the bars.
        print_changes(seen, now, &mut |line| {
            let notable = [
                "Failed",
                "RolledBack",
                "Skipped",
                "waiting",
                "confirm",
                "approved",
                "Paused",
            ];
            if notable.iter().any(|w| line.contains(w)) {
                let _ = self.multi.println(line);
            }
        });
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

fn print_changes(seen: &mut Seen, now: &RunState, out: &mut dyn FnMut(String)) {
    let role_of = |role: Option<&str>| role.map(|r| format!(" as {r}")).unwrap_or_default();
    for ((before, n), roles) in seen.stages.iter_mut().zip(&now.stages).zip(&seen.roles) {
        if before.0 != n.phase {
            out(format!("stage {}: {:?}", n.name, n.phase));
            if n.phase == StagePhase::Gate && !roles.is_empty() {
                out(format!(
                    "  gate: waiting for approval by {}: `blackstart approve {} {} --by NAME --role ROLE`",
                    roles.join(", "),
                    now.run,
                    n.name
                ));
            }
        }
        for a in n.approvals.iter().skip(before.1) {
            out(format!(
                "stage {}: approved by {}{}",
                n.name,
                a.by,
                role_of(a.role.as_deref())
            ));
        }
        *before = (n.phase, n.approvals.len());
    }
    for (before, n) in seen.systems.iter_mut().zip(&now.systems) {
        if (before.0, &before.1) != (n.phase, &n.reason) {
            let reason = n
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            out(format!("  {} [{}]: {:?}{reason}", n.id, n.stage, n.phase));
            if reason.contains("waiting for confirmation") {
                out(format!(
                    "    confirm with `blackstart confirm {} {} --by NAME`",
                    now.run, n.id
                ));
            }
            *before = (n.phase, n.reason.clone());
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
    let records = journal::read(&run_dir(state_dir, run)?)?;
    let state = folded(&records)?;
    if json {
        let mut text = serde_json::to_string_pretty(&state).expect("state always serializes");
        text.push('\n');
        print!("{text}");
        return Ok(exit::SUCCESS);
    }
    println!(
        "run {}  ({} {})",
        state.run, state.playbook, state.playbook_hash
    );
    println!(
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
        println!("stage {}: {:?}{approved}", stage.name, stage.phase);
        for sys in state.systems.iter().filter(|s| s.stage == stage.name) {
            let reason = sys
                .reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default();
            println!("  {:<28} {:?}{reason}", sys.id, sys.phase);
        }
    }
    Ok(exit::SUCCESS)
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
    Inbox::new(&dir)
        .submit(&Request::Approve {
            stage: stage.to_owned(),
            by: by.to_owned(),
            role: role.clone(),
        })
        .map_err(|source| CliError::Write {
            path: dir.dir.display().to_string(),
            source,
        })?;
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
    Inbox::new(&dir)
        .submit(&Request::Confirm {
            system: system.to_owned(),
            by: by.to_owned(),
        })
        .map_err(|source| CliError::Write {
            path: dir.dir.display().to_string(),
            source,
        })?;
    note(&format!(
        "confirmation of `{system}` by {by} handed to run {run}"
    ));
    Ok(exit::SUCCESS)
}

/// `audit RUN [--verify]`: the timeline for the post-incident review.
pub fn audit(state_dir: &Path, run: &str, verify: bool, markdown: bool) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let records = match journal::read(&dir) {
        Err(JournalError::Corrupt { path, line, reason }) if verify => {
            note(&format!(
                "{}:{line}: verification failed: {reason}",
                path.display()
            ));
            return Ok(exit::FAILED);
        }
        other => other?,
    };
    if verify {
        let last = records.last().map_or("none".to_owned(), |r| r.hash.clone());
        println!(
            "{}: {} events, hash chain intact, last hash {last}",
            dir.journal().display(),
            records.len()
        );
        return Ok(exit::SUCCESS);
    }
    print!(
        "{}",
        if markdown {
            audit_markdown(&records)?
        } else {
            audit_text(&records)
        }
    );
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
