//! Properties that hold for any input: reading never panics, and every plan
//! keeps its invariants (each system once, dependencies first, layers as
//! the plan defines them, rollback the reverse of start).

use std::collections::{HashMap, HashSet};

use blackstart_model::{Plan, load, render};
use proptest::prelude::*;

/// Random playbooks that are mostly well-formed: random dependency graphs
/// (cycles and dangling references included), random stage assignment and
/// selectors, random gates and parallelism.
fn playbook(noise: bool) -> impl Strategy<Value = String> {
    (1usize..40, 1usize..5, 1usize..5, any::<u64>()).prop_map(move |(systems, sites, stages, seed)| {
        // Every stage gets at least one system.
        let stages = stages.min(systems);
        let mut rng = seed;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        let mut y = String::from("apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: { name: prop }\nspec:\n  sites:\n");
        for s in 0..sites {
            y.push_str(&format!("    - {{ id: site{s} }}\n"));
        }
        y.push_str("  systems:\n");
        for i in 0..systems {
            let mut deps = Vec::new();
            for _ in 0..next(4) {
                // Mostly backwards (acyclic), sometimes forwards or unknown.
                let target = match next(10) {
                    0 if noise => format!("sys{}", next(systems)),
                    1 if noise => format!("ghost{}", next(3)),
                    _ if i > 0 => format!("sys{}", next(i)),
                    _ => continue,
                };
                deps.push(target);
            }
            y.push_str(&format!(
                "    - {{ id: sys{i}, site: site{}, tier: t{}, dependsOn: [{}], expectedDuration: {}s, start: {{ noop: {{}} }}, stop: {{ noop: {{}} }} }}\n",
                next(sites + 1).min(sites - 1),
                (i * stages / systems).min(stages - 1) + usize::from(noise && next(12) == 0),
                deps.join(", "),
                next(90)
            ));
        }
        y.push_str("  stages:\n");
        for t in 0..stages {
            let parallel = match next(3) {
                0 => String::new(),
                _ => format!(", maxParallel: {}", 1 + next(4)),
            };
            y.push_str(&format!(
                "    - {{ name: s{t}, select: {{ tiers: [t{t}] }}{parallel}, gate: {{ soak: {}s, onFailure: {} }} }}\n",
                next(60),
                ["rollback", "pause", "abort"][next(3)]
            ));
        }
        y
    })
}

fn check_invariants(plan: &Plan) {
    let mut seen = HashSet::new();
    let mut position = HashMap::new();
    for (k, (_, s)) in plan.systems().enumerate() {
        assert!(seen.insert(s.id.clone()), "{} planned twice", s.id);
        position.insert(s.id.clone(), k);
    }
    for (stage_index, stage) in plan.stages.iter().enumerate() {
        let mine: HashMap<&str, u32> = stage
            .systems
            .iter()
            .map(|s| (s.id.as_str(), s.layer))
            .collect();
        for s in &stage.systems {
            let mut expected_layer = 0;
            for d in &s.depends_on {
                assert!(
                    position[d] < position[&s.id],
                    "{} before its dependency {d}",
                    s.id
                );
                if let Some(l) = mine.get(d.as_str()) {
                    expected_layer = expected_layer.max(l + 1);
                } else {
                    let dep_stage = plan
                        .stages
                        .iter()
                        .position(|st| st.systems.iter().any(|x| &x.id == d));
                    assert!(
                        dep_stage < Some(stage_index),
                        "{d} is not in an earlier stage"
                    );
                }
            }
            assert_eq!(s.layer, expected_layer, "layer of {}", s.id);
            assert!(s.estimated_start >= stage.estimated_start);
        }
        let reversed: Vec<&blackstart_model::playbook::SmolStr> =
            stage.systems.iter().rev().map(|s| &s.id).collect();
        assert_eq!(stage.rollback_order.iter().collect::<Vec<_>>(), reversed);
        if let Some(limit) = stage.max_parallel {
            // At no instant do more than `limit` systems of the stage run.
            for s in &stage.systems {
                let t = s.estimated_start;
                let running = stage
                    .systems
                    .iter()
                    .filter(|o| o.estimated_start <= t && t < o.estimated_finish())
                    .count();
                assert!(
                    running <= limit as usize,
                    "{running} running at once, limit {limit}"
                );
            }
        }
    }
    for pair in plan.critical_path.windows(2) {
        let later = plan
            .systems()
            .find(|(_, s)| s.id == pair[1])
            .map(|(_, s)| s);
        assert!(
            later.is_some_and(|s| s.depends_on.iter().any(|d| d == &pair[0])),
            "critical path breaks at {pair:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = load(&bytes);
    }

    #[test]
    fn random_yaml_like_text_never_panics(text in "[ a-z:\\-\\[\\]{},&*!|>'\"#\\n0-9.]{0,300}") {
        let _ = load(text.as_bytes());
    }

    #[test]
    fn valid_random_playbooks_plan_with_invariants(yaml in playbook(false)) {
        let v = load(yaml.as_bytes()).map_err(|d| TestCaseError::fail(d.render("prop.yaml")))?;
        let plan = Plan::build(v);
        check_invariants(&plan);
        prop_assert_eq!(render::json(&plan), render::json(&Plan::build(load(yaml.as_bytes()).unwrap())));
    }

    #[test]
    fn noisy_random_playbooks_validate_or_plan_with_invariants(yaml in playbook(true)) {
        match load(yaml.as_bytes()) {
            Ok(v) => {
                let plan = Plan::build(v);
                check_invariants(&plan);
                // Deterministic: the same text plans to the same bytes.
                let again = Plan::build(load(yaml.as_bytes()).unwrap());
                prop_assert_eq!(render::json(&plan), render::json(&again));
                let _ = (render::text(&plan), render::markdown(&plan), render::dot(&plan));
            }
            Err(diags) => {
                prop_assert!(diags.has_errors());
                for d in diags.errors() {
                    prop_assert!(d.pos.is_known() || d.message.contains("stages"), "no position: {}", d.message);
                }
            }
        }
    }

    #[test]
    fn mutated_examples_never_panic(cut in 0usize..30_000, insert in "[ a-z:\\-\\[\\]{}\\n]{0,8}") {
        let text = include_str!("../../../playbooks/global-restart.yaml");
        let at = text.char_indices().map(|(i, _)| i).nth(cut % text.chars().count()).unwrap_or(0);
        let mutated = format!("{}{}{}", &text[..at], insert, &text[at..]);
        if let Ok(v) = load(mutated.as_bytes()) {
            check_invariants(&Plan::build(v));
        }
    }
}
