//! The room's HTML, rendered on the server from [`RunView`].
//!
//! One renderer serves the live page (whose script only swaps in a fresh
//! copy of the same HTML when the journal moves) and the auditor's report
//! (the same sections, with the journal's verification, in one file that
//! opens offline). Rendering here, not in a script, keeps one source of
//! what the room reads and leaves the browser nothing to compute.

use std::fmt::Write as _;

use super::svg;
use super::{RunView, StageView};

/// The page's style, served at `/assets/room.css` and written inline into
/// a report.
pub const CSS: &str = include_str!("room.css");

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut o = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A phase as a coloured badge that also says its name.
fn badge(phase: impl std::fmt::Debug) -> String {
    format!("<span class=\"badge ph-{phase:?}\">{phase:?}</span>")
}

fn cmd(command: &str) -> String {
    format!("<code class=\"cmd\">{}</code>", esc(command))
}

fn secs(t: Option<f64>) -> String {
    t.map(svg::clock).unwrap_or_else(|| "–".to_owned())
}

/// The run's sections: what the live page refreshes and the report holds.
pub fn body(view: &RunView) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<header><h1>Run <span id=\"run-id\">{run}</span> {phase}</h1><p>Playbook <b>{pb}</b> <code>{hash}</code>{drill}. Started {started}; last event {seq} at {updated}. {elapsed} elapsed, estimate {estimate}.</p>",
        run = esc(&view.run),
        phase = badge(view.phase),
        pb = esc(&view.playbook),
        hash = esc(&view.playbook_hash),
        drill = if view.drill { " (a drill)" } else { "" },
        started = esc(&view.started_at),
        seq = view.head.seq,
        updated = esc(&view.updated_at),
        elapsed = svg::clock(view.elapsed),
        estimate = svg::clock(view.estimate),
    );
    if let Some(reason) = &view.reason {
        let _ = write!(o, "<p class=\"reason\">{}</p>", esc(reason));
    }
    if view.interrupted {
        let _ = write!(
            o,
            "<p class=\"alert\">No process drives this run: it was interrupted (killed, or its machine went down). {} carries on.</p>",
            cmd(&format!("blackstart resume {}", view.run))
        );
    }
    o.push_str("</header>");
    waiting(&mut o, view);
    failures(&mut o, view);
    stages(&mut o, view);
    o.push_str("<section id=\"graph\"><h2>Dependency graph</h2>");
    o.push_str(&svg::graph(view));
    o.push_str("</section><section id=\"timeline\"><h2>Timeline against the estimate</h2><p class=\"note\">Hollow: the plan's estimate. Filled: what happened, coloured and titled by phase.</p>");
    o.push_str(&svg::timeline(view));
    o.push_str("</section>");
    sites(&mut o, view);
    decisions(&mut o, view);
    o
}

/// Gates and systems waiting for people, with the command for each.
fn waiting(o: &mut String, view: &RunView) {
    let gates: Vec<&StageView> = view.stages.iter().filter(|s| s.waiting.is_some()).collect();
    let steps: Vec<_> = view
        .systems
        .iter()
        .filter(|s| s.waiting.is_some())
        .collect();
    if gates.is_empty() && steps.is_empty() {
        return;
    }
    o.push_str("<section id=\"waiting\"><h2>Waiting for people</h2>");
    for st in gates {
        let Some(needs) = &st.waiting else { continue };
        let _ = write!(
            o,
            "<div class=\"gate\" data-stage=\"{0}\"><h3>Gate of stage {0}</h3><ul>",
            esc(&st.name)
        );
        if let (Some(soak), Some(left)) = (needs.soak, needs.soak_left) {
            let _ = write!(
                o,
                "<li>soak of {}: {}</li>",
                svg::clock(soak),
                if left <= 0.0 {
                    "done".to_owned()
                } else {
                    format!("{} left", svg::clock(left))
                }
            );
        }
        for r in &needs.roles {
            let who = if r.members.is_empty() {
                "anyone".to_owned()
            } else {
                r.members
                    .iter()
                    .map(|m| {
                        if m.signs {
                            format!("{} (signs)", esc(&m.name))
                        } else {
                            esc(&m.name)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = write!(
                o,
                "<li class=\"role\">needs an approval as <b>{role}</b>, by {who}: {command}</li>",
                role = esc(&r.role),
                command = cmd(&r.command),
            );
        }
        if needs.roles.is_empty() && needs.soak_left.is_some_and(|l| l > 0.0) {
            o.push_str("<li>no approval needed: the run goes on when the soak ends</li>");
        }
        o.push_str("</ul></div>");
    }
    for s in steps {
        let Some(w) = &s.waiting else { continue };
        let _ = write!(
            o,
            "<div class=\"step\" data-system=\"{id}\"><h3>System {id} ({site})</h3><p>{what}{role}</p>{instruction}<p>When it is done: {command}</p></div>",
            id = esc(&s.id),
            site = esc(&s.site),
            what = match w.waiting_for {
                blackstart_engine::WaitingFor::ManualStep => "waits for a manual step",
                blackstart_engine::WaitingFor::UnknownOutcome =>
                    "waits for a person: a crash cut its step short and no health check can tell how it ended",
            },
            role = w
                .role
                .as_deref()
                .map(|r| format!(", confirmed by a member of {}", esc(r)))
                .unwrap_or_default(),
            instruction = w
                .instruction
                .as_deref()
                .map(|i| format!("<blockquote class=\"instruction\">{}</blockquote>", esc(i)))
                .unwrap_or_default(),
            command = cmd(&w.command),
        );
    }
    o.push_str("</section>");
}

fn failures(o: &mut String, view: &RunView) {
    if view.failures.is_empty() && view.rollback.is_none() {
        return;
    }
    o.push_str("<section id=\"failures\"><h2>Failures and rollbacks</h2>");
    for f in &view.failures {
        let _ = write!(
            o,
            "<div class=\"failure\"><h3>{id} failed <small>(site {site}, stage {stage}, {at})</small></h3><p>{reason}</p>",
            id = esc(&f.system),
            site = esc(&f.site),
            stage = esc(&f.stage),
            at = esc(&f.at),
            reason = esc(&f.reason),
        );
        if let Some(out) = &f.output {
            let _ = write!(
                o,
                "<p>Last output{}:</p><pre>{}</pre>",
                f.exit_code
                    .map(|c| format!(" (exit code {c})"))
                    .unwrap_or_default(),
                esc(out)
            );
        }
        o.push_str("</div>");
    }
    if let Some(rb) = &view.rollback {
        let _ = write!(
            o,
            "<div class=\"rollback\"><h3>Rollback{stage}{by}</h3><p>{reason}</p><p>Stops, in order: {systems}</p></div>",
            stage = rb
                .stage
                .as_deref()
                .map(|s| format!(" of stage {}", esc(s)))
                .unwrap_or_else(|| " of the run".to_owned()),
            by = rb
                .by
                .as_deref()
                .map(|b| format!(", asked by {}", esc(b)))
                .unwrap_or_default(),
            reason = esc(&rb.reason),
            systems = esc(&rb.systems.join(", ")),
        );
    }
    o.push_str("</section>");
}

/// Stages with their estimate against what they took, and who approved.
fn stages(o: &mut String, view: &RunView) {
    o.push_str("<section id=\"stages\"><h2>Stages</h2><table><thead><tr><th>stage</th><th>phase</th><th>systems</th><th>estimate</th><th>took</th><th>approved by</th></tr></thead><tbody>");
    for st in &view.stages {
        let members: Vec<_> = view.systems.iter().filter(|s| s.stage == st.name).collect();
        let healthy = members
            .iter()
            .filter(|s| s.phase == blackstart_engine::SystemPhase::Healthy)
            .count();
        let took = match (st.began, st.ended) {
            (Some(b), Some(e)) => svg::clock(e - b),
            (Some(b), None) => format!("{} so far", svg::clock(view.elapsed - b)),
            _ => "–".to_owned(),
        };
        let approvals: Vec<String> = st
            .approvals
            .iter()
            .map(|a| {
                format!(
                    "{}{}{}",
                    esc(&a.by),
                    a.role
                        .as_deref()
                        .map(|r| format!(" as {}", esc(r)))
                        .unwrap_or_default(),
                    if a.key.is_some() { " (signed)" } else { "" }
                )
            })
            .collect();
        let _ = write!(
            o,
            "<tr data-stage=\"{name}\"><td>{name}</td><td>{phase}</td><td>{healthy} of {n} Healthy</td><td>{est}</td><td>{took}</td><td>{approvals}{denied}</td></tr>",
            name = esc(&st.name),
            phase = badge(st.phase),
            n = members.len(),
            est = svg::clock(st.estimated_duration),
            approvals = approvals.join(", "),
            denied = st
                .denied
                .as_ref()
                .map(|d| format!(" denied by {}: {}", esc(&d.by), esc(&d.reason)))
                .unwrap_or_default(),
        );
    }
    o.push_str("</tbody></table></section>");
}

/// Systems grouped by site, each with its phase as a word and a colour.
fn sites(o: &mut String, view: &RunView) {
    o.push_str("<section id=\"sites\"><h2>Systems by site</h2>");
    let mut by_site: std::collections::HashMap<&str, Vec<&super::SystemView>> =
        std::collections::HashMap::new();
    for s in &view.systems {
        by_site.entry(s.site.as_str()).or_default().push(s);
    }
    for site in &view.sites {
        let members = by_site.get(site.id.as_str()).map_or(&[][..], Vec::as_slice);
        let healthy = members
            .iter()
            .filter(|s| s.phase == blackstart_engine::SystemPhase::Healthy)
            .count();
        let _ = write!(
            o,
            "<details class=\"site\" data-site=\"{id}\" open><summary><b>{name}</b> <code>{id}</code>: {healthy} of {n} Healthy{held}</summary><table><thead><tr><th>system</th><th>stage</th><th>phase</th><th>began</th><th>ended</th><th>note</th></tr></thead><tbody>",
            id = esc(&site.id),
            name = esc(&site.name),
            n = members.len(),
            held = site
                .held
                .as_deref()
                .map(|h| format!(" <span class=\"alert\">{}</span>", esc(h)))
                .unwrap_or_default(),
        );
        for s in members {
            let _ = write!(
                o,
                "<tr class=\"system\" data-system=\"{id}\" data-phase=\"{phase:?}\"><td>{id}{name}</td><td>{stage}</td><td>{badge}</td><td>{began}</td><td>{ended}</td><td>{reason}</td></tr>",
                id = esc(&s.id),
                name = s
                    .name
                    .as_deref()
                    .map(|n| format!(" <small>{}</small>", esc(n)))
                    .unwrap_or_default(),
                stage = esc(&s.stage),
                phase = s.phase,
                badge = badge(s.phase),
                began = secs(s.began),
                ended = secs(s.ended),
                reason = esc(s.reason.as_deref().unwrap_or("")),
            );
        }
        o.push_str("</tbody></table></details>");
    }
    o.push_str("</section>");
}

/// Who decided what, when, and whether it was signed.
fn decisions(o: &mut String, view: &RunView) {
    o.push_str("<section id=\"decisions\"><h2>Decisions</h2>");
    if view.decisions.is_empty() {
        o.push_str(
            "<p class=\"note\">No person has decided anything in this run yet.</p></section>",
        );
        return;
    }
    o.push_str("<table><thead><tr><th>#</th><th>at</th><th>decision</th><th>of</th><th>by</th><th>role</th><th>signed</th><th>reason</th></tr></thead><tbody>");
    for d in &view.decisions {
        let _ = write!(
            o,
            "<tr class=\"decision\"><td>{seq}</td><td>{at}</td><td>{kind}</td><td>{subject}</td><td>{by}</td><td>{role}</td><td>{signed}</td><td>{reason}</td></tr>",
            seq = d.seq,
            at = esc(&d.at),
            kind = esc(&d.kind),
            subject = esc(&d.subject),
            by = esc(&d.by),
            role = esc(d.role.as_deref().unwrap_or("")),
            signed = match &d.key {
                Some(k) => format!("yes, <code>{}</code>", esc(k)),
                None => "no".to_owned(),
            },
            reason = esc(d.reason.as_deref().unwrap_or("")),
        );
    }
    o.push_str("</tbody></table></section>");
}

/// The live page: the body, and a script that keeps it current.
pub fn page(view: &RunView) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{run}: {phase:?} — blackstart</title><link rel=\"stylesheet\" href=\"/assets/room.css\"><script src=\"/assets/room.js\" defer></script></head><body data-run=\"{run}\" data-seq=\"{seq}\"><nav><a href=\"/\">all runs</a> <span id=\"live\" class=\"note\">live</span></nav><main id=\"run\">{body}</main></body></html>",
        run = esc(&view.run),
        phase = view.phase,
        seq = view.head.seq,
        body = body(view),
    )
}

/// One line of the runs list.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunLine {
    pub run: String,
    pub playbook: String,
    pub phase: String,
    pub started_at: String,
    pub updated_at: String,
    pub systems: usize,
    pub healthy: usize,
    /// People are awaited: a gate or a manual step.
    pub waiting: bool,
}

/// The page listing runs, newest first.
pub fn runs_page(runs: &[RunLine], source: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Runs — blackstart</title><link rel=\"stylesheet\" href=\"/assets/room.css\"><script src=\"/assets/room.js\" defer></script></head><body data-list=\"1\"><main>{}</main></body></html>",
        runs_list(runs, source)
    )
}

/// The list itself: what the list page refreshes.
pub fn runs_list(runs: &[RunLine], source: &str) -> String {
    let mut o = format!("<h1>Runs</h1><p class=\"note\">{}</p>", esc(source));
    if runs.is_empty() {
        o.push_str("<p>No runs yet.</p>");
    } else {
        o.push_str("<table><thead><tr><th>run</th><th>playbook</th><th>phase</th><th>systems</th><th>started</th><th>last event</th></tr></thead><tbody>");
        for r in runs {
            let _ = write!(
                o,
                "<tr class=\"run\"><td><a href=\"/runs/{href}\">{run}</a>{waiting}</td><td>{pb}</td><td><span class=\"badge ph-{phase}\">{phase}</span></td><td>{healthy} of {n} Healthy</td><td>{started}</td><td>{updated}</td></tr>",
                href = esc(&r.run),
                run = esc(&r.run),
                waiting = if r.waiting {
                    " <span class=\"alert\">waits for people</span>"
                } else {
                    ""
                },
                pb = esc(&r.playbook),
                phase = esc(&r.phase),
                healthy = r.healthy,
                n = r.systems,
                started = esc(&r.started_at),
                updated = esc(&r.updated_at),
            );
        }
        o.push_str("</tbody></table>");
    }
    o
}

/// The auditor's report: one self-contained file, no script, no link out.
pub fn report(view: &RunView, verification: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Restart audit: {run}</title><style>{css}</style></head><body class=\"report\"><main><p class=\"note\">Restart audit, written by blackstart {version}. Every figure is read from the run's journal.</p><section id=\"verification\"><h2>The journal</h2><p>{verification}</p><p>Head: event {seq}, <code>{hash}</code>. Keep it: <code>blackstart audit {run} --verify --head {hash}</code> proves later that the journal still holds this record.</p></section>{body}</main></body></html>",
        run = esc(&view.run),
        css = CSS,
        version = env!("CARGO_PKG_VERSION"),
        verification = esc(verification),
        seq = view.head.seq,
        hash = esc(&view.head.hash),
        body = body(view),
    )
}
