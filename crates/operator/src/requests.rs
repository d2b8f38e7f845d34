//! People's requests, read from a RestartRun's spec.
//!
//! The spec is the whole list of approvals and confirmations ever given, so
//! each entry is offered to the engine until it is acknowledged (recorded
//! as an event), and never again. Approvals need no memory: the engine
//! counts an approval once however often it arrives. Confirmations do: a
//! manual system confirmed at start needs a new confirmation for its manual
//! stop, so an entry must not be taken twice. Entries are known by position
//! and content; after an operator restart the journal tells which of them
//! were already recorded.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::watch;

use blackstart_engine::{Event, Record, Request, RequestSource};

use crate::crd::RestartRunSpec;

/// The RequestSource of one RestartRun: its latest spec.
#[derive(Debug)]
pub struct SpecRequests {
    spec: watch::Receiver<RestartRunSpec>,
    taken: Mutex<HashSet<String>>,
}

fn confirm_token(i: usize, system: &str, by: &str) -> String {
    format!("confirm/{i}/{system}/{by}")
}

impl SpecRequests {
    /// A source for the spec behind `spec`; `records` is the journal so far.
    pub fn new(spec: watch::Receiver<RestartRunSpec>, records: &[Record]) -> SpecRequests {
        // Each recorded confirmation accounts for the first matching entry.
        let mut taken = HashSet::new();
        let confirmations = spec.borrow().confirmations.clone();
        for r in records {
            if let Event::Confirmed { system, by } = &r.event {
                let first = confirmations.iter().enumerate().find(|(i, c)| {
                    &c.system == system
                        && &c.by == by
                        && !taken.contains(&confirm_token(*i, system, by))
                });
                if let Some((i, c)) = first {
                    taken.insert(confirm_token(i, &c.system, &c.by));
                }
            }
        }
        SpecRequests {
            spec,
            taken: Mutex::new(taken),
        }
    }
}

impl RequestSource for SpecRequests {
    fn pending(&self) -> Result<Vec<(String, Request)>, String> {
        let spec = self.spec.borrow().clone();
        let taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let approvals = spec.approvals.into_iter().enumerate().map(|(i, a)| {
            (
                format!("approve/{i}/{}/{}", a.stage, a.by),
                Request::Approve {
                    stage: a.stage,
                    by: a.by,
                    role: a.role,
                },
            )
        });
        let confirmations = spec.confirmations.into_iter().enumerate().map(|(i, c)| {
            (
                confirm_token(i, &c.system, &c.by),
                Request::Confirm {
                    system: c.system,
                    by: c.by,
                },
            )
        });
        Ok(approvals
            .chain(confirmations)
            .filter(|(token, _)| !taken.contains(token))
            .collect())
    }

    fn ack(&self, token: &str) -> Result<(), String> {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned());
        Ok(())
    }
}
