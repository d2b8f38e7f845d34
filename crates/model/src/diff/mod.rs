//! What a change to a playbook does to the restart, for a pull-request review.
//!
//! Plans are compared, not playbooks: a reviewer cares that the ERP now
//! starts one layer later or that a gate lost its approval, not that a line
//! moved. Each kind of change is listed by id, sorted, so the same two plans
//! always give the same report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::duration::{self, Duration};
use crate::plan::{Plan, PlannedStage, PlannedSystem};
use crate::playbook::SmolStr;

mod graph;

pub use graph::{Change, ChangeGraph, GraphEdge, GraphNode};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanDiff {
    pub base_hash: String,
    pub new_hash: String,
    pub stages_added: Vec<String>,
    pub stages_removed: Vec<String>,
    /// The stage order, before and after, when the stages kept in both moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_order: Option<(Vec<String>, Vec<String>)>,
    pub systems_added: Vec<Placed>,
    pub systems_removed: Vec<Placed>,
    pub systems_moved: Vec<Moved>,
    pub dependencies_added: Vec<Edge>,
    pub dependencies_removed: Vec<Edge>,
    pub gate_changes: Vec<GateChange>,
    /// Who may decide: members and keys added to or removed from roles,
    /// roles declared or dropped. Each changes who can restart the plant.
    pub people_changes: Vec<String>,
    /// Who is told what: webhooks added or removed, what they are told of
    /// and how often they are reminded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify_changes: Vec<String>,
    /// Where a site's steps go: ssh hosts, pinned host keys, kube contexts
    /// added, removed or changed. Each changes what a restart touches.
    pub connection_changes: Vec<String>,
    pub layer_changes: Vec<LayerChange>,
    /// Systems whose actions, checks or settings changed, with what changed.
    pub systems_changed: Vec<Changed>,
    #[serde(with = "duration::as_secs")]
    pub base_duration: Duration,
    #[serde(with = "duration::as_secs")]
    pub new_duration: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub critical_path: Option<(Vec<String>, Vec<String>)>,
    /// The changed systems and edges with their neighbours: what the
    /// pull request draws.
    #[serde(skip_serializing_if = "ChangeGraph::is_empty")]
    pub graph: ChangeGraph,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placed {
    pub system: String,
    pub stage: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Moved {
    pub system: String,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Edge {
    pub system: String,
    #[serde(rename = "dependsOn")]
    pub depends_on: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GateChange {
    pub stage: String,
    pub field: &'static str,
    pub before: String,
    pub after: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerChange {
    pub system: String,
    pub stage: String,
    pub before: u32,
    pub after: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub system: String,
    pub fields: Vec<&'static str>,
}

impl PlanDiff {
    /// True when the restart is the same in every way this report shows.
    pub fn is_empty(&self) -> bool {
        self.stages_added.is_empty()
            && self.stages_removed.is_empty()
            && self.stage_order.is_none()
            && self.systems_added.is_empty()
            && self.systems_removed.is_empty()
            && self.systems_moved.is_empty()
            && self.dependencies_added.is_empty()
            && self.dependencies_removed.is_empty()
            && self.gate_changes.is_empty()
            && self.people_changes.is_empty()
            && self.notify_changes.is_empty()
            && self.connection_changes.is_empty()
            && self.layer_changes.is_empty()
            && self.systems_changed.is_empty()
            && self.base_duration == self.new_duration
            && self.critical_path.is_none()
    }
}

fn index(plan: &Plan) -> BTreeMap<&str, (&PlannedStage, &PlannedSystem)> {
    plan.systems()
        .map(|(st, s)| (s.id.as_str(), (st, s)))
        .collect()
}

fn opt<T: ToString>(v: Option<T>, none: &str) -> String {
    v.map_or_else(|| none.to_owned(), |v| v.to_string())
}

/// Compares two plans of (usually) the same playbook.
pub fn diff(base: &Plan, new: &Plan) -> PlanDiff {
    let old_sys = index(base);
    let new_sys = index(new);
    let old_stage_names: Vec<String> = base.stages.iter().map(|s| s.name.clone()).collect();
    let new_stage_names: Vec<String> = new.stages.iter().map(|s| s.name.clone()).collect();
    let old_set: BTreeSet<&String> = old_stage_names.iter().collect();
    let new_set: BTreeSet<&String> = new_stage_names.iter().collect();

    let kept_old: Vec<String> = old_stage_names
        .iter()
        .filter(|n| new_set.contains(n))
        .cloned()
        .collect();
    let kept_new: Vec<String> = new_stage_names
        .iter()
        .filter(|n| old_set.contains(n))
        .cloned()
        .collect();

    let mut d = PlanDiff {
        base_hash: base.playbook_hash.clone(),
        new_hash: new.playbook_hash.clone(),
        stages_added: new_set
            .difference(&old_set)
            .map(|s| s.to_string())
            .collect(),
        stages_removed: old_set
            .difference(&new_set)
            .map(|s| s.to_string())
            .collect(),
        stage_order: (kept_old != kept_new)
            .then(|| (old_stage_names.clone(), new_stage_names.clone())),
        systems_added: Vec::new(),
        systems_removed: Vec::new(),
        systems_moved: Vec::new(),
        dependencies_added: Vec::new(),
        dependencies_removed: Vec::new(),
        gate_changes: Vec::new(),
        people_changes: people_changes(base, new),
        notify_changes: notify_changes(base, new),
        connection_changes: connection_changes(base, new),
        layer_changes: Vec::new(),
        systems_changed: Vec::new(),
        base_duration: base.estimated_duration,
        new_duration: new.estimated_duration,
        critical_path: (base.critical_path != new.critical_path)
            .then(|| (base.critical_path.clone(), new.critical_path.clone())),
        graph: ChangeGraph::default(),
    };

    for (id, (st, _)) in &new_sys {
        if !old_sys.contains_key(id) {
            d.systems_added.push(Placed {
                system: id.to_string(),
                stage: st.name.clone(),
            });
        }
    }
    for (id, (old_st, old)) in &old_sys {
        let Some((new_st, now)) = new_sys.get(id) else {
            d.systems_removed.push(Placed {
                system: id.to_string(),
                stage: old_st.name.clone(),
            });
            continue;
        };
        if old_st.name != new_st.name {
            d.systems_moved.push(Moved {
                system: id.to_string(),
                from: old_st.name.clone(),
                to: new_st.name.clone(),
            });
        } else if old.layer != now.layer {
            d.layer_changes.push(LayerChange {
                system: id.to_string(),
                stage: new_st.name.clone(),
                before: old.layer,
                after: now.layer,
            });
        }
        let before: BTreeSet<&SmolStr> = old.depends_on.iter().collect();
        let after: BTreeSet<&SmolStr> = now.depends_on.iter().collect();
        for dep in after.difference(&before) {
            d.dependencies_added.push(Edge {
                system: id.to_string(),
                depends_on: dep.to_string(),
            });
        }
        for dep in before.difference(&after) {
            d.dependencies_removed.push(Edge {
                system: id.to_string(),
                depends_on: dep.to_string(),
            });
        }
        let mut fields = Vec::new();
        let checks: [(&'static str, bool); 12] = [
            ("site", old.site != now.site),
            ("optional", old.optional != now.optional),
            ("retry", old.retry != now.retry),
            ("start", old.start != now.start),
            ("stop", old.stop != now.stop),
            ("verify", old.verify != now.verify),
            ("health", old.health != now.health),
            ("probe", old.probe != now.probe),
            ("startTimeout", old.start_timeout != now.start_timeout),
            (
                "expectedDuration",
                old.expected_duration != now.expected_duration,
            ),
            ("tier", old.tier != now.tier),
            ("labels", old.labels != now.labels),
        ];
        for (name, changed) in checks {
            if changed {
                fields.push(name);
            }
        }
        if !fields.is_empty() {
            d.systems_changed.push(Changed {
                system: id.to_string(),
                fields,
            });
        }
    }

    for old in &base.stages {
        let Some(now) = new.stages.iter().find(|s| s.name == old.name) else {
            continue;
        };
        let mut change = |field, before: String, after: String| {
            if before != after {
                d.gate_changes.push(GateChange {
                    stage: old.name.clone(),
                    field,
                    before,
                    after,
                });
            }
        };
        change(
            "approvals",
            list_or(&old.gate.approvals, "none"),
            list_or(&now.gate.approvals, "none"),
        );
        change(
            "soak",
            opt(old.gate.soak, "none"),
            opt(now.gate.soak, "none"),
        );
        change(
            "onFailure",
            old.gate.on_failure.to_string(),
            now.gate.on_failure.to_string(),
        );
        change(
            "maxParallel",
            opt(old.max_parallel, "unbounded"),
            opt(now.max_parallel, "unbounded"),
        );
        let domain = |f: crate::playbook::FailureDomain| match f {
            crate::playbook::FailureDomain::Stage => "stage".to_owned(),
            crate::playbook::FailureDomain::Site => "site".to_owned(),
        };
        change(
            "failureDomain",
            domain(old.failure_domain),
            domain(now.failure_domain),
        );
    }
    d.graph = ChangeGraph::of(base, new, &d);
    d
}

/// Who may decide, before and after: each member's key per role.
/// Receivers are told apart by their URL as written (`${env:NAME}`).
fn notify_changes(base: &Plan, new: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    let find = |plan: &Plan, url: &str| plan.notify.iter().find(|n| n.webhook.url == url).cloned();
    for n in &base.notify {
        if find(new, &n.webhook.url).is_none() {
            out.push(format!(
                "**`{}` is no longer told** of anything",
                n.webhook.url
            ));
        }
    }
    for n in &new.notify {
        match find(base, &n.webhook.url) {
            None => out.push(format!(
                "`{}` is now told of {}",
                n.webhook.url,
                crate::render::notified_of(n)
            )),
            Some(old) if old != *n => out.push(format!(
                "`{}` was told of {}, now of {}",
                n.webhook.url,
                crate::render::notified_of(&old),
                crate::render::notified_of(n)
            )),
            Some(_) => {}
        }
    }
    out
}

fn people_changes(base: &Plan, new: &Plan) -> Vec<String> {
    let of = |plan: &Plan| -> BTreeMap<(String, String), Option<String>> {
        plan.roles
            .iter()
            .flatten()
            .flat_map(|r| {
                r.members.iter().map(|m| {
                    (
                        (r.name.clone(), m.name.clone()),
                        m.key.as_deref().map(fingerprint),
                    )
                })
            })
            .collect()
    };
    let (old, now) = (of(base), of(new));
    let mut out = Vec::new();
    match (&base.roles, &new.roles) {
        (None, Some(_)) => out.push("roles declared: decisions are now taken from members only, and signed where keys are enrolled".to_owned()),
        (Some(_), None) => out.push("roles removed: anyone may now decide under any name, unsigned".to_owned()),
        _ => {}
    }
    for ((role, name), key) in &now {
        match old.get(&(role.clone(), name.clone())) {
            None => out.push(format!(
                "**{name} may now decide as `{role}`**{}",
                key.as_deref()
                    .map(|k| format!(" (key {k})"))
                    .unwrap_or_default()
            )),
            Some(before) if before != key => out.push(format!(
                "**{name}'s key as `{role}` changed**: {} → {}",
                before.as_deref().unwrap_or("none"),
                key.as_deref().unwrap_or("none")
            )),
            Some(_) => {}
        }
    }
    for (role, name) in old.keys() {
        if !now.contains_key(&(role.clone(), name.clone())) {
            out.push(format!("**{name} may no longer decide as `{role}`**"));
        }
    }
    out
}

/// Each site's connection, before and after: the ssh target and pinned
/// host key (by fingerprint), the identity file, the kube context and Secret.
fn connection_changes(base: &Plan, new: &Plan) -> Vec<String> {
    let ssh = |c: &crate::playbook::Connect| {
        c.ssh.as_ref().map(|s| {
            (
                s.target(),
                fingerprint(&s.host_key),
                s.identity_file.clone(),
            )
        })
    };
    let kube = |c: &crate::playbook::Connect| c.kubernetes.clone();
    let sites: std::collections::BTreeSet<&String> = base
        .connections
        .keys()
        .chain(new.connections.keys())
        .collect();
    let mut out = Vec::new();
    let empty = crate::playbook::Connect::default();
    for site in sites {
        let old = base.connections.get(site).unwrap_or(&empty);
        let now = new.connections.get(site).unwrap_or(&empty);
        match (ssh(old), ssh(now)) {
            (None, Some((t, k, _))) => out.push(format!(
                "**`{site}` now runs its exec steps over ssh** on {t} (host key {k})"
            )),
            (Some((t, _, _)), None) => out.push(format!(
                "**`{site}` no longer runs its exec steps over ssh** (was {t}): they run where blackstart runs"
            )),
            (Some((t0, k0, i0)), Some((t1, k1, i1))) => {
                if t0 != t1 {
                    out.push(format!("**`{site}`'s ssh host changed**: {t0} → {t1}"));
                }
                if k0 != k1 {
                    out.push(format!("**`{site}`'s pinned host key changed**: {k0} → {k1}"));
                }
                if i0 != i1 {
                    out.push(format!(
                        "`{site}`'s ssh identity file changed: {} → {}",
                        opt(i0, "ssh's default"),
                        opt(i1, "ssh's default")
                    ));
                }
            }
            (None, None) => {}
        }
        let describe = |k: &Option<crate::playbook::KubeConnect>| match k {
            None => "the default cluster".to_owned(),
            Some(k) => [
                k.context.as_ref().map(|c| format!("context {c}")),
                k.secret_ref.as_ref().map(|s| format!("Secret {s}")),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
        };
        let (k0, k1) = (kube(old), kube(now));
        if k0 != k1 {
            out.push(format!(
                "**`{site}`'s kubernetes steps go to another cluster**: {} → {}",
                describe(&k0),
                describe(&k1)
            ));
        }
    }
    out
}

/// A key as a reviewer compares it: its SHA-256 fingerprint.
pub(crate) fn fingerprint(key: &str) -> String {
    ssh_key::PublicKey::from_openssh(key)
        .map(|k| k.fingerprint(ssh_key::HashAlg::Sha256).to_string())
        .unwrap_or_else(|_| key.to_owned())
}

fn list_or(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

fn signed(before: Duration, after: Duration) -> String {
    if after >= before {
        format!("+{}", after - before)
    } else {
        format!("-{}", before - after)
    }
}

impl PlanDiff {
    /// A pull-request comment: one section per kind of change, then the
    /// change drawn.
    pub fn markdown(&self) -> String {
        let mut o = self.lists();
        self.graph_markdown(&mut o);
        o
    }

    /// One Markdown section per kind of change.
    fn lists(&self) -> String {
        let mut o = String::from("## Restart plan changes\n\n");
        if self.is_empty() {
            o.push_str("No change to the restart: same stages, order, gates and systems.\n");
            return o;
        }
        let _ = writeln!(
            o,
            "Estimated duration: **{}** → **{}** ({})\n",
            self.base_duration,
            self.new_duration,
            signed(self.base_duration, self.new_duration)
        );
        let mut section = |title: &str, rows: Vec<String>| {
            if !rows.is_empty() {
                let _ = writeln!(o, "### {title}\n");
                for r in rows {
                    let _ = writeln!(o, "- {r}");
                }
                o.push('\n');
            }
        };
        section(
            "Stages added",
            self.stages_added.iter().map(|s| format!("`{s}`")).collect(),
        );
        section(
            "Stages removed",
            self.stages_removed
                .iter()
                .map(|s| format!("`{s}`"))
                .collect(),
        );
        if let Some((b, a)) = &self.stage_order {
            section(
                "Stage order",
                vec![
                    format!("before: {}", b.join(" → ")),
                    format!("after: {}", a.join(" → ")),
                ],
            );
        }
        section(
            "Systems added",
            self.systems_added
                .iter()
                .map(|p| format!("`{}` in stage `{}`", p.system, p.stage))
                .collect(),
        );
        section(
            "Systems removed",
            self.systems_removed
                .iter()
                .map(|p| format!("`{}` from stage `{}`", p.system, p.stage))
                .collect(),
        );
        section(
            "Systems moved between stages",
            self.systems_moved
                .iter()
                .map(|m| format!("`{}`: `{}` → `{}`", m.system, m.from, m.to))
                .collect(),
        );
        section(
            "Dependencies added",
            self.dependencies_added
                .iter()
                .map(|e| format!("`{}` now waits for `{}`", e.system, e.depends_on))
                .collect(),
        );
        section(
            "Dependencies removed",
            self.dependencies_removed
                .iter()
                .map(|e| format!("`{}` no longer waits for `{}`", e.system, e.depends_on))
                .collect(),
        );
        section(
            "Gate changes",
            self.gate_changes
                .iter()
                .map(|g| format!("`{}` {}: {} → {}", g.stage, g.field, g.before, g.after))
                .collect(),
        );
        section("Who may decide", self.people_changes.clone());
        section("Who is told", self.notify_changes.clone());
        section("Site connections", self.connection_changes.clone());
        section(
            "Order changes inside a stage",
            self.layer_changes
                .iter()
                .map(|l| {
                    format!(
                        "`{}` in `{}`: layer {} → {}",
                        l.system, l.stage, l.before, l.after
                    )
                })
                .collect(),
        );
        section(
            "Systems changed",
            self.systems_changed
                .iter()
                .map(|c| format!("`{}`: {}", c.system, c.fields.join(", ")))
                .collect(),
        );
        if let Some((b, a)) = &self.critical_path {
            section(
                "Critical path",
                vec![
                    format!("before: {}", b.join(" → ")),
                    format!("after: {}", a.join(" → ")),
                ],
            );
        }
        o
    }

    /// The change drawn: changed systems and edges with their neighbours.
    fn graph_markdown(&self, o: &mut String) {
        if self.graph.is_empty() {
            return;
        }
        let _ = writeln!(o, "### The change in the dependency graph\n");
        if self.graph.nodes.len() > graph::MAX_NODES {
            let _ = writeln!(
                o,
                "_{} systems are changed or next to a change, too many to draw; the lists above name them._\n",
                self.graph.nodes.len()
            );
            return;
        }
        let _ = writeln!(
            o,
            "Changed systems and dependencies are marked (added, removed, moved, changed); the grey systems are unchanged neighbours. The whole graph is in the plan below.\n"
        );
        let _ = writeln!(o, "```mermaid");
        o.push_str(&self.graph.mermaid());
        let _ = writeln!(o, "```\n");
    }

    /// The same report for a terminal.
    pub fn text(&self) -> String {
        // The lists only: a terminal cannot draw the graph.
        let md = self.lists();
        let mut o = String::new();
        for line in md.lines() {
            let line = line.replace('`', "").replace("**", "");
            if let Some(title) = line.strip_prefix("### ") {
                o.push_str(title);
                o.push(':');
            } else if let Some(title) = line.strip_prefix("## ") {
                o.push_str(title);
            } else if let Some(item) = line.strip_prefix("- ") {
                o.push_str("  ");
                o.push_str(item);
            } else if line.is_empty() {
                continue;
            } else {
                o.push_str(&line);
            }
            o.push('\n');
        }
        o
    }
}
