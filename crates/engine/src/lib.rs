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
}
