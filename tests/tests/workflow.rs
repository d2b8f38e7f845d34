//! The pull-request workflow's script (`.github/workflows/plan.yml`), run
//! as the workflow runs it: bash, in a git checkout with a base commit, on
//! playbooks whose names have spaces. What it writes is the comment.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use blackstart_tests::{binary, root};

/// The `run:` script of the step that writes the comment.
fn script() -> String {
    let text = std::fs::read_to_string(root().join(".github/workflows/plan.yml")).unwrap();
    let workflow: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    workflow["jobs"]["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Diff and plan every changed playbook")
        .and_then(|s| s["run"].as_str())
        .expect("the workflow has the step")
        .to_owned()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn the_comment_names_every_changed_playbook_even_with_spaces_in_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("playbooks")).unwrap();
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::os::unix::fs::symlink(binary(), dir.join("target/release/blackstart")).unwrap();
    let lab = std::fs::read_to_string(root().join("playbooks/local-lab.yaml")).unwrap();
    std::fs::write(dir.join("playbooks/plant lab.yaml"), &lab).unwrap();
    std::fs::write(dir.join(".gitignore"), "target/\n").unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "base"]);
    let base = git(dir, &["rev-parse", "HEAD"]);
    // A change to the spaced one, and a new playbook with a space too.
    std::fs::write(
        dir.join("playbooks/plant lab.yaml"),
        lab.replacen("expectedDuration: ", "expectedDuration: 2", 1),
    )
    .unwrap();
    std::fs::write(dir.join("playbooks/new lab.yaml"), &lab).unwrap();
    git(dir, &["add", "."]);
    git(dir, &["commit", "-q", "-m", "change"]);

    let out = Command::new("bash")
        .current_dir(dir)
        .args(["-e", "-c", &script()])
        .env("BASE_SHA", &base)
        .output()
        .unwrap();
    let comment = std::fs::read_to_string(dir.join("plan-comment.md")).unwrap_or_default();
    assert!(
        out.status.success(),
        "the script failed: {}\n{comment}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(comment.starts_with("<!-- blackstart-plan -->"), "{comment}");
    assert!(
        comment.contains("# `playbooks/plant lab.yaml`"),
        "{comment}"
    );
    assert!(comment.contains("# `playbooks/new lab.yaml`"), "{comment}");
    assert!(comment.contains("## Restart plan changes"), "{comment}");
    assert!(
        comment.contains("<details><summary>The whole dependency graph"),
        "{comment}"
    );
}
