//! Health probing with Kubernetes probe semantics.
//!
//! After a start, [`until_healthy`] waits `initialDelay`, then runs every
//! health check each `interval` (each with the probe `timeout`) until they
//! have all passed `successThreshold` times in a row, or `startTimeout` has
//! passed. During a gate's soak, [`watch`] keeps probing and reports the
//! system unhealthy once the checks have failed `failureThreshold` times in a
//! row: one lost packet is not a failed restart.
//!
//! Every check waits for one of the run's
//! [`PROBES_AT_ONCE`](crate::step::PROBES_AT_ONCE) slots: a soak probes
//! all of its stage's systems, and thousands of checks at once would
//! exhaust sockets and, against hosts behind one address (a load balancer,
//! the drill's simulated plant), open a connection each. Each system is
//! then probed less often, never skipped.

use std::time::Duration;

use tokio::time::Instant;

use blackstart_model::playbook::{Check, ProbePolicy};

use crate::step::{Outcome, StepContext, run_check};

/// Runs every check once; the first failure is the round's outcome.
pub async fn round(checks: &[Check], cx: &StepContext) -> Outcome {
    for check in checks {
        // The semaphore is never closed; were it, the check runs anyway.
        let _slot = cx.probes.acquire().await.ok();
        // Boxed: only the checks under way hold a request's state; a soak's
        // thousands of waiting watches stay small.
        let outcome = Box::pin(run_check(check, cx)).await;
        if !outcome.ok {
            if let Some(hook) = &cx.on_probe_failure {
                (hook.0)();
            }
            return outcome;
        }
    }
    Outcome::ok(format!("{} check(s) passed", checks.len()))
}

/// Why a system never became healthy: how many rounds were probed, and
/// what the last one said (the error a commander acts on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeverHealthy {
    pub rounds: u32,
    pub last: String,
}

impl std::fmt::Display for NeverHealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} probe rounds, the last: {}", self.rounds, self.last)
    }
}

/// Waits until the system is healthy; the error says why it never was.
/// A system without checks is healthy as soon as this is called.
pub async fn until_healthy(
    checks: &[Check],
    policy: &ProbePolicy,
    start_timeout: Duration,
    cx: &StepContext,
) -> Result<u32, NeverHealthy> {
    if checks.is_empty() {
        return Ok(0);
    }
    let cx = StepContext {
        timeout: policy.timeout.to_std(),
        ..cx.clone()
    };
    let deadline = Instant::now() + start_timeout;
    tokio::time::sleep_until((Instant::now() + policy.initial_delay.to_std()).min(deadline)).await;
    let mut in_a_row = 0u32;
    let mut rounds = 0u32;
    loop {
        let outcome = round(checks, &cx).await;
        rounds += 1;
        if outcome.ok {
            in_a_row += 1;
            if in_a_row >= policy.success_threshold.max(1) {
                return Ok(rounds);
            }
        } else {
            in_a_row = 0;
            if Instant::now() >= deadline {
                return Err(NeverHealthy {
                    rounds,
                    last: outcome.detail,
                });
            }
        }
        let next = Instant::now() + policy.interval.to_std();
        if next >= deadline && !outcome.ok {
            tokio::time::sleep_until(deadline).await;
        } else {
            tokio::time::sleep_until(next).await;
        }
    }
}

/// Keeps probing for `duration`; fails once the checks fail
/// `failureThreshold` times in a row.
pub async fn watch(
    checks: &[Check],
    policy: &ProbePolicy,
    duration: Duration,
    cx: &StepContext,
) -> Result<(), String> {
    let cx = StepContext {
        timeout: policy.timeout.to_std(),
        ..cx.clone()
    };
    let end = Instant::now() + duration;
    let mut failures = 0u32;
    while Instant::now() < end {
        if !checks.is_empty() {
            let outcome = round(checks, &cx).await;
            if outcome.ok {
                failures = 0;
            } else {
                failures += 1;
                if failures >= policy.failure_threshold.max(1) {
                    return Err(format!(
                        "unhealthy {failures} times in a row: {}",
                        outcome.detail
                    ));
                }
            }
        }
        tokio::time::sleep_until((Instant::now() + policy.interval.to_std()).min(end)).await;
    }
    Ok(())
}
