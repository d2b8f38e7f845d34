//! The decision rules, one case each.

use super::*;

/// `audit --verify` holds every kind of recorded decision to its
/// signature, revocations included: a member with an enrolled key who
/// revoked unsigned is found.
#[test]
fn every_recorded_decision_is_rechecked() {
    let carol = include_str!("../../../../tests/keys/carol.pub").trim();
    let yaml = format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: t }}
spec:
  roles: [ {{ name: ciso, members: [ {{ name: carol, key: \"{carol}\" }} ] }}, {{ name: ic, members: [ {{ name: alice }} ] }} ]
  sites: [ {{ id: dc }} ]
  systems: [ {{ id: db, site: dc, start: {{ noop: {{}} }} }} ]
  stages: [ {{ name: data, select: {{ sites: [dc] }}, gate: {{ approvals: [ic] }} }} ]
"
    );
    let plan = Plan::build(blackstart_model::load(yaml.as_bytes()).expect("valid"));
    let unsigned = Proof {
        wait: Some(3),
        ..Proof::default()
    };
    let revoked = Event::KeyRevoked {
        key: "SHA256:x".into(),
        by: "carol".into(),
        role: Some("ciso".into()),
        reason: None,
        proof: unsigned.clone(),
    };
    let err = recheck(&plan, "r", false, &[], &revoked).expect_err("carol must sign");
    assert!(err.contains("must be signed"), "{err}");
    let approved = Event::Approved {
        stage: "data".into(),
        by: "alice".into(),
        role: Some("ic".into()),
        proof: unsigned,
    };
    assert!(
        recheck(&plan, "r", false, &[], &approved).is_ok(),
        "alice has no key"
    );
    assert!(
        recorded(&Event::Run {
            phase: crate::event::RunPhase::Running,
            reason: None
        })
        .is_none()
    );
}

/// Signs `d` at journal seq `at` with a test key, as `--key` does.
fn signed_at(plan: &Plan, name: &str, mut d: Decision, at: u64) -> Decision {
    let private = ssh_key::PrivateKey::from_openssh(match name {
        "alice" => include_str!("../../../../tests/keys/alice"),
        _ => include_str!("../../../../tests/keys/bob"),
    })
    .expect("a test key");
    // The role the signature binds, as `pending` finds it.
    d.role = Some(if name == "alice" { "ic" } else { "ciso" }.to_owned());
    let text = message("r", &plan.playbook_hash, &d, at);
    let sig = private
        .sign(NAMESPACE, HashAlg::Sha512, text.as_bytes())
        .expect("the test key signs");
    d.proof.wait = Some(at);
    d.proof.signature = Some(sig.to_pem(ssh_key::LineEnding::LF).expect("armored"));
    d
}

/// Pause and rollback are signed like any decision, bind the journal's
/// head when the message was made, and are refused unsigned, replayed
/// as the other kind, made ahead of the journal, or overtaken by a
/// later one of the same kind.
#[test]
fn pause_and_rollback_are_signed_and_bind_the_head() {
    let alice = include_str!("../../../../tests/keys/alice.pub").trim();
    let bob = include_str!("../../../../tests/keys/bob.pub").trim();
    let yaml = format!(
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: t }}
spec:
  roles: [ {{ name: ic, members: [ {{ name: alice, key: \"{alice}\" }} ] }}, {{ name: ciso, members: [ {{ name: bob, key: \"{bob}\" }} ] }} ]
  sites: [ {{ id: dc }} ]
  systems: [ {{ id: db, site: dc, start: {{ noop: {{}} }} }} ]
  stages: [ {{ name: data, select: {{ sites: [dc] }} }} ]
"
    );
    let plan = Plan::build(blackstart_model::load(yaml.as_bytes()).expect("valid"));
    let mut events = vec![
        Event::RunStarted {
            run: "r".into(),
            playbook: plan.playbook.clone(),
            playbook_hash: plan.playbook_hash.clone(),
            plan: Box::new(plan.clone()),
            playbook_path: None,
            drill: false,
            require_signatures: false,
        },
        Event::Run {
            phase: crate::event::RunPhase::Running,
            reason: None,
        },
    ];
    let fold = |events: &[Event]| {
        RunState::fold(events.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)))
            .expect("the events fold")
    };
    let state = fold(&events);
    let pause = Decision::new(Kind::Pause, "", "alice");

    let err = take(&plan, &state, &pause).expect_err("alice has a key");
    assert!(err.contains("must be signed"), "{err}");
    let good = signed_at(&plan, "alice", pause.clone(), 2);
    let taken = take(&plan, &state, &good).expect("signed at the head");
    assert!(
        matches!(&taken, Event::PauseRequested { role: Some(r), proof, .. } if r == "ic" && proof.key.is_some()),
        "{taken:?}"
    );
    assert!(recheck(&plan, "r", false, &[], &taken).is_ok());

    let as_rollback = Decision {
        kind: Kind::Rollback,
        ..good.clone()
    };
    let err = take(&plan, &state, &as_rollback).expect_err("signed as a pause");
    assert!(err.contains("does not match"), "{err}");

    let ahead = signed_at(&plan, "alice", pause.clone(), 9);
    let err = take(&plan, &state, &ahead).expect_err("made ahead of the journal");
    assert!(err.contains("ends at seq 2"), "{err}");

    // Bob pauses at seq 3; alice's pause made at seq 2 is overtaken.
    events.push(
        take(
            &plan,
            &state,
            &signed_at(&plan, "bob", Decision::new(Kind::Pause, "", "bob"), 2),
        )
        .expect("bob's pause"),
    );
    let later = fold(&events);
    let err = take(&plan, &later, &good).expect_err("overtaken");
    assert!(err.contains("after this one was made"), "{err}");
    // A rollback made at the same head is another thing, and taken.
    let rollback = signed_at(
        &plan,
        "alice",
        Decision::new(Kind::Rollback, "", "alice"),
        3,
    );
    assert!(take(&plan, &later, &rollback).is_ok());

    // A held site's retry binds the head too: once taken, the same
    // signature does not retry the site again after a new hold.
    let hold = Event::SiteHeld {
        site: "dc".into(),
        stage: "data".into(),
        reason: "db failed".into(),
        on_failure: blackstart_model::playbook::OnFailure::Pause,
        systems: Vec::new(),
    };
    events.push(hold.clone());
    events.push(Event::Run {
        phase: crate::event::RunPhase::Paused,
        reason: None,
    });
    let retry = signed_at(
        &plan,
        "alice",
        Decision::new(Kind::RetrySite, "dc", "alice"),
        4,
    );
    events.push(take(&plan, &fold(&events), &retry).expect("a held site is retried"));
    events.push(hold);
    let err = take(&plan, &fold(&events), &retry).expect_err("replayed");
    assert!(err.contains("after this one was made"), "{err}");
}
