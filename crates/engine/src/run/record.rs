//! What the engine writes: every transition an event, recorded in the
//! store before the state that folds it moves (state never runs ahead of
//! the store), then told to whoever watches.

use super::*;

/// Runs a store's append, which waits for the disk (an fsync, a group
/// commit) or the API server: on a multi-threaded runtime the worker hands
/// its other tasks to the rest of the pool first (`block_in_place`), so a
/// slow disk never stalls probes, timers and the inbox on a two-core
/// machine. An append must stay synchronous for its caller: state never
/// runs ahead of the store, and `emit` is called where no `.await` may be.
/// On a current-thread runtime (tests) it simply runs.
fn off_the_workers<T>(append: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(append)
    } else {
        append()
    }
}

impl<S: RunStore + 'static> Inner<S> {
    /// Records an event, then applies it: state never runs ahead of the
    /// store. After an interrupt nothing more is recorded.
    pub(super) fn emit(&self, event: Event) -> Result<(), EngineError> {
        self.emit_all(vec![event])
    }

    /// [`Inner::emit`] of events that follow from one step: recorded
    /// together (one write and one fsync for a file journal), then applied
    /// in order.
    pub(super) fn emit_all(&self, events: Vec<Event>) -> Result<(), EngineError> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(EngineError::Interrupted);
        }
        let records = off_the_workers(|| self.store.append_all(&events))
            .map_err(|e| EngineError::Store(e.to_string()))?;
        for record in records {
            self.applied(record)?;
        }
        Ok(())
    }

    /// [`Inner::emit`] without the interrupt check, for the interrupt's own records.
    pub(super) fn record(&self, event: Event) -> Result<(), EngineError> {
        let record = off_the_workers(|| self.store.append(&event))
            .map_err(|e| EngineError::Store(e.to_string()))?;
        self.applied(record)
    }

    /// A record the store holds: folded into the state, logged, told.
    fn applied(&self, record: Record) -> Result<(), EngineError> {
        let run = {
            let mut state = self.lock();
            state.apply(record.seq, &record.event)?;
            state.run.clone()
        };
        *self.head.lock().unwrap_or_else(|p| p.into_inner()) = (record.seq, record.hash.clone());
        log(&run, record.seq, &record.event);
        self.changed.send_modify(|n| *n += 1);
        // Nobody listening is fine: the journal has it.
        let _ = self.records.send(Arc::new(record));
        Ok(())
    }

    pub(super) fn system_event(
        &self,
        id: &str,
        phase: SystemPhase,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        self.emit(Event::System {
            system: id.to_owned(),
            phase,
            reason,
            waiting_for: None,
        })
    }

    pub(super) fn stage_event(
        &self,
        stage: &str,
        phase: StagePhase,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        self.emit(Event::Stage {
            stage: stage.to_owned(),
            phase,
            reason,
        })
    }

    pub(super) fn output(
        &self,
        id: &str,
        step: &str,
        outcome: &Outcome,
    ) -> Result<(), EngineError> {
        match output_event(id, step, outcome) {
            Some(event) => self.emit(event),
            None => Ok(()),
        }
    }
}

/// What a step printed, as a journal event; a silent success says nothing
/// the phase events do not.
pub(super) fn output_event(id: &str, step: &str, outcome: &Outcome) -> Option<Event> {
    if outcome.output.is_empty() && matches!(outcome.exit_code, None | Some(0)) {
        return None;
    }
    Some(Event::Output {
        system: id.to_owned(),
        step: step.to_owned(),
        exit_code: outcome.exit_code,
        output: outcome.output.clone(),
    })
}
