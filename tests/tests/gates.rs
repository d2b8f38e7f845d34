//! Gates a commander can trust, end to end from two terminals: decisions
//! are taken only when the gate waits, from members of its roles, one role
//! per person, signed by those whose keys are enrolled; signatures made
//! with OpenSSH's own `ssh-keygen -Y sign` verify; replays are refused; a
//! denial fails the gate; `confirm` answers only a system that waits.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blackstart_tests::{Scratch, root, system_phase, wait_exit};

/// The test keys (`tests/keys/`), copied with the permissions ssh-keygen
/// insists on for a private key.
fn key(s: &Scratch, name: &str) -> (String, String) {
    let keys = root().join("tests/keys");
    let private = s.dir().join(name);
    std::fs::copy(keys.join(name), &private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    let public = std::fs::read_to_string(keys.join(format!("{name}.pub"))).unwrap();
    (private.display().to_string(), public.trim().to_owned())
}

/// db (data), app (apps) and web (a manual step for a plant manager). The
/// data gate needs an incident commander and a plant manager; alice may be
/// either, bob is a plant manager, carol an incident commander without a
/// key. The apps gate rolls back on failure.
fn playbook(s: &Scratch, alice: &str, bob: &str) -> String {
    let d = s.dir().display();
    s.write(
        "gates.yaml",
        &format!(
            "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: gates }}
spec:
  defaults: {{ probe: {{ interval: 100ms, timeout: 1s }} }}
  roles:
    - name: incident-commander
      members: [ {{ name: alice, key: \"{alice}\" }}, {{ name: carol }} ]
    - name: plant-manager
      members: [ {{ name: bob, key: \"{bob}\" }}, {{ name: alice, key: \"{alice}\" }} ]
  sites: [ {{ id: dc }} ]
  systems:
    - id: db
      site: dc
      tier: data
      start: {{ exec: {{ command: [sh, -c, \"sleep 0.5; echo start db >> {d}/log; touch {d}/db.ok\"] }} }}
      stop: {{ exec: {{ command: [sh, -c, \"echo stop db >> {d}/log; rm -f {d}/db.ok\"] }} }}
      health: [ {{ exec: {{ command: [test, -f, {d}/db.ok] }} }} ]
    - id: app
      site: dc
      tier: app
      dependsOn: [db]
      start: {{ exec: {{ command: [sh, -c, \"echo start app >> {d}/log; touch {d}/app.ok\"] }} }}
      stop: {{ exec: {{ command: [sh, -c, \"echo stop app >> {d}/log; rm -f {d}/app.ok\"] }} }}
      health: [ {{ exec: {{ command: [test, -f, {d}/app.ok] }} }} ]
  stages:
    - {{ name: data, select: {{ tiers: [data] }}, gate: {{ approvals: [incident-commander, plant-manager] }} }}
    - {{ name: apps, select: {{ tiers: [app] }}, gate: {{ approvals: [incident-commander], onFailure: rollback }} }}
"
        ),
    )
}

/// The gates playbook in a scratch directory with the test keys, and
/// `apply` of it (with `extra` arguments) run until the data gate waits.
struct AtTheGate {
    s: Scratch,
    alice_key: String,
    bob_key: String,
    apply: std::process::Child,
}

fn at_the_gate(run: &str, extra: &[&str]) -> AtTheGate {
    let s = Scratch::new();
    let (alice_key, alice) = key(&s, "alice");
    let (bob_key, bob) = key(&s, "bob");
    let file = playbook(&s, &alice, &bob);
    let mut args = vec!["apply", file.as_str(), "--run-id", run];
    args.extend(extra);
    let apply = s.spawn(&args);
    s.wait(run, "the data gate", |st| {
        st["stages"][0]["phase"] == "Gate"
    });
    AtTheGate {
        s,
        alice_key,
        bob_key,
        apply,
    }
}

fn stage_phase(s: &Scratch, run: &str, stage: &str) -> String {
    s.status(run)["stages"]
        .as_array()
        .and_then(|v| v.iter().find(|st| st["name"] == stage))
        .map_or(String::new(), |st| {
            st["phase"].as_str().unwrap_or("").to_owned()
        })
}

fn refused(s: &Scratch, args: &[&str], why: &str) {
    let out = s.run(args);
    assert_eq!(out.code, 2, "{args:?} should be refused: {}", out.stderr);
    assert!(
        out.stderr.contains(why),
        "{args:?}: wanted `{why}` in: {}",
        out.stderr
    );
}

#[test]
fn a_gate_is_decided_by_its_members_when_it_waits_and_signatures_verify() {
    let s = Scratch::new();
    let (alice_key, alice) = key(&s, "alice");
    let (bob_key, bob) = key(&s, "bob");
    let file = playbook(&s, &alice, &bob);
    let mut apply = s.spawn(&["apply", &file, "--run-id", "g1"]);
    s.wait("g1", "db starting", |st| {
        system_phase(st, "db") == "Starting"
    });

    // Too early: the stage's systems are not all healthy yet.
    refused(
        &s,
        &[
            "approve",
            "g1",
            "data",
            "--by",
            "alice",
            "--role",
            "incident-commander",
            "--key",
            &alice_key,
        ],
        "its gate takes decisions once all are healthy",
    );
    s.wait("g1", "the data gate", |st| {
        st["stages"][0]["phase"] == "Gate"
    });

    // Not a member; a member with a key who does not sign; a signature
    // made with another person's key; a signature where none is enrolled.
    refused(
        &s,
        &[
            "approve",
            "g1",
            "data",
            "--by",
            "mallory",
            "--role",
            "incident-commander",
        ],
        "mallory is not a member of role `incident-commander`; its members: alice, carol",
    );
    refused(
        &s,
        &[
            "approve",
            "g1",
            "data",
            "--by",
            "alice",
            "--role",
            "incident-commander",
        ],
        "alice has a key enrolled, so the decision must be signed",
    );
    refused(
        &s,
        &[
            "approve",
            "g1",
            "data",
            "--by",
            "bob",
            "--role",
            "plant-manager",
            "--key",
            &alice_key,
        ],
        "the signature was made with another key than bob's",
    );
    refused(
        &s,
        &[
            "approve",
            "g1",
            "data",
            "--by",
            "carol",
            "--role",
            "incident-commander",
            "--key",
            &alice_key,
        ],
        "carol has no key enrolled",
    );

    // alice signs with ssh-keygen herself: --message, then --signature.
    let message = s.run(&[
        "approve",
        "g1",
        "data",
        "--by",
        "alice",
        "--role",
        "incident-commander",
        "--message",
    ]);
    assert_eq!(message.code, 0, "{}", message.stderr);
    assert!(
        message.stdout.starts_with("blackstart decision v1\n"),
        "{}",
        message.stdout
    );
    assert!(
        message
            .stdout
            .contains("stage: \"data\"\nrole: \"incident-commander\"\nby: \"alice\"\n")
    );
    let text = s.write("decision.txt", &message.stdout);
    let signed = Command::new("ssh-keygen")
        .args([
            "-q",
            "-Y",
            "sign",
            "-n",
            "blackstart",
            "-f",
            &alice_key,
            &text,
        ])
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let sig = format!("{text}.sig");

    // The same signature is no good for another role or another stage.
    refused(
        &s,
        &[
            "approve",
            "g1",
            "data",
            "--by",
            "alice",
            "--role",
            "plant-manager",
            "--signature",
            &sig,
        ],
        "the signature does not match this decision",
    );
    refused(
        &s,
        &[
            "deny",
            "g1",
            "data",
            "--by",
            "alice",
            "--role",
            "incident-commander",
            "--reason",
            "no",
            "--signature",
            &sig,
        ],
        "the signature does not match this decision",
    );
    let taken = s.run(&[
        "approve",
        "g1",
        "data",
        "--by",
        "alice",
        "--role",
        "incident-commander",
        "--signature",
        &sig,
    ]);
    assert_eq!(taken.code, 0, "{}", taken.stderr);
    s.wait("g1", "alice's approval", |st| {
        st["stages"][0]["approvals"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });

    // One person, one role of a gate.
    refused(
        &s,
        &[
            "approve",
            "g1",
            "data",
            "--by",
            "alice",
            "--role",
            "plant-manager",
            "--key",
            &alice_key,
        ],
        "one person fills at most one role of a gate",
    );
    // bob signs through --key; the gate opens.
    let bob_ok = s.run(&[
        "approve",
        "g1",
        "data",
        "--by",
        "bob",
        "--role",
        "plant-manager",
        "--key",
        &bob_key,
        "--note",
        "CHG-1042",
    ]);
    assert_eq!(bob_ok.code, 0, "{}", bob_ok.stderr);

    // apps: denied by an incident commander; its onFailure rolls back.
    s.wait("g1", "the apps gate", |st| {
        st["stages"][1]["phase"] == "Gate"
    });
    let denied = s.run(&[
        "deny",
        "g1",
        "apps",
        "--by",
        "carol",
        "--role",
        "incident-commander",
        "--reason",
        "EDR alerts on app",
    ]);
    assert_eq!(denied.code, 0, "{}", denied.stderr);
    assert_eq!(wait_exit(&mut apply, Duration::from_secs(30)), 1);
    let status = s.status("g1");
    assert_eq!(status["phase"], "RolledBack", "{status}");
    // The failed stage is undone; the stage before it stays up.
    assert_eq!(s.log(), ["start db", "start app", "stop app"]);
    assert_eq!(stage_phase(&s, "g1", "apps"), "RolledBack");

    // The audit shows who decided, signed or not, and verifies again.
    let audit = s.run(&["audit", "g1"]);
    assert!(
        audit
            .stdout
            .contains("stage data approved by alice as incident-commander, signed SHA256:"),
        "{}",
        audit.stdout
    );
    assert!(
        audit
            .stdout
            .contains("stage data approved by bob as plant-manager, signed SHA256:"),
        "{}",
        audit.stdout
    );
    assert!(
        audit.stdout.contains("(note: CHG-1042)"),
        "{}",
        audit.stdout
    );
    assert!(
        audit.stdout.contains(
            "stage apps denied by carol as incident-commander, unsigned: EDR alerts on app"
        ),
        "{}",
        audit.stdout
    );
    let verify = s.run(&["audit", "g1", "--verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    assert!(
        verify
            .stderr
            .contains("decisions: 2 signed and verified against the plan's roles, 1 unsigned"),
        "{}",
        verify.stderr
    );
}

/// An inbox request written by hand (not through the CLI's checks) is
/// checked by the engine all the same: refused, journaled with why, and
/// the run goes on waiting for a good one.
#[test]
fn the_engine_checks_what_reaches_its_inbox() {
    let AtTheGate {
        s,
        alice_key,
        bob_key: _,
        mut apply,
    } = at_the_gate("g2", &[]);
    let inbox = Path::new(&s.state_dir()).join("runs/g2/inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(
        inbox.join("0-forged.json"),
        r#"{"type":"approve","stage":"data","by":"alice","role":"incident-commander"}"#,
    )
    .unwrap();
    s.wait("g2", "the forged approval refused", |_| {
        s.events("g2").iter().any(|e| e["type"] == "refused")
    });
    let refused = s
        .events("g2")
        .into_iter()
        .find(|e| e["type"] == "refused")
        .unwrap();
    assert_eq!(refused["by"], "alice");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("must be signed"),
        "{refused}"
    );
    assert!(
        s.status("g2")["stages"][0]["approvals"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Confirm answers only a system that waits for it.
    let out = s.run(&["confirm", "g2", "db", "--by", "carol"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("`db` is Healthy and waits for no confirmation"),
        "{}",
        out.stderr
    );

    for (by, role, key) in [
        ("alice", "incident-commander", Some(&alice_key)),
        ("bob", "plant-manager", None),
    ] {
        let mut args = vec!["approve", "g2", "data", "--by", by, "--role", role];
        if let Some(k) = key {
            args.extend(["--key", k]);
        }
        let out = s.run(&args);
        if by == "bob" {
            // bob's key is enrolled and he did not sign.
            assert_eq!(out.code, 2);
        } else {
            assert_eq!(out.code, 0, "{}", out.stderr);
        }
    }
    let mut kill = Command::new("kill")
        .args(["-INT", &apply.id().to_string()])
        .spawn()
        .unwrap();
    kill.wait().unwrap();
    assert_eq!(
        wait_exit(&mut apply, Duration::from_secs(30)),
        1,
        "a paused run exits 1"
    );
    assert_eq!(s.status("g2")["phase"], "Paused");
}

/// A malformed file in the inbox is reported and put aside; a good
/// approval behind it is taken.
#[test]
fn a_malformed_inbox_file_does_not_block_a_good_approval() {
    let AtTheGate {
        s,
        alice_key,
        bob_key,
        mut apply,
    } = at_the_gate("g3", &[]);
    let inbox = Path::new(&s.state_dir()).join("runs/g3/inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("0-broken.json"), "{ not json").unwrap();
    for (by, role, k) in [
        ("alice", "incident-commander", &alice_key),
        ("bob", "plant-manager", &bob_key),
    ] {
        let out = s.run(&[
            "approve", "g3", "data", "--by", by, "--role", role, "--key", k,
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    s.wait("g3", "the apps gate", |st| {
        st["stages"][1]["phase"] == "Gate"
    });
    assert!(inbox.join("refused/0-broken.json").exists());
    assert!(
        s.events("g3")
            .iter()
            .any(|e| e["type"] == "refused" && e["decision"] == "unreadable request"),
        "the malformed file is reported"
    );
    let out = s.run(&[
        "approve",
        "g3",
        "apps",
        "--by",
        "alice",
        "--role",
        "incident-commander",
        "--key",
        &alice_key,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(wait_exit(&mut apply, Duration::from_secs(30)), 0);
}

/// `status` says what a waiting gate needs and who may give it; and, once
/// the driving process is killed, that nobody drives the run and how to
/// carry on.
#[test]
fn status_says_what_a_gate_needs_and_when_nobody_drives_the_run() {
    let AtTheGate {
        s,
        alice_key: _,
        bob_key: _,
        mut apply,
    } = at_the_gate("g4", &[]);
    let out = s.run(&["status", "g4"]);
    assert!(
        out.stdout.contains("waits for approval as incident-commander by alice (signs), carol: `blackstart approve g4 data --by NAME --role incident-commander`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("waits for approval as plant-manager by bob (signs), alice (signs)"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("no process drives it"),
        "{}",
        out.stdout
    );
    apply.kill().unwrap();
    apply.wait().unwrap();
    let out = s.run(&["status", "g4"]);
    assert!(
        out.stdout
            .contains("but no process drives it: it was interrupted")
            && out.stdout.contains("`blackstart resume g4`"),
        "{}",
        out.stdout
    );
    assert_eq!(s.status("g4")["interrupted"], true);
}

/// A commander steers a run another terminal drives: `pause` holds it,
/// `rollback --dry-run` shows what would stop and changes nothing, and
/// `rollback` reaches the driving process, which rolls back and names who
/// asked; `resume` of the ended run says it has ended.
#[test]
fn pause_and_rollback_from_another_terminal() {
    let AtTheGate {
        s,
        alice_key,
        bob_key: _,
        mut apply,
    } = at_the_gate("g5", &["--by", "alice"]);
    refused(
        &s,
        &["pause", "g5", "--by", "mallory"],
        "mallory is a member of no role",
    );
    // alice has a key enrolled: her pause is signed like her approvals.
    refused(
        &s,
        &["pause", "g5", "--by", "alice", "--reason", "EDR alert"],
        "must be signed",
    );
    let out = s.run(&[
        "pause",
        "g5",
        "--by",
        "alice",
        "--reason",
        "EDR alert",
        "--key",
        &alice_key,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("pause by alice (signed)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        wait_exit(&mut apply, Duration::from_secs(30)),
        1,
        "a paused run exits 1"
    );
    let status = s.status("g5");
    assert_eq!(status["phase"], "Paused");
    assert_eq!(status["reason"], "paused by alice: EDR alert");
    refused(
        &s,
        &["pause", "g5", "--by", "alice"],
        "no process drives run g5 (Paused)",
    );

    let preview = s.run(&["rollback", "g5", "--by", "alice", "--dry-run"]);
    assert_eq!(preview.code, 0, "{}", preview.stderr);
    assert!(
        preview
            .stdout
            .contains("would stop, in this order (nothing was changed):\n   1. db  ("),
        "{}",
        preview.stdout
    );
    assert_eq!(
        s.status("g5")["phase"],
        "Paused",
        "a dry run changes nothing"
    );
    // With spec.roles every rollback names a member, signed if enrolled.
    refused(&s, &["rollback", "g5"], "say who asks with --by NAME");
    refused(&s, &["rollback", "g5", "--by", "alice"], "must be signed");
    assert_eq!(
        s.status("g5")["phase"],
        "Paused",
        "a refusal changes nothing"
    );

    let mut resumed = s.spawn(&["resume", "g5", "--by", "carol"]);
    s.wait("g5", "the resumed run", |st| st["phase"] == "Running");
    let out = s.run(&["rollback", "g5", "--by", "alice", "--key", &alice_key]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("rollback by alice (signed) handed to run g5"),
        "{}",
        out.stderr
    );
    wait_exit(&mut resumed, Duration::from_secs(30));
    let status = s.status("g5");
    assert_eq!(status["phase"], "RolledBack", "{status}");
    assert_eq!(status["rollback"]["by"], "alice");
    assert_eq!(s.log(), ["start db", "stop db"]);
    let events = s.events("g5");
    assert!(
        !events.iter().any(|e| e["type"] == "run"
            && e["phase"] == "Paused"
            && e["reason"] != "paused by alice: EDR alert"),
        "the rollback's pause is not journaled as a pause: {events:#?}"
    );
    let driven: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "run" && e["phase"] == "Running")
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert_eq!(
        driven,
        ["driven by alice", "driven by carol"],
        "every action has a person"
    );
    let verify = s.run(&["audit", "g5", "--verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    assert!(
        verify.stderr.contains("decisions: 2 signed"),
        "the pause and the rollback: {}",
        verify.stderr
    );
    let again = s.run(&["resume", "g5"]);
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("run g5 has ended (RolledBack"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("there is nothing to resume"),
        "{}",
        again.stderr
    );
}

/// A key that may be compromised is revoked mid-run by a member of a role
/// its owner is not in; the owner's signed decisions are refused from then
/// on, and the audit still verifies.
#[test]
fn a_revoked_key_decides_nothing_more() {
    let AtTheGate {
        s,
        alice_key,
        bob_key,
        mut apply,
    } = at_the_gate("g6", &[]);
    let fingerprint = |name: &str| {
        let out = Command::new("ssh-keygen")
            .args(["-l", "-f"])
            .arg(root().join(format!("tests/keys/{name}.pub")))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned()
    };
    // bob shares every role of alice's with her: he may not revoke her key.
    refused(
        &s,
        &[
            "revoke",
            "g6",
            "--key",
            &fingerprint("alice"),
            "--by",
            "bob",
            "--sign-with",
            &bob_key,
        ],
        "bob may not revoke alice's key",
    );
    let out = s.run(&[
        "revoke",
        "g6",
        "--key",
        &fingerprint("bob"),
        "--by",
        "carol",
        "--reason",
        "laptop stolen",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    s.wait("g6", "the revocation", |_| {
        s.events("g6").iter().any(|e| e["type"] == "keyRevoked")
    });
    refused(
        &s,
        &[
            "approve",
            "g6",
            "data",
            "--by",
            "bob",
            "--role",
            "plant-manager",
            "--key",
            &bob_key,
        ],
        "was revoked in this run",
    );
    let ok = s.run(&[
        "approve",
        "g6",
        "data",
        "--by",
        "alice",
        "--role",
        "plant-manager",
        "--key",
        &alice_key,
    ]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let audit = s.run(&["audit", "g6"]);
    assert!(
        audit.stdout.contains(&format!(
            "key {} revoked by carol as incident-commander, unsigned (laptop stolen)",
            fingerprint("bob")
        )),
        "{}",
        audit.stdout
    );
    let verify = s.run(&["audit", "g6", "--verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    apply.kill().unwrap();
    apply.wait().unwrap();
    // Killed: a rollback from this terminal drives the run itself, and
    // takes the same signed decision first.
    refused(
        &s,
        &["rollback", "g6", "--by", "bob", "--key", &bob_key],
        "was revoked in this run",
    );
    let out = s.run(&["rollback", "g6", "--by", "alice", "--key", &alice_key]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let events = s.events("g6");
    let asked = events
        .iter()
        .position(|e| {
            e["type"] == "rollbackRequested"
                && e["by"] == "alice"
                && e["proof"]["signature"].is_string()
        })
        .expect("the signed rollback is journaled");
    let begun = events
        .iter()
        .position(|e| e["type"] == "rollbackBegun")
        .expect("the rollback began");
    assert!(asked < begun, "journaled before the first stop");
    assert_eq!(s.status("g6")["phase"], "RolledBack");
    let verify = s.run(&["audit", "g6", "--verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
}

/// A drill with `--manual-approvals --require-signatures` rehearses the
/// keys too: an unsigned decision is refused as in a real run.
#[test]
fn a_drill_can_rehearse_the_keys() {
    let s = Scratch::new();
    let (alice_key, alice) = key(&s, "alice");
    let (bob_key, bob) = key(&s, "bob");
    let file = playbook(&s, &alice, &bob);
    let mut drill = s.spawn(&[
        "drill",
        &file,
        "--run-id",
        "d1",
        "--manual-approvals",
        "--require-signatures",
    ]);
    s.wait("d1", "the data gate", |st| {
        st["stages"][0]["phase"] == "Gate"
    });
    refused(
        &s,
        &[
            "approve",
            "d1",
            "data",
            "--by",
            "alice",
            "--role",
            "incident-commander",
        ],
        "must be signed",
    );
    for (stage, by, role, k) in [
        ("data", "alice", "incident-commander", &alice_key),
        ("data", "bob", "plant-manager", &bob_key),
    ] {
        let out = s.run(&[
            "approve", "d1", stage, "--by", by, "--role", role, "--key", k,
        ]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    s.wait("d1", "the apps gate", |st| {
        st["stages"][1]["phase"] == "Gate"
    });
    let out = s.run(&[
        "approve",
        "d1",
        "apps",
        "--by",
        "alice",
        "--role",
        "incident-commander",
        "--key",
        &alice_key,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(wait_exit(&mut drill, Duration::from_secs(30)), 0);
    let verify = s.run(&["audit", "d1", "--verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    assert!(
        verify.stderr.contains("decisions: 3 signed"),
        "{}",
        verify.stderr
    );
}
