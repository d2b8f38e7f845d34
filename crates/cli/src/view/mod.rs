//! A run as the incident room sees it: one value computed from the journal
//! (and the plan in its first record) that every room view renders.
//!
//! `serve`'s JSON and page, the auditor's HTML report and `status`' lines
//! about a waiting gate all read this one value, so the page, the report
//! and the terminal cannot say different things about the same run. It is
//! derived, never stored: like the run's state, it is a fold of the
//! journal, and a view that reads it again later sees the same.

pub mod html;
pub mod svg;

use std::collections::HashMap;
use std::time::SystemTime;

use serde::Serialize;

use blackstart_engine::journal::Record;
use blackstart_engine::state::StageState;
use blackstart_engine::{Event, RunPhase, RunState, StagePhase, SystemPhase, WaitingFor};
use blackstart_model::playbook::Action;
use blackstart_model::{Plan, PlannedStage};

/// The whole view of one run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub run: String,
    pub playbook: String,
    pub playbook_hash: String,
    pub drill: bool,
    pub phase: RunPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// No process drives a run that should be moving (file journals only).
    pub interrupted: bool,
    /// The journal's last record: what a reviewer keeps to check it later.
    pub head: Head,
    /// When the run began and when its journal last moved (RFC 3339).
    pub started_at: String,
    pub updated_at: String,
    /// Seconds from the run's start to its last event.
    pub elapsed: f64,
    /// The plan's estimate of the whole run, in seconds.
    pub estimate: f64,
    pub sites: Vec<SiteView>,
    pub stages: Vec<StageView>,
    pub systems: Vec<SystemView>,
    /// Every decision a person took, or tried to and was refused.
    pub decisions: Vec<DecisionView>,
    /// Systems that failed, with what they said last.
    pub failures: Vec<Failure>,
    /// The rollback that began, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<blackstart_engine::state::RollbackState>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteView {
    pub id: String,
    /// The playbook's name for it; its id when it has none.
    pub name: String,
    /// Why a failure holds it, when one does (`failureDomain: site`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageView {
    pub name: String,
    pub phase: StagePhase,
    pub layers: u32,
    /// The plan's estimate, seconds from the run's start.
    pub estimated_start: f64,
    pub estimated_duration: f64,
    /// What happened, seconds from the run's start: when it began running
    /// and when it ended (none while it runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub began: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<f64>,
    pub approvals: Vec<blackstart_engine::state::Approval>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denied: Option<blackstart_engine::state::Denial>,
    /// What its gate still needs, while it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<GateNeeds>,
}

/// What a waiting gate still needs before the run goes on.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateNeeds {
    /// The soak and how much of it is left, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak_left: Option<f64>,
    /// Each role not yet approved, who may fill it, and the command.
    pub roles: Vec<RoleNeeded>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleNeeded {
    pub role: String,
    /// Members who may approve and have not; none when the playbook names
    /// no members (anyone may).
    pub members: Vec<Member>,
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub name: String,
    /// Whether the member signs with a key (and must, for a real run).
    pub signs: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemView {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub site: String,
    pub stage: String,
    pub phase: SystemPhase,
    pub layer: u32,
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A person's step it waits for: the instruction and the command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<StepNeeded>,
    pub estimated_start: f64,
    pub expected: f64,
    /// When its start began and when it was Healthy (or ended otherwise),
    /// seconds from the run's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub began: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<f64>,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepNeeded {
    pub waiting_for: WaitingFor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub command: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView {
    pub seq: u64,
    pub at: String,
    /// approve, deny, confirm, retry, pause, rollback, revoke, or
    /// `refused` for one that was not taken.
    pub kind: String,
    pub subject: String,
    pub by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `SHA256:…` of the key that signed it; none when unsigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub signed: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub system: String,
    pub site: String,
    pub stage: String,
    pub at: String,
    pub reason: String,
    /// The last output of its steps (exec output, or the last probe's
    /// error), as the journal kept it: truncated and redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

fn at_secs(at: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(at).ok()
}

/// Builds the view of a run from its journal; `interrupted` is the
/// caller's to know (a file journal's lock).
pub fn build(records: &[Record], state: &RunState, plan: &Plan, interrupted: bool) -> RunView {
    let t0 = records.first().and_then(|r| at_secs(&r.at));
    let offset = |at: &str| -> f64 {
        match (t0, at_secs(at)) {
            (Some(t0), Some(t)) => t.duration_since(t0).map_or(0.0, |d| d.as_secs_f64()),
            _ => 0.0,
        }
    };
    let planned: HashMap<&str, (&PlannedStage, &blackstart_model::PlannedSystem)> = plan
        .stages
        .iter()
        .flat_map(|st| st.systems.iter().map(move |s| (s.id.as_str(), (st, s))))
        .collect();

    // What the journal says happened to each stage and system, and when.
    let mut stage_times: HashMap<&str, (Option<f64>, Option<f64>)> = HashMap::new();
    let mut system_times: HashMap<&str, (Option<f64>, Option<f64>)> = HashMap::new();
    let mut outputs: HashMap<&str, (&str, Option<i32>)> = HashMap::new();
    let mut failed_at: HashMap<&str, &str> = HashMap::new();
    let mut decisions = Vec::new();
    for r in records {
        match &r.event {
            Event::Stage { stage, phase, .. } => {
                let t = stage_times.entry(stage).or_default();
                match phase {
                    StagePhase::Running => {
                        t.0.get_or_insert(offset(&r.at));
                        t.1 = None;
                    }
                    StagePhase::Gate | StagePhase::Pending => {}
                    _ => t.1 = Some(offset(&r.at)),
                }
            }
            Event::System { system, phase, .. } => {
                let t = system_times.entry(system).or_default();
                match phase {
                    SystemPhase::Verifying | SystemPhase::Starting => {
                        t.0.get_or_insert(offset(&r.at));
                        t.1 = None;
                    }
                    SystemPhase::Pending => {}
                    SystemPhase::Failed => {
                        t.1 = Some(offset(&r.at));
                        failed_at.insert(system, &r.at);
                    }
                    _ => t.1 = Some(offset(&r.at)),
                }
            }
            Event::Output {
                system,
                output,
                exit_code,
                ..
            } => {
                outputs.insert(system, (output, *exit_code));
            }
            Event::Refused {
                decision,
                subject,
                by,
                reason,
            } => decisions.push(DecisionView {
                seq: r.seq,
                at: r.at.clone(),
                kind: format!("refused {decision}"),
                subject: subject.clone(),
                by: by.clone(),
                role: None,
                reason: Some(reason.clone()),
                key: None,
                signed: false,
            }),
            other => {
                if let Some(d) = blackstart_engine::decision::recorded(other) {
                    decisions.push(DecisionView {
                        seq: r.seq,
                        at: r.at.clone(),
                        kind: d.kind.as_str().to_owned(),
                        subject: d.subject,
                        by: d.by,
                        role: d.role,
                        reason: d.reason,
                        signed: d.proof.signed(),
                        key: d.proof.key,
                    });
                }
            }
        }
    }

    let run = state.run.as_str();
    let mut sites: Vec<SiteView> = Vec::new();
    for s in &state.systems {
        if !sites.iter().any(|v| v.id == s.site) {
            sites.push(SiteView {
                id: s.site.clone(),
                name: plan
                    .site_names
                    .get(&s.site)
                    .cloned()
                    .unwrap_or_else(|| s.site.clone()),
                held: state
                    .held
                    .iter()
                    .find(|h| h.site == s.site)
                    .map(|h| format!("held in stage {}: {}", h.stage, h.reason)),
            });
        }
    }

    let stages = state
        .stages
        .iter()
        .map(|st| {
            let planned = plan.stages.iter().find(|p| p.name == st.name);
            let (began, ended) = stage_times
                .get(st.name.as_str())
                .copied()
                .unwrap_or_default();
            StageView {
                name: st.name.clone(),
                phase: st.phase,
                layers: planned.map_or(0, |p| p.layers),
                estimated_start: planned.map_or(0.0, |p| p.estimated_start.as_secs_f64()),
                estimated_duration: planned.map_or(0.0, |p| p.estimated_duration.as_secs_f64()),
                began,
                ended,
                approvals: st.approvals.clone(),
                denied: st.denied.clone(),
                waiting: match (st.phase, planned) {
                    (StagePhase::Gate, Some(p)) => Some(gate_needs(plan, p, st, records, run)),
                    _ => None,
                },
            }
        })
        .collect();

    let mut failures = Vec::new();
    let systems = state
        .systems
        .iter()
        .map(|s| {
            let p = planned.get(s.id.as_str()).map(|(_, p)| *p);
            let (began, ended) = system_times.get(s.id.as_str()).copied().unwrap_or_default();
            let output = outputs.get(s.id.as_str());
            if s.phase == SystemPhase::Failed {
                failures.push(Failure {
                    system: s.id.clone(),
                    site: s.site.clone(),
                    stage: s.stage.clone(),
                    at: failed_at
                        .get(s.id.as_str())
                        .map(|a| (*a).to_owned())
                        .unwrap_or_default(),
                    reason: s.reason.clone().unwrap_or_default(),
                    output: output.map(|(o, _)| (*o).to_owned()),
                    exit_code: output.and_then(|(_, c)| *c),
                });
            }
            SystemView {
                id: s.id.clone(),
                name: p.and_then(|p| p.name.clone()),
                site: s.site.clone(),
                stage: s.stage.clone(),
                phase: s.phase,
                layer: p.map_or(0, |p| p.layer),
                depends_on: p.map_or_else(Vec::new, |p| {
                    p.depends_on.iter().map(ToString::to_string).collect()
                }),
                reason: s.reason.clone(),
                waiting: s.waiting_for.map(|w| step_needed(run, s, p, w)),
                estimated_start: p.map_or(0.0, |p| p.estimated_start.as_secs_f64()),
                expected: p.map_or(0.0, |p| p.expected_duration.as_secs_f64()),
                began,
                ended,
                attempts: s.attempts,
            }
        })
        .collect();

    let first = records.first();
    let last = records.last();
    RunView {
        run: state.run.clone(),
        playbook: state.playbook.clone(),
        playbook_hash: state.playbook_hash.clone(),
        drill: state.drill,
        phase: state.phase,
        reason: state.reason.clone(),
        interrupted,
        head: Head {
            seq: last.map_or(0, |r| r.seq),
            hash: last.map(|r| r.hash.clone()).unwrap_or_default(),
        },
        started_at: first.map(|r| r.at.clone()).unwrap_or_default(),
        updated_at: last.map(|r| r.at.clone()).unwrap_or_default(),
        elapsed: last.map_or(0.0, |r| offset(&r.at)),
        estimate: plan.estimated_duration.as_secs_f64(),
        sites,
        stages,
        systems,
        decisions,
        failures,
        rollback: state.rollback.clone(),
    }
}

/// The person's step a system waits for: its instruction (a manual start
/// or stop) and the command that says it is done.
fn step_needed(
    run: &str,
    s: &blackstart_engine::state::SystemState,
    planned: Option<&blackstart_model::PlannedSystem>,
    waiting_for: WaitingFor,
) -> StepNeeded {
    let action = planned.and_then(|p| {
        if s.phase == SystemPhase::Stopping {
            p.stop.as_ref()
        } else {
            Some(&p.start)
        }
    });
    let manual = match action {
        Some(Action::Manual(m)) if waiting_for == WaitingFor::ManualStep => Some(m),
        _ => None,
    };
    StepNeeded {
        waiting_for,
        instruction: manual.map(|m| m.instruction.clone()),
        role: manual.and_then(|m| m.role.clone()),
        command: format!("blackstart confirm {run} {} --by NAME", s.id),
    }
}

/// What a waiting gate still needs: the soak left, and each role not yet
/// approved with who may fill it and the command that does.
pub fn gate_needs(
    plan: &Plan,
    planned: &PlannedStage,
    stage: &StageState,
    records: &[Record],
    run: &str,
) -> GateNeeds {
    let mut needs = GateNeeds::default();
    if let (Some(soak), Some(since)) = (planned.gate.soak, stage.gate_since) {
        let began = records
            .iter()
            .rev()
            .find(|r| r.seq == since)
            .and_then(|r| at_secs(&r.at));
        if let Some(began) = began {
            let elapsed = began.elapsed().unwrap_or_default();
            needs.soak = Some(soak.as_secs_f64());
            needs.soak_left = Some(soak.to_std().saturating_sub(elapsed).as_secs_f64());
        }
    }
    for role in stage.roles_missing(&planned.gate.approvals) {
        let members = plan
            .roles
            .as_ref()
            .and_then(|roles| roles.iter().find(|r| &r.name == role))
            .map(|r| {
                r.members
                    .iter()
                    .filter(|m| !stage.approvals.iter().any(|a| a.by == m.name))
                    .map(|m| Member {
                        name: m.name.clone(),
                        signs: m.key.is_some(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        needs.roles.push(RoleNeeded {
            role: role.clone(),
            members,
            command: format!(
                "blackstart approve {run} {} --by NAME --role {role}",
                stage.name
            ),
        });
    }
    needs
}

impl GateNeeds {
    /// The needs as `status` prints them, one line each.
    pub fn lines(&self, soak_text: Option<&str>) -> Vec<String> {
        let mut lines = Vec::new();
        if let (Some(left), Some(soak)) = (self.soak_left, soak_text) {
            if left <= 0.0 {
                lines.push(format!("soak of {soak}: done"));
            } else {
                lines.push(format!(
                    "soak of {soak}: {} left",
                    humantime::format_duration(std::time::Duration::from_secs(left as u64))
                ));
            }
        }
        for r in &self.roles {
            let who = if r.members.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = r
                    .members
                    .iter()
                    .map(|m| {
                        if m.signs {
                            format!("{} (signs)", m.name)
                        } else {
                            m.name.clone()
                        }
                    })
                    .collect();
                format!(" by {}", names.join(", "))
            };
            lines.push(format!(
                "waits for approval as {}{who}: `{}`",
                r.role, r.command
            ));
        }
        lines
    }
}
