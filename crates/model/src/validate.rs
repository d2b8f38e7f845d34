//! The checks that need the whole playbook: ids, references, cycles and which
//! stage starts which system.
//!
//! The result of a clean check is a [`Validated`] playbook that carries what
//! the checks learnt (each system's stage, its dependencies as indices), so
//! planning never repeats the work and never meets a dangling reference.

use foldhash::{HashMap, HashMapExt, HashSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::adjacency::Adjacency;
use crate::decode::{Broken, nearest};
use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::playbook::{Action, OnFailure, Playbook, System};

mod roles;

use roles::check_roles;

/// A playbook that passed every check, with what the checks found out.
#[derive(Debug, Clone)]
pub struct Validated {
    playbook: Playbook,
    /// For each system (by index in `spec.systems`), the index of its stage.
    stage_of: Vec<usize>,
    /// For each system, the indices of the systems it depends on, deduplicated.
    deps: Adjacency,
    warnings: Diagnostics,
}

impl Validated {
    /// Checks a playbook, however it was made (read from YAML, built in code,
    /// or served by the API server).
    pub fn new(playbook: Playbook) -> Result<Validated, Diagnostics> {
        Validated::check(playbook, &Broken::default())
    }

    /// Checks what could be read of a playbook, keeping quiet about findings
    /// that the `broken` items (already reported) could explain.
    pub(crate) fn check(playbook: Playbook, broken: &Broken) -> Result<Validated, Diagnostics> {
        let mut diags = Diagnostics::default();
        let analysis = analyze(&playbook, broken, &mut diags);
        diags.sort();
        match analysis {
            Some((stage_of, deps)) if !diags.has_errors() => Ok(Validated {
                playbook,
                stage_of,
                deps,
                warnings: diags,
            }),
            _ => Err(diags),
        }
    }

    pub fn playbook(&self) -> &Playbook {
        &self.playbook
    }

    pub fn into_playbook(self) -> Playbook {
        self.playbook
    }

    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    /// The playbook, each system's stage index and its dependencies' indices.
    pub(crate) fn into_parts(self) -> (Playbook, Vec<usize>, Adjacency) {
        (self.playbook, self.stage_of, self.deps)
    }
}

/// Ids appear in commands (`blackstart approve RUN STAGE`), file names and
/// Kubernetes status keys, so they keep to a safe alphabet.
fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        return Some("is empty");
    }
    if id.len() > 253 {
        return Some("is longer than 253 characters");
    }
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!first_ok || !rest_ok).then_some(
        "must start with a letter or digit and hold only letters, digits, `-`, `_` and `.`",
    )
}

fn check_id(what: &str, id: &str, pos: Pos, diags: &mut Diagnostics) {
    if let Some(problem) = id_problem(id) {
        diags.push(
            Diagnostic::error(pos, format!("{what} id {id:?} {problem}")).with_ids([id.to_owned()]),
        );
    }
}

/// How many "did you mean" lookups one check may make; each scans every id,
/// and a file with thousands of broken references needs no more suggestions.
const SUGGESTION_BUDGET: usize = 200;

struct Suggester {
    left: usize,
}

impl Suggester {
    fn help<'a>(&mut self, wanted: &str, ids: impl IntoIterator<Item = &'a str>) -> Option<String> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        nearest(wanted, ids).map(|n| format!("did you mean `{n}`?"))
    }
}

type Analysis = (Vec<usize>, Adjacency);

fn analyze(pb: &Playbook, broken: &Broken, diags: &mut Diagnostics) -> Option<Analysis> {
    let spec = &pb.spec;
    let mut suggest = Suggester {
        left: SUGGESTION_BUDGET,
    };

    if let Some(problem) = id_problem(&pb.metadata.name) {
        diags.push(Diagnostic::error(
            Pos::UNKNOWN,
            format!("metadata.name {:?} {problem}", pb.metadata.name),
        ));
    }

    // Sites: unique, well-formed ids.
    let mut site_index: HashMap<&str, usize> = HashMap::with_capacity(spec.sites.len());
    for (i, site) in spec.sites.iter().enumerate() {
        check_id("site", &site.id, site.src.id, diags);
        if let Some(&first) = site_index.get(site.id.as_str()) {
            diags.push(
                Diagnostic::error(site.src.id, format!("duplicate site id `{}`", site.id))
                    .with_ids([site.id.clone()])
                    .with_help(first_seen(spec.sites[first].src.id)),
            );
        } else {
            site_index.insert(&site.id, i);
        }
    }

    // Systems: unique ids, known sites.
    let mut system_index: HashMap<&str, usize> = HashMap::with_capacity(spec.systems.len());
    for (i, sys) in spec.systems.iter().enumerate() {
        check_id("system", &sys.id, sys.src.id, diags);
        if let Some(&first) = system_index.get(sys.id.as_str()) {
            diags.push(
                Diagnostic::error(sys.src.id, format!("duplicate system id `{}`", sys.id))
                    .with_ids([sys.id.clone()])
                    .with_help(first_seen(spec.systems[first].src.id)),
            );
        } else {
            system_index.insert(&sys.id, i);
        }
        if !site_index.contains_key(sys.site.as_str()) && !broken.site(&sys.site) {
            let mut d = Diagnostic::error(
                sys.src.site,
                format!("system `{}` is at unknown site `{}`", sys.id, sys.site),
            )
            .with_ids([sys.id.clone(), sys.site.clone()]);
            if let Some(h) = suggest.help(&sys.site, site_index.keys().copied()) {
                d = d.with_help(h);
            }
            diags.push(d);
        }
    }

    // Dependencies: known, not self, deduplicated.
    let edges = spec.systems.iter().map(|s| s.depends_on.len()).sum();
    let mut deps = Adjacency::with_capacity(spec.systems.len(), edges);
    for sys in &spec.systems {
        for (k, dep) in sys.depends_on.iter().enumerate() {
            let pos = sys.src.dependency(k);
            match system_index.get(dep.as_str()) {
                Some(_) if dep == &sys.id => {
                    diags.push(
                        Diagnostic::error(pos, format!("system `{}` depends on itself", sys.id))
                            .with_ids([sys.id.clone()]),
                    );
                }
                Some(&j) => {
                    if deps.open().contains(&j) {
                        diags.push(
                            Diagnostic::warning(
                                pos,
                                format!("system `{}` lists dependency `{dep}` twice", sys.id),
                            )
                            .with_ids([sys.id.clone(), dep.clone()]),
                        );
                    } else {
                        deps.push(j);
                    }
                }
                None if broken.system(dep) => {}
                None => {
                    let mut d = Diagnostic::error(
                        pos,
                        format!("system `{}` depends on unknown system `{dep}`", sys.id),
                    )
                    .with_ids([sys.id.clone(), dep.clone()]);
                    if let Some(h) = suggest.help(dep, system_index.keys().copied()) {
                        d = d.with_help(h);
                    }
                    diags.push(d);
                }
            }
        }
        deps.close();
    }

    check_cycles(pb, &deps, diags);
    let (stage_of, no_overlap) =
        check_stages(pb, &site_index, &system_index, broken, &mut suggest, diags);
    check_stage_order(pb, &stage_of, &deps, diags);
    check_roles(pb, diags);
    // Complete only when every system has exactly one stage.
    let stage_of: Option<Vec<usize>> = stage_of.into_iter().collect();
    stage_of.filter(|_| no_overlap).map(|s| (s, deps))
}

fn first_seen(pos: Pos) -> String {
    if pos.is_known() {
        format!("first defined at line {}", pos.line)
    } else {
        "ids must be unique".to_owned()
    }
}

/// Every cycle, named in the order its members depend on each other.
fn check_cycles(pb: &Playbook, deps: &Adjacency, diags: &mut Diagnostics) {
    let systems = &pb.spec.systems;
    if is_acyclic(deps) {
        return;
    }
    let edges = deps.iter().map(<[usize]>::len).sum();
    let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(systems.len(), edges);
    let nodes: Vec<NodeIndex> = (0..systems.len()).map(|_| graph.add_node(())).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &j in ds {
            graph.add_edge(nodes[i], nodes[j], ());
        }
    }
    let mut cycles: Vec<Vec<usize>> = tarjan_scc(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| {
            let members: HashSet<usize> = scc.iter().map(|n| n.index()).collect();
            cycle_through(&members, deps, systems)
        })
        .collect();
    cycles.sort();
    for cycle in cycles {
        let names: Vec<&str> = cycle.iter().map(|&i| systems[i].id.as_str()).collect();
        let first = &systems[cycle[0]];
        let mut path = names.join(" → ");
        path.push_str(" → ");
        path.push_str(names[0]);
        diags.push(
            Diagnostic::error(first.src.id, format!("dependency cycle: {path}"))
                .with_ids(names.iter().map(|s| s.to_string()))
                .with_help("a restart needs an order: remove one of these dependsOn entries"),
        );
    }
}

/// Whether every system can be ordered after its dependencies (Kahn's
/// algorithm): one walk over the edges, where a graph for Tarjan's
/// algorithm costs a node and an edge list each. Only a playbook with a
/// cycle needs the components, to name the cycles.
fn is_acyclic(deps: &Adjacency) -> bool {
    let n = deps.len();
    let edges = || {
        deps.iter()
            .enumerate()
            .flat_map(|(i, ds)| ds.iter().map(move |&j| (j, i)))
    };
    let dependents = Adjacency::from_pairs(n, edges);
    let mut waiting: Vec<usize> = deps.iter().map(<[usize]>::len).collect();
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut ordered = 0;
    while let Some(i) = ready.pop() {
        ordered += 1;
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    ordered == n
}

/// One cycle inside a strongly connected component, as system indices in
/// dependency order, starting from the member that comes first in the file.
fn cycle_through(members: &HashSet<usize>, deps: &Adjacency, systems: &[System]) -> Vec<usize> {
    let start = members
        .iter()
        .copied()
        .min_by(|&a, &b| systems[a].id.cmp(&systems[b].id))
        .expect("a strongly connected component has members");
    // Breadth-first from start's dependencies back to start: the shortest
    // cycle through it, found without recursion.
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(at) = queue.pop_front() {
        for &next in &deps[at] {
            if !members.contains(&next) {
                continue;
            }
            if next == start {
                let mut path = vec![at];
                let mut cur = at;
                while cur != start {
                    cur = parent[&cur];
                    path.push(cur);
                }
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = parent.entry(next) {
                e.insert(at);
                queue.push_back(next);
            }
        }
    }
    vec![start]
}

/// The stages, checked in two steps: each stage on its own (name,
/// selector, what it names), then which stage selects each system. Returns
/// each system's stage, and whether no system is selected twice.
fn check_stages(
    pb: &Playbook,
    site_index: &HashMap<&str, usize>,
    system_index: &HashMap<&str, usize>,
    broken: &Broken,
    suggest: &mut Suggester,
    diags: &mut Diagnostics,
) -> (Vec<Option<usize>>, bool) {
    check_each_stage(pb, site_index, system_index, broken, suggest, diags);
    assign_stages(pb, site_index, broken, diags)
}

/// Each stage on its own: a unique, valid name, a selector that selects
/// something, and only sites and systems that exist.
fn check_each_stage(
    pb: &Playbook,
    site_index: &HashMap<&str, usize>,
    system_index: &HashMap<&str, usize>,
    broken: &Broken,
    suggest: &mut Suggester,
    diags: &mut Diagnostics,
) {
    let spec = &pb.spec;
    if spec.stages.is_empty() && !broken.any_stage() {
        diags.push(
            Diagnostic::error(Pos::UNKNOWN, "the playbook has no stages")
                .with_help("add a stage under spec.stages that selects the systems to start"),
        );
    }
    let mut names: HashMap<&str, Pos> = HashMap::new();
    for stage in &spec.stages {
        check_id("stage", &stage.name, stage.src.name, diags);
        if let Some(first) = names.insert(&stage.name, stage.src.name) {
            diags.push(
                Diagnostic::error(
                    stage.src.name,
                    format!("duplicate stage name `{}`", stage.name),
                )
                .with_ids([stage.name.clone()])
                .with_help(first_seen(first)),
            );
        }
        if stage.select.is_empty() {
            diags.push(
                Diagnostic::error(
                    stage.src.select,
                    format!("stage `{}` has an empty selector", stage.name),
                )
                .with_ids([stage.name.clone()])
                .with_help("select by sites, tiers, systems or labels"),
            );
        }
        for (k, site) in stage.select.sites.iter().enumerate() {
            if !site_index.contains_key(site.as_str()) && !broken.site(site) {
                let pos = stage.src.sites.get(k).copied().unwrap_or(stage.src.select);
                let mut d = Diagnostic::error(
                    pos,
                    format!("stage `{}` selects unknown site `{site}`", stage.name),
                )
                .with_ids([stage.name.clone(), site.clone()]);
                if let Some(h) = suggest.help(site, site_index.keys().copied()) {
                    d = d.with_help(h);
                }
                diags.push(d);
            }
        }
        for (k, sys) in stage.select.systems.iter().enumerate() {
            // A system reported broken is not unknown: no echo of its error.
            if !system_index.contains_key(sys.as_str()) && !broken.system(sys) {
                let pos = stage
                    .src
                    .systems
                    .get(k)
                    .copied()
                    .unwrap_or(stage.src.select);
                let mut d = Diagnostic::error(
                    pos,
                    format!("stage `{}` selects unknown system `{sys}`", stage.name),
                )
                .with_ids([stage.name.clone(), sys.clone()]);
                if let Some(h) = suggest.help(sys, system_index.keys().copied()) {
                    d = d.with_help(h);
                }
                diags.push(d);
            }
        }
    }
}

/// Which stage selects each system: exactly one, or an error naming none or
/// all; and a stage that selects nothing. Selector lists become sets first,
/// so a stage listing thousands of systems stays linear.
fn assign_stages(
    pb: &Playbook,
    site_index: &HashMap<&str, usize>,
    broken: &Broken,
    diags: &mut Diagnostics,
) -> (Vec<Option<usize>>, bool) {
    let spec = &pb.spec;
    struct Sel<'a> {
        sites: HashSet<&'a str>,
        tiers: HashSet<&'a str>,
        systems: HashSet<&'a str>,
    }
    let sels: Vec<Sel> = spec
        .stages
        .iter()
        .map(|s| Sel {
            sites: s.select.sites.iter().map(String::as_str).collect(),
            tiers: s.select.tiers.iter().map(String::as_str).collect(),
            systems: s.select.systems.iter().map(String::as_str).collect(),
        })
        .collect();
    let site_labels = |site: &str| site_index.get(site).map(|&i| &spec.sites[i].labels);
    let mut stage_of = Vec::with_capacity(spec.systems.len());
    let mut counts = vec![0usize; spec.stages.len()];
    let mut overlap = false;
    for sys in &spec.systems {
        let mut chosen = spec
            .stages
            .iter()
            .zip(&sels)
            .enumerate()
            .filter(|(_, (stage, sel))| {
                !stage.select.is_empty()
                    && (sel.sites.is_empty() || sel.sites.contains(sys.site.as_str()))
                    && (sel.tiers.is_empty()
                        || sys.tier.as_deref().is_some_and(|t| sel.tiers.contains(t)))
                    && (sel.systems.is_empty() || sel.systems.contains(sys.id.as_str()))
                    && (stage.select.labels.is_empty()
                        || stage.select.matches(sys, site_labels(&sys.site)))
            })
            .map(|(s, _)| s);
        // Almost every system has one stage: a list only for the others
        // (an empty `Vec` allocates nothing).
        let first = chosen.next();
        let others: Vec<usize> = chosen.collect();
        for s in first.into_iter().chain(others.iter().copied()) {
            counts[s] += 1;
        }
        match (first, others.as_slice()) {
            (Some(s), []) => stage_of.push(Some(s)),
            (None, _) if broken.any_stage() => stage_of.push(None),
            (None, _) => {
                stage_of.push(None);
                diags.push(
                    Diagnostic::error(
                        sys.src.id,
                        format!("system `{}` is selected by no stage", sys.id),
                    )
                    .with_ids([sys.id.clone()])
                    .with_help(
                        "every system is started by exactly one stage: add it to a stage's select",
                    ),
                );
            }
            (Some(first), others) => {
                let many: Vec<usize> = std::iter::once(first)
                    .chain(others.iter().copied())
                    .collect();
                // Checked for order as part of the first stage that took it.
                stage_of.push(Some(many[0]));
                overlap = true;
                let names: Vec<String> =
                    many.iter().map(|&s| spec.stages[s].name.clone()).collect();
                diags.push(
                    Diagnostic::error(
                        sys.src.id,
                        format!(
                            "system `{}` is selected by {} stages: {}",
                            sys.id,
                            names.len(),
                            names.join(", ")
                        ),
                    )
                    .with_ids(std::iter::once(sys.id.to_string()).chain(names))
                    .with_help(
                        "every system is started by exactly one stage: narrow the selectors",
                    ),
                );
                // Count it where it was first selected, so a stage is not
                // also reported as empty because of this overlap.
                counts[many[0]] += 1;
            }
        }
    }
    for (stage, count) in spec.stages.iter().zip(&counts) {
        if *count == 0 && !stage.select.is_empty() && !broken.any_system() {
            diags.push(
                Diagnostic::error(
                    stage.src.select,
                    format!("stage `{}` selects no system", stage.name),
                )
                .with_ids([stage.name.clone()]),
            );
        }
    }
    (stage_of, !overlap)
}

/// A system's dependencies start in its own stage or an earlier one; and a
/// stage that rolls back should be able to stop what it started.
fn check_stage_order(
    pb: &Playbook,
    stage_of: &[Option<usize>],
    deps: &Adjacency,
    diags: &mut Diagnostics,
) {
    let spec = &pb.spec;
    for (i, sys) in spec.systems.iter().enumerate() {
        let Some(mine) = stage_of[i] else { continue };
        for &j in &deps[i] {
            let Some(theirs) = stage_of[j] else { continue };
            if theirs > mine {
                let dep = &spec.systems[j];
                let k = sys
                    .depends_on
                    .iter()
                    .position(|d| d == &dep.id)
                    .unwrap_or(0);
                let (mine, theirs) = (&spec.stages[mine].name, &spec.stages[theirs].name);
                diags.push(
                    Diagnostic::error(
                        sys.src.dependency(k),
                        format!(
                            "system `{}` in stage `{mine}` depends on `{}`, which starts in the later stage `{theirs}`",
                            sys.id, dep.id
                        ),
                    )
                    .with_ids([sys.id.to_string(), dep.id.to_string(), mine.clone(), theirs.clone()])
                    .with_help(format!("move `{}` to `{mine}` or an earlier stage, or `{}` later", dep.id, sys.id)),
                );
            }
        }
        let stage = &spec.stages[mine];
        if stage.gate.on_failure == OnFailure::Rollback
            && sys.stop.is_none()
            && !matches!(sys.start, Action::Noop(_))
        {
            diags.push(
                Diagnostic::warning(
                    sys.src.id,
                    format!(
                        "system `{}` has no stop action, so rolling back stage `{}` leaves it running",
                        sys.id, stage.name
                    ),
                )
                .with_ids([sys.id.to_string(), stage.name.clone()])
                .with_help("add `stop:` (or `stop: { noop: {} }` to say so on purpose)"),
            );
        }
    }
}
