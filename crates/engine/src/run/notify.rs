//! Notifications (`spec.notify`): the room told, without being asked, that
//! a gate waits, a stage failed, the run paused, rolled back, ended
//! Degraded or succeeded.
//!
//! The notifier listens to the engine's one stream of records beside the
//! run, never in its way: each delivery is a task of its own, retried with
//! backoff, and a receiver that is down delays nothing the run does. Every
//! attempt is journaled (`Notified`), so the audit shows who was told what
//! and when, and a receiver that never got word is on the record. When the
//! run returns, what is still being delivered is given a bounded time to
//! finish: the last word (succeeded, rolled back) is the one a room most
//! needs.
//!
//! A webhook URL carries its token: it is resolved from the environment at
//! the moment of sending, and nothing written anywhere names more than its
//! host. Errors are taken without their URL and redacted besides.

use std::time::Instant;

use blackstart_model::playbook::{Notify, NotifyOn};

use super::*;

/// Attempts per notification, the first included.
const ATTEMPTS: u32 = 5;
/// Before the second attempt; doubled before each one after.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long deliveries under way may go on once the run has returned.
const FLUSH: Duration = Duration::from_secs(30);

/// The notifier of a run under way; flushed by [`Notifier::finish`], and
/// gone with its deliveries if dropped (the run's task aborted).
pub(super) struct Notifier {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Notifier {
    /// Starts telling the plan's receivers, if it has any. Gates that wait
    /// already (a resumed run) are told of again: whoever decides may not
    /// know the run is back.
    pub(super) fn start<S: RunStore + 'static>(inner: &Arc<Inner<S>>) -> Option<Notifier> {
        if inner.plan.notify.is_empty() {
            return None;
        }
        let records = inner.records.subscribe();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(inner);
        let task = tokio::spawn(async move { listen(inner, records, stopped).await });
        Some(Notifier {
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Lets deliveries under way finish, for at most [`FLUSH`].
    pub(super) async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// One happening to tell of.
struct Told {
    on: NotifyOn,
    stage: Option<String>,
    system: Option<String>,
    reason: Option<String>,
    reminder: bool,
    head: (u64, String),
}

async fn listen<S: RunStore + 'static>(
    inner: Arc<Inner<S>>,
    mut records: broadcast::Receiver<Arc<Record>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut deliveries = JoinSet::new();
    // Gates waiting, with when each receiver with `remind` is reminded next.
    let mut reminders: Vec<(String, usize, Instant)> = Vec::new();
    // Filled in from the journal's last record when sent.
    let head = |_: &Inner<S>| (0, String::new());
    let waiting: Vec<String> = inner
        .lock()
        .stages
        .iter()
        .filter(|s| s.phase == StagePhase::Gate && asks_people(&inner, &s.name))
        .map(|s| s.name.clone())
        .collect();
    for stage in waiting {
        let told = Told {
            on: NotifyOn::GateWaiting,
            stage: Some(stage.clone()),
            system: None,
            reason: None,
            reminder: true,
            head: head(&inner),
        };
        schedule_reminders(&inner, &mut reminders, &stage);
        tell(&inner, &mut deliveries, told);
    }
    loop {
        let next = reminders.iter().map(|r| r.2).min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            record = records.recv() => match record {
                Ok(record) => {
                    for told in happenings(&inner, &record, &mut reminders) {
                        tell(&inner, &mut deliveries, told);
                    }
                }
                // Fell behind a burst of records: what it missed is in the
                // journal; the phases that matter come again.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = sleep => {
                let now = Instant::now();
                let due: Vec<(String, usize)> = reminders
                    .iter()
                    .filter(|r| r.2 <= now)
                    .map(|r| (r.0.clone(), r.1))
                    .collect();
                for (stage, receiver) in due {
                    if let Some(r) = reminders.iter_mut().find(|r| r.0 == stage && r.1 == receiver) {
                        let every = inner.plan.notify[receiver].remind.map_or(FLUSH, |d| d.to_std());
                        r.2 = now + every;
                    }
                    let told = Told {
                        on: NotifyOn::GateWaiting,
                        stage: Some(stage),
                        system: None,
                        reason: None,
                        reminder: true,
                        head: head(&inner),
                    };
                    deliver_to(&inner, &mut deliveries, receiver, &told);
                }
            }
            _ = &mut stopped => break,
        }
    }
    // The last records (the run's end) may still be in the channel.
    while let Ok(record) = records.try_recv() {
        for told in happenings(&inner, &record, &mut reminders) {
            tell(&inner, &mut deliveries, told);
        }
    }
    // Given up at once after an interrupt (a second Ctrl-C): the person
    // asked for the process to end now.
    let deadline = tokio::time::Instant::now() + FLUSH;
    while !deliveries.is_empty() {
        if inner.interrupted.load(Ordering::SeqCst) {
            break;
        }
        tokio::select! {
            _ = deliveries.join_next() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    deliveries.abort_all();
}

fn schedule_reminders<S: RunStore + 'static>(
    inner: &Inner<S>,
    reminders: &mut Vec<(String, usize, Instant)>,
    stage: &str,
) {
    for (i, n) in inner.plan.notify.iter().enumerate() {
        if let Some(every) = n.remind
            && wants(n, NotifyOn::GateWaiting)
            && !reminders.iter().any(|r| r.0 == stage && r.1 == i)
        {
            reminders.push((stage.to_owned(), i, Instant::now() + every.to_std()));
        }
    }
}

/// Whether the stage's gate waits for people's approvals.
fn asks_people<S: RunStore + 'static>(inner: &Inner<S>, stage: &str) -> bool {
    inner
        .plan
        .stages
        .iter()
        .any(|s| s.name == stage && !s.gate.approvals.is_empty())
}

fn wants(n: &Notify, on: NotifyOn) -> bool {
    n.on.is_empty() || n.on.contains(&on)
}

/// What one record tells of, if anything; keeps the reminders current.
fn happenings<S: RunStore + 'static>(
    inner: &Inner<S>,
    record: &Record,
    reminders: &mut Vec<(String, usize, Instant)>,
) -> Vec<Told> {
    let head = (record.seq, record.hash.clone());
    let told = |on, stage: Option<&String>, system: Option<String>, reason: &Option<String>| Told {
        on,
        stage: stage.cloned(),
        system,
        reason: reason.clone(),
        reminder: false,
        head: head.clone(),
    };
    match &record.event {
        Event::Stage {
            stage,
            phase,
            reason,
        } => {
            if *phase != StagePhase::Gate {
                reminders.retain(|r| &r.0 != stage);
            }
            match phase {
                // A gate that asks for no approval waits for nobody.
                StagePhase::Gate if !asks_people(inner, stage) => Vec::new(),
                StagePhase::Gate => {
                    schedule_reminders(inner, reminders, stage);
                    vec![told(NotifyOn::GateWaiting, Some(stage), None, reason)]
                }
                StagePhase::Failed => {
                    let system = inner
                        .lock()
                        .systems
                        .iter()
                        .find(|s| &s.stage == stage && s.phase == SystemPhase::Failed)
                        .map(|s| s.id.clone());
                    vec![told(NotifyOn::StageFailed, Some(stage), system, reason)]
                }
                _ => Vec::new(),
            }
        }
        Event::Run { phase, reason } => {
            let on = match phase {
                RunPhase::Paused => NotifyOn::Paused,
                RunPhase::RolledBack => NotifyOn::RolledBack,
                RunPhase::Degraded => NotifyOn::Degraded,
                RunPhase::Succeeded => NotifyOn::Succeeded,
                _ => return Vec::new(),
            };
            // Nobody is waited for once the run stops.
            reminders.clear();
            vec![told(on, None, None, reason)]
        }
        _ => Vec::new(),
    }
}

/// Sends `told` to every receiver that wants it.
fn tell<S: RunStore + 'static>(inner: &Arc<Inner<S>>, deliveries: &mut JoinSet<()>, told: Told) {
    for (i, n) in inner.plan.notify.iter().enumerate() {
        if wants(n, told.on) {
            deliver_to(inner, deliveries, i, &told);
        }
    }
}

/// The POST body: DESIGN.md's fields, and a line chat tools show as it is.
fn body<S: RunStore + 'static>(inner: &Inner<S>, told: &Told) -> serde_json::Value {
    let state = inner.lock();
    let run = state.run.as_str();
    let mut waiting_for: Vec<String> = Vec::new();
    if let Some(stage) = &told.stage
        && told.on == NotifyOn::GateWaiting
        && let (Some(planned), Some(st)) = (
            inner.plan.stages.iter().find(|s| &s.name == stage),
            state.stage(stage),
        )
    {
        waiting_for = st
            .roles_missing(&planned.gate.approvals)
            .into_iter()
            .cloned()
            .collect();
    }
    let who = format!("run {run} ({})", state.playbook);
    let because = told
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let stage = told.stage.as_deref().unwrap_or_default();
    let mut text = match told.on {
        NotifyOn::GateWaiting if waiting_for.is_empty() => format!(
            "{who}: the gate of stage {stage} {} (its soak)",
            if told.reminder {
                "still waits"
            } else {
                "waits"
            }
        ),
        NotifyOn::GateWaiting => format!(
            "{who}: the gate of stage {stage} {} for {}. Approve: blackstart approve {run} {stage} --by NAME --role {}",
            if told.reminder {
                "still waits"
            } else {
                "waits"
            },
            waiting_for.join(", "),
            waiting_for[0]
        ),
        NotifyOn::StageFailed => format!(
            "{who}: stage {stage} failed{}{because}",
            told.system
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ),
        NotifyOn::Paused => format!("{who} paused{because}. Resume: blackstart resume {run}"),
        NotifyOn::RolledBack => format!("{who} rolled back{because}"),
        NotifyOn::Degraded => format!("{who} ended Degraded{because}"),
        NotifyOn::Succeeded => {
            let healthy = state
                .systems
                .iter()
                .filter(|s| s.phase == SystemPhase::Healthy)
                .count();
            format!("{who} succeeded: {healthy} systems healthy")
        }
    };
    if state.drill {
        text = format!("[drill] {text}");
    }
    let text = inner.cx.secrets.redact(&text);
    let mut body = serde_json::json!({
        "run": run,
        "playbook": state.playbook,
        "event": told.on.as_str(),
        "phase": state.phase,
        "head": { "seq": told.head.0, "hash": told.head.1 },
        "text": text,
    });
    if let Some(stage) = &told.stage {
        body["stage"] = stage.clone().into();
    }
    if let Some(system) = &told.system {
        body["system"] = system.clone().into();
    }
    if !waiting_for.is_empty() {
        body["waitingFor"] = waiting_for.into();
    }
    if told.reminder {
        body["reminder"] = true.into();
    }
    if state.drill {
        body["drill"] = true.into();
    }
    body
}

/// One delivery, as a task: attempts with backoff, each journaled.
fn deliver_to<S: RunStore + 'static>(
    inner: &Arc<Inner<S>>,
    deliveries: &mut JoinSet<()>,
    receiver: usize,
    told: &Told,
) {
    let mut told_head = told.head.clone();
    if told_head.1.is_empty() {
        // A reminder or a resume: the head is the journal's last record.
        told_head = inner.head.lock().unwrap_or_else(|p| p.into_inner()).clone();
    }
    let body = body(
        inner,
        &Told {
            on: told.on,
            stage: told.stage.clone(),
            system: told.system.clone(),
            reason: told.reason.clone(),
            reminder: told.reminder,
            head: told_head,
        },
    );
    let inner = Arc::clone(inner);
    let (on, stage, reminder) = (told.on, told.stage.clone(), told.reminder);
    deliveries.spawn(async move {
        let written = &inner.plan.notify[receiver].webhook.url;
        let mut label = format!("webhook {}", receiver + 1);
        let record =
            |attempt, delivered, status: Option<u16>, error: Option<String>, last, label: &str| {
                let _ = inner.emit_blocking(Event::Notified {
                    notification: on,
                    stage: stage.clone(),
                    receiver: label.to_owned(),
                    attempt,
                    delivered,
                    status,
                    error: error.map(|e| inner.cx.secrets.redact(&e)),
                    last,
                    reminder,
                });
            };
        let url = match inner.cx.secrets.resolve(written) {
            Ok(url) => url,
            Err(e) => {
                record(
                    0,
                    false,
                    None,
                    Some(format!("its URL cannot be resolved: {e}")),
                    true,
                    &label,
                );
                return;
            }
        };
        if let Ok(parsed) = reqwest::Url::parse(&url) {
            let host = parsed.host_str().unwrap_or_default();
            label = match parsed.port() {
                Some(port) => format!("{label} ({host}:{port})"),
                None => format!("{label} ({host})"),
            };
        }
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let sent = inner
                .cx
                .http
                .post(&url)
                .timeout(POST_TIMEOUT)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string())
                .send()
                .await;
            let last = attempt == ATTEMPTS;
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    record(
                        attempt,
                        true,
                        Some(answer.status().as_u16()),
                        None,
                        true,
                        &label,
                    );
                    return;
                }
                Ok(answer) => {
                    record(
                        attempt,
                        false,
                        Some(answer.status().as_u16()),
                        None,
                        last,
                        &label,
                    );
                }
                Err(e) => {
                    // Never the URL: it carries the token.
                    let e = e.without_url();
                    let why = if e.is_timeout() {
                        format!("no answer within {}s", POST_TIMEOUT.as_secs())
                    } else {
                        crate::step::http::cause(&e)
                    };
                    record(attempt, false, None, Some(why), last, &label);
                }
            }
            if !last {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    });
}
