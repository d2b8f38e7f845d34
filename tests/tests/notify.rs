//! Notifications against a real HTTP receiver on 127.0.0.1: the room is
//! told that a gate waits (and reminded while it does), and that the run
//! succeeded; a 500 is retried; a receiver that is down holds up nothing
//! and its failed attempts are in the journal; the token in the URL is
//! nowhere blackstart writes.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use blackstart_tests::webhook::{Receiver, TOKEN};
use blackstart_tests::{Scratch, wait_exit};

fn playbook(s: &Scratch, remind: &str) -> String {
    s.write(
        "notify.yaml",
        &format!(
            "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: {{ name: told }}
spec:
  notify:
    - webhook: {{ url: \"${{env:ROOM_HOOK}}\" }}
      on: [gate-waiting, stage-failed, paused, rolled-back, degraded, succeeded]
      {remind}
  roles:
    - name: incident-commander
      members: [ {{ name: alice }} ]
  sites: [ {{ id: dc }} ]
  systems:
    - {{ id: a, site: dc, tier: one, expectedDuration: 1s, start: {{ exec: {{ command: [\"true\"] }} }} }}
    - {{ id: b, site: dc, tier: two, expectedDuration: 1s, start: {{ exec: {{ command: [\"true\"] }} }} }}
  stages:
    - {{ name: one, select: {{ tiers: [one] }}, gate: {{ approvals: [incident-commander] }} }}
    - {{ name: two, select: {{ tiers: [two] }} }}
"
        ),
    )
}

/// Everything blackstart wrote about the run: the journal, status, audit.
fn everything_written(s: &Scratch, run: &str, printed: &str) -> String {
    let journal = std::fs::read_to_string(s.journal(run)).unwrap();
    let status = s.run(&["status", run]).stdout;
    let audit = s.run(&["audit", run]).stdout;
    let html = s.run(&["audit", run, "--format", "html"]).stdout;
    format!("{journal}{status}{audit}{html}{printed}")
}

#[test]
fn the_room_is_told_of_a_gate_reminded_while_it_waits_and_told_of_the_end() {
    let s = Scratch::new();
    let hook = Receiver::start();
    // A reminder every minute of the plan is every 0.6 s at 100x.
    let file = playbook(&s, "remind: 1m");
    let mut drill = s
        .cmd(&[
            "drill",
            &file,
            "--manual-approvals",
            "--run-id",
            "n1",
            "--speed",
            "100",
        ])
        .env("ROOM_HOOK", &hook.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    hook.wait_for("gate-waiting and a reminder", |got| {
        got.iter()
            .any(|b| b["event"] == "gate-waiting" && b["reminder"].is_null())
            && got.iter().any(|b| b["reminder"] == true)
    });
    let first = hook
        .events()
        .into_iter()
        .find(|b| b["event"] == "gate-waiting")
        .unwrap();
    assert_eq!(first["run"], "n1");
    assert_eq!(first["playbook"], "told");
    assert_eq!(first["stage"], "one");
    assert_eq!(
        first["waitingFor"],
        serde_json::json!(["incident-commander"])
    );
    assert_eq!(first["phase"], "Running");
    assert!(first["head"]["seq"].as_u64().unwrap() > 0);
    assert_eq!(first["head"]["hash"].as_str().unwrap().len(), 64);
    let text = first["text"].as_str().unwrap();
    assert!(
        text.contains("the gate of stage one waits for incident-commander")
            && text.contains("blackstart approve n1 one --by NAME --role incident-commander"),
        "{text}"
    );

    let approve = s.run(&["approve", "n1", "one", "--by", "alice"]);
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    assert_eq!(wait_exit(&mut drill, Duration::from_secs(30)), 0);
    let events = hook.events();
    let succeeded = events.iter().find(|b| b["event"] == "succeeded").unwrap();
    assert_eq!(succeeded["phase"], "Succeeded");
    assert!(
        succeeded["text"]
            .as_str()
            .unwrap()
            .contains("2 systems healthy")
    );
    // Each reminder came while the gate waited, none after.
    let after = events
        .iter()
        .position(|b| b["event"] == "succeeded")
        .unwrap();
    assert!(events[after..].iter().all(|b| b["reminder"].is_null()));

    // The first POST got a 500 and was tried again; both are on record.
    let journal = s.events("n1");
    let attempts: Vec<&serde_json::Value> =
        journal.iter().filter(|e| e["type"] == "notified").collect();
    assert_eq!(attempts[0]["delivered"], false, "{attempts:#?}");
    assert_eq!(attempts[0]["status"], 500);
    assert!(
        attempts.iter().any(|a| a["notification"] == "gate-waiting"
            && a["attempt"] == 2
            && a["delivered"] == true),
        "{attempts:#?}"
    );
    assert!(
        attempts
            .iter()
            .any(|a| a["notification"] == "succeeded" && a["delivered"] == true)
    );

    let mut out = String::new();
    drill
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    drill
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let written = everything_written(&s, "n1", &out);
    assert!(
        !written.contains(TOKEN),
        "the webhook's token was written down"
    );
    assert!(written.contains("webhook 1 (127.0.0.1:"), "{written}");
    // The token reached the receiver, which is where it belongs.
    assert!(
        hook.got
            .lock()
            .unwrap()
            .iter()
            .all(|(p, _)| p.contains(TOKEN))
    );
}

#[test]
fn a_receiver_that_is_down_holds_up_nothing_and_its_failures_are_on_record() {
    let s = Scratch::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hooks/{TOKEN}");
    let file = playbook(&s, "");
    let started = Instant::now();
    let out = s
        .cmd(&["drill", &file, "--run-id", "n2", "--speed", "100"])
        .env("ROOM_HOOK", &url)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{printed}");
    let journal = s.events("n2");
    // The run ended Succeeded before the notifications gave up.
    let end = journal
        .iter()
        .position(|e| e["type"] == "run" && e["phase"] == "Succeeded")
        .unwrap();
    let attempts: Vec<&serde_json::Value> =
        journal.iter().filter(|e| e["type"] == "notified").collect();
    assert!(
        attempts.iter().all(|a| a["delivered"] == false),
        "{attempts:#?}"
    );
    for what in ["gate-waiting", "succeeded"] {
        let of: Vec<_> = attempts
            .iter()
            .filter(|a| a["notification"] == what)
            .collect();
        assert_eq!(of.len(), 5, "{what}: {of:#?}");
        assert_eq!(of[4]["last"], true);
        assert!(
            of[0]["error"].as_str().unwrap().contains("refused"),
            "{:#?}",
            of[0]
        );
    }
    assert!(
        journal[end..].iter().any(|e| e["type"] == "notified"),
        "the last notification was still being tried after the run ended"
    );
    // Five attempts, backing off from 0.5 s: the process waited for them,
    // within its bound, after the run was done.
    assert!(started.elapsed() < Duration::from_secs(60));
    let written = everything_written(&s, "n2", &printed);
    assert!(
        !written.contains(TOKEN),
        "the webhook's token was written down"
    );
    assert!(written.contains("not delivered"), "{written}");
}

#[test]
fn a_webhook_url_written_into_the_playbook_is_refused() {
    let s = Scratch::new();
    let file = s.write(
        "literal.yaml",
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: literal }
spec:
  notify:
    - webhook: { url: \"https://hooks.example.com/T000/B000/XXXX\" }
      on: [gate-waiting, shipped]
      remind: 10s
  sites: [ { id: dc } ]
  systems: [ { id: a, site: dc, start: { noop: {} } } ]
  stages: [ { name: one, select: { systems: [a] } } ]
",
    );
    let out = blackstart_tests::blackstart(&["validate", &file]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("literal.yaml:6:"), "{said}");
    assert!(said.contains("${env:INCIDENT_WEBHOOK}"), "{said}");
    assert!(said.contains("unknown notification \"shipped\""), "{said}");
    assert!(said.contains("at least 1m"), "{said}");
}
