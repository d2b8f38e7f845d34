//! A stage's gate: the soak (every system probed), the approvals and a
//! denial, the approval timeout; and people's requests, each checked by
//! `crate::decision` as the run takes it.

use super::*;
use crate::decision::Decision;

/// How long each gate the journal shows waiting had waited, from its Gate
/// record to the last record before this process took the run over.
pub(super) fn gate_spent(state: &RunState, records: &[Record]) -> HashMap<String, Duration> {
    let at = |seq: u64| {
        records
            .iter()
            .find(|r| r.seq == seq)
            .and_then(|r| humantime::parse_rfc3339(&r.at).ok())
    };
    let last = records
        .last()
        .and_then(|r| humantime::parse_rfc3339(&r.at).ok());
    state
        .stages
        .iter()
        .filter(|st| st.phase == StagePhase::Gate)
        .filter_map(|st| {
            let began = at(st.gate_since?)?;
            let spent = last?.duration_since(began).ok()?;
            Some((st.name.clone(), spent))
        })
        .collect()
}

impl<S: RunStore + 'static> Inner<S> {
    /// Takes people's requests: each is checked as [`crate::decision`]
    /// says, against the state now; one that cannot be taken is journaled
    /// as refused, with why, and acknowledged either way.
    pub(super) fn take_requests(&self) -> Result<(), EngineError> {
        for (token, request) in self.requests.pending().map_err(EngineError::Requests)? {
            let request = match request {
                Ok(r) => r,
                Err(why) => {
                    // Unreadable: reported, put aside, and the rest go on.
                    self.emit_blocking(Event::Refused {
                        decision: "unreadable request".to_owned(),
                        subject: token.clone(),
                        by: String::new(),
                        reason: why,
                    })?;
                    self.requests
                        .set_aside(&token)
                        .map_err(EngineError::Requests)?;
                    continue;
                }
            };
            let _taken_or_refused = self.decide(&request.decision())?;
            self.requests.ack(&token).map_err(EngineError::Requests)?;
        }
        Ok(())
    }

    /// Checks a decision against the state now, and journals it as taken
    /// or as refused (the audit shows who tried what).
    pub(super) fn decide(&self, d: &Decision) -> Result<Result<(), String>, EngineError> {
        let taken = crate::decision::take(&self.plan, &self.lock(), d);
        match taken {
            Ok(event) => self.emit_blocking(event).map(|()| Ok(())),
            Err(reason) => self
                .emit_blocking(Event::Refused {
                    decision: d.kind.as_str().to_owned(),
                    subject: d.subject.clone(),
                    by: d.by.clone(),
                    reason: reason.clone(),
                })
                .map(|()| Err(reason)),
        }
    }

    /// The gate: soak with every system probed, and the approvals.
    pub(super) async fn hold_gate(
        self: &Arc<Self>,
        stage: &PlannedStage,
    ) -> Result<Starts, EngineError>
    where
        S: 'static,
    {
        let soak = stage.gate.soak.map_or(Duration::ZERO, |d| d.to_std());
        let mut watches = JoinSet::new();
        let waited_for: Vec<&PlannedSystem> = {
            let state = self.lock();
            stage
                .systems
                .iter()
                .filter(|s| {
                    state
                        .system(&s.id)
                        .is_none_or(|st| state.gate_waits_for(st))
                })
                .collect()
        };
        for sys in waited_for {
            let (inner, sys) = (Arc::clone(self), sys.clone());
            watches.spawn(async move {
                probe::watch(&sys.health, &sys.probe, soak, &inner.health_cx(&sys))
                    .await
                    .map_err(|e| (sys.id.clone(), e))
            });
        }
        let roles = stage.gate.approvals.clone();
        let name = stage.name.clone();
        let approvals = self.wait_until(move |s| {
            s.stage(&name)
                .is_some_and(|st| st.roles_missing(&roles).is_empty())
        });
        tokio::pin!(approvals);
        let name = stage.name.clone();
        let denied = self.wait_until(move |s| s.stage(&name).is_some_and(|st| st.denied.is_some()));
        tokio::pin!(denied);
        let timeout = stage.gate.approval_timeout.map(|t| {
            let spent = self
                .gate_spent
                .get(&stage.name)
                .copied()
                .unwrap_or_default();
            t.to_std().saturating_sub(spent)
        });
        let timed_out = async move {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(timed_out);
        let mut pause = self.pause.clone();
        let (mut soaked, mut approved_all) = (watches.is_empty(), false);
        loop {
            if soaked && approved_all {
                return Ok(Starts::AllHealthy);
            }
            tokio::select! {
                joined = watches.join_next(), if !soaked => match joined {
                    None => soaked = true,
                    Some(Ok(Ok(()))) => {}
                    Some(Err(e)) => {
                        // A watcher that panicked proved nothing healthy.
                        watches.abort_all();
                        return Ok(Starts::Failed(format!("a health watch of the soak failed: {e}")));
                    }
                    Some(Ok(Err((id, reason)))) => {
                        watches.abort_all();
                        let reason = format!("unhealthy during the soak: {reason}");
                        self.system_event(&id, SystemPhase::Failed, Some(reason.clone())).await?;
                        return Ok(Starts::Failed(format!("{id}: {reason}")));
                    }
                },
                () = &mut approvals, if !approved_all => approved_all = true,
                () = &mut timed_out, if !approved_all => {
                    watches.abort_all();
                    let st = self.lock().stage(&stage.name).cloned();
                    let missing: Vec<&String> = match &st {
                        Some(st) => st.roles_missing(&stage.gate.approvals),
                        None => stage.gate.approvals.iter().collect(),
                    };
                    let timeout = stage.gate.approval_timeout.map(|t| t.to_string()).unwrap_or_default();
                    return Ok(Starts::TimedOut(format!(
                        "no approval within its approvalTimeout of {timeout} (still missing: {})",
                        missing.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
                () = &mut denied => {
                    watches.abort_all();
                    let denial = self.lock().stage(&stage.name).and_then(|st| st.denied.clone());
                    let why = denial.map_or_else(String::new, |d| {
                        format!(
                            "denied by {}{}: {}",
                            d.by,
                            d.role.map(|r| format!(" as {r}")).unwrap_or_default(),
                            d.reason
                        )
                    });
                    return Ok(Starts::Failed(why));
                }
                Ok(()) = pause.changed() => {
                    if *pause.borrow() {
                        return Ok(Starts::Paused);
                    }
                }
            }
        }
    }
}
