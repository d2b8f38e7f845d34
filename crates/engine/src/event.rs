//! What happens in a run, one event per transition.
//!
//! Events are the only record of a run: the journal stores them, `status`
//! and `resume` fold them back into state, `audit` prints them. So they say
//! what happened in the domain's words and carry what a post-incident review
//! needs (who approved, what a failed start printed), never a secret: action
//! output is redacted before it becomes an event.
//!
//! Transitions are generic (`SystemPhase`, `StagePhase`, `RunPhase`) rather
//! than one variant per step, so the fold is a few lines and a new phase is a
//! new enum value, not a new code path in every reader.

use serde::{Deserialize, Serialize};

use blackstart_model::Plan;

/// A run's phase, as DESIGN.md names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunPhase {
    Pending,
    Running,
    Paused,
    Succeeded,
    Failed,
    RolledBack,
}

impl RunPhase {
    /// Whether the run has ended and nothing more will start.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunPhase::Succeeded | RunPhase::Failed | RunPhase::RolledBack
        )
    }
}

/// A stage's phase: `Gate` while its systems are up and the gate (soak,
/// approvals) is being held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StagePhase {
    Pending,
    Running,
    Gate,
    Succeeded,
    Failed,
    RolledBack,
    Skipped,
}

/// A system's phase, as DESIGN.md names it. `Skipped`: never started
/// because the run ended first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SystemPhase {
    Pending,
    Verifying,
    Starting,
    Healthy,
    Failed,
    Stopping,
    RolledBack,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Event {
    /// The first event of every run: the whole plan, so a resume needs
    /// nothing but the journal, and an audit shows exactly what was run.
    #[serde(rename_all = "camelCase")]
    RunStarted {
        run: String,
        playbook: String,
        playbook_hash: String,
        plan: Box<Plan>,
    },
    #[serde(rename_all = "camelCase")]
    Run {
        phase: RunPhase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    Stage {
        stage: String,
        phase: StagePhase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    System {
        system: String,
        phase: SystemPhase,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// What one step of a system (a verify check, the start or stop action)
    /// printed, truncated and redacted.
    #[serde(rename_all = "camelCase")]
    Output {
        system: String,
        step: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        output: String,
    },
    #[serde(rename_all = "camelCase")]
    Approved {
        stage: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// A person confirmed a manual step.
    #[serde(rename_all = "camelCase")]
    Confirmed { system: String, by: String },
    /// A write cut short by a crash was found at the end of the journal; its
    /// bytes were never acknowledged as durable and are not part of the run.
    #[serde(rename_all = "camelCase")]
    TornWriteDiscarded { bytes: u64 },
}
