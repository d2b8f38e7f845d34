//! Telling, after a crash, whether a step's process still runs.
//!
//! A pid alone says nothing after a crash: the kernel reuses pids, and a
//! machine may have rebooted since. A step's leader is therefore recorded
//! as pid, process group, start time (in clock ticks since boot, from
//! `/proc/PID/stat`) and the boot's id; it is the same process only when all
//! of them match. A zombie counts as ended: it runs nothing.
//!
//! Every exec step's environment also carries a marker naming its run,
//! system and attempt, so that a step spawned in the instant between the
//! journal's "attempt begun" and "attempt running" records (a crash there
//! leaves no pid in the journal) is still found, by its environment.
//!
//! Linux only, through `/proc`; elsewhere nothing is ever found alive,
//! which errs towards asking a person (see the engine's resume rules).

use serde::{Deserialize, Serialize};

/// The environment variable that marks a step's processes.
pub const MARKER: &str = "BLACKSTART_STEP";

/// A step's leader process, as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub pid: i32,
    /// Its process group: the leader's pid, as steps run in a group of their own.
    pub pgid: i32,
    /// When it started, in clock ticks after boot (`/proc/PID/stat`, field 22).
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` when it ran.
    pub boot: String,
}

/// This boot's id, or "" where the kernel does not say.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Fields 3 (state) and 22 (start time) of `/proc/PID/stat`. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// after its last `)`.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // state is field 3; start time is field 22, 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl Process {
    /// Describes a child just spawned; `None` when `/proc` does not know it.
    pub fn of_child(pid: u32) -> Option<Process> {
        let pid = i32::try_from(pid).ok()?;
        let (_, start_ticks) = stat(pid)?;
        Some(Process {
            pid,
            pgid: pid,
            start_ticks,
            boot: boot_id(),
        })
    }

    /// Whether this very process still runs (not merely its pid).
    pub fn alive(&self) -> bool {
        if self.boot.is_empty() || self.boot != boot_id() {
            return false;
        }
        matches!(stat(self.pid), Some((state, start)) if start == self.start_ticks && state != 'Z')
    }

    /// Kills its whole process group, only if the leader is still this
    /// process (a reused pid's group is someone else's).
    pub fn kill_group(&self) {
        if self.alive() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The marker value for one attempt of one step.
pub fn marker(run: &str, system: &str, step: &str, attempt: u32) -> String {
    format!("{run}/{system}/{step}/{attempt}")
}

/// The pids of the processes whose environment carries `marker`.
fn marked(marker: &str) -> Vec<i32> {
    let wanted = format!("{MARKER}={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == wanted.as_bytes()))
        })
        .collect()
}

/// Ends every live process whose environment carries `marker`: what a
/// failed start attempt left running (a daemon it spawned, a child of a
/// leader that exited), before the next attempt. Killed one by one, by pid
/// checked against its environment, never by a group id that may have
/// been reused. Returns how many it ended.
pub fn end_marked(marker: &str) -> usize {
    marked(marker)
        .into_iter()
        .filter(|&pid| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        })
        .count()
}

/// The earliest-started live process whose environment carries `marker`:
/// the leader of a step whose pid never reached the journal.
pub fn find_marked(marker: &str) -> Option<Process> {
    let boot = boot_id();
    let mut found: Option<Process> = None;
    for pid in marked(marker) {
        let Some((state, start_ticks)) = stat(pid) else {
            continue;
        };
        if state == 'Z' || found.as_ref().is_some_and(|f| f.start_ticks <= start_ticks) {
            continue;
        }
        found = Some(Process {
            pid,
            pgid: nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
                .map_or(pid, |p| p.as_raw()),
            start_ticks,
            boot: boot.clone(),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_child_is_alive_and_a_reaped_one_is_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let p = Process::of_child(child.id()).expect("/proc knows the child");
        assert!(p.alive());
        let other_start = Process {
            start_ticks: p.start_ticks + 1,
            ..p.clone()
        };
        assert!(!other_start.alive(), "same pid, another start time");
        let other_boot = Process {
            boot: "another-boot".into(),
            ..p.clone()
        };
        assert!(!other_boot.alive(), "same pid, another boot");
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(!p.alive());
    }

    #[test]
    fn a_marked_process_is_found_by_its_environment() {
        let marker = marker("run-x", "sys", "start", std::process::id());
        assert_eq!(find_marked(&marker), None);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env(MARKER, &marker)
            .spawn()
            .expect("sleep runs");
        // Just spawned, the child may not show its new environment yet.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            match find_marked(&marker) {
                Some(p) => break p,
                None if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                None => panic!("not found by its marker"),
            }
        };
        assert_eq!(found.pid as u32, child.id());
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(find_marked(&marker), None);
    }
}
