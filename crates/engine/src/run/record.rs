//! What the engine writes: every transition an event, recorded in the
//! store before the state that folds it moves (state never runs ahead of
//! the store), then told to whoever watches.
//!
//! Writing and waiting for the disk are apart. A task writes its events
//! (in order, under one lock, into `pending`), then waits for the store to
//! say they are durable without holding a thread, then applies every
//! pending record that is durable, in order, whoever wrote it. So the
//! journal's fsyncs cover whatever all tasks wrote meanwhile, the state
//! and the watchers see records in the journal's order, and a task
//! dropped while it waited (a timeout) leaves its records to the next one
//! that applies, or to the next look at the state.

use super::*;

/// Runs a store's append or wait that holds the thread (an fsync, the
/// API server): on a multi-threaded runtime the worker hands its other
/// tasks to the rest of the pool first (`block_in_place`), so a slow disk
/// never stalls probes, timers and the inbox on a two-core machine. For
/// [`Inner::emit_blocking`], called where no `.await` may be, and for a
/// store whose writes wait. On a current-thread runtime (tests) it simply
/// runs.
fn off_the_workers<T>(append: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(append)
    } else {
        append()
    }
}

/// A store's error, as the engine reports it.
fn stored(e: impl std::error::Error) -> EngineError {
    EngineError::Store(e.to_string())
}

/// Records the store holds that the state does not fold yet.
#[derive(Debug, Default)]
pub(super) struct Pending {
    records: VecDeque<Record>,
    /// A record that did not fold: every emit from then on fails with it.
    broken: Option<FoldError>,
}

impl<S: RunStore + 'static> Inner<S> {
    /// Records an event, then applies it: state never runs ahead of the
    /// store. After an interrupt nothing more is recorded.
    pub(super) async fn emit(&self, event: Event) -> Result<(), EngineError> {
        self.emit_all(vec![event]).await
    }

    /// [`Inner::emit`] of events that follow from one step: recorded
    /// together (one write for a file journal), then applied in order.
    pub(super) async fn emit_all(&self, events: Vec<Event>) -> Result<(), EngineError> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(EngineError::Interrupted);
        }
        let last = self.put_down(&events)?;
        self.store.durable(last).await.map_err(stored)?;
        self.catch_up()
    }

    /// [`Inner::emit`] where no `.await` may be (a callback, a drop): the
    /// wait for the disk holds the thread, handed off the async workers.
    pub(super) fn emit_blocking(&self, event: Event) -> Result<(), EngineError> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(EngineError::Interrupted);
        }
        self.record(event)
    }

    /// [`Inner::emit_blocking`] without the interrupt check, for the
    /// interrupt's own records.
    pub(super) fn record(&self, event: Event) -> Result<(), EngineError> {
        let last = self.put_down(std::slice::from_ref(&event))?;
        off_the_workers(|| self.store.wait_durable(last)).map_err(stored)?;
        self.catch_up()
    }

    /// Writes events to the store and queues their records to be applied;
    /// returns the last one's sequence number.
    fn put_down(&self, events: &[Event]) -> Result<u64, EngineError> {
        if self.store.writes_without_waiting() {
            // Written and queued under one lock: queued in the store's order.
            let _order = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            let records = self.store.write_all(events).map_err(stored)?;
            let last = records.last().map_or(0, |r| r.seq);
            self.pending_lock().records.extend(records);
            return Ok(last);
        }
        // A store that waits (the operator's, which puts what several tasks
        // append meanwhile into one request) is not held to one writer at a
        // time. Its records are durable when it returns; one that returns
        // late is queued in its place if the records after it are still
        // queued, and applied after them if not.
        let records = off_the_workers(|| self.store.append_all(events)).map_err(stored)?;
        let last = records.last().map_or(0, |r| r.seq);
        let mut pending = self.pending_lock();
        for record in records {
            let at = pending.records.partition_point(|r| r.seq < record.seq);
            pending.records.insert(at, record);
        }
        Ok(last)
    }

    /// Applies, in order, every queued record the store holds durable.
    pub(super) fn catch_up(&self) -> Result<(), EngineError> {
        let durable = self.store.durable_seq();
        let mut pending = self.pending_lock();
        while pending.records.front().is_some_and(|r| r.seq <= durable) {
            let Some(record) = pending.records.pop_front() else {
                break;
            };
            if let Err(e) = self.applied(record) {
                pending.broken.get_or_insert(e);
            }
        }
        match &pending.broken {
            Some(e) => Err(e.clone().into()),
            None => Ok(()),
        }
    }

    fn pending_lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A record the store holds: folded into the state, logged, told.
    fn applied(&self, record: Record) -> Result<(), FoldError> {
        let run = {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
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

    pub(super) async fn system_event(
        &self,
        id: &str,
        phase: SystemPhase,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        self.emit(system(id, phase, reason)).await
    }

    pub(super) async fn stage_event(
        &self,
        name: &str,
        phase: StagePhase,
        reason: Option<String>,
    ) -> Result<(), EngineError> {
        self.emit(stage(name, phase, reason)).await
    }

    pub(super) async fn output(
        &self,
        id: &str,
        step: &str,
        outcome: &Outcome,
    ) -> Result<(), EngineError> {
        match output_event(id, step, outcome) {
            Some(event) => self.emit(event).await,
            None => Ok(()),
        }
    }
}

/// A system's phase, as a journal event.
pub(super) fn system(id: &str, phase: SystemPhase, reason: Option<String>) -> Event {
    Event::System {
        system: id.to_owned(),
        phase,
        reason,
        waiting_for: None,
    }
}

/// A stage's phase, as a journal event.
pub(super) fn stage(name: &str, phase: StagePhase, reason: Option<String>) -> Event {
    Event::Stage {
        stage: name.to_owned(),
        phase,
        reason,
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
