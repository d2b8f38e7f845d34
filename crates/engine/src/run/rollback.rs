//! Rollback: journaled as begun, with the systems it will stop, before the
//! first stop, so that a crash resumes it as a rollback; each system
//! stopped once, dependents first.

use super::*;

impl<S: RunStore + 'static> Inner<S> {
    /// Of the given systems, in their order, those whose start ever began.
    pub(super) fn started_of<'a>(&self, ids: impl Iterator<Item = &'a SmolStr>) -> Vec<String> {
        let state = self.lock();
        ids.filter(|id| {
            state
                .system(id)
                .is_some_and(|s| s.started && s.phase != SystemPhase::RolledBack)
        })
        .map(SmolStr::to_string)
        .collect()
    }

    /// Carries the rollback the journal says began to its end: stops what
    /// it lists that is not stopped yet, then ends the run RolledBack.
    pub(super) async fn finish_rollback(self: &Arc<Self>) -> Result<RunPhase, EngineError> {
        let rollback = self.lock().rollback.clone();
        let Some(rollback) = rollback else {
            let phase = self.lock().phase;
            return Ok(phase);
        };
        self.stop_systems(&rollback.systems).await?;
        match &rollback.stage {
            Some(stage) => {
                self.stage_event(stage, StagePhase::RolledBack, Some(rollback.reason.clone()))
                    .await?;
            }
            None => {
                for stage in &self.plan.stages {
                    let touched = stage.systems.iter().any(|s| self.system_started(&s.id));
                    let phase = if touched {
                        StagePhase::RolledBack
                    } else {
                        StagePhase::Skipped
                    };
                    self.stage_event(&stage.name, phase, None).await?;
                }
            }
        }
        self.end(RunPhase::RolledBack, &rollback.reason)
    }

    /// Stops, in the order given, every listed system not stopped yet.
    pub(super) async fn stop_systems(
        self: &Arc<Self>,
        order: &[String],
    ) -> Result<(), EngineError> {
        let planned: HashMap<&str, &PlannedSystem> = self
            .plan
            .systems()
            .map(|(_, s)| (s.id.as_str(), s))
            .collect();
        for id in order {
            if let Some(sys) = planned.get(id.as_str()) {
                self.stop_one(sys).await?;
            }
        }
        Ok(())
    }

    /// Stops one system, once: a stop a crash cut short is not run again;
    /// its outcome is read from health, or confirmed by a person.
    pub(super) async fn stop_one(self: &Arc<Self>, sys: &PlannedSystem) -> Result<(), EngineError> {
        let id = &sys.id;
        let (started, phase) = {
            let state = self.lock();
            let s = state.system(id);
            (s.is_some_and(|s| s.started), s.map(|s| s.phase))
        };
        if !started || phase == Some(SystemPhase::RolledBack) {
            return Ok(());
        }
        match self.settle(sys, StepKind::Stop).await? {
            Settled::Nothing => {}
            Settled::Succeeded => {
                return self.system_event(id, SystemPhase::RolledBack, None).await;
            }
            Settled::Failed(_) => {
                if phase != Some(SystemPhase::Failed) {
                    self.system_event(
                        id,
                        SystemPhase::Failed,
                        Some("its stop failed before the run was interrupted".into()),
                    )
                    .await?;
                }
                return Ok(());
            }
            Settled::Unknown if !sys.health.is_empty() => {
                return if self.verdict(sys).await {
                    self.system_event(
                        id,
                        SystemPhase::Failed,
                        Some("still healthy after a crash cut its stop short; the stop was not run twice: stop it by hand".into()),
                    ).await
                } else {
                    self.system_event(
                        id,
                        SystemPhase::RolledBack,
                        Some("down after a crash cut its stop short".into()),
                    )
                    .await
                };
            }
            Settled::Unknown => {
                self.wait_for_person(id, StepKind::Stop).await?;
                return Ok(());
            }
        }
        let resumed_wait = matches!(sys.stop, Some(Action::Manual(_)))
            && self.manual_wait_open(id, SystemPhase::Stopping);
        if !resumed_wait {
            self.system_event(id, SystemPhase::Stopping, None).await?;
        }
        let Some(stop) = &sys.stop else {
            return self
                .system_event(
                    id,
                    SystemPhase::RolledBack,
                    Some("no stop action: left as it was".into()),
                )
                .await;
        };
        if let Action::Manual(m) = stop {
            if !resumed_wait {
                self.system_waits(
                    id,
                    SystemPhase::Stopping,
                    WaitingFor::ManualStep,
                    format!("waiting for confirmation: {}", m.instruction),
                )?;
            }
            let system = id.clone();
            self.wait_until(move |s| s.system(&system).is_some_and(|s| s.confirmed_by.is_some()))
                .await;
            return self.system_event(id, SystemPhase::RolledBack, None).await;
        }
        let outcome = self.run_attempt(id, StepKind::Stop, stop, None).await?;
        if outcome.ok {
            self.system_event(id, SystemPhase::RolledBack, None).await
        } else {
            self.system_event(
                id,
                SystemPhase::Failed,
                Some(format!("stop failed: {}", outcome.detail)),
            )
            .await
        }
    }
}
