//! Steering a RestartRun from outside the cluster: what `blackstart approve
//! --k8s` does, checked first the way the CLI checks a file-journal run.
//!
//! An approval is appended to `spec.approvals` with a JSON Patch `add … /-`,
//! which the API server applies atomically, so two people approving at once
//! both land. The same patch works with plain kubectl (see the README).

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use blackstart_engine::Event;

use crate::crd::{ApprovalEntry, RestartRun};

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("no RestartRun {namespace}/{run}")]
    NotFound { namespace: String, run: String },
    #[error("{0}")]
    Refused(String),
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(#[source] kube::Error),
}

/// Adds an approval of `stage` to the run's spec, after checking that the
/// run is under way, has that stage, and that its gate needs `role`.
/// Returns the role the approval counts for.
pub async fn approve(
    client: kube::Client,
    namespace: &str,
    run: &str,
    stage: &str,
    by: &str,
    role: Option<String>,
) -> Result<Option<String>, SteerError> {
    let api: Api<RestartRun> = Api::namespaced(client, namespace);
    let obj = api
        .get_opt(run)
        .await
        .map_err(SteerError::Api)?
        .ok_or_else(|| SteerError::NotFound {
            namespace: namespace.to_owned(),
            run: run.to_owned(),
        })?;
    if obj.has_ended() {
        return Err(SteerError::Refused(format!(
            "run {run} has ended ({}); there is nothing left to approve",
            obj.phase()
        )));
    }
    let journal = obj
        .status
        .as_ref()
        .map(|s| s.journal.as_slice())
        .unwrap_or(&[]);
    let Some(Event::RunStarted { plan, .. }) = journal.first().map(|r| &r.event) else {
        return Err(SteerError::Refused(format!(
            "run {run} has no plan yet (is the operator running, and does its Playbook exist?)"
        )));
    };
    let role = plan
        .approval_role(run, stage, role)
        .map_err(SteerError::Refused)?;
    let entry = ApprovalEntry {
        stage: stage.to_owned(),
        by: by.to_owned(),
        role: role.clone(),
        at: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
    };
    let entry = serde_json::to_value(&entry).unwrap_or(Value::Null);
    let patch = if obj.spec.approvals.is_empty() {
        // No list to append to yet: create it, but only on the version
        // just read, so a concurrent first approval is not replaced.
        json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": obj.metadata.resource_version},
            {"op": "add", "path": "/spec/approvals", "value": [entry]},
        ])
    } else {
        json!([{"op": "add", "path": "/spec/approvals/-", "value": entry}])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| SteerError::Refused(e.to_string()))?;
    api.patch(run, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => SteerError::Refused(format!(
                "run {run} changed while approving; run the command again"
            )),
            other => SteerError::Api(other),
        })?;
    Ok(role)
}
