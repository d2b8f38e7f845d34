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

use crate::journal::RunDir;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    Approve {
        stage: String,
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    Confirm {
        system: String,
        by: String,
    },
    /// Start a system again whose last start a crash left unknown.
    Retry {
        system: String,
        by: String,
    },
}

/// Where a run's requests come from.
pub trait RequestSource: Send + Sync {
    /// Requests not yet acknowledged, oldest first, each with a token to ack.
    fn pending(&self) -> Result<Vec<(String, Request)>, String>;
    /// The request is recorded; it must not come back.
    fn ack(&self, token: &str) -> Result<(), String>;
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
    fn pending(&self) -> Result<Vec<(String, Request)>, String> {
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
        names
            .into_iter()
            .map(|n| Inbox::read_one(&self.dir.join(&n)).map(|r| (n, r)))
            .collect()
    }

    fn ack(&self, token: &str) -> Result<(), String> {
        match std::fs::remove_file(self.dir.join(token)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", self.dir.join(token).display())),
        }
    }
}
