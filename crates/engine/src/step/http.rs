//! HTTP: a webhook as an action, a health endpoint as a check.
//!
//! Always with a timeout; redirects are not followed, so a 3xx is judged as
//! the answer it is (Kubernetes counts 200 to 399 as healthy, and so do we
//! when no `expectStatus` is given). TLS is rustls with the ring provider.

use blackstart_model::playbook::{Http, Method};

use super::{MAX_OUTPUT, Outcome, Step, StepContext};

/// The largest response body read for `bodyContains` or `jsonPointer`.
const MAX_BODY: usize = 1024 * 1024;

pub(super) fn client() -> Result<reqwest::Client, String> {
    // Installing twice is harmless: the first provider stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("blackstart/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

pub(super) struct Request<'a> {
    pub http: &'a Http,
    pub default_method: Method,
}

/// The innermost cause of a reqwest error, which is the one a person needs
/// ("Connection refused", "failed to lookup address").
pub(crate) fn cause(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

impl Step for Request<'_> {
    async fn run(&self, cx: &StepContext) -> Outcome {
        let h = self.http;
        let resolve = |s: &str| cx.secrets.resolve(s).map_err(|e| e.to_string());
        let prepared = (|| {
            let url = resolve(&h.url)?;
            let headers = h
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v)?)))
                .collect::<Result<Vec<_>, String>>()?;
            let body = h.body.as_deref().map(resolve).transpose()?;
            let contains = h.body_contains.as_deref().map(resolve).transpose()?;
            let equals = h
                .json_pointer
                .as_ref()
                .map(|m| match &m.equals {
                    serde_json::Value::String(s) => resolve(s).map(serde_json::Value::String),
                    other => Ok(other.clone()),
                })
                .transpose()?;
            Ok::<_, String>((url, headers, body, contains, equals))
        })();
        let (url, headers, body, contains, equals) = match prepared {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e),
        };
        let method = h.method.unwrap_or(self.default_method);
        let shown = cx.secrets.redact(&url);
        let timeout = cx.timeout_or(h.timeout);
        let method =
            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut request = cx
            .http
            .request(method.clone(), url.as_str())
            .timeout(timeout);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::failed(format!(
                    "{method} {shown}: no answer within {}",
                    humantime::format_duration(timeout)
                ));
            }
            Err(e) => {
                return Outcome::failed(
                    cx.secrets
                        .redact(&format!("{method} {shown}: {}", cause(&e))),
                );
            }
        };
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        let needs_body = contains.is_some() || equals.is_some();
        let limit = if needs_body { MAX_BODY } else { MAX_OUTPUT } + 2 * cx.secrets.longest() + 8;
        let mut unfinished = false;
        loop {
            match tokio::time::timeout(timeout, response.chunk()).await {
                Ok(Ok(Some(chunk))) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() >= limit {
                        bytes.truncate(limit);
                        unfinished = true;
                        break;
                    }
                }
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    return Outcome::failed(cx.secrets.redact(&format!(
                        "{method} {shown}: reading the answer: {}",
                        cause(&e)
                    )));
                }
                Err(_) => {
                    return Outcome::failed(format!(
                        "{method} {shown}: the answer did not finish within {}",
                        humantime::format_duration(timeout)
                    ));
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let output = super::shown(&bytes, bytes.len() as u64, unfinished, &cx.secrets);
        let fail = |detail: String| Outcome {
            ok: false,
            detail: cx.secrets.redact(&detail),
            exit_code: None,
            output: output.clone(),
            retries: 0,
        };
        let status_ok = match h.expect_status {
            Some(want) => status == want,
            None => (200..400).contains(&status),
        };
        if !status_ok {
            let want = h
                .expect_status
                .map_or("2xx or 3xx".to_owned(), |s| s.to_string());
            return fail(format!("{method} {shown}: HTTP {status}, expected {want}"));
        }
        if let Some(needle) = &contains
            && !text.contains(needle.as_str())
        {
            return fail(format!(
                "{method} {shown}: HTTP {status}, but the body does not contain {needle:?}"
            ));
        }
        if let (Some(m), Some(equals)) = (&h.json_pointer, &equals) {
            let json: serde_json::Value = match serde_json::from_str(&text) {
                Ok(j) => j,
                Err(e) => return fail(format!("{method} {shown}: the body is not JSON ({e})")),
            };
            let Some(found) = json.pointer(&m.pointer) else {
                return fail(format!(
                    "{method} {shown}: the body has nothing at {}",
                    m.pointer
                ));
            };
            if !json_equal(found, equals) {
                return fail(format!(
                    "{method} {shown}: {} is {found}, expected {equals}",
                    m.pointer
                ));
            }
        }
        Outcome {
            ok: true,
            detail: format!("{method} {shown}: HTTP {status}"),
            exit_code: None,
            output,
            retries: 0,
        }
    }
}

/// Whether the body's value `found` is the playbook's `expected`: JSON
/// equality, numbers compared as numbers (`1` is `1.0`). An expected
/// string also matches the JSON text of a non-string value, as journals of
/// runs planned before `equals` was typed hold every value as text.
fn json_equal(found: &serde_json::Value, expected: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (found, expected) {
        (J::Number(a), J::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => a.as_f64() == b.as_f64(),
        },
        (J::String(_), J::String(_)) => found == expected,
        (other, J::String(text)) => serde_json::to_string(other).is_ok_and(|t| t == *text),
        _ => found == expected,
    }
}
