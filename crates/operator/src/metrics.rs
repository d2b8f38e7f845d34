//! What the operator tells Prometheus, and the endpoints kubelet probes.
//!
//! Three things a platform team watches during a restart: how many runs
//! stand in each phase, how long stages take, and how often health probes
//! fail. Labels stay few (phase, playbook), so a run of thousands of systems
//! does not become thousands of series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use blackstart_engine::RunPhase;

type Labels = Vec<(String, String)>;

const PHASES: [RunPhase; 8] = [
    RunPhase::Pending,
    RunPhase::Running,
    RunPhase::RollingBack,
    RunPhase::Paused,
    RunPhase::Succeeded,
    RunPhase::Degraded,
    RunPhase::Failed,
    RunPhase::RolledBack,
];

pub struct Metrics {
    registry: Registry,
    runs: Family<Labels, Gauge>,
    stage_seconds: Family<Labels, Histogram>,
    probe_failures: Family<Labels, Counter>,
    api_retries: Family<Labels, Counter>,
    reconciles: Counter,
    reconcile_errors: Counter,
    /// Each run's last known phase, so the gauge moves a run, not adds one.
    phases: Mutex<HashMap<String, String>>,
    /// Whether this replica holds the lease and drives runs.
    pub leading: AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn phase_label(phase: &str) -> Labels {
    vec![("phase".to_owned(), phase.to_owned())]
}

fn playbook_label(playbook: &str) -> Labels {
    vec![("playbook".to_owned(), playbook.to_owned())]
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("blackstart");
        let runs = Family::<Labels, Gauge>::default();
        // Every phase is present from the start, at 0, so dashboards and
        // alerts see the series before the first run.
        for phase in PHASES {
            let _ = runs.get_or_create(&phase_label(&format!("{phase:?}")));
        }
        // 1 s to about 4.5 h: a stage of a restart is seconds to hours.
        let stage_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 15))
        });
        let probe_failures = Family::<Labels, Counter>::default();
        let api_retries = Family::<Labels, Counter>::default();
        let reconciles = Counter::default();
        let reconcile_errors = Counter::default();
        registry.register("runs", "RestartRuns by phase", runs.clone());
        registry.register(
            "stage_duration_seconds",
            "How long stages took, from start to their gate's end",
            stage_seconds.clone(),
        );
        registry.register(
            "probe_failures",
            "Failed health probe rounds",
            probe_failures.clone(),
        );
        registry.register(
            "api_retries",
            "Kubernetes API calls of steps and probes retried after a transient error (429, 5xx, a dropped connection)",
            api_retries.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciliations of RestartRuns",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed and were retried",
            reconcile_errors.clone(),
        );
        Metrics {
            registry,
            runs,
            stage_seconds,
            probe_failures,
            api_retries,
            reconciles,
            reconcile_errors,
            phases: Mutex::new(HashMap::new()),
            leading: AtomicBool::new(false),
        }
    }

    pub fn reconciled(&self) {
        self.reconciles.inc();
    }

    pub fn reconcile_failed(&self) {
        self.reconcile_errors.inc();
    }

    /// Moves `run` to `phase` in the runs gauge.
    pub fn set_phase(&self, run: &str, phase: &str) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        let old = phases.insert(run.to_owned(), phase.to_owned());
        if old.as_deref() == Some(phase) {
            return;
        }
        if let Some(old) = old {
            self.runs.get_or_create(&phase_label(&old)).dec();
        }
        self.runs.get_or_create(&phase_label(phase)).inc();
    }

    /// Takes a deleted run out of the runs gauge.
    pub fn forget(&self, run: &str) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = phases.remove(run) {
            self.runs.get_or_create(&phase_label(&old)).dec();
        }
    }

    pub fn stage_finished(&self, playbook: &str, seconds: f64) {
        self.stage_seconds
            .get_or_create(&playbook_label(playbook))
            .observe(seconds);
    }

    /// A counter to hand the engine for one playbook's probe failures.
    pub fn probe_failures(&self, playbook: &str) -> Counter {
        self.probe_failures
            .get_or_create(&playbook_label(playbook))
            .clone()
    }

    /// A counter to hand the engine for one playbook's API retries.
    pub fn api_retries(&self, playbook: &str) -> Counter {
        self.api_retries
            .get_or_create(&playbook_label(playbook))
            .clone()
    }

    /// The OpenMetrics text Prometheus scrapes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics`, `/healthz` (the process answers) and `/readyz` (it
/// answers and is past start-up; a standby replica is ready too, so a
/// rollout of the Deployment does not wait for the lease).
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors, say: back off rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = Arc::clone(&metrics);
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &metrics)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn respond<B>(req: &Request<B>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            let role = if metrics.leading.load(Ordering::Relaxed) {
                "leading"
            } else {
                "standby"
            };
            (StatusCode::OK, "text/plain", format!("ok: {role}\n"))
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}
