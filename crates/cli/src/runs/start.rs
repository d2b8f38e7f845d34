//! Beginning and driving a run: `apply`, `drill`, `resume`, `rollback`,
//! with the checks only a command line makes first (the playbook file still
//! compiles to the journal's plan, every secret is set), the signals that
//! pause or interrupt it, and a drill's steward. Driving a run, once begun,
//! is `drive.rs`.

use std::path::{Path, PathBuf};

use blackstart_engine::decision::{Decision, Kind};
use blackstart_engine::journal::{self, Record};
use blackstart_engine::secrets::Secrets;
use blackstart_engine::{Event, FileJournal, RunDir, RunPhase, SystemPhase};
use blackstart_model::Plan;
use blackstart_model::playbook::{Action, Check};

use super::drive::{Mode, drive};
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
    // The journal holds the plan now; a large run keeps no other copy.
    drop(started);
    note(&format!(
        "run {run} started; journal {}",
        journal.path().display()
    ));
    let records = journal.load()?;
    drive(
        &runtime()?,
        journal,
        records,
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
    // The journal holds the plan now; a large run keeps no other copy.
    drop(started);
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
    let steward = deciders == Deciders::StandIn;
    let secrets = secrets_for(&plan, true)?;
    drop(plan);
    let records = journal.load()?;
    let code = drive(
        &rt,
        journal,
        records,
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
        let mut fresh = fresh;
        if plan.site_names.is_empty() {
            // Written by a release whose plans did not carry site names.
            fresh.site_names.clear();
        }
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
        records,
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
                    .find(|(_, s)| s.id == id)
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
        records,
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
        records,
        &dir,
        Mode::Retry(asked),
        false,
        secrets,
    )
}
