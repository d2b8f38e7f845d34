//! The commands that talk to a Kubernetes cluster: `operator` and
//! `approve --k8s`. Wiring only; the behaviour is blackstart-operator's.

use blackstart_operator::steer::{self, SteerError};
use blackstart_operator::{OperatorError, Options, Settings};

use crate::runs::{note, runtime};
use crate::{CliError, exit};

/// `approve RUN STAGE --k8s`: appends the approval to the RestartRun's spec.
pub fn approve(
    run: &str,
    stage: &str,
    by: &str,
    role: Option<String>,
    namespace: Option<String>,
) -> Result<u8, CliError> {
    let rt = runtime()?;
    rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| CliError::Runtime(OperatorError::Client(e).to_string()))?;
        let ns = namespace.unwrap_or_else(|| client.default_namespace().to_owned());
        match steer::approve(client, &ns, run, stage, by, role).await {
            Ok(role) => {
                let role = role.map(|r| format!(" as {r}")).unwrap_or_default();
                note(&format!(
                    "approval of `{stage}` by {by}{role} added to RestartRun {ns}/{run}; the operator records it"
                ));
                Ok(exit::SUCCESS)
            }
            Err(e @ (SteerError::NotFound { .. } | SteerError::Refused(_))) => {
                Err(CliError::Usage(e.to_string()))
            }
            Err(e) => Err(CliError::Runtime(e.to_string())),
        }
    })
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
