//! The `blackstart` binary on good and bad playbooks: exit codes, messages
//! and the JSON plan's contract (see the README), as a user or a CI job sees them.

use blackstart_tests::{Run, blackstart, blackstart_stdin};

const GLOBAL: &str = "playbooks/global-restart.yaml";
const RECONNECT: &str = "playbooks/third-party-reconnect.yaml";

fn write(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, content).expect("temp files can be written");
    path.to_string_lossy().into_owned()
}

fn assert_code(run: &Run, code: i32) {
    assert_eq!(
        run.code, code,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

#[test]
fn validate_accepts_the_examples() {
    for file in [GLOBAL, RECONNECT] {
        let run = blackstart(&["validate", file]);
        assert_code(&run, 0);
        assert!(run.stdout.contains(": valid: "), "{}", run.stdout);
    }
}

#[test]
fn validate_reports_every_problem_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(blackstart_tests::root().join(GLOBAL))
        .unwrap()
        .replace("dependsOn: [dns, pki]", "dependsOn: [dns, pkl]")
        .replace("      maxParallel: 2\n", "      maxParallel: two\n")
        .replace(
            "onFailure: pause\n    - name: business",
            "onFailure: retry\n    - name: business",
        );
    let file = write(&dir, "broken.yaml", text.as_bytes());
    let run = blackstart(&["validate", &file]);
    assert_code(&run, 2);
    let lines: Vec<&str> = run.stderr.lines().collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.contains(": error: ")).collect();
    // One pass: the bad types (maxParallel stood in two stages) and the
    // unknown reference, in file order.
    assert_eq!(errors.len(), 4, "{}", run.stderr);
    assert!(
        errors[0].starts_with(&format!(
            "{file}:114:24: error: system `identity` depends on unknown system `pkl`"
        )),
        "{}",
        errors[0]
    );
    assert!(
        run.stderr.contains("  help: did you mean `pki`?"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("unknown onFailure \"retry\"; expected one of: rollback, pause, abort")
    );
    assert!(
        run.stderr
            .contains("expected a whole number, found a string")
    );
    assert!(
        run.stderr
            .ends_with(&format!("{file}: 4 error(s), 0 warning(s)\n")),
        "{}",
        run.stderr
    );
}

#[test]
fn validate_json_lists_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "bad.yaml", b"apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: { name: x }\nspec: { sites: [], systems: [], stages: [], extra: 1 }\n");
    let run = blackstart(&["validate", "--format", "json", &file]);
    assert_code(&run, 2);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let first = &report["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["line"], 4);
    assert_eq!(first["column"], 45);
    assert_eq!(first["message"], "unknown field `extra` in spec");
}

#[test]
fn hostile_input_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = blackstart_model::synth::alias_bomb(9);
    let deep = "a:\n".to_owned()
        + &(1..100_000)
            .map(|i| format!("{}- \n", " ".repeat(i % 120)))
            .collect::<String>();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.yaml", Vec::new(), "the file is empty"),
        (
            "junk.bin",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect(),
            "error: the file",
        ),
        ("bomb.yaml", bomb.into_bytes(), "YAML nodes"),
        (
            "nested.yaml",
            "[".repeat(100_000).into_bytes(),
            "invalid YAML",
        ),
        ("deep.yaml", deep.into_bytes(), "error:"),
    ];
    for (name, content, expected) in cases {
        let file = write(&dir, name, &content);
        let run = blackstart(&["validate", &file]);
        assert_code(&run, 2);
        assert!(run.stderr.contains(expected), "{name}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{name}: {}", run.stderr);
    }
    // A 100 MB file is refused by its size, before it is read.
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100 * 1024 * 1024)
        .unwrap();
    let run = blackstart(&["validate", big.to_str().unwrap()]);
    assert_code(&run, 2);
    assert!(
        run.stderr
            .contains("is 104857600 bytes; a playbook may be at most 64 MiB"),
        "{}",
        run.stderr
    );
    // The same from a pipe, where the size is not known in advance.
    let run = blackstart_stdin(&["validate", "-"], &vec![b' '; 65 * 1024 * 1024]);
    assert_code(&run, 2);
    assert!(
        run.stderr.contains("a playbook may be at most 64 MiB"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_files_and_bad_usage_exit_2() {
    let run = blackstart(&["validate", "playbooks/no-such-file.yaml"]);
    assert_code(&run, 2);
    assert!(
        run.stderr
            .contains("cannot read playbooks/no-such-file.yaml"),
        "{}",
        run.stderr
    );
    let run = blackstart(&["validate", "playbooks"]);
    assert_code(&run, 2);
    assert!(
        run.stderr
            .contains("playbooks is a directory; a playbook must be a regular file"),
        "{}",
        run.stderr
    );
    let run = blackstart(&["plan", GLOBAL, "--format", "pdf"]);
    assert_code(&run, 2);
    let run = blackstart(&["frobnicate"]);
    assert_code(&run, 2);
}

#[test]
fn plan_json_holds_the_design_contract() {
    let run = blackstart(&["plan", GLOBAL, "--format", "json"]);
    assert_code(&run, 0);
    let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(plan["playbook"], "global-restart");
    assert!(
        plan["playbookHash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(plan["estimatedDuration"].as_f64().unwrap() > 3600.0);
    let stages = plan["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 7);
    let mut seen = std::collections::HashSet::new();
    for stage in stages {
        assert!(stage["name"].is_string() && stage["gate"]["onFailure"].is_string());
        for s in stage["systems"].as_array().unwrap() {
            let id = s["id"].as_str().unwrap().to_owned();
            for dep in s["dependsOn"].as_array().unwrap() {
                assert!(seen.contains(dep.as_str().unwrap()), "{id} before {dep}");
            }
            assert!(s["site"].is_string() && s["layer"].is_u64());
            seen.insert(id);
        }
    }
    assert_eq!(seen.len(), 63);
    let path = plan["criticalPath"].as_array().unwrap();
    assert!(path.len() >= 5);
    // Byte-identical on every run, and -o x.json writes the same JSON.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plan.json");
    assert_code(
        &blackstart(&["plan", GLOBAL, "-o", out.to_str().unwrap()]),
        0,
    );
    assert_eq!(std::fs::read_to_string(out).unwrap(), run.stdout);
}

#[test]
fn plan_renders_every_format() {
    for (format, start) in [
        ("text", "Plan for third-party-reconnect"),
        ("markdown", "## Restart plan: `third-party-reconnect`"),
        ("mermaid", "flowchart LR"),
        ("dot", "digraph \"third-party-reconnect\" {"),
    ] {
        let run = blackstart(&["plan", RECONNECT, "--format", format]);
        assert_code(&run, 0);
        assert!(run.stdout.starts_with(start), "{format}: {}", run.stdout);
    }
    insta::assert_snapshot!("reconnect_text", blackstart(&["plan", RECONNECT]).stdout);
}

#[test]
fn plan_reads_standard_input() {
    let text = std::fs::read(blackstart_tests::root().join(RECONNECT)).unwrap();
    let run = blackstart_stdin(&["plan", "-", "--format", "json"], &text);
    assert_code(&run, 0);
    let from_file = blackstart(&["plan", RECONNECT, "--format", "json"]);
    assert_eq!(run.stdout, from_file.stdout);
}

#[test]
fn diff_reports_changes_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(blackstart_tests::root().join(GLOBAL)).unwrap();
    let changed = text.replace("soak: 30m", "soak: 1h").replace(
        "dependsOn: [dealer-portal, email]",
        "dependsOn: [dealer-portal, email, warranty]",
    );
    let new = write(&dir, "new.yaml", changed.as_bytes());

    let same = blackstart(&["diff", GLOBAL, GLOBAL, "--exit-code"]);
    assert_code(&same, 0);
    assert!(same.stdout.contains("No change to the restart"));

    let run = blackstart(&["diff", GLOBAL, &new, "--exit-code"]);
    assert_code(&run, 1);
    assert!(
        run.stdout.contains("`dealer-workshops` soak: 30m → 1h"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("`retailer-crm` now waits for `warranty`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("Estimated duration: **4h58m15s** → **5h28m15s** (+30m)"),
        "{}",
        run.stdout
    );
    // Without --exit-code a change is not a failure.
    assert_code(&blackstart(&["diff", GLOBAL, &new]), 0);

    let json = blackstart(&["diff", GLOBAL, &new, "--format", "json"]);
    let d: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(d["gateChanges"][0]["field"], "soak");

    // A new playbook diffs as all added; a broken one is invalid input.
    let added = blackstart(&[
        "diff",
        "playbooks/not-there-yet.yaml",
        RECONNECT,
        "--format",
        "text",
    ]);
    assert_code(&added, 0);
    assert!(added.stdout.contains("Systems added:"), "{}", added.stdout);
    let broken = write(&dir, "broken.yaml", b"kind: [\n");
    assert_code(&blackstart(&["diff", GLOBAL, &broken]), 2);
}

#[test]
fn help_has_examples() {
    for args in [
        &["--help"][..],
        &["plan", "--help"],
        &["validate", "--help"],
        &["diff", "--help"],
        &["operator", "--help"],
        &["approve", "--help"],
    ] {
        let run = blackstart(args);
        assert_code(&run, 0);
        assert!(run.stdout.contains("Examples:"), "{args:?}: {}", run.stdout);
    }
}

#[test]
fn cluster_commands_without_a_cluster_say_so() {
    for args in [
        &["approve", "run-1", "data", "--by", "alice", "--k8s"][..],
        &["operator", "--listen", "127.0.0.1:0"],
    ] {
        let out = std::process::Command::new(blackstart_tests::binary())
            .args(args)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no Kubernetes API to talk to")
                && stderr.contains("/nonexistent/kubeconfig"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // --namespace only means something with --k8s.
    let run = blackstart(&[
        "approve",
        "run-1",
        "data",
        "--by",
        "alice",
        "--namespace",
        "x",
    ]);
    assert_code(&run, 2);
}

/// A reader that goes away (`| head -1`, a pager quit early) ends the
/// output quietly: exit 0, no panic.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs/fixture");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::copy(
        blackstart_tests::root().join("tests/fixtures/journal-v1/journal.jsonl"),
        runs.join("journal.jsonl"),
    )
    .unwrap();
    let state = tmp.path().display().to_string();
    for args in [
        vec!["status", "fixture", "--state-dir", &state],
        vec![
            "status",
            "fixture",
            "--format",
            "json",
            "--state-dir",
            &state,
        ],
        vec!["audit", "fixture", "--state-dir", &state],
        vec!["audit", "fixture", "--verify", "--state-dir", &state],
        vec!["plan", GLOBAL, "--format", "json"],
        vec!["validate", GLOBAL],
    ] {
        let mut child = Command::new(blackstart_tests::binary())
            .current_dir(blackstart_tests::root())
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // closed before a byte is written
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_drill_speed_out_of_range_is_refused() {
    for speed in ["1e-30", "0", "-5", "NaN", "inf"] {
        let run = blackstart(&["drill", GLOBAL, &format!("--speed={speed}")]);
        assert_code(&run, 2);
        assert!(
            run.stderr.contains("--speed must be"),
            "{speed}: {}",
            run.stderr
        );
    }
}

#[test]
fn completions_and_the_manual_page_come_from_the_cli_itself() {
    for shell in ["bash", "zsh", "fish"] {
        let run = blackstart(&["completions", shell]);
        assert_code(&run, 0);
        for command in ["apply", "resume", "retry", "rollback", "audit"] {
            assert!(run.stdout.contains(command), "{shell}: {command}");
        }
    }
    assert_code(&blackstart(&["completions", "tcsh"]), 2);
    let man = blackstart(&["man"]);
    assert_code(&man, 0);
    assert!(man.stdout.contains(".TH blackstart 1"), "{}", man.stdout);
}

/// `check` is the preflight: each secret set (its value never shown), each
/// exec command present, each host resolvable; a table by site and system,
/// or JSON; exit 1 when anything failed, 0 once all passed; nothing is
/// started or written.
#[test]
fn check_finds_what_a_restart_would_miss_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("pre.yaml");
    let write = |tool: &str, host: &str| {
        std::fs::write(
            &file,
            format!(
                "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: pre }}
spec:
  sites: [ {{ id: nitra }}, {{ id: pune }} ]
  systems:
    - {{ id: mes, site: nitra, start: {{ exec: {{ command: [{tool}, --token, \"${{env:PRE_TOKEN}}\"] }} }},
        health: [ {{ http: {{ url: \"http://{host}:8080/health\" }} }} ] }}
    - {{ id: quality, site: pune, start: {{ exec: {{ command: [sh, -c, \"touch {dir}/started\"] }} }} }}
  stages:
    - {{ name: all, select: {{ sites: [nitra, pune] }} }}
",
                dir = tmp.path().display()
            ),
        )
        .unwrap();
    };
    let check = |args: &[&str], token: Option<&str>| -> Run {
        let mut c = std::process::Command::new(blackstart_tests::binary());
        c.arg("check").arg(&file).args(args).env_remove("PRE_TOKEN");
        if let Some(t) = token {
            c.env("PRE_TOKEN", t);
        }
        c.output().unwrap().into()
    };
    write("/nonexistent/mes-ctl", "no-such-host.invalid");
    let out = check(&[], None);
    assert_eq!(out.code, 1, "{}", out.stderr);
    for wanted in [
        "secret ${env:PRE_TOKEN}",
        "not set",
        "command /nonexistent/mes-ctl",
        "not found on this machine",
        "host no-such-host.invalid:8080",
        "does not resolve",
        "4 checks: 1 passed, 3 failed, 0 not checked",
    ] {
        assert!(
            out.stdout.contains(wanted),
            "wanted `{wanted}` in:\n{}",
            out.stdout
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&check(&["--format", "json", "--site", "pune"], None).stdout).unwrap();
    assert!(
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["site"] == "pune" || f["site"] == "-"),
        "{json}"
    );
    write("sh", "127.0.0.1");
    let out = check(&[], Some("s3cr3t-value"));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        !out.stdout.contains("s3cr3t-value"),
        "a secret is never shown"
    );
    assert!(!tmp.path().join("started").exists(), "check starts nothing");
    let unknown = check(&["--site", "lisbon"], None);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
}
