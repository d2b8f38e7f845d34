//! Exec steps at a site reached over ssh (`connect.ssh`).
//!
//! **The system's OpenSSH client, driven directly**, not a Rust SSH
//! implementation (russh): in the room of an incident the commander's ssh
//! already works (agent, certificates, hardware keys, `ProxyJump` through the
//! plant's bastion from `~/.ssh/config`), and sites already allow OpenSSH.
//! Not through the `openssh` crate either: it daemonizes its master and hides
//! the pids, and the journal needs both (a step's local leader is recorded, as
//! for a local exec, and the master must not outlive blackstart, even after
//! `kill -9`, beyond the commands it still carries).
//!
//! - **One connection per site**, a ControlMaster shared by every step and
//!   probe of the site: a probe every second does not log in every second.
//!   The master's own session reads its stdin until it closes; that pipe is
//!   blackstart's, so once blackstart has gone, however it went, the master
//!   (`ControlPersist=no`) leaves when the commands it still carries end.
//! - **The host key is pinned**: a per-run known_hosts file holds only the
//!   playbook's `hostKey` under an alias, checked strictly. A host that shows
//!   any other key gets no command at all, and the step fails naming the site.
//! - **No shell re-splits an argument**: the remote command line is the fixed
//!   `exec sh -s`, and the script is sent on its stdin, every word
//!   single-quoted. The login shell never sees a word of the step, and the
//!   step's environment (secrets often) never appears in a command line.
//! - **A timeout kills the remote command**: killing the local client would
//!   leave it running (the master keeps no pty to hang up, on purpose: a
//!   daemon a start forks must survive). The script first reports its pid,
//!   which sshd made the leader of a session of its own, and a timed-out or
//!   abandoned step has that whole process group killed on the host.
//!
//! The site's user needs a POSIX `sh` and `/proc` (to end what a failed
//! attempt left running); its login shell may be anything.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use blackstart_model::playbook::{Connect, Exec, SmolStr, SshConnect};

use super::exec::GroupGuard;
use super::{MAX_OUTPUT, Outcome, StepContext, Tail};
use crate::process::{MARKER, Process};

/// How long logging in to a site may take before its steps fail.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a remote kill may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many steps and probes share a site's connection at once.
/// OpenSSH's sshd allows ten sessions per connection (`MaxSessions`): one
/// is the master's own, one is kept for killing a timed-out command; the
/// rest wait their turn rather than be refused.
const SESSIONS: usize = 8;

/// The sites of a plan that are reached over ssh; connected on first use.
#[derive(Debug, Clone, Default)]
pub struct Sites(Arc<HashMap<String, Arc<Site>>>);

impl Sites {
    pub fn new(connections: &BTreeMap<String, Connect>) -> Sites {
        let sites = connections
            .iter()
            .filter_map(|(id, c)| Some((id, c.ssh.clone()?)))
            .enumerate()
            .map(|(index, (id, conf))| {
                let site = Site {
                    id: id.clone(),
                    index,
                    conf,
                    master: tokio::sync::Mutex::new(None),
                    dir: Mutex::new(None),
                    sessions: tokio::sync::Semaphore::new(SESSIONS),
                };
                (id.clone(), Arc::new(site))
            })
            .collect();
        Sites(Arc::new(sites))
    }

    /// The site's connection, when it is reached over ssh.
    pub fn get(&self, site: &str) -> Option<Arc<Site>> {
        self.0.get(site).cloned()
    }
}

/// One site reached over ssh.
pub struct Site {
    id: String,
    /// Numbers the site's files: a control socket's path must stay short.
    index: usize,
    conf: SshConnect,
    master: tokio::sync::Mutex<Option<Master>>,
    /// The known_hosts files and control sockets, removed with the site.
    dir: Mutex<Option<Arc<tempfile::TempDir>>>,
    /// Sessions open on the connection; see [`SESSIONS`].
    sessions: tokio::sync::Semaphore,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("id", &self.id)
            .field("target", &self.conf.target())
            .finish_non_exhaustive()
    }
}

/// A site's shared connection.
struct Master {
    child: Child,
    socket: PathBuf,
    /// Its session reads this until it closes: held, never written.
    _stdin: ChildStdin,
}

/// Quotes one word for a POSIX shell: inside single quotes nothing is
/// special, and a single quote is closed, escaped and reopened.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn env_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The ssh algorithms that show a key of this type.
fn host_key_algorithms(key: &str) -> &str {
    match key.split_whitespace().next().unwrap_or("") {
        "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256",
        other => other,
    }
}

impl Site {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `ssh user@host:port` as messages name it.
    pub fn target(&self) -> String {
        self.conf.target()
    }

    fn dir(&self) -> Result<Arc<tempfile::TempDir>, String> {
        let mut dir = self.dir.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = &*dir {
            return Ok(Arc::clone(d));
        }
        let made = Arc::new(
            tempfile::Builder::new()
                .prefix("bs-ssh.")
                .tempdir()
                .map_err(|e| format!("cannot make a directory for ssh's files: {e}"))?,
        );
        *dir = Some(Arc::clone(&made));
        Ok(made)
    }

    /// The options every ssh of this site runs with.
    fn common(&self, cmd: &mut Command, socket: &Path) {
        cmd.arg("-S")
            .arg(socket)
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-T"]);
        if let Some(port) = self.conf.port {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &self.conf.user {
            cmd.arg("-l").arg(user);
        }
    }

    /// The shared connection, opened when there is none or the last one
    /// died. Fails, naming the site, when the host cannot be reached or
    /// shows a key other than the pinned one.
    async fn socket(&self, cx: &StepContext) -> Result<PathBuf, String> {
        let mut master = self.master.lock().await;
        if let Some(m) = master.as_mut() {
            if matches!(m.child.try_wait(), Ok(None)) && m.socket.exists() {
                return Ok(m.socket.clone());
            }
            *master = None;
        }
        let m = self.connect(cx).await.map_err(|e| {
            format!(
                "site `{}`: ssh to {} failed: {}",
                self.id,
                self.conf.target(),
                cx.secrets.redact(&e)
            )
        })?;
        let socket = m.socket.clone();
        *master = Some(m);
        Ok(socket)
    }

    async fn connect(&self, cx: &StepContext) -> Result<Master, String> {
        let dir = self.dir()?;
        let known = dir.path().join(format!("{}.known", self.index));
        let alias = format!("blackstart-site-{}", self.index);
        // The key's type and body only: nothing of its comment reaches the file.
        let key: Vec<&str> = self.conf.host_key.split_whitespace().take(2).collect();
        std::fs::write(&known, format!("{alias} {}\n", key.join(" ")))
            .map_err(|e| format!("cannot write {}: {e}", known.display()))?;
        let socket = dir.path().join(format!("{}.sock", self.index));
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new("ssh");
        self.common(&mut cmd, &socket);
        cmd.args([
            "-M",
            "-o",
            "ControlPersist=no",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "CheckHostIP=no",
        ])
        .args(["-o", "UpdateHostKeys=no", "-o", "ConnectTimeout=10"])
        .args([
            "-o",
            "ServerAliveInterval=10",
            "-o",
            "ServerAliveCountMax=3",
        ])
        .arg("-o")
        .arg(format!("HostKeyAlias={alias}"))
        .arg("-o")
        .arg(format!(
            "HostKeyAlgorithms={}",
            host_key_algorithms(&self.conf.host_key)
        ));
        if let Some(file) = &self.conf.identity_file {
            let file = cx.secrets.resolve(file).map_err(|e| e.to_string())?;
            cmd.arg("-i").arg(file).args(["-o", "IdentitiesOnly=yes"]);
        }
        cmd.arg("--")
            .arg(&self.conf.host)
            // Its session lasts as long as blackstart holds its stdin.
            .arg("exec cat >/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run ssh (Debian's openssh-client): {e}"))?;
        let stdin = child.stdin.take().ok_or("ssh has no stdin")?;
        let mut stderr = child.stderr.take().ok_or("ssh has no stderr")?;
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            if socket.exists() {
                // What it says later (a lost connection) is not waited for.
                tokio::spawn(async move {
                    let mut sink = Vec::new();
                    let _ = stderr.read_to_end(&mut sink).await;
                });
                return Ok(Master {
                    child,
                    socket,
                    _stdin: stdin,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut said = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stderr.read_to_string(&mut said))
                        .await;
                let said = said.trim();
                return Err(
                    if said.contains("Host key verification failed")
                        || said.contains("IDENTIFICATION HAS CHANGED")
                        || said.contains("host key for")
                    {
                        format!(
                            "the host did not show the key pinned in connect.ssh.hostKey, so nothing was run there ({said})"
                        )
                    } else if said.is_empty() {
                        format!("ssh ended ({status})")
                    } else {
                        said.to_owned()
                    },
                );
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "not logged in after {}",
                    humantime::format_duration(CONNECT_TIMEOUT)
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client of the shared connection running `remote` (one line for
    /// the remote login shell, which blackstart keeps free of any word of
    /// a step's).
    fn client(&self, socket: &Path, remote: &str) -> Command {
        let mut cmd = Command::new("ssh");
        self.common(&mut cmd, socket);
        cmd.args(["-o", "ControlMaster=no", "--"])
            .arg(&self.conf.host)
            .arg(remote);
        cmd
    }

    /// Runs a small fixed script on the host and returns its output:
    /// for `check` and for ending what an attempt left.
    pub async fn script(&self, cx: &StepContext, script: &str) -> Result<(bool, String), String> {
        let socket = self.socket(cx).await?;
        let _session = self.sessions.acquire().await.map_err(|e| e.to_string())?;
        let mut cmd = self.client(&socket, "exec sh -s");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("cannot run ssh: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(script.as_bytes()).await;
        }
        let out = tokio::time::timeout(KILL_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| format!("site `{}`: no answer over ssh", self.id))?
            .map_err(|e| e.to_string())?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((out.status.success(), text))
    }

    /// Ends, on the host, every process whose environment carries the
    /// attempt's marker (what a failed start left running there). Returns
    /// how many it ended.
    pub async fn end_marked(&self, cx: &StepContext, marker: &str) -> Result<usize, String> {
        let wanted = quote(&format!("{MARKER}={marker}"));
        let script = format!(
            "n=0\nfor d in /proc/[0-9]*; do\n  if tr '\\000' '\\n' < \"$d/environ\" 2>/dev/null | grep -qxF -- {wanted}; then\n    kill -KILL \"${{d#/proc/}}\" 2>/dev/null && n=$((n+1))\n  fi\ndone\necho \"$n\"\n"
        );
        let (_, out) = self.script(cx, &script).await?;
        Ok(out.trim().parse().unwrap_or(0))
    }

    /// The script a step runs as: report the pid, go to the directory, set
    /// the environment, become the program. Every word single-quoted.
    fn step_script(exec: &Exec, cx: &StepContext) -> Result<String, String> {
        let resolve = |s: &str| cx.secrets.resolve(s).map_err(|e| e.to_string());
        let mut script = String::from("printf '%s\\n' \"$$\" >&2 || exit 125\n");
        if let Some(dir) = &exec.working_dir {
            script.push_str(&format!("cd -- {} || exit 126\n", quote(&resolve(dir)?)));
        }
        let mut vars = Vec::new();
        if let Some(attempt) = &cx.attempt {
            vars.push((MARKER.to_owned(), attempt.marker.clone()));
        }
        for (name, value) in &exec.env {
            if !env_name_ok(name) {
                return Err(format!(
                    "`{name}` cannot be set on a host over ssh: not a shell variable name"
                ));
            }
            vars.push((name.clone(), resolve(value)?));
        }
        for (name, value) in vars {
            script.push_str(&format!("export {name}={}\n", quote(&value)));
        }
        script.push_str("exec");
        for word in &exec.command {
            script.push(' ');
            script.push_str(&quote(&resolve(word)?));
        }
        script.push_str(" </dev/null\n");
        if script.contains('\0') {
            return Err("a word of the command holds a NUL byte".to_owned());
        }
        Ok(script)
    }

    /// Kills the remote process group `pid` leads.
    fn kill_remote(&self, socket: &Path, pid: i32) -> Command {
        let mut cmd = self.client(
            socket,
            &format!("kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid} 2>/dev/null; true"),
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}

/// Kills, when dropped armed, the remote process group (a step abandoned
/// mid-way by a cancelled run); the local client's group goes with
/// `local`, as a local exec's does.
struct RemoteGuard {
    socket: PathBuf,
    site: Arc<Site>,
    pid: Arc<AtomicI32>,
    armed: bool,
    local: GroupGuard,
}

impl Drop for RemoteGuard {
    fn drop(&mut self) {
        let pid = self.pid.load(Ordering::SeqCst);
        if self.armed && pid > 0 {
            let cmd = self.site.kill_remote(&self.socket, pid);
            let mut cmd = cmd.into_std();
            if let Ok(mut child) = cmd.spawn() {
                // Reaped off the runtime: a drop must not block it.
                std::thread::spawn(move || child.wait());
            }
        }
    }
}

/// Runs an exec step on the site's host.
pub async fn run(exec: &Exec, cx: &StepContext, site: &Arc<Site>) -> Outcome {
    let shown_program = cx
        .secrets
        .redact(exec.command.first().map_or("", SmolStr::as_str));
    let at = format!(" at `{}` over ssh", site.id);
    let script = match Site::step_script(exec, cx) {
        Ok(s) => s,
        Err(e) => return Outcome::failed(format!("{e} (site `{}`)", site.id)),
    };
    let socket = match site.socket(cx).await {
        Ok(s) => s,
        Err(e) => return Outcome::failed(e),
    };
    // Held until the step ends: a timed-out command's kill uses the spare session.
    let Ok(_session) = site.sessions.acquire().await else {
        return Outcome::failed(format!("site `{}`: its connection was closed", site.id));
    };
    let mut cmd = site.client(&socket, "exec sh -s");
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(attempt) = &cx.attempt {
        // The local client carries the marker too, so a resume finds it.
        cmd.env(MARKER, &attempt.marker);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::failed(format!("cannot run ssh: {e}")),
    };
    let remote_pid = Arc::new(AtomicI32::new(0));
    let mut guard = RemoteGuard {
        socket: socket.clone(),
        site: Arc::clone(site),
        pid: Arc::clone(&remote_pid),
        armed: true,
        local: GroupGuard(child.id().and_then(|id| i32::try_from(id).ok())),
    };
    if let (Some(attempt), Some(pid)) = (&cx.attempt, child.id())
        && let Some(process) = Process::of_child(pid)
        && let Err(e) = (attempt.spawned)(process)
    {
        return Outcome::failed(format!(
            "`{shown_program}` was stopped at once: its start could not be recorded ({e})"
        ));
    }
    if let Some(mut stdin) = child.stdin.take() {
        // A script that cannot be sent fails below, by its exit status.
        let _ = stdin.write_all(script.as_bytes()).await;
    }
    let tail = Arc::new(Mutex::new(Tail::new(MAX_OUTPUT + cx.secrets.longest())));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(super::exec::drain(out, Arc::clone(&tail))));
    }
    if let Some(err) = child.stderr.take() {
        let (tail, pid) = (Arc::clone(&tail), Arc::clone(&remote_pid));
        readers.push(tokio::spawn(async move {
            // The script's first line is its pid; the rest is the program's.
            let mut err = BufReader::new(err);
            let mut first = String::new();
            if err.read_line(&mut first).await.is_ok() {
                match first.trim().parse::<i32>() {
                    Ok(p) if p > 0 => pid.store(p, Ordering::SeqCst),
                    _ => tail
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(first.as_bytes()),
                }
            }
            super::exec::drain(err, tail).await;
        }));
    }
    let timeout = cx.timeout_or(exec.timeout);
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let mut killed = false;
    // The remote group is killed here, not by the guard, once the step ended.
    guard.armed = false;
    if status.is_ok() {
        // What it left running (a daemon) is its business now.
        guard.local.0 = None;
    } else {
        let pid = remote_pid.load(Ordering::SeqCst);
        if pid > 0 {
            let mut kill = site.kill_remote(&socket, pid);
            kill.kill_on_drop(true);
            killed = matches!(
                tokio::time::timeout(KILL_TIMEOUT, kill.status()).await,
                Ok(Ok(s)) if s.success()
            );
        }
        drop(guard); // the local client's group, now
    }
    let output = super::exec::collect(readers, &tail, cx).await;
    let started = remote_pid.load(Ordering::SeqCst) > 0;
    match status {
        Ok(Ok(status)) if !started => Outcome {
            output,
            ..Outcome::failed(format!(
                "`{shown_program}` did not start{at}: the connection failed ({status})"
            ))
        },
        Ok(Ok(status)) => super::exec::exited(status, &shown_program, &at, output),
        Ok(Err(e)) => Outcome::failed(format!("waiting for `{shown_program}`{at} failed: {e}")),
        Err(_) => Outcome {
            output,
            ..Outcome::failed(format!(
                "`{shown_program}` timed out after {}{at}; {}",
                humantime::format_duration(timeout),
                if killed {
                    "its process group there was killed"
                } else {
                    "killing it there failed: it may still run"
                }
            ))
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_word_is_one_word_to_sh() {
        for word in [
            "plain",
            "a b",
            "it's",
            "$(touch x)",
            "`id`",
            "\"q\"",
            "'",
            "",
            "a\nb",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(word)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), word);
        }
    }

    #[test]
    fn only_shell_names_are_exported() {
        assert!(env_name_ok("DB_URL"));
        assert!(env_name_ok("_x1"));
        for bad in ["", "1A", "A-B", "A B", "A=B", "A;B"] {
            assert!(!env_name_ok(bad), "{bad}");
        }
    }
}
