//! `blackstart drill`: the real engine against the simulated plant.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use blackstart_tests::blackstart;

fn status(state_dir: &str, run: &str) -> serde_json::Value {
    let out = blackstart(&["status", run, "--state-dir", state_dir, "--format", "json"]);
    serde_json::from_str(&out.stdout).unwrap()
}

fn phase(status: &serde_json::Value, id: &str) -> String {
    status["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()["phase"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_reconnect_playbook_drills_to_success() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = blackstart(&[
        "drill",
        "playbooks/third-party-reconnect.yaml",
        "--speed",
        "20000",
        "--state-dir",
        dir,
        "--run-id",
        "d1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("the plant saw 11 starts, 0 stops"),
        "{}",
        run.stderr
    );
    let s = status(dir, "d1");
    assert_eq!(s["phase"], "Succeeded");
    assert!(
        s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|st| st["approvals"].as_array().is_some_and(|a| !a.is_empty()))
    );
    assert_eq!(
        blackstart(&["audit", "d1", "--state-dir", dir, "--verify"]).code,
        0
    );
}

#[test]
fn a_failing_system_rolls_its_stage_back_and_keeps_earlier_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = blackstart(&[
        "drill",
        "playbooks/global-restart.yaml",
        "--fail",
        "wolv-engine-mes",
        "--speed",
        "20000",
        "--state-dir",
        dir,
        "--run-id",
        "d2",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let s = status(dir, "d2");
    assert_eq!(s["phase"], "RolledBack");
    assert_eq!(phase(&s, "identity"), "Healthy", "corporate core stays up");
    assert_eq!(
        phase(&s, "erp-finance"),
        "Healthy",
        "business systems stay up"
    );
    assert_eq!(phase(&s, "wolv-engine-mes"), "RolledBack");
    assert_eq!(phase(&s, "sol-mes"), "Skipped");
    assert!(
        s["reason"].as_str().unwrap().contains("wolv-engine-mes"),
        "{s}"
    );
}

#[test]
fn flapping_during_the_soak_fails_the_gate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    // minimal-feed soaks 24h (17s at 5000x); flapping trips failureThreshold long before.
    let run = blackstart(&[
        "drill",
        "playbooks/third-party-reconnect.yaml",
        "--flap",
        "minimal-feed",
        "--speed",
        "5000",
        "--state-dir",
        dir,
        "--run-id",
        "d3",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let s = status(dir, "d3");
    assert_eq!(s["phase"], "RolledBack", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("minimal-feed: unhealthy during the soak"),
        "{s}"
    );
    assert_eq!(phase(&s, "full-feed"), "Skipped");
}

#[test]
fn log_format_json_gives_one_json_object_per_transition() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = blackstart(&[
        "--log-format",
        "json",
        "drill",
        "playbooks/third-party-reconnect.yaml",
        "--speed",
        "20000",
        "--state-dir",
        dir,
        "--run-id",
        "j1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let healthy = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "system" && l["fields"]["phase"] == "Healthy")
        .count();
    assert_eq!(healthy, 11, "{}", run.stderr);
    assert!(
        lines
            .iter()
            .all(|l| l["fields"]["run"].is_null() || l["fields"]["run"] == "j1")
    );
    assert!(
        lines.last().unwrap()["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the plant saw")
    );
}
