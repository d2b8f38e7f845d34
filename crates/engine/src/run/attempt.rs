//! Start and stop attempts: each journaled as begun before it runs, with
//! its leader process once it runs, and as ended; and what a resume makes
//! of one a crash cut short (the crash rules in the README's "Crash
//! safety"). The invariant this file keeps: no attempt runs twice, and no
//! attempt runs that the journal does not show.

use super::*;
use crate::state::StepState;

/// An attempt under way.
#[derive(Debug, Clone)]
pub(super) struct Running {
    pub(super) step: StepKind,
    pub(super) attempt: u32,
    pub(super) process: Option<Process>,
}

/// What a crash left of a system's last attempt at a step, once settled.
pub(super) enum Settled {
    /// No attempt is in doubt: go on as usual.
    Nothing,
    /// The action finished and succeeded; only its health is in question.
    Succeeded,
    Failed(String),
    /// It certainly ended, with an effect nobody saw.
    Unknown,
}

impl<S: RunStore + 'static> Inner<S> {
    /// Runs one attempt of a start or stop, journaled as begun before it
    /// runs (together with `before`, the phase it puts the system in), with
    /// its process once that runs, and as ended.
    pub(super) async fn run_attempt(
        self: &Arc<Self>,
        id: &str,
        step: StepKind,
        action: &Action,
        before: Option<Event>,
    ) -> Result<Outcome, EngineError> {
        let (attempt, site) = {
            let state = self.lock();
            let s = state.system(id);
            let site = s.map(|s| s.site.clone()).unwrap_or_default();
            let attempt = match step {
                StepKind::Start => s.map_or(0, |s| s.attempts),
                StepKind::Stop => s
                    .and_then(|s| s.step.as_ref())
                    .filter(|a| a.step == StepKind::Stop)
                    .map_or(0, |a| a.attempt),
            } + 1;
            (attempt, site)
        };
        {
            // Registered before it is journaled, so an interrupt in between
            // still finds it (and journals it interrupted).
            let mut running = self.running_lock();
            if self.interrupted.load(Ordering::SeqCst) {
                return Err(EngineError::Interrupted);
            }
            running.insert(
                id.to_owned(),
                Running {
                    step,
                    attempt,
                    process: None,
                },
            );
        }
        let mut begun: Vec<Event> = before.into_iter().collect();
        begun.push(Event::AttemptBegun {
            system: id.to_owned(),
            step,
            attempt,
        });
        if let Err(e) = self.emit_all(begun).await {
            self.running_lock().remove(id);
            return Err(e);
        }
        let cx = StepContext {
            attempt: Some(self.hooks(id, step, attempt)),
            ..self.site_cx(&site)
        };
        let outcome = run_action(action, &cx).await;
        let ours = self
            .running_lock()
            .remove(id)
            .is_some_and(|r| (r.step, r.attempt) == (step, attempt));
        if !ours {
            // An interrupt took it and journaled how it ended.
            return Err(EngineError::Interrupted);
        }
        // Its output and its end, journaled together.
        let mut events: Vec<Event> = super::record::output_event(id, step.as_str(), &outcome)
            .into_iter()
            .collect();
        events.push(Event::AttemptEnded {
            system: id.to_owned(),
            step,
            attempt,
            result: if outcome.ok {
                AttemptResult::Succeeded
            } else {
                AttemptResult::Failed
            },
            // A success says nothing more, unless it took retries.
            reason: (!outcome.ok || outcome.retries > 0).then(|| outcome.detail.clone()),
        });
        self.emit_all(events).await?;
        Ok(outcome)
    }

    /// What an attempt tells the run: its process, journaled before the
    /// step waits for it.
    pub(super) fn hooks(self: &Arc<Self>, id: &str, step: StepKind, attempt: u32) -> AttemptHooks {
        let inner = Arc::clone(self);
        let system = id.to_owned();
        let run = self.lock().run.clone();
        AttemptHooks {
            marker: process::marker(&run, id, step.as_str(), attempt),
            spawned: Arc::new(move |process: Process| {
                {
                    let mut running = inner.running_lock();
                    match running.get_mut(&system) {
                        Some(r) if (r.step, r.attempt) == (step, attempt) => {
                            r.process = Some(process.clone());
                        }
                        _ => return Err("the run was interrupted".to_owned()),
                    }
                }
                inner
                    .emit_blocking(Event::AttemptRunning {
                        system: system.clone(),
                        step,
                        attempt,
                        process,
                    })
                    .map_err(|e| e.to_string())
            }),
        }
    }

    /// Journals the end of an attempt whose task was dropped (a timeout, a
    /// cancelled start): dropping it killed its process group.
    pub(super) fn abandon_attempt(&self, id: &str, reason: &str) -> Result<(), EngineError> {
        let taken = self.running_lock().remove(id);
        if let Some(r) = taken {
            self.emit_blocking(Event::AttemptEnded {
                system: id.to_owned(),
                step: r.step,
                attempt: r.attempt,
                result: AttemptResult::Interrupted,
                reason: Some(reason.to_owned()),
            })?;
        }
        Ok(())
    }

    /// Settles what a crash left of the system's last attempt at `step`:
    /// waits for a leader that still runs, and says how it ended.
    pub(super) async fn settle(
        &self,
        sys: &PlannedSystem,
        step: StepKind,
    ) -> Result<Settled, EngineError> {
        let last = {
            let state = self.lock();
            let s = state.system(&sys.id);
            let in_flight = s.is_some_and(|s| match step {
                StepKind::Start => {
                    matches!(s.phase, SystemPhase::Verifying | SystemPhase::Starting)
                }
                StepKind::Stop => true,
            });
            s.and_then(|s| s.step.clone())
                .filter(|a| in_flight && a.step == step)
        };
        let Some(mut last) = last else {
            let legacy = self.format_1
                && step == StepKind::Start
                && self.lock().system(&sys.id).map(|s| s.phase) == Some(SystemPhase::Starting);
            // Format 1 said `Starting` just before the start ran, and
            // nothing after: it may have run.
            return Ok(if legacy && !matches!(sys.start, Action::Manual(_)) {
                Settled::Unknown
            } else {
                Settled::Nothing
            });
        };
        if last.open() {
            let action = match step {
                StepKind::Start => Some(&sys.start),
                StepKind::Stop => sys.stop.as_ref(),
            };
            self.end_open_attempt(sys, action, &last).await?;
            last = self
                .lock()
                .system(&sys.id)
                .and_then(|s| s.step.clone())
                .unwrap_or(last);
        }
        Ok(match last.result {
            None => Settled::Unknown,
            Some(AttemptResult::Succeeded) => Settled::Succeeded,
            Some(AttemptResult::Failed) => Settled::Failed(format!(
                "its {} failed before the run was interrupted",
                step.as_str()
            )),
            Some(AttemptResult::Interrupted | AttemptResult::Unknown) => Settled::Unknown,
        })
    }

    /// An attempt begun and not ended, found on resume: if its leader still
    /// runs, wait for it (up to the step's timeout, then kill its group),
    /// and journal how it ended.
    pub(super) async fn end_open_attempt(
        &self,
        sys: &PlannedSystem,
        action: Option<&Action>,
        last: &StepState,
    ) -> Result<(), EngineError> {
        let run = self.lock().run.clone();
        let marker = process::marker(&run, &sys.id, last.step.as_str(), last.attempt);
        let leader = match &last.process {
            Some(p) => Some(p.clone()),
            // Spawned in the instant before its pid was journaled?
            None if matches!(action, Some(Action::Exec(_))) => process::find_marked(&marker)
                .inspect(|p| {
                    let _ = self.emit_blocking(Event::AttemptRunning {
                        system: sys.id.to_string(),
                        step: last.step,
                        attempt: last.attempt,
                        process: p.clone(),
                    });
                }),
            None => None,
        };
        let ended = |result, reason: String| Event::AttemptEnded {
            system: sys.id.to_string(),
            step: last.step,
            attempt: last.attempt,
            result,
            reason: Some(reason),
        };
        if let Some(p) = leader.filter(Process::alive) {
            let timeout = match action {
                Some(Action::Exec(e)) => e.timeout.map_or(self.cx.timeout, |d| d.to_std()),
                _ => self.cx.timeout,
            }
            .min(sys.start_timeout.to_std());
            let phase = self.lock().system(&sys.id).map(|s| s.phase);
            self.system_event(
                &sys.id,
                phase.unwrap_or(SystemPhase::Starting),
                Some(format!(
                    "its {} (pid {}) still runs from before the run resumed: waiting for it, up to {}",
                    last.step.as_str(),
                    p.pid,
                    humantime::format_duration(timeout)
                )),
            ).await?;
            let until = tokio::time::Instant::now() + timeout;
            while p.alive() && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if p.alive() {
                p.kill_group();
                return self
                    .emit(ended(
                        AttemptResult::Failed,
                        format!(
                            "still running {} after the run resumed; its process group was killed",
                            humantime::format_duration(timeout)
                        ),
                    ))
                    .await;
            }
        }
        self.emit(ended(
            AttemptResult::Unknown,
            "it ended while no blackstart watched it: how is not known".to_owned(),
        ))
        .await
    }

    /// Whether health says the system is up: `successThreshold` passing
    /// rounds in a row say up, `failureThreshold` failing ones say down.
    pub(super) async fn verdict(&self, sys: &PlannedSystem) -> bool {
        let cx = StepContext {
            timeout: sys.probe.timeout.to_std(),
            ..self.health_cx(sys)
        };
        let (mut ok, mut failed) = (0u32, 0u32);
        loop {
            if probe::round(&sys.health, &cx).await.ok {
                ok += 1;
                failed = 0;
                if ok >= sys.probe.success_threshold.max(1) {
                    return true;
                }
            } else {
                failed += 1;
                ok = 0;
                if failed >= sys.probe.failure_threshold.max(1) {
                    return false;
                }
            }
            tokio::time::sleep(sys.probe.interval.to_std()).await;
        }
    }

    /// A start or stop whose outcome a crash made unknown, on a system
    /// without health checks to tell: a person confirms it (`Some(true)`)
    /// or asks for a new attempt (`Some(false)`; stops are never run twice,
    /// so only starts); `None` when the run pauses first (starts only: a
    /// rollback is not paused).
    pub(super) async fn wait_for_person(
        &self,
        id: &str,
        step: StepKind,
    ) -> Result<Option<bool>, EngineError> {
        let run = self.lock().run.clone();
        let (phase, ask) = match step {
            StepKind::Start => (
                SystemPhase::Starting,
                format!(
                    "waiting for a person: its start was cut short by a crash and it has no health checks to tell; `blackstart confirm {run} {id} --by NAME` if it is up, `blackstart retry {run} {id} --by NAME` to start it again"
                ),
            ),
            StepKind::Stop => (
                SystemPhase::Stopping,
                format!(
                    "waiting for a person: its stop was cut short by a crash and it has no health checks to tell; `blackstart confirm {run} {id} --by NAME` once it is down"
                ),
            ),
        };
        self.system_waits(id, phase, WaitingFor::UnknownOutcome, ask)?;
        let system = id.to_owned();
        let decided = self.wait_until(move |s| {
            s.system(&system).is_some_and(|s| {
                s.confirmed_by.is_some() || (step == StepKind::Start && s.retry_by.is_some())
            })
        });
        if step == StepKind::Start {
            // A pause holds the run; the question is asked again on resume.
            let mut pause = self.pause.clone();
            tokio::select! {
                () = decided => {}
                Ok(_) = pause.wait_for(|p| *p) => return Ok(None),
            }
        } else {
            decided.await;
        }
        let (confirmed, retry) = self
            .lock()
            .system(id)
            .map(|s| (s.confirmed_by.clone(), s.retry_by.clone()))
            .unwrap_or_default();
        match (confirmed, retry) {
            (Some(by), _) => {
                let (phase, what) = match step {
                    StepKind::Start => (SystemPhase::Healthy, "up"),
                    StepKind::Stop => (SystemPhase::RolledBack, "down"),
                };
                self.system_event(
                    id,
                    phase,
                    Some(format!(
                        "confirmed {what} by {by} after a crash cut its {} short",
                        step.as_str()
                    )),
                )
                .await?;
                Ok(Some(true))
            }
            (None, Some(by)) => {
                self.system_event(
                    id,
                    SystemPhase::Starting,
                    Some(format!("started again as {by} asked")),
                )
                .await?;
                Ok(Some(false))
            }
            (None, None) => Ok(Some(false)),
        }
    }
}
