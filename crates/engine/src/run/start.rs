//! One system from Pending to Healthy or Failed: what a crash left of an
//! earlier start settled first, then its verify checks, its start (or a
//! person's confirmation of a manual one), and its probes, within its
//! startTimeout (a person's time not counted).

use super::*;

impl<S: RunStore + 'static> Inner<S> {
    /// Verify, start, probe: one system from Pending to Healthy or Failed;
    /// first settling what a crash left of an earlier start attempt.
    pub(super) async fn bring_up(
        self: &Arc<Self>,
        sys: &PlannedSystem,
    ) -> Result<Task, EngineError> {
        let deadline = tokio::time::Instant::now() + sys.start_timeout.to_std();
        let mut redriven = false;
        let settled = match self.settle(sys, StepKind::Start).await? {
            Settled::Nothing => None,
            Settled::Succeeded => Some(self.probe_after_start(sys, deadline).await?),
            Settled::Failed(reason) => Some(Tried::Failed {
                reason,
                retryable: true,
            }),
            Settled::Unknown if sys.start.idempotent() => {
                redriven = true;
                None
            }
            Settled::Unknown if !sys.health.is_empty() => {
                if self.verdict(sys).await {
                    self.system_event(
                        &sys.id,
                        SystemPhase::Healthy,
                        Some("healthy when the run resumed; its start was not run again".into()),
                    )
                    .await?;
                    return Ok(Task::Healthy);
                }
                None
            }
            Settled::Unknown => match self.wait_for_person(&sys.id, StepKind::Start).await? {
                Some(true) => return Ok(Task::Healthy),
                Some(false) => None,
                None => return Ok(Task::NotStarted),
            },
        };
        let mut tried = match settled {
            Some(tried) => tried,
            None => self.start_once(sys, redriven).await?,
        };
        loop {
            match tried {
                Tried::Healthy => return Ok(Task::Healthy),
                Tried::NotStarted => return Ok(Task::NotStarted),
                Tried::Failed { reason, retryable } => {
                    let used = self
                        .lock()
                        .system(&sys.id)
                        .map_or(0, |s| s.attempts - s.retry_from);
                    if !retryable || used >= sys.attempts() {
                        return self.system_failed(&sys.id, reason);
                    }
                    if !self.before_next_attempt(sys, used, &reason).await? {
                        return Ok(Task::NotStarted);
                    }
                    tried = self.start_once(sys, false).await?;
                }
            }
        }
    }

    /// One attempt: verify, start (or a person's confirmation of a manual
    /// start), probe, within its startTimeout (a person's time aside).
    async fn start_once(
        self: &Arc<Self>,
        sys: &PlannedSystem,
        redriven: bool,
    ) -> Result<Tried, EngineError> {
        let mut deadline = tokio::time::Instant::now() + sys.start_timeout.to_std();
        let resumed_wait = matches!(sys.start, Action::Manual(_))
            && self.manual_wait_open(&sys.id, SystemPhase::Starting);
        let started = async {
            if resumed_wait {
                // Verified and asked before the run was taken over.
                return Ok(None);
            }
            if let Some(reason) = self.verify(sys).await? {
                // An integrity check that fails is not tried again.
                return Ok(Some((reason, false)));
            }
            // Driven again on purpose, and said so: a crash cut its start
            // short, and running this start again is harmless.
            let why = redriven.then(|| {
                "driven again: a crash cut its start short, and this start is idempotent".to_owned()
            });
            let starting = Event::System {
                system: sys.id.to_string(),
                phase: SystemPhase::Starting,
                reason: why,
                waiting_for: None,
            };
            if let Action::Manual(_) = &sys.start {
                self.emit(starting).await?;
                return Ok(None);
            }
            // Starting and its attempt begun, journaled together.
            let outcome = self
                .run_attempt(&sys.id, StepKind::Start, &sys.start, Some(starting))
                .await?;
            Ok((!outcome.ok).then(|| (format!("start failed: {}", outcome.detail), true)))
        };
        match tokio::time::timeout_at(deadline, started).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some((reason, retryable)))) => return Ok(Tried::Failed { reason, retryable }),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                self.abandon_attempt(
                    &sys.id,
                    "cut short at its startTimeout; its process group was killed",
                )?;
                return Ok(Tried::Failed {
                    reason: format!(
                        "its verify checks and start did not finish within its startTimeout of {}",
                        sys.start_timeout
                    ),
                    retryable: true,
                });
            }
        }
        if let Action::Manual(m) = &sys.start {
            // A person's time is not counted against startTimeout: it
            // counts from their confirmation. A pause meanwhile holds.
            if !self
                .wait_for_confirmation(&sys.id, SystemPhase::Starting, &m.instruction)
                .await?
            {
                return Ok(Tried::NotStarted);
            }
            deadline = tokio::time::Instant::now() + sys.start_timeout.to_std();
        }
        self.probe_after_start(sys, deadline).await
    }

    /// Between a failed attempt and the next: what the failed one left
    /// running is ended, the journal says which attempt failed and when the
    /// next begins, and the backoff is waited out. False when the run
    /// pauses meanwhile (resume starts the next attempt).
    async fn before_next_attempt(
        &self,
        sys: &PlannedSystem,
        used: u32,
        reason: &str,
    ) -> Result<bool, EngineError> {
        // The marker carries the attempt's number in the run, which counts
        // the attempts before a `retry --site` too.
        let (run, attempt) = {
            let state = self.lock();
            let attempt = state.system(&sys.id).map_or(used, |s| s.attempts);
            (state.run.clone(), attempt)
        };
        let marker = process::marker(&run, &sys.id, "start", attempt);
        let mut left = process::end_marked(&marker);
        let cx = self.site_cx(&sys.site);
        if let Some(site) = &cx.remote {
            // At a site reached over ssh, the attempt ran on its host. A
            // host that cannot be reached now is reported by the next attempt.
            left += site.end_marked(&cx, &marker).await.unwrap_or(0);
        }
        let backoff = sys.retry.and_then(|r| r.backoff).unwrap_or_default();
        self.system_event(
            &sys.id,
            SystemPhase::Starting,
            Some(format!(
                "attempt {used} of {} failed: {reason}{}; attempt {} in {backoff}",
                sys.attempts(),
                if left > 0 {
                    format!(" ({left} process(es) it left running were ended)")
                } else {
                    String::new()
                },
                used + 1
            )),
        )
        .await?;
        let mut pause = self.pause.clone();
        tokio::select! {
            () = tokio::time::sleep(backoff.to_std()) => Ok(true),
            Ok(_) = pause.wait_for(|p| *p) => Ok(false),
        }
    }

    pub(super) fn system_failed(&self, id: &str, reason: String) -> Result<Task, EngineError> {
        self.emit_blocking(system(id, SystemPhase::Failed, Some(reason.clone())))?;
        Ok(Task::Failed(format!("{id}: {reason}")))
    }

    /// Runs the verify checks; `Some(reason)` when one failed.
    pub(super) async fn verify(&self, sys: &PlannedSystem) -> Result<Option<String>, EngineError> {
        if !sys.verify.is_empty() {
            self.system_event(&sys.id, SystemPhase::Verifying, None)
                .await?;
            for (k, check) in sys.verify.iter().enumerate() {
                let outcome = run_check(check, &self.site_cx(&sys.site)).await;
                self.output(&sys.id, &format!("verify[{k}]"), &outcome)
                    .await?;
                if !outcome.ok {
                    return Ok(Some(format!("integrity check failed: {}", outcome.detail)));
                }
            }
        }
        Ok(None)
    }

    /// Waits for a person to confirm a manual step: true once confirmed,
    /// false when the run pauses first (the step waits again on resume).
    pub(super) async fn wait_for_confirmation(
        &self,
        id: &str,
        phase: SystemPhase,
        instruction: &str,
    ) -> Result<bool, EngineError> {
        if !self.manual_wait_open(id, phase) {
            self.system_waits(
                id,
                phase,
                WaitingFor::ManualStep,
                format!("waiting for confirmation: {instruction}"),
            )?;
        }
        let system = id.to_owned();
        let confirmed =
            self.wait_until(move |s| s.system(&system).is_some_and(|s| s.confirmed_by.is_some()));
        let mut pause = self.pause.clone();
        tokio::select! {
            () = confirmed => Ok(true),
            Ok(_) = pause.wait_for(|p| *p) => Ok(false),
        }
    }

    /// Probes a started system until it is healthy or the deadline passes;
    /// the failure names the last probe error.
    pub(super) async fn probe_after_start(
        &self,
        sys: &PlannedSystem,
        deadline: tokio::time::Instant,
    ) -> Result<Tried, EngineError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match probe::until_healthy(&sys.health, &sys.probe, left, &self.health_cx(sys)).await {
            Ok(_) => {
                self.system_event(&sys.id, SystemPhase::Healthy, None)
                    .await?;
                Ok(Tried::Healthy)
            }
            Err(never) => Ok(Tried::Failed {
                reason: format!(
                    "not healthy within its startTimeout of {} ({never})",
                    sys.start_timeout
                ),
                retryable: true,
            }),
        }
    }
}

/// How one attempt at a system ended; a failure is not journaled as the
/// system's until no attempt is left.
pub(super) enum Tried {
    Healthy,
    NotStarted,
    Failed { reason: String, retryable: bool },
}
