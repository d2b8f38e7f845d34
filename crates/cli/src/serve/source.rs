//! Where `serve` reads runs: a state directory's journals, or the
//! RestartRuns of a namespace (and their journals' ConfigMap segments).
//!
//! Both give the same three things, the list, one run's view and its new
//! records, so the pages do not know which they show. Reading never takes a
//! run's lock: the server looks on while `apply` or the operator writes.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blackstart_engine::journal::{self, Record};
use blackstart_engine::{RunDir, RunState, SystemPhase};
use blackstart_operator::RestartRun;
use blackstart_operator::steer::{self, SteerError};
use kube::Api;

use crate::view::{self, RunView, html::RunLine};

/// Where the runs are.
pub enum Source {
    Dir {
        state_dir: PathBuf,
        /// Each run's line in the list, with the journal length it was
        /// read at: a list of many runs reads only the journals that moved.
        lines: Mutex<HashMap<String, (u64, RunLine)>>,
        /// Each run's last view, with the journal length and lock state it
        /// was built at and when: a room of people looking at one large
        /// run builds its view once per change, not once per person. Kept
        /// a second at most, since a soak's time left moves with the clock.
        views: Mutex<HashMap<String, CachedView>>,
    },
    K8s {
        client: kube::Client,
        namespace: String,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// How long a built view is served again while its journal stays as it was.
const VIEW_KEPT: Duration = Duration::from_secs(1);

/// A run's view, and the journal it was built from.
pub struct CachedView {
    stamp: (u64, Option<bool>),
    at: Instant,
    view: Arc<RunView>,
}

/// A run's view from its records; `driven` is [`journal::driven`]'s answer
/// for a file journal, none for a RestartRun (its operator drives it).
fn built(records: &[Record], driven: Option<bool>) -> Result<RunView, String> {
    let (state, plan) = fold(records)?;
    let interrupted = crate::runs::interrupted(&state, driven);
    Ok(view::build(records, &state, plan, interrupted))
}

/// A RestartRun's records, `None` when there is no such run.
async fn restart_run_journal(
    client: &kube::Client,
    namespace: &str,
    run: &str,
) -> Result<Option<Vec<Record>>, String> {
    match steer::journal(client.clone(), namespace, run).await {
        Ok(records) => Ok(Some(records)),
        Err(SteerError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The state and plan of a journal, or why it is not a run.
fn fold(records: &[Record]) -> Result<(RunState, &blackstart_model::Plan), String> {
    let state =
        RunState::fold(records.iter().map(|r| (r.seq, &r.event))).map_err(|e| e.to_string())?;
    let plan = match records.first().map(|r| &r.event) {
        Some(blackstart_engine::Event::RunStarted { plan, .. }) => plan,
        _ => return Err("the journal holds no plan".to_owned()),
    };
    Ok((state, plan))
}

fn line_of(state: &RunState, records: &[Record]) -> RunLine {
    RunLine {
        run: state.run.clone(),
        playbook: state.playbook.clone(),
        phase: format!("{:?}", state.phase),
        started_at: records.first().map(|r| r.at.clone()).unwrap_or_default(),
        updated_at: records.last().map(|r| r.at.clone()).unwrap_or_default(),
        systems: state.systems.len(),
        healthy: state
            .systems
            .iter()
            .filter(|s| s.phase == SystemPhase::Healthy)
            .count(),
        waiting: state.systems.iter().any(|s| s.waiting_for.is_some())
            || state
                .stages
                .iter()
                .any(|s| s.phase == blackstart_engine::StagePhase::Gate),
    }
}

/// The run's files, when `run` is a run id and its journal is there:
/// anything else (a missing run, a path trick) is no run.
fn journal_of(state_dir: &std::path::Path, run: &str) -> Option<RunDir> {
    let dir = RunDir::new(state_dir, run).ok()?;
    dir.journal().is_file().then_some(dir)
}

impl Source {
    pub fn dir(state_dir: PathBuf) -> Source {
        Source::Dir {
            state_dir,
            lines: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
        }
    }

    /// What the pages say they show.
    pub fn describe(&self) -> String {
        match self {
            Source::Dir { state_dir, .. } => format!("state directory {}", state_dir.display()),
            Source::K8s { namespace, .. } => format!("RestartRuns in namespace {namespace}"),
        }
    }

    /// Every run, newest first.
    pub async fn runs(&self) -> Result<Vec<RunLine>, String> {
        let mut out = match self {
            Source::Dir {
                state_dir, lines, ..
            } => {
                let root = state_dir.join("runs");
                let entries = match std::fs::read_dir(&root) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(format!("{}: {e}", root.display())),
                };
                let mut out = Vec::new();
                for entry in entries.filter_map(Result::ok) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let Ok(dir) = RunDir::new(state_dir, &name) else {
                        continue;
                    };
                    let Ok(meta) = std::fs::metadata(dir.journal()) else {
                        continue;
                    };
                    if let Some((len, line)) = lines.lock().map_err(|e| e.to_string())?.get(&name)
                        && *len == meta.len()
                    {
                        out.push(line.clone());
                        continue;
                    }
                    let read = {
                        let dir = dir.clone();
                        tokio::task::spawn_blocking(move || journal::read(&dir))
                            .await
                            .map_err(|e| e.to_string())?
                    };
                    let Ok(records) = read else { continue };
                    let Ok((state, _)) = fold(&records) else {
                        continue;
                    };
                    let line = line_of(&state, &records);
                    lines
                        .lock()
                        .map_err(|e| e.to_string())?
                        .insert(name, (meta.len(), line.clone()));
                    out.push(line);
                }
                out
            }
            Source::K8s { client, namespace } => {
                let api: Api<RestartRun> = Api::namespaced(client.clone(), namespace);
                let list = api
                    .list(&Default::default())
                    .await
                    .map_err(|e| format!("cannot list RestartRuns in {namespace}: {e}"))?;
                list.items
                    .into_iter()
                    .map(|r| {
                        let status = r.status.clone().unwrap_or_default();
                        let count =
                            |k: &str| status.system_counts.get(k).copied().unwrap_or(0) as usize;
                        RunLine {
                            run: r.metadata.name.clone().unwrap_or_default(),
                            playbook: r.spec.playbook_ref.name.clone(),
                            phase: status.phase.clone().unwrap_or_else(|| "Pending".to_owned()),
                            started_at: status.start_time.clone().unwrap_or_default(),
                            updated_at: status.completion_time.clone().unwrap_or_default(),
                            systems: status.system_counts.values().map(|v| *v as usize).sum(),
                            healthy: count("Healthy"),
                            waiting: status.stages.iter().any(|s| s.phase == "Gate"),
                        }
                    })
                    .collect()
            }
        };
        out.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.run.cmp(&b.run)));
        Ok(out)
    }

    /// One run's view, `None` when there is no such run.
    pub async fn view(&self, run: &str) -> Result<Option<Arc<RunView>>, String> {
        let (records, driven) = match self {
            Source::Dir {
                state_dir, views, ..
            } => {
                let Some(dir) = journal_of(state_dir, run) else {
                    return Ok(None);
                };
                // What a cached view was built at: the journal's length and
                // whether a process held it.
                let len = std::fs::metadata(dir.journal())
                    .map_err(|e| e.to_string())?
                    .len();
                let driven = journal::driven(&dir);
                if let Some(c) = views.lock().map_err(|e| e.to_string())?.get(run)
                    && c.stamp == (len, driven)
                    && c.at.elapsed() < VIEW_KEPT
                {
                    return Ok(Some(Arc::clone(&c.view)));
                }
                let records = tokio::task::spawn_blocking(move || journal::read(&dir))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let view = Arc::new(built(&records, driven)?);
                views.lock().map_err(|e| e.to_string())?.insert(
                    run.to_owned(),
                    CachedView {
                        stamp: (len, driven),
                        at: Instant::now(),
                        view: Arc::clone(&view),
                    },
                );
                return Ok(Some(view));
            }
            Source::K8s { client, namespace } => {
                match restart_run_journal(client, namespace, run).await? {
                    Some(records) => (records, None),
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(Arc::new(built(&records, driven)?)))
    }

    /// A reader of the run's records after `from`, `None` when there is no
    /// such run.
    pub async fn tail(&self, run: &str, from: u64) -> Result<Option<Tail>, String> {
        match self {
            Source::Dir { state_dir, .. } => {
                let Some(dir) = journal_of(state_dir, run) else {
                    return Ok(None);
                };
                Ok(Some(Tail::File {
                    path: dir.journal(),
                    offset: 0,
                    partial: Vec::new(),
                    last: from,
                }))
            }
            Source::K8s { client, namespace } => {
                if restart_run_journal(client, namespace, run).await?.is_none() {
                    return Ok(None);
                }
                Ok(Some(Tail::K8s {
                    client: client.clone(),
                    namespace: namespace.clone(),
                    run: run.to_owned(),
                    last: from,
                }))
            }
        }
    }
}

/// New records of one run, as they come.
pub enum Tail {
    /// Reads the journal file from where it left off: a stream of a long
    /// run does not read the whole file at every look.
    File {
        path: PathBuf,
        offset: u64,
        partial: Vec<u8>,
        last: u64,
    },
    K8s {
        client: kube::Client,
        namespace: String,
        run: String,
        last: u64,
    },
}

impl Tail {
    /// How long to wait between looks.
    pub fn every(&self) -> Duration {
        match self {
            Tail::File { .. } => super::TAIL_EVERY,
            // Each look at a RestartRun is a few API requests.
            Tail::K8s { .. } => Duration::from_secs(1),
        }
    }

    /// The records written since the last look.
    pub async fn next(&mut self) -> Result<Vec<Record>, String> {
        match self {
            Tail::File {
                path,
                offset,
                partial,
                last,
            } => {
                let len = std::fs::metadata(&*path).map_err(|e| e.to_string())?.len();
                if len < *offset {
                    // Not this journal any more: read it again from the top.
                    *offset = 0;
                    partial.clear();
                }
                if len == *offset {
                    return Ok(Vec::new());
                }
                let mut file = std::fs::File::open(&*path).map_err(|e| e.to_string())?;
                file.seek(SeekFrom::Start(*offset))
                    .map_err(|e| e.to_string())?;
                let mut bytes = Vec::new();
                file.take(len - *offset)
                    .read_to_end(&mut bytes)
                    .map_err(|e| e.to_string())?;
                *offset += bytes.len() as u64;
                partial.extend_from_slice(&bytes);
                // Only complete lines: the writer may be half-way through one.
                let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
                    return Ok(Vec::new());
                };
                let complete: Vec<u8> = partial.drain(..=end).collect();
                let mut out = Vec::new();
                for line in complete.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if let Ok(r) = serde_json::from_slice::<Record>(line)
                        && r.seq > *last
                    {
                        *last = r.seq;
                        out.push(r);
                    }
                }
                Ok(out)
            }
            Tail::K8s {
                client,
                namespace,
                run,
                last,
            } => {
                let records = steer::journal(client.clone(), namespace, run)
                    .await
                    .map_err(|e| e.to_string())?;
                let new: Vec<Record> = records.into_iter().filter(|r| r.seq > *last).collect();
                if let Some(r) = new.last() {
                    *last = r.seq;
                }
                Ok(new)
            }
        }
    }
}
