//! Watches: what changed after the version a client asks for, bookmarks
//! while nothing does, 410 for history compacted away, and the injected
//! drops that cut a watch as a load balancer would.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;

use super::http::{end_chunks, send};
use super::store::{members, status};
use super::{ApiServer, BOOKMARK_EVERY, Change, OPERATOR_TOKEN, Request, Target};

impl ApiServer {
    /// Serves a watch: what changed after the resourceVersion asked for,
    /// bookmarks while nothing does, until its timeout or an injected drop.
    pub(super) fn watch(&self, req: &Request, out: &mut TcpStream) {
        let Some(target) = Target::parse(&req.path) else {
            return;
        };
        if req.token == OPERATOR_TOKEN {
            let ns = target.namespace.as_deref().unwrap_or("");
            if !self
                .shared
                .rbac
                .allows("watch", &target.group, &target.plural, ns)
            {
                self.world().refused.push(format!(
                    "watch {}/{} in {ns:?}",
                    target.group, target.plural
                ));
                let (code, answer) = status(403, "Forbidden", "may not watch");
                let answer = answer.to_string();
                let _ = write!(
                    out,
                    "HTTP/1.1 {code} Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                return;
            }
        }
        if write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .is_err()
        {
            return;
        }
        let timeout = req
            .query
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map_or(Duration::from_secs(290), Duration::from_secs);
        let bookmarks = req
            .query
            .get("allowWatchBookmarks")
            .is_some_and(|v| v == "true");
        let started = Instant::now();
        let mut since: u64 = req
            .query
            .get("resourceVersion")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let collection = target.collection();
        let mut w = self.world();
        w.watched.insert(collection.clone());
        if since == 0 {
            // From "any" version: what there is now, then what changes.
            let now = members(&w, &target);
            since = w.rv;
            drop(w);
            for obj in now {
                if !send(out, &json!({ "type": "ADDED", "object": obj })) {
                    return;
                }
            }
            w = self.world();
        } else if since < w.compacted {
            w.seen.push(format!("EXPIRED {}", req.path));
            drop(w);
            let (_, gone) = status(
                410,
                "Expired",
                &format!("too old resource version: {since}"),
            );
            send(out, &json!({ "type": "ERROR", "object": gone }));
            end_chunks(out);
            return;
        }
        let mut last_sent = Instant::now();
        loop {
            let changes: Vec<Change> = w
                .history
                .iter()
                .filter(|c| c.rv > since && c.collection == collection)
                .filter(|c| {
                    target
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| &c.namespace == ns)
                })
                .cloned()
                .collect();
            since = w.rv;
            let drop_after = w.faults.drop_watches_after;
            let compact = w.faults.compact;
            drop(w);
            for c in changes {
                if !send(out, &json!({ "type": c.kind, "object": c.object })) {
                    return;
                }
                last_sent = Instant::now();
            }
            if bookmarks && !compact && last_sent.elapsed() >= BOOKMARK_EVERY {
                let mark = json!({
                    "type": "BOOKMARK",
                    "object": {
                        "apiVersion": target.api_version(),
                        "kind": target.kind(),
                        "metadata": { "resourceVersion": since.to_string() },
                    }
                });
                if !send(out, &mark) {
                    return;
                }
                last_sent = Instant::now();
            }
            if started.elapsed() >= timeout {
                end_chunks(out);
                return;
            }
            if drop_after.is_some_and(|d| started.elapsed() >= d) {
                if compact {
                    let mut w = self.world();
                    w.compacted = w.rv;
                    let rv = w.rv;
                    w.history.retain(|c| c.rv >= rv);
                }
                // Cut, not ended: the client sees the connection go.
                let _ = out.shutdown(std::net::Shutdown::Both);
                return;
            }
            w = self.world();
            if w.rv == since {
                w = self
                    .shared
                    .changed
                    .wait_timeout(w, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
    }
}
