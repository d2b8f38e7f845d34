//! A stand-in Kubernetes API server over real HTTP on 127.0.0.1, for the
//! tests of sites with a cluster of their own (`connect.kubernetes`): the
//! CLI reaches it through a kubeconfig context, the operator through a
//! kubeconfig in a Secret. It keeps one Deployment per name, scaled by
//! merge patches and ready at once at the count set; answers
//! SelfSubjectAccessReviews (a workload named `locked` may be read, not
//! patched); answers 404 for names beginning with `missing`; and logs
//! every request as "METHOD PATH", so a test can tell which cluster a step
//! went to.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Debug, Default)]
struct State {
    seen: Vec<String>,
    /// Replicas and generation by Deployment name.
    deployments: HashMap<String, (i64, i64)>,
}

/// The server; it stops with the test process.
#[derive(Debug)]
pub struct Api {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Api {
    pub fn start() -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound port").port();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let state = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Api { port, state }
    }

    /// Every request so far, as "METHOD PATH".
    pub fn seen(&self) -> Vec<String> {
        self.lock().seen.clone()
    }

    /// The replicas a Deployment was last scaled to, if it ever was.
    pub fn replicas(&self, name: &str) -> Option<i64> {
        self.lock().deployments.get(name).map(|d| d.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kubeconfig with one context, `name`, for this server.
    pub fn kubeconfig(&self, name: &str, namespace: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
current-context: {name}
clusters: [ {{ name: {name}, cluster: {{ server: \"http://127.0.0.1:{}\" }} }} ]
users: [ {{ name: {name}, user: {{ token: test }} }} ]
contexts: [ {{ name: {name}, context: {{ cluster: {name}, user: {name}, namespace: {namespace} }} }} ]
",
            self.port
        )
    }
}

/// Answers the requests of one connection (kept alive) until it closes.
fn serve(stream: TcpStream, state: &Mutex<State>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("").to_owned(),
        );
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (code, answer) = {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.seen.push(format!("{method} {path}"));
            answer(&mut state, &method, &path, &body)
        };
        let answer = answer.to_string();
        let reply = format!(
            "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(state: &mut State, method: &str, path: &str, body: &Value) -> (u16, Value) {
    if path.contains("selfsubjectaccessreviews") {
        let attrs = &body["spec"]["resourceAttributes"];
        let allowed = !(attrs["name"] == "locked" && attrs["verb"] == "patch");
        return (
            201,
            json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {}, "status": { "allowed": allowed, "reason": if allowed { "" } else { "no RBAC rule allows it" } }
            }),
        );
    }
    let name = path
        .rsplit('/')
        .next()
        .unwrap_or("x")
        .split('?')
        .next()
        .unwrap_or("x")
        .to_owned();
    if name.starts_with("missing") {
        return (
            404,
            json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound",
                "message": format!("deployments.apps \"{name}\" not found"), "code": 404
            }),
        );
    }
    let entry = state.deployments.entry(name.clone()).or_insert((0, 1));
    if method == "PATCH" {
        if let Some(n) = body["spec"]["replicas"].as_i64() {
            entry.0 = n;
        }
        entry.1 += 1;
    }
    let (replicas, generation) = *entry;
    let annotations = body["metadata"]["annotations"].clone();
    (
        200,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": name, "namespace": "plant", "generation": generation,
                          "resourceVersion": generation.to_string(),
                          "annotations": if annotations.is_object() { annotations } else { json!({ "blackstart.dev/replicas-before": "0" }) } },
            "spec": { "replicas": replicas },
            "status": { "observedGeneration": generation, "replicas": replicas,
                        "updatedReplicas": replicas, "readyReplicas": replicas,
                        "availableReplicas": replicas }
        }),
    )
}
