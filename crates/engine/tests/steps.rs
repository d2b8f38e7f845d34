//! Actions, checks and probing against real processes and real sockets on
//! 127.0.0.1: every way a start or a probe meets the world going wrong.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use blackstart_engine::probe::{until_healthy, watch};
use blackstart_engine::secrets::Secrets;
use blackstart_engine::step::{MAX_OUTPUT, StepContext, run_action, run_check};
use blackstart_model::playbook::{Action, Check, Exec, Http, JsonMatch, ProbePolicy, Tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn cx() -> StepContext {
    let secrets = Secrets::with_lookup(Arc::new(|name| {
        (name == "API_TOKEN").then(|| "tok-8c1f2e".to_owned())
    }));
    StepContext::new(secrets, Duration::from_secs(5)).unwrap()
}

fn exec(argv: &[&str]) -> Exec {
    Exec {
        command: argv.iter().map(|s| (*s).into()).collect(),
        ..Exec::default()
    }
}

fn sh(script: &str) -> Exec {
    exec(&["sh", "-c", script])
}

#[tokio::test]
async fn exec_reports_success_output_and_exit_codes() {
    let ok = run_action(&Action::Exec(sh("echo started; echo warning >&2")), &cx()).await;
    assert!(ok.ok, "{ok:?}");
    assert_eq!(ok.exit_code, Some(0));
    assert!(
        ok.output.contains("started") && ok.output.contains("warning"),
        "{}",
        ok.output
    );

    let bad = run_action(&Action::Exec(sh("echo 'disk full'; exit 3")), &cx()).await;
    assert!(!bad.ok);
    assert_eq!(bad.exit_code, Some(3));
    assert_eq!(bad.detail, "`sh` exited 3");
    assert!(bad.output.contains("disk full"));

    let missing = run_action(&Action::Exec(exec(&["/nonexistent/mes-start"])), &cx()).await;
    assert!(!missing.ok);
    assert!(
        missing
            .detail
            .starts_with("cannot run `/nonexistent/mes-start`: "),
        "{}",
        missing.detail
    );
}

#[tokio::test]
async fn exec_keeps_the_end_of_long_output() {
    let out = run_action(
        &Action::Exec(sh(
            "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
        )),
        &cx(),
    )
    .await;
    assert!(out.ok);
    assert!(out.output.starts_with("[… "), "{}", &out.output[..40]);
    assert!(out.output.ends_with("line-1999\n"));
    assert!(out.output.len() <= MAX_OUTPUT + 40);
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mut step = sh(&format!("sleep 60 & echo $! > {}; wait", pidfile.display()));
    step.timeout = Some(blackstart_model::Duration::from_millis(500));
    let out = run_action(&Action::Exec(step), &cx()).await;
    assert!(!out.ok);
    assert!(
        out.detail
            .contains("timed out after 500ms; its process group was killed"),
        "{}",
        out.detail
    );
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The grandchild is gone (or a zombie awaiting a reaper) within a bounded wait.
    let stat = format!("/proc/{pid}/stat");
    let mut alive = true;
    for _ in 0..50 {
        alive = std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z "));
        if !alive {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive, "sleep {pid} outlived the timeout");
}

#[tokio::test]
async fn secrets_reach_the_program_but_never_the_output() {
    let mut step = sh("echo \"token is $TOKEN\"; exit 1");
    step.env.insert("TOKEN".into(), "${env:API_TOKEN}".into());
    let out = run_action(&Action::Exec(step), &cx()).await;
    assert_eq!(out.output, "token is [redacted]\n");
    let mut unset = sh("true");
    unset
        .env
        .insert("T".into(), "${env:NOT_SET_ANYWHERE}".into());
    let out = run_action(&Action::Exec(unset), &cx()).await;
    assert_eq!(
        out.detail,
        "environment variable `NOT_SET_ANYWHERE` is not set"
    );
}

/// A tiny HTTP server on 127.0.0.1 answering requests from a script of
/// (status, body) in turn, the last one repeated; `None` never answers.
async fn server(script: Vec<Option<(u16, &'static str)>>) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let step = script[n.min(script.len() - 1)];
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                match step {
                    Some((status, body)) => {
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(reply.as_bytes()).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    (url, count)
}

fn http(url: &str) -> Http {
    Http {
        url: url.to_owned(),
        ..Http::default()
    }
}

#[tokio::test]
async fn http_checks_judge_status_body_and_json() {
    let (url, _) = server(vec![Some((
        200,
        r#"{"status":"UP","ingest":{"ok":true},"version":1.10,"replicas":3,"label":"1.10"}"#,
    ))])
    .await;
    assert!(
        run_check(&Check::Http(Box::new(http(&url))), &cx())
            .await
            .ok
    );

    let mut contains = http(&url);
    contains.body_contains = Some("\"UP\"".into());
    assert!(
        run_check(&Check::Http(Box::new(contains.clone())), &cx())
            .await
            .ok
    );
    contains.body_contains = Some("DOWN".into());
    let out = run_check(&Check::Http(Box::new(contains)), &cx()).await;
    assert!(
        out.detail
            .ends_with("HTTP 200, but the body does not contain \"DOWN\""),
        "{}",
        out.detail
    );

    let mut pointer = http(&url);
    pointer.json_pointer = Some(JsonMatch {
        pointer: "/ingest/ok".into(),
        equals: "true".into(),
    });
    assert!(
        run_check(&Check::Http(Box::new(pointer.clone())), &cx())
            .await
            .ok
    );
    pointer.json_pointer = Some(JsonMatch {
        pointer: "/status".into(),
        equals: "DEGRADED".into(),
    });
    let out = run_check(&Check::Http(Box::new(pointer.clone())), &cx()).await;
    assert!(
        out.detail
            .ends_with("/status is \"UP\", expected \"DEGRADED\""),
        "{}",
        out.detail
    );
    // Typed: numbers compare as numbers, text as text, booleans as booleans.
    for (at, equals, ok) in [
        ("/version", serde_json::json!(1.1), true),
        ("/replicas", serde_json::json!(3.0), true),
        ("/replicas", serde_json::json!(4), false),
        ("/label", serde_json::json!("1.10"), true),
        ("/label", serde_json::json!(1.1), false),
        ("/ingest/ok", serde_json::json!(true), true),
        ("/ingest/ok", serde_json::Value::Null, false),
    ] {
        pointer.json_pointer = Some(JsonMatch {
            pointer: at.into(),
            equals: equals.clone(),
        });
        let out = run_check(&Check::Http(Box::new(pointer.clone())), &cx()).await;
        assert_eq!(out.ok, ok, "{at} = {equals}: {}", out.detail);
    }

    let (url500, _) = server(vec![Some((500, "boom"))]).await;
    let out = run_check(&Check::Http(Box::new(http(&url500))), &cx()).await;
    assert!(!out.ok);
    assert!(
        out.detail.ends_with("HTTP 500, expected 2xx or 3xx"),
        "{}",
        out.detail
    );
    assert_eq!(out.output, "boom");
    let mut expect = http(&url500);
    expect.expect_status = Some(500);
    assert!(run_check(&Check::Http(Box::new(expect)), &cx()).await.ok);
}

#[tokio::test]
async fn http_failures_say_what_went_wrong() {
    // Refused: a port that was just free.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_check(
        &Check::Http(Box::new(http(&format!("http://127.0.0.1:{port}/healthz")))),
        &cx(),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.detail.to_lowercase().contains("refused"),
        "{}",
        out.detail
    );

    let out = run_check(
        &Check::Http(Box::new(http("http://no-such-host.invalid/healthz"))),
        &cx(),
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.detail
            .starts_with("GET http://no-such-host.invalid/healthz: "),
        "{}",
        out.detail
    );

    let (hang, _) = server(vec![None]).await;
    let mut slow = http(&hang);
    slow.timeout = Some(blackstart_model::Duration::from_millis(300));
    let out = run_check(&Check::Http(Box::new(slow)), &cx()).await;
    assert!(
        out.detail.ends_with("no answer within 300ms"),
        "{}",
        out.detail
    );
}

#[tokio::test]
async fn http_actions_post_and_redact_secrets_in_urls() {
    let (url, count) = server(vec![Some((202, "accepted"))]).await;
    let mut hook = http(&format!("{url}/resume?key=${{env:API_TOKEN}}"));
    hook.expect_status = Some(202);
    let out = run_action(&Action::Http(Box::new(hook)), &cx()).await;
    assert!(out.ok, "{out:?}");
    assert!(
        out.detail.starts_with("POST http://127.0.0.1:"),
        "{}",
        out.detail
    );
    assert!(
        out.detail.contains("key=[redacted]") && !out.detail.contains("tok-8c1f2e"),
        "{}",
        out.detail
    );
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn tcp_checks() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: blackstart_model::playbook::SmolStr =
        listener.local_addr().unwrap().to_string().into();
    assert!(run_check(&Check::Tcp(Tcp { address }), &cx()).await.ok);
    drop(listener);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_check(
        &Check::Tcp(Tcp {
            address: format!("127.0.0.1:{port}").into(),
        }),
        &cx(),
    )
    .await;
    assert!(
        out.detail
            .starts_with(&format!("cannot connect to 127.0.0.1:{port}")),
        "{}",
        out.detail
    );
    let out = run_check(
        &Check::Tcp(Tcp {
            address: "no-such-host.invalid:5432".into(),
        }),
        &cx(),
    )
    .await;
    assert!(
        out.detail
            .starts_with("cannot resolve `no-such-host.invalid:5432`"),
        "{}",
        out.detail
    );
}

fn policy(success: u32, failure: u32) -> ProbePolicy {
    let ms = blackstart_model::Duration::from_millis;
    ProbePolicy {
        initial_delay: ms(0),
        interval: ms(30),
        timeout: ms(500),
        success_threshold: success,
        failure_threshold: failure,
    }
}

#[tokio::test]
async fn until_healthy_needs_successes_in_a_row() {
    let (url, count) = server(vec![
        Some((503, "")),
        Some((503, "")),
        Some((200, "")),
        Some((500, "")),
        Some((200, "")),
    ])
    .await;
    let checks = [Check::Http(Box::new(http(&url)))];
    let rounds = until_healthy(&checks, &policy(2, 3), Duration::from_secs(5), &cx())
        .await
        .unwrap();
    // 503, 503, 200, 500 (resets the count), 200, 200.
    assert_eq!(rounds, 6);
    assert_eq!(count.load(Ordering::SeqCst), 6);
    assert_eq!(
        until_healthy(&[], &policy(1, 1), Duration::ZERO, &cx()).await,
        Ok(0)
    );
}

#[tokio::test]
async fn until_healthy_gives_up_at_the_start_timeout() {
    let (url, _) = server(vec![Some((503, "warming up"))]).await;
    let err = until_healthy(
        &[Check::Http(Box::new(http(&url)))],
        &policy(1, 3),
        Duration::from_millis(300),
        &cx(),
    )
    .await
    .unwrap_err();
    assert!(err.rounds >= 1, "{err}");
    assert!(err.last.ends_with("HTTP 503, expected 2xx or 3xx"), "{err}");
}

#[tokio::test]
async fn watch_tolerates_flapping_below_the_threshold() {
    let flapping: Vec<_> = (0..40)
        .map(|i| Some((if i % 2 == 0 { 500 } else { 200 }, "")))
        .collect();
    let (url, _) = server(flapping).await;
    let checks = [Check::Http(Box::new(http(&url)))];
    assert_eq!(
        watch(&checks, &policy(1, 2), Duration::from_millis(400), &cx()).await,
        Ok(())
    );

    let (down, _) = server(vec![Some((200, "")), Some((500, ""))]).await;
    let err = watch(
        &[Check::Http(Box::new(http(&down)))],
        &policy(1, 3),
        Duration::from_secs(5),
        &cx(),
    )
    .await
    .unwrap_err();
    assert!(err.starts_with("unhealthy 3 times in a row: "), "{err}");
}

/// A soak probes every system of its stage; a run keeps at most
/// PROBES_AT_ONCE checks under way (here the test's limit of 8), so 400 at
/// once never hold 400 sockets. Every one still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_probes_at_once_checks_are_under_way() {
    use blackstart_engine::probe::round;
    const LIMIT: usize = 8;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, m) = (Arc::clone(&now), Arc::clone(&most));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                continue;
            };
            let (now, most) = (Arc::clone(&n), Arc::clone(&m));
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => head.extend_from_slice(&buf[..k]),
                    }
                }
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    let cx = StepContext {
        probes: Arc::new(tokio::sync::Semaphore::new(LIMIT)),
        ..cx()
    };
    let checks = Arc::new([Check::Http(Box::new(http(&url)))]);
    let mut rounds = tokio::task::JoinSet::new();
    for _ in 0..400 {
        let (cx, checks) = (cx.clone(), Arc::clone(&checks));
        rounds.spawn(async move { round(&checks[..], &cx).await.ok });
    }
    let mut passed = 0;
    while let Some(ok) = tokio::time::timeout(Duration::from_secs(30), rounds.join_next())
        .await
        .expect("400 rounds of 20 ms, 8 at a time, finish well within 30 s")
    {
        passed += usize::from(ok.unwrap());
    }
    assert_eq!(passed, 400, "every check ran and passed");
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= LIMIT && most > LIMIT / 2,
        "{most} checks under way at once"
    );
}
