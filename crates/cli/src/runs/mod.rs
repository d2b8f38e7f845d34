//! The run commands: apply, resume, rollback, retry, status, approve,
//! confirm, audit, one file per job: `start` begins runs, `drive` drives
//! them (and takes their signals), `progress` shows them, `decide` hands people's requests
//! to them, `report` reads them back (status, audit).
//!
//! Wiring only: the engine runs, the journal keeps, the inbox carries
//! requests; this module picks the files, prints progress for a person and
//! turns outcomes into the documented exit codes. What it checks itself is
//! what only a command line has: that the playbook file a run is resumed
//! with still compiles to the journal's plan, and that every secret is set
//! before anything starts.

mod decide;
mod drive;
mod progress;
mod report;
mod start;

pub use decide::{Prepared, Signing, decide, pause, prepare};
pub use report::{audit, show_audit, show_status, status, verify_records};
pub use start::{Deciders, Trust, apply, drill, resume, retry, rollback};

use std::path::Path;
use std::time::Duration;

use blackstart_engine::journal::Record;
use blackstart_engine::{Event, RunDir, RunState};
use blackstart_model::Plan;

use crate::CliError;

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
        // The engine's records that must wait for the disk where nothing
        // may `.await` (a decision, a stage's end, an interrupt) leave the
        // workers (`block_in_place`), each handing its worker to a blocking
        // thread; a few cover them. With tokio's default of 512, when every
        // record waited so, a 10,000-system drill peaked at 260 to 340 MiB
        // RSS (threads and their malloc arenas), with 4 at 230 to 270 MiB,
        // in six runs each.
        .max_blocking_threads(4)
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

/// Whether nobody drives a run that should be moving (not ended, not
/// paused): `driven` is [`blackstart_engine::journal::driven`]'s answer,
/// none where no lock tells (a RestartRun).
pub fn interrupted(state: &RunState, driven: Option<bool>) -> bool {
    !state.phase.is_final()
        && state.phase != blackstart_engine::RunPhase::Paused
        && driven == Some(false)
}

fn folded(records: &[Record]) -> Result<RunState, CliError> {
    RunState::fold(records.iter().map(|r| (r.seq, &r.event)))
        .map_err(|e| CliError::Runtime(e.to_string()))
}

/// The plan in a journal's first record, or why there is none.
fn journal_plan(records: &[Record]) -> Result<&Plan, CliError> {
    plan_of(records).ok_or_else(|| CliError::Runtime("the journal holds no plan".into()))
}

fn plan_of(records: &[Record]) -> Option<&Plan> {
    match records.first().map(|r| &r.event) {
        Some(Event::RunStarted { plan, .. }) => Some(plan),
        _ => None,
    }
}
