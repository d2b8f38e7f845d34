//! A real browser for the incident room's tests: Debian's Chromium, driven
//! headless through chromedriver over WebDriver, and a plain HTTP/1.1
//! client for the server's other answers.
//!
//! WebDriver is JSON over HTTP, and the few commands these tests need (open
//! a page, run a script) are a handful of requests, so
//! they are spoken here directly rather than through a client crate. A
//! live session sees the page change without a reload, which
//! `chromium --dump-dom` cannot, and it does not wait for an event stream
//! the page holds open to end.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's packages put them (`cargo xtask test` installs both).
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser is here; a test that needs it is ignored without.
pub fn available() -> bool {
    Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

/// One HTTP/1.1 request to 127.0.0.1; the status, headers and body.
pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(host).expect("the server accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a timeout can be set");
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .expect("the request is sent");
    // Read the head, then as much body as it announces: a server may keep
    // the connection open whatever the request asked.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let complete = |raw: &[u8]| -> bool {
        let text = String::from_utf8_lossy(raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let lower = head.to_ascii_lowercase();
        if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            return body.len() >= len;
        }
        lower.contains("transfer-encoding: chunked") && body.ends_with("0\r\n\r\n")
    };
    while !complete(&raw) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the answer to {method} {url} is read: {e}"),
        }
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Where a `blackstart serve` started with its standard error piped
/// listens, from the line it prints first (`http://127.0.0.1:PORT`).
/// Its standard error is read on from then, so it never blocks on a full pipe.
pub fn serving_at(serve: &mut Child) -> String {
    use std::io::BufRead as _;
    let stderr = serve
        .stderr
        .take()
        .expect("serve's standard error is piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let line = lines
        .next()
        .and_then(Result::ok)
        .expect("serve says where it listens");
    std::thread::spawn(move || for _ in lines {});
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("serve says where it listens: {line}"))
        .trim_end_matches('/')
        .to_owned()
}

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a port can be had")
}

/// A headless Chromium session, ended (and its driver stopped) on drop.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile,
    /// no network beyond what the page asks of 127.0.0.1.
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let caps = serde_json::json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1400,2000",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let (status, _, body) = http("POST", &format!("{base}/session"), Some(&caps.to_string()));
        assert_eq!(status, 200, "a browser session starts: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("WebDriver answers JSON");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            driver,
            base,
            session,
            _profile: profile,
        }
    }

    fn command(&self, method: &str, what: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}/session/{}/{what}", self.base, self.session);
        let (status, _, text) = http(method, &url, Some(&body.to_string()));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(status, 200, "WebDriver {what}: {text}");
        v["value"].clone()
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) {
        self.command("POST", "url", serde_json::json!({ "url": url }));
    }

    /// Runs `script` in the page (a function body) and returns its value.
    pub fn eval(&self, script: &str) -> serde_json::Value {
        self.command(
            "POST",
            "execute/sync",
            serde_json::json!({ "script": script, "args": [] }),
        )
    }

    /// The page's visible text.
    pub fn text(&self) -> String {
        self.eval("return document.body.innerText;")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits, bounded, until `ready` holds of the page's state as `script`
    /// returns it; the last value either way.
    pub fn wait_for(
        &self,
        what: &str,
        script: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(script);
            if ready(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the page says: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
