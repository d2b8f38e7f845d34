//! Running a program: argv, never a shell.
//!
//! The program runs in a process group of its own, so a timeout or a
//! cancelled run kills everything it started, not only the first process. A
//! program that finishes normally keeps whatever it left running (a daemon
//! that `start` forked is the point of `start`).

use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use blackstart_model::playbook::Exec;

use super::{Outcome, Step, StepContext, tail};

/// Kills a process group when dropped, unless disarmed: covers the timeout
/// and a run future dropped mid-step alike.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // The group may be gone already; nothing more to do then.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

impl Step for Exec {
    async fn run(&self, cx: &StepContext) -> Outcome {
        let resolve = |s: &str| cx.secrets.resolve(s).map_err(|e| e.to_string());
        let prepared = (|| {
            let argv = self
                .command
                .iter()
                .map(|a| resolve(a))
                .collect::<Result<Vec<_>, _>>()?;
            let env = self
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v)?)))
                .collect::<Result<Vec<_>, String>>()?;
            let dir = self.working_dir.as_deref().map(resolve).transpose()?;
            Ok::<_, String>((argv, env, dir))
        })();
        let (argv, env, dir) = match prepared {
            Ok(p) => p,
            Err(e) => return Outcome::failed(e),
        };
        let Some((program, args)) = argv.split_first() else {
            return Outcome::failed("exec has an empty command");
        };
        let shown = cx.secrets.redact(program);
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Outcome::failed(format!("cannot run `{shown}`: {e}")),
        };
        let mut guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
        let timeout = cx.timeout_or(self.timeout);
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                guard.0 = None;
                let mut bytes = out.stdout;
                bytes.extend_from_slice(&out.stderr);
                let output = cx.secrets.redact(&tail(&bytes));
                let code = out.status.code();
                let detail = match code {
                    Some(0) => format!("`{shown}` exited 0"),
                    Some(c) => format!("`{shown}` exited {c}"),
                    None => format!("`{shown}` was killed by a signal"),
                };
                Outcome {
                    ok: out.status.success(),
                    detail,
                    exit_code: code,
                    output,
                }
            }
            Ok(Err(e)) => Outcome::failed(format!("waiting for `{shown}` failed: {e}")),
            Err(_) => {
                drop(guard); // kill the whole group now
                Outcome::failed(format!(
                    "`{shown}` timed out after {}; its process group was killed",
                    humantime::format_duration(timeout)
                ))
            }
        }
    }
}
