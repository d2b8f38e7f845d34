//! `blackstart check`: the preflight, before a restart begins.
//!
//! During an incident the worst time to learn that a token is not set, a
//! command is not installed, a plant's ssh host shows another key or a
//! kube context has expired is half-way through the second stage. `check`
//! looks at what the plan needs and changes nothing: every `${env:}` set;
//! every site connection up (ssh with the pinned host key, the kube
//! context loadable); every exec command present where it will run (on
//! this machine, or on the site's host over ssh); every workload present
//! with `get` and `patch` allowed (SelfSubjectAccessReview, as `kubectl
//! auth can-i` asks); every host an http or tcp step or probe names
//! resolvable. It never prints a secret's value, only whether it is set.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use blackstart_engine::secrets::Secrets;
use blackstart_engine::step::kubernetes::{self, Cluster};
use blackstart_engine::step::{StepContext, ssh};
use blackstart_model::Plan;
use blackstart_model::playbook::{Action, Check, Workload};

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
    workloads: Vec<Workload>,
}

impl Needs {
    fn action(&mut self, a: &Action) {
        match a {
            Action::Exec(e) => {
                if let Some(first) = e.command.first() {
                    self.commands.insert(first.to_string());
                }
            }
            Action::Http(h) => {
                self.hosts.insert(h.url.clone());
            }
            Action::Kubernetes(k) => self.workload(k.workload()),
            _ => {}
        }
    }

    fn workload(&mut self, w: Workload) {
        if !self.workloads.contains(&w) {
            self.workloads.push(w);
        }
    }

    fn check(&mut self, c: &Check) {
        match c {
            Check::Exec(e) => {
                if let Some(first) = e.command.first() {
                    self.commands.insert(first.to_string());
                }
            }
            Check::Http(h) => {
                self.hosts.insert(h.url.clone());
            }
            Check::Tcp(t) => {
                self.hosts.insert(format!("tcp://{}", t.address));
            }
            Check::Kubernetes(w) => self.workload(w.clone()),
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

/// How a site is reached, as `check` found it.
struct SiteLinks {
    /// Over ssh: the connection, or why it is down.
    ssh: Option<Result<Arc<ssh::Site>, String>>,
    /// The cluster its kubernetes steps go to, or why there is none.
    cluster: Option<Result<Cluster, String>>,
    /// Its kubeconfig is in a Secret only the operator reads.
    operator_only: bool,
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
    let cx = match StepContext::new(secrets.clone(), RESOLVE_TIMEOUT * 5) {
        Ok(cx) => cx,
        Err(e) => {
            out.push(Finding {
                site: "-".into(),
                system: "-".into(),
                what: "http client".into(),
                outcome: Outcome::Failed,
                detail: e,
            });
            return out;
        }
    };
    let links = site_links(plan, sites, &cx, &mut out).await;
    let path = std::env::var("PATH").ok();
    for (_, sys) in plan.systems() {
        if !sites.is_empty() && !sites.iter().any(|s| s == sys.site) {
            continue;
        }
        let link = links.get(sys.site.as_str());
        let mut needs = Needs::default();
        for a in [Some(&sys.start), sys.stop.as_ref()].into_iter().flatten() {
            needs.action(a);
        }
        for c in sys.verify.iter().chain(&sys.health) {
            needs.check(c);
        }
        let finding = |what: String, (outcome, detail): (Outcome, String)| Finding {
            site: sys.site.to_string(),
            system: sys.id.to_string(),
            what,
            outcome,
            detail,
        };
        for program in &needs.commands {
            let found = match (secrets.resolve(program), link.and_then(|l| l.ssh.as_ref())) {
                (Err(e), _) => (Outcome::Failed, e.to_string()),
                (Ok(resolved), None) => match find_program(&resolved, path.as_deref()) {
                    Some(p) => (Outcome::Ok, format!("{}", p.display())),
                    None => (Outcome::Failed, "not found on this machine".into()),
                },
                (Ok(_), Some(Err(_))) => (
                    Outcome::Failed,
                    "not looked for: the site's ssh connection is down".into(),
                ),
                (Ok(resolved), Some(Ok(site))) => remote_program(site, &cx, &resolved).await,
            };
            out.push(finding(format!("command {program}"), found));
        }
        for address in &needs.hosts {
            let found = match secrets
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
            out.push(finding(format!("host {shown}"), found));
        }
        for w in &needs.workloads {
            let found = match link.and_then(|l| l.cluster.as_ref()) {
                _ if link.is_some_and(|l| l.operator_only) => (
                    Outcome::NotChecked,
                    "the operator reaches it through the site's Secret".into(),
                ),
                None => (Outcome::Failed, "no cluster was looked for".into()),
                Some(Err(_)) => (
                    Outcome::Failed,
                    "not looked for: no cluster to ask (see the site's row)".into(),
                ),
                Some(Ok(cluster)) => match kubernetes::preflight(cluster, w).await {
                    Ok(d) => (Outcome::Ok, d),
                    Err(d) => (Outcome::Failed, d),
                },
            };
            out.push(finding(format!("kubernetes {w}"), found));
        }
    }
    out
}

/// Connects to each site in scope as its steps will be reached, with a row
/// for each connection: ssh (the pinned host key is part of logging in) and
/// the cluster of its kubernetes steps.
async fn site_links<'p>(
    plan: &'p Plan,
    sites: &[String],
    cx: &StepContext,
    out: &mut Vec<Finding>,
) -> HashMap<&'p str, SiteLinks> {
    let ssh_sites = ssh::Sites::new(&plan.connections);
    let (default_needed, kube_sites) = kubernetes::needs(plan);
    let default = if default_needed {
        Some(crate::cluster::default_cluster().await)
    } else {
        None
    };
    let mut links = HashMap::new();
    for (_, sys) in plan.systems() {
        if links.contains_key(sys.site.as_str())
            || (!sites.is_empty() && !sites.iter().any(|s| s == sys.site))
        {
            continue;
        }
        let row = |what: String, outcome: Outcome, detail: String| Finding {
            site: sys.site.to_string(),
            system: "-".into(),
            what,
            outcome,
            detail,
        };
        let ssh = match ssh_sites.get(&sys.site) {
            None => None,
            Some(site) => {
                let what = format!("ssh {}", site.target());
                Some(match site.script(cx, "exit 0\n").await {
                    Ok((true, _)) => {
                        out.push(row(
                            what,
                            Outcome::Ok,
                            "connected; host key as pinned".into(),
                        ));
                        Ok(site)
                    }
                    Ok((false, said)) => {
                        let e = format!("connected, but `sh` failed there: {}", said.trim());
                        out.push(row(what, Outcome::Failed, e.clone()));
                        Err(e)
                    }
                    Err(e) => {
                        out.push(row(what, Outcome::Failed, e.clone()));
                        Err(e)
                    }
                })
            }
        };
        let kube = plan
            .connections
            .get(sys.site.as_str())
            .and_then(|c| c.kubernetes.as_ref());
        let operator_only = kube.is_some_and(|k| k.context.is_none());
        let cluster = if operator_only {
            let secret = kube.and_then(|k| k.secret_ref.clone()).unwrap_or_default();
            out.push(row(
                format!("kube secret {secret}"),
                Outcome::NotChecked,
                "only the operator reads it (in its own namespace); give the site a `context` to check it from here".into(),
            ));
            None
        } else if kube_sites.iter().any(|s| s == sys.site) {
            let context = kube.and_then(|k| k.context.clone()).unwrap_or_default();
            let found = crate::cluster::site_cluster(plan, &sys.site).await;
            out.push(match &found {
                Ok(c) => row(
                    format!("kube context {context}"),
                    Outcome::Ok,
                    format!("loaded; namespace {}", c.namespace),
                ),
                Err(e) => row(
                    format!("kube context {context}"),
                    Outcome::Failed,
                    e.clone(),
                ),
            });
            Some(found)
        } else {
            default.clone()
        };
        links.insert(
            sys.site.as_str(),
            SiteLinks {
                ssh,
                cluster,
                operator_only,
            },
        );
    }
    if let Some(Err(e)) = &default {
        out.push(Finding {
            site: "-".into(),
            system: "-".into(),
            what: "kube current context".into(),
            outcome: Outcome::Failed,
            detail: e.clone(),
        });
    }
    links
}

/// Whether `program` is found on the site's host, as its login finds it.
async fn remote_program(site: &ssh::Site, cx: &StepContext, program: &str) -> (Outcome, String) {
    let script = format!("command -v -- {} || exit 1\n", ssh::quote(program));
    match site.script(cx, &script).await {
        Ok((true, found)) => (Outcome::Ok, format!("{} on {}", found.trim(), site.id())),
        Ok((false, _)) => (Outcome::Failed, format!("not found on {}", site.id())),
        Err(e) => (Outcome::Failed, e),
    }
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
        if !plan.systems().any(|(_, s)| s.site == site) {
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
