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
        match self.settle(sys, StepKind::Start).await? {
            Settled::Nothing => {}
            Settled::Succeeded => return self.probe_after_start(sys, deadline).await,
            Settled::Failed(reason) => return self.system_failed(&sys.id, reason),
            Settled::Unknown if sys.start.idempotent() => redriven = true,
            Settled::Unknown if !sys.health.is_empty() => {
                if self.verdict(sys).await {
                    self.system_event(
                        &sys.id,
                        SystemPhase::Healthy,
                        Some("healthy when the run resumed; its start was not run again".into()),
                    )?;
                    return Ok(Task::Healthy);
                }
            }
            Settled::Unknown => match self.wait_for_person(&sys.id, StepKind::Start).await? {
                Some(true) => return Ok(Task::Healthy),
                Some(false) => {}
                None => return Ok(Task::NotStarted),
            },
        }
        let mut deadline = tokio::time::Instant::now() + sys.start_timeout.to_std();
        let resumed_wait = matches!(sys.start, Action::Manual(_))
            && self.manual_wait_open(&sys.id, SystemPhase::Starting);
        let started = async {
            if resumed_wait {
                // Verified and asked before the run was taken over.
                return Ok(None);
            }
            if let Some(reason) = self.verify(sys).await? {
                return Ok(Some(reason));
            }
            // Driven again on purpose, and said so: a crash cut its start
            // short, and running this start again is harmless.
            let why = redriven.then(|| {
                "driven again: a crash cut its start short, and this start is idempotent".to_owned()
            });
            self.system_event(&sys.id, SystemPhase::Starting, why)?;
            if let Action::Manual(_) = &sys.start {
                return Ok(None);
            }
            let outcome = self
                .run_attempt(&sys.id, StepKind::Start, &sys.start)
                .await?;
            Ok((!outcome.ok).then(|| format!("start failed: {}", outcome.detail)))
        };
        match tokio::time::timeout_at(deadline, started).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(reason))) => return self.system_failed(&sys.id, reason),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                self.abandon_attempt(
                    &sys.id,
                    "cut short at its startTimeout; its process group was killed",
                )?;
                return self.system_failed(
                    &sys.id,
                    format!(
                        "its verify checks and start did not finish within its startTimeout of {}",
                        sys.start_timeout
                    ),
                );
            }
        }
        if let Action::Manual(m) = &sys.start {
            // A person's time is not counted against startTimeout: it
            // counts from their confirmation. A pause meanwhile holds.
            if !self
                .wait_for_confirmation(&sys.id, SystemPhase::Starting, &m.instruction)
                .await?
            {
                return Ok(Task::NotStarted);
            }
            deadline = tokio::time::Instant::now() + sys.start_timeout.to_std();
        }
        self.probe_after_start(sys, deadline).await
    }

    pub(super) fn system_failed(&self, id: &str, reason: String) -> Result<Task, EngineError> {
        self.system_event(id, SystemPhase::Failed, Some(reason.clone()))?;
        Ok(Task::Failed(format!("{id}: {reason}")))
    }

    /// Runs the verify checks; `Some(reason)` when one failed.
    pub(super) async fn verify(&self, sys: &PlannedSystem) -> Result<Option<String>, EngineError> {
        if !sys.verify.is_empty() {
            self.system_event(&sys.id, SystemPhase::Verifying, None)?;
            for (k, check) in sys.verify.iter().enumerate() {
                let outcome = run_check(check, &self.cx).await;
                self.output(&sys.id, &format!("verify[{k}]"), &outcome)?;
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
    ) -> Result<Task, EngineError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match probe::until_healthy(&sys.health, &sys.probe, left, &self.health_cx(sys)).await {
            Ok(_) => {
                self.system_event(&sys.id, SystemPhase::Healthy, None)?;
                Ok(Task::Healthy)
            }
            Err(never) => self.system_failed(
                &sys.id,
                format!(
                    "not healthy within its startTimeout of {} ({never})",
                    sys.start_timeout
                ),
            ),
        }
    }
}
