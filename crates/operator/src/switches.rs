//! The spec's `paused` and `rollback` switches, taken as people's decisions.
//!
//! A pause or a rollback is a decision like an approval: when the playbook
//! names its people, the person must be a member, and a member with an
//! enrolled key must sign (`blackstart pause --k8s`, `rollback --k8s`). The
//! switch stays a switch (kubectl can flip it, and the operator pauses a run
//! itself when a stage fails) but whoever it names is checked by the engine
//! as the CLI's inbox requests are, and journaled as taken or refused. A
//! refused switch does nothing: the run goes on, and the herald turns the
//! refusal into an Event and a condition.
//!
//! Each distinct request is decided once: a switch that stays on is not
//! journaled again on every spec change. A pause switched off forgets its
//! decision, so switching it on again with the same signature is a new
//! decision, and refused as a replay (the signature binds an older head).

use std::sync::Mutex;

use blackstart_engine::decision::{Decision, Kind};
use blackstart_engine::{Engine, Event, Record, RunPhase};

use crate::crd::RestartRunSpec;
use crate::store::StatusStore;

/// What one switch asked, as far as deciding it again would differ.
type Asked = (String, Option<String>, Option<String>, Option<u64>);

/// The decisions the spec's switches asked, and what became of them.
#[derive(Debug)]
pub struct Switches {
    engine: Engine<StatusStore>,
    pause: Mutex<Option<(Asked, bool)>>,
    rollback: Mutex<Option<(Asked, bool)>>,
}

fn asked(d: &Decision) -> Asked {
    (
        d.by.clone(),
        d.reason.clone(),
        d.proof.signature.clone(),
        d.proof.wait,
    )
}

/// The decision a switch that is on asks for; `None` for a pause that
/// names nobody (the operator's own, or a bare `kubectl patch`).
fn decision(kind: Kind, spec: &RestartRunSpec) -> Option<Decision> {
    let (by, reason, proof) = match kind {
        Kind::Pause if spec.paused => (
            spec.paused_by.clone()?,
            &spec.pause_reason,
            &spec.pause_proof,
        ),
        Kind::Rollback if spec.rollback => (
            spec.rollback_by.clone().unwrap_or_default(),
            &spec.rollback_reason,
            &spec.rollback_proof,
        ),
        _ => return None,
    };
    Some(Decision {
        reason: reason.clone(),
        proof: proof.as_ref().map(|p| p.proof()).unwrap_or_default(),
        ..Decision::new(kind, "", &by)
    })
}

impl Switches {
    /// The switches of a driver that takes a run over: what its spec asks
    /// and the driver before it took (the journal shows a rollback asked or
    /// under way, or a named pause that holds the run) is not decided again.
    pub fn new(engine: Engine<StatusStore>, spec: &RestartRunSpec, records: &[Record]) -> Switches {
        let rolling_back = engine.with_state(|s| {
            s.rollback_asked.is_some()
                || matches!(s.phase, RunPhase::RollingBack | RunPhase::RolledBack)
        });
        // A named pause the journal took and nobody lifted since (the run
        // did not run again after it paused); one that was refused, lifted
        // or never seen is decided afresh.
        let mut pause_held: Option<Asked> = None;
        let mut paused_since = false;
        for r in records {
            match &r.event {
                Event::PauseRequested {
                    by, reason, proof, ..
                } => {
                    pause_held = Some((
                        by.clone(),
                        reason.clone(),
                        proof.signature.clone(),
                        proof.wait,
                    ));
                    paused_since = false;
                }
                Event::Run {
                    phase: RunPhase::Paused,
                    ..
                } => paused_since = true,
                Event::Run {
                    phase: RunPhase::Running,
                    ..
                } if paused_since => pause_held = None,
                _ => {}
            }
        }
        let pause_held = decision(Kind::Pause, spec).is_some_and(|d| {
            pause_held.as_ref().is_some_and(|(by, reason, sig, _)| {
                (by, reason, sig) == (&d.by, &d.reason, &d.proof.signature)
            })
        });
        let decided = |kind: Kind, already: bool| {
            decision(kind, spec)
                .filter(|_| already)
                .map(|d| (asked(&d), true))
        };
        Switches {
            pause: Mutex::new(decided(Kind::Pause, pause_held)),
            rollback: Mutex::new(decided(Kind::Rollback, rolling_back)),
            engine,
        }
    }

    /// Whether the spec pauses the run: its switch is on and, if it names
    /// someone, their pause was taken.
    pub fn paused(&self, spec: &RestartRunSpec) -> bool {
        if !spec.paused {
            *self.pause.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return false;
        }
        match decision(Kind::Pause, spec) {
            None => true,
            Some(d) => self.take(&self.pause, &d),
        }
    }

    /// Whether the spec rolls the run back, and who asked: its switch is on
    /// and the rollback was taken. Unnamed, it is taken only when the
    /// playbook names no people.
    pub fn rollback(&self, spec: &RestartRunSpec) -> Option<Option<String>> {
        let d = decision(Kind::Rollback, spec)?;
        if d.by.is_empty() && d.proof.is_empty() && self.engine.plan().roles.is_none() {
            return Some(None);
        }
        self.take(&self.rollback, &d).then_some(Some(d.by))
    }

    /// Decides `d` once: journaled as taken or refused by the engine.
    fn take(&self, memo: &Mutex<Option<(Asked, bool)>>, d: &Decision) -> bool {
        let mut memo = memo.lock().unwrap_or_else(|p| p.into_inner());
        let key = asked(d);
        if let Some((k, taken)) = memo.as_ref()
            && *k == key
        {
            return *taken;
        }
        let taken = match self.engine.decide(d) {
            Ok(Ok(())) => {
                if d.kind == Kind::Pause {
                    self.engine.pause_because(&format!(
                        "paused by {}{}",
                        d.by,
                        d.reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ));
                }
                true
            }
            Ok(Err(why)) => {
                tracing::warn!(by = %d.by, decision = d.kind.as_str(), %why, "refused");
                false
            }
            Err(e) => {
                // Not journaled: decided again on the next spec change.
                tracing::warn!(by = %d.by, error = %e, "a switch could not be decided");
                return false;
            }
        };
        *memo = Some((key, taken));
        taken
    }
}
