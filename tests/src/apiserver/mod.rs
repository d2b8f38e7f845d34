//! A stateful Kubernetes API server over real HTTP on 127.0.0.1, for running
//! `blackstart operator` (the real binary, with a kubeconfig) as it runs
//! against a cluster.
//!
//! Why one of our own: no cluster can run here, and mocked request and
//! response pairs cannot test what goes wrong in a cluster over time: a
//! watch that drops and comes back to compacted history, a Lease that two
//! processes want, an operator killed with a request in flight, a write
//! that conflicts with someone else's. This server keeps objects and their
//! history and behaves as the API server does where the operator and its
//! libraries (kube-runtime's watcher, kube-lease-manager, the Events
//! recorder) can tell:
//!
//! - objects carry a `resourceVersion` (one counter for the server) and a
//!   `generation` that moves when the spec does; a write that names an
//!   older resourceVersion gets 409;
//! - list and watch, watch from a resourceVersion, bookmarks, and `410
//!   Expired` for a watch from history that was compacted away;
//! - the status and scale subresources; JSON Patch (with the API server's
//!   reading of a `test` of a missing path as null), merge and strategic
//!   merge patches, and server-side apply with field owners, so an apply of
//!   a field another manager owns conflicts unless forced (as
//!   kube-lease-manager relies on);
//! - finalizers and deletion; the RestartRun CRD's defaults; Events of both
//!   APIs; SelfSubjectAccessReview;
//! - RBAC: requests made with the operator's token are checked against the
//!   roles shipped in `manifests/rbac/rbac.yaml`; a refused one is answered
//!   403 and kept in [`ApiServer::refused`], which a test asserts empty;
//! - a Deployment controller: a workload's status follows its spec at once,
//!   except one annotated never to be ready;
//! - faults on demand: a share of status writes conflicting, a share of
//!   writes answered 500, slow writes, watches dropped every so often,
//!   history compacted, PATCHes held unanswered (an operator killed with
//!   one in flight).
//!
//! It is blocking std code, a thread per connection: tests need clarity,
//! not throughput, and nothing here may share the runtime under test.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

mod http;
mod rbac;
mod store;
mod watch;

pub use store::settle_workload;

use http::{read_request, reason_phrase};
use rbac::Rbac;
use store::{create, delete, get, list, patch, record, status, update};

/// The token of the operator's ServiceAccount: its requests are checked
/// against the shipped RBAC. Any other token is an administrator's.
pub const OPERATOR_TOKEN: &str = "operator-service-account";
/// Marks a Deployment whose pods never become ready.
pub const NEVER_READY: &str = "fake.blackstart.dev/never-ready";
/// How often a watch without changes gets a bookmark.
const BOOKMARK_EVERY: Duration = Duration::from_millis(500);

/// The faults the server injects, changeable while it runs.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Percent of RestartRun status writes refused with 409 (after a bump
    /// of the object's resourceVersion, as a concurrent edit does).
    pub status_conflicts: u32,
    /// Percent of the operator's writes answered 500 without being applied.
    pub write_errors: u32,
    /// How long each of the operator's writes takes.
    pub slow_writes: Duration,
    /// Watches are closed after this long (and their history compacted
    /// when `compact` is set), as a load balancer or an API server restart
    /// does.
    pub drop_watches_after: Option<Duration>,
    /// Compact the history whenever a watch is dropped, and send no
    /// bookmarks (the API server does not promise them), so a watcher
    /// comes back with a version older than what is left of the history,
    /// gets 410, and must list again.
    pub compact: bool,
    /// PATCHes to a path containing this are held unanswered and not
    /// applied.
    pub hang_patches: Option<String>,
}

#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    /// `group/plural`, and the namespace, of the object that changed.
    collection: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct World {
    /// By `group/plural/namespace/name`.
    objects: BTreeMap<String, Value>,
    rv: u64,
    history: Vec<Change>,
    /// Watches from before this resourceVersion get 410.
    compacted: u64,
    /// The collections (`group/plural`) watched so far: history is kept
    /// for these only.
    watched: std::collections::BTreeSet<String>,
    /// Field owners of server-side apply: object key → field path → manager.
    owners: HashMap<String, BTreeMap<String, String>>,
    faults: Faults,
    refused: Vec<String>,
    seen: Vec<String>,
    /// How many conflicts and errors the faults injected.
    injected: (usize, usize),
    /// A small deterministic generator for the faults' shares.
    random: u64,
}

#[derive(Debug)]
struct Shared {
    world: Mutex<World>,
    changed: Condvar,
    rbac: Rbac,
}

/// The server; it stops with the test process.
#[derive(Debug, Clone)]
pub struct ApiServer {
    pub port: u16,
    shared: Arc<Shared>,
}

/// What a request is about, from its path.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    group: String,
    version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] => (String::new(), (*version).to_owned(), rest),
            ["apis", group, version, rest @ ..] => {
                ((*group).to_owned(), (*version).to_owned(), rest)
            }
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
            _ => (None, rest),
        };
        let owned = |s: Option<&&str>| s.map(|s| (*s).to_owned());
        Some(Target {
            group,
            version,
            plural: (*rest.first()?).to_owned(),
            namespace,
            name: owned(rest.get(1)),
            sub: owned(rest.get(2)),
        })
    }

    fn collection(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    fn key(&self) -> String {
        format!(
            "{}/{}/{}",
            self.collection(),
            self.namespace.as_deref().unwrap_or(""),
            self.name.as_deref().unwrap_or("")
        )
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn kind(&self) -> &'static str {
        match self.plural.as_str() {
            "restartruns" => "RestartRun",
            "playbooks" => "Playbook",
            "deployments" => "Deployment",
            "statefulsets" => "StatefulSet",
            "leases" => "Lease",
            "events" => "Event",
            "secrets" => "Secret",
            "configmaps" => "ConfigMap",
            "namespaces" => "Namespace",
            _ => "Object",
        }
    }
}

/// One HTTP request, read off a connection.
#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    token: String,
    content_type: String,
    body: Vec<u8>,
}

impl ApiServer {
    /// Starts a server on a free loopback port, with the RBAC roles read
    /// from `rbac_yaml` (the project's `manifests/rbac/rbac.yaml`).
    pub fn start(rbac_yaml: &Path) -> ApiServer {
        let rbac = Rbac::load(rbac_yaml);
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("a bound port").port();
        let shared = Arc::new(Shared {
            world: Mutex::new(World {
                random: 0x9e37_79b9_7f4a_7c15,
                ..World::default()
            }),
            changed: Condvar::new(),
            rbac,
        });
        let server = ApiServer { port, shared };
        let me = server.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let me = me.clone();
                std::thread::spawn(move || me.serve(stream));
            }
        });
        server
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.shared.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kubeconfig for this server whose user presents `token`, with
    /// `namespace` as its default.
    pub fn kubeconfig(&self, token: &str, namespace: &str) -> String {
        format!(
            "apiVersion: v1
kind: Config
current-context: fake
clusters: [ {{ name: fake, cluster: {{ server: \"http://127.0.0.1:{}\" }} }} ]
users: [ {{ name: fake, user: {{ token: {token} }} }} ]
contexts: [ {{ name: fake, context: {{ cluster: fake, user: fake, namespace: {namespace} }} }} ]
",
            self.port
        )
    }

    /// Changes the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.world().faults = faults;
        self.shared.changed.notify_all();
    }

    /// Creates an object as `kubectl apply` would (every document of a
    /// multi-document YAML text), as an administrator.
    pub fn apply_yaml(&self, text: &str) {
        for doc in text.split("\n---") {
            // No budget: the benchmark's playbook has 10,000 systems.
            let mut options = serde_saphyr::Options::default();
            options.budget = None;
            let value: Value = match serde_saphyr::from_str_with_options(doc, options) {
                Ok(v) => v,
                Err(e) => panic!("a test object that is not YAML: {e}\n{doc}"),
            };
            if value.is_null() {
                continue;
            }
            self.create(value);
        }
    }

    /// Creates an object from its JSON form, as an administrator.
    pub fn create(&self, obj: Value) {
        let api_version = obj["apiVersion"].as_str().unwrap_or("v1").to_owned();
        let kind = obj["kind"].as_str().unwrap_or_default().to_owned();
        let plural = format!("{}s", kind.to_lowercase());
        let namespace = obj["metadata"]["namespace"].as_str().map(str::to_owned);
        let (group, version) = api_version
            .split_once('/')
            .map_or((String::new(), api_version.clone()), |(g, v)| {
                (g.to_owned(), v.to_owned())
            });
        let target = Target {
            group,
            version,
            plural,
            namespace,
            name: None,
            sub: None,
        };
        let mut w = self.world();
        let (code, answer) = create(&mut w, &target, obj);
        assert!(code < 300, "creating a test object failed: {answer}");
        drop(w);
        self.shared.changed.notify_all();
    }

    /// Replaces an object (not its status), as `kubectl replace` would.
    pub fn replace(&self, group: &str, plural: &str, namespace: &str, obj: Value) {
        let target = Target {
            group: group.to_owned(),
            version: String::new(),
            plural: plural.to_owned(),
            namespace: Some(namespace.to_owned()),
            name: obj["metadata"]["name"].as_str().map(str::to_owned),
            sub: None,
        };
        let (code, answer) = update(&mut self.world(), &target, obj);
        assert!(code < 300, "replacing a test object failed: {answer}");
        self.shared.changed.notify_all();
    }

    /// An object as the server holds it, or `Value::Null`.
    pub fn get(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Value {
        self.world()
            .objects
            .get(&format!("{group}/{plural}/{namespace}/{name}"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Every object of a kind, in name order.
    pub fn all(&self, group: &str, plural: &str) -> Vec<Value> {
        let prefix = format!("{group}/{plural}/");
        self.world()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Requests refused by RBAC, as "verb group/resource in namespace".
    pub fn refused(&self) -> Vec<String> {
        self.world().refused.clone()
    }

    /// How many conflicts and server errors the faults have injected.
    pub fn injected(&self) -> (usize, usize) {
        self.world().injected
    }

    /// Every request so far, as "METHOD PATH" ("WATCH PATH" for a watch),
    /// and "EXPIRED PATH" for a watch refused with 410.
    pub fn seen(&self) -> Vec<String> {
        self.world().seen.clone()
    }

    /// Answers the requests of one connection (kept alive) until it closes.
    fn serve(&self, stream: TcpStream) {
        let Ok(read_half) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(read_half);
        let mut out = stream;
        while let Some(request) = read_request(&mut reader) {
            let watch = request.method == "GET"
                && request
                    .query
                    .get("watch")
                    .is_some_and(|v| v == "1" || v == "true");
            let method = if watch { "WATCH" } else { &request.method };
            self.world().seen.push(format!("{method} {}", request.path));
            if watch {
                // A watch holds the connection until it ends.
                self.watch(&request, &mut out);
                return;
            }
            let Some((code, answer)) = self.answer(&request) else {
                // Held unanswered: the connection stays open and silent.
                std::thread::sleep(Duration::from_secs(3600));
                return;
            };
            let answer = answer.to_string();
            let reply = format!(
                "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                reason_phrase(code),
                answer.len()
            );
            if out.write_all(reply.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// The answer to one request that is not a watch; `None` for one held
    /// unanswered.
    fn answer(&self, req: &Request) -> Option<(u16, Value)> {
        if req.path == "/version" {
            return Some((
                200,
                json!({ "major": "1", "minor": "31", "gitVersion": "v1.31.0" }),
            ));
        }
        let Some(target) = Target::parse(&req.path) else {
            return Some(status(
                404,
                "NotFound",
                &format!("no such path {}", req.path),
            ));
        };
        let verb = verb_of(req, &target);
        if target.plural == "selfsubjectaccessreviews" {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let a = &body["spec"]["resourceAttributes"];
            let resource = match a["subresource"].as_str() {
                Some(s) if !s.is_empty() => format!("{}/{s}", a["resource"].as_str().unwrap_or("")),
                _ => a["resource"].as_str().unwrap_or("").to_owned(),
            };
            let allowed = req.token != OPERATOR_TOKEN
                || self.shared.rbac.allows(
                    a["verb"].as_str().unwrap_or(""),
                    a["group"].as_str().unwrap_or(""),
                    &resource,
                    a["namespace"].as_str().unwrap_or(""),
                );
            let mut review = body.clone();
            review["status"] = json!({ "allowed": allowed });
            return Some((201, review));
        }
        let operator = req.token == OPERATOR_TOKEN;
        if operator {
            let resource = match &target.sub {
                Some(sub) => format!("{}/{sub}", target.plural),
                None => target.plural.clone(),
            };
            let ns = target.namespace.as_deref().unwrap_or("");
            if !self.shared.rbac.allows(verb, &target.group, &resource, ns) {
                let what = format!("{verb} {}/{resource} in {ns:?}", target.group);
                self.world().refused.push(what.clone());
                return Some(status(
                    403,
                    "Forbidden",
                    &format!("the operator's ServiceAccount may not {what}"),
                ));
            }
        }
        let write = matches!(req.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
        let faults = self.world().faults.clone();
        if write && operator {
            if req.method == "PATCH"
                && let Some(h) = &faults.hang_patches
                && req.path.contains(h.as_str())
            {
                return None;
            }
            if !faults.slow_writes.is_zero() {
                std::thread::sleep(faults.slow_writes);
            }
            let mut w = self.world();
            if w.chance(faults.write_errors) {
                w.injected.1 += 1;
                return Some(status(500, "InternalError", "injected fault: try again"));
            }
        }
        let mut w = self.world();
        let answer = match req.method.as_str() {
            "GET" if target.name.is_none() => {
                // A list is how a watch begins: its changes are kept from now.
                w.watched.insert(target.collection());
                Some(list(&w, &target))
            }
            "GET" => Some(get(&w, &target)),
            "POST" => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                Some(create(&mut w, &target, body))
            }
            "PUT" => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                Some(update(&mut w, &target, body))
            }
            "PATCH" => {
                if operator
                    && target.plural == "restartruns"
                    && target.sub.as_deref() == Some("status")
                    && w.chance(faults.status_conflicts)
                {
                    // Someone else's edit landed first.
                    w.injected.0 += 1;
                    let key = target.key();
                    if let Some(mut obj) = w.objects.get(&key).cloned() {
                        record(&mut w, &target, &key, "MODIFIED", &mut obj);
                    }
                    Some(status(
                        409,
                        "Conflict",
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ))
                } else {
                    Some(patch(&mut w, &target, req))
                }
            }
            "DELETE" => Some(delete(&mut w, &target)),
            _ => Some(status(405, "MethodNotAllowed", "method not allowed")),
        };
        drop(w);
        self.shared.changed.notify_all();
        answer
    }
}

impl World {
    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u32) -> bool {
        if percent == 0 {
            return false;
        }
        // xorshift64: deterministic, so a failing run can be replayed.
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        (x % 100) < u64::from(percent)
    }
}

fn in_namespace(obj: &Value, namespace: Option<&str>) -> bool {
    namespace.is_none_or(|ns| obj["metadata"]["namespace"].as_str() == Some(ns))
}

/// The RBAC verb of a request.
fn verb_of(req: &Request, target: &Target) -> &'static str {
    match req.method.as_str() {
        "GET"
            if req
                .query
                .get("watch")
                .is_some_and(|v| v == "1" || v == "true") =>
        {
            "watch"
        }
        "GET" if target.name.is_none() => "list",
        "GET" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_as_the_api_server_reads_them() {
        let t = Target::parse("/apis/blackstart.dev/v1alpha1/namespaces/ns/restartruns/r1/status")
            .unwrap();
        assert_eq!(t.key(), "blackstart.dev/restartruns/ns/r1");
        assert_eq!(t.sub.as_deref(), Some("status"));
        let all = Target::parse("/apis/blackstart.dev/v1alpha1/restartruns").unwrap();
        assert_eq!((all.namespace, all.name), (None, None));
        let core = Target::parse("/api/v1/namespaces/ns/secrets/s").unwrap();
        assert_eq!(core.key(), "/secrets/ns/s");
    }

    #[test]
    fn the_shipped_roles_allow_what_the_operator_needs_and_no_more() {
        let rbac =
            Rbac::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac/rbac.yaml"));
        assert!(rbac.allows("patch", "blackstart.dev", "restartruns/status", "any"));
        assert!(rbac.allows(
            "patch",
            "coordination.k8s.io",
            "leases",
            "blackstart-system"
        ));
        assert!(!rbac.allows("patch", "coordination.k8s.io", "leases", "default"));
        assert!(!rbac.allows("delete", "apps", "deployments", "any"));
        assert!(!rbac.allows("get", "", "secrets", "plant"));
    }
}
