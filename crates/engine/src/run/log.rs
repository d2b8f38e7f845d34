//! Every recorded transition as a structured log event, for `--log-format
//! json` and whoever else subscribes to `tracing`.

use crate::event::Event;

/// Every recorded transition as a structured log event, for `--log-format
/// json` and whoever else subscribes. Output is at debug: it can be long.
pub(super) fn log(run: &str, seq: u64, event: &Event) {
    match event {
        Event::RunStarted {
            playbook,
            playbook_hash,
            ..
        } => {
            tracing::info!(run, seq, playbook = %playbook, playbook_hash = %playbook_hash, "run started");
        }
        Event::Run { phase, reason } => {
            tracing::info!(run, seq, phase = ?phase, reason = reason.as_deref(), "run")
        }
        Event::Stage {
            stage,
            phase,
            reason,
        } => {
            tracing::info!(run, seq, stage = %stage, phase = ?phase, reason = reason.as_deref(), "stage");
        }
        Event::System {
            system,
            phase,
            reason,
            waiting_for,
        } => {
            tracing::info!(run, seq, system = %system, phase = ?phase, reason = reason.as_deref(), waiting_for = ?waiting_for, "system");
        }
        Event::Output {
            system,
            step,
            exit_code,
            output,
        } => {
            tracing::debug!(run, seq, system = %system, step = %step, exit_code = ?exit_code, output = %output, "output");
        }
        Event::Approved {
            stage,
            by,
            role,
            proof,
        } => {
            tracing::info!(run, seq, stage = %stage, by = %by, role = role.as_deref(), key = proof.key.as_deref(), "approved");
        }
        Event::Denied {
            stage,
            by,
            role,
            reason,
            ..
        } => {
            tracing::warn!(run, seq, stage = %stage, by = %by, role = role.as_deref(), reason = %reason, "denied");
        }
        Event::Refused {
            decision,
            subject,
            by,
            reason,
        } => {
            tracing::warn!(run, seq, decision = %decision, subject = %subject, by = %by, reason = %reason, "decision refused");
        }
        Event::KeyRevoked { key, by, .. } => {
            tracing::warn!(run, seq, key = %key, by = %by, "key revoked")
        }
        Event::PauseRequested { by, reason, .. } => {
            tracing::info!(run, seq, by = %by, reason = reason.as_deref(), "pause requested")
        }
        Event::RollbackRequested { by, reason, .. } => {
            tracing::warn!(run, seq, by = %by, reason = reason.as_deref(), "rollback requested")
        }
        Event::Confirmed { system, by, .. } => {
            tracing::info!(run, seq, system = %system, by = %by, "confirmed")
        }
        Event::TornWriteDiscarded { bytes } => {
            tracing::warn!(run, seq, bytes, "torn write discarded")
        }
        Event::RetryRequested { system, by, .. } => {
            tracing::info!(run, seq, system = %system, by = %by, "retry requested")
        }
        Event::AttemptBegun {
            system,
            step,
            attempt,
        } => {
            tracing::info!(run, seq, system = %system, step = step.as_str(), attempt, "attempt begun")
        }
        Event::AttemptRunning {
            system,
            step,
            attempt,
            process,
        } => {
            tracing::info!(run, seq, system = %system, step = step.as_str(), attempt, pid = process.pid, "attempt running")
        }
        Event::AttemptEnded {
            system,
            step,
            attempt,
            result,
            reason,
        } => {
            tracing::info!(run, seq, system = %system, step = step.as_str(), attempt, result = ?result, reason = reason.as_deref(), "attempt ended")
        }
        Event::RollbackBegun {
            stage,
            systems,
            reason,
            by,
        } => {
            tracing::info!(run, seq, stage = stage.as_deref(), systems = systems.len(), reason = %reason, by = by.as_deref(), "rollback begun")
        }
        Event::SiteRetried { site, by, .. } => {
            tracing::info!(run, seq, site = %site, by = %by, "site retried")
        }
        Event::SiteHeld {
            site,
            stage,
            reason,
            ..
        } => {
            tracing::info!(run, seq, site = %site, stage = %stage, reason = %reason, "site held")
        }
        Event::Notified {
            notification,
            receiver,
            attempt,
            delivered,
            ..
        } => {
            tracing::info!(run, seq, notification = notification.as_str(), receiver = %receiver, attempt, delivered, "notification")
        }
        Event::SetAside {
            file,
            bytes,
            reason,
        } => {
            tracing::info!(run, seq, file = %file, bytes, reason = %reason, "journal tail set aside")
        }
    }
}
