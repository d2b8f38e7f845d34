//! People's requests to a run, from any terminal: `approve`, `confirm`,
//! `retry`, left in the run's inbox for the process that drives it.

use std::path::Path;

use blackstart_engine::journal;
use blackstart_engine::{Inbox, Request, RunDir, RunState};

use super::*;
use crate::{CliError, exit};

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
    let plan = journal_plan(&records)?;
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
    if !sys.start_cut_short() {
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
