//! `serve`: the incident room's screen, read-only, live from the journal.
//!
//! Built on hyper directly, as the operator's metrics endpoint is, rather
//! than on axum: the server has six fixed GET routes and one event stream,
//! which a `match` on the path says plainly, and hyper is already in the
//! binary; a router framework would add a dependency tree for no route it
//! needs. Everything it serves is embedded in the binary (the room may be
//! offline), and it answers only GET and HEAD: decisions stay signed, in the
//! CLI, and the page shows the command for each.
//!
//! Listening beyond loopback needs a bearer token: a browser hands it over
//! once (`/?token=…`) and keeps it in a strict, HTTP-only cookie, which the
//! event stream sends too (an `EventSource` cannot set headers). The token
//! is plain HTTP's to carry, so TLS goes in front (the README says how).

mod source;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;

use crate::view::{self, html};
use crate::{CliError, exit};
pub use source::Source;

/// The page's script, served at `/assets/room.js`.
const JS: &str = include_str!("../view/room.js");

/// How often the event stream looks at the journal for new records.
const TAIL_EVERY: Duration = Duration::from_millis(200);

/// A comment sent when nothing happened for this long, so that a client
/// gone away is noticed and its stream ended.
const KEEPALIVE: Duration = Duration::from_secs(15);

type Body = BoxBody<Bytes, Infallible>;

/// `serve`'s settings.
#[derive(Debug)]
pub struct Options {
    pub listen: SocketAddr,
    pub token: Option<String>,
    /// A state directory, or the namespace of RestartRuns (`Err`; `None`
    /// for the kubeconfig's).
    pub runs: Result<std::path::PathBuf, Option<String>>,
}

struct Server {
    source: Source,
    token: Option<String>,
}

/// Runs the server until a signal.
pub fn serve(options: Options) -> Result<u8, CliError> {
    if !options.listen.ip().is_loopback() && options.token.is_none() {
        return Err(CliError::Usage(format!(
            "serve: {} is not a loopback address; listening beyond this machine needs --token-file FILE (and TLS in front, see the README)",
            options.listen
        )));
    }
    let rt = crate::runs::runtime()?;
    rt.block_on(async move {
        let source = match options.runs {
            Ok(dir) => Source::dir(dir),
            Err(namespace) => {
                let (client, namespace) = crate::cluster::connect(namespace).await?;
                Source::K8s { client, namespace }
            }
        };
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|e| {
                CliError::Runtime(format!("serve: cannot listen on {}: {e}", options.listen))
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| CliError::Runtime(format!("serve: {e}")))?;
        crate::runs::note(&format!(
            "serving the runs of {} at http://{addr}/ (read-only; Ctrl-C stops)",
            source.describe()
        ));
        let server = Arc::new(Server {
            source,
            token: options.token,
        });
        let accept = async {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("serve: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(exit::SUCCESS)
    })
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("text/plain")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // The page runs only its own script and loads nothing from elsewhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    r
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => full(StatusCode::OK, "application/json", bytes),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "no such run or page")
}

/// A query parameter's value, as given (the ids and numbers it carries
/// need no decoding).
fn query<'a>(req: &'a Request<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Compares in time that does not depend on where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const COOKIE: &str = "blackstart_token";

impl Server {
    /// Whether the request carries the token (header or cookie); always
    /// when none is set.
    fn allowed(&self, req: &Request<hyper::body::Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = req
            .headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='));
        [bearer, cookie]
            .into_iter()
            .flatten()
            .any(|given| same(given.as_bytes(), token.as_bytes()))
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "the room only reads; decisions are taken with the CLI, signed",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if !self.allowed(&req) {
            // A browser hands the token over once, in the address, and
            // keeps it in a cookie; the address it goes on to has none.
            if let (Some(token), Some(given)) = (&self.token, query(&req, "token"))
                && same(given.as_bytes(), token.as_bytes())
            {
                let mut r = text(StatusCode::SEE_OTHER, "signed in");
                let h = r.headers_mut();
                // Back to the same page of this server, never elsewhere
                // (`//host/…` would be another site).
                let path = req.uri().path();
                let back = if path.starts_with("//") { "/" } else { path };
                h.insert(
                    header::LOCATION,
                    HeaderValue::from_str(back).unwrap_or(HeaderValue::from_static("/")),
                );
                if let Ok(v) = HeaderValue::from_str(&format!(
                    "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                )) {
                    h.insert(header::SET_COOKIE, v);
                }
                return r;
            }
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "a bearer token is needed (Authorization: Bearer …, or open /?token=… once)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let path = req.uri().path().to_owned();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let fragment = query(&req, "fragment").is_some();
        match parts.as_slice() {
            [""] => self.runs(fragment).await,
            ["assets", "room.css"] => full(StatusCode::OK, "text/css; charset=utf-8", html::CSS),
            ["assets", "room.js"] => full(StatusCode::OK, "text/javascript; charset=utf-8", JS),
            ["api", "runs"] => match self.source.runs().await {
                Ok(runs) => json(&runs),
                Err(e) => text(StatusCode::BAD_GATEWAY, &e),
            },
            ["runs", run] => self.run_page(run, fragment).await,
            ["api", "runs", run] => match self.view(run).await {
                Ok(Some(v)) => json(&*v),
                Ok(None) => not_found(),
                Err(e) => text(StatusCode::BAD_GATEWAY, &e),
            },
            ["api", "runs", run, "events"] => {
                let from = req
                    .headers()
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .or_else(|| query(&req, "from"))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                self.events(run, from).await
            }
            _ => not_found(),
        }
    }

    async fn runs(&self, fragment: bool) -> Response<Body> {
        match self.source.runs().await {
            Ok(runs) => {
                let body = if fragment {
                    html::runs_list(&runs, &self.source.describe())
                } else {
                    html::runs_page(&runs, &self.source.describe())
                };
                full(StatusCode::OK, "text/html; charset=utf-8", body)
            }
            Err(e) => text(StatusCode::BAD_GATEWAY, &e),
        }
    }

    async fn view(&self, run: &str) -> Result<Option<Arc<view::RunView>>, String> {
        self.source.view(run).await
    }

    async fn run_page(&self, run: &str, fragment: bool) -> Response<Body> {
        match self.view(run).await {
            Ok(Some(v)) => {
                let body = if fragment {
                    html::body(&v)
                } else {
                    html::page(&v)
                };
                let mut r = full(StatusCode::OK, "text/html; charset=utf-8", body);
                r.headers_mut()
                    .insert("x-journal-seq", HeaderValue::from(v.head.seq));
                r
            }
            Ok(None) => not_found(),
            Err(e) => text(StatusCode::BAD_GATEWAY, &e),
        }
    }

    /// Server-Sent Events: each record after `from`, as the journal gets
    /// it (`id` is its seq, so a reconnecting client goes on from there).
    async fn events(&self, run: &str, from: u64) -> Response<Body> {
        let mut tail = match self.source.tail(run, from).await {
            Ok(Some(t)) => t,
            Ok(None) => return not_found(),
            Err(e) => return text(StatusCode::BAD_GATEWAY, &e),
        };
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            let mut quiet = Duration::ZERO;
            loop {
                match tail.next().await {
                    Ok(records) if !records.is_empty() => {
                        quiet = Duration::ZERO;
                        for r in records {
                            let data = serde_json::json!({
                                "seq": r.seq,
                                "at": r.at,
                                "hash": r.hash,
                                "text": r.event.describe(),
                                "event": r.event,
                            });
                            let frame = format!("id: {}\nevent: record\ndata: {data}\n\n", r.seq);
                            if tx.send(Bytes::from(frame)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx
                            .send(Bytes::from(format!(
                                "event: error\ndata: {}\n\n",
                                serde_json::json!(e)
                            )))
                            .await;
                    }
                }
                tokio::time::sleep(tail.every()).await;
                quiet += tail.every();
                if quiet >= KEEPALIVE {
                    quiet = Duration::ZERO;
                    if tx
                        .send(Bytes::from_static(b": keepalive\n\n"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        let mut r = Response::new(ChannelBody(rx).boxed());
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// A response body fed from a channel: the event stream.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}
