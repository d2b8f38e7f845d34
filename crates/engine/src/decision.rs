//! People's decisions: who may make them, when, and whether a signed one
//! is what it says.
//!
//! Longer than most files, and kept whole: every kind of decision (approve,
//! deny, confirm, retry, revoke, pause, rollback, a site's retry) is checked
//! here and nowhere else, so who may decide what, and when, has one source.
//! Its tests are in `decision/tests.rs`.
//!
//! One place decides, for every way a decision arrives: the CLI asks here
//! before it hands a request over (so a person hears "no" at once, exit 2),
//! the engine asks again when it takes the request (the state may have
//! moved, and an inbox file can be written by anyone), the operator's
//! requests from a RestartRun's spec go through the engine alike, and
//! `audit --verify` re-checks every signature in a journal against the
//! plan's roles.
//!
//! A signature is made over [`message`]: deterministic text that binds the
//! run, the playbook's hash, the decision, what it is about, the role, the
//! person, an optional note and the journal sequence number of the wait it
//! answers. It is good for that one wait only: a signature copied to another
//! run, stage, role, decision or a later wait does not verify. Signatures are
//! SSH signatures (`ssh-keygen -Y sign -n blackstart`), verified in process,
//! offline: during a cyber incident the identity provider may be down or
//! not trusted, and the keys were reviewed with the playbook.

use serde::{Deserialize, Serialize};
use ssh_key::{HashAlg, PublicKey, SshSig};

use blackstart_model::Plan;
use blackstart_model::playbook::{Action, Role};

use crate::event::{Event, StagePhase, SystemPhase};
use crate::state::RunState;

/// The SSH signature namespace of blackstart's decisions.
pub const NAMESPACE: &str = "blackstart";

/// What makes a decision checkable: the wait it answers, a note, and from
/// a member with an enrolled key, that key's fingerprint and the signature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proof {
    /// The journal sequence number at which the gate or the manual step
    /// began waiting: what the signature is good for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `SHA256:…` of the key that signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The armored SSH signature (`-----BEGIN SSH SIGNATURE-----`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl Proof {
    pub fn is_empty(&self) -> bool {
        self == &Proof::default()
    }

    pub fn signed(&self) -> bool {
        self.signature.is_some()
    }
}

/// The kinds of decision, as the message and the audit name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Approve,
    Deny,
    Confirm,
    Retry,
    /// Of the whole run, from any terminal: no wait to answer.
    Pause,
    Rollback,
    /// A key is no longer taken: its subject is the key's fingerprint.
    Revoke,
    /// A held site (`failureDomain: site`) is started again: its subject
    /// is the site.
    RetrySite,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Approve => "approve",
            Kind::Deny => "deny",
            Kind::Confirm => "confirm",
            Kind::Retry => "retry",
            Kind::Pause => "pause",
            Kind::Rollback => "rollback",
            Kind::Revoke => "revoke",
            Kind::RetrySite => "retry",
        }
    }

    /// A stage's gate (approve, deny) or a system (confirm, retry).
    fn subject(self) -> &'static str {
        match self {
            Kind::Approve | Kind::Deny => "stage",
            Kind::Confirm | Kind::Retry => "system",
            Kind::Pause | Kind::Rollback => "run",
            Kind::Revoke => "key",
            Kind::RetrySite => "site",
        }
    }
}

/// One decision, as a person asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub kind: Kind,
    /// The stage (approve, deny) or the system (confirm, retry).
    pub subject: String,
    pub by: String,
    /// The role it is made in; for approvals, resolved from the gate when
    /// it needs only one.
    pub role: Option<String>,
    /// Deny only: why.
    pub reason: Option<String>,
    pub proof: Proof,
}

impl Decision {
    /// A decision with no role, reason or proof yet.
    pub fn new(kind: Kind, subject: &str, by: &str) -> Decision {
        Decision {
            kind,
            subject: subject.to_owned(),
            by: by.to_owned(),
            role: None,
            reason: None,
            proof: Proof::default(),
        }
    }
}

/// The bytes a signature covers. Every value is written as a JSON string,
/// so no text (a note with a newline) can make two decisions read alike.
pub fn message(run: &str, playbook_hash: &str, d: &Decision, wait: u64) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let mut m = String::from("blackstart decision v1\n");
    m.push_str(&format!("run: {}\n", q(run)));
    m.push_str(&format!("playbook: {}\n", q(playbook_hash)));
    m.push_str(&format!("decision: {}\n", d.kind.as_str()));
    m.push_str(&format!("{}: {}\n", d.kind.subject(), q(&d.subject)));
    m.push_str(&format!("role: {}\n", q(d.role.as_deref().unwrap_or(""))));
    m.push_str(&format!("by: {}\n", q(&d.by)));
    m.push_str(&format!("wait: {wait}\n"));
    if let Some(reason) = &d.reason {
        m.push_str(&format!("reason: {}\n", q(reason)));
    }
    if let Some(note) = &d.proof.note {
        m.push_str(&format!("note: {}\n", q(note)));
    }
    m
}

/// What a decision needs before it can be signed: the role it counts for
/// and the wait it answers; or why it cannot be taken now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub role: Option<String>,
    pub wait: u64,
}

/// Checks a decision against the plan and the run's state, all but the
/// signature: the stage or system exists, is waiting for this decision
/// now, the person may make it (a member of the role, one role per gate).
pub fn pending(plan: &Plan, state: &RunState, d: &Decision) -> Result<Pending, String> {
    let run = &state.run;
    // A finished run can still be rolled back (a run whose failed stage
    // was rolled back keeps its earlier stages up); nothing else is
    // decided. What is left to stop is `RunState::nothing_to_roll_back`'s.
    let reopens = state.phase == crate::event::RunPhase::Degraded
        && match d.kind {
            // Whether the system may go again is `system_pending`'s to say.
            Kind::RetrySite | Kind::Retry => true,
            _ => false,
        };
    if state.phase.is_final() && d.kind != Kind::Rollback && !reopens {
        return Err(format!(
            "run {run} has ended ({:?}); there is nothing left to decide",
            state.phase
        ));
    }
    match d.kind {
        Kind::Approve | Kind::Deny => gate_pending(plan, state, d),
        Kind::Confirm | Kind::Retry => system_pending(plan, state, d),
        Kind::Pause | Kind::Rollback => run_pending(plan, state, d),
        Kind::RetrySite => {
            if !state.held.iter().any(|h| h.site == d.subject) {
                let held: Vec<&str> = state.held.iter().map(|h| h.site.as_str()).collect();
                return Err(format!(
                    "site {} is not held in run {}{}",
                    d.subject,
                    state.run,
                    if held.is_empty() {
                        String::new()
                    } else {
                        format!("; held: {}", held.join(", "))
                    }
                ));
            }
            if matches!(
                state.phase,
                crate::event::RunPhase::Running | crate::event::RunPhase::RollingBack
            ) {
                return Err(format!(
                    "run {} is {:?}: a held site is retried once the run has ended Degraded, or while it is paused",
                    state.run, state.phase
                ));
            }
            run_pending(plan, state, d)
        }
        Kind::Revoke => revoke_pending(plan, state, d),
    }
}

/// A key is revoked by a member of a role its owner is not in (so a
/// compromised laptop cannot keep its own key alive), signed like any
/// decision; the signature binds the journal's head, as the decision
/// answers no wait.
fn revoke_pending(plan: &Plan, state: &RunState, d: &Decision) -> Result<Pending, String> {
    let Some(roles) = roles_of(plan) else {
        return Err("the playbook enrols no keys; there is nothing to revoke".to_owned());
    };
    let fingerprint = &d.subject;
    if state.revoked.iter().any(|k| k == fingerprint) {
        return Err(format!("the key {fingerprint} is revoked already"));
    }
    let owner = roles
        .iter()
        .flat_map(|r| r.members.iter())
        .find(|m| {
            m.key
                .as_deref()
                .and_then(|k| PublicKey::from_openssh(k).ok())
                .is_some_and(|k| k.fingerprint(HashAlg::Sha256).to_string() == *fingerprint)
        })
        .map(|m| m.name.clone())
        .ok_or_else(|| {
            format!("no member's key in the playbook has the fingerprint {fingerprint}")
        })?;
    let in_role = |r: &Role, name: &str| r.member(name).is_some();
    let role = roles
        .iter()
        .find(|r| in_role(r, &d.by) && !in_role(r, &owner))
        .ok_or_else(|| {
            format!(
                "{} may not revoke {owner}'s key: only a member of a role {owner} is not in may",
                d.by
            )
        })?;
    Ok(Pending {
        role: Some(role.name.clone()),
        wait: state.head,
    })
}

/// Pause and rollback of the whole run: with `spec.roles`, from a member
/// of any role, in the first role of the playbook that names them (the
/// role the signature binds). They answer no wait: they bind the journal's
/// head.
fn run_pending(plan: &Plan, state: &RunState, d: &Decision) -> Result<Pending, String> {
    let role = match roles_of(plan) {
        None => None,
        Some(roles) => Some(
            roles
                .iter()
                .find(|r| r.member(&d.by).is_some())
                .map(|r| r.name.clone())
                .ok_or_else(|| {
                    format!(
                        "{} is a member of no role of the playbook; only members may {} run {}",
                        d.by,
                        d.kind.as_str(),
                        state.run
                    )
                })?,
        ),
    };
    Ok(Pending {
        role,
        wait: state.head,
    })
}

/// Decisions that answer no wait bind the journal's head when the message
/// was made: taken while no later decision of the same kind acted on the
/// run since (DESIGN.md, "Decisions without a wait").
fn binds_head(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Pause | Kind::Rollback | Kind::Revoke | Kind::RetrySite
    )
}

/// The journal head `d` was made at, checked: not ahead of the journal,
/// and not overtaken by a later decision of the same kind.
fn head_of(state: &RunState, d: &Decision, made_at: u64) -> Result<u64, String> {
    if made_at > state.head {
        return Err(format!(
            "the {} was made at journal seq {made_at}, but the journal of run {} ends at seq {}; decide again",
            d.kind.as_str(),
            state.run,
            state.head
        ));
    }
    let since = match d.kind {
        Kind::Pause => state.pause_asked,
        Kind::Rollback => state.rollback_asked,
        Kind::RetrySite => state.site_retried,
        _ => None,
    };
    if let Some(seq) = since.filter(|&seq| seq > made_at) {
        return Err(format!(
            "a {} was asked at journal seq {seq}, after this one was made (seq {made_at}); it is not taken twice",
            d.kind.as_str()
        ));
    }
    Ok(made_at)
}

fn gate_pending(plan: &Plan, state: &RunState, d: &Decision) -> Result<Pending, String> {
    let run = &state.run;
    let stage = &d.subject;
    let role = plan.approval_role(run, stage, d.role.clone())?;
    let st = state
        .stage(stage)
        .ok_or_else(|| format!("run {run} has no stage `{stage}`"))?;
    let planned = plan.stages.iter().find(|s| &s.name == stage);
    if st.phase != StagePhase::Gate {
        let healthy = state
            .systems
            .iter()
            .filter(|s| &s.stage == stage && s.phase == SystemPhase::Healthy)
            .count();
        let all = planned.map_or(0, |p| p.systems.len());
        return Err(format!(
            "stage `{stage}` is {:?} ({healthy} of {all} systems healthy); its gate takes decisions once all are healthy",
            st.phase
        ));
    }
    let unhealthy: Vec<&str> = state
        .systems
        .iter()
        .filter(|s| &s.stage == stage && state.gate_waits_for(s) && s.phase != SystemPhase::Healthy)
        .map(|s| s.id.as_str())
        .collect();
    if !unhealthy.is_empty() {
        return Err(format!(
            "stage `{stage}` has systems that are not healthy ({}); its gate takes decisions once all are",
            unhealthy.join(", ")
        ));
    }
    if d.kind == Kind::Approve {
        for a in &st.approvals {
            if a.by == d.by && a.role == role {
                return Err(format!(
                    "{} already approved stage `{stage}`{}",
                    d.by,
                    role.as_deref()
                        .map(|r| format!(" as {r}"))
                        .unwrap_or_default()
                ));
            }
            if a.by == d.by {
                return Err(format!(
                    "{} already approved stage `{stage}` as {}; one person fills at most one role of a gate",
                    d.by,
                    a.role.as_deref().unwrap_or("(no role)")
                ));
            }
        }
    }
    if let Some(r) = &role {
        member_of(plan, r, &d.by)?;
    }
    let wait = st
        .gate_since
        .ok_or_else(|| format!("stage `{stage}` has no recorded gate to decide"))?;
    Ok(Pending { role, wait })
}

fn system_pending(plan: &Plan, state: &RunState, d: &Decision) -> Result<Pending, String> {
    let run = &state.run;
    let id = &d.subject;
    let sys = state
        .system(id)
        .ok_or_else(|| format!("run {run} has no system `{id}`"))?;
    let reopen = d.kind == Kind::Retry && !sys.start_cut_short();
    let waits = match d.kind {
        Kind::Confirm => sys.waiting_for.is_some(),
        _ if reopen => {
            state.reopenable(sys)?;
            true
        }
        _ => true,
    };
    // What it answers: the person's wait, or the failure it starts again after.
    let wait = if reopen {
        sys.failed_at.unwrap_or(0)
    } else {
        sys.waiting_since.unwrap_or(0)
    };
    if !waits {
        return Err(format!(
            "`{id}` is {:?}{} and waits for no {}",
            sys.phase,
            sys.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            match d.kind {
                Kind::Confirm =>
                    "confirmation: `confirm` answers a manual step or a start a crash left unknown",
                _ =>
                    "retry: `retry` starts again a failed system, or one whose start a crash cut short",
            }
        ));
    }
    // Who may: the manual step's role; else any role of the stage's gate.
    let (stage, planned) = plan
        .systems()
        .find(|(_, s)| s.id == id)
        .ok_or_else(|| format!("run {run} has no system `{id}`"))?;
    let manual_role = [Some(&planned.start), planned.stop.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|a| match a {
            Action::Manual(m) => m.role.clone(),
            _ => None,
        });
    let role = match (&d.role, manual_role) {
        (Some(given), Some(needed)) if given != &needed => {
            return Err(format!(
                "`{id}` is confirmed by role `{needed}`, not `{given}`"
            ));
        }
        (_, Some(needed)) => Some(needed),
        (given, None) => given.clone(),
    };
    if plan.roles.is_some() {
        match &role {
            Some(r) => member_of(plan, r, &d.by)?,
            None => {
                let gate = &stage.gate.approvals;
                let role = gate
                    .iter()
                    .find(|r| member_of(plan, r, &d.by).is_ok())
                    .ok_or_else(|| {
                        format!(
                            "{} is in no role of stage `{}`'s gate ({}); only its members decide for `{id}`",
                            d.by,
                            stage.name,
                            gate.join(", ")
                        )
                    })?;
                return Ok(Pending {
                    role: Some(role.clone()),
                    wait,
                });
            }
        }
    }
    Ok(Pending { role, wait })
}

fn roles_of(plan: &Plan) -> Option<&[Role]> {
    plan.roles.as_deref()
}

/// Without `spec.roles` anyone is taken by name; with them, `by` must be a
/// member of `role`.
fn member_of(plan: &Plan, role: &str, by: &str) -> Result<(), String> {
    let Some(roles) = roles_of(plan) else {
        return Ok(());
    };
    let r = roles
        .iter()
        .find(|r| r.name == role)
        .ok_or_else(|| format!("role `{role}` is not declared in the playbook's roles"))?;
    if r.member(by).is_none() {
        let names: Vec<&str> = r.members.iter().map(|m| m.name.as_str()).collect();
        return Err(format!(
            "{by} is not a member of role `{role}`; its members: {}",
            names.join(", ")
        ));
    }
    Ok(())
}

/// The enrolled key of `by` in `role`, if the playbook enrols one.
fn key_of(plan: &Plan, role: Option<&str>, by: &str) -> Result<Option<PublicKey>, String> {
    let (Some(roles), Some(role)) = (roles_of(plan), role) else {
        return Ok(None);
    };
    let Some(member) = roles
        .iter()
        .find(|r| r.name == role)
        .and_then(|r| r.member(by))
    else {
        return Ok(None);
    };
    member
        .key
        .as_deref()
        .map(|k| PublicKey::from_openssh(k).map_err(|e| format!("the key of {by}: {e}")))
        .transpose()
}

/// Checks the signature, if the person's key requires one: `Ok` with the
/// key's fingerprint when signed, `Ok(None)` for an unsigned decision
/// that may be unsigned (no key enrolled).
pub fn verify(
    plan: &Plan,
    run: &str,
    d: &Decision,
    role: Option<&str>,
    wait: u64,
    revoked: &[String],
) -> Result<Option<String>, String> {
    let key = key_of(plan, role, &d.by)?;
    let signature = d.proof.signature.as_deref();
    let (key, armored) = match (key, signature) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(format!(
                "{} has no key enrolled in the playbook, so the signature cannot be verified; decide without one",
                d.by
            ));
        }
        (Some(_), None) => {
            return Err(format!(
                "{} has a key enrolled, so the decision must be signed: --key, or --signature with a signature of --message",
                d.by
            ));
        }
        (Some(k), Some(s)) => (k, s),
    };
    let sig =
        SshSig::from_pem(armored).map_err(|e| format!("the signature cannot be read: {e}"))?;
    if sig.namespace() != NAMESPACE {
        return Err(format!(
            "the signature is for namespace `{}`, not `{NAMESPACE}` (sign with -n {NAMESPACE})",
            sig.namespace()
        ));
    }
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if revoked.contains(&fingerprint) {
        return Err(format!(
            "the key {fingerprint} of {} was revoked in this run; it decides nothing more",
            d.by
        ));
    }
    if sig.public_key() != key.key_data() {
        return Err(format!(
            "the signature was made with another key than {}'s ({fingerprint})",
            d.by
        ));
    }
    let with_role = Decision {
        role: role.map(str::to_owned),
        ..d.clone()
    };
    let text = message(run, &plan.playbook_hash, &with_role, wait);
    key.verify(NAMESPACE, text.as_bytes(), &sig).map_err(|_| {
        format!(
            "the signature does not match this decision (run {run}, {} `{}`, role {}, wait {wait}): it was made for another run, {}, role, decision or wait",
            d.kind.subject(),
            d.subject,
            role.unwrap_or("-"),
            d.kind.subject()
        )
    })?;
    Ok(Some(fingerprint))
}

/// Takes a decision: checks it all, and returns the event that records it.
pub fn take(plan: &Plan, state: &RunState, d: &Decision) -> Result<Event, String> {
    let mut p = pending(plan, state, d)?;
    if binds_head(d.kind) {
        p.wait = head_of(state, d, d.proof.wait.unwrap_or(p.wait))?;
    } else if let Some(w) = d.proof.wait
        && w != p.wait
    {
        return Err(format!(
            "the decision answers the wait at journal seq {w}, but {} `{}` waits since seq {}; decide again",
            d.kind.subject(),
            d.subject,
            p.wait
        ));
    }
    // A drill rehearses the plan, not the keys: members may decide unsigned.
    let key = if state.drill && !state.require_signatures && !d.proof.signed() {
        None
    } else {
        verify(
            plan,
            &state.run,
            d,
            p.role.as_deref(),
            p.wait,
            &state.revoked,
        )?
    };
    let proof = Proof {
        wait: Some(p.wait),
        note: d.proof.note.clone(),
        key,
        signature: d.proof.signature.clone(),
    };
    let (subject, by) = (d.subject.clone(), d.by.clone());
    Ok(match d.kind {
        Kind::Approve => Event::Approved {
            stage: subject,
            by,
            role: p.role,
            proof,
        },
        Kind::Deny => Event::Denied {
            stage: subject,
            by,
            role: p.role,
            reason: d.reason.clone().unwrap_or_default(),
            proof,
        },
        Kind::Confirm => Event::Confirmed {
            system: subject,
            by,
            proof,
        },
        Kind::Retry => Event::RetryRequested {
            system: subject,
            by,
            proof,
        },
        Kind::Pause => Event::PauseRequested {
            by,
            reason: d.reason.clone(),
            role: p.role,
            proof,
        },
        Kind::Rollback => Event::RollbackRequested {
            by,
            reason: d.reason.clone(),
            role: p.role,
            proof,
        },
        Kind::Revoke => Event::KeyRevoked {
            key: subject,
            by,
            role: p.role,
            reason: d.reason.clone(),
            proof,
        },
        Kind::RetrySite => Event::SiteRetried {
            site: subject,
            by,
            role: p.role,
            proof,
        },
    })
}

/// The decision a journaled event records, as it was checked when taken;
/// `None` for events that are not people's decisions.
pub fn recorded(event: &Event) -> Option<Decision> {
    let (kind, subject, by, role, reason, proof) = match event {
        Event::Approved {
            stage,
            by,
            role,
            proof,
        } => (Kind::Approve, stage, by, role, None, proof),
        Event::Denied {
            stage,
            by,
            role,
            reason,
            proof,
        } => (Kind::Deny, stage, by, role, Some(reason), proof),
        Event::Confirmed { system, by, proof } => (Kind::Confirm, system, by, &None, None, proof),
        Event::RetryRequested { system, by, proof } => {
            (Kind::Retry, system, by, &None, None, proof)
        }
        Event::KeyRevoked {
            key,
            by,
            role,
            reason,
            proof,
        } => (Kind::Revoke, key, by, role, reason.as_ref(), proof),
        Event::SiteRetried {
            site,
            by,
            role,
            proof,
        } => (Kind::RetrySite, site, by, role, None, proof),
        Event::PauseRequested {
            by,
            reason,
            role,
            proof,
        } => (
            Kind::Pause,
            &String::new(),
            by,
            role,
            reason.as_ref(),
            proof,
        ),
        Event::RollbackRequested {
            by,
            reason,
            role,
            proof,
        } => (
            Kind::Rollback,
            &String::new(),
            by,
            role,
            reason.as_ref(),
            proof,
        ),
        _ => return None,
    };
    Some(Decision {
        kind,
        subject: subject.clone(),
        by: by.clone(),
        role: role.clone(),
        reason: reason.cloned(),
        proof: proof.clone(),
    })
}

/// For `audit --verify`: whether a journaled decision's signature still
/// verifies against the plan's roles, and whether one was owed.
pub fn recheck(
    plan: &Plan,
    run: &str,
    drill: bool,
    revoked: &[String],
    event: &Event,
) -> Result<(), String> {
    let Some(d) = recorded(event) else {
        return Ok(());
    };
    let Some(wait) = d.proof.wait else {
        // Recorded before decisions carried their wait (an earlier
        // release): nothing was signed.
        return Ok(());
    };
    if drill && !d.proof.signed() {
        return Ok(());
    }
    let (role, by) = (d.role.as_deref(), d.by.as_str());
    // Confirm and retry record no role: the signer's key is found in any
    // role that enrols them.
    let roles: Vec<Option<&str>> = match role {
        Some(r) => vec![Some(r)],
        None => match roles_of(plan) {
            Some(rs) => rs
                .iter()
                .filter(|r| r.member(by).is_some())
                .map(|r| Some(r.name.as_str()))
                .collect(),
            None => vec![None],
        },
    };
    let mut last = Ok(None);
    for r in roles {
        last = verify(plan, run, &d, r, wait, revoked);
        if last.is_ok() {
            break;
        }
    }
    last.map(|_| ())
}

#[cfg(test)]
mod tests;
