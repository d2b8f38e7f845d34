//! `connect.kubernetes.context`: a site's kubernetes steps and probes go to
//! its own kubeconfig context, the other sites' to the current context.
//! Each context points at a small HTTP server of the test's that answers
//! every request with a Deployment ready at the count the step sets, and
//! logs what it was asked.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use blackstart_tests::Scratch;
use blackstart_tests::kube_api::Api;

fn kubeconfig(current: u16, site: u16) -> String {
    format!(
        "apiVersion: v1
kind: Config
current-context: hq
clusters:
  - name: hq
    cluster: {{ server: \"http://127.0.0.1:{current}\" }}
  - name: plant
    cluster: {{ server: \"http://127.0.0.1:{site}\" }}
users:
  - name: u
    user: {{ token: abc }}
contexts:
  - name: hq
    context: {{ cluster: hq, user: u, namespace: plant }}
  - name: plant-prod
    context: {{ cluster: plant, user: u, namespace: plant }}
"
    )
}

fn playbook(context: &str) -> String {
    format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: contexts }}
spec:
  defaults: {{ probe: {{ interval: 50ms }} }}
  sites:
    - {{ id: hq }}
    - {{ id: plant, connect: {{ kubernetes: {{ context: {context} }} }} }}
  systems:
    - id: erp
      site: hq
      start: {{ kubernetes: {{ kind: Deployment, name: erp, replicas: 2 }} }}
      health: [ {{ kubernetes: {{ kind: Deployment, name: erp }} }} ]
    - id: mes
      site: plant
      start: {{ kubernetes: {{ kind: Deployment, name: mes, replicas: 2 }} }}
      health: [ {{ kubernetes: {{ kind: Deployment, name: mes }} }} ]
  stages:
    - {{ name: all, select: {{ sites: [hq, plant] }} }}
"
    )
}

/// `apply` of the playbook whose site `plant` uses `context`, with a
/// kubeconfig whose current context is one stand-in and `plant-prod` the
/// other; the two stand-ins (current, site) and how `apply` ended.
fn apply_with(context: &str) -> (Api, Api, blackstart_tests::Run) {
    let (hq, plant) = (Api::start(), Api::start());
    let s = Scratch::new();
    let config = s.write("kubeconfig", &kubeconfig(hq.port, plant.port));
    let file = s.write("p.yaml", &playbook(context));
    let run = s
        .cmd(&["apply", &file, "--run-id", "r1"])
        .env("KUBECONFIG", &config)
        .output()
        .unwrap()
        .into();
    (hq, plant, run)
}

#[test]
fn a_sites_kubernetes_steps_go_to_its_own_context() {
    let (hq, plant, run) = apply_with("plant-prod");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let (hq, plant) = (hq.seen(), plant.seen());
    assert!(
        hq.iter()
            .any(|r| r.starts_with("PATCH") && r.contains("/deployments/erp")),
        "{hq:?}"
    );
    assert!(
        plant
            .iter()
            .any(|r| r.starts_with("PATCH") && r.contains("/deployments/mes")),
        "{plant:?}"
    );
    assert!(
        hq.iter().all(|r| !r.contains("/mes")),
        "the site's steps went to the current context: {hq:?}"
    );
    assert!(plant.iter().all(|r| !r.contains("/erp")), "{plant:?}");
    assert!(
        plant
            .iter()
            .any(|r| r.starts_with("GET") && r.contains("/deployments/mes")),
        "its probes too: {plant:?}"
    );
}

#[test]
fn a_missing_context_stops_the_run_before_anything_starts() {
    let (hq, plant, run) = apply_with("plant-typo");
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("site `plant`") && run.stderr.contains("plant-typo"),
        "{}",
        run.stderr
    );
    assert!(
        hq.seen().iter().all(|r| !r.starts_with("PATCH")),
        "{:?}",
        hq.seen()
    );
    assert!(plant.seen().is_empty());
}

#[test]
fn check_asks_each_sites_cluster_whether_its_workloads_exist_and_may_be_patched() {
    let (hq, plant) = (Api::start(), Api::start());
    let s = Scratch::new();
    let config = s.write("kubeconfig", &kubeconfig(hq.port, plant.port));
    let yaml = playbook("plant-prod")
        .replace("name: erp, replicas", "name: missing-erp, replicas")
        .replace("name: mes, replicas", "name: locked, replicas");
    let file = s.write("p.yaml", &yaml);
    let run: blackstart_tests::Run = std::process::Command::new(blackstart_tests::binary())
        .args(["check", &file])
        .env("KUBECONFIG", &config)
        .output()
        .unwrap()
        .into();
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let line = |needle: &str| {
        run.stdout
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in\n{}", run.stdout))
            .to_owned()
    };
    assert!(
        line("kube context plant-prod").contains("ok"),
        "{}",
        run.stdout
    );
    assert!(
        line("Deployment missing-erp").contains("not found in namespace plant"),
        "{}",
        run.stdout
    );
    assert!(
        line("Deployment locked").contains("`patch` is not allowed"),
        "{}",
        run.stdout
    );
    assert!(
        line("Deployment erp").contains("get and patch allowed"),
        "{}",
        run.stdout
    );
    assert!(
        line("Deployment mes").contains("get and patch allowed"),
        "{}",
        run.stdout
    );
    // It asked, and changed nothing.
    for api in [&hq, &plant] {
        assert!(
            api.seen().iter().all(|r| !r.starts_with("PATCH")),
            "{:?}",
            api.seen()
        );
    }
    assert!(
        plant
            .seen()
            .iter()
            .any(|r| r.contains("selfsubjectaccessreviews"))
    );
}
