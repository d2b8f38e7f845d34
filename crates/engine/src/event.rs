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

pub use crate::decision::Proof;
use crate::process::Process;

/// How a decision reads in the audit: signed with which key, or unsigned;
/// and its note.
fn signed(proof: &Proof) -> String {
    let how = match &proof.key {
        Some(key) => format!(", signed {key}"),
        None if proof.wait.is_some() => ", unsigned".to_owned(),
        None => String::new(),
    };
    match &proof.note {
        Some(note) => format!("{how} (note: {note})"),
        None => how,
    }
}

/// " as ROLE", or nothing.
fn as_role(role: &Option<String>) -> String {
    role.as_deref()
        .map(|r| format!(" as {r}"))
        .unwrap_or_default()
}

/// Which of a system's actions a step attempt runs. Verify and health
/// checks only look, so running them again is always harmless; these two
/// change the world, and each attempt of them is journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepKind {
    Start,
    Stop,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Start => "start",
            StepKind::Stop => "stop",
        }
    }
}

/// How a step attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptResult {
    Succeeded,
    Failed,
    /// Killed on purpose (a second Ctrl-C): it certainly ended, with no
    /// known effect.
    Interrupted,
    /// It ended while no blackstart watched it (after a crash): whether it
    /// did what it should is not known.
    Unknown,
}

/// A run's phase, as `status` and the README name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunPhase {
    Pending,
    Running,
    /// A rollback began and has not finished: resuming finishes it, and
    /// nothing is started again.
    RollingBack,
    Paused,
    Succeeded,
    /// Every stage passed, but not every system is Healthy: an optional
    /// system failed, and what depends on it is Blocked. Exit 1.
    Degraded,
    Failed,
    RolledBack,
}

impl RunPhase {
    /// Whether the run has ended and nothing more will start.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunPhase::Succeeded | RunPhase::Degraded | RunPhase::Failed | RunPhase::RolledBack
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

/// A system's phase, as `status` and the README name it. `Skipped`: never started
/// because the run ended first. `Blocked`: never started because something
/// it depends on failed (an optional system) or is Blocked itself.
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
    Blocked,
}

/// What a system waits for a person to do, typed so that views, the
/// drill's stand-in commander and (later) `confirm` decide by kind rather
/// than by the words of a reason. The reason says the same to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WaitingFor {
    /// A manual start or stop: `confirm` once it is done.
    ManualStep,
    /// A start or stop a crash cut short, on a system without health
    /// checks to tell how it ended: `confirm` (or, for a start, `retry`).
    UnknownOutcome,
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
        /// The playbook file, absolute: `resume` and `rollback` read it
        /// again and refuse a journal whose plan it does not give.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        playbook_path: Option<String>,
        /// A drill: actions and probes replaced by the simulated plant.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        drill: bool,
        /// A drill that takes signed decisions only, as a real run does
        /// (`drill --manual-approvals --require-signatures`): it rehearses
        /// the keys too.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        require_signatures: bool,
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
        /// Set while the system waits for a person; cleared by its next
        /// transition.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        waiting_for: Option<WaitingFor>,
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
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A person of a role the gate needs said no: the gate fails, and its
    /// `onFailure` applies.
    #[serde(rename_all = "camelCase")]
    Denied {
        stage: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        reason: String,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A person confirmed a manual step.
    #[serde(rename_all = "camelCase")]
    Confirmed {
        system: String,
        by: String,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A person asked for a new start attempt of a system whose last one a
    /// crash left unknown.
    #[serde(rename_all = "camelCase")]
    RetryRequested {
        system: String,
        by: String,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A person asked, from any terminal, for the run to pause.
    #[serde(rename_all = "camelCase")]
    PauseRequested {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// The role of the member who asked (with `spec.roles`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// The journal head it was asked at, and the signature over it.
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A person asked, from any terminal, for the whole run to be rolled
    /// back by the process that drives it.
    #[serde(rename_all = "camelCase")]
    RollbackRequested {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A member's key decides nothing more in this run (a compromised
    /// laptop): revoked by a member of a role its owner is not in.
    #[serde(rename_all = "camelCase")]
    KeyRevoked {
        /// `SHA256:…`
        key: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A decision that reached the run and was not taken, with why: the
    /// audit shows who tried what.
    #[serde(rename_all = "camelCase")]
    Refused {
        decision: String,
        subject: String,
        by: String,
        reason: String,
    },
    /// A start or stop is about to run: journaled before it runs, so that
    /// no attempt runs that the journal does not show.
    #[serde(rename_all = "camelCase")]
    AttemptBegun {
        system: String,
        step: StepKind,
        attempt: u32,
    },
    /// The attempt's process runs: what a resume needs to tell whether it
    /// still does.
    #[serde(rename_all = "camelCase")]
    AttemptRunning {
        system: String,
        step: StepKind,
        attempt: u32,
        process: Process,
    },
    #[serde(rename_all = "camelCase")]
    AttemptEnded {
        system: String,
        step: StepKind,
        attempt: u32,
        result: AttemptResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A rollback begins: which systems it will stop, in order, journaled
    /// before the first stop so that a crash resumes it as a rollback.
    /// `stage` is the failed stage an `onFailure: rollback` undoes; none
    /// when the whole run is rolled back.
    #[serde(rename_all = "camelCase")]
    RollbackBegun {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
        systems: Vec<String>,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A failure at `site` in a stage whose failure domain is the site:
    /// `onFailure` applies to that site's systems of the stage only
    /// (`systems`: what a rollback of it stops, dependents first, journaled
    /// before the first stop), and the site is held; the others go on.
    #[serde(rename_all = "camelCase")]
    SiteHeld {
        site: String,
        stage: String,
        reason: String,
        on_failure: blackstart_model::playbook::OnFailure,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        systems: Vec<String>,
    },
    /// A person starts a held site again (`retry RUN --site SITE`): every
    /// hold of the site is released, its systems that are not Healthy and
    /// every Blocked system go back to Pending with a new budget of
    /// attempts, the stages they are in wait for their gates again, and the
    /// run goes on from where it stands.
    #[serde(rename_all = "camelCase")]
    SiteRetried {
        site: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// Bytes after the journal's longest valid prefix (a torn write, or
    /// records that do not follow the chain) were moved to `file`, beside
    /// the journal, and the run goes on from the prefix. Nothing is deleted.
    #[serde(rename_all = "camelCase")]
    SetAside {
        file: String,
        bytes: u64,
        reason: String,
    },
    /// One attempt to deliver a notification (`spec.notify`): what it
    /// told of, to which receiver (its place in the list and its host, never
    /// its URL, which carries a token), and how it went. `last` when no
    /// attempt follows: delivered, or given up.
    #[serde(rename_all = "camelCase")]
    Notified {
        notification: blackstart_model::playbook::NotifyOn,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<String>,
        receiver: String,
        attempt: u32,
        delivered: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        last: bool,
        /// A reminder that a gate still waits.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reminder: bool,
    },
    /// Written by blackstart 0.1.0, which truncated a torn tail; read in
    /// journals of that release, no longer written.
    #[serde(rename_all = "camelCase")]
    TornWriteDiscarded { bytes: u64 },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Event {
    /// The event in a person's words: what `audit` lists, what progress
    /// lines show and what the operator's Kubernetes Events say. The one
    /// text for an event, so the views cannot drift apart.
    pub fn describe(&self) -> String {
        let event = self;
        let why = |r: &Option<String>| r.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        match event {
            Event::RunStarted {
                run,
                playbook,
                playbook_hash,
                ..
            } => format!("run {run} of {playbook} started ({playbook_hash})"),
            Event::Run { phase, reason } => format!("run {phase:?}{}", why(reason)),
            Event::Stage {
                stage,
                phase,
                reason,
            } => format!("stage {stage} {phase:?}{}", why(reason)),
            Event::System {
                system,
                phase,
                reason,
                ..
            } => format!("{system} {phase:?}{}", why(reason)),
            Event::Output {
                system,
                step,
                exit_code,
                output,
            } => format!(
                "{system} {step} output{}: {}",
                exit_code
                    .map(|c| format!(" (exit {c})"))
                    .unwrap_or_default(),
                output.trim_end().lines().last().unwrap_or("")
            ),
            Event::Approved {
                stage,
                by,
                role,
                proof,
            } => format!(
                "stage {stage} approved by {by}{}{}",
                as_role(role),
                signed(proof)
            ),
            Event::Denied {
                stage,
                by,
                role,
                reason,
                proof,
            } => format!(
                "stage {stage} denied by {by}{}{}: {reason}",
                as_role(role),
                signed(proof)
            ),
            Event::Confirmed { system, by, proof } => {
                format!("{system} confirmed by {by}{}", signed(proof))
            }
            Event::Refused {
                decision,
                subject,
                by,
                reason,
            } => format!("{decision} of {subject} by {by} refused: {reason}"),
            Event::KeyRevoked {
                key,
                by,
                role,
                reason,
                proof,
            } => format!(
                "key {key} revoked by {by}{}{}{}",
                as_role(role),
                signed(proof),
                why(reason)
            ),
            Event::PauseRequested {
                by,
                reason,
                role,
                proof,
            } => format!(
                "pause asked by {by}{}{}{}",
                as_role(role),
                signed(proof),
                why(reason)
            ),
            Event::RollbackRequested {
                by,
                reason,
                role,
                proof,
            } => format!(
                "rollback asked by {by}{}{}{}",
                as_role(role),
                signed(proof),
                why(reason)
            ),
            Event::TornWriteDiscarded { bytes } => {
                format!("{bytes} bytes of an unfinished write discarded after a crash")
            }
            Event::RetryRequested { system, by, proof } => {
                format!("{system}: retry asked by {by}{}", signed(proof))
            }
            Event::AttemptBegun {
                system,
                step,
                attempt,
            } => format!("{system} {} attempt {attempt} begun", step.as_str()),
            Event::AttemptRunning {
                system,
                step,
                attempt,
                process,
            } => format!(
                "{system} {} attempt {attempt} running as pid {}",
                step.as_str(),
                process.pid
            ),
            Event::AttemptEnded {
                system,
                step,
                attempt,
                result,
                reason,
            } => format!(
                "{system} {} attempt {attempt} ended {result:?}{}",
                step.as_str(),
                why(reason)
            ),
            Event::SiteHeld {
                site,
                stage,
                reason,
                on_failure,
                systems,
            } => format!(
                "site {site} held in stage {stage} ({}{}): {reason}",
                on_failure.as_str(),
                if systems.is_empty() {
                    String::new()
                } else {
                    format!(", stopping {}", systems.join(", "))
                }
            ),
            Event::SiteRetried {
                site,
                by,
                role,
                proof,
            } => format!(
                "site {site} retried by {by}{}{}: its held part starts again",
                as_role(role),
                signed(proof)
            ),
            Event::RollbackBegun {
                stage,
                systems,
                reason,
                by,
            } => format!(
                "rollback{} begun{}: stopping {} ({reason})",
                stage
                    .as_deref()
                    .map(|s| format!(" of stage {s}"))
                    .unwrap_or_default(),
                by.as_deref()
                    .map(|b| format!(" by {b}"))
                    .unwrap_or_default(),
                if systems.is_empty() {
                    "nothing".to_owned()
                } else {
                    systems.join(", ")
                }
            ),
            Event::SetAside {
                file,
                bytes,
                reason,
            } => format!("{bytes} bytes after the valid chain set aside into {file} ({reason})"),
            Event::Notified {
                notification,
                stage,
                receiver,
                attempt,
                delivered,
                status,
                error,
                last,
                reminder,
            } => {
                let what = format!(
                    "{}{}{}",
                    if *reminder {
                        "reminder "
                    } else {
                        "notification "
                    },
                    notification.as_str(),
                    stage
                        .as_deref()
                        .map(|s| format!(" (stage {s})"))
                        .unwrap_or_default()
                );
                let how = match (status, error) {
                    (Some(code), _) => format!("HTTP {code}"),
                    (None, Some(e)) => e.clone(),
                    (None, None) => String::new(),
                };
                if *delivered {
                    format!("{what} delivered to {receiver} ({how}, attempt {attempt})")
                } else if *last {
                    format!(
                        "{what} to {receiver} not delivered ({how}, attempt {attempt}); given up"
                    )
                } else {
                    format!(
                        "{what} to {receiver} not delivered ({how}, attempt {attempt}); trying again"
                    )
                }
            }
        }
    }
}
