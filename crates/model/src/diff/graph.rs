//! The graph of a change: what a reviewer must look at, and nothing else.
//!
//! The whole dependency graph of a restart has dozens of nodes and a
//! hundred edges; a change touches a few. So the pull request shows the
//! systems the change added, removed, moved or changed, and the edges it
//! added or removed, each marked in words as well as colour, with only the
//! systems next to them for context. The whole graph stays in the plan,
//! folded away.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::PlanDiff;
use crate::plan::Plan;

/// What happened to a node or an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Added,
    Removed,
    Moved,
    /// Its actions, checks or settings, or its dependencies, changed.
    Changed,
    /// Unchanged, shown because it is next to a change.
    Neighbour,
    /// An edge both plans have.
    Kept,
}

impl Change {
    fn word(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Moved => "moved",
            Change::Changed => "changed",
            Change::Neighbour | Change::Kept => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphNode {
    pub system: String,
    pub site: String,
    /// Its stage in the new plan (the base plan's, for a removed system).
    pub stage: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphEdge {
    pub system: String,
    pub depends_on: String,
    pub change: Change,
}

/// The changed systems and edges, with their neighbours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeGraph {
    /// The stages the nodes are in, in the new plan's order; stages only
    /// the base plan had come last.
    pub stages: Vec<String>,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

/// More nodes than this and the picture helps nobody: the lists say it.
pub const MAX_NODES: usize = 80;

impl ChangeGraph {
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The graph of `d`, the diff of `base` and `new`.
    pub fn of(base: &Plan, new: &Plan, d: &PlanDiff) -> ChangeGraph {
        let mut focus: BTreeMap<&str, Change> = BTreeMap::new();
        for p in &d.systems_added {
            focus.insert(&p.system, Change::Added);
        }
        for p in &d.systems_removed {
            focus.insert(&p.system, Change::Removed);
        }
        for m in &d.systems_moved {
            focus.insert(&m.system, Change::Moved);
        }
        let changed_edges = d.dependencies_added.iter().chain(&d.dependencies_removed);
        let ends = d
            .systems_changed
            .iter()
            .map(|c| c.system.as_str())
            .chain(changed_edges.flat_map(|e| [e.system.as_str(), e.depends_on.as_str()]));
        for id in ends {
            focus.entry(id).or_insert(Change::Changed);
        }
        if focus.is_empty() {
            return ChangeGraph::default();
        }

        // Every edge either plan has, marked.
        let edges_of = |plan: &Plan| -> BTreeSet<(String, String)> {
            plan.systems()
                .flat_map(|(_, s)| {
                    s.depends_on
                        .iter()
                        .map(|dep| (s.id.to_string(), dep.to_string()))
                })
                .collect()
        };
        let (before, after) = (edges_of(base), edges_of(new));
        let mut all: BTreeMap<(String, String), Change> = BTreeMap::new();
        for e in &after {
            let change = if before.contains(e) {
                Change::Kept
            } else {
                Change::Added
            };
            all.insert(e.clone(), change);
        }
        for e in before.difference(&after) {
            all.insert(e.clone(), Change::Removed);
        }

        // The focus and the systems one edge away from it.
        let mut shown: BTreeMap<String, Change> =
            focus.iter().map(|(id, c)| ((*id).to_owned(), *c)).collect();
        for (system, dep) in all.keys() {
            for (here, there) in [(system, dep), (dep, system)] {
                if focus.contains_key(here.as_str()) && !shown.contains_key(there) {
                    shown.insert(there.clone(), Change::Neighbour);
                }
            }
        }

        let place = |id: &str| -> (String, String) {
            let found = new
                .systems()
                .chain(base.systems())
                .find(|(_, s)| s.id == id);
            found.map_or_else(Default::default, |(st, s)| {
                (s.site.to_string(), st.name.clone())
            })
        };
        let nodes = shown
            .into_iter()
            .map(|(system, change)| {
                let (site, stage) = place(&system);
                GraphNode {
                    system,
                    site,
                    stage,
                    change,
                }
            })
            .collect::<Vec<_>>();
        let ids: BTreeSet<&str> = nodes.iter().map(|n| n.system.as_str()).collect();
        let edges = all
            .iter()
            .filter(|((s, dep), _)| ids.contains(s.as_str()) && ids.contains(dep.as_str()))
            .map(|((system, depends_on), change)| GraphEdge {
                system: system.clone(),
                depends_on: depends_on.clone(),
                change: *change,
            })
            .collect();
        let mut stages: Vec<String> = new
            .stages
            .iter()
            .chain(&base.stages)
            .map(|s| s.name.clone())
            .filter(|name| nodes.iter().any(|n: &GraphNode| &n.stage == name))
            .collect();
        let mut seen = BTreeSet::new();
        stages.retain(|s| seen.insert(s.clone()));
        ChangeGraph {
            stages,
            nodes,
            edges,
        }
    }

    /// A Mermaid flowchart: one subgraph per stage in the new plan's order
    /// (stages only the base had come last), each changed node and edge
    /// named in words as well as coloured, so the picture reads without
    /// colour too.
    pub fn mermaid(&self) -> String {
        let names: BTreeMap<&str, String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(k, n)| (n.system.as_str(), format!("n{k}")))
            .collect();
        let mut o = String::from("flowchart LR\n");
        for (k, stage) in self.stages.iter().enumerate() {
            let mine: Vec<&GraphNode> = self.nodes.iter().filter(|n| &n.stage == stage).collect();
            let _ = writeln!(o, "  subgraph g{k}[\"{stage}\"]");
            for n in mine {
                let what = match n.change.word() {
                    "" => String::new(),
                    w => format!(" · <b>{w}</b>"),
                };
                let _ = writeln!(
                    o,
                    "    {}[\"{}<br/><small>{}{what}</small>\"]",
                    names[n.system.as_str()],
                    n.system,
                    n.site
                );
            }
            let _ = writeln!(o, "  end");
        }
        let mut styles: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (k, e) in self.edges.iter().enumerate() {
            let (from, to) = (&names[e.depends_on.as_str()], &names[e.system.as_str()]);
            let _ = match e.change {
                Change::Added => writeln!(o, "  {from} ==>|added| {to}"),
                Change::Removed => writeln!(o, "  {from} -.->|removed| {to}"),
                _ => writeln!(o, "  {from} --> {to}"),
            };
            styles
                .entry(edge_style(e.change))
                .or_default()
                .push(k.to_string());
        }
        for (change, class) in [
            (
                Change::Added,
                "fill:#e3f6e5,stroke:#1e8449,stroke-width:2px",
            ),
            (
                Change::Removed,
                "fill:#fde2e1,stroke:#c0392b,stroke-width:2px,stroke-dasharray:4 3",
            ),
            (
                Change::Moved,
                "fill:#fff3cd,stroke:#b7791f,stroke-width:2px",
            ),
            (
                Change::Changed,
                "fill:#e8f0fe,stroke:#1a5fb4,stroke-width:2px",
            ),
            (Change::Neighbour, "fill:#f4f4f4,stroke:#999,color:#555"),
        ] {
            let members: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.change == change)
                .map(|n| names[n.system.as_str()].as_str())
                .collect();
            if !members.is_empty() {
                let name = class_name(change);
                let _ = writeln!(o, "  classDef {name} {class}");
                let _ = writeln!(o, "  class {} {name}", members.join(","));
            }
        }
        for (style, edges) in styles {
            let _ = writeln!(o, "  linkStyle {} {style}", edges.join(","));
        }
        o
    }
}

fn class_name(c: Change) -> &'static str {
    match c {
        Change::Added => "added",
        Change::Removed => "removed",
        Change::Moved => "moved",
        Change::Changed => "changed",
        Change::Neighbour | Change::Kept => "context",
    }
}

fn edge_style(c: Change) -> &'static str {
    match c {
        Change::Added => "stroke:#1e8449,stroke-width:3px",
        Change::Removed => "stroke:#c0392b,stroke-width:2px,stroke-dasharray:4 3",
        _ => "stroke:#999",
    }
}
