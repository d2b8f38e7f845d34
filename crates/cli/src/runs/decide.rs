//! People's decisions about a run, from any terminal: `approve`, `deny`,
//! `confirm`, `retry`. Each is checked here as the engine will check it
//! (`blackstart_engine::decision`, the one place that decides), so a person
//! hears "no, and why" at once, with exit 2; then it is signed if asked and
//! left in the run's inbox for the process that drives the run (or the
//! next `resume`), which checks it again when it takes it.

use std::path::{Path, PathBuf};
use std::process::Command;

use blackstart_engine::decision::{self, Decision, Kind, Proof};
use blackstart_engine::journal;
use blackstart_engine::{Inbox, Request, RunDir, RunState};
use blackstart_model::Plan;

use super::*;
use crate::{CliError, exit};

/// How a decision is signed, for a member whose key the playbook enrols.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Signing {
    /// Sign with this key: a private key file, or a `.pub` whose private
    /// half ssh-agent holds (hardware keys too). Runs `ssh-keygen -Y sign`.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["signature", "message"])]
    pub key: Option<PathBuf>,
    /// A signature of `--message`'s text made elsewhere:
    /// `ssh-keygen -Y sign -n blackstart -f KEY FILE`.
    #[arg(long, value_name = "FILE", conflicts_with = "message")]
    pub signature: Option<PathBuf>,
    /// Print the exact text to sign, and do nothing else.
    #[arg(long)]
    pub message: bool,
    /// A note the decision carries (a ticket, the evidence looked at); the
    /// signature covers it and the audit shows it.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

/// Leaves a person's request in the run's inbox, for the process that
/// drives the run (or the next `resume`) to record.
fn hand_over(dir: &RunDir, request: &Request) -> Result<(), CliError> {
    Inbox::new(dir)
        .submit(request)
        .map(|_| ())
        .map_err(|source| CliError::Write {
            path: dir.dir.display().to_string(),
            source,
        })
}

/// What to do with a decision once it is checked.
pub enum Prepared {
    /// `--message`: the text to sign, printed, nothing handed over.
    Message(String),
    /// Checked (and signed, if it had to be): ready to hand over.
    Ready(Request),
}

/// Checks `d` against the plan and the state, signs it as `signing` says,
/// and checks it whole (the signature too). Every refusal is exit 2.
pub fn prepare(
    plan: &Plan,
    state: &RunState,
    mut d: Decision,
    signing: &Signing,
) -> Result<Prepared, CliError> {
    d.proof.note = signing.note.clone();
    let pending = decision::pending(plan, state, &d).map_err(CliError::Usage)?;
    d.role = pending.role.clone();
    let text = decision::message(&state.run, &plan.playbook_hash, &d, pending.wait);
    if signing.message {
        return Ok(Prepared::Message(text));
    }
    d.proof.wait = Some(pending.wait);
    d.proof.signature = match (&signing.key, &signing.signature) {
        (Some(key), _) => Some(sign(key, &text)?),
        (None, Some(file)) => {
            Some(
                std::fs::read_to_string(file).map_err(|source| CliError::Read {
                    path: file.display().to_string(),
                    source,
                })?,
            )
        }
        (None, None) => None,
    };
    // The whole check, signature included, as the engine will make it.
    decision::take(plan, state, &d).map_err(CliError::Usage)?;
    Ok(Prepared::Ready(request(d)))
}

/// The inbox request for a checked decision.
fn request(d: Decision) -> Request {
    let Decision {
        kind,
        subject,
        by,
        role,
        reason,
        proof,
    } = d;
    match kind {
        Kind::Approve => Request::Approve {
            stage: subject,
            by,
            role,
            proof,
        },
        Kind::Deny => Request::Deny {
            stage: subject,
            by,
            role,
            reason: reason.unwrap_or_default(),
            proof,
        },
        Kind::Confirm => Request::Confirm {
            system: subject,
            by,
            proof,
        },
        Kind::RetrySite => Request::RetrySite {
            site: subject,
            by,
            proof,
        },
        Kind::Retry => Request::Retry {
            system: subject,
            by,
            proof,
        },
        Kind::Pause => Request::Pause { by, reason, proof },
        Kind::Rollback => Request::Rollback { by, reason, proof },
        Kind::Revoke => Request::Revoke {
            key: subject,
            by,
            reason,
            proof,
        },
    }
}

/// Signs `text` with `ssh-keygen -Y sign`, which reads private key files
/// and asks ssh-agent for the private half of a `.pub` (hardware keys
/// included); returns the armored signature.
fn sign(key: &Path, text: &str) -> Result<String, CliError> {
    let dir = std::env::temp_dir().join(format!("blackstart-sign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| CliError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let file = dir.join("decision");
    let written = std::fs::write(&file, text).map_err(|source| CliError::Write {
        path: file.display().to_string(),
        source,
    });
    let result = written.and_then(|()| {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", decision::NAMESPACE, "-f"])
            .arg(key)
            .arg(&file)
            .output()
            .map_err(|e| {
                CliError::Usage(format!(
                    "cannot run ssh-keygen to sign ({e}); install OpenSSH's client, or sign elsewhere: --message, then --signature FILE"
                ))
            })?;
        if !out.status.success() {
            return Err(CliError::Usage(format!(
                "ssh-keygen could not sign with {}: {}",
                key.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let sig = file.with_extension("sig");
        std::fs::read_to_string(&sig).map_err(|source| CliError::Read {
            path: sig.display().to_string(),
            source,
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What a person reads after a decision was handed over.
fn handed(d: &Request, run: &str) -> String {
    let signed = match d {
        Request::Approve { proof, .. }
        | Request::Deny { proof, .. }
        | Request::Confirm { proof, .. }
        | Request::Retry { proof, .. }
        | Request::Revoke { proof, .. }
        | Request::RetrySite { proof, .. }
        | Request::Pause { proof, .. }
        | Request::Rollback { proof, .. } => signed(proof),
    };
    let what = match d {
        Request::Approve {
            stage, by, role, ..
        } => format!(
            "approval of `{stage}` by {by}{}",
            role.as_deref()
                .map(|r| format!(" as {r}"))
                .unwrap_or_default()
        ),
        Request::Deny { stage, by, .. } => format!("denial of `{stage}` by {by}"),
        Request::Confirm { system, by, .. } => format!("confirmation of `{system}` by {by}"),
        Request::Retry { system, by, .. } => format!("retry of `{system}` by {by}"),
        Request::RetrySite { site, by, .. } => format!("retry of site {site} by {by}"),
        Request::Pause { by, .. } => format!("pause by {by}"),
        Request::Rollback { by, .. } => format!("rollback by {by}"),
        Request::Revoke { key, by, .. } => format!("revocation of key {key} by {by}"),
    };
    format!(
        "{what} ({signed}) handed to run {run}; the running apply or the next resume records it"
    )
}

fn signed(proof: &Proof) -> &'static str {
    if proof.signed() { "signed" } else { "unsigned" }
}

/// Whether a process drives the run now.
pub fn driven(state_dir: &Path, run: &str) -> Result<bool, CliError> {
    Ok(journal::driven(&run_dir(state_dir, run)?) == Some(true))
}

/// `pause RUN --by NAME`: handed to the process that drives the run.
pub fn pause(state_dir: &Path, run: &str, d: Decision, signing: &Signing) -> Result<u8, CliError> {
    if !driven(state_dir, run)? {
        let state = folded(&journal::read(&run_dir(state_dir, run)?)?)?;
        return Err(CliError::Usage(format!(
            "no process drives run {run} ({:?}); there is nothing to pause{}",
            state.phase,
            if state.phase.is_final() {
                String::new()
            } else {
                format!(": it stays as it is until `blackstart resume {run}`")
            }
        )));
    }
    decide(state_dir, run, d, signing)
}

/// `approve`, `deny`, `confirm`, `retry` of a run in the state directory;
/// and `pause` or `rollback` handed to the process that drives it.
pub fn decide(state_dir: &Path, run: &str, d: Decision, signing: &Signing) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let records = journal::read(&dir)?;
    let state = folded(&records)?;
    let plan = journal_plan(&records)?;
    match prepare(plan, &state, d, signing)? {
        Prepared::Message(text) => {
            crate::write_output(None, &text)?;
        }
        Prepared::Ready(request) => {
            hand_over(&dir, &request)?;
            note(&handed(&request, run));
        }
    }
    Ok(exit::SUCCESS)
}
