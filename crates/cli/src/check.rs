//! `blackstart check`: the preflight, before a restart begins.
//!
//! During an incident the worst time to learn that a token is not set, a
//! command is not installed or a host name does not resolve is half-way
//! through the second stage. `check` looks at what the plan needs and
//! changes nothing: every `${env:}` set, every exec command present on this
//! machine (where this release runs every exec step), every host an http or
//! tcp step or probe names resolvable. It never prints a secret's value,
//! only whether it is set. What it cannot check in this release (kubernetes
//! reachability and permissions) is listed as not checked rather than
//! passed.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blackstart_engine::secrets::Secrets;
use blackstart_model::Plan;
use blackstart_model::playbook::{Action, Check};

use crate::{CliError, exit};

/// How long a host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// How one thing the plan needs was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Failed,
    /// Not checked in this release; neither passed nor failed.
    NotChecked,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "FAILED",
            Outcome::NotChecked => "not checked",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone)]
struct Finding {
    site: String,
    system: String,
    what: String,
    outcome: Outcome,
    detail: String,
}

/// What a system needs: commands to run, hosts to reach, workloads.
#[derive(Default)]
struct Needs {
    commands: BTreeSet<String>,
    hosts: BTreeSet<String>,
    workloads: BTreeSet<String>,
}

impl Needs {
    fn action(&mut self, a: &Action) {
        match a {
            Action::Exec(e) => {
                if let Some(first) = e.command.first() {
                    self.commands.insert(first.clone());
                }
            }
            Action::Http(h) => {
                self.hosts.insert(h.url.clone());
            }
            Action::Kubernetes(k) => {
                self.workloads.insert(format!("{:?}/{}", k.kind, k.name));
            }
            _ => {}
        }
    }

    fn check(&mut self, c: &Check) {
        match c {
            Check::Exec(e) => {
                if let Some(first) = e.command.first() {
                    self.commands.insert(first.clone());
                }
            }
            Check::Http(h) => {
                self.hosts.insert(h.url.clone());
            }
            Check::Tcp(t) => {
                self.hosts.insert(format!("tcp://{}", t.address));
            }
            Check::Kubernetes(w) => {
                self.workloads.insert(format!("{:?}/{}", w.kind, w.name));
            }
        }
    }
}

/// Where `program` would be found, as a step's `execvp` finds it with
/// `path` as its PATH: a path with a slash as it is, else each PATH entry.
fn find_program(program: &str, path: Option<&str>) -> Option<PathBuf> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    path?
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| executable(p))
}

/// `host:port` of an `http(s)://` or `tcp://` address, for resolving.
fn host_port(address: &str) -> Result<String, String> {
    if let Some(rest) = address.strip_prefix("tcp://") {
        return Ok(rest.to_owned());
    }
    let url = reqwest::Url::parse(address).map_err(|e| format!("not a URL: {e}"))?;
    let host = url
        .host_str()
        .ok_or_else(|| "the URL names no host".to_owned())?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "the URL names no port".to_owned())?;
    Ok(format!("{host}:{port}"))
}

async fn resolves(host_port: &str) -> Result<String, String> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(host_port)).await {
        Err(_) => Err(format!(
            "did not resolve within {}s",
            RESOLVE_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => Err(format!("does not resolve: {e}")),
        Ok(Ok(mut addrs)) => addrs
            .next()
            .map(|a| format!("resolves to {}", a.ip()))
            .ok_or_else(|| "resolves to no address".to_owned()),
    }
}

/// Every finding for `plan`, for the systems at `sites` (all when empty).
async fn findings(plan: &Plan, sites: &[String]) -> Vec<Finding> {
    let secrets = Secrets::from_env();
    let mut out = Vec::new();
    for name in &plan.env {
        let set = std::env::var_os(name).is_some();
        out.push(Finding {
            site: "-".into(),
            system: "-".into(),
            what: format!("secret ${{env:{name}}}"),
            outcome: if set { Outcome::Ok } else { Outcome::Failed },
            detail: if set {
                "set"
            } else {
                "not set: apply refuses to start"
            }
            .into(),
        });
    }
    let path = std::env::var("PATH").ok();
    for (_, sys) in plan.systems() {
        if !sites.is_empty() && !sites.contains(&sys.site) {
            continue;
        }
        let mut needs = Needs::default();
        for a in [Some(&sys.start), sys.stop.as_ref()].into_iter().flatten() {
            needs.action(a);
        }
        for c in sys.verify.iter().chain(&sys.health) {
            needs.check(c);
        }
        let finding = |what: String, outcome: Outcome, detail: String| Finding {
            site: sys.site.clone(),
            system: sys.id.clone(),
            what,
            outcome,
            detail,
        };
        for program in &needs.commands {
            let (outcome, detail) = match secrets.resolve(program) {
                Err(e) => (Outcome::Failed, e.to_string()),
                Ok(resolved) => match find_program(&resolved, path.as_deref()) {
                    Some(p) => (Outcome::Ok, format!("{}", p.display())),
                    None => (
                        Outcome::Failed,
                        "not found on this machine (exec steps run here in this release)".into(),
                    ),
                },
            };
            out.push(finding(format!("command {program}"), outcome, detail));
        }
        for address in &needs.hosts {
            let (outcome, detail) = match secrets
                .resolve(address)
                .map_err(|e| e.to_string())
                .and_then(|a| host_port(&a))
            {
                Err(e) => (Outcome::Failed, e),
                Ok(hp) => match resolves(&hp).await {
                    Ok(d) => (Outcome::Ok, d),
                    Err(d) => (Outcome::Failed, d),
                },
            };
            // The address may carry a token in its query: show the host only.
            let shown = host_port(address).unwrap_or_else(|_| "an address".into());
            out.push(finding(format!("host {shown}"), outcome, detail));
        }
        for w in &needs.workloads {
            out.push(finding(
                format!("kubernetes {w}"),
                Outcome::NotChecked,
                "reachability and permission to scale are not checked in this release".into(),
            ));
        }
    }
    out
}

fn render_text(findings: &[Finding]) -> String {
    use std::fmt::Write as _;
    let width = |f: fn(&Finding) -> usize| findings.iter().map(f).max().unwrap_or(0);
    let (ws, wy, ww) = (
        width(|f| f.site.len()).max(4),
        width(|f| f.system.len()).max(6),
        width(|f| f.what.len()).max(5),
    );
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<ws$}  {:<wy$}  {:<ww$}  result",
        "site", "system", "check"
    );
    for f in findings {
        let _ = writeln!(
            o,
            "{:<ws$}  {:<wy$}  {:<ww$}  {}  {}",
            f.site,
            f.system,
            f.what,
            f.outcome.as_str(),
            f.detail
        );
    }
    let count = |o: Outcome| findings.iter().filter(|f| f.outcome == o).count();
    let _ = writeln!(
        o,
        "{} checks: {} passed, {} failed, {} not checked",
        findings.len(),
        count(Outcome::Ok),
        count(Outcome::Failed),
        count(Outcome::NotChecked)
    );
    o
}

fn render_json(findings: &[Finding]) -> String {
    let rows: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "site": f.site,
                "system": f.system,
                "check": f.what,
                "result": match f.outcome {
                    Outcome::Ok => "ok",
                    Outcome::Failed => "failed",
                    Outcome::NotChecked => "not-checked",
                },
                "detail": f.detail,
            })
        })
        .collect();
    let failed = findings
        .iter()
        .filter(|f| f.outcome == Outcome::Failed)
        .count();
    format!(
        "{}\n",
        serde_json::json!({ "findings": rows, "failed": failed })
    )
}

/// `check FILE [--site SITE]...`: exit 0 when every check passed (what is
/// not checked aside), 1 otherwise.
pub fn check(plan: &Plan, sites: &[String], json: bool) -> Result<u8, CliError> {
    for site in sites {
        if !plan.systems().any(|(_, s)| &s.site == site) {
            return Err(CliError::Usage(format!(
                "the playbook has no system at site `{site}`"
            )));
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let findings = rt.block_on(findings(plan, sites));
    let text = if json {
        render_json(&findings)
    } else {
        render_text(&findings)
    };
    crate::write_output(None, &text)?;
    Ok(if findings.iter().any(|f| f.outcome == Outcome::Failed) {
        exit::FAILED
    } else {
        exit::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        assert!(find_program("sh", Some("/nonexistent:/bin:/usr/bin")).is_some());
        assert!(find_program("sh", Some("/nonexistent")).is_none());
        assert!(find_program("/bin/sh", None).is_some());
        let plain = std::env::temp_dir().join(format!("blackstart-check-{}", std::process::id()));
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let found = find_program(plain.to_str().unwrap(), None);
        let _ = std::fs::remove_file(&plain);
        assert!(
            found.is_none(),
            "a file without an execute bit is not a program"
        );
    }

    #[test]
    fn addresses_give_the_host_and_port_to_resolve() {
        assert_eq!(
            host_port("https://dealers.example.com/healthz?token=x").unwrap(),
            "dealers.example.com:443"
        );
        assert_eq!(
            host_port("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(host_port("tcp://db.local:5432").unwrap(), "db.local:5432");
        assert!(host_port("not a url").is_err());
    }
}
