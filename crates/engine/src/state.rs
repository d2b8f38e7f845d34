//! A run's state, folded from its events.
//!
//! The same fold serves `status`, `resume` (after a crash, in the CLI or in
//! the operator) and `audit`: state is never stored, only derived, so it
//! can never disagree with the journal.
//!
//! About 700 lines, kept whole: the state's types and the one fold that
//! moves them are read together, and a second place that moves state would
//! be a second source of truth.

use std::collections::HashMap;

use serde::Serialize;

use crate::event::{AttemptResult, Event, RunPhase, StagePhase, StepKind, SystemPhase, WaitingFor};
use crate::process::Process;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `SHA256:…` of the key it was signed with; none when unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A "no" at a gate: the gate fails.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Denial {
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageState {
    pub name: String,
    pub phase: StagePhase,
    pub approvals: Vec<Approval>,
    /// The journal seq at which its gate began waiting, the last time:
    /// what a signed decision of the gate answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate_since: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<Denial>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemState {
    pub id: String,
    pub stage: String,
    pub site: String,
    pub phase: SystemPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it waits for a person to do, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<WaitingFor>,
    /// The journal seq at which it began waiting for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_by: Option<String>,
    /// Whether its start action ever began: what a rollback must stop.
    pub started: bool,
    /// Start attempts begun so far.
    #[serde(skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Attempts begun before a person's `retry --site`: the playbook's
    /// retry budget counts from here.
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_from: u32,
    /// The journal seq at which it last turned Failed: the failure a
    /// `retry RUN SYSTEM` answers (a signed retry binds it, so it is not
    /// taken again for a later failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<u64>,
    /// Its latest start or stop attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<StepState>,
    /// Who asked for a new start attempt that has not begun yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_by: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A start or stop attempt, as far as the journal knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    pub step: StepKind,
    pub attempt: u32,
    /// Its leader process, once it ran (exec steps only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// How it ended; none while it runs, or when a crash cut it short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<AttemptResult>,
}

/// A site a failure held in one stage (`failureDomain: site`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldSite {
    pub site: String,
    pub stage: String,
    pub reason: String,
    pub on_failure: blackstart_model::playbook::OnFailure,
    /// What its rollback stops, dependents first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<String>,
}

impl StageState {
    /// The roles of `required` (the gate's) that no approval fills yet. An
    /// approval without a role fills a gate that requires exactly one.
    pub fn roles_missing<'a>(&self, required: &'a [String]) -> Vec<&'a String> {
        required
            .iter()
            .filter(|role| {
                !self.approvals.iter().any(|a| match &a.role {
                    Some(r) => r == *role,
                    None => required.len() == 1,
                })
            })
            .collect()
    }
}

impl SystemState {
    /// Whether its last start was cut short by a crash or an interrupt and
    /// nobody knows how it went: what `retry` (or `confirm`) settles.
    pub fn start_cut_short(&self) -> bool {
        self.phase == SystemPhase::Starting
            && self.step.as_ref().is_some_and(|a| {
                a.step == StepKind::Start
                    && matches!(
                        a.result,
                        None | Some(AttemptResult::Unknown | AttemptResult::Interrupted)
                    )
            })
    }
}

impl StepState {
    /// Begun and not ended: after a crash, it may still be running.
    pub fn open(&self) -> bool {
        self.result.is_none()
    }
}

/// A rollback that began: what it stops, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    pub systems: Vec<String>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Where a run stands, in the shape `status --format json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    pub run: String,
    pub playbook: String,
    pub playbook_hash: String,
    /// A drill: decisions by members are taken unsigned (it rehearses the
    /// plan, not the keys), and status and audit say so.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub drill: bool,
    /// A drill that takes signed decisions only, as a real run does.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_signatures: bool,
    pub phase: RunPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub stages: Vec<StageState>,
    pub systems: Vec<SystemState>,
    /// The rollback that began, if one did; it stays after it finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackState>,
    /// The last decision refused, and why, until a decision is taken after
    /// it: what the operator shows as a condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Sites held by a failure in a stage whose failure domain is the
    /// site, with the stage and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldSite>,
    /// Keys revoked in this run (`SHA256:…`): they decide nothing more.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    /// The sequence number of the last event folded: what a decision that
    /// answers no wait (a revocation) binds.
    #[serde(skip)]
    pub head: u64,
    /// The journal seq of the last pause and the last rollback asked: a
    /// signed one made before it is not taken again.
    #[serde(skip)]
    pub pause_asked: Option<u64>,
    #[serde(skip)]
    pub rollback_asked: Option<u64>,
    /// The journal seq of the last `retry --site`: likewise.
    #[serde(skip)]
    pub site_retried: Option<u64>,
    /// Where the journal was repaired: records set aside, with the file
    /// they went to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set_aside: Vec<String>,
    /// Positions in `systems` and `stages` by id: a run of 10,000 systems
    /// looks one up for every event.
    #[serde(skip)]
    index: Index,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Index {
    systems: HashMap<String, usize>,
    stages: HashMap<String, usize>,
}

/// Why a list of events is not a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    #[error("the journal is empty: the run never started")]
    Empty,
    #[error("event {seq} comes before the run started; the first event must be RunStarted")]
    NotStarted { seq: u64 },
    #[error("event {seq} names {what} `{id}`, which the run's plan does not have")]
    Unknown {
        seq: u64,
        what: &'static str,
        id: String,
    },
}

impl RunState {
    /// Folds events (with their sequence numbers, for error messages) into state.
    pub fn fold<'a>(
        events: impl IntoIterator<Item = (u64, &'a Event)>,
    ) -> Result<RunState, FoldError> {
        let mut events = events.into_iter();
        let Some((seq, first)) = events.next() else {
            return Err(FoldError::Empty);
        };
        let Event::RunStarted {
            run,
            playbook,
            playbook_hash,
            plan,
            drill,
            require_signatures,
            ..
        } = first
        else {
            return Err(FoldError::NotStarted { seq });
        };
        let mut state = RunState {
            run: run.clone(),
            playbook: playbook.clone(),
            playbook_hash: playbook_hash.clone(),
            drill: *drill,
            require_signatures: *require_signatures,
            phase: RunPhase::Pending,
            reason: None,
            stages: plan
                .stages
                .iter()
                .map(|s| StageState {
                    name: s.name.clone(),
                    phase: StagePhase::Pending,
                    approvals: Vec::new(),
                    gate_since: None,
                    denied: None,
                })
                .collect(),
            systems: plan
                .systems()
                .map(|(st, s)| SystemState {
                    id: s.id.to_string(),
                    stage: st.name.clone(),
                    site: s.site.to_string(),
                    phase: SystemPhase::Pending,
                    reason: None,
                    waiting_for: None,
                    waiting_since: None,
                    confirmed_by: None,
                    started: false,
                    attempts: 0,
                    retry_from: 0,
                    failed_at: None,
                    step: None,
                    retry_by: None,
                })
                .collect(),
            rollback: None,
            refused: None,
            revoked: Vec::new(),
            held: Vec::new(),
            head: seq,
            pause_asked: None,
            rollback_asked: None,
            site_retried: None,
            set_aside: Vec::new(),
            index: Index::default(),
        };
        state.index = Index {
            systems: state
                .systems
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.clone(), i))
                .collect(),
            stages: state
                .stages
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect(),
        };
        for (seq, event) in events {
            state.apply(seq, event)?;
        }
        Ok(state)
    }

    /// Applies one more event, as the engine does after each append.
    pub fn apply(&mut self, seq: u64, event: &Event) -> Result<(), FoldError> {
        self.head = self.head.max(seq);
        match event {
            Event::RunStarted { .. } => return Err(FoldError::NotStarted { seq }),
            Event::Run { phase, reason } => {
                self.phase = *phase;
                self.reason = reason.clone();
            }
            Event::Stage { stage, phase, .. } => {
                let st = self.stage_mut(seq, stage)?;
                st.phase = *phase;
                if *phase == StagePhase::Gate {
                    st.gate_since = Some(seq);
                    // A denial answered the wait before; a new wait is open.
                    st.denied = None;
                }
            }
            Event::System {
                system,
                phase,
                reason,
                waiting_for,
            } => {
                let s = self.system_mut(seq, system)?;
                s.phase = *phase;
                s.reason = reason.clone();
                s.waiting_for = *waiting_for;
                s.waiting_since = waiting_for.map(|_| seq);
                if *phase == SystemPhase::Failed {
                    s.failed_at = Some(seq);
                }
                s.started |= *phase == SystemPhase::Starting;
                // A manual stop needs its own confirmation, not the start's.
                if *phase == SystemPhase::Stopping {
                    s.confirmed_by = None;
                }
            }
            Event::Approved {
                stage,
                by,
                role,
                proof,
            } => {
                self.refused = None;
                self.stage_mut(seq, stage)?.approvals.push(Approval {
                    by: by.clone(),
                    role: role.clone(),
                    key: proof.key.clone(),
                });
            }
            Event::Denied {
                stage,
                by,
                role,
                reason,
                ..
            } => {
                self.stage_mut(seq, stage)?.denied = Some(Denial {
                    by: by.clone(),
                    role: role.clone(),
                    reason: reason.clone(),
                });
            }
            Event::KeyRevoked { key, .. } => {
                self.revoked.push(key.clone());
                self.refused = None;
            }
            Event::Refused { .. } => self.refused = Some(event.describe()),
            Event::SiteHeld {
                site,
                stage,
                reason,
                on_failure,
                systems,
            } => self.held.push(HeldSite {
                site: site.clone(),
                stage: stage.clone(),
                reason: reason.clone(),
                on_failure: *on_failure,
                systems: systems.clone(),
            }),
            Event::SiteRetried { site, by, .. } => {
                self.site_retried = Some(seq);
                self.retry_site(site, by);
            }
            Event::PauseRequested { .. } => self.pause_asked = Some(seq),
            Event::RollbackRequested { .. } => self.rollback_asked = Some(seq),
            Event::Confirmed { system, by, .. } => {
                let s = self.system_mut(seq, system)?;
                s.confirmed_by = Some(by.clone());
                s.waiting_for = None;
            }
            Event::RetryRequested { system, by, .. } => {
                let s = self.system_mut(seq, system)?;
                if s.start_cut_short() {
                    // A start a crash cut short, run again.
                    s.retry_by = Some(by.clone());
                    s.waiting_for = None;
                } else {
                    // A failed (or held) system started again (`retry RUN SYSTEM`).
                    self.retry_system(system, by);
                }
            }
            Event::AttemptBegun {
                system,
                step,
                attempt,
            } => {
                let s = self.system_mut(seq, system)?;
                if *step == StepKind::Start {
                    s.attempts = s.attempts.max(*attempt);
                    s.started = true;
                    s.retry_by = None;
                    s.confirmed_by = None;
                }
                s.step = Some(StepState {
                    step: *step,
                    attempt: *attempt,
                    process: None,
                    result: None,
                });
            }
            Event::AttemptRunning {
                system,
                step,
                attempt,
                process,
            } => {
                if let Some(a) = self.system_mut(seq, system)?.step.as_mut()
                    && (a.step, a.attempt) == (*step, *attempt)
                {
                    a.process = Some(process.clone());
                }
            }
            Event::AttemptEnded {
                system,
                step,
                attempt,
                result,
                ..
            } => {
                if let Some(a) = self.system_mut(seq, system)?.step.as_mut()
                    && (a.step, a.attempt) == (*step, *attempt)
                    && a.result.is_none()
                {
                    a.result = Some(*result);
                }
            }
            Event::RollbackBegun {
                stage,
                systems,
                reason,
                by,
            } => {
                self.phase = RunPhase::RollingBack;
                self.reason = Some(reason.clone());
                self.rollback = Some(RollbackState {
                    stage: stage.clone(),
                    systems: systems.clone(),
                    reason: reason.clone(),
                    by: by.clone(),
                });
            }
            Event::SetAside { file, .. } => self.set_aside.push(file.clone()),
            // Told, not done: a notification moves nothing.
            Event::Output { .. } | Event::TornWriteDiscarded { .. } | Event::Notified { .. } => {}
        }
        Ok(())
    }

    fn system_mut(&mut self, seq: u64, id: &str) -> Result<&mut SystemState, FoldError> {
        match self.index.systems.get(id) {
            Some(&i) => Ok(&mut self.systems[i]),
            None => Err(FoldError::Unknown {
                seq,
                what: "system",
                id: id.to_owned(),
            }),
        }
    }

    fn stage_mut(&mut self, seq: u64, name: &str) -> Result<&mut StageState, FoldError> {
        match self.index.stages.get(name) {
            Some(&i) => Ok(&mut self.stages[i]),
            None => Err(FoldError::Unknown {
                seq,
                what: "stage",
                id: name.to_owned(),
            }),
        }
    }

    /// What a rollback of the whole run stops, in order: the rest of a
    /// rollback that began; else every system whose start began and that is
    /// not rolled back, later stages first and, inside each, dependents
    /// first. `rollback` runs it and `rollback --dry-run` prints it.
    pub fn rollback_order(&self, plan: &blackstart_model::Plan) -> Vec<String> {
        let stoppable = |id: &&str| {
            self.system(id)
                .is_some_and(|s| s.started && s.phase != SystemPhase::RolledBack)
        };
        match &self.rollback {
            Some(r) if self.phase == RunPhase::RollingBack => r
                .systems
                .iter()
                .map(String::as_str)
                .filter(stoppable)
                .map(str::to_owned)
                .collect(),
            _ => plan
                .stages
                .iter()
                .rev()
                .flat_map(|st| st.rollback_order.iter())
                .map(blackstart_model::playbook::SmolStr::as_str)
                .filter(stoppable)
                .map(str::to_owned)
                .collect(),
        }
    }

    /// A held site started again: see [`Event::SiteRetried`].
    fn retry_site(&mut self, site: &str, by: &str) {
        self.held.retain(|h| h.site != site);
        self.reopen(
            |s| s.site == site && !matches!(s.phase, SystemPhase::Healthy | SystemPhase::Pending),
            format!("site {site} retried by {by}"),
        );
    }

    /// Whether `s`, failed or at a held site, may be started again by
    /// `retry RUN SYSTEM` (in a run that ended Degraded or is paused): `Err`
    /// says why not. At a held site it may when the rest of the site's part
    /// of the stage is Healthy (its failure paused or aborted that part and
    /// nothing else was stopped); otherwise the held part goes again with
    /// `--site`.
    pub fn reopenable(&self, s: &SystemState) -> Result<(), String> {
        if s.phase != SystemPhase::Failed && !self.is_held(s) {
            return Err(format!(
                "`{}` is {:?}: `retry` starts again a failed system, one of a held site, or one whose start a crash cut short",
                s.id, s.phase
            ));
        }
        if !matches!(self.phase, RunPhase::Degraded | RunPhase::Paused) {
            return Err(format!(
                "run {} is {:?}: a failed system is retried once the run has ended Degraded, or while it is paused",
                self.run, self.phase
            ));
        }
        if self.is_held(s) {
            let rest: Vec<&str> = self
                .systems
                .iter()
                .filter(|o| o.site == s.site && o.stage == s.stage && o.id != s.id)
                .filter(|o| o.phase != SystemPhase::Healthy)
                .map(|o| o.id.as_str())
                .collect();
            if !rest.is_empty() {
                return Err(format!(
                    "site {} is held in stage {} with {} not Healthy too: `retry {} --site {}` starts its held part again",
                    s.site,
                    s.stage,
                    rest.join(", "),
                    self.run,
                    s.site
                ));
            }
        }
        Ok(())
    }

    /// `retry RUN SYSTEM` of a failed or held system: it starts again, with the
    /// Blocked systems; a hold of its site in its stage ends with it (see
    /// [`RunState::reopenable`]).
    fn retry_system(&mut self, id: &str, by: &str) {
        let Some((site, stage)) = self.system(id).map(|s| (s.site.clone(), s.stage.clone())) else {
            return;
        };
        self.held.retain(|h| !(h.site == site && h.stage == stage));
        self.reopen(|s| s.id == id, format!("{id} retried by {by}"));
    }

    /// Puts `chosen` systems and every Blocked one back to Pending, with a
    /// new budget of attempts; their stages wait for their gates again.
    /// The run is Paused until the process that took the retry drives it.
    fn reopen(&mut self, chosen: impl Fn(&SystemState) -> bool, why: String) {
        let mut reopened: Vec<String> = Vec::new();
        for s in &mut self.systems {
            let again = chosen(s) || s.phase == SystemPhase::Blocked;
            if again {
                s.phase = SystemPhase::Pending;
                s.reason = None;
                s.waiting_for = None;
                s.waiting_since = None;
                s.retry_from = s.attempts;
                if !reopened.contains(&s.stage) {
                    reopened.push(s.stage.clone());
                }
            }
        }
        for st in &mut self.stages {
            if reopened.contains(&st.name) {
                st.phase = StagePhase::Pending;
                st.approvals.clear();
                st.gate_since = None;
                st.denied = None;
            }
        }
        self.phase = RunPhase::Paused;
        self.reason = Some(why);
    }

    /// Whether `s`'s site is held in `s`'s stage.
    pub fn is_held(&self, s: &SystemState) -> bool {
        self.held
            .iter()
            .any(|h| h.site == s.site && h.stage == s.stage)
    }

    /// Whether a gate waits for `s` (DESIGN.md, "What a gate waits for"):
    /// not at a site held in its stage, not a failed optional system (at
    /// a gate, a Failed system outside a held site is one: any other
    /// failure fails the stage), and not a Blocked one.
    pub fn gate_waits_for(&self, s: &SystemState) -> bool {
        !self.is_held(s) && !matches!(s.phase, SystemPhase::Failed | SystemPhase::Blocked)
    }

    /// Why a run whose stages all passed is not Succeeded: the sites held,
    /// the systems that failed (optional ones, or at a held site) and the
    /// Blocked ones; `None` when every system is Healthy.
    pub fn degraded(&self) -> Option<String> {
        let ids = |phase: SystemPhase| -> Vec<&str> {
            self.systems
                .iter()
                .filter(|s| s.phase == phase)
                .map(|s| s.id.as_str())
                .collect()
        };
        let (failed, blocked) = (ids(SystemPhase::Failed), ids(SystemPhase::Blocked));
        if failed.is_empty() && blocked.is_empty() && self.held.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        for h in &self.held {
            parts.push(format!("site {} held in stage {}", h.site, h.stage));
        }
        if !failed.is_empty() {
            parts.push(format!("failed: {}", failed.join(", ")));
        }
        if !blocked.is_empty() {
            parts.push(format!("Blocked, never started: {}", blocked.join(", ")));
        }
        Some(parts.join("; "))
    }

    /// Whether a rollback of the whole run has nothing left to do: the run
    /// is RolledBack, and either a rollback of the whole run finished, or
    /// every system it started was stopped or its stop was tried. (A stage's
    /// rollback leaves earlier stages up: a rollback of the run stops them.)
    pub fn nothing_to_roll_back(&self) -> bool {
        self.phase == RunPhase::RolledBack
            && (self.rollback.as_ref().is_some_and(|r| r.stage.is_none())
                || self.systems.iter().all(|s| {
                    !s.started
                        || s.phase == SystemPhase::RolledBack
                        || s.step
                            .as_ref()
                            .is_some_and(|a| a.step == StepKind::Stop && a.result.is_some())
                }))
    }

    pub fn system(&self, id: &str) -> Option<&SystemState> {
        self.index.systems.get(id).map(|&i| &self.systems[i])
    }

    pub fn stage(&self, name: &str) -> Option<&StageState> {
        self.index.stages.get(name).map(|&i| &self.stages[i])
    }

    /// Systems a crash may have caught mid-step: `resume` re-probes them and
    /// starts them again only when they are not healthy.
    pub fn in_flight(&self) -> impl Iterator<Item = &SystemState> {
        self.systems.iter().filter(|s| {
            matches!(
                s.phase,
                SystemPhase::Verifying | SystemPhase::Starting | SystemPhase::Stopping
            )
        })
    }
}
