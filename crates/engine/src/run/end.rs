//! How a run stops moving: a pause (asked, or a stage's `onFailure`), a
//! failed stage's policy applied, and the run's end with its reason.

use super::*;

impl<S: RunStore + 'static> Inner<S> {
    /// A pause a person asked for; not journaled when it only makes way
    /// for a rollback.
    pub(super) fn commander_pause(&self, reason: &str) -> Result<RunPhase, EngineError> {
        if self.rollback_next.load(Ordering::SeqCst) {
            return Ok(RunPhase::Paused);
        }
        let given = self
            .pause_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.pause_run(given.as_deref().unwrap_or(reason))
    }

    pub(super) fn pause_run(&self, reason: &str) -> Result<RunPhase, EngineError> {
        self.emit_blocking(Event::Run {
            phase: RunPhase::Paused,
            reason: Some(reason.to_owned()),
        })?;
        Ok(RunPhase::Paused)
    }

    pub(super) async fn stage_failed(
        self: &Arc<Self>,
        stage: &PlannedStage,
        reason: &str,
    ) -> Result<RunPhase, EngineError> {
        self.stage_failed_as(stage, reason, stage.gate.on_failure)
            .await
    }

    /// A failed stage, with `policy` (its `onFailure`, or its `onTimeout`
    /// when its approvals timed out) applied.
    pub(super) async fn stage_failed_as(
        self: &Arc<Self>,
        stage: &PlannedStage,
        reason: &str,
        policy: OnFailure,
    ) -> Result<RunPhase, EngineError> {
        let reason = format!("stage `{}` failed: {reason}", stage.name);
        match policy {
            OnFailure::Rollback => {
                let systems = self.started_of(stage.rollback_order.iter());
                self.emit(Event::RollbackBegun {
                    stage: Some(stage.name.clone()),
                    systems,
                    reason,
                    by: None,
                })
                .await?;
                self.finish_rollback().await
            }
            OnFailure::Pause => {
                self.stage_event(&stage.name, StagePhase::Failed, Some(reason.clone()))
                    .await?;
                self.pause_run(&reason)
            }
            OnFailure::Abort => {
                self.stage_event(&stage.name, StagePhase::Failed, Some(reason.clone()))
                    .await?;
                self.end(RunPhase::Failed, &reason)
            }
        }
    }

    /// Ends the run: what never started is marked Skipped first. A run
    /// whose rollback began never ends Succeeded.
    pub(super) fn end(&self, phase: RunPhase, reason: &str) -> Result<RunPhase, EngineError> {
        let phase = if phase == RunPhase::Succeeded && self.lock().rollback.is_some() {
            RunPhase::RolledBack
        } else {
            phase
        };
        if phase != RunPhase::Succeeded {
            let (systems, stages): (Vec<String>, Vec<String>) = {
                let state = self.lock();
                (
                    state
                        .systems
                        .iter()
                        .filter(|s| s.phase == SystemPhase::Pending)
                        .map(|s| s.id.clone())
                        .collect(),
                    state
                        .stages
                        .iter()
                        .filter(|s| s.phase == StagePhase::Pending)
                        .map(|s| s.name.clone())
                        .collect(),
                )
            };
            for id in systems {
                self.emit_blocking(system(&id, SystemPhase::Skipped, None))?;
            }
            for name in stages {
                self.emit_blocking(stage(&name, StagePhase::Skipped, None))?;
            }
        }
        let reason = (!reason.is_empty()).then(|| reason.to_owned());
        self.emit_blocking(Event::Run { phase, reason })?;
        Ok(phase)
    }
}
