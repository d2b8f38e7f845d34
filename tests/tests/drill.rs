//! `blackstart drill`: the real engine against the simulated plant.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use blackstart_tests::{blackstart, system_phase};

fn status(state_dir: &str, run: &str) -> serde_json::Value {
    try_status(state_dir, run).unwrap()
}

/// The run's status, or None while it has not started yet.
fn try_status(state_dir: &str, run: &str) -> Option<serde_json::Value> {
    let out = blackstart(&["status", run, "--state-dir", state_dir, "--format", "json"]);
    serde_json::from_str(&out.stdout).ok()
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
    // Plain progress lines show every transition, in the order recorded:
    // each system's start and health, and each gate's approvals before it
    // passes (sampling the state would lose fast ones).
    let lines: Vec<&str> = run.stderr.lines().map(str::trim).collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("no line `{line}` in:\n{}", run.stderr))
    };
    for sys in s["systems"].as_array().unwrap() {
        let id = sys["id"].as_str().unwrap();
        assert!(at(&format!("{id} Starting")) < at(&format!("{id} Healthy")));
    }
    for stage in s["stages"].as_array().unwrap() {
        let name = stage["name"].as_str().unwrap();
        let passed = at(&format!("stage {name} Succeeded"));
        assert!(at(&format!("stage {name} Gate")) < passed);
        for a in stage["approvals"].as_array().unwrap() {
            let approved = format!(
                "stage {name} approved by {} as {}, unsigned",
                a["by"].as_str().unwrap(),
                a["role"].as_str().unwrap()
            );
            assert!(at(&approved) < passed, "{approved}");
        }
    }
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
    // The failure is shown when it happens, with its reason; the systems
    // never started are one line per stage, not one each.
    assert!(
        run.stderr.lines().any(|l| l
            .trim_start()
            .starts_with("wolv-engine-mes Failed (not healthy within its startTimeout")
            && l.contains("HTTP 503")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("  16 system(s) of stage assembly-international Skipped, never started: "),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr
            .lines()
            .any(|l| l.ends_with(" Skipped") && !l.starts_with("stage ")),
        "{}",
        run.stderr
    );
    assert_eq!(
        system_phase(&s, "identity"),
        "Healthy",
        "corporate core stays up"
    );
    assert_eq!(
        system_phase(&s, "erp-finance"),
        "Healthy",
        "business systems stay up"
    );
    assert_eq!(system_phase(&s, "wolv-engine-mes"), "RolledBack");
    assert_eq!(system_phase(&s, "sol-mes"), "Skipped");
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
    assert_eq!(system_phase(&s, "full-feed"), "Skipped");
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

#[test]
fn manual_approvals_make_a_drill_wait_for_people() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let mut drill = std::process::Command::new(blackstart_tests::binary())
        .current_dir(blackstart_tests::root())
        .args([
            "drill",
            "playbooks/third-party-reconnect.yaml",
            "--speed",
            "20000",
            "--manual-approvals",
            "--state-dir",
            dir,
            "--run-id",
            "m1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut approved = Vec::new();
    let mut confirmed: Vec<String> = Vec::new();
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the drill did not finish: {:?}",
            try_status(dir, "m1")
        );
        if let Some(code) = drill.try_wait().unwrap() {
            assert_eq!(code.code(), Some(0));
            break;
        }
        let Some(s) = try_status(dir, "m1") else {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        };
        // Manual steps wait for a person, as in a real run.
        for sys in s["systems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["waitingFor"] == "manual-step")
        {
            let id = sys["id"].as_str().unwrap().to_owned();
            if !confirmed.contains(&id) {
                let out = blackstart(&["confirm", "m1", &id, "--by", "carol", "--state-dir", dir]);
                assert_eq!(out.code, 0, "{}", out.stderr);
                confirmed.push(id);
            }
        }
        for stage in s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|st| st["phase"] == "Gate")
        {
            let name = stage["name"].as_str().unwrap().to_owned();
            if !approved.contains(&name) {
                // One person per role of a gate.
                for (by, role) in [
                    ("carol", "security-lead"),
                    ("dora", "dpo"),
                    ("cian", "ciso"),
                ] {
                    let _ = blackstart(&[
                        "approve",
                        "m1",
                        &name,
                        "--by",
                        by,
                        "--role",
                        role,
                        "--state-dir",
                        dir,
                    ]);
                }
                approved.push(name);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let s = status(dir, "m1");
    assert_eq!(s["phase"], "Succeeded");
    let by: Vec<&str> = s["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|st| st["approvals"].as_array().unwrap())
        .map(|a| a["by"].as_str().unwrap())
        .collect();
    assert!(
        !by.is_empty() && by.iter().all(|b| ["carol", "dora", "cian"].contains(b)),
        "only people approved: {by:?}"
    );
    assert_eq!(
        confirmed.len(),
        3,
        "each manual step waited for a person: {confirmed:?}"
    );
}

/// An optional system that fails does not hold its stage: the drill goes on
/// through every stage, what depends on it is Blocked, and the run ends
/// Degraded with exit 1.
#[test]
fn an_optional_failure_ends_the_drill_degraded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = blackstart(&[
        "drill",
        "playbooks/global-restart.yaml",
        "--fail",
        "warranty",
        "--speed",
        "20000",
        "--state-dir",
        dir,
        "--run-id",
        "d9",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let s = status(dir, "d9");
    assert_eq!(s["phase"], "Degraded", "{s}");
    let phase_of = |id: &str| {
        s["systems"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .map(|x| x["phase"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(phase_of("warranty"), "Failed");
    assert_eq!(phase_of("workshop-diagnostics"), "Blocked");
    assert_eq!(phase_of("dealer-parts-dms"), "Healthy");
    assert!(
        s["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|st| st["phase"] == "Succeeded"),
        "{s}"
    );
    assert!(
        run.stderr.contains(
            "workshop-diagnostics Blocked (warranty, which it depends on, failed; never started)"
        ),
        "{}",
        run.stderr
    );
}

/// The international plants are failure domains of their own: a failure at
/// Nitra rolls back Nitra's part of the stage only, the other plants pass
/// the gate, what depends on Nitra is Blocked, and the drill ends Degraded.
#[test]
fn a_failure_at_nitra_holds_nitra_and_the_other_plants_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let run = blackstart(&[
        "drill",
        "playbooks/global-restart.yaml",
        "--fail",
        "nitra-mes",
        "--speed",
        "20000",
        "--state-dir",
        dir,
        "--run-id",
        "d10",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let s = status(dir, "d10");
    assert_eq!(s["phase"], "Degraded", "{s}");
    assert_eq!(s["held"][0]["site"], "nitra", "{s}");
    for sys in s["systems"].as_array().unwrap() {
        let (id, phase) = (sys["id"].as_str().unwrap(), sys["phase"].as_str().unwrap());
        if id.starts_with("changshu-") || id.starts_with("pune-") || id.starts_with("itatiaia-") {
            assert_eq!(phase, "Healthy", "{id}: the other plants go on");
        }
        if id == "nitra-plc-gateway" {
            assert_eq!(phase, "RolledBack", "Nitra's part is rolled back");
        }
    }
    assert!(
        run.stderr.contains("site nitra held in stage assembly-international (rollback, stopping nitra-mes, nitra-plc-gateway)"),
        "{}",
        run.stderr
    );
}
