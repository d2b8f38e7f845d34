//! Steering a RestartRun from outside the cluster: what `blackstart approve
//! --k8s` does, checked first the way the CLI checks a file-journal run.
//!
//! An approval is appended to `spec.approvals` with a JSON Patch `add … /-`,
//! which the API server applies atomically, so two people approving at once
//! both land. The same patch works with plain kubectl (see the README).

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use blackstart_engine::decision::Decision;
use blackstart_engine::{Event, RunState};

use crate::crd::{ApprovalEntry, RestartRun, SignedEntry};

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("no RestartRun {namespace}/{run}")]
    NotFound { namespace: String, run: String },
    #[error("{0}")]
    Refused(String),
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(#[source] kube::Error),
}

/// Adds an approval of `stage` to the run's spec, after checking it as
/// the operator will: the stage's gate waits, needs `role`, `by` may fill
/// it, and the signature (if the playbook enrols a key for `by`) is good.
/// Returns the role the approval counts for.
pub async fn approve(
    client: kube::Client,
    namespace: &str,
    run: &str,
    decision: &Decision,
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
    let state = RunState::fold(journal.iter().map(|r| (r.seq, &r.event)))
        .map_err(|e| SteerError::Refused(format!("run {run}: {e}")))?;
    let taken =
        blackstart_engine::decision::take(plan, &state, decision).map_err(SteerError::Refused)?;
    let Event::Approved { role, proof, .. } = taken else {
        return Err(SteerError::Refused("not an approval".into()));
    };
    let entry = ApprovalEntry {
        stage: decision.subject.clone(),
        by: decision.by.clone(),
        role: role.clone(),
        at: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        signed: SignedEntry {
            wait: proof.wait,
            note: proof.note,
            signature: proof.signature,
        },
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

/// The run's plan and state, folded from its journal: what `approve
/// --message` signs over.
pub async fn plan_and_state(
    client: kube::Client,
    namespace: &str,
    run: &str,
) -> Result<(blackstart_model::Plan, RunState), SteerError> {
    let api: Api<RestartRun> = Api::namespaced(client, namespace);
    let obj = api
        .get_opt(run)
        .await
        .map_err(SteerError::Api)?
        .ok_or_else(|| SteerError::NotFound {
            namespace: namespace.to_owned(),
            run: run.to_owned(),
        })?;
    let journal = obj.status.map(|s| s.journal).unwrap_or_default();
    let Some(Event::RunStarted { plan, .. }) = journal.first().map(|r| &r.event) else {
        return Err(SteerError::Refused(format!("run {run} has no plan yet")));
    };
    let plan = (**plan).clone();
    let state = RunState::fold(journal.iter().map(|r| (r.seq, &r.event)))
        .map_err(|e| SteerError::Refused(format!("run {run}: {e}")))?;
    Ok((plan, state))
}
