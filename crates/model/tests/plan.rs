//! Planning: order, layers, estimates, critical path, hash and renderings.

use blackstart_model::{Duration, Plan, load, render};

fn plan(yaml: &str) -> Plan {
    let v = load(yaml.as_bytes()).unwrap_or_else(|d| panic!("{}", d.render("test.yaml")));
    Plan::build(v)
}

/// A small lab: a data stage with a diamond, then an app stage.
const LAB: &str = "\
apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: lab }
spec:
  defaults: { expectedDuration: 10s }
  sites:
    - { id: dc, name: Lab data centre }
  systems:
    - { id: net, site: dc, tier: data, expectedDuration: 5s, start: { noop: {} } }
    - { id: db, site: dc, tier: data, dependsOn: [net], expectedDuration: 30s, start: { exec: { command: [pg_ctl, start] } }, stop: { exec: { command: [pg_ctl, stop] } } }
    - { id: cache, site: dc, tier: data, dependsOn: [net], start: { exec: { command: [redis-server] } } }
    - { id: queue, site: dc, tier: data, dependsOn: [db, cache], start: { noop: {} } }
    - { id: api, site: dc, tier: app, dependsOn: [queue, db], expectedDuration: 20s, start: { http: { url: \"http://127.0.0.1:9000/start\" } }, stop: { noop: {} },
        health: [ { http: { url: \"http://127.0.0.1:9000/healthz\", expectStatus: 200 } } ] }
    - { id: web, site: dc, tier: app, start: { noop: {} }, stop: { noop: {} } }
  stages:
    - name: data
      select: { tiers: [data] }
      maxParallel: 1
      gate: { soak: 1m, approvals: [incident-commander] }
    - name: app
      select: { tiers: [app] }
      gate: { onFailure: rollback }
";

#[test]
fn order_layers_and_rollback() {
    let p = plan(LAB);
    let data = &p.stages[0];
    let order: Vec<(&str, u32)> = data
        .systems
        .iter()
        .map(|s| (s.id.as_str(), s.layer))
        .collect();
    assert_eq!(order, [("net", 0), ("cache", 1), ("db", 1), ("queue", 2)]);
    assert_eq!(data.layers, 3);
    assert_eq!(data.rollback_order, ["queue", "db", "cache", "net"]);
    // In its own stage `api` depends on nothing, so it is layer 0.
    let app: Vec<(&str, u32)> = p.stages[1]
        .systems
        .iter()
        .map(|s| (s.id.as_str(), s.layer))
        .collect();
    assert_eq!(app, [("api", 0), ("web", 0)]);
    assert_eq!(p.stages[1].systems[0].depends_on, ["db", "queue"]);
}

#[test]
fn estimate_counts_max_parallel_soak_and_barriers() {
    let p = plan(LAB);
    // One at a time: net 5s, cache 10s, db 30s, queue 10s = 55s, then the 1m soak.
    assert_eq!(p.stages[0].estimated_duration, Duration::from_secs(115));
    assert_eq!(p.stages[1].estimated_start, Duration::from_secs(115));
    // api (20s) and web (10s) start together after the barrier.
    assert_eq!(p.stages[1].estimated_duration, Duration::from_secs(20));
    assert_eq!(p.estimated_duration, Duration::from_secs(135));
    let starts: Vec<u64> = p.stages[0]
        .systems
        .iter()
        .map(|s| s.estimated_start.as_millis() / 1000)
        .collect();
    assert_eq!(starts, [0, 5, 15, 45]);
}

#[test]
fn unbounded_parallelism_overlaps_starts() {
    let p = plan(&LAB.replace("      maxParallel: 1\n", ""));
    // net 5s, then db 30s beside cache 10s, then queue 10s: 45s + 1m soak.
    assert_eq!(p.stages[0].estimated_duration, Duration::from_secs(105));
}

#[test]
fn critical_path_is_a_dependency_chain_ending_last() {
    let p = plan(LAB);
    assert_eq!(p.critical_path, ["net", "db", "queue", "api"]);
    let critical: Vec<&str> = p
        .systems()
        .filter(|(_, s)| s.critical)
        .map(|(_, s)| s.id.as_str())
        .collect();
    assert_eq!(critical, ["net", "db", "queue", "api"]);
}

#[test]
fn probe_and_timeout_defaults_are_resolved() {
    let p = plan(LAB);
    let api = &p.stages[1].systems[0];
    assert_eq!(api.start_timeout, Duration::from_secs(600));
    assert_eq!(api.probe.interval, Duration::from_secs(10));
    assert_eq!(api.probe.failure_threshold, 3);
}

#[test]
fn hash_ignores_formatting_but_not_meaning() {
    let base = plan(LAB).playbook_hash;
    assert!(base.starts_with("sha256:") && base.len() == 71, "{base}");
    // Comments, indentation, key order, system order and dependsOn order.
    let reformatted = LAB
        .replace("spec:\n", "# the lab\nspec:   # restart order below\n")
        .replace(
            "{ id: dc, name: Lab data centre }",
            "{ name: Lab data centre, id: dc }",
        )
        .replace("dependsOn: [db, cache]", "dependsOn: [cache, db]");
    let mut swapped: Vec<&str> = reformatted.lines().collect();
    assert!(swapped[9].contains("id: net") && swapped[10].contains("id: db"));
    swapped.swap(9, 10); // net and db change places
    assert_eq!(plan(&(swapped.join("\n") + "\n")).playbook_hash, base);
    assert_eq!(plan(&reformatted).playbook_hash, base);
    // Any change of meaning changes it.
    for changed in [
        LAB.replace("soak: 1m", "soak: 2m"),
        LAB.replace("pg_ctl, start", "pg_ctl, restart"),
        LAB.replace("dependsOn: [db, cache]", "dependsOn: [db]"),
        LAB.replace("name: lab", "name: lab2"),
    ] {
        assert_ne!(plan(&changed).playbook_hash, base);
    }
}

#[test]
fn json_holds_the_design_contract() {
    let json: serde_json::Value = serde_json::from_str(&render::json(&plan(LAB))).unwrap();
    assert_eq!(json["playbook"], "lab");
    assert!(
        json["playbookHash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(json["estimatedDuration"], 135.0);
    assert_eq!(
        json["criticalPath"],
        serde_json::json!(["net", "db", "queue", "api"])
    );
    let stage = &json["stages"][0];
    assert_eq!(stage["name"], "data");
    assert_eq!(stage["gate"]["soak"], 60.0);
    assert_eq!(
        stage["gate"]["approvals"],
        serde_json::json!(["incident-commander"])
    );
    assert_eq!(stage["gate"]["onFailure"], "pause");
    let db = &stage["systems"][2];
    assert_eq!(db["id"], "db");
    assert_eq!(db["site"], "dc");
    assert_eq!(db["dependsOn"], serde_json::json!(["net"]));
    assert_eq!(db["layer"], 1);
    assert_eq!(db["expectedDuration"], 30.0);
    // The JSON reads back into the same plan.
    let back: Plan = serde_json::from_value(json).unwrap();
    assert_eq!(back, plan(LAB));
}

#[test]
fn plans_are_byte_identical_across_runs() {
    let a = render::json(&plan(LAB));
    for _ in 0..5 {
        assert_eq!(render::json(&plan(LAB)), a);
    }
}

#[test]
fn text_rendering() {
    insta::assert_snapshot!("lab_text", render::text(&plan(LAB)));
}

#[test]
fn markdown_rendering() {
    insta::assert_snapshot!("lab_markdown", render::markdown(&plan(LAB)));
}

#[test]
fn mermaid_and_dot_rendering() {
    insta::assert_snapshot!("lab_mermaid", render::mermaid(&plan(LAB)));
    insta::assert_snapshot!("lab_dot", render::dot(&plan(LAB)));
}

#[test]
fn example_playbooks_plan_and_render() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../playbooks");
    for (name, systems, sites) in [("global-restart", 63, 11), ("third-party-reconnect", 11, 3)] {
        let text = std::fs::read_to_string(format!("{root}/{name}.yaml")).unwrap();
        let p = plan(&text);
        assert_eq!(p.system_count(), systems, "{name}");
        assert_eq!(p.site_count(), sites, "{name}");
        insta::assert_snapshot!(format!("{name}_markdown"), render::markdown(&p));
    }
}

#[test]
fn large_plans_leave_out_the_unreadable_parts_of_markdown() {
    let yaml =
        blackstart_model::synth::playbook_yaml(blackstart_model::synth::Shape::new(2000, 10));
    let md = render::markdown(&plan(&yaml));
    assert!(md.contains("too many to list here"), "{md}");
    assert!(md.contains("more than a Mermaid diagram can show"));
    assert!(!md.contains("```mermaid"));
}

/// The global example's header promises which systems verify their
/// binaries before they start; the promise is read by people deciding
/// whether to trust the example, so it is held to.
#[test]
fn global_example_verifies_what_its_header_says() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../playbooks");
    let text = std::fs::read_to_string(format!("{root}/global-restart.yaml")).unwrap();
    assert!(text.contains(
        "Every PLC gateway and MES (and the engine plant's historian and quality\n# system) verifies"
    ));
    let p = plan(&text);
    for (_, s) in p.systems() {
        let promised = s.id.ends_with("-plc-gateway")
            || s.id.ends_with("-mes")
            || s.id == "wolv-scada-historian"
            || s.id == "wolv-quality";
        if promised {
            assert!(!s.verify.is_empty(), "{} promises verify checks", s.id);
        }
        // "the line-side systems after them do not"
        let plant = [
            "wolverhampton",
            "solihull",
            "halewood",
            "nitra",
            "changshu",
            "pune",
            "itatiaia",
        ];
        if plant.contains(&s.site.as_str()) && !promised {
            assert!(
                s.verify.is_empty(),
                "{}: the header says line-side systems do not verify",
                s.id
            );
        }
    }
}

/// The estimate is the path without failures; with retries the plan also
/// gives the worst case, every attempt and backoff used, and shows which
/// systems are optional or retried.
#[test]
fn retries_give_a_worst_case_beside_the_estimate() {
    let p = plan(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: r }
spec:
  defaults: { expectedDuration: 10s }
  sites: [ { id: dc } ]
  systems:
    - { id: db, site: dc, retry: { attempts: 3, backoff: 30s }, start: { noop: {} } }
    - { id: web, site: dc, dependsOn: [db], optional: true, start: { noop: {} } }
  stages:
    - { name: all, select: { sites: [dc] } }
",
    );
    assert_eq!(p.estimated_duration, Duration::from_secs(20));
    // db: 3 × 10s + 2 × 30s = 90s, then web's 10s.
    assert_eq!(p.worst_case, Some(Duration::from_secs(100)));
    let text = render::text(&p);
    assert!(
        text.contains("Worst case, every retry used: 1m40s"),
        "{text}"
    );
    assert!(text.contains("[up to 3 starts, 30s apart]"), "{text}");
    assert!(text.contains("[optional]"), "{text}");
    assert_eq!(plan(LAB).worst_case, None, "no retries, no worst case");
}

/// Absurd retry numbers give a saturated worst case, never a panic.
#[test]
fn an_absurd_retry_saturates_the_worst_case() {
    let p = plan(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: h }
spec:
  sites: [ { id: a } ]
  systems:
    - { id: x, site: a, expectedDuration: 100000h, retry: { attempts: 4294967295, backoff: 100000h }, start: { noop: {} } }
  stages:
    - { name: s, select: { sites: [a] } }
",
    );
    assert_eq!(p.worst_case, Some(Duration::from_millis(u64::MAX)));
}

/// The estimate counts a system until its probes can say Healthy: the first
/// probe at or after its expected duration (probes at `initialDelay`, then
/// every `interval`), plus `successThreshold - 1` intervals; a system
/// without health checks is done when its start is.
#[test]
fn the_estimate_waits_for_the_probes_as_the_engine_does() {
    let yaml = "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: probes }
spec:
  defaults: { probe: { initialDelay: 5s, interval: 10s, successThreshold: 2 } }
  sites: [ { id: dc } ]
  systems:
    - { id: a, site: dc, expectedDuration: 8m, start: { noop: {} }, health: [ { tcp: { address: \"h:1\" } } ] }
    - { id: b, site: dc, dependsOn: [a], expectedDuration: 3s, start: { noop: {} }, health: [ { tcp: { address: \"h:1\" } } ] }
    - { id: c, site: dc, dependsOn: [b], expectedDuration: 1m, start: { noop: {} } }
  stages:
    - { name: all, select: { sites: [dc] } }
";
    let p = plan(yaml);
    // a: probes at 5s, 15s, … the first at or after 480s is 485s, the
    // second pass 10s later; b: up at 3s, first probe at 5s, second at 15s;
    // c: no probes, 60s.
    assert_eq!(p.estimated_duration.as_millis(), (495 + 15 + 60) * 1000);
    let policy = p.stages[0].systems[0].probe;
    assert_eq!(
        policy
            .healthy_after(blackstart_model::Duration::ZERO)
            .as_millis(),
        15_000
    );
    assert_eq!(
        policy
            .healthy_after(blackstart_model::Duration::from_secs(5))
            .as_millis(),
        15_000
    );
}

/// Graphviz places clusters where their edges pull them; the DOT output
/// holds each stage between invisible points so stages read left to right
/// in their order.
#[test]
fn dot_keeps_the_stages_in_order() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../playbooks/global-restart.yaml"
    ))
    .unwrap();
    let p = plan(&text);
    let dot = render::dot(&p);
    assert!(dot.contains("newrank=true;"));
    for (k, stage) in p.stages.iter().enumerate() {
        let held = dot
            .lines()
            .filter(|l| {
                l.trim_start().starts_with(&format!("stage_{k}_in -> "))
                    && l.ends_with(&format!("-> stage_{k}_out [style=invis];"))
            })
            .count();
        assert_eq!(held, stage.systems.len(), "stage {}", stage.name);
        if k + 1 < p.stages.len() {
            assert!(
                dot.contains(&format!(
                    "stage_{k}_out -> stage_{}_in [style=invis];",
                    k + 1
                )),
                "stage {} before the next",
                stage.name
            );
        }
    }
}
