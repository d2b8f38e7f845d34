//! The commands by which people decide: approve, deny, confirm, retry,
//! revoke, pause and rollback, each turned into one [`Decision`].
//!
//! Whatever the command, a decision goes the same way: to the process that
//! drives a run in the state directory, or with `--k8s` into a RestartRun's
//! spec. Who may decide what, and when, is checked in the engine's
//! `decision` module, not here.

use blackstart_engine::decision::{Decision, Kind};

use crate::args::{
    ApproveArgs, ConfirmArgs, DenyArgs, PauseArgs, RetryArgs, RevokeArgs, RollbackArgs, StateDir,
    Target,
};
use crate::{CliError, cluster, runs};

/// Hands a decision to a run in the state directory or, with `--k8s`, to a
/// RestartRun.
fn decide(
    run: &str,
    d: Decision,
    signing: &runs::Signing,
    target: Target,
    state: &StateDir,
) -> Result<u8, CliError> {
    if target.k8s {
        cluster::decide(run, d, signing, target.namespace)
    } else {
        runs::decide(&state.state_dir, run, d, signing)
    }
}

pub(crate) fn approve(a: ApproveArgs) -> Result<u8, CliError> {
    let d = Decision {
        role: a.role,
        ..Decision::new(Kind::Approve, &a.stage, &a.by)
    };
    decide(&a.run, d, &a.signing, a.target, &a.state)
}

pub(crate) fn deny(a: DenyArgs) -> Result<u8, CliError> {
    let d = Decision {
        role: a.role,
        reason: Some(a.reason),
        ..Decision::new(Kind::Deny, &a.stage, &a.by)
    };
    decide(&a.run, d, &a.signing, a.target, &a.state)
}

pub(crate) fn confirm(a: ConfirmArgs) -> Result<u8, CliError> {
    let d = Decision::new(Kind::Confirm, &a.system, &a.by);
    decide(&a.run, d, &a.signing, a.target, &a.state)
}

/// A pause goes through the inbox's own door: the driving process must
/// stop starting things even when no wait is open.
pub(crate) fn pause(a: PauseArgs) -> Result<u8, CliError> {
    let d = Decision {
        reason: a.reason,
        ..Decision::new(Kind::Pause, "", &a.by)
    };
    if a.target.k8s {
        cluster::decide(&a.run, d, &a.signing, a.target.namespace)
    } else {
        runs::pause(&a.state.state_dir, &a.run, d, &a.signing)
    }
}

pub(crate) fn revoke(a: RevokeArgs) -> Result<u8, CliError> {
    let d = Decision {
        reason: a.reason,
        ..Decision::new(Kind::Revoke, a.key.trim(), &a.by)
    };
    let signing = runs::Signing {
        key: a.sign_with,
        signature: a.signature,
        message: a.message,
        note: None,
    };
    runs::decide(&a.state.state_dir, &a.run, d, &signing)
}

/// A held site (`--site`) or one system started again.
pub(crate) fn retry(a: RetryArgs) -> Result<u8, CliError> {
    let d = match a.site {
        Some(site) => Decision::new(Kind::RetrySite, &site, &a.by),
        None => Decision::new(Kind::Retry, a.system.as_deref().unwrap_or_default(), &a.by),
    };
    runs::retry(&a.state.state_dir, &a.run, d, &a.signing)
}

/// A rollback without `--by` is allowed for a local run (the commander at
/// the terminal) and for `--dry-run`; a RestartRun's spec always names who.
pub(crate) fn rollback(a: RollbackArgs) -> Result<u8, CliError> {
    let asked = a.by.map(|by| Decision {
        reason: a.reason,
        ..Decision::new(Kind::Rollback, "", &by)
    });
    match asked {
        Some(d) if a.target.k8s => cluster::decide(&a.run, d, &a.signing, a.target.namespace),
        None if a.target.k8s => Err(CliError::Usage(
            "a rollback of a RestartRun names who asks: --by NAME".to_owned(),
        )),
        asked => runs::rollback(
            &a.state.state_dir,
            &a.run,
            &a.trust.into(),
            asked,
            a.dry_run,
            &a.signing,
        ),
    }
}
