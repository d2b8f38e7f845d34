//! The things a run does to a system: actions (start, stop) and checks
//! (verify, health), one module per kind behind the [`Step`] trait.
//!
//! A step never fails with an error: whatever goes wrong (a program that
//! cannot be found, a refused connection, an unknown host, a timeout) is a
//! failed [`Outcome`] whose detail a commander can act on, already redacted.
//! Adding a kind means one module here, one arm in [`run_action`] or
//! [`run_check`], and one variant in the model's schema.

mod exec;
pub(crate) mod http;
pub mod kubernetes;
pub mod retry;
pub mod ssh;
mod tcp;

use std::future::Future;
use std::time::Duration;

use blackstart_model::playbook::{Action, Check, Method};

use crate::secrets::Secrets;

/// At most this much of a step's output is kept: the end of it, where the
/// error usually is.
pub const MAX_OUTPUT: usize = 4096;

/// How a step went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// One line on what happened, for status and the journal; redacted.
    pub detail: String,
    /// An exec step's exit code.
    pub exit_code: Option<i32>,
    /// What the step printed or received, truncated and redacted.
    pub output: String,
    /// Transient API errors retried on the way (kubernetes steps); the
    /// journal says so in one line rather than one record each.
    pub retries: u32,
}

impl Outcome {
    pub fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            detail: detail.into(),
            exit_code: None,
            output: String::new(),
            retries: 0,
        }
    }

    pub fn failed(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            detail: detail.into(),
            exit_code: None,
            output: String::new(),
            retries: 0,
        }
    }
}

/// What a step needs from the run around it.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub secrets: Secrets,
    pub http: reqwest::Client,
    /// Used when the step sets no timeout of its own.
    pub timeout: Duration,
    /// Where kubernetes steps go; they fail, saying why, without one.
    pub cluster: Option<kubernetes::Cluster>,
    /// Told of every failed probe round, for metrics.
    pub on_probe_failure: Option<ProbeHook>,
    /// Told of every retry of a transient API error, for metrics.
    pub on_api_retry: Option<ProbeHook>,
    /// `defaults.inheritEnv` of the plan: what every exec step gets from
    /// blackstart's environment besides [`ALWAYS_INHERITED`].
    pub inherit_env: Vec<String>,
    /// Set for a start or stop attempt, which the journal follows.
    pub attempt: Option<AttemptHooks>,
    /// For a system's health checks: the workload its start scaled and the
    /// count it set. A readiness check of that workload passes only at that
    /// count, so "Healthy" means running as started.
    pub scaled: Option<(blackstart_model::playbook::Workload, u32)>,
    /// The system's site, when it is reached over ssh: exec steps run there.
    pub remote: Option<std::sync::Arc<ssh::Site>>,
    /// By site id, the clusters of sites with `connect.kubernetes`: their
    /// systems' kubernetes steps go there, never to [`StepContext::cluster`].
    pub site_clusters: std::sync::Arc<std::collections::HashMap<String, kubernetes::Cluster>>,
    /// Health checks under way at once, across the run: at most
    /// [`PROBES_AT_ONCE`] (see [`crate::probe`]).
    pub probes: std::sync::Arc<tokio::sync::Semaphore>,
}

/// How many health checks a run has under way at once. A soak watches
/// every system of its stage; a stage of 4,000 systems probed all at once
/// would hold 4,000 sockets (past the usual limit of 1,024 open files)
/// and, against hosts behind one address, open as many connections.
pub const PROBES_AT_ONCE: usize = 256;

/// The variables every exec step gets from blackstart's environment;
/// anything else it must declare (`env`) or opt into (`inheritEnv`).
pub const ALWAYS_INHERITED: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// What a start or stop attempt tells the run about its process.
#[derive(Clone)]
pub struct AttemptHooks {
    /// The value of [`crate::process::MARKER`] in the step's environment.
    pub marker: String,
    /// Called once the step's process runs, before it is waited for; an
    /// error (the journal could not record it) kills the process group and
    /// fails the step, since an attempt must not run unrecorded.
    pub spawned:
        std::sync::Arc<dyn Fn(crate::process::Process) -> Result<(), String> + Send + Sync>,
}

impl std::fmt::Debug for AttemptHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptHooks")
            .field("marker", &self.marker)
            .finish_non_exhaustive()
    }
}

/// Something told of each failed probe round or API retry (the operator
/// counts them).
#[derive(Clone)]
pub struct ProbeHook(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ProbeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeHook")
    }
}

impl StepContext {
    pub fn new(secrets: Secrets, timeout: Duration) -> Result<StepContext, String> {
        Ok(StepContext {
            secrets,
            http: http::client()?,
            timeout,
            cluster: None,
            on_probe_failure: None,
            on_api_retry: None,
            inherit_env: Vec::new(),
            attempt: None,
            scaled: None,
            remote: None,
            site_clusters: Default::default(),
            probes: std::sync::Arc::new(tokio::sync::Semaphore::new(PROBES_AT_ONCE)),
        })
    }

    /// The same context, with a cluster for kubernetes steps.
    pub fn with_cluster(self, cluster: kubernetes::Cluster) -> StepContext {
        StepContext {
            cluster: Some(cluster),
            ..self
        }
    }

    /// The step's own timeout if it has one, else the context's.
    fn timeout_or(&self, own: Option<blackstart_model::Duration>) -> Duration {
        own.map_or(self.timeout, |d| d.to_std())
    }
}

/// One kind of step.
pub trait Step {
    fn run(&self, cx: &StepContext) -> impl Future<Output = Outcome> + Send;
}

/// Runs a start or stop action.
pub async fn run_action(action: &Action, cx: &StepContext) -> Outcome {
    match action {
        Action::Exec(e) => e.run(cx).await,
        Action::Http(h) => {
            http::Request {
                http: h,
                default_method: Method::Post,
            }
            .run(cx)
            .await
        }
        Action::Kubernetes(k) => kubernetes::act(k, cx).await,
        // A manual step waits for a person's confirmation, which comes
        // through the run's store; the scheduler handles it, not a step.
        Action::Manual(m) => Outcome::failed(format!(
            "manual step needs a confirmation: {}",
            m.instruction
        )),
        Action::Noop(_) => Outcome::ok("noop"),
    }
}

/// Runs a health or verify check once.
pub async fn run_check(check: &Check, cx: &StepContext) -> Outcome {
    match check {
        Check::Http(h) => {
            http::Request {
                http: h,
                default_method: Method::Get,
            }
            .run(cx)
            .await
        }
        Check::Tcp(t) => t.run(cx).await,
        Check::Exec(e) => e.run(cx).await,
        Check::Kubernetes(w) => kubernetes::ready(w, cx).await,
    }
}

/// The end of a step's output as it may be shown: redacted first, then
/// cut to its last `MAX_OUTPUT` bytes at a character boundary. `total` is
/// how many bytes the step produced in all; `bytes` is their end, at least
/// `MAX_OUTPUT` plus the longest secret long when there was that much, so
/// that a secret straddling the cut is redacted whole before the cut.
/// `unfinished`: the stream was not read to its end, so its last bytes may
/// be the beginning of a secret.
fn shown(bytes: &[u8], total: u64, unfinished: bool, secrets: &Secrets) -> String {
    let longest = secrets.longest();
    // Three more bytes for a character cut in two at a window's edge.
    let margin = if longest > 0 { longest + 3 } else { 0 };
    let tail_margin = if unfinished { margin } else { 0 };
    let window = bytes.len().min(MAX_OUTPUT + margin + tail_margin);
    // When output came before the window, its first bytes may be the end
    // of a secret that began earlier: never shown.
    let skip = if (window as u64) < total { margin } else { 0 };
    let text = String::from_utf8_lossy(&bytes[bytes.len() - window..]);
    let text = secrets.redact_within(&text, skip, text.len().saturating_sub(tail_margin));
    if total as usize <= MAX_OUTPUT && text.len() <= MAX_OUTPUT && !unfinished {
        return text;
    }
    let mut start = text.len().saturating_sub(MAX_OUTPUT);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let what = if unfinished { "read" } else { "in all" };
    format!("[… {total} bytes {what}, the last shown]{}", &text[start..])
}

/// The end of a stream, bounded: memory stays at `cap` bytes however much
/// a step prints.
#[derive(Debug, Default)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    total: u64,
}

impl Tail {
    fn new(cap: usize) -> Tail {
        Tail {
            buf: Vec::with_capacity(cap.min(64 * 1024)),
            cap,
            total: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        self.buf.extend_from_slice(bytes);
        // Compact at twice the cap, so each byte is moved at most once more.
        if self.buf.len() > 2 * self.cap.max(1) {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
        }
    }

    fn end(&self) -> &[u8] {
        &self.buf[self.buf.len().saturating_sub(self.cap)..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_across_the_cut_is_redacted_whole() {
        let secrets = Secrets::with_lookup(std::sync::Arc::new(|_| None));
        let secret = "S".repeat(40);
        secrets.register([secret.clone()]);
        // The secret starts 20 bytes before the last MAX_OUTPUT bytes.
        let mut out = vec![b'x'; 100];
        out.extend_from_slice(secret.as_bytes());
        out.extend(std::iter::repeat_n(b'y', MAX_OUTPUT - 20));
        let mut tail = Tail::new(MAX_OUTPUT + secrets.longest());
        for chunk in out.chunks(7) {
            tail.push(chunk);
        }
        let text = shown(tail.end(), tail.total, false, &secrets);
        assert!(!text.contains("SSS"), "{text}");
        assert!(text.starts_with("[… "), "{text}");
        assert!(text.len() <= MAX_OUTPUT + 64);
    }

    #[test]
    fn no_part_of_a_secret_survives_when_redaction_shortens_the_window() {
        let secrets = Secrets::with_lookup(std::sync::Arc::new(|_| None));
        let secret = "0123456789abcdefghijklmnopqrstuvwxyz".to_owned();
        secrets.register([secret.clone()]);
        // A secret cut by the window's start, then the window full of whole
        // secrets, each shown much shorter than it is.
        let mut out = b"....".to_vec();
        out.extend_from_slice(secret.as_bytes());
        for _ in 0..(MAX_OUTPUT / secret.len() + 2) {
            out.extend_from_slice(secret.as_bytes());
            out.push(b' ');
        }
        let mut tail = Tail::new(MAX_OUTPUT + secrets.longest());
        tail.push(&out);
        let text = shown(tail.end(), tail.total, false, &secrets);
        for cut in 4..secret.len() {
            assert!(!text.contains(&secret[cut..]), "{cut}: {text}");
        }
        assert!(!text.contains("xyz"), "{text}");
    }

    #[test]
    fn a_secret_begun_at_the_end_of_an_unfinished_read_is_not_shown() {
        let secrets = Secrets::with_lookup(std::sync::Arc::new(|_| None));
        secrets.register(["TOPSECRETVALUE".to_owned()]);
        for short in [true, false] {
            let mut body = if short {
                b"ok ".to_vec()
            } else {
                vec![b'.'; 3 * MAX_OUTPUT]
            };
            body.extend_from_slice(b"TOPSEC"); // the read stopped here
            let text = shown(&body, body.len() as u64, true, &secrets);
            assert!(!text.contains("TOPSEC"), "{text}");
            assert!(text.starts_with("[… "), "{text}");
        }
    }

    #[test]
    fn a_tail_keeps_only_its_end() {
        let mut tail = Tail::new(10);
        for i in 0..10_000u32 {
            tail.push(i.to_string().as_bytes());
            assert!(tail.buf.len() <= 2 * 10 + 5);
        }
        assert_eq!(tail.end(), b"9799989999");
    }
}
