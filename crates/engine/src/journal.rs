//! The file journal: the CLI's RunStore.
//!
//! Longer than most files, and kept whole: writing, scanning, repairing and
//! locking one file are one invariant (no record lost, forked or rewritten),
//! and splitting them would spread that invariant over several places.
//!
//! One run is one append-only file of JSON lines under
//! `STATE_DIR/runs/RUN/journal.jsonl`. Each line is a record: its format
//! version, a sequence number, a time, the hash of the record before it,
//! the event, and the SHA-256 of the record's own bytes. The chain makes an
//! edited, removed or reordered line detectable (`audit --verify` names the
//! first one); it is not a signature, and does not stop someone who
//! rewrites the whole tail: whoever kept the head (`audit --verify --head`)
//! finds that, and `resume` compares the plan with the playbook file.
//!
//! Durability: `append` returns only after the record is on disk. Writing
//! and waiting for the disk are apart: a record is written (in order,
//! under the lock) at once, and one fsync covers everything written before
//! it (group commit), so a stage starting sixty systems at once pays for a
//! few fsyncs, not sixty. A blocking appender leads an fsync itself when
//! none is under way. The engine waits without holding a thread
//! ([`FileJournal::durable`]): the journal's committer thread fsyncs for
//! it, letting records gather while they keep coming. After a failed write
//! or fsync the journal refuses further appends: the kernel may have
//! dropped the dirty pages, and retrying would claim durability it cannot
//! know.
//!
//! One writer: a writer holds an exclusive `flock` on the journal file
//! itself for as long as it lives, so deleting a side file cannot let a
//! second writer in. The kernel releases the lock when the process dies,
//! however it dies, so a journal left by a killed `apply` is simply taken
//! over. Before each append the writer checks that the path still names
//! the file it locked and that the file ends where its own last record
//! ended; otherwise it refuses to write rather than fork the history.
//!
//! Nothing is ever deleted. A journal that does not end in a complete,
//! chained record (a write torn by a crash, or records of a second chain)
//! is read up to its longest valid prefix; the writer that opens it next
//! moves the rest, byte for byte, to a side file beside it and records a
//! `SetAside` event naming that file. A record that does not match its own
//! hash was changed after it was written: that is refused, not repaired.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::Event;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The format of the records this release writes. Format 1 (blackstart
/// 0.1.0) had no `v` field; this release reads both.
pub const FORMAT: u32 = 2;

fn format_1() -> u32 {
    1
}

fn is_format_1(v: &u32) -> bool {
    *v == 1
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The record's format version.
    #[serde(default = "format_1", skip_serializing_if = "is_format_1")]
    pub v: u32,
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
        let (_, hash) = encode(FORMAT, seq, &at, prev, &event);
        Record {
            v: FORMAT,
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
            let (_, hash) = encode(r.v, r.seq, &r.at, &r.prev, &r.event);
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
    #[serde(skip_serializing_if = "is_format_1")]
    v: u32,
    seq: u64,
    at: &'a str,
    prev: &'a str,
    event: &'a Event,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParsedBody {
    #[serde(default = "format_1")]
    v: u32,
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
        "{path}: the journal refused further writes ({reason}); nothing after event {durable} is known to be on disk"
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
fn encode(v: u32, seq: u64, at: &str, prev: &str, event: &Event) -> (String, String) {
    let body = serde_json::to_string(&Body {
        v,
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
    if parsed.v > FORMAT {
        return Err(format!(
            "a record of journal format {}, newer than this release reads ({FORMAT}): use a newer blackstart",
            parsed.v
        ));
    }
    Ok(Record {
        v: parsed.v,
        seq: parsed.seq,
        at: parsed.at,
        prev: parsed.prev,
        event: parsed.event,
        hash: hash.to_owned(),
    })
}

/// What follows a journal's longest valid prefix: a torn write, or
/// records that do not continue its chain (a second writer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rest {
    /// Where it starts, in bytes, and how long it is.
    pub offset: u64,
    pub bytes: u64,
    /// Its first line (1-based).
    pub line: usize,
    pub reason: String,
}

/// What a whole journal file holds: its records, checked link by link, and
/// what follows the longest valid prefix, if anything does.
#[derive(Debug)]
pub struct Scan {
    pub records: Vec<Record>,
    pub rest: Option<Rest>,
}

/// Whether `record` continues the chain at an earlier point than its end:
/// a valid successor of a record already in it, as a second writer that
/// read the journal up to there would have written.
fn branches_off(records: &[Record], record: &Record) -> bool {
    let Some(last) = records.last() else {
        return false;
    };
    if record.seq > last.seq {
        return false;
    }
    let before = match record.seq {
        0 => return false,
        1 => GENESIS,
        n => match records.get(usize::try_from(n - 2).unwrap_or(usize::MAX)) {
            Some(r) => r.hash.as_str(),
            None => return false,
        },
    };
    record.prev == before
}

fn scan(path: &Path, file: &mut File) -> Result<Scan, JournalError> {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut records: Vec<Record> = Vec::new();
    let mut offset = 0usize;
    let mut rest = None;
    for (i, raw) in bytes[..complete]
        .split_inclusive(|&b| b == b'\n')
        .enumerate()
    {
        let corrupt = |reason: String| JournalError::Corrupt {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let line = std::str::from_utf8(&raw[..raw.len() - 1])
            .map_err(|_| corrupt("the record is not UTF-8 text: it was changed".to_owned()))?;
        let record = decode(line).map_err(&corrupt)?;
        if let Err(reason) = follows(records.last(), &record) {
            // A second writer's records branch off the chain at an earlier
            // record: set aside. Anything else (a record removed, moved or
            // re-chained) is an edit, refused.
            if !branches_off(&records, &record) {
                return Err(corrupt(reason));
            }
            rest = Some(Rest {
                offset: offset as u64,
                bytes: (bytes.len() - offset) as u64,
                line: i + 1,
                reason: format!(
                    "event {} follows event {} a second time: another writer forked the journal",
                    record.seq,
                    record.seq - 1
                ),
            });
            break;
        }
        records.push(record);
        offset += raw.len();
    }
    if rest.is_none() && complete < bytes.len() {
        rest = Some(Rest {
            offset: complete as u64,
            bytes: (bytes.len() - complete) as u64,
            line: records.len() + 1,
            reason: "an unfinished write (no newline at the end): a crash cut it short".to_owned(),
        });
    }
    Ok(Scan { records, rest })
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

    /// Who holds the journal's lock, for the message a second process
    /// prints; the lock itself is on the journal.
    fn holder_path(&self) -> PathBuf {
        self.dir.join("holder")
    }
}

/// Reads and checks a run's journal without taking its lock: what `status`
/// and `audit` use while `apply` is still writing. The records are the
/// longest valid prefix; see [`read_scan`] for what follows it.
pub fn read(run: &RunDir) -> Result<Vec<Record>, JournalError> {
    Ok(read_scan(run)?.records)
}

/// Reads a run's journal: its longest valid prefix and what follows it.
pub fn read_scan(run: &RunDir) -> Result<Scan, JournalError> {
    let mut file = open_existing(run, OpenOptions::new().read(true))?;
    scan(&run.journal(), &mut file)
}

/// Opens a run's journal that must exist: a missing one is `NotFound`.
fn open_existing(run: &RunDir, options: &OpenOptions) -> Result<File, JournalError> {
    let path = run.journal();
    options.open(&path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => JournalError::NotFound {
            run: run.run.clone(),
            dir: run.dir.clone(),
        },
        _ => JournalError::Io { path, source: e },
    })
}

struct Inner {
    file: File,
    /// Where this writer's last record ends: the file must end there.
    len: u64,
    seq: u64,
    last_hash: String,
    /// Highest sequence number known to be on disk.
    durable: u64,
    /// An fsync is under way.
    syncing: bool,
    /// The highest sequence number an async waiter waits for: the
    /// committer syncs until it is durable.
    wanted: u64,
    poisoned: Option<String>,
    syncs: u64,
    /// The journal was dropped: its committer syncs what is left and ends.
    closed: bool,
}

/// What a journal's writers share with its committer thread.
#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Told when `durable`, `syncing`, `wanted` or `closed` change, or the
    /// journal is poisoned.
    changed: Condvar,
    /// `durable`, and whether the journal is poisoned, for async waiters.
    durable: tokio::sync::watch::Sender<(u64, bool)>,
    /// The journal file, for fsync without its lock.
    sync_handle: File,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent counters (every
        // update is a single assignment), so a poisoned mutex is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells every waiter where the disk stands.
    fn tell(&self, g: &Inner) {
        self.changed.notify_all();
        self.durable.send_replace((g.durable, g.poisoned.is_some()));
    }

    /// One fsync of everything written so far, by whoever calls it: a
    /// blocking appender (which leads it, as in a classic group commit) or
    /// the committer. Only one runs at a time (`syncing`). Returns the
    /// lock and the sequence number the fsync covered.
    fn sync<'a>(&'a self, mut g: MutexGuard<'a, Inner>) -> (MutexGuard<'a, Inner>, u64) {
        g.syncing = true;
        let target = g.seq;
        drop(g);
        let result = self.sync_handle.sync_data();
        let mut g = self.lock();
        g.syncing = false;
        g.syncs += 1;
        match result {
            Ok(()) => g.durable = g.durable.max(target),
            Err(e) => g.poisoned = Some(format!("an fsync failed: {e}")),
        }
        self.tell(&g);
        (g, target)
    }
}

/// How long the committer lets writes gather before an fsync while the
/// journal is busy (records came in during its last fsync), in steps: it
/// syncs as soon as a step passes with nothing new. In a 10,000-system
/// drill: 29,000 fsyncs and 2.7 to 2.8 s without gathering; 9,000 to
/// 10,000 fsyncs and 2.0 to 2.3 s with a plain 500 µs sleep, which made
/// eight appenders at once wait 87 µs per record where the steps take
/// 40; 2.0 to 2.3 s with the steps. A journal written now and then
/// (a gate's approval, a small run) is never busy, and its records wait
/// for one fsync only.
const GATHER: std::time::Duration = std::time::Duration::from_micros(500);
const GATHER_STEP: std::time::Duration = std::time::Duration::from_micros(50);

/// The committer: fsyncs until what async waiters want is durable, over
/// and over while they want more, until the journal closes (after a last
/// fsync of what is written) or is poisoned. Blocking appenders lead their
/// own fsyncs; the committer never runs one beside theirs.
fn commit(shared: &Shared) {
    let mut busy = false;
    let mut g = shared.lock();
    loop {
        let behind = g.wanted > g.durable || (g.closed && g.seq > g.durable);
        if g.poisoned.is_some() || (g.closed && !behind) {
            return;
        }
        if behind && !g.syncing {
            // While records keep coming, let them gather, up to GATHER.
            let mut gathered = std::time::Duration::ZERO;
            while busy && gathered < GATHER {
                let seen = g.seq;
                drop(g);
                std::thread::sleep(GATHER_STEP);
                gathered += GATHER_STEP;
                g = shared.lock();
                if g.seq == seen {
                    break;
                }
            }
            let target;
            (g, target) = shared.sync(g);
            busy = g.seq > target;
            continue;
        }
        if !behind {
            // Idle: the next record is synced at once.
            busy = false;
        }
        g = shared.changed.wait(g).unwrap_or_else(|p| p.into_inner());
    }
}

/// A run's journal, open for writing; the lock is held until it is dropped.
#[derive(Debug)]
pub struct FileJournal {
    path: PathBuf,
    shared: Arc<Shared>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// The journal's device and inode, as locked.
    identity: (u64, u64),
}

impl Drop for FileJournal {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("seq", &self.seq)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

/// Whether a process drives the run now (holds its journal's lock), read
/// without getting in its way: a shared lock taken and let go at once.
/// `None` when the journal cannot be opened.
pub fn driven(run: &RunDir) -> Option<bool> {
    let file = File::open(run.journal()).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            Some(false)
        }
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// The error for a run another process holds, naming it if it can.
fn locked(run: &RunDir) -> JournalError {
    let holder = std::fs::read_to_string(run.holder_path()).unwrap_or_default();
    let holder = holder.trim();
    JournalError::Locked {
        run: run.run.clone(),
        holder: (!holder.is_empty()).then(|| holder.to_owned()),
    }
}

/// How long a lock held by someone else is waited for before giving up. A
/// writer that just died may linger that long: the lock belongs to the open
/// file, and a child it was forking at that moment holds a copy of its open
/// files until it execs (they close on exec).
const LOCK_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes the exclusive lock on an open journal, and says who holds it.
fn take_lock(run: &RunDir, file: &File) -> Result<(), JournalError> {
    let deadline = std::time::Instant::now() + LOCK_GRACE;
    let taken = loop {
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other,
        }
    };
    match taken {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(locked(run)),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(JournalError::Io {
                path: run.journal(),
                source: e,
            });
        }
    }
    // Only informative: a stale or missing holder file changes nothing.
    let _ = std::fs::write(run.holder_path(), format!("pid {}", std::process::id()));
    Ok(())
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt as _;
    (meta.dev(), meta.ino())
}

/// Moves what follows the valid prefix to a new side file beside the
/// journal, durably, then cuts it from the journal. Returns the side
/// file's name.
fn set_aside(run: &RunDir, file: &mut File, rest: &Rest) -> Result<String, JournalError> {
    let path = run.journal();
    let mut tail = Vec::with_capacity(usize::try_from(rest.bytes).unwrap_or(0));
    file.seek(SeekFrom::Start(rest.offset))
        .and_then(|_| file.read_to_end(&mut tail))
        .map_err(io_err(&path))?;
    let (name, mut side) = (1..)
        .map(|n| format!("journal.set-aside.{n}.jsonl"))
        .find_map(|name| {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(run.dir.join(&name))
            {
                Ok(f) => Some(Ok((name, f))),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => None,
                Err(e) => Some(Err(e)),
            }
        })
        .expect("some side-file number is free")
        .map_err(io_err(&run.dir))?;
    let side_path = run.dir.join(&name);
    side.write_all(&tail)
        .and_then(|()| side.sync_all())
        .map_err(io_err(&side_path))?;
    File::open(&run.dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(&run.dir))?;
    file.set_len(rest.offset)
        .and_then(|()| file.sync_all())
        .map_err(io_err(&path))?;
    Ok(name)
}

impl FileJournal {
    /// Starts a new run: creates its directory and journal, takes the lock
    /// and records `first` (a `RunStarted`).
    pub fn create(run: &RunDir, first: &Event) -> Result<FileJournal, JournalError> {
        std::fs::create_dir_all(&run.dir).map_err(io_err(&run.dir))?;
        let path = run.journal();
        let file = OpenOptions::new()
            .append(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => {
                    // A live run says so (exit 4); a finished one, that
                    // its id is taken.
                    let live = File::open(&path).is_ok_and(|f| {
                        matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock))
                    });
                    if live {
                        locked(run)
                    } else {
                        JournalError::Exists {
                            run: run.run.clone(),
                            dir: run.dir.clone(),
                        }
                    }
                }
                _ => JournalError::Io {
                    path: path.clone(),
                    source: e,
                },
            })?;
        take_lock(run, &file)?;
        // The new file's name must survive a crash too.
        if let Ok(dir) = File::open(&run.dir) {
            let _ = dir.sync_all();
        }
        let journal = FileJournal::from_parts(path, file, 0, 0, GENESIS.to_owned())?;
        journal.append(first)?;
        Ok(journal)
    }

    /// Reopens a run's journal to carry it on, after checking every record.
    /// What follows the longest valid prefix is set aside first (and the
    /// move recorded). Returns the journal and the records it holds.
    pub fn open(run: &RunDir) -> Result<(FileJournal, Vec<Record>), JournalError> {
        let path = run.journal();
        let mut file = open_existing(run, OpenOptions::new().read(true).append(true))?;
        take_lock(run, &file)?;
        let scan = scan(&path, &mut file)?;
        let moved = match &scan.rest {
            Some(rest) => Some((set_aside(run, &mut file, rest)?, rest)),
            None => None,
        };
        let (seq, last) = scan
            .records
            .last()
            .map_or((0, GENESIS.to_owned()), |r| (r.seq, r.hash.clone()));
        let len = file.metadata().map_err(io_err(&path))?.len();
        let journal = FileJournal::from_parts(path, file, len, seq, last)?;
        let mut records = scan.records;
        if let Some((name, rest)) = moved {
            records.push(journal.append(&Event::SetAside {
                file: name,
                bytes: rest.bytes,
                reason: format!("line {}: {}", rest.line, rest.reason),
            })?);
        }
        Ok((journal, records))
    }

    fn from_parts(
        path: PathBuf,
        file: File,
        len: u64,
        seq: u64,
        last_hash: String,
    ) -> Result<FileJournal, JournalError> {
        let sync_handle = file.try_clone().map_err(io_err(&path))?;
        let identity = identity(&file.metadata().map_err(io_err(&path))?);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                file,
                len,
                seq,
                last_hash,
                durable: seq,
                syncing: false,
                wanted: seq,
                poisoned: None,
                syncs: 0,
                closed: false,
            }),
            changed: Condvar::new(),
            durable: tokio::sync::watch::Sender::new((seq, false)),
            sync_handle,
        });
        let committer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("journal-commit".to_owned())
                .spawn(move || commit(&shared))
                .map_err(io_err(&path))?
        };
        Ok(FileJournal {
            path,
            shared,
            committer: Some(committer),
            identity,
        })
    }

    /// Why this writer must not append: the path names another file now,
    /// or the file grew behind its back. Either way a second writer got in,
    /// and writing on would fork the history.
    fn still_ours(&self, g: &Inner) -> Result<(), String> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if identity(&meta) == self.identity => {}
            Ok(_) => return Err("the journal file was replaced by another".to_owned()),
            Err(e) => return Err(format!("the journal file is gone ({e})")),
        }
        let len = g.file.metadata().map_err(|e| e.to_string())?.len();
        if len != g.len {
            return Err(format!(
                "the journal is {len} bytes where this writer's last record ends at {}: someone else wrote to it",
                g.len
            ));
        }
        Ok(())
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
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
        let mut records = self.append_all(std::slice::from_ref(event))?;
        Ok(records.pop().expect("one record per event"))
    }

    /// Appends events in order with one write and one wait for the disk,
    /// and returns once all are on disk. What follows from one step of the
    /// engine (an attempt's output and its end) is journaled together: a
    /// crash keeps a prefix of them, as it would of appends one by one,
    /// for one fsync instead of several.
    pub fn append_all(&self, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        let records = self.write_all(events)?;
        if let Some(last) = records.last() {
            self.wait_durable(last.seq)?;
        }
        Ok(records)
    }

    /// Writes events in order, in one write, and returns their records
    /// without waiting for the disk: they are durable once
    /// [`FileJournal::wait_durable`] or [`FileJournal::durable`] says so,
    /// and nobody may act on them before.
    pub fn write_all(&self, events: &[Event]) -> Result<Vec<Record>, JournalError> {
        let mut g = self.lock_inner();
        if let Some(e) = self.poisoned(&g) {
            return Err(e);
        }
        if let Err(reason) = self.still_ours(&g) {
            g.poisoned = Some(reason);
            self.shared.tell(&g);
            return Err(self.poisoned(&g).expect("just poisoned"));
        }
        let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut lines = String::new();
        let mut records = Vec::with_capacity(events.len());
        let (mut seq, mut prev) = (g.seq, g.last_hash.clone());
        for event in events {
            seq += 1;
            let (line, hash) = encode(FORMAT, seq, &at, &prev, event);
            lines.push_str(&line);
            records.push(Record {
                v: FORMAT,
                seq,
                at: at.clone(),
                prev: std::mem::replace(&mut prev, hash.clone()),
                event: event.clone(),
                hash,
            });
        }
        if let Err(e) = g.file.write_all(lines.as_bytes()) {
            // Part of the lines may be on disk: nothing may follow them.
            g.poisoned = Some(format!("a write failed: {e}"));
            self.shared.tell(&g);
            return Err(JournalError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        g.len += lines.len() as u64;
        g.last_hash = prev;
        g.seq = seq;
        Ok(records)
    }

    /// Returns once every record up to `seq` is on disk, blocking the
    /// thread; an error if the journal was poisoned first. Leads an fsync
    /// when none is under way (it covers whatever others wrote meanwhile),
    /// else waits for the one under way and, if need be, the next.
    pub fn wait_durable(&self, seq: u64) -> Result<(), JournalError> {
        let mut g = self.lock_inner();
        loop {
            if g.durable >= seq {
                return Ok(());
            }
            if let Some(e) = self.poisoned(&g) {
                return Err(e);
            }
            g = if g.syncing {
                self.shared
                    .changed
                    .wait(g)
                    .unwrap_or_else(|p| p.into_inner())
            } else {
                self.shared.sync(g).0
            };
        }
    }

    /// [`FileJournal::wait_durable`] for async code: no thread waits; the
    /// journal's committer thread runs the fsyncs.
    pub async fn durable(&self, seq: u64) -> Result<(), JournalError> {
        {
            let mut g = self.lock_inner();
            if g.durable < seq && g.wanted < seq {
                g.wanted = seq;
                self.shared.changed.notify_all();
            }
        }
        let mut told = self.shared.durable.subscribe();
        // The sender lives as long as `self`: the wait ends by its answer.
        let _ = told
            .wait_for(|&(durable, poisoned)| durable >= seq || poisoned)
            .await;
        let g = self.lock_inner();
        match self.poisoned(&g) {
            Some(e) if g.durable < seq => Err(e),
            _ => Ok(()),
        }
    }

    /// The highest sequence number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable.borrow().0
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
