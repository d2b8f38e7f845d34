//! Requests from people to a run: approvals, confirmations and retries.
//!
//! The journal has one writer, the process that holds its lock, so a second
//! terminal cannot append to it. It drops a request into the run's inbox
//! instead (`STATE_DIR/runs/RUN/inbox/`, one file each, written whole and
//! renamed into place), and the engine, which polls its [`RequestSource`],
//! records each request as an event and only then acknowledges it. A crash
//! in between repeats a request on resume, which is harmless: approvals and
//! confirmations count once however often they arrive. The operator's
//! source is the RestartRun's spec instead of a directory.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, Kind, Proof};
use crate::journal::RunDir;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    Approve {
        stage: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// The gate fails: a person of a role it needs said no.
    Deny {
        stage: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        reason: String,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    Confirm {
        system: String,
        by: String,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// Start a system again whose last start a crash left unknown.
    Retry {
        system: String,
        by: String,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// Pause the run: no new starts; steps under way finish.
    Pause {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// Roll the whole run back, from the process that drives it.
    Rollback {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A held site starts again (the process that takes it drives the run).
    RetrySite {
        site: String,
        by: String,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
    /// A key decides nothing more in this run.
    Revoke {
        key: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Proof::is_empty")]
        proof: Proof,
    },
}

impl Request {
    /// The decision it asks for, in the words [`crate::decision`] checks.
    pub fn decision(&self) -> Decision {
        // Pause and rollback are about the whole run: no stage or system.
        let whole_run = String::new();
        let (kind, subject, by, role, reason, proof) = match self {
            Request::Approve {
                stage,
                by,
                role,
                proof,
            } => (Kind::Approve, stage, by, role.clone(), None, proof),
            Request::Deny {
                stage,
                by,
                role,
                reason,
                proof,
            } => (
                Kind::Deny,
                stage,
                by,
                role.clone(),
                Some(reason.clone()),
                proof,
            ),
            Request::Confirm { system, by, proof } => {
                (Kind::Confirm, system, by, None, None, proof)
            }
            Request::Retry { system, by, proof } => (Kind::Retry, system, by, None, None, proof),
            Request::RetrySite { site, by, proof } => {
                (Kind::RetrySite, site, by, None, None, proof)
            }
            Request::Pause { by, reason, proof } => {
                (Kind::Pause, &whole_run, by, None, reason.clone(), proof)
            }
            Request::Rollback { by, reason, proof } => {
                (Kind::Rollback, &whole_run, by, None, reason.clone(), proof)
            }
            Request::Revoke {
                key,
                by,
                reason,
                proof,
            } => (Kind::Revoke, key, by, None, reason.clone(), proof),
        };
        Decision {
            kind,
            subject: subject.clone(),
            by: by.clone(),
            role,
            reason,
            proof: proof.clone(),
        }
    }
}

/// A request not yet acknowledged: its token, and the request or why it
/// cannot be read.
pub type Pending = (String, Result<Request, String>);

/// Where a run's requests come from.
pub trait RequestSource: Send + Sync {
    /// Requests not yet acknowledged, oldest first, each with a token to
    /// ack; one that cannot be read is an `Err` saying why, so that it is
    /// reported and put aside without holding up the others.
    fn pending(&self) -> Result<Vec<Pending>, String>;
    /// The request is recorded; it must not come back.
    fn ack(&self, token: &str) -> Result<(), String>;
    /// A request that could not be read is kept out of the way, for a
    /// person to look at; by default it is simply acknowledged.
    fn set_aside(&self, token: &str) -> Result<(), String> {
        self.ack(token)
    }
}

/// The CLI's request source: a directory of JSON files.
#[derive(Debug, Clone)]
pub struct Inbox {
    dir: PathBuf,
}

impl Inbox {
    pub fn new(run: &RunDir) -> Inbox {
        Inbox {
            dir: run.dir.join("inbox"),
        }
    }

    /// Drops a request in, atomically: a reader sees the whole file or none.
    pub fn submit(&self, request: &Request) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{nanos:024}-{}.json", std::process::id());
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let body = serde_json::to_vec(request).map_err(io::Error::other)?;
        std::fs::write(&tmp, body)?;
        let path = self.dir.join(name);
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    fn read_one(path: &Path) -> Result<Request, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a request: {e}", path.display()))
    }
}

impl RequestSource for Inbox {
    fn pending(&self) -> Result<Vec<Pending>, String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", self.dir.display())),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json") && !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| {
                let r = Inbox::read_one(&self.dir.join(&n));
                (n, r)
            })
            .collect())
    }

    fn ack(&self, token: &str) -> Result<(), String> {
        match std::fs::remove_file(self.dir.join(token)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", self.dir.join(token).display())),
        }
    }

    /// Moves an unreadable request to `inbox/refused/`, out of the way.
    fn set_aside(&self, token: &str) -> Result<(), String> {
        let aside = self.dir.join("refused");
        std::fs::create_dir_all(&aside).map_err(|e| format!("{}: {e}", aside.display()))?;
        match std::fs::rename(self.dir.join(token), aside.join(token)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", self.dir.join(token).display())),
        }
    }
}
