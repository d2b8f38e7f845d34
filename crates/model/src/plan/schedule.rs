//! The estimate: when each system starts, how long each stage keeps the
//! run busy, the worst case with every retry used, and the critical path.
//!
//! It models the engine's own scheduling (a system starts once its
//! dependencies in the stage are healthy and a `maxParallel` slot is free,
//! earliest in plan order first) so that the estimate is what a drill
//! measures, not a bound that nobody meets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::adjacency::Adjacency;
use crate::duration::Duration;
use crate::playbook::{Action, PlaybookSpec, Retry, SmolStr};

use super::PlannedSystem;

/// What the estimate decided for a playbook, indexed by system (in the
/// playbook's order) or by stage.
pub(super) struct Timing {
    /// Each system's layer in its stage: 0 for those that wait on nothing
    /// in it.
    pub(super) layer: Vec<u32>,
    pub(super) start: Vec<Duration>,
    /// How long a system keeps its stage busy.
    pub(super) durations: Vec<Duration>,
    pub(super) retries: Vec<Option<Retry>>,
    pub(super) critical: Vec<bool>,
    pub(super) critical_path: Vec<String>,
    /// Each stage's systems in plan order: by layer, then id.
    pub(super) order_in_stage: Vec<Vec<usize>>,
    /// Each stage's estimated start and duration, its soak included.
    pub(super) stage_times: Vec<(Duration, Duration)>,
    pub(super) total: Duration,
    /// With every attempt used; only when something is retried.
    pub(super) worst_case: Option<Duration>,
}

/// Schedules a playbook's stages one after the other, as the engine runs
/// them.
pub(super) fn timing(
    spec: &PlaybookSpec,
    stage_of: &[usize],
    deps: &Adjacency,
    ids: &[SmolStr],
) -> Timing {
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
    // Read once, in the playbook's order: scheduling visits systems in an
    // order of its own, and at 100,000 systems each visit to a system's
    // fields was a trip to memory.
    let durations: Vec<Duration> = (0..n).map(duration_of).collect();
    let retries: Vec<Option<Retry>> = (0..n).map(retry_of).collect();
    let duration_of = |i: usize| durations[i];
    let worst_of = |i: usize| PlannedSystem::worst_duration(durations[i], retries[i]);

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
    let any_retry = retries.iter().any(Option::is_some);
    let (mut worst_start, mut worst_clock) = (
        vec![Duration::ZERO; if any_retry { n } else { 0 }],
        Duration::ZERO,
    );

    for (s, stage) in spec.stages.iter().enumerate() {
        let order = topo_layers(&members[s], deps, stage_of, s, &mut layer, |i| &ids[i]);
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

    let (critical, critical_path) = critical_path(&order_in_stage, deps, &start, &durations, ids);
    Timing {
        layer,
        start,
        durations,
        retries,
        critical,
        critical_path,
        order_in_stage,
        stage_times,
        total: clock,
        worst_case: any_retry.then_some(worst_clock),
    }
}

/// The critical path: the longest chain of dependencies by expected
/// duration, first system first, and for each system whether it is on it.
/// Plan order is a topological order across all stages, so one pass
/// computes each system's heaviest chain ending in it. Ties go to the chain
/// that finishes later in the estimate, then by id.
fn critical_path(
    order_in_stage: &[Vec<usize>],
    deps: &Adjacency,
    start: &[Duration],
    durations: &[Duration],
    ids: &[SmolStr],
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
        path.push(ids[i].to_string());
        at = deps[i].iter().copied().max_by(|&a, &b| heavier(a, b));
    }
    path.reverse();
    (critical, path)
}

/// The edges among one stage's `members`, each numbered by its place in
/// `members`: every member's dependents, and how many of its dependencies
/// each waits for. Dependencies in earlier stages are done before the
/// stage begins and add no constraint. `systems` is how many the playbook
/// has.
fn stage_edges(
    members: &[usize],
    deps: &Adjacency,
    stage_of: &[usize],
    stage: usize,
    systems: usize,
) -> (Adjacency, Vec<u32>) {
    let mut place = vec![usize::MAX; systems];
    for (k, &i) in members.iter().enumerate() {
        place[i] = k;
    }
    let place = &place;
    let edges = || {
        members.iter().enumerate().flat_map(|(k, &i)| {
            deps[i]
                .iter()
                .filter(|&&j| stage_of[j] == stage)
                .map(move |&j| (place[j], k))
        })
    };
    let dependents = Adjacency::from_pairs(members.len(), edges);
    let mut waiting = vec![0u32; members.len()];
    for (_, k) in edges() {
        waiting[k] += 1;
    }
    (dependents, waiting)
}

/// Layers and a topological order for one stage's systems: by layer, then id.
fn topo_layers<'a>(
    mine: &[usize],
    deps: &Adjacency,
    stage_of: &[usize],
    stage: usize,
    layer: &mut [u32],
    id: impl Fn(usize) -> &'a str,
) -> Vec<usize> {
    // Kahn's algorithm over the stage's own edges gives the layers.
    let (dependents, mut indegree) = stage_edges(mine, deps, stage_of, stage, layer.len());
    let mut ready: Vec<usize> = (0..mine.len()).filter(|&k| indegree[k] == 0).collect();
    let mut layers = 0;
    while let Some(k) = ready.pop() {
        let i = mine[k];
        layers = layers.max(layer[i] as usize + 1);
        for &d in &dependents[k] {
            let di = mine[d];
            layer[di] = layer[di].max(layer[i] + 1);
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(d);
            }
        }
    }
    // By layer, then id: the systems go into their layers in the
    // playbook's order, then each layer is sorted by id. A playbook written
    // in id order (as generated ones are) is sorted already, and a stable
    // sort sees that in one pass, where one sort of the whole stage by
    // (layer, id) compared ids all over memory.
    let by_layer = Adjacency::from_pairs(layers, || mine.iter().map(|&i| (layer[i] as usize, i)));
    let mut order: Vec<usize> = Vec::with_capacity(mine.len());
    for members in by_layer.iter() {
        let from = order.len();
        order.extend_from_slice(members);
        order[from..].sort_by(|&a, &b| id(a).cmp(id(b)));
    }
    order
}

/// Estimates start times as the engine would run the stage: a system starts
/// when its dependencies are done and a slot is free, earliest in plan order
/// first. Returns when the last system of the stage is done.
#[allow(clippy::too_many_arguments)]
fn schedule(
    order: &[usize],
    deps: &Adjacency,
    stage_of: &[usize],
    stage: usize,
    max_parallel: Option<u32>,
    stage_start: Duration,
    duration_of: &impl Fn(usize) -> Duration,
    start: &mut [Duration],
) -> Duration {
    let slots = max_parallel.map_or(usize::MAX, |m| m as usize);
    let (dependents, mut waiting) = stage_edges(order, deps, stage_of, stage, start.len());
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
