//! What checking one signed approval costs: the gate rules, the member and
//! key lookup, the message and the SSH signature's verification, as the
//! engine makes it for every decision it takes (`decision::take`), with an
//! Ed25519 and an ECDSA P-256 key. `cargo bench -p blackstart-engine --bench
//! decision`.

use std::time::Instant;

use blackstart_engine::decision::{self, Decision, Kind};
use blackstart_engine::{Event, RunPhase, RunState, StagePhase, SystemPhase};
use blackstart_model::Plan;

fn key(name: &str) -> (String, ssh_key::PrivateKey) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/keys");
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("a test key");
    let private = std::fs::read_to_string(dir.join(name)).expect("a test key");
    let private = ssh_key::PrivateKey::from_openssh(private).expect("an OpenSSH private key");
    (public.trim().to_owned(), private)
}

fn main() {
    for (name, label) in [("alice", "Ed25519"), ("carol", "ECDSA P-256")] {
        let (public, private) = key(name);
        let yaml = format!(
            "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: bench }}
spec:
  roles: [ {{ name: incident-commander, members: [ {{ name: {name}, key: \"{public}\" }} ] }} ]
  sites: [ {{ id: dc }} ]
  systems: [ {{ id: db, site: dc, start: {{ noop: {{}} }} }} ]
  stages: [ {{ name: data, select: {{ sites: [dc] }}, gate: {{ approvals: [incident-commander] }} }} ]
"
        );
        let plan = Plan::build(blackstart_model::load(yaml.as_bytes()).expect("a valid playbook"));
        let events = [
            Event::RunStarted {
                run: "bench".into(),
                playbook: plan.playbook.clone(),
                playbook_hash: plan.playbook_hash.clone(),
                plan: Box::new(plan.clone()),
                playbook_path: None,
                drill: false,
                require_signatures: false,
            },
            Event::Run {
                phase: RunPhase::Running,
                reason: None,
            },
            Event::Stage {
                stage: "data".into(),
                phase: StagePhase::Running,
                reason: None,
            },
            Event::System {
                system: "db".into(),
                phase: SystemPhase::Healthy,
                reason: None,
                waiting_for: None,
            },
            Event::Stage {
                stage: "data".into(),
                phase: StagePhase::Gate,
                reason: None,
            },
        ];
        let state = RunState::fold(events.iter().enumerate().map(|(i, e)| (i as u64 + 1, e)))
            .expect("the events fold");
        let mut d = Decision {
            role: Some("incident-commander".into()),
            ..Decision::new(Kind::Approve, "data", name)
        };
        let text = decision::message("bench", &plan.playbook_hash, &d, 5);
        let sig = private
            .sign(
                decision::NAMESPACE,
                ssh_key::HashAlg::Sha512,
                text.as_bytes(),
            )
            .expect("the test key signs");
        d.proof.wait = Some(5);
        d.proof.signature = Some(sig.to_pem(ssh_key::LineEnding::LF).expect("armored"));
        decision::take(&plan, &state, &d).expect("the approval is taken");
        let rounds = 2000;
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let begin = Instant::now();
            let taken = decision::take(&plan, &state, &d);
            times.push(begin.elapsed());
            assert!(taken.is_ok());
        }
        times.sort();
        let median = times[rounds / 2];
        let p99 = times[rounds * 99 / 100];
        println!(
            "{label:>12}: one signed approval checked in {:.1} µs (median of {rounds}), p99 {:.1} µs",
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6
        );
    }
}
