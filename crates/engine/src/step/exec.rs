//! Running a program: argv, never a shell.
//!
//! The program runs in a process group of its own, so a timeout or a
//! cancelled run kills everything it started, not only the first process. A
//! program that finishes normally keeps whatever it left running (a daemon
//! that `start` forked is the point of `start`).
//!
//! Its environment is clean: only [`ALWAYS_INHERITED`], what the plan and
//! the step opt into (`inheritEnv`), and what the step declares (`env`),
//! so that no secret meant for another step reaches it by inheritance.
//!
//! The step ends when the program exits, not when its output closes: a
//! daemon it forked may hold stdout open for ever. Output is read as it
//! comes into a bounded tail, and after the exit the pipes get a short
//! grace to drain before they are let go.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;

use blackstart_model::playbook::{Exec, SmolStr};

use super::{ALWAYS_INHERITED, MAX_OUTPUT, Outcome, Step, StepContext, Tail, shown};
use crate::process::{MARKER, Process};

/// How long the pipes may still deliver output after the program exited.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Kills a process group when dropped, unless disarmed: covers the timeout
/// and a run future dropped mid-step alike.
pub(super) struct GroupGuard(pub(super) Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // The group may be gone already; nothing more to do then.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

/// Reads a pipe into the shared tail until it closes.
pub(super) async fn drain(mut pipe: impl tokio::io::AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&buf[..n]),
        }
    }
}

/// Gives the pipes a moment to deliver what was written before the exit
/// (a daemon holding them open is not waited for), lets go of them, and
/// returns the end of the output as it may be shown.
pub(super) async fn collect(
    mut readers: Vec<tokio::task::JoinHandle<()>>,
    tail: &Mutex<Tail>,
    cx: &StepContext,
) -> String {
    let drained = async {
        for r in &mut readers {
            let _ = r.await;
        }
    };
    let _ = tokio::time::timeout(DRAIN_GRACE, drained).await;
    readers.iter().for_each(tokio::task::JoinHandle::abort);
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    shown(tail.end(), tail.total, false, &cx.secrets)
}

/// How a program that exited went; `at` says where it ran (empty here,
/// " at `site` over ssh" on a site's host).
pub(super) fn exited(
    status: std::process::ExitStatus,
    program: &str,
    at: &str,
    output: String,
) -> Outcome {
    let code = status.code();
    let detail = match code {
        Some(c) => format!("`{program}` exited {c}{at}"),
        None => format!("`{program}`{at} was killed by a signal"),
    };
    Outcome {
        ok: status.success(),
        detail,
        exit_code: code,
        output,
        retries: 0,
    }
}

/// The command for an exec step, its placeholders resolved.
fn command(exec: &Exec, cx: &StepContext) -> Result<tokio::process::Command, String> {
    let resolve = |s: &str| cx.secrets.resolve(s).map_err(|e| e.to_string());
    let argv = exec
        .command
        .iter()
        .map(|a| resolve(a))
        .collect::<Result<Vec<_>, _>>()?;
    let env = exec
        .env
        .iter()
        .map(|(k, v)| Ok((k.clone(), resolve(v)?)))
        .collect::<Result<Vec<_>, String>>()?;
    let dir = exec.working_dir.as_deref().map(resolve).transpose()?;
    let Some((program, args)) = argv.split_first() else {
        return Err("exec has an empty command".to_owned());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear();
    let inherited = ALWAYS_INHERITED
        .iter()
        .copied()
        .chain(cx.inherit_env.iter().map(String::as_str))
        .chain(exec.inherit_env.iter().map(String::as_str));
    for name in inherited {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(env);
    if let Some(attempt) = &cx.attempt {
        cmd.env(MARKER, &attempt.marker);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    Ok(cmd)
}

impl Step for Exec {
    async fn run(&self, cx: &StepContext) -> Outcome {
        if let Some(site) = &cx.remote {
            return super::ssh::run(self, cx, site).await;
        }
        let mut cmd = match command(self, cx) {
            Ok(c) => c,
            Err(e) => return Outcome::failed(e),
        };
        let shown_program = cx
            .secrets
            .redact(self.command.first().map_or("", SmolStr::as_str));
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::failed(format!("cannot run `{shown_program}`: {e}")),
        };
        let mut guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
        if let (Some(attempt), Some(pid)) = (&cx.attempt, child.id())
            && let Some(process) = Process::of_child(pid)
            && let Err(e) = (attempt.spawned)(process)
        {
            return Outcome::failed(format!(
                "`{shown_program}` was stopped at once: its start could not be recorded ({e})"
            ));
        }
        let tail = Arc::new(Mutex::new(Tail::new(MAX_OUTPUT + cx.secrets.longest())));
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|p| tokio::spawn(drain(p, Arc::clone(&tail)))),
            child
                .stderr
                .take()
                .map(|p| tokio::spawn(drain(p, Arc::clone(&tail)))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let timeout = cx.timeout_or(self.timeout);
        let status = tokio::time::timeout(timeout, child.wait()).await;
        if status.is_ok() {
            // What it left running (a daemon) is its business now.
            guard.0 = None;
        } else {
            drop(guard); // kill the whole group now
        }
        let output = collect(readers, &tail, cx).await;
        match status {
            Ok(Ok(status)) => exited(status, &shown_program, "", output),
            Ok(Err(e)) => Outcome::failed(format!("waiting for `{shown_program}` failed: {e}")),
            Err(_) => Outcome {
                output,
                retries: 0,
                ..Outcome::failed(format!(
                    "`{shown_program}` timed out after {}; its process group was killed",
                    humantime::format_duration(timeout)
                ))
            },
        }
    }
}
