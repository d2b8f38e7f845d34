//! People's requests, read from a RestartRun's spec.
//!
//! The spec is the whole list of approvals and confirmations ever given, so
//! each entry is offered to the engine until it is acknowledged (recorded
//! as an event: taken, or refused with why), and never again. A manual
//! system confirmed at start needs a new confirmation for its manual stop,
//! and an approval given too early is refused, not kept for later, so no
//! entry may be offered twice. Entries are known by position and content;
//! after an operator restart the journal tells which of them were already
//! recorded.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::watch;

use blackstart_engine::inbox::Pending;
use blackstart_engine::{Event, Record, Request, RequestSource};

use crate::crd::RestartRunSpec;

/// The RequestSource of one RestartRun: its latest spec.
#[derive(Debug)]
pub struct SpecRequests {
    spec: watch::Receiver<RestartRunSpec>,
    taken: Mutex<HashSet<String>>,
}

fn approve_token(i: usize, stage: &str, by: &str) -> String {
    format!("approve/{i}/{stage}/{by}")
}

fn deny_token(i: usize, stage: &str, by: &str) -> String {
    format!("deny/{i}/{stage}/{by}")
}

fn confirm_token(i: usize, system: &str, by: &str) -> String {
    format!("confirm/{i}/{system}/{by}")
}

impl SpecRequests {
    /// A source for the spec behind `spec`; `records` is the journal so far.
    pub fn new(spec: watch::Receiver<RestartRunSpec>, records: &[Record]) -> SpecRequests {
        // Each recorded decision (taken or refused) accounts for the first
        // matching entry.
        let mut taken = HashSet::new();
        let spec_now = spec.borrow().clone();
        let approvals: Vec<(String, &str, &str)> = spec_now
            .approvals
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    approve_token(i, &a.stage, &a.by),
                    a.stage.as_str(),
                    a.by.as_str(),
                )
            })
            .collect();
        let denials: Vec<(String, &str, &str)> = spec_now
            .denials
            .iter()
            .enumerate()
            .map(|(i, d)| {
                (
                    deny_token(i, &d.stage, &d.by),
                    d.stage.as_str(),
                    d.by.as_str(),
                )
            })
            .collect();
        let confirmations: Vec<(String, &str, &str)> = spec_now
            .confirmations
            .iter()
            .enumerate()
            .map(|(i, c)| {
                (
                    confirm_token(i, &c.system, &c.by),
                    c.system.as_str(),
                    c.by.as_str(),
                )
            })
            .collect();
        for r in records {
            let (entries, subject, by) = match &r.event {
                Event::Approved { stage, by, .. } => (&approvals, stage, by),
                Event::Denied { stage, by, .. } => (&denials, stage, by),
                Event::Confirmed { system, by, .. } => (&confirmations, system, by),
                Event::Refused {
                    decision,
                    subject,
                    by,
                    ..
                } => match decision.as_str() {
                    "approve" => (&approvals, subject, by),
                    "deny" => (&denials, subject, by),
                    "confirm" => (&confirmations, subject, by),
                    _ => continue,
                },
                _ => continue,
            };
            if let Some((token, _, _)) = entries
                .iter()
                .find(|(t, s, b)| s == subject && b == by && !taken.contains(t))
            {
                taken.insert(token.clone());
            }
        }
        SpecRequests {
            spec,
            taken: Mutex::new(taken),
        }
    }
}

impl RequestSource for SpecRequests {
    fn pending(&self) -> Result<Vec<Pending>, String> {
        let spec = self.spec.borrow().clone();
        let taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let approvals = spec.approvals.into_iter().enumerate().map(|(i, a)| {
            (
                approve_token(i, &a.stage, &a.by),
                Request::Approve {
                    proof: a.signed.proof(),
                    stage: a.stage,
                    by: a.by,
                    role: a.role,
                },
            )
        });
        let denials = spec.denials.into_iter().enumerate().map(|(i, d)| {
            (
                deny_token(i, &d.stage, &d.by),
                Request::Deny {
                    proof: d.signed.proof(),
                    stage: d.stage,
                    by: d.by,
                    role: d.role,
                    reason: d.reason,
                },
            )
        });
        let confirmations = spec.confirmations.into_iter().enumerate().map(|(i, c)| {
            (
                confirm_token(i, &c.system, &c.by),
                Request::Confirm {
                    proof: c.signed.proof(),
                    system: c.system,
                    by: c.by,
                },
            )
        });
        Ok(approvals
            .chain(denials)
            .chain(confirmations)
            .filter(|(token, _)| !taken.contains(token))
            .map(|(token, r)| (token, Ok(r)))
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
