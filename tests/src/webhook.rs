//! A webhook receiver on 127.0.0.1 for the notification tests: real HTTP,
//! answering the first POST with 500 (so a retry is seen) and every later
//! one with 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The token the receiver's URL carries: it must appear nowhere blackstart writes.
pub const TOKEN: &str = "s3cr3t-r00m-t0ken";

/// A webhook receiver: answers the first POST with 500 and the rest with
/// 200, and keeps every body it was sent with the path it was sent to.
#[derive(Debug)]
pub struct Receiver {
    /// Where to POST, with [`TOKEN`] in its path and query.
    pub url: String,
    /// Each POST taken (after the first), with its path.
    pub got: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

/// One POST read off `stream`: its path and body.
fn take(stream: &TcpStream) -> Option<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        if header.trim().is_empty() {
            break;
        }
        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, body))
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port on 127.0.0.1");
        let url = format!(
            "http://{}/hooks/{TOKEN}?key={TOKEN}",
            listener.local_addr().expect("a bound port has an address")
        );
        let got: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let kept = Arc::clone(&got);
        std::thread::spawn(move || {
            let mut answered = 0;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some((path, body)) = take(&stream) else {
                    continue;
                };
                answered += 1;
                let status = if answered == 1 {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                if answered > 1 {
                    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                    kept.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((path, body));
                }
            }
        });
        Receiver { url, got }
    }

    /// The bodies taken, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.got
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Waits, bounded, until the bodies taken satisfy `ok`.
    pub fn wait_for(&self, what: &str, ok: impl Fn(&[serde_json::Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok(&self.events()) {
            assert!(
                Instant::now() < deadline,
                "the receiver never got {what}: {:#?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
