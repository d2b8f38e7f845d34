//! The commands that talk to a Kubernetes cluster: `operator` and
//! `approve --k8s` (wiring only; the behaviour is blackstart-operator's),
//! and the clusters a run's kubernetes steps go to, site by site.

use std::collections::HashMap;

use blackstart_engine::step::kubernetes::Cluster;
use blackstart_model::Plan;
use blackstart_operator::steer::{self, SteerError};
use blackstart_operator::{OperatorError, Options, Settings};

use blackstart_engine::decision::Decision;

use crate::runs::{Prepared, Signing, note, prepare, runtime};
use crate::{CliError, exit};

/// `approve RUN STAGE --k8s` and `confirm RUN SYSTEM --k8s`: checks the
/// decision against the RestartRun's journal as the operator will, signs it
/// if asked, and appends it to the RestartRun's spec.
pub fn decide(
    run: &str,
    decision: Decision,
    signing: &Signing,
    namespace: Option<String>,
) -> Result<u8, CliError> {
    let rt = runtime()?;
    rt.block_on(async {
        let (client, ns) = connect(namespace).await?;
        let (plan, state) = steer::plan_and_state(client.clone(), &ns, run)
            .await
            .map_err(refused)?;
        let request = match prepare(&plan, &state, decision, signing)? {
            Prepared::Message(text) => {
                crate::write_output(None, &text)?;
                return Ok(exit::SUCCESS);
            }
            Prepared::Ready(request) => request,
        };
        let d = request.decision();
        let role = steer::decide(client, &ns, run, &d).await.map_err(refused)?;
        let role = role.map(|r| format!(" as {r}")).unwrap_or_default();
        let of = if d.subject.is_empty() {
            String::new()
        } else {
            format!(" of `{}`", d.subject)
        };
        note(&format!(
            "{}{of} by {}{role} ({}) written to RestartRun {ns}/{run}; the operator checks and records it",
            d.kind.as_str(),
            d.by,
            if d.proof.signed() { "signed" } else { "unsigned" }
        ));
        Ok(exit::SUCCESS)
    })
}

/// The kubeconfig's cluster, and the namespace asked for or its default.
pub(crate) async fn connect(namespace: Option<String>) -> Result<(kube::Client, String), CliError> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| CliError::Runtime(OperatorError::Client(e).to_string()))?;
    let ns = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    Ok((client, ns))
}

/// What a person is told when the cluster says no: a missing run or a
/// refused decision is their input (exit 2), anything else a failure.
fn refused(e: SteerError) -> CliError {
    match e {
        e @ (SteerError::NotFound { .. } | SteerError::Refused(_)) => {
            CliError::Usage(e.to_string())
        }
        e => CliError::Runtime(e.to_string()),
    }
}

/// `operator`: runs until a signal or a lost Lease.
pub fn operator(
    namespace: Option<String>,
    listen: std::net::SocketAddr,
    lease_namespace: String,
    identity: Option<String>,
) -> Result<u8, CliError> {
    let identity = identity
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("blackstart-{}", std::process::id()));
    let opts = Options {
        namespace,
        listen,
        lease_namespace,
        identity,
        settings: Settings::default(),
    };
    let rt = runtime()?;
    rt.block_on(blackstart_operator::run(opts))
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    Ok(exit::SUCCESS)
}

/// The cluster of the kubeconfig's current context, or the pod's own.
pub async fn default_cluster() -> Result<Cluster, String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no cluster is reachable (kubeconfig or in-cluster config): {e}"))?;
    let namespace = client.default_namespace().to_owned();
    Ok(Cluster { client, namespace })
}

/// The cluster of a site's own kubeconfig context.
pub async fn site_cluster(plan: &Plan, site: &str) -> Result<Cluster, String> {
    let kube = plan
        .connections
        .get(site)
        .and_then(|c| c.kubernetes.as_ref());
    let Some(context) = kube.and_then(|k| k.context.clone()) else {
        return Err(format!(
            "site `{site}` is reached through a Secret (connect.kubernetes.secretRef), which only the operator reads; give it a `context` to run it from a terminal"
        ));
    };
    let options = kube::config::KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let config = kube::Config::from_kubeconfig(&options).await.map_err(|e| {
        format!("site `{site}`: kubeconfig context `{context}` cannot be used: {e}")
    })?;
    Cluster::from_config(config)
        .map_err(|e| format!("site `{site}`: no client for kubeconfig context `{context}`: {e}"))
}

/// The clusters a run's kubernetes steps go to (see `kubernetes::needs`). Only
/// what the plan needs is connected; a context that cannot be loaded stops
/// the run before anything starts, naming the site.
pub async fn clusters_for(
    plan: &Plan,
) -> Result<(Option<Cluster>, HashMap<String, Cluster>), CliError> {
    let (default_needed, sites) = blackstart_engine::step::kubernetes::needs(plan);
    let default = if default_needed {
        Some(default_cluster().await.map_err(|e| {
            CliError::Runtime(format!("the playbook has kubernetes steps, but {e}"))
        })?)
    } else {
        None
    };
    let mut own = HashMap::new();
    for site in sites {
        let cluster = site_cluster(plan, &site).await.map_err(CliError::Runtime)?;
        own.insert(site, cluster);
    }
    Ok((default, own))
}

/// A RestartRun's whole journal, read from its ConfigMap segments (or, for
/// a run of the release before, its status), for `status --k8s` and
/// `audit --k8s`.
pub fn journal(
    run: &str,
    namespace: Option<String>,
) -> Result<Vec<blackstart_engine::Record>, CliError> {
    runtime()?.block_on(async {
        let (client, ns) = connect(namespace).await?;
        steer::journal(client, &ns, run).await.map_err(refused)
    })
}
