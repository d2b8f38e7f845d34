//! What a person sees of a run as it goes: lines drawn from the engine's
//! stream of records, and on a terminal a bar per stage.

use std::sync::Arc;
use std::time::Duration;

use blackstart_engine::journal::Record;
use blackstart_engine::{Engine, Event, FileJournal, RunState, StagePhase, SystemPhase};
use blackstart_model::Plan;

use super::report::describe;
use super::*;

/// Shows a run's progress from its records until told to stop, then the
/// records still queued: a live view on a terminal, plain lines for a log,
/// nothing with `--log-format json` (the engine's log has it all). Every
/// transition is shown, in order, as it was recorded: the lines are drawn
/// from the engine's stream of records, never from sampled state.
pub(super) async fn progress(
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
        let template = if crate::colour() {
            "{prefix:>24.bold} [{bar:30.green/white}] {pos:>5}/{len:<5} {msg}"
        } else {
            "{prefix:>24} [{bar:30}] {pos:>5}/{len:<5} {msg}"
        };
        let style = indicatif::ProgressStyle::with_template(template)
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
