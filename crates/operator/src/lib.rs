//! blackstart as a Kubernetes operator.
//!
//! Platform teams apply the same playbook file the CLI reads as a
//! `Playbook`, start a run by creating a `RestartRun`, and steer it with
//! kubectl. The engine is the CLI's, unchanged: this crate only gives it a
//! different [`RunStore`](blackstart_engine::RunStore) (the RestartRun's
//! status, [`store`]) and a different request source (the RestartRun's
//! spec, [`requests`]).
//!
//! - [`crd`]: the two resources, from which the CRDs are generated;
//! - [`controller`]: reconcile, the per-run drivers, Kubernetes Events;
//! - [`switches`]: the spec's `paused` and `rollback`, taken as decisions;
//! - [`metrics`]: Prometheus metrics and the health endpoints;
//! - [`run`]: the operator's main loop, behind a Lease so one replica leads.

pub mod controller;
pub mod crd;
pub mod metrics;
pub mod requests;
pub mod segments;
pub mod steer;
pub mod store;
pub mod switches;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::events::Reporter;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;

pub use controller::{Context, Error, Settings, reconcile};
pub use crd::{Playbook, RestartRun};

/// The name of the Lease replicas compete for, and of the Events' reporter.
pub const NAME: &str = "blackstart-operator";
/// Where the Lease lives unless told otherwise: the operator's own
/// namespace, fixed, so that an operator started on a laptop (whose
/// kubeconfig's default namespace is anything) and the in-cluster replicas
/// compete for the same Lease and never drive the same runs at once.
pub const LEASE_NAMESPACE: &str = "blackstart-system";
/// How long a Lease is held without renewal (kube-lease-manager's default),
/// and the margin before it within which a leader that could not confirm
/// it still holds the Lease stops driving.
const LEASE_SECONDS: u64 = 30;
const LEASE_MARGIN: u64 = 10;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Watch RestartRuns in this namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    /// The namespace of the Lease ([`LEASE_NAMESPACE`] by default).
    pub lease_namespace: String,
    /// This replica's name in the Lease and in Events (the pod's name).
    pub identity: String,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("no Kubernetes API to talk to (no in-cluster config, no kubeconfig): {0}")]
    Client(#[source] kube::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election on Lease {namespace}/{NAME} failed: {reason}")]
    Lease { namespace: String, reason: String },
    #[error(
        "lost the Lease {namespace}/{NAME} to another replica; exiting so that only one drives runs"
    )]
    LostLease { namespace: String },
    #[error("cannot start the journal's own client and runtime: {0}")]
    JournalIo(String),
}

/// Runs the operator until a signal (graceful: runs pause where they are
/// and resume from their status on the next leader) or a lost Lease.
pub async fn run(opts: Options) -> Result<(), OperatorError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| OperatorError::Client(kube::Error::InferConfig(e)))?;
    let client = Client::try_from(config.clone()).map_err(OperatorError::Client)?;
    let store_io = controller::StoreIo::dedicated(config).map_err(OperatorError::JournalIo)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| OperatorError::Listen {
            addr: opts.listen,
            source,
        })?;
    tokio::spawn(metrics::serve(listener, Arc::clone(&metrics)));

    let lease_ns = opts.lease_namespace.clone();
    let lease_err = |reason: String| OperatorError::Lease {
        namespace: lease_ns.clone(),
        reason,
    };
    let manager = LeaseManagerBuilder::new(client.clone(), NAME)
        .with_namespace(lease_ns.clone())
        .with_identity(opts.identity.clone())
        .build()
        .await
        .map_err(|e| lease_err(e.to_string()))?;
    let (mut leading, _lease_task) = manager.watch().await;
    tracing::info!(identity = %opts.identity, lease = %format!("{lease_ns}/{NAME}"), "waiting to lead");
    if leading.wait_for(|l| *l).await.is_err() {
        return Err(lease_err("the lease manager stopped".into()));
    }
    metrics.leading.store(true, Ordering::Relaxed);
    tracing::info!(identity = %opts.identity, "leading: driving RestartRuns");

    let runs: Api<RestartRun> = match &opts.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let reporter = Reporter {
        controller: NAME.into(),
        instance: Some(opts.identity.clone()),
    };
    let ctx = Arc::new(
        Context::new(client, reporter, Arc::clone(&metrics), opts.settings)
            .with_secrets_namespace(opts.lease_namespace.clone())
            .with_store_io(store_io),
    );
    let controller = Controller::new(runs, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, controller::error_policy, Arc::clone(&ctx))
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(run = %obj.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        });
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &lease_ns);
    let held = still_held(
        leases,
        opts.identity.clone(),
        Duration::from_secs(LEASE_SECONDS / 6),
        Duration::from_secs(LEASE_SECONDS - LEASE_MARGIN),
    );
    tokio::select! {
        () = controller => Ok(()),
        _ = leading.wait_for(|l| !*l) => {
            ctx.abandon();
            Err(OperatorError::LostLease { namespace: lease_ns })
        }
        () = held => {
            ctx.abandon();
            Err(OperatorError::LostLease { namespace: lease_ns })
        }
    }
}

/// Returns once this replica can no longer be sure it holds the Lease: the
/// Lease names another holder, or no read of it has succeeded for `within`
/// (the API server is out of reach, so renewals fail too, and another
/// replica may take the Lease once it expires). The lease manager keeps
/// saying "leader" while its renewals fail; this check makes the leader
/// stop driving and writing before the Lease can expire under it.
pub async fn still_held(leases: Api<Lease>, identity: String, every: Duration, within: Duration) {
    let mut confirmed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match leases.get_opt(NAME).await {
            Ok(Some(lease)) => {
                let holder = lease.spec.and_then(|s| s.holder_identity);
                if holder.as_deref() != Some(identity.as_str()) {
                    tracing::error!(holder = ?holder, "the Lease names another holder");
                    return;
                }
                confirmed = tokio::time::Instant::now();
            }
            Ok(None) => {
                tracing::error!("the Lease is gone");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the Lease to confirm it is held"),
        }
        if confirmed.elapsed() >= within {
            tracing::error!(
                seconds = within.as_secs(),
                "could not confirm the Lease is held; stopping before it can expire"
            );
            return;
        }
    }
}
