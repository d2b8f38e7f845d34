//! The plan: the deterministic compilation of a playbook that reviewers read
//! and the engine executes.
//!
//! Everything the engine needs is decided here (order, layers, resolved probe
//! settings and timeouts, rollback order), so that the engine never re-derives
//! order from the playbook and a reviewed plan is exactly what runs. The same
//! playbook always gives a byte-identical plan: ties are broken by id, never
//! by hash-map order or file position.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use crate::duration::{self, Duration};
use crate::playbook::{
    Action, Check, DEFAULT_START_TIMEOUT, Defaults, FailureDomain, Labels, OnFailure, PlaybookSpec,
    ProbePolicy, Retry, Stage, System,
};
use crate::validate::Validated;

mod hash;
mod schedule;

use hash::env_names;
pub use hash::playbook_hash;

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
    /// By site id, the names the playbook gives its sites: what the
    /// incident room's page and report call them. Absent in journals of
    /// releases before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub site_names: BTreeMap<String, String>,
    /// `spec.notify`: who is told what happens; URLs as written (through
    /// the environment), resolved only to send.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<crate::playbook::Notify>,
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
    pub rollback_order: Vec<SmolStr>,
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
    pub id: SmolStr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub site: SmolStr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<SmolStr>,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Every dependency, in this stage or an earlier one, sorted by id.
    pub depends_on: Vec<SmolStr>,
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

    /// A system as the plan runs it: its defaults resolved, its place and
    /// time in the estimate (`i` is its index in the playbook).
    fn new(
        sys: System,
        depends_on: Vec<SmolStr>,
        defaults: &Defaults,
        timing: &schedule::Timing,
        i: usize,
    ) -> PlannedSystem {
        PlannedSystem {
            id: sys.id,
            name: sys.name,
            site: sys.site,
            tier: sys.tier,
            labels: sys.labels,
            depends_on,
            layer: timing.layer[i],
            critical: timing.critical[i],
            expected_duration: timing.durations[i],
            estimated_start: timing.start[i],
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
            retry: timing.retries[i],
        }
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

impl PlannedStage {
    /// A stage as the plan runs it, from its systems in plan order and its
    /// estimated start and duration.
    fn new(
        stage: Stage,
        systems: Vec<PlannedSystem>,
        (estimated_start, estimated_duration): (Duration, Duration),
    ) -> PlannedStage {
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
            estimated_start,
            estimated_duration,
            systems,
            rollback_order,
        }
    }
}

/// Puts `items` in the order `order` gives (`items[p]` becomes what was at
/// `order[p]`), in place, by following each cycle of the permutation.
/// `order` is a permutation of the indices.
fn permute<T>(items: &mut [T], order: &[usize]) {
    assert_eq!(
        items.len(),
        order.len(),
        "each system is in exactly one stage"
    );
    let mut placed = vec![false; items.len()];
    for first in 0..items.len() {
        if placed[first] {
            continue;
        }
        let mut at = first;
        while order[at] != first {
            let from = order[at];
            items.swap(at, from);
            placed[at] = true;
            at = from;
        }
        placed[at] = true;
    }
}

impl Plan {
    /// Compiles a validated playbook into its plan. It consumes the playbook:
    /// the plan takes its systems' actions and checks over without copying.
    pub fn build(validated: Validated) -> Plan {
        let (pb, stage_of, deps) = validated.into_parts();
        let schedule = || {
            let ids: Vec<SmolStr> = pb.spec.systems.iter().map(|s| s.id.clone()).collect();
            let timing = schedule::timing(&pb.spec, &stage_of, &deps, &ids);
            (env_names(&pb), timing)
        };
        let hash = || playbook_hash(&pb);
        // The hash reads the whole playbook as JSON (0.1 s at 100,000
        // systems) and the schedule does not need it: on a second core
        // they take the time of one. Small playbooks are not worth a thread.
        let (playbook_hash, (env, timing)) = if pb.spec.systems.len() < 2_000 {
            (hash(), schedule())
        } else {
            std::thread::scope(|scope| {
                match std::thread::Builder::new().spawn_scoped(scope, hash) {
                    Ok(hashing) => {
                        let scheduled = schedule();
                        match hashing.join() {
                            Ok(hashed) => (hashed, scheduled),
                            Err(panic) => std::panic::resume_unwind(panic),
                        }
                    }
                    // No thread to be had: one after the other.
                    Err(_) => (hash(), schedule()),
                }
            })
        };

        let PlaybookSpec {
            sites,
            systems,
            stages,
            roles,
            defaults,
            notify,
            ..
        } = pb.spec;
        // The systems become planned systems in the memory they are in, in
        // the playbook's order (each reads its timing and dependencies in
        // turn, not all over memory), are then put in plan order stage
        // after stage where they are, and each stage but one is split off
        // into its own list. The largest stage stays in the first list:
        // the fewest copied. At 100,000 systems a second list of all of
        // them beside the first was 60 MiB.
        let mut planned: Vec<PlannedSystem> = systems
            .into_iter()
            .enumerate()
            .map(|(i, mut sys)| {
                // Validated: every dependency is a known system, so the
                // playbook's list, sorted and deduplicated, is the plan's
                // (in its own memory).
                let mut depends_on = std::mem::take(&mut sys.depends_on);
                depends_on.sort_unstable();
                depends_on.dedup();
                debug_assert_eq!(depends_on.len(), deps[i].len());
                PlannedSystem::new(sys, depends_on, &defaults, &timing, i)
            })
            .collect();
        let sizes: Vec<usize> = timing.order_in_stage.iter().map(Vec::len).collect();
        let largest = (0..sizes.len())
            .max_by_key(|&k| (sizes[k], Reverse(k)))
            .unwrap_or(0);
        let blocks: Vec<usize> = std::iter::once(largest)
            .chain((0..sizes.len()).filter(|&k| k != largest))
            .collect();
        let order: Vec<usize> = blocks
            .iter()
            .flat_map(|&k| timing.order_in_stage[k].iter().copied())
            .collect();
        permute(&mut planned, &order);
        let mut lists: Vec<Vec<PlannedSystem>> = (0..sizes.len()).map(|_| Vec::new()).collect();
        for &k in blocks.iter().skip(1).rev() {
            let at = planned.len() - sizes[k];
            lists[k] = planned.split_off(at);
            planned.shrink_to_fit();
        }
        if let Some(first) = lists.get_mut(largest) {
            *first = planned;
        }
        let stages = stages
            .into_iter()
            .zip(lists)
            .zip(&timing.stage_times)
            .map(|((stage, planned), &times)| PlannedStage::new(stage, planned, times))
            .collect();

        Plan {
            playbook: pb.metadata.name,
            playbook_hash,
            estimated_duration: timing.total,
            worst_case: timing.worst_case,
            critical_path: timing.critical_path,
            env,
            inherit_env: defaults.inherit_env,
            notify,
            site_names: sites
                .iter()
                .filter_map(|s| Some((s.id.clone(), s.name.clone()?)))
                .collect(),
            connections: sites
                .into_iter()
                .filter(|s| !s.connect.is_empty())
                .map(|s| (s.id, s.connect))
                .collect(),
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

#[cfg(test)]
mod tests {
    use super::permute;

    #[test]
    fn permute_puts_each_item_where_the_order_says() {
        // Every permutation of five, and a few long cycles of a larger set.
        let mut orders: Vec<Vec<usize>> = Vec::new();
        let mut all = vec![0, 1, 2, 3, 4];
        heap_permutations(&mut all, 5, &mut orders);
        assert_eq!(orders.len(), 120);
        let n = 1000;
        orders.push((0..n).map(|p| (p * 7 + 3) % n).rev().collect());
        orders.push((0..n).rev().collect());
        for order in orders {
            let mut items: Vec<String> = (0..order.len()).map(|i| format!("s{i}")).collect();
            let want: Vec<String> = order.iter().map(|&i| format!("s{i}")).collect();
            permute(&mut items, &order);
            assert_eq!(items, want, "{order:?}");
        }
    }

    fn heap_permutations(a: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
        if k == 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            heap_permutations(a, k - 1, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
}
