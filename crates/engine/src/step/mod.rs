//! The things a run does to a system: actions (start, stop) and checks
//! (verify, health), one module per kind behind the [`Step`] trait.
//!
//! A step never fails with an error: whatever goes wrong (a program that
//! cannot be found, a refused connection, an unknown host, a timeout) is a
//! failed [`Outcome`] whose detail a commander can act on, already redacted.
//! Adding a kind means one module here, one arm in [`run_action`] or
//! [`run_check`], and one variant in the model's schema.

mod exec;
mod http;
pub mod kubernetes;
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
}

impl Outcome {
    pub fn ok(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            detail: detail.into(),
            exit_code: None,
            output: String::new(),
        }
    }

    pub fn failed(detail: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            detail: detail.into(),
            exit_code: None,
            output: String::new(),
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
}

/// Something told of each failed probe round (the operator counts them).
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

/// The last `MAX_OUTPUT` bytes of `bytes` as text, cut at a character boundary.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(MAX_OUTPUT);
    let text = String::from_utf8_lossy(&bytes[start..]);
    if start > 0 {
        format!("[… {start} bytes cut]{text}")
    } else {
        text.into_owned()
    }
}
