//! Steering a RestartRun from outside the cluster: what `blackstart approve
//! --k8s` does, checked first the way the CLI checks a file-journal run.
//!
//! An approval is appended to `spec.approvals` with a JSON Patch `add … /-`,
//! which the API server applies atomically, so two people approving at once
//! both land. The same patch works with plain kubectl (see the README). A
//! pause or a rollback turns its switch on, naming (and signing for) who
//! asked, on the version read: the operator takes it as a decision.

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use blackstart_engine::decision::Decision;
use blackstart_engine::{Event, RunState};

use crate::crd::{ApprovalEntry, ConfirmationEntry, DenialEntry, RestartRun, SignedEntry};

#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    #[error("no RestartRun {namespace}/{run}")]
    NotFound { namespace: String, run: String },
    #[error("{0}")]
    Refused(String),
    #[error("cannot reach the Kubernetes API: {0}")]
    Api(#[source] kube::Error),
}

/// Adds a decision (an approval or a confirmation) to the run's spec, after
/// checking it as the operator will: what it answers waits now, `by` may
/// make it, and the signature (if the playbook enrols a key for `by`) is
/// good. Returns the role it counts for.
pub async fn decide(
    client: kube::Client,
    namespace: &str,
    run: &str,
    decision: &Decision,
) -> Result<Option<String>, SteerError> {
    let api: Api<RestartRun> = Api::namespaced(client, namespace);
    let (obj, plan, state) = read(&api, namespace, run).await?;
    let taken =
        blackstart_engine::decision::take(&plan, &state, decision).map_err(SteerError::Refused)?;
    let at = Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    let signed = |proof: blackstart_engine::decision::Proof| SignedEntry {
        wait: proof.wait,
        note: proof.note,
        signature: proof.signature,
    };
    let (list, empty, entry, role) = match taken {
        Event::Approved {
            stage,
            by,
            role,
            proof,
        } => {
            let entry = ApprovalEntry {
                stage,
                by,
                role: role.clone(),
                at,
                signed: signed(proof),
            };
            let entry = serde_json::to_value(&entry).unwrap_or(Value::Null);
            ("approvals", obj.spec.approvals.is_empty(), entry, role)
        }
        Event::Denied {
            stage,
            by,
            role,
            reason,
            proof,
        } => {
            let entry = DenialEntry {
                stage,
                by,
                role: role.clone(),
                reason,
                at,
                signed: signed(proof),
            };
            let entry = serde_json::to_value(&entry).unwrap_or(Value::Null);
            ("denials", obj.spec.denials.is_empty(), entry, role)
        }
        Event::Confirmed { system, by, proof } => {
            let entry = ConfirmationEntry {
                system,
                by,
                at,
                signed: signed(proof),
            };
            let entry = serde_json::to_value(&entry).unwrap_or(Value::Null);
            (
                "confirmations",
                obj.spec.confirmations.is_empty(),
                entry,
                None,
            )
        }
        Event::PauseRequested {
            by,
            reason,
            role,
            proof,
        } => {
            let switch = json!({"paused": true, "pausedBy": by, "pauseReason": reason, "pauseProof": signed(proof)});
            return set_switch(&api, run, &obj, switch).await.map(|()| role);
        }
        Event::RollbackRequested {
            by,
            reason,
            role,
            proof,
        } => {
            let switch = json!({"rollback": true, "rollbackBy": by, "rollbackReason": reason, "rollbackProof": signed(proof)});
            return set_switch(&api, run, &obj, switch).await.map(|()| role);
        }
        _ => {
            return Err(SteerError::Refused(format!(
                "a {} is not written to a RestartRun; use the CLI on a journal",
                decision.kind.as_str()
            )));
        }
    };
    let patch = if empty {
        // No list to append to yet (a run created before the CRD defaulted
        // it): create it, but only on the version just read, so a
        // concurrent first entry is not replaced.
        json!([
            {"op": "replace", "path": "/metadata/resourceVersion", "value": obj.metadata.resource_version},
            {"op": "add", "path": format!("/spec/{list}"), "value": [entry]},
        ])
    } else {
        json!([{"op": "add", "path": format!("/spec/{list}/-"), "value": entry}])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| SteerError::Refused(e.to_string()))?;
    api.patch(run, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| conflict(run, e))?;
    Ok(role)
}

/// Turns a switch of the spec on with who asked (`pause`, `rollback`), on
/// the version just read: a concurrent change is not overwritten.
async fn set_switch(
    api: &Api<RestartRun>,
    run: &str,
    obj: &RestartRun,
    switch: Value,
) -> Result<(), SteerError> {
    let patch = json!({
        "metadata": {"resourceVersion": obj.metadata.resource_version},
        "spec": switch,
    });
    api.patch(run, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(|e| conflict(run, e))
}

fn conflict(run: &str, e: kube::Error) -> SteerError {
    match e {
        kube::Error::Api(s) if s.code == 409 => SteerError::Refused(format!(
            "run {run} changed while deciding; run the command again"
        )),
        other => SteerError::Api(other),
    }
}

/// The run's plan and state, folded from its journal: what `approve
/// --message` signs over.
pub async fn plan_and_state(
    client: kube::Client,
    namespace: &str,
    run: &str,
) -> Result<(blackstart_model::Plan, RunState), SteerError> {
    let api: Api<RestartRun> = Api::namespaced(client, namespace);
    let (_, plan, state) = read(&api, namespace, run).await?;
    Ok((plan, state))
}

/// A RestartRun's whole journal, from its segments (or, for a run of the
/// release before, its status): what `status --k8s` and `audit --k8s` read.
pub async fn journal(
    client: kube::Client,
    namespace: &str,
    run: &str,
) -> Result<Vec<blackstart_engine::Record>, SteerError> {
    let api: Api<RestartRun> = Api::namespaced(client, namespace);
    let (_, journal) = with_journal(&api, namespace, run).await?;
    Ok(journal)
}

/// The RestartRun and its journal, or why there is none.
async fn with_journal(
    api: &Api<RestartRun>,
    namespace: &str,
    run: &str,
) -> Result<(RestartRun, Vec<blackstart_engine::Record>), SteerError> {
    let obj = api
        .get_opt(run)
        .await
        .map_err(SteerError::Api)?
        .ok_or_else(|| SteerError::NotFound {
            namespace: namespace.to_owned(),
            run: run.to_owned(),
        })?;
    let journal = crate::store::read_journal(api, &obj)
        .await
        .map_err(|e| SteerError::Refused(format!("run {run}: {e}")))?;
    Ok((obj, journal))
}

/// The RestartRun, its plan and its state folded from its journal; or why
/// there is nothing to decide about (no such run, no plan yet).
async fn read(
    api: &Api<RestartRun>,
    namespace: &str,
    run: &str,
) -> Result<(RestartRun, blackstart_model::Plan, RunState), SteerError> {
    let (obj, journal) = with_journal(api, namespace, run).await?;
    let Some(Event::RunStarted { plan, .. }) = journal.first().map(|r| &r.event) else {
        return Err(SteerError::Refused(format!(
            "run {run} has no plan yet (is the operator running, and does its Playbook exist?)"
        )));
    };
    let plan = (**plan).clone();
    let state = RunState::fold(journal.iter().map(|r| (r.seq, &r.event)))
        .map_err(|e| SteerError::Refused(format!("run {run}: {e}")))?;
    Ok((obj, plan, state))
}
