//! What a person sees of a run as it goes: lines drawn from the engine's
//! stream of records, and on a terminal a bar per stage.

use std::sync::Arc;
use std::time::Duration;

use blackstart_engine::journal::Record;
use blackstart_engine::{
    Engine, Event, FileJournal, RunState, StagePhase, SystemPhase, WaitingFor,
};
use blackstart_model::Plan;

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
    let mut out = Printer {
        live: std::io::stderr().is_terminal().then(|| Live::new(&engine)),
        run: engine.with_state(|s| s.run.clone()),
        plan: engine.plan(),
        skipped: Vec::new(),
    };
    let mut bars = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            received = records.recv() => match received {
                Ok(record) => out.record(&record),
                Err(RecvError::Lagged(n)) => out.missed(n),
                Err(RecvError::Closed) => {}
            },
            _ = bars.tick(), if out.live.is_some() => {
                if let Some(view) = &out.live {
                    engine.with_state(|now| view.update(now));
                }
            }
            _ = stop.changed() => {
                loop {
                    match records.try_recv() {
                        Ok(record) => out.record(&record),
                        Err(TryRecvError::Lagged(n)) => out.missed(n),
                        Err(_) => break,
                    }
                }
                out.flush_skipped();
                if let Some(view) = &out.live {
                    engine.with_state(|now| view.update(now));
                    view.finish();
                }
                return;
            }
        }
    }
}

/// Where progress lines go, and the systems skipped since the last line:
/// a run that ends early skips many at once, and they read better as one
/// line per stage than as one each.
struct Printer<'a> {
    live: Option<Live>,
    run: String,
    plan: &'a Plan,
    /// (stage, system) of the `Skipped` records not shown yet.
    skipped: Vec<(&'a str, String)>,
}

impl<'a> Printer<'a> {
    fn record(&mut self, record: &Record) {
        if let Event::System {
            system,
            phase: SystemPhase::Skipped,
            ..
        } = &record.event
        {
            let stage = self
                .plan
                .stages
                .iter()
                .find(|st| st.systems.iter().any(|s| s.id == system))
                .map_or("", |st| st.name.as_str());
            self.skipped.push((stage, system.clone()));
            return;
        }
        self.flush_skipped();
        let notable = notable(&record.event);
        for line in progress_lines(&self.run, self.plan, &record.event) {
            self.line(line, notable);
        }
    }

    fn flush_skipped(&mut self) {
        let skipped = std::mem::take(&mut self.skipped);
        let mut stages: Vec<(&str, Vec<String>)> = Vec::new();
        for (stage, id) in skipped {
            match stages.iter_mut().find(|(s, _)| *s == stage) {
                Some((_, ids)) => ids.push(id),
                None => stages.push((stage, vec![id])),
            }
        }
        for (stage, ids) in stages {
            let shown: Vec<&str> = ids.iter().take(5).map(String::as_str).collect();
            let more = ids.len().saturating_sub(shown.len());
            self.line(
                format!(
                    "  {} system(s) of stage {stage} Skipped, never started: {}{}",
                    ids.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ),
                true,
            );
        }
    }

    fn missed(&mut self, n: u64) {
        self.flush_skipped();
        let run = &self.run;
        self.line(
            format!("({n} transitions not shown here; `blackstart audit {run}` lists every one)"),
            true,
        );
    }

    /// A line for the log, or above the live view's bars when notable: the
    /// bars say what is under way; above them goes what a person must see
    /// or do.
    fn line(&self, line: String, notable: bool) {
        match &self.live {
            Some(view) if notable => {
                let _ = view.multi.println(line);
            }
            Some(_) => {}
            None => eprintln!("{line}"),
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
        Event::System { .. } | Event::Output { .. } => lines.push(format!("  {event}")),
        _ => lines.push(event.describe()),
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
            waiting_for: Some(WaitingFor::ManualStep),
            ..
        } => lines.push(format!(
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
        | Event::Denied { .. }
        | Event::Refused { .. }
        | Event::PauseRequested { .. }
        | Event::RollbackRequested { .. }
        | Event::KeyRevoked { .. }
        | Event::Confirmed { .. }
        | Event::RetryRequested { .. }
        | Event::RollbackBegun { .. }
        | Event::SiteHeld { .. }
        | Event::SiteRetried { .. }
        | Event::SetAside { .. }
        | Event::TornWriteDiscarded { .. }
        | Event::Output { .. } => true,
        Event::Stage { phase, .. } => matches!(
            phase,
            StagePhase::Gate | StagePhase::Failed | StagePhase::RolledBack
        ),
        Event::System {
            phase, waiting_for, ..
        } => {
            matches!(
                phase,
                SystemPhase::Failed | SystemPhase::RolledBack | SystemPhase::Blocked
            ) || waiting_for.is_some()
        }
        // A notification given up on is worth a line; a delivered one not.
        Event::Notified {
            delivered, last, ..
        } => !delivered && *last,
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
