//! The incident room, end to end: `serve` of a drill that waits at a gate,
//! watched in headless Chromium over WebDriver while decisions are taken
//! from the CLI; its JSON, its event stream, what it refuses, and the
//! auditor's HTML report opened in the same browser with no network.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use blackstart_tests::browser::{self, Browser, http};
use blackstart_tests::{Scratch, wait_exit};

/// Stage `one` (a, b) waits for an incident commander; stage `two` has c,
/// which depends on a, and m, a manual step with an instruction.
fn playbook(s: &Scratch) -> String {
    s.write(
        "room.yaml",
        "apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: room }
spec:
  roles:
    - name: incident-commander
      members: [ { name: alice }, { name: carol } ]
  sites:
    - { id: dc, name: Main data centre }
    - { id: plant, name: Engine plant }
  systems:
    - { id: a, site: dc, tier: one, expectedDuration: 1s, start: { exec: { command: [\"true\"] } } }
    - { id: b, site: dc, tier: one, expectedDuration: 1s, start: { exec: { command: [\"true\"] } } }
    - { id: c, site: plant, tier: two, dependsOn: [a], expectedDuration: 1s, start: { exec: { command: [\"true\"] } } }
    - id: m
      site: plant
      tier: two
      start: { manual: { instruction: \"Reset the PLC gateway by hand\", role: incident-commander } }
  stages:
    - { name: one, select: { tiers: [one] }, gate: { approvals: [incident-commander] } }
    - { name: two, select: { tiers: [two] } }
",
    )
}

/// `serve` on a free port of 127.0.0.1; its base URL once it listens.
fn serve(s: &Scratch, extra: &[&str]) -> (Child, String) {
    let mut child = s
        .cmd(&["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = browser::serving_at(&mut child);
    (child, url)
}

/// A drill of the room playbook, waiting at stage one's gate.
fn at_the_gate(s: &Scratch) -> Child {
    let file = playbook(s);
    let drill = s.spawn(&[
        "drill",
        &file,
        "--manual-approvals",
        "--run-id",
        "r1",
        "--speed",
        "100",
    ]);
    s.wait("r1", "the gate of stage one", |st| {
        st["stages"][0]["phase"] == "Gate"
    });
    drill
}

const HEALTHY: &str = "return document.querySelectorAll('tr.system[data-phase=Healthy]').length;";

#[test]
#[ignore = "needs Debian's chromium and chromium-driver: `cargo xtask test` installs them and runs it"]
fn the_page_follows_a_drill_from_its_gate_to_the_end_without_a_reload() {
    assert!(
        browser::available(),
        "Chromium and chromedriver are installed by `cargo xtask test` (apt-get install chromium chromium-driver)"
    );
    let s = Scratch::new();
    let mut drill = at_the_gate(&s);
    let (mut server, url) = serve(&s, &[]);
    let b = Browser::start();

    b.open(&format!("{url}/"));
    let list = b.text();
    assert!(
        list.contains("r1") && list.contains("waits for people"),
        "{list}"
    );

    b.open(&format!("{url}/runs/r1"));
    let text = b.text();
    assert!(text.contains("Run r1"), "{text}");
    for system in ["a", "b", "c", "m"] {
        assert!(
            b.eval(&format!(
                "return !!document.querySelector('tr.system[data-system=\"{system}\"]');"
            )) == true,
            "system {system} is listed"
        );
    }
    // Sites by their names, phases in words.
    assert!(
        text.contains("Main data centre") && text.contains("Engine plant"),
        "{text}"
    );
    assert!(
        text.contains("Healthy") && text.contains("Pending"),
        "{text}"
    );
    // The waiting gate: the role, who can fill it, and the exact command.
    assert!(text.contains("Gate of stage one"), "{text}");
    assert!(
        text.contains("incident-commander, by alice, carol"),
        "{text}"
    );
    assert!(
        text.contains("blackstart approve r1 one --by NAME --role incident-commander"),
        "{text}"
    );
    // The graph and the timeline, drawn on the page.
    assert_eq!(
        b.eval("return document.querySelectorAll('svg.graph g.node').length;"),
        4
    );
    assert_eq!(
        b.eval("return !!document.querySelector('svg.timeline');"),
        true
    );
    assert_eq!(b.eval(HEALTHY), 2);

    // A mark on this page: it is gone if the page is ever reloaded.
    b.eval("window.stillThisPage = true; return null;");
    let approve = s.run(&[
        "approve",
        "r1",
        "one",
        "--by",
        "alice",
        "--role",
        "incident-commander",
    ]);
    assert_eq!(approve.code, 0, "{}", approve.stderr);

    // c becomes Healthy and m waits for its manual step, on the same page.
    b.wait_for("c healthy and m waiting", HEALTHY, |v| v == 3);
    let text = b.wait_for(
        "the manual step's instruction",
        "return document.body.innerText;",
        |v| {
            v.as_str()
                .is_some_and(|t| t.contains("Reset the PLC gateway by hand"))
        },
    );
    assert!(
        text.as_str()
            .unwrap()
            .contains("blackstart confirm r1 m --by NAME"),
        "{text}"
    );
    let decisions = b.text();
    assert!(
        decisions.contains("approve") && decisions.contains("alice"),
        "{decisions}"
    );

    let confirm = s.run(&["confirm", "r1", "m", "--by", "carol"]);
    assert_eq!(confirm.code, 0, "{}", confirm.stderr);
    assert_eq!(wait_exit(&mut drill, Duration::from_secs(30)), 0);
    b.wait_for("every system healthy", HEALTHY, |v| v == 4);
    b.wait_for(
        "the run Succeeded",
        "return document.querySelector('h1 .badge').textContent;",
        |v| v == "Succeeded",
    );
    assert_eq!(b.eval("return window.stillThisPage === true;"), true);

    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn the_api_answers_json_and_an_event_stream_and_nothing_else() {
    let s = Scratch::new();
    let mut drill = at_the_gate(&s);
    let (mut server, url) = serve(&s, &[]);

    let (status, _, body) = http("GET", &format!("{url}/api/runs"), None);
    assert_eq!(status, 200);
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs[0]["run"], "r1");
    assert_eq!(runs[0]["waiting"], true);

    let (status, _, body) = http("GET", &format!("{url}/api/runs/r1"), None);
    assert_eq!(status, 200);
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["phase"], "Running");
    let gate = &run["stages"][0]["waiting"]["roles"][0];
    assert_eq!(gate["role"], "incident-commander");
    assert_eq!(
        gate["command"],
        "blackstart approve r1 one --by NAME --role incident-commander"
    );
    assert_eq!(run["sites"][1]["name"], "Engine plant");
    let head = run["head"]["seq"].as_u64().unwrap();

    // The stream sends what follows `from`, each record with its seq as id.
    let host = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /api/runs/r1/events?from={} HTTP/1.1\r\nHost: {host}\r\n\r\n",
        head - 2
    )
    .unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !seen.contains(&format!("id: {head}\n")) {
        assert!(Instant::now() < deadline, "the stream sent: {seen}");
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert!(seen.contains("event: record"), "{seen}");
    assert!(seen.contains(&format!("id: {}\n", head - 1)), "{seen}");
    assert!(!seen.contains(&format!("id: {}\n", head - 2)), "{seen}");

    // Missing runs and path tricks are 404, never a file.
    for path in [
        "/runs/missing",
        "/api/runs/missing",
        "/api/runs/missing/events",
        "/runs/..%2F..%2Fetc%2Fpasswd",
        "/runs/%2e%2e",
        "/api/runs/r1%2F..%2F..%2Fjournal.jsonl",
        "/runs/.hidden",
        "/runs/r1/../../etc/passwd",
        "/nothing/here",
    ] {
        let (status, _, body) = http("GET", &format!("{url}{path}"), None);
        assert_eq!(status, 404, "{path}: {body}");
    }
    // It decides nothing.
    let (status, head, _) = http("POST", &format!("{url}/api/runs/r1"), Some("{}"));
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );

    let approve = s.run(&["approve", "r1", "one", "--by", "alice"]);
    assert_eq!(approve.code, 0, "{}", approve.stderr);
    let confirm_after = Instant::now() + Duration::from_secs(30);
    loop {
        if s.status("r1")["systems"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["waitingFor"] == "manual-step"))
        {
            break;
        }
        assert!(Instant::now() < confirm_after, "m never waited");
        std::thread::sleep(Duration::from_millis(50));
    }
    let confirm = s.run(&["confirm", "r1", "m", "--by", "carol"]);
    assert_eq!(confirm.code, 0, "{}", confirm.stderr);
    assert_eq!(wait_exit(&mut drill, Duration::from_secs(30)), 0);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn beyond_loopback_a_token_is_needed_and_checked() {
    let s = Scratch::new();
    let refused = s.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--token-file"),
        "{}",
        refused.stderr
    );

    let short = s.write("short", "abc\n");
    let bad = s.run(&["serve", "--listen", "127.0.0.1:0", "--token-file", &short]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);

    let token = "0123456789abcdef0123456789abcdef";
    let file = s.write("token", &format!("{token}\n"));
    let (mut server, url) = serve(&s, &["--token-file", &file]);
    let (status, head, _) = http("GET", &format!("{url}/api/runs"), None);
    assert_eq!(status, 401);
    assert!(head.contains("WWW-Authenticate") || head.contains("www-authenticate"));
    // The wrong token, then the right one in a header.
    let host = url.trim_start_matches("http://");
    let get = |auth: &str| {
        let mut stream = TcpStream::connect(host).unwrap();
        write!(
            stream,
            "GET /api/runs HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).unwrap();
        out
    };
    assert!(
        get("Authorization: Bearer 0123456789abcdef0123456789abcdeX\r\n")
            .starts_with("HTTP/1.1 401")
    );
    assert!(get(&format!("Authorization: Bearer {token}\r\n")).starts_with("HTTP/1.1 200"));
    // A browser hands it over once and keeps it in a strict cookie.
    let (status, head, _) = http("GET", &format!("{url}/?token={token}"), None);
    assert_eq!(status, 303, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("location: /\r\n"), "{head}");
    assert!(
        lower.contains("httponly") && lower.contains("samesite=strict"),
        "{head}"
    );
    assert!(get(&format!("Cookie: blackstart_token={token}\r\n")).starts_with("HTTP/1.1 200"));
    // Never sent on to another site.
    let (status, head, _) = http("GET", &format!("{url}//evil.example/x?token={token}"), None);
    assert_eq!(status, 303, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("location: /\r\n"),
        "{head}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver: `cargo xtask test` installs them and runs it"]
fn the_auditors_report_is_one_file_that_opens_offline() {
    assert!(
        browser::available(),
        "Chromium and chromedriver are installed by `cargo xtask test`"
    );
    let s = Scratch::new();
    let file = playbook(&s);
    // The stand-in decides: one approval, one confirmation, both recorded.
    let drill = s.run(&["drill", &file, "--run-id", "r2", "--speed", "100"]);
    assert_eq!(drill.code, 0, "{}", drill.stderr);
    let report = s.run(&["audit", "r2", "--format", "html"]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let html = report.stdout;
    // Nothing to fetch: no script, no stylesheet or image from anywhere.
    for outside in ["<script", "src=", "href=", "@import", "url(http"] {
        assert!(!html.contains(outside), "the report refers to {outside}");
    }
    let path = s.write("report.html", &html);

    let b = Browser::start();
    b.open(&format!("file://{path}"));
    let text = b.text();
    assert!(text.contains("Verified: "), "{text}");
    assert!(text.contains("hash chain intact"), "{text}");
    assert!(
        text.contains("blackstart audit r2 --verify --head"),
        "{text}"
    );
    assert!(text.contains("Timeline against the estimate"), "{text}");
    assert_eq!(
        b.eval("return !!document.querySelector('svg.timeline rect.actual');"),
        true
    );
    // Each decision: who, as what, signed or not.
    let rows = b.eval(
        "return [...document.querySelectorAll('tr.decision')].map(r => r.innerText.replace(/\\s+/g, ' '));",
    );
    let rows: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert!(
        rows.iter().any(|r| r.contains("approve one")
            && r.contains("incident-commander")
            && r.contains(" no")),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r.contains("confirm m")), "{rows:?}");
    // The estimate against what each stage took.
    let stage = b.eval("return document.querySelector('#stages tr[data-stage=one]').innerText;");
    assert!(stage.as_str().unwrap().contains("Succeeded"), "{stage}");

    // An edited journal is reported as such.
    let journal = s.journal("r2");
    let text = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, text.replacen("\"by\":\"", "\"by\":\"mallory-", 1)).unwrap();
    let report = s.run(&["audit", "r2", "--format", "html"]);
    assert!(
        report.stdout.contains("Verification FAILED") || report.code != 0,
        "{}",
        report.stderr
    );
}
