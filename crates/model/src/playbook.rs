//! The playbook: the typed form of the YAML a commander writes.
//!
//! Long because it is the whole schema in one place, on purpose: the CRDs,
//! the JSON Schema and the reference are generated from or checked against it.
//!
//! These types are the one schema of blackstart. The CLI reads them from
//! YAML through [`crate::load`], the JSON plan embeds them, and the operator
//! serves them as the Playbook custom resource, so field names follow the
//! Kubernetes convention (camelCase) and unknown fields are refused
//! everywhere: a typo in a restart plan must never be silently ignored.
//!
//! Source positions ride along in `src` fields that serde skips: they let
//! validation point at a line, and they never change the playbook's meaning
//! or its hash.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
// Ids, sites, tiers, dependencies, command words and tcp addresses: short,
// never changed once read, and about ten per system. Up to 23 bytes they
// are kept inline, so a playbook of 100,000 systems is not a million small
// allocations (32 MiB less resident for `plan`, and faster to read).
pub use smol_str::SmolStr;

use crate::diag::Pos;
use crate::duration::Duration;

pub const API_VERSION: &str = "blackstart.dev/v1alpha1";
pub const KIND: &str = "Playbook";

/// Labels and other free-form string maps; sorted, so output is deterministic.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Playbook {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PlaybookSpec,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: Labels,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaybookSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Defaults::is_empty")]
    pub defaults: Defaults,
    /// Who may decide: each gate's approvals and each manual step's role
    /// name one of these. Without it, names are taken as given and the
    /// decisions are unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
    /// Who is told what happens: webhooks of the incident channel, a
    /// pager, a status page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<Notify>,
    pub sites: Vec<Site>,
    pub systems: Vec<System>,
    pub stages: Vec<Stage>,
}

/// One receiver of notifications: a webhook POSTed a JSON body for each
/// happening it is `on`, retried with backoff, never holding up the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    pub webhook: Webhook,
    /// Which happenings it is told of; every one when not given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<NotifyOn>,
    /// While a gate waits, a reminder this often (at least 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remind: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Webhook {
    /// Where to POST. It usually carries a token, so it is given through
    /// the environment (`${env:INCIDENT_WEBHOOK}`), redacted everywhere.
    pub url: String,
}

/// What a notification tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyOn {
    /// A gate waits for people (and, with `remind`, still does).
    GateWaiting,
    StageFailed,
    Paused,
    RolledBack,
    Degraded,
    Succeeded,
}

impl NotifyOn {
    pub const NAMES: [&'static str; 6] = [
        "gate-waiting",
        "stage-failed",
        "paused",
        "rolled-back",
        "degraded",
        "succeeded",
    ];
    pub const ALL: [NotifyOn; 6] = [
        NotifyOn::GateWaiting,
        NotifyOn::StageFailed,
        NotifyOn::Paused,
        NotifyOn::RolledBack,
        NotifyOn::Degraded,
        NotifyOn::Succeeded,
    ];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[Self::ALL.iter().position(|n| *n == self).unwrap_or(0)]
    }

    pub fn from_name(name: &str) -> Option<NotifyOn> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Self::ALL[i])
    }
}

/// People who may decide a gate or confirm a manual step, enrolled before
/// the incident (reviewed in the playbook's pull request, like git's allowed
/// signers), so their decisions can be verified offline.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    pub name: String,
    pub members: Vec<Member>,
    #[serde(skip)]
    pub src: RoleSrc,
}

/// A member of a role. With a `key`, every decision they make must be
/// signed with it (`ssh-keygen -Y sign -n blackstart`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    pub name: String,
    /// An OpenSSH public key: `ssh-ed25519 AAAA… comment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleSrc {
    pub node: Pos,
    pub name: Pos,
    /// Per member: where its name and its key are written.
    pub members: Vec<(Pos, Pos)>,
}

impl Role {
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// Settings every system inherits unless it sets its own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "ProbeSettings::is_empty")]
    pub probe: ProbeSettings,
    /// Environment variables every exec step gets from blackstart's own
    /// environment, beyond the few every step gets (PATH, HOME, LANG, TZ).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// Retries of every system's start that does not say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// Start and health again before a system is Failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Every attempt, the first included: 3 is at most three starts.
    pub attempts: u32,
    /// The wait between a failed attempt and the next; none if left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Duration>,
}

impl Defaults {
    pub fn is_empty(&self) -> bool {
        self == &Defaults::default()
    }
}

/// Kubernetes probe semantics, each field optional so that a system can
/// override only what differs from the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
}

impl ProbeSettings {
    pub fn is_empty(&self) -> bool {
        self == &ProbeSettings::default()
    }

    /// `self` where it is set, else `fallback`.
    pub fn or(self, fallback: ProbeSettings) -> ProbeSettings {
        ProbeSettings {
            initial_delay: self.initial_delay.or(fallback.initial_delay),
            interval: self.interval.or(fallback.interval),
            timeout: self.timeout.or(fallback.timeout),
            success_threshold: self.success_threshold.or(fallback.success_threshold),
            failure_threshold: self.failure_threshold.or(fallback.failure_threshold),
        }
    }

    /// Every field decided: what is unset anywhere takes Kubernetes' defaults
    /// (no delay, every 10s, 1s timeout, 1 success, 3 failures).
    pub fn resolve(self) -> ProbePolicy {
        ProbePolicy {
            initial_delay: self.initial_delay.unwrap_or(Duration::ZERO),
            interval: self.interval.unwrap_or(Duration::from_secs(10)),
            timeout: self.timeout.unwrap_or(Duration::from_secs(1)),
            success_threshold: self.success_threshold.unwrap_or(1),
            failure_threshold: self.failure_threshold.unwrap_or(3),
        }
    }
}

/// Probe settings with every value decided, as the engine uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbePolicy {
    #[serde(with = "crate::duration::as_secs")]
    pub initial_delay: Duration,
    #[serde(with = "crate::duration::as_secs")]
    pub interval: Duration,
    #[serde(with = "crate::duration::as_secs")]
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbePolicy {
    /// When probes find Healthy a system that is up `up` after its start:
    /// probes run at `initialDelay` and then every `interval`, so the
    /// first to pass is the first at or after `up`, and `successThreshold`
    /// passes in a row take `successThreshold - 1` more intervals. This is
    /// how the engine probes (`probe::healthy`), so the plan's estimate
    /// counts what a run waits for, not only what a system takes.
    pub fn healthy_after(&self, up: Duration) -> Duration {
        let (delay, every) = (self.initial_delay.as_millis(), self.interval.as_millis());
        let first = if up.as_millis() <= delay || every == 0 {
            delay.max(up.as_millis())
        } else {
            let after = up.as_millis() - delay;
            delay.saturating_add(after.div_ceil(every).saturating_mul(every))
        };
        let more = u64::from(self.success_threshold.max(1) - 1).saturating_mul(every);
        Duration::from_millis(first.saturating_add(more))
    }
}

/// The start timeout a system gets when neither it nor the defaults set one.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Site {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// How blackstart reaches the site: its exec steps over ssh, its
    /// kubernetes steps through a kubeconfig context.
    #[serde(default, skip_serializing_if = "Connect::is_empty")]
    pub connect: Connect,
    #[serde(skip)]
    pub src: SiteSrc,
}

/// A site's connections. Without one, its steps run where blackstart runs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Connect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshConnect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubeConnect>,
}

impl Connect {
    pub fn is_empty(&self) -> bool {
        self.ssh.is_none() && self.kubernetes.is_none()
    }
}

/// The host a site's exec steps run on. Its key is pinned: a host that
/// shows another key runs nothing (never trust on first use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SshConnect {
    pub host: String,
    /// 22 when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The login; ssh's own default (the local user, or ~/.ssh/config) when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The host's public key, one line of its `ssh_host_*_key.pub`.
    pub host_key: String,
    /// The private key to log in with (often `${env:...}`); ssh-agent and
    /// ssh's own defaults when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
}

impl SshConnect {
    /// `user@host:port`, as messages name the connection.
    pub fn target(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!("{user}{}:{}", self.host, self.port.unwrap_or(22))
    }
}

/// Where a site's kubernetes steps and probes go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeConnect {
    /// A context of the kubeconfig blackstart reads (`KUBECONFIG` or ~/.kube/config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// For the operator: a Secret in its own namespace whose `kubeconfig`
    /// key holds the site's kubeconfig (its current context, or `context`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteSrc {
    pub node: Pos,
    pub id: Pos,
    /// Where `connect.ssh` is written.
    pub ssh: Option<Pos>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct System {
    pub id: SmolStr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub site: SmolStr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<SmolStr>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<SmolStr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "ProbeSettings::is_empty")]
    pub probe: ProbeSettings,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<Check>,
    pub start: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<Check>,
    /// Its failure is recorded and its dependents are Blocked, but it does
    /// not fail its stage's gate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(skip)]
    pub src: SystemSrc,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SystemSrc {
    pub node: Pos,
    pub id: Pos,
    pub site: Pos,
    /// One position per `dependsOn` entry, in the same order.
    pub depends_on: Vec<Pos>,
}

impl SystemSrc {
    pub fn dependency(&self, index: usize) -> Pos {
        self.depends_on.get(index).copied().unwrap_or(self.node)
    }
}

/// Something to do: start a system, stop it, or tell a person to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Action {
    Exec(Exec),
    // Boxed here and in `Check`: the largest kind, and a rare one; inline,
    // it made every system's start, stop and checks its size.
    Http(Box<Http>),
    Kubernetes(KubernetesAction),
    Manual(Manual),
    Noop(Noop),
}

impl Action {
    pub const KINDS: [&'static str; 5] = ["exec", "http", "kubernetes", "manual", "noop"];

    /// Whether running it again is harmless, so that a resume may drive a
    /// start a crash cut short once more instead of asking a person:
    /// scaling a workload and a noop are; a rollout restart is not; exec and
    /// http only when the playbook says `idempotent: true`; a manual step
    /// is a person's, never re-run by blackstart.
    pub fn idempotent(&self) -> bool {
        match self {
            Action::Exec(e) => e.idempotent,
            Action::Http(h) => h.idempotent,
            Action::Kubernetes(k) => !k.rollout_restart,
            Action::Noop(_) => true,
            Action::Manual(_) => false,
        }
    }

    /// The workload this action scales and the count it sets: a start is
    /// healthy only when a readiness check of that workload finds it at
    /// that count, not merely "ready" (at 0 replicas every count agrees).
    pub fn scales(&self) -> Option<(Workload, u32)> {
        match self {
            Action::Kubernetes(k) if !k.rollout_restart => k.replicas.map(|n| (k.workload(), n)),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Action::Exec(_) => "exec",
            Action::Http(_) => "http",
            Action::Kubernetes(_) => "kubernetes",
            Action::Manual(_) => "manual",
            Action::Noop(_) => "noop",
        }
    }

    /// One line for a plan: what will happen, placeholders left unresolved.
    pub fn summary(&self) -> String {
        match self {
            Action::Exec(e) => format!("exec {}", e.command.join(" ")),
            Action::Http(h) => format!("{} {}", h.method_or(Method::Post), h.url),
            Action::Kubernetes(k) => k.summary(),
            Action::Manual(m) => format!("manual: {}", m.instruction),
            Action::Noop(_) => "noop".to_owned(),
        }
    }
}

/// Something to check: health while a system runs, integrity before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Check {
    Http(Box<Http>),
    Tcp(Tcp),
    Exec(Exec),
    Kubernetes(Workload),
}

impl Check {
    pub const KINDS: [&'static str; 4] = ["http", "tcp", "exec", "kubernetes"];

    pub fn kind(&self) -> &'static str {
        match self {
            Check::Http(_) => "http",
            Check::Tcp(_) => "tcp",
            Check::Exec(_) => "exec",
            Check::Kubernetes(_) => "kubernetes",
        }
    }

    pub fn summary(&self) -> String {
        match self {
            Check::Http(h) => {
                let mut s = format!("{} {}", h.method_or(Method::Get), h.url);
                if let Some(status) = h.expect_status {
                    s.push_str(&format!(" → {status}"));
                }
                s
            }
            Check::Tcp(t) => format!("tcp {}", t.address),
            Check::Exec(e) => format!("exec {}", e.command.join(" ")),
            Check::Kubernetes(w) => format!("{w} ready"),
        }
    }
}

/// Run a program: argv, never a shell, so a value can never be re-parsed
/// as shell syntax.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exec {
    pub command: Vec<SmolStr>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Environment variables this step gets from blackstart's own
    /// environment, beyond PATH, HOME, LANG, TZ and `defaults.inheritEnv`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// Running it again is harmless (as a start): a resume after a crash
    /// may run it again instead of asking a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
}

/// An HTTP request: a webhook as an action, a health endpoint as a check.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Http {
    pub url: String,
    /// GET for checks and POST for actions when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The status that counts as success; any 2xx or 3xx when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_pointer: Option<JsonMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Sending it again is harmless (as a start): a resume after a crash
    /// may send it again instead of asking a person.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
}

impl Http {
    pub fn method_or(&self, default: Method) -> Method {
        self.method.unwrap_or(default)
    }
}

/// The value at a JSON pointer (RFC 6901) in the response body must equal
/// `equals`, a JSON value as YAML reads it: `equals: 1.10` is the number
/// 1.1 and matches `1.1` or `1.10` in the body; `equals: "1.10"` is text
/// and matches the string "1.10". Numbers compare as numbers (`1` equals
/// `1.0`). A string may hold `${env:...}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JsonMatch {
    pub pointer: String,
    /// A string, number, boolean or null, compared by JSON equality (any
    /// JSON value to the API server; `validate` refuses a list or mapping).
    #[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
    pub equals: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub const NAMES: [&'static str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
    const ALL: [Method; 6] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
    ];

    pub fn from_name(name: &str) -> Option<Method> {
        Method::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Method::ALL[i])
    }

    pub fn as_str(&self) -> &'static str {
        Method::NAMES[Method::ALL.iter().position(|m| m == self).unwrap_or(0)]
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tcp {
    /// `host:port`; a connection accepted within the timeout is healthy.
    pub address: SmolStr,
}

/// A workload in the cluster blackstart talks to: the operator's own, or the
/// kubeconfig's for the CLI. As a check, it is healthy when its rollout is
/// done: the controller has seen the latest spec and every desired replica
/// is updated, ready and available.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
    /// The run's own namespace when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum WorkloadKind {
    #[default]
    Deployment,
    StatefulSet,
}

impl WorkloadKind {
    pub const NAMES: [&'static str; 2] = ["Deployment", "StatefulSet"];

    pub fn from_name(name: &str) -> Option<WorkloadKind> {
        match name {
            "Deployment" => Some(WorkloadKind::Deployment),
            "StatefulSet" => Some(WorkloadKind::StatefulSet),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scale a Deployment or StatefulSet, or restart its pods.
///
/// With `replicas`, the workload is scaled to that count, and the count it
/// had before is kept on it (annotation `blackstart.dev/replicas-before`).
/// With `rolloutRestart`, its pods are replaced the way `kubectl rollout
/// restart` does. With neither, which only a stop may do, it is scaled back
/// to the count it had before blackstart scaled it (0 if it never did).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesAction {
    pub kind: WorkloadKind,
    pub name: String,
    /// The run's own namespace when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollout_restart: bool,
}

impl KubernetesAction {
    pub fn workload(&self) -> Workload {
        Workload {
            kind: self.kind,
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }

    pub fn summary(&self) -> String {
        let w = self.workload();
        match (self.replicas, self.rollout_restart) {
            (_, true) => format!("rollout restart {w}"),
            (Some(n), false) => format!("scale {w} to {n}"),
            (None, false) => format!("scale {w} back to its replicas before"),
        }
    }
}

/// A step a person does and confirms with `blackstart confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manual {
    pub instruction: String,
    /// The role whose members may confirm it; with `spec.roles`, anyone
    /// in a role of the stage's gate when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noop {}

/// An empty object. Written by hand because the derived schema says
/// `additionalProperties: false`, which a CRD may not; the API server's
/// strict field validation refuses unknown fields here all the same.
impl JsonSchema for Noop {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Noop".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "nothing to do: `noop: {}`",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub select: Selector,
    /// At most this many systems of the stage starting at once; unbounded
    /// when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    #[serde(default)]
    pub gate: Gate,
    /// What a failure takes down: the whole stage (the default), or only
    /// the failing system's site, the other sites going on.
    #[serde(default, skip_serializing_if = "FailureDomain::is_stage")]
    pub failure_domain: FailureDomain,
    #[serde(skip)]
    pub src: StageSrc,
}

/// How far a failure in a stage reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailureDomain {
    /// The gate's onFailure applies to the whole stage.
    #[default]
    Stage,
    /// The gate's onFailure applies to the failing system's site in this
    /// stage only; that site is held, the others go on.
    Site,
}

impl FailureDomain {
    pub const NAMES: [&'static str; 2] = ["stage", "site"];

    pub fn is_stage(&self) -> bool {
        *self == FailureDomain::Stage
    }

    pub fn from_name(name: &str) -> Option<FailureDomain> {
        match name {
            "stage" => Some(FailureDomain::Stage),
            "site" => Some(FailureDomain::Site),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StageSrc {
    pub node: Pos,
    pub name: Pos,
    pub select: Pos,
    pub sites: Vec<Pos>,
    pub tiers: Vec<Pos>,
    pub systems: Vec<Pos>,
    pub approvals: Vec<Pos>,
}

/// Which systems a stage starts; every given criterion must hold (AND), and
/// within one criterion any listed value matches (OR).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self == &Selector::default()
    }

    /// Whether the system matches; `sites` holds a system's site labels too,
    /// so `labels` selects on either.
    pub fn matches(&self, system: &System, site_labels: Option<&Labels>) -> bool {
        let listed = |list: &[String], value: &str| list.iter().any(|v| v == value);
        (self.sites.is_empty() || listed(&self.sites, &system.site))
            && (self.tiers.is_empty()
                || system.tier.as_ref().is_some_and(|t| listed(&self.tiers, t)))
            && (self.systems.is_empty() || listed(&self.systems, &system.id))
            && self.labels.iter().all(|(k, v)| {
                system.labels.get(k) == Some(v)
                    || (!system.labels.contains_key(k)
                        && site_labels.is_some_and(|l| l.get(k) == Some(v)))
            })
    }
}

/// What must hold before the next stage may begin, and what happens if not.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gate {
    /// How long every system's health must stay green after the last start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Duration>,
    /// Roles that must each approve before the next stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<String>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How long the approvals may take, counted from when the gate starts
    /// waiting (time no process drove the run does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_timeout: Option<Duration>,
    /// What a gate whose approvals did not come in time does: `pause` (the
    /// default), `rollback` or `abort`, as `onFailure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnFailure>,
}

/// What a failed stage does. `pause` is the default: in an incident, nothing
/// is stopped or abandoned without a person deciding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    /// Stop what the stage started, dependents first; the run ends RolledBack.
    Rollback,
    /// Hold the run for the commander to resume or roll back.
    #[default]
    Pause,
    /// End the run Failed, leaving everything as it is.
    Abort,
}

impl OnFailure {
    pub const NAMES: [&'static str; 3] = ["rollback", "pause", "abort"];

    pub fn as_str(&self) -> &'static str {
        match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Pause => "pause",
            OnFailure::Abort => "abort",
        }
    }

    pub fn from_name(name: &str) -> Option<OnFailure> {
        match name {
            "rollback" => Some(OnFailure::Rollback),
            "pause" => Some(OnFailure::Pause),
            "abort" => Some(OnFailure::Abort),
            _ => None,
        }
    }
}

impl std::fmt::Display for OnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
