//! The two custom resources, generated from these types and never edited
//! by hand (`cargo xtask crds` writes them to `manifests/crds/`).
//!
//! A `Playbook`'s spec is the model's `PlaybookSpec` itself, so the file a
//! commander validates with the CLI is the object a platform team applies,
//! byte for byte. A `RestartRun` is one run of one Playbook: its spec is
//! what people steer (approvals, confirmations, pause, rollback), its status
//! is what the operator records, and the run's hash-chained journal lives in
//! that status, so an operator that restarts resumes from the API server.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use blackstart_engine::Record;

pub const GROUP: &str = "blackstart.dev";
/// The finalizer that lets a deleted run stop its work before it goes.
pub const FINALIZER: &str = "blackstart.dev/run";

/// A playbook kept in the cluster: the same `apiVersion`, `kind` and
/// `spec` as a playbook file, so `kubectl apply -f playbooks/x.yaml` works.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "blackstart.dev",
    version = "v1alpha1",
    kind = "Playbook",
    namespaced,
    shortname = "pb",
    category = "blackstart",
    doc = "A blackstart playbook: sites, systems, their dependencies and the stages that bring them back.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct PlaybookSpec {
    #[serde(flatten)]
    pub playbook: blackstart_model::playbook::PlaybookSpec,
}

/// One run of a Playbook, steered through its spec.
// Printer columns repeat `type_ = "string"`, which the lint takes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "blackstart.dev",
    version = "v1alpha1",
    kind = "RestartRun",
    namespaced,
    shortname = "rr",
    category = "blackstart",
    status = "RestartRunStatus",
    doc = "One controlled restart: a Playbook executed stage by stage, steered with approvals, pause and rollback.",
    printcolumn(
        name = "Playbook",
        type_ = "string",
        json_path = ".spec.playbookRef.name"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Stage", type_ = "string", json_path = ".status.stage"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RestartRunSpec {
    /// The Playbook, in the run's namespace. Its plan is fixed when the run
    /// starts: later edits to the Playbook do not change a run under way.
    pub playbook_ref: PlaybookRef,
    /// Approvals of stage gates. Each counts once; removing one after it
    /// was recorded does not take it back (the journal keeps it). The API
    /// server defaults it to `[]`, so a JSON Patch `add /spec/approvals/-`
    /// works on a fresh run too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("default" = []))]
    pub approvals: Vec<ApprovalEntry>,
    /// Denials of stage gates: the gate fails and its onFailure applies.
    /// `[]` by default, as approvals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("default" = []))]
    pub denials: Vec<DenialEntry>,
    /// Confirmations that a manual step was done; `[]` by default, as
    /// approvals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("default" = []))]
    pub confirmations: Vec<ConfirmationEntry>,
    /// True stops new starts; the operator sets it when a stage failed and
    /// its gate says pause. Set it back to false to resume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Who paused the run: checked as a decision (with the playbook's
    /// roles, a member; with an enrolled key, signed, as `blackstart pause
    /// --k8s` writes it) and journaled; a refused pause does not pause.
    /// Left out, `paused` pauses unnamed, as the operator's own pause does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_proof: Option<SignedEntry>,
    /// True stops everything the run started, dependents first, and ends
    /// it RolledBack.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// Who asked for the rollback: the journal names them. When the
    /// playbook names its people (spec.roles) a rollback must name a
    /// member, signed if their key is enrolled (`blackstart rollback
    /// --k8s`); otherwise it is refused, with an Event and a condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_proof: Option<SignedEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct PlaybookRef {
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalEntry {
    pub stage: String,
    pub by: String,
    /// The role approved for; may be left out when the gate needs one role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// When, RFC 3339; for people, the journal records its own time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, flatten)]
    pub signed: SignedEntry,
}

/// What makes a decision in the spec verifiable, as `approve --k8s`
/// writes it: the journal seq of the wait it answers, a note, and the
/// armored SSH signature of a member with an enrolled key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl SignedEntry {
    pub fn proof(&self) -> blackstart_engine::decision::Proof {
        blackstart_engine::decision::Proof {
            wait: self.wait,
            note: self.note.clone(),
            key: None,
            signature: self.signature.clone(),
        }
    }
}

/// A person of a role the gate needs said no, and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DenialEntry {
    pub stage: String,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, flatten)]
    pub signed: SignedEntry,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmationEntry {
    pub system: String,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(default, flatten)]
    pub signed: SignedEntry,
}

/// What kubectl shows of a run: a summary folded from its journal, which
/// lives in ConfigMaps the run owns (`RUN-journal-0000`, …; see the
/// operator's `segments` module), so the RestartRun stays small and
/// readable however many systems the run has.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartRunStatus {
    /// Pending, Running, Paused, Succeeded, Failed or RolledBack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The hash of the playbook the run's plan was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_hash: Option<String>,
    /// The stage under way (or where the run stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// How many systems are in each phase.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub system_counts: std::collections::BTreeMap<String, u32>,
    /// The systems that need a look: under way, waiting for a person,
    /// failed, blocked or held; at most [`NOTABLE_SYSTEMS`] of them, the
    /// rest counted in `systemCounts`. Healthy, pending, skipped and
    /// rolled-back systems are counted only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<SystemStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// How many records the journal holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_length: Option<u64>,
    /// The SHA-256 of the journal's last record: `blackstart audit
    /// --verify --head` checks a chain against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_head: Option<String>,
    /// How many ConfigMaps the journal spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_segments: Option<u32>,
    /// The journal as the release before kept it, in the status. Read
    /// once, moved into segments, and removed; never written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "journal_schema")]
    pub journal: Vec<Record>,
}

/// The most systems the status lists by name.
pub const NOTABLE_SYSTEMS: usize = 50;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    pub name: String,
    pub phase: String,
    /// Who approved its gate, as `name (role)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<String>,
    /// Roles whose approval the gate still needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub awaiting: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemStatus {
    pub id: String,
    pub stage: String,
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A condition in the Kubernetes convention, so `kubectl wait
/// --for=condition=Succeeded` works.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Journal records are the engine's, kept whole: the API server must not
/// prune a field of them, or the hash chain would break.
fn journal_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

impl RestartRun {
    /// The phase, `Pending` before the operator has written any status.
    pub fn phase(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending")
    }

    /// Whether the run is over: Succeeded, Failed or RolledBack.
    /// Whether its status shows a phase the engine calls final.
    pub fn has_ended(&self) -> bool {
        serde_json::from_value::<blackstart_engine::RunPhase>(serde_json::Value::from(self.phase()))
            .is_ok_and(blackstart_engine::RunPhase::is_final)
    }
}

/// Both CRDs, in the order they are written to `manifests/crds/`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Playbook::crd(), RestartRun::crd()]
}
