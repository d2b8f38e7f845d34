//! The file journal: the CLI's RunStore.
//!
//! One run is one append-only file of JSON lines under
//! `STATE_DIR/runs/RUN/journal.jsonl`. Each line is a record: a sequence
//! number, a time, the hash of the record before it, the event, and the
//! SHA-256 of the record's own bytes. The chain makes an edited, removed or
//! reordered line detectable (`audit --verify` names the first one); it is
//! not a signature, and does not stop someone who rewrites the whole tail.
//!
//! Durability: `append` returns only after the record is on disk. Appenders
//! that arrive while an fsync is under way are written behind it and made
//! durable together by the next one (group commit), so a stage starting
//! sixty systems at once pays for a few fsyncs, not sixty. After a failed
//! fsync the journal refuses further appends: the kernel may have dropped
//! the dirty pages, and retrying would claim durability it cannot know.
//!
//! Locking: a writer holds an exclusive `flock` on `STATE_DIR/runs/RUN/lock`
//! for as long as it lives. The kernel releases it when the process dies,
//! however it dies, so a lock left by a killed `apply` is simply taken over;
//! a live holder makes a second `apply` or `resume` fail with `Locked`.
//!
//! Nothing is ever rewritten. The one exception is a torn tail: bytes after
//! the last newline, left by a crash in the middle of a write whose fsync
//! never returned. They are not part of the run; opening the journal for
//! writing truncates them and records a `TornWriteDiscarded` event saying so.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::Event;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub prev: String,
    pub event: Event,
    pub hash: String,
}

impl Record {
    /// The record that follows `prev` (the first when `None`), stamped now:
    /// for stores other than the file journal, so that every store keeps
    /// the same hash chain and the same audit holds for all.
    pub fn next(prev: Option<&Record>, event: Event) -> Record {
        let (seq, prev) = prev.map_or((1, GENESIS), |r| (r.seq + 1, r.hash.as_str()));
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let (_, hash) = encode(seq, &at, prev, &event);
        Record {
            seq,
            at,
            prev: prev.to_owned(),
            event,
            hash,
        }
    }

    /// Checks records kept outside a journal file: each matches its own
    /// hash, and each follows the one before. The error names the first
    /// record that does not.
    pub fn verify_chain(records: &[Record]) -> Result<(), String> {
        let mut prev: Option<&Record> = None;
        for r in records {
            follows(prev, r)?;
            let (_, hash) = encode(r.seq, &r.at, &r.prev, &r.event);
            if hash != r.hash {
                return Err(format!(
                    "event {} does not match its hash (recorded {}, content hashes to {hash}): it was changed",
                    r.seq, r.hash
                ));
            }
            prev = Some(r);
        }
        Ok(())
    }
}

/// Checks that `record` is the one that must come after `prev` (the first
/// when `None`): the next number, and the previous record's hash.
fn follows(prev: Option<&Record>, record: &Record) -> Result<(), String> {
    let (want_seq, want_prev) = prev.map_or((1, GENESIS), |p| (p.seq + 1, p.hash.as_str()));
    if record.seq != want_seq {
        return Err(format!(
            "event {} where event {want_seq} should be: a record was removed, added or moved",
            record.seq
        ));
    }
    if record.prev != want_prev {
        return Err(format!(
            "event {} does not follow the hash of event {}: the chain is broken",
            record.seq,
            want_seq - 1
        ));
    }
    Ok(())
}

/// The part of a record its hash covers, in the order it is written.
#[derive(Serialize)]
struct Body<'a> {
    seq: u64,
    at: &'a str,
    prev: &'a str,
    event: &'a Event,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParsedBody {
    seq: u64,
    at: String,
    prev: String,
    event: Event,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "run id {0:?} is not usable: use letters, digits, `-`, `_` and `.`, starting with a letter or digit"
    )]
    BadRunId(String),
    #[error("run `{run}` already exists in {dir}; choose another --run-id or `resume` it")]
    Exists { run: String, dir: PathBuf },
    #[error("no run `{run}` in {dir}")]
    NotFound { run: String, dir: PathBuf },
    #[error("run `{run}` is locked by another process{}; wait for it or stop it", holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Locked { run: String, holder: Option<String> },
    #[error("{path}:{line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{path}: the journal refused further writes after a failed fsync ({reason}); nothing after event {durable} is known to be on disk"
    )]
    Poisoned {
        path: PathBuf,
        durable: u64,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The line for a record, with its trailing newline, and the record's hash.
fn encode(seq: u64, at: &str, prev: &str, event: &Event) -> (String, String) {
    let body = serde_json::to_string(&Body {
        seq,
        at,
        prev,
        event,
    })
    .expect("an event always serializes to JSON");
    let hash = hex(&Sha256::digest(body.as_bytes()));
    let mut line = String::with_capacity(body.len() + 80);
    line.push_str(&body[..body.len() - 1]);
    line.push_str(",\"hash\":\"");
    line.push_str(&hash);
    line.push_str("\"}\n");
    (line, hash)
}

/// Checks one line against its own hash and parses it.
fn decode(line: &str) -> Result<Record, String> {
    const KEY: &str = ",\"hash\":\"";
    let Some(cut) = line.rfind(KEY) else {
        return Err("not a journal record (no hash)".to_owned());
    };
    let hash = &line[cut + KEY.len()..];
    let Some(hash) = hash.strip_suffix("\"}") else {
        return Err("not a journal record (malformed hash)".to_owned());
    };
    let body = format!("{}}}", &line[..cut]);
    let actual = hex(&Sha256::digest(body.as_bytes()));
    if actual != hash {
        return Err(format!(
            "the record does not match its hash (recorded {hash}, content hashes to {actual}): it was changed"
        ));
    }
    let parsed: ParsedBody =
        serde_json::from_str(&body).map_err(|e| format!("not a journal record: {e}"))?;
    Ok(Record {
        seq: parsed.seq,
        at: parsed.at,
        prev: parsed.prev,
        event: parsed.event,
        hash: hash.to_owned(),
    })
}

/// What a whole journal file holds: its records, checked link by link, and
/// the length of an unterminated tail if a crash left one.
struct Scan {
    records: Vec<Record>,
    good_len: u64,
    torn: u64,
}

fn scan(path: &Path, file: &mut File) -> Result<Scan, JournalError> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    file.read_to_string(&mut text).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData => JournalError::Corrupt {
            path: path.to_path_buf(),
            line: 0,
            reason: "the journal is not UTF-8 text".to_owned(),
        },
        _ => JournalError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    let torn = (text.len() - complete) as u64;
    let mut records: Vec<Record> = Vec::new();
    for (i, line) in text[..complete].lines().enumerate() {
        let corrupt = |reason: String| JournalError::Corrupt {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let record = decode(line).map_err(&corrupt)?;
        follows(records.last(), &record).map_err(&corrupt)?;
        records.push(record);
    }
    Ok(Scan {
        records,
        good_len: complete as u64,
        torn,
    })
}

/// Where a run's files live.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub run: String,
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(state_dir: &Path, run: &str) -> Result<RunDir, JournalError> {
        let ok = run
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && run.len() <= 128
            && run
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(JournalError::BadRunId(run.to_owned()));
        }
        Ok(RunDir {
            run: run.to_owned(),
            dir: state_dir.join("runs").join(run),
        })
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("journal.jsonl")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }
}

/// Reads and checks a run's journal without taking its lock: what `status`
/// and `audit` use while `apply` is still writing.
pub fn read(run: &RunDir) -> Result<Vec<Record>, JournalError> {
    let path = run.journal();
    let mut file = File::open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => JournalError::NotFound {
            run: run.run.clone(),
            dir: run.dir.clone(),
        },
        _ => JournalError::Io {
            path: path.clone(),
            source: e,
        },
    })?;
    Ok(scan(&path, &mut file)?.records)
}

struct Inner {
    file: File,
    seq: u64,
    last_hash: String,
    /// Highest sequence number known to be on disk.
    durable: u64,
    syncing: bool,
    poisoned: Option<String>,
    syncs: u64,
}

/// A run's journal, open for writing; the lock is held until it is dropped.
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
    inner: Mutex<Inner>,
    synced: Condvar,
    sync_handle: File,
    _lock: File,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("seq", &self.seq)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

fn take_lock(run: &RunDir) -> Result<File, JournalError> {
    let path = run.lock_path();
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(JournalError::Locked {
                run: run.run.clone(),
                holder: (!holder.is_empty()).then(|| holder.to_owned()),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(JournalError::Io { path, source: e }),
    }
    // Say who holds it, for the message a second process prints.
    let me = format!("pid {}", std::process::id());
    lock.set_len(0)
        .and_then(|()| lock.seek(SeekFrom::Start(0)))
        .and_then(|_| lock.write_all(me.as_bytes()))
        .map_err(io_err(&path))?;
    Ok(lock)
}

impl FileJournal {
    /// Starts a new run: creates its directory and journal, takes the lock
    /// and records `first` (a `RunStarted`).
    pub fn create(run: &RunDir, first: &Event) -> Result<FileJournal, JournalError> {
        std::fs::create_dir_all(&run.dir).map_err(io_err(&run.dir))?;
        let lock = take_lock(run)?;
        let path = run.journal();
        let file = OpenOptions::new()
            .append(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => JournalError::Exists {
                    run: run.run.clone(),
                    dir: run.dir.clone(),
                },
                _ => JournalError::Io {
                    path: path.clone(),
                    source: e,
                },
            })?;
        // The new file's name must survive a crash too.
        if let Ok(dir) = File::open(&run.dir) {
            let _ = dir.sync_all();
        }
        let journal = FileJournal::from_parts(path, file, lock, 0, GENESIS.to_owned())?;
        journal.append(first)?;
        Ok(journal)
    }

    /// Reopens a run's journal to carry it on, after checking every record.
    /// Returns the journal and the records it already holds.
    pub fn open(run: &RunDir) -> Result<(FileJournal, Vec<Record>), JournalError> {
        if !run.journal().exists() {
            return Err(JournalError::NotFound {
                run: run.run.clone(),
                dir: run.dir.clone(),
            });
        }
        let lock = take_lock(run)?;
        let path = run.journal();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let scan = scan(&path, &mut file)?;
        if scan.torn > 0 {
            file.set_len(scan.good_len).map_err(io_err(&path))?;
        }
        let (seq, last) = scan
            .records
            .last()
            .map_or((0, GENESIS.to_owned()), |r| (r.seq, r.hash.clone()));
        let journal = FileJournal::from_parts(path, file, lock, seq, last)?;
        let mut records = scan.records;
        if scan.torn > 0 {
            records.push(journal.append(&Event::TornWriteDiscarded { bytes: scan.torn })?);
        }
        Ok((journal, records))
    }

    fn from_parts(
        path: PathBuf,
        file: File,
        lock: File,
        seq: u64,
        last_hash: String,
    ) -> Result<FileJournal, JournalError> {
        let sync_handle = file.try_clone().map_err(io_err(&path))?;
        Ok(FileJournal {
            path,
            inner: Mutex::new(Inner {
                file,
                seq,
                last_hash,
                durable: seq,
                syncing: false,
                poisoned: None,
                syncs: 0,
            }),
            synced: Condvar::new(),
            sync_handle,
            _lock: lock,
        })
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent counters (every
        // update is a single assignment), so a poisoned mutex is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn poisoned(&self, g: &Inner) -> Option<JournalError> {
        g.poisoned.as_ref().map(|reason| JournalError::Poisoned {
            path: self.path.clone(),
            durable: g.durable,
            reason: reason.clone(),
        })
    }

    /// Appends one event and returns once it is on disk.
    pub fn append(&self, event: &Event) -> Result<Record, JournalError> {
        let mut g = self.lock_inner();
        if let Some(e) = self.poisoned(&g) {
            return Err(e);
        }
        let seq = g.seq + 1;
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let (line, hash) = encode(seq, &at, &g.last_hash, event);
        if let Err(e) = g.file.write_all(line.as_bytes()) {
            // Part of the line may be on disk: nothing may follow it.
            g.poisoned = Some(format!("write failed: {e}"));
            return Err(JournalError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        let record = Record {
            seq,
            at,
            prev: std::mem::replace(&mut g.last_hash, hash.clone()),
            event: event.clone(),
            hash,
        };
        g.seq = seq;
        loop {
            if g.durable >= seq {
                return Ok(record);
            }
            if let Some(e) = self.poisoned(&g) {
                return Err(e);
            }
            if g.syncing {
                // Someone else's fsync is under way; ours goes in the next one.
                g = self.synced.wait(g).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead a group commit of everything written so far.
            g.syncing = true;
            let target = g.seq;
            drop(g);
            let result = self.sync_handle.sync_data();
            g = self.lock_inner();
            g.syncing = false;
            g.syncs += 1;
            match result {
                Ok(()) => g.durable = g.durable.max(target),
                Err(e) => g.poisoned = Some(format!("fsync failed: {e}")),
            }
            self.synced.notify_all();
        }
    }

    /// Every record so far, read back from disk and checked.
    pub fn load(&self) -> Result<Vec<Record>, JournalError> {
        let mut file = File::open(&self.path).map_err(io_err(&self.path))?;
        Ok(scan(&self.path, &mut file)?.records)
    }

    /// How many records are on disk and how many fsyncs it took.
    pub fn stats(&self) -> (u64, u64) {
        let g = self.lock_inner();
        (g.durable, g.syncs)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
