//! The operator against a real cluster: opt-in, with `BLACKSTART_E2E=1` and
//! a kubeconfig whose current context is a throwaway cluster (kind, k3d).
//!
//! It installs the CRDs, applies the example workloads, Playbook and
//! RestartRun, runs `blackstart operator` on this machine against the
//! cluster, approves the first gate with `blackstart approve --k8s`, and
//! waits for the run to succeed with every Deployment scaled up. The
//! README's "Kubernetes operator" section says how to get a cluster.
//! It is ignored unless asked for: no cluster runs in CI. Run it with
//! `BLACKSTART_E2E=1 cargo test -p blackstart-tests --test k8s_e2e -- --ignored`.

#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use blackstart_tests::{binary, root};

const NS: &str = "blackstart-demo";

fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .current_dir(root())
        .args(args)
        .output()
        .expect("kubectl is installed (BLACKSTART_E2E=1 needs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn must(args: &[&str]) -> String {
    let (ok, text) = kubectl(args);
    assert!(ok, "kubectl {} failed: {text}", args.join(" "));
    text
}

/// Kills the operator and removes the demo namespace, however the test ends.
struct Cleanup(Child);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = kubectl(&["delete", "namespace", NS, "--wait=false"]);
    }
}

fn jsonpath(path: &str) -> String {
    kubectl(&[
        "-n",
        NS,
        "get",
        "restartrun",
        "dealer-restart-1",
        "-o",
        &format!("jsonpath={path}"),
    ])
    .1
}

fn wait_for(what: &str, limit: Duration, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}; the run: {}",
            jsonpath("{.status}")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
#[ignore = "needs a throwaway Kubernetes cluster: BLACKSTART_E2E=1 … -- --ignored"]
fn the_example_run_succeeds_on_a_real_cluster() {
    assert!(
        std::env::var_os("BLACKSTART_E2E").is_some(),
        "set BLACKSTART_E2E=1 with a kubeconfig whose context is a throwaway cluster: this test changes it"
    );
    must(&["apply", "-f", "manifests/crds/"]);
    must(&[
        "wait",
        "--for=condition=Established",
        "crd/playbooks.blackstart.dev",
        "crd/restartruns.blackstart.dev",
    ]);
    must(&["apply", "-f", "manifests/examples/workloads.yaml"]);
    must(&[
        "apply",
        "-f",
        "manifests/examples/playbook-dealer-systems.yaml",
    ]);
    must(&["apply", "-f", "manifests/examples/restartrun.yaml"]);
    let operator = Command::new(binary())
        .current_dir(root())
        .args([
            "operator",
            "--namespace",
            NS,
            "--lease-namespace",
            NS,
            "--listen",
            "127.0.0.1:0",
            "--identity",
            "e2e",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _cleanup = Cleanup(operator);

    wait_for("the gate of `data`", Duration::from_secs(180), || {
        jsonpath("{.status.conditions[?(@.type==\"AwaitingApproval\")].status}") == "True"
    });
    let approve = Command::new(binary())
        .current_dir(root())
        .args([
            "approve",
            "dealer-restart-1",
            "data",
            "--by",
            "e2e",
            "--k8s",
            "--namespace",
            NS,
        ])
        .output()
        .unwrap();
    assert!(approve.status.success(), "{approve:?}");
    wait_for("Succeeded", Duration::from_secs(300), || {
        jsonpath("{.status.phase}") == "Succeeded"
    });
    for (name, replicas) in [
        ("parts-db", "1"),
        ("parts-api", "2"),
        ("dealer-portal", "2"),
    ] {
        let ready = must(&[
            "-n",
            NS,
            "get",
            "deployment",
            name,
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]);
        assert_eq!(ready, replicas, "{name}");
    }
    let events = must(&["-n", NS, "get", "events", "-o", "name"]);
    assert!(!events.is_empty());
}
