//! The plan: the deterministic compilation of a playbook that reviewers read
//! and the engine executes.
//!
//! Everything the engine needs is decided here (order, layers, resolved probe
//! settings and timeouts, rollback order), so that the engine never re-derives
//! order from the playbook and a reviewed plan is exactly what runs. The same
//! playbook always gives a byte-identical plan: ties are broken by id, never
//! by hash-map order or file position.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt::Write as _;
use std::io;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::duration::{self, Duration};
use crate::placeholder;
use crate::playbook::{
    Action, Check, DEFAULT_START_TIMEOUT, FailureDomain, Labels, OnFailure, Playbook, PlaybookSpec,
    ProbePolicy, Retry, Site, Stage, System,
};
use crate::validate::Validated;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The playbook's `metadata.name`.
    pub playbook: String,
    /// `sha256:` and the hex SHA-256 of the canonical playbook; see [`playbook_hash`].
    pub playbook_hash: String,
    #[serde(with = "duration::as_secs")]
    pub estimated_duration: Duration,
    /// With retries: how long the run takes if every retried system uses
    /// every attempt and every backoff (approval waits aside). The estimate
    /// is the path without failures.
    #[serde(
        with = "duration::as_secs::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub worst_case: Option<Duration>,
    /// The longest chain of dependencies by expected duration, first system
    /// first: each system depends on the one before it.
    pub critical_path: Vec<String>,
    /// Names of the environment variables the run reads through `${env:NAME}`.
    pub env: Vec<String>,
    /// `defaults.inheritEnv`: what every exec step gets from blackstart's
    /// environment besides PATH, HOME, LANG and TZ.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherit_env: Vec<String>,
    /// `spec.roles`: who may decide, and the keys their decisions are
    /// verified with. A journal's plan carries them, so decisions are
    /// verified against what was reviewed, offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<crate::playbook::Role>>,
    /// By site id, the sites that are reached over ssh or through a
    /// kubeconfig context; the others run their steps where blackstart runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub connections: BTreeMap<String, crate::playbook::Connect>,
    pub stages: Vec<PlannedStage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStage {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// `site`: a failure holds its site in this stage, the others go on.
    #[serde(default, skip_serializing_if = "FailureDomain::is_stage")]
    pub failure_domain: FailureDomain,
    pub gate: PlannedGate,
    /// How many dependency layers the stage has (the highest `layer` + 1).
    pub layers: u32,
    /// When the stage begins, counted from the start of the run.
    #[serde(with = "duration::as_secs")]
    pub estimated_start: Duration,
    /// Starts plus the gate's soak; approval waits are not included.
    #[serde(with = "duration::as_secs")]
    pub estimated_duration: Duration,
    /// In execution order: every system after all its dependencies.
    pub systems: Vec<PlannedSystem>,
    /// What a rollback of this stage stops, dependents first.
    pub rollback_order: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedGate {
    #[serde(
        with = "duration::as_secs::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub soak: Option<Duration>,
    pub approvals: Vec<String>,
    pub on_failure: OnFailure,
    #[serde(
        with = "duration::as_secs::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub approval_timeout: Option<Duration>,
    /// What a timed-out gate does (pause unless said otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnFailure>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedSystem {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub site: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Every dependency, in this stage or an earlier one, sorted by id.
    pub depends_on: Vec<String>,
    /// 0 without a dependency inside the stage, else one more than the
    /// highest layer among such dependencies.
    pub layer: u32,
    pub critical: bool,
    #[serde(with = "duration::as_secs")]
    pub expected_duration: Duration,
    #[serde(with = "duration::as_secs")]
    pub estimated_start: Duration,
    #[serde(with = "duration::as_secs")]
    pub start_timeout: Duration,
    pub probe: ProbePolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<Check>,
    pub start: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Action>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health: Vec<Check>,
    /// Its failure does not fail the gate; its dependents are Blocked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// The system's or the defaults' retry; never for a manual start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

impl PlannedSystem {
    /// How many starts it may take: 1 without a retry.
    pub fn attempts(&self) -> u32 {
        self.retry.map_or(1, |r| r.attempts.max(1))
    }

    /// Its longest time: every attempt at its expected duration, and every
    /// backoff between them.
    fn worst_duration(expected: Duration, retry: Option<Retry>) -> Duration {
        let Some(r) = retry else { return expected };
        let n = r.attempts.max(1);
        let backoff = r.backoff.unwrap_or(Duration::ZERO);
        // Saturating: a playbook may ask for absurd numbers, never a panic.
        Duration::from_millis(
            expected
                .as_millis()
                .saturating_mul(u64::from(n))
                .saturating_add(backoff.as_millis().saturating_mul(u64::from(n - 1))),
        )
    }

    pub fn estimated_finish(&self) -> Duration {
        self.estimated_start + self.expected_duration
    }
}

impl Plan {
    /// Compiles a validated playbook into its plan. It consumes the playbook:
    /// the plan takes its systems' actions and checks over without copying.
    pub fn build(validated: Validated) -> Plan {
        let playbook_hash = playbook_hash(validated.playbook());
        let env = env_names(validated.playbook());
        let (pb, stage_of, deps) = validated.into_parts();
        let (stage_of, deps) = (&stage_of[..], &deps[..]);
        let spec = &pb.spec;
        let n = spec.systems.len();

        // How long a system keeps its stage busy: its expected duration,
        // until the probes can say Healthy (see `ProbePolicy::healthy_after`);
        // a system without health checks is done when its start is.
        let duration_of = |i: usize| {
            let sys = &spec.systems[i];
            let expected = sys
                .expected_duration
                .or(spec.defaults.expected_duration)
                .unwrap_or(Duration::ZERO);
            if sys.health.is_empty() {
                expected
            } else {
                sys.probe
                    .or(spec.defaults.probe)
                    .resolve()
                    .healthy_after(expected)
            }
        };
        let retry_of = |i: usize| {
            let sys = &spec.systems[i];
            match sys.start {
                Action::Manual(_) => None,
                _ => sys.retry.or(spec.defaults.retry).filter(|r| r.attempts > 1),
            }
        };
        let worst_of = |i: usize| PlannedSystem::worst_duration(duration_of(i), retry_of(i));

        // Members of each stage, and for each system the systems that depend
        // on it inside its own stage (to release them when it finishes).
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); spec.stages.len()];
        for (i, &s) in stage_of.iter().enumerate() {
            members[s].push(i);
        }
        let mut layer = vec![0u32; n];
        let mut start = vec![Duration::ZERO; n];
        let mut order_in_stage: Vec<Vec<usize>> = Vec::with_capacity(spec.stages.len());
        let mut stage_times = Vec::with_capacity(spec.stages.len());
        let mut clock = Duration::ZERO;
        // The worst case is scheduled only when something is retried.
        let retries: Vec<Option<Retry>> = (0..n).map(retry_of).collect();
        let any_retry = retries.iter().any(Option::is_some);
        let (mut worst_start, mut worst_clock) = (
            vec![Duration::ZERO; if any_retry { n } else { 0 }],
            Duration::ZERO,
        );

        for (s, stage) in spec.stages.iter().enumerate() {
            let mine = &members[s];
            let order = topo_layers(mine, deps, stage_of, s, &mut layer, |i| &spec.systems[i].id);
            let makespan = schedule(
                &order,
                deps,
                stage_of,
                s,
                stage.max_parallel,
                clock,
                &duration_of,
                &mut start,
            );
            let soak = stage.gate.soak.unwrap_or(Duration::ZERO);
            if any_retry {
                worst_clock = soak
                    + schedule(
                        &order,
                        deps,
                        stage_of,
                        s,
                        stage.max_parallel,
                        worst_clock,
                        &worst_of,
                        &mut worst_start,
                    );
            }
            let stage_start = clock;
            clock = makespan + soak;
            stage_times.push((stage_start, clock - stage_start));
            order_in_stage.push(order);
        }

        let worst_case = any_retry.then_some(worst_clock);
        let ids: Vec<String> = spec.systems.iter().map(|s| s.id.clone()).collect();
        let durations: Vec<Duration> = (0..n).map(duration_of).collect();
        let (critical, critical_path) =
            critical_path(&order_in_stage, deps, &start, &durations, &ids);

        let defaults = spec.defaults.clone();
        let playbook = pb.metadata.name.clone();
        let PlaybookSpec {
            sites,
            systems,
            stages: spec_stages,
            roles,
            ..
        } = pb.spec;
        let connections = sites
            .into_iter()
            .filter(|s| !s.connect.is_empty())
            .map(|s| (s.id, s.connect))
            .collect();
        let mut systems: Vec<Option<System>> = systems.into_iter().map(Some).collect();
        let stages = spec_stages
            .into_iter()
            .zip(order_in_stage)
            .zip(stage_times)
            .map(|((stage, order), (stage_start, stage_len))| {
                let systems: Vec<PlannedSystem> = order
                    .iter()
                    .map(|&i| {
                        let sys = systems[i]
                            .take()
                            .expect("each system is in exactly one stage");
                        let mut depends_on: Vec<String> =
                            deps[i].iter().map(|&j| ids[j].clone()).collect();
                        depends_on.sort();
                        PlannedSystem {
                            id: sys.id,
                            name: sys.name,
                            site: sys.site,
                            tier: sys.tier,
                            labels: sys.labels,
                            depends_on,
                            layer: layer[i],
                            critical: critical[i],
                            expected_duration: durations[i],
                            estimated_start: start[i],
                            start_timeout: sys
                                .start_timeout
                                .or(defaults.start_timeout)
                                .unwrap_or(DEFAULT_START_TIMEOUT),
                            probe: sys.probe.or(defaults.probe).resolve(),
                            verify: sys.verify,
                            start: sys.start,
                            stop: sys.stop,
                            health: sys.health,
                            optional: sys.optional,
                            retry: retries[i],
                        }
                    })
                    .collect();
                let rollback_order = systems.iter().rev().map(|s| s.id.clone()).collect();
                let mut approvals = stage.gate.approvals;
                approvals.sort();
                approvals.dedup();
                PlannedStage {
                    name: stage.name,
                    description: stage.description,
                    max_parallel: stage.max_parallel,
                    failure_domain: stage.failure_domain,
                    gate: PlannedGate {
                        soak: stage.gate.soak,
                        approvals,
                        on_failure: stage.gate.on_failure,
                        approval_timeout: stage.gate.approval_timeout,
                        on_timeout: stage
                            .gate
                            .approval_timeout
                            .map(|_| stage.gate.on_timeout.unwrap_or(OnFailure::Pause)),
                    },
                    layers: systems.iter().map(|s| s.layer + 1).max().unwrap_or(0),
                    estimated_start: stage_start,
                    estimated_duration: stage_len,
                    systems,
                    rollback_order,
                }
            })
            .collect();

        Plan {
            playbook,
            playbook_hash,
            estimated_duration: clock,
            worst_case,
            critical_path,
            env,
            inherit_env: defaults.inherit_env,
            connections,
            // Where a role was written is the file's, not the plan's.
            roles: roles.map(|roles| {
                roles
                    .into_iter()
                    .map(|r| crate::playbook::Role {
                        src: Default::default(),
                        ..r
                    })
                    .collect()
            }),
            stages,
        }
    }

    /// The role an approval of `stage` by someone claiming `role` counts
    /// for, or why it would count for nothing: the stage does not exist,
    /// its gate does not need that role, or it needs several and none was
    /// named. Both ways of approving (a journal's inbox, a RestartRun's
    /// spec) ask this before they record anything.
    pub fn approval_role(
        &self,
        run: &str,
        stage: &str,
        role: Option<String>,
    ) -> Result<Option<String>, String> {
        let Some(planned) = self.stages.iter().find(|s| s.name == stage) else {
            let names: Vec<&str> = self.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(format!(
                "run {run} has no stage `{stage}`; its stages are: {}",
                names.join(", ")
            ));
        };
        let roles = &planned.gate.approvals;
        let list = || {
            if roles.is_empty() {
                "no approval".to_owned()
            } else {
                roles.join(", ")
            }
        };
        match role {
            _ if roles.is_empty() => Err(format!(
                "stage `{stage}`'s gate asks for no approval; there is nothing to approve"
            )),
            Some(r) if !roles.contains(&r) => Err(format!(
                "stage `{stage}` does not need approval by `{r}`; it needs: {}",
                list()
            )),
            None if roles.len() > 1 => Err(format!(
                "stage `{stage}` needs approvals by several roles ({}): say which with --role",
                list()
            )),
            None => Ok(roles.first().cloned()),
            some => Ok(some),
        }
    }

    pub fn systems(&self) -> impl Iterator<Item = (&PlannedStage, &PlannedSystem)> {
        self.stages
            .iter()
            .flat_map(|st| st.systems.iter().map(move |s| (st, s)))
    }

    pub fn system_count(&self) -> usize {
        self.stages.iter().map(|s| s.systems.len()).sum()
    }

    pub fn site_count(&self) -> usize {
        self.systems()
            .map(|(_, s)| s.site.as_str())
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// The critical path: the longest chain of dependencies by expected
/// duration, first system first, and for each system whether it is on it.
/// Plan order is a topological order across all stages, so one pass
/// computes each system's heaviest chain ending in it. Ties go to the chain
/// that finishes later in the estimate, then by id.
fn critical_path(
    order_in_stage: &[Vec<usize>],
    deps: &[Vec<usize>],
    start: &[Duration],
    durations: &[Duration],
    ids: &[String],
) -> (Vec<bool>, Vec<String>) {
    let n = ids.len();
    let finish = |i: usize| start[i] + durations[i];
    let mut chain = vec![Duration::ZERO; n];
    for &i in order_in_stage.iter().flatten() {
        let before = deps[i]
            .iter()
            .map(|&j| chain[j])
            .max()
            .unwrap_or(Duration::ZERO);
        chain[i] = before + durations[i];
    }
    let heavier = |a: usize, b: usize| {
        chain[a]
            .cmp(&chain[b])
            .then_with(|| finish(a).cmp(&finish(b)))
            .then_with(|| ids[b].cmp(&ids[a]))
    };
    let mut critical = vec![false; n];
    let mut path = Vec::new();
    let mut at = order_in_stage
        .iter()
        .flatten()
        .copied()
        .max_by(|&a, &b| heavier(a, b));
    while let Some(i) = at {
        critical[i] = true;
        path.push(ids[i].clone());
        at = deps[i].iter().copied().max_by(|&a, &b| heavier(a, b));
    }
    path.reverse();
    (critical, path)
}

/// Layers and a topological order for one stage's systems: by layer, then id.
fn topo_layers<'a>(
    mine: &[usize],
    deps: &[Vec<usize>],
    stage_of: &[usize],
    stage: usize,
    layer: &mut [u32],
    id: impl Fn(usize) -> &'a str,
) -> Vec<usize> {
    // Kahn's algorithm over the stage's own edges; dependencies in earlier
    // stages are done before the stage begins and add no constraint here.
    let mut order: Vec<usize> = Vec::with_capacity(mine.len());
    let mut local = vec![usize::MAX; layer.len()];
    for (k, &i) in mine.iter().enumerate() {
        local[i] = k;
    }
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); mine.len()];
    let mut indegree = vec![0u32; mine.len()];
    for (k, &i) in mine.iter().enumerate() {
        for &j in &deps[i] {
            if stage_of[j] == stage {
                dependents[local[j]].push(k);
                indegree[k] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..mine.len()).filter(|&k| indegree[k] == 0).collect();
    while let Some(k) = ready.pop() {
        let i = mine[k];
        order.push(i);
        for &d in &dependents[k] {
            let di = mine[d];
            layer[di] = layer[di].max(layer[i] + 1);
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(d);
            }
        }
    }
    order.sort_by(|&a, &b| layer[a].cmp(&layer[b]).then_with(|| id(a).cmp(id(b))));
    order
}

/// Estimates start times as the engine would run the stage: a system starts
/// when its dependencies are done and a slot is free, earliest in plan order
/// first. Returns when the last system of the stage is done.
#[allow(clippy::too_many_arguments)]
fn schedule(
    order: &[usize],
    deps: &[Vec<usize>],
    stage_of: &[usize],
    stage: usize,
    max_parallel: Option<u32>,
    stage_start: Duration,
    duration_of: &impl Fn(usize) -> Duration,
    start: &mut [Duration],
) -> Duration {
    let slots = max_parallel.map_or(usize::MAX, |m| m as usize);
    let mut position = vec![usize::MAX; start.len()];
    for (p, &i) in order.iter().enumerate() {
        position[i] = p;
    }
    let mut waiting = vec![0usize; order.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); order.len()];
    for (p, &i) in order.iter().enumerate() {
        for &j in &deps[i] {
            if stage_of[j] == stage {
                waiting[p] += 1;
                dependents[position[j]].push(p);
            }
        }
    }
    // Ready systems by plan position; running ones by finish time.
    let mut ready: BinaryHeap<Reverse<usize>> = (0..order.len())
        .filter(|&p| waiting[p] == 0)
        .map(Reverse)
        .collect();
    let mut running: BinaryHeap<Reverse<(Duration, usize)>> = BinaryHeap::new();
    let mut now = stage_start;
    let mut end = stage_start;
    loop {
        while running.len() < slots {
            let Some(Reverse(p)) = ready.pop() else { break };
            let i = order[p];
            start[i] = now;
            let done = now + duration_of(i);
            end = end.max(done);
            running.push(Reverse((done, p)));
        }
        let Some(Reverse((t, p))) = running.pop() else {
            break;
        };
        now = t;
        for &d in &dependents[p] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    end
}

/// Feeds bytes straight into a hasher, so hashing a large playbook needs no
/// buffer the size of its JSON.
struct HashWriter(Sha256);

impl io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The SHA-256 of the playbook's meaning: `apiVersion`, `kind`,
/// `metadata.name` and the `spec`, as canonical JSON with sites and systems
/// sorted by id and every set-like list (dependsOn, selectors, approvals)
/// sorted and deduplicated. Formatting, comments, key order, the order
/// systems are written in and labels or annotations on the metadata do not
/// change it; anything that changes what runs does.
pub fn playbook_hash(pb: &Playbook) -> String {
    use serde::ser::{SerializeSeq, SerializeStruct, Serializer};
    use std::borrow::Cow;

    fn normalized(v: &[String]) -> bool {
        v.windows(2).all(|w| w[0] < w[1])
    }
    fn sorted(v: &mut Vec<String>) {
        v.sort();
        v.dedup();
    }
    // Most items are already in canonical form; only those that are not are
    // copied, so hashing a large playbook costs no second copy of it.
    fn canonical_system(s: &System) -> Cow<'_, System> {
        if normalized(&s.depends_on) {
            Cow::Borrowed(s)
        } else {
            let mut s = s.clone();
            sorted(&mut s.depends_on);
            Cow::Owned(s)
        }
    }
    fn canonical_stage(s: &Stage) -> Cow<'_, Stage> {
        let sel = &s.select;
        if [&sel.sites, &sel.tiers, &sel.systems, &s.gate.approvals]
            .iter()
            .all(|v| normalized(v))
        {
            Cow::Borrowed(s)
        } else {
            let mut s = s.clone();
            sorted(&mut s.select.sites);
            sorted(&mut s.select.tiers);
            sorted(&mut s.select.systems);
            sorted(&mut s.gate.approvals);
            Cow::Owned(s)
        }
    }
    // Destructured so that a new spec field cannot be left out of the hash.
    let PlaybookSpec {
        description,
        defaults,
        roles,
        sites,
        systems,
        stages,
    } = &pb.spec;
    // Who may decide is part of what was reviewed, in any order written.
    let roles = roles.as_ref().map(|roles| {
        let mut roles = roles.clone();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &mut roles {
            r.members.sort_by(|a, b| a.name.cmp(&b.name));
        }
        roles
    });
    let mut sites: Vec<&Site> = sites.iter().collect();
    sites.sort_by(|a, b| a.id.cmp(&b.id));
    let mut systems: Vec<&System> = systems.iter().collect();
    systems.sort_by(|a, b| a.id.cmp(&b.id));

    let mut w = HashWriter(Sha256::new());
    let result: Result<(), serde_json::Error> = (|| {
        let mut ser = serde_json::Serializer::new(&mut w);
        let mut top = (&mut ser).serialize_struct("Canonical", 7)?;
        top.serialize_field("apiVersion", &pb.api_version)?;
        top.serialize_field("kind", &pb.kind)?;
        top.serialize_field("name", &pb.metadata.name)?;
        top.serialize_field("description", description)?;
        top.serialize_field("defaults", defaults)?;
        // Left out when absent, so playbooks without roles keep their hash.
        if let Some(roles) = &roles {
            top.serialize_field("roles", roles)?;
        }
        top.serialize_field("sites", &sites)?;
        top.serialize_field("systems", &SystemsInOrder(&systems))?;
        top.serialize_field("stages", &StagesInOrder(stages))?;
        SerializeStruct::end(top)
    })();
    result.expect("writing JSON into a hasher cannot fail");

    struct SystemsInOrder<'a>(&'a [&'a System]);
    impl Serialize for SystemsInOrder<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for sys in self.0 {
                seq.serialize_element(&*canonical_system(sys))?;
            }
            seq.end()
        }
    }
    struct StagesInOrder<'a>(&'a [Stage]);
    impl Serialize for StagesInOrder<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(self.0.len()))?;
            for stage in self.0 {
                seq.serialize_element(&*canonical_stage(stage))?;
            }
            seq.end()
        }
    }

    let digest = w.0.finalize();
    let mut hex = String::with_capacity(71);
    hex.push_str("sha256:");
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Every `${env:NAME}` the playbook's actions and checks read, sorted.
fn env_names(pb: &Playbook) -> Vec<String> {
    let mut names = BTreeSet::new();
    let mut add = |text: &str| {
        if let Ok(found) = placeholder::env_names(text) {
            names.extend(found.into_iter().map(str::to_owned));
        }
    };
    for site in &pb.spec.sites {
        if let Some(file) = site
            .connect
            .ssh
            .as_ref()
            .and_then(|s| s.identity_file.as_deref())
        {
            add(file);
        }
    }
    for sys in &pb.spec.systems {
        let actions = std::iter::once(&sys.start).chain(sys.stop.as_ref());
        for action in actions {
            match action {
                Action::Exec(e) => exec_strings(e, &mut add),
                Action::Http(h) => http_strings(h, &mut add),
                Action::Kubernetes(_) | Action::Noop(_) => {}
                Action::Manual(m) => add(&m.instruction),
            }
        }
        for check in sys.verify.iter().chain(&sys.health) {
            match check {
                Check::Http(h) => http_strings(h, &mut add),
                Check::Tcp(t) => add(&t.address),
                Check::Exec(e) => exec_strings(e, &mut add),
                Check::Kubernetes(_) => {}
            }
        }
    }
    names.into_iter().collect()
}

fn exec_strings(e: &crate::playbook::Exec, add: &mut impl FnMut(&str)) {
    e.command.iter().for_each(|s| add(s));
    e.env.values().for_each(|s| add(s));
    if let Some(dir) = &e.working_dir {
        add(dir);
    }
}

fn http_strings(h: &crate::playbook::Http, add: &mut impl FnMut(&str)) {
    add(&h.url);
    h.headers.values().for_each(|s| add(s));
    for text in [&h.body, &h.body_contains].into_iter().flatten() {
        add(text);
    }
    if let Some(serde_json::Value::String(equals)) = h.json_pointer.as_ref().map(|m| &m.equals) {
        add(equals);
    }
}
