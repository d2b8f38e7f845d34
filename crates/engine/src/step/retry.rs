//! Transient API faults, retried.
//!
//! An API server under load answers 429 or 5xx, and a connection drops
//! now and then; none of that says anything about the workload, so failing
//! the system (and rolling back a stage) for it would make the restart
//! more fragile than the plant. A call is retried with capped exponential
//! backoff and jitter (so a hundred steps retrying together do not arrive
//! together) until the step's own time budget would be passed; then it
//! fails with the last error and how many tries it took. An answer that
//! will not change by asking again (403, 404, 422 …) fails at once.
//!
//! An API server that says how long to wait (a 429 from priority and
//! fairness, a 503 while it starts) is obeyed: it puts the same number in
//! its `Retry-After` header and in the `Status` body's
//! `details.retryAfterSeconds`, which is what kube's error carries, so the
//! next try waits that long instead of the backoff's delay (and the step
//! gives up at once if that would pass its deadline).

use std::time::Duration;

use backon::BackoffBuilder;
use tokio::time::Instant;

/// The first delay, and the most any one delay grows to.
const FIRST: Duration = Duration::from_millis(100);
const CAP: Duration = Duration::from_secs(2);

/// The delays between tries: from 100 ms, doubling, capped at 2 s, each
/// jittered.
pub fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(FIRST)
        .with_max_delay(CAP)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Whether asking again may get another answer: too many requests, a
/// server-side error, a timeout, a connection that failed or dropped.
pub fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500 || s.code == 0,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// How long the API server asked to be left alone, if it did.
pub fn retry_after(e: &kube::Error) -> Option<Duration> {
    match e {
        kube::Error::Api(s) => s
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|&secs| secs > 0)
            .map(|secs| Duration::from_secs(u64::from(secs))),
        _ => None,
    }
}

/// A call that failed for good: its last error and how many tries it took.
#[derive(Debug)]
pub struct GaveUp {
    pub error: kube::Error,
    pub tries: u32,
}

/// Runs `call` until it succeeds, fails with a permanent error, or the
/// next try would start after `deadline`. `on_retry` is told of each retry.
/// Returns the value and how many retries it took.
pub async fn until<T, F, Fut>(
    deadline: Instant,
    on_retry: &(dyn Fn() + Send + Sync),
    mut call: F,
) -> Result<(T, u32), GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delays = backoff();
    let mut retries = 0;
    loop {
        match call().await {
            Ok(v) => return Ok((v, retries)),
            Err(error) if transient(&error) => {
                let backed_off = delays.next().unwrap_or(CAP);
                let delay = retry_after(&error).unwrap_or(backed_off);
                if Instant::now() + delay >= deadline {
                    return Err(GaveUp {
                        error,
                        tries: retries + 1,
                    });
                }
                on_retry();
                retries += 1;
                tokio::time::sleep(delay).await;
            }
            Err(error) => {
                return Err(GaveUp {
                    error,
                    tries: retries + 1,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: format!("status {code}"),
            ..Default::default()
        }))
    }

    #[test]
    fn which_errors_are_worth_another_try() {
        for code in [429, 500, 502, 503, 504] {
            assert!(transient(&api(code)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(!transient(&api(code)), "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_an_answer() {
        let calls = AtomicU32::new(0);
        let retried = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = until(
            deadline,
            &|| {
                retried.fetch_add(1, Ordering::SeqCst);
            },
            || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move { if n < 3 { Err(api(503)) } else { Ok(n) } }
            },
        )
        .await
        .expect("an answer after three 503s");
        assert_eq!(got, (3, 3));
        assert_eq!(retried.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_api_server_s_retry_after_is_waited_for() {
        // As an API server under priority and fairness answers.
        let throttled = || {
            let status: kube::core::Status = serde_json::from_value(serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "TooManyRequests", "code": 429,
                "message": "too many requests, please try again later",
                "details": { "retryAfterSeconds": 7 },
            }))
            .expect("a Status as the API server sends it");
            kube::Error::Api(Box::new(status))
        };
        assert_eq!(retry_after(&throttled()), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&api(429)), None);
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let got = until(started + Duration::from_secs(30), &|| {}, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let e = throttled();
            async move { if n < 2 { Err(e) } else { Ok(n) } }
        })
        .await
        .expect("an answer after two waits");
        assert_eq!(got, (2, 2));
        // Two waits of 7 s each, not the backoff's 100 and 200 ms.
        assert!(
            started.elapsed() >= Duration::from_secs(14),
            "{:?}",
            started.elapsed()
        );
        // A wait that would pass the deadline is not begun.
        let calls = AtomicU32::new(0);
        let gave_up = until(Instant::now() + Duration::from_secs(5), &|| {}, || {
            calls.fetch_add(1, Ordering::SeqCst);
            let e = throttled();
            async move { Err::<(), _>(e) }
        })
        .await
        .expect_err("7 s does not fit in 5");
        assert_eq!(gave_up.tries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_fails_at_once() {
        let calls = AtomicU32::new(0);
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = until(deadline, &|| {}, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(api(403)) }
        })
        .await
        .expect_err("403 is final");
        assert_eq!(err.tries, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_within_the_budget_with_the_last_error() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(5);
        let err = until(deadline, &|| {}, || async { Err::<(), _>(api(500)) })
            .await
            .expect_err("always 500");
        assert!(err.tries > 3, "{}", err.tries);
        assert!(Instant::now() <= deadline);
        assert!(matches!(err.error, kube::Error::Api(s) if s.code == 500));
    }
}
