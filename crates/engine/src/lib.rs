//! blackstart's engine: what a run is made of and where it is kept.
//!
//! The run's record, which everything else stands on: the [`Event`]s of a
//! run, the [`RunState`] folded from them (the one code path for `status`,
//! `resume` and `audit`), the [`RunStore`] seam and [`FileJournal`], the
//! CLI's store. The steps a run takes on a system ([`step`]: exec, HTTP,
//! TCP, Kubernetes workloads, noop; [`probe`]: Kubernetes probe semantics;
//! [`secrets`]: placeholders resolved late and redacted everywhere). And the
//! scheduler ([`run`]) that turns a `Plan` into steps and events, talking
//! only to a `RunStore`, so the operator keeps the same events in a
//! RestartRun's status without the engine knowing.

pub mod decision;
pub mod event;
pub mod inbox;
pub mod journal;
pub mod probe;
pub mod process;
pub mod run;
pub mod secrets;
pub mod state;
pub mod step;

pub use event::{Event, RunPhase, StagePhase, SystemPhase, WaitingFor};
pub use inbox::{Inbox, Request, RequestSource};
pub use journal::{FileJournal, JournalError, Record, RunDir};
pub use run::{Engine, EngineError};
pub use state::{FoldError, RunState};

/// Where a run's events live. Appending returns once the event is durable;
/// loading returns every event so far, checked. The file journal is one
/// store; the operator's RestartRun status is another.
pub trait RunStore: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    fn append(&self, event: &Event) -> Result<Record, Self::Error>;

    /// Appends events in order; a store that can put them down at once
    /// (one write, one fsync) does. A crash keeps a prefix of them.
    fn append_all(&self, events: &[Event]) -> Result<Vec<Record>, Self::Error> {
        events.iter().map(|e| self.append(e)).collect()
    }

    fn load(&self) -> Result<Vec<Record>, Self::Error>;

    /// Puts events down in order and returns their records, which may not
    /// be durable yet: nobody acts on them before [`RunStore::durable`] or
    /// [`RunStore::wait_durable`] says they are. The default is
    /// [`RunStore::append_all`], durable when it returns.
    fn write_all(&self, events: &[Event]) -> Result<Vec<Record>, Self::Error> {
        self.append_all(events)
    }

    /// Whether `write_all` returns without waiting on the disk or the
    /// network, so an async worker may call it. The default waits.
    fn writes_without_waiting(&self) -> bool {
        false
    }

    /// The highest sequence number known durable; by default everything
    /// written is.
    fn durable_seq(&self) -> u64 {
        u64::MAX
    }

    /// Returns once every record up to `seq` is durable, blocking the thread.
    fn wait_durable(&self, _seq: u64) -> Result<(), Self::Error> {
        Ok(())
    }

    /// [`RunStore::wait_durable`] without holding a thread.
    fn durable(
        &self,
        _seq: u64,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send {
        async { Ok(()) }
    }
}

impl RunStore for FileJournal {
    type Error = JournalError;

    fn append(&self, event: &Event) -> Result<Record, JournalError> {
        FileJournal::append(self, event)
    }

    fn append_all(&self, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        FileJournal::append_all(self, events)
    }

    fn load(&self) -> Result<Vec<Record>, JournalError> {
        FileJournal::load(self)
    }

    fn write_all(&self, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        FileJournal::write_all(self, events)
    }

    /// One write(2) into the page cache, under the journal's lock.
    fn writes_without_waiting(&self) -> bool {
        true
    }

    fn durable_seq(&self) -> u64 {
        FileJournal::durable_seq(self)
    }

    fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        FileJournal::wait_durable(self, seq)
    }

    fn durable(
        &self,
        seq: u64,
    ) -> impl std::future::Future<Output = Result<(), JournalError>> + Send {
        FileJournal::durable(self, seq)
    }
}
