//! Reading a run back: `status`, and `audit` (the timeline for the
//! post-incident review, or the check of its chain), in the engine's one
//! text for each event (`Event::describe`).

use std::path::Path;

use blackstart_engine::journal::{self, Record};
use blackstart_engine::{Event, JournalError, RunDir, SystemPhase};

use super::*;
use crate::args::AuditFormat;
use crate::{CliError, exit};

/// `status RUN`: where the run stands, read without taking its lock; what
/// each waiting gate and system needs, and who may give it; and whether a
/// run that should be moving has a process driving it at all.
pub fn status(state_dir: &Path, run: &str, json: bool) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    let scan = journal::read_scan(&dir)?;
    if let Some(rest) = &scan.rest {
        note(&format!(
            "the journal goes on past its valid chain (line {}: {}); this is the state up to event {}",
            rest.line,
            rest.reason,
            scan.records.len()
        ));
    }
    let records = scan.records;
    let state = folded(&records)?;
    let orphaned = interrupted(&state, journal::driven(&dir));
    show_status(run, &records, orphaned, json)
}

/// Where a run stands, from its journal (a file's, or a RestartRun's);
/// `orphaned` when no process drives a run that should be moving.
pub fn show_status(
    run: &str,
    records: &[Record],
    orphaned: bool,
    json: bool,
) -> Result<u8, CliError> {
    let state = folded(records)?;
    let plan = journal_plan(records)?;
    if json {
        let mut value = serde_json::to_value(&state).expect("state always serializes");
        if orphaned {
            // No process drives a run that should be moving.
            value["interrupted"] = serde_json::Value::Bool(true);
        }
        let mut text = serde_json::to_string_pretty(&value).expect("JSON always serializes");
        text.push('\n');
        crate::write_output(None, &text)?;
        return Ok(exit::SUCCESS);
    }
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {}  ({} {})",
        state.run, state.playbook, state.playbook_hash
    );
    let _ = writeln!(
        out,
        "phase: {:?}{}",
        state.phase,
        state
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    if orphaned {
        let _ = writeln!(
            out,
            "  but no process drives it: it was interrupted (killed, or its machine went down); `blackstart resume {run}` carries on"
        );
    }
    if !state.held.is_empty() {
        // Every site is Up but those a failure held (failureDomain: site).
        let mut sites: Vec<&str> = state.systems.iter().map(|s| s.site.as_str()).collect();
        sites.sort_unstable();
        sites.dedup();
        let _ = writeln!(out, "sites:");
        for site in sites {
            match state.held.iter().find(|h| h.site == site) {
                Some(h) => {
                    let _ = writeln!(
                        out,
                        "  {site:<28} Held in stage {}: {}  (`blackstart retry {run} --site {site} --by NAME` starts it again)",
                        h.stage, h.reason
                    );
                }
                None => {
                    let _ = writeln!(out, "  {site:<28} Up");
                }
            }
        }
    }
    for stage in &state.stages {
        let approvals: Vec<String> = stage
            .approvals
            .iter()
            .map(|a| {
                format!(
                    "{}{}",
                    a.by,
                    a.role
                        .as_deref()
                        .map(|r| format!(" as {r}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        let approved = if approvals.is_empty() {
            String::new()
        } else {
            format!("  approved by {}", approvals.join(", "))
        };
        let _ = writeln!(out, "stage {}: {:?}{approved}", stage.name, stage.phase);
        if stage.phase == blackstart_engine::StagePhase::Gate
            && let Some(planned) = plan.stages.iter().find(|p| p.name == stage.name)
        {
            let soak = planned.gate.soak.map(|s| s.to_string());
            let needs = crate::view::gate_needs(plan, planned, stage, records, run);
            for line in needs.lines(soak.as_deref()) {
                let _ = writeln!(out, "  {line}");
            }
        }
        for sys in state.systems.iter().filter(|s| s.stage == stage.name) {
            let reason = sys
                .reason
                .as_deref()
                .map(|r| format!("  ({r})"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {:<28} {:?}{reason}", sys.id, sys.phase);
            if sys.waiting_for.is_some() {
                let _ = writeln!(
                    out,
                    "  {:<28} waits for `blackstart confirm {run} {} --by NAME`",
                    "", sys.id
                );
            }
        }
    }
    crate::write_output(None, &out)?;
    Ok(exit::SUCCESS)
}

/// `audit RUN [--verify [--head H]]`: the timeline for the post-incident
/// review, the auditor's report, or the check of its chain.
pub fn audit(
    state_dir: &Path,
    run: &str,
    verify: Option<Option<&str>>,
    format: AuditFormat,
) -> Result<u8, CliError> {
    let dir = run_dir(state_dir, run)?;
    if let Some(head) = verify {
        return verify_journal(&dir, head);
    }
    if matches!(format, AuditFormat::Html) {
        let scan = journal::read_scan(&dir)?;
        let rest = scan.rest.as_ref().map(|rest| {
            format!(
                "the chain is intact up to event {}, then line {} ({} bytes): {}",
                scan.records.last().map_or(0, |r| r.seq),
                rest.line,
                rest.bytes,
                rest.reason
            )
        });
        let state = folded(&scan.records)?;
        return audit_html(
            &scan.records,
            rest,
            interrupted(&state, journal::driven(&dir)),
        );
    }
    let records = journal::read(&dir)?;
    show_audit(&records, format)
}

/// The timeline of a journal (a file's, or a RestartRun's), or its report.
pub fn show_audit(records: &[Record], format: AuditFormat) -> Result<u8, CliError> {
    let text = match format {
        AuditFormat::Markdown => audit_markdown(records)?,
        AuditFormat::Text => audit_text(records),
        AuditFormat::Html => {
            let broken = Record::verify_chain(records).err();
            return audit_html(records, broken, false);
        }
    };
    crate::write_output(None, &text)?;
    Ok(exit::SUCCESS)
}

/// `audit --verify`: intact means every record matches its hash, each
/// follows the one before, the journal is not empty and ends in a complete
/// record, and (with `--head`) the kept head is in the chain.
fn verify_journal(dir: &RunDir, head: Option<&str>) -> Result<u8, CliError> {
    let path = dir.journal();
    let failed = |why: String| {
        note(&format!("{}: verification failed: {why}", path.display()));
        Ok(exit::FAILED)
    };
    let scan = match journal::read_scan(dir) {
        Err(JournalError::Corrupt { line, reason, .. }) => {
            return failed(format!("line {line}: {reason}"));
        }
        other => other?,
    };
    let Some(last) = scan.records.last() else {
        return failed("the journal is empty: it holds no record at all".to_owned());
    };
    if let Some(rest) = &scan.rest {
        return failed(format!(
            "the chain is intact up to event {}, then line {} ({} bytes): {}; `resume` or `rollback` sets those bytes aside beside the journal and goes on from event {}",
            last.seq, rest.line, rest.bytes, rest.reason, last.seq
        ));
    }
    for r in &scan.records {
        if let Event::SetAside {
            file,
            bytes,
            reason,
        } = &r.event
        {
            note(&format!(
                "event {}: {bytes} bytes after the valid chain were set aside into {} ({reason})",
                r.seq,
                dir.dir.join(file).display()
            ));
        }
    }
    // The scan checked every record against its hash and the one before.
    verify_checked(&path.display().to_string(), &scan.records, head)
}

/// `audit --verify` of records read from elsewhere than a file (a
/// RestartRun's segments): the chain checked first, then as a file's.
pub fn verify_records(label: &str, records: &[Record], head: Option<&str>) -> Result<u8, CliError> {
    if let Err(why) = Record::verify_chain(records) {
        note(&format!("{label}: verification failed: {why}"));
        return Ok(exit::FAILED);
    }
    verify_checked(label, records, head)
}

/// The rest of `audit --verify`, for records whose chain is checked: not
/// empty, the kept head in it, every decision's signature good.
fn verify_checked(label: &str, records: &[Record], head: Option<&str>) -> Result<u8, CliError> {
    match verdict(records, head) {
        Err(why) => {
            note(&format!("{label}: verification failed: {why}"));
            Ok(exit::FAILED)
        }
        Ok(v) => {
            if let Some(decisions) = &v.decisions {
                note(decisions);
            }
            crate::write_output(
                None,
                &format!(
                    "{label}: {}\nhead: {} {}\n",
                    v.summary, v.head_seq, v.head_hash
                ),
            )?;
            Ok(exit::SUCCESS)
        }
    }
}

/// What `audit --verify` found in records whose chain is checked.
pub struct Verdict {
    /// "N events, hash chain intact[, head H in it]"
    pub summary: String,
    /// How many decisions were signed and verified, when there were any.
    pub decisions: Option<String>,
    pub head_seq: u64,
    pub head_hash: String,
}

/// Checks records whose chain is checked: not empty, the kept head in it,
/// every decision's signature good against the roles of the plan the run
/// was started with; or says why not.
pub fn verdict(records: &[Record], head: Option<&str>) -> Result<Verdict, String> {
    let Some(last) = records.last() else {
        return Err("the journal is empty: it holds no record at all".to_owned());
    };
    if let Some(head) = head {
        let head = head.trim().trim_start_matches("sha256:");
        if !records.iter().any(|r| r.hash == head) {
            return Err(format!(
                "the head {head} is not in the chain: the journal was rewritten or cut after that head was kept"
            ));
        }
    }
    let mut decisions = None;
    // Every decision's signature, again, and a decision owed a signature
    // that has none.
    if let Some(Event::RunStarted {
        plan,
        drill,
        require_signatures,
        run,
        ..
    }) = records.first().map(|r| &r.event)
    {
        // A drill that rehearses the keys is held to them, as a real run.
        let drill = &(*drill && !*require_signatures);
        let (mut signed, mut unsigned) = (0, 0);
        let mut revoked: Vec<String> = Vec::new();
        for r in records {
            blackstart_engine::decision::recheck(plan, run, *drill, &revoked, &r.event)
                .map_err(|why| format!("event {}: {why}", r.seq))?;
            if let Event::KeyRevoked { key, .. } = &r.event {
                revoked.push(key.clone());
            }
            if let Some(d) = blackstart_engine::decision::recorded(&r.event) {
                if d.proof.signed() {
                    signed += 1;
                } else {
                    unsigned += 1;
                }
            }
        }
        if signed + unsigned > 0 {
            decisions = Some(format!(
                "decisions: {signed} signed and verified against the plan's roles, {unsigned} unsigned{}",
                if *drill { " (a drill)" } else { "" }
            ));
        }
    }
    Ok(Verdict {
        summary: format!(
            "{} events, hash chain intact{}",
            records.len(),
            head.map(|h| format!(", head {h} in it"))
                .unwrap_or_default()
        ),
        decisions,
        head_seq: last.seq,
        head_hash: last.hash.clone(),
    })
}

/// `audit RUN --format html`: the auditor's report of a journal, with
/// what its verification found (`rest`: why a file journal's chain stops
/// short, when it does).
pub fn audit_html(
    records: &[Record],
    rest: Option<String>,
    interrupted: bool,
) -> Result<u8, CliError> {
    let state = folded(records)?;
    let plan = journal_plan(records)?;
    let view = crate::view::build(records, &state, plan, interrupted);
    let verification = match (rest, verdict(records, None)) {
        (Some(rest), _) => format!("Verification FAILED: {rest}"),
        (None, Err(why)) => format!("Verification FAILED: {why}"),
        (None, Ok(v)) => format!(
            "Verified: {}.{}",
            v.summary,
            v.decisions.map(|d| format!(" {d}.")).unwrap_or_default()
        ),
    };
    crate::write_output(None, &crate::view::html::report(&view, &verification))?;
    Ok(exit::SUCCESS)
}

fn audit_text(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| format!("{:>5}  {}  {}\n", r.seq, r.at, r.event.describe()))
        .collect()
}

fn audit_markdown(records: &[Record]) -> Result<String, CliError> {
    use std::fmt::Write as _;
    let state = folded(records)?;
    let mut o = format!("## Restart audit: run `{}`\n\n", state.run);
    let _ = writeln!(
        o,
        "Playbook `{}` ({}), ended **{:?}**.\n",
        state.playbook, state.playbook_hash, state.phase
    );
    // When each system began starting and became healthy, for the chart.
    let mut spans: Vec<(String, String, Option<String>)> = Vec::new();
    for r in records {
        if let Event::System { system, phase, .. } = &r.event {
            match phase {
                SystemPhase::Verifying | SystemPhase::Starting
                    if !spans.iter().any(|(s, _, _)| s == system) =>
                {
                    spans.push((system.clone(), r.at.clone(), None));
                }
                SystemPhase::Healthy => {
                    if let Some(span) = spans.iter_mut().find(|(s, _, _)| s == system) {
                        span.2 = Some(r.at.clone());
                    }
                }
                _ => {}
            }
        }
    }
    if !spans.is_empty() {
        o.push_str("```mermaid\ngantt\n  title Starts and health\n  dateFormat YYYY-MM-DDTHH:mm:ss.SSSZ\n  axisFormat %H:%M:%S\n");
        for (system, from, to) in &spans {
            let end = to.clone().unwrap_or_else(|| from.clone());
            let tag = if to.is_some() { "" } else { "crit, " };
            let _ = writeln!(o, "  {system} : {tag}{from}, {end}");
        }
        o.push_str("```\n\n");
    }
    o.push_str("| # | time | event |\n|---:|---|---|\n");
    for r in records {
        let _ = writeln!(
            o,
            "| {} | {} | {} |",
            r.seq,
            r.at,
            r.event.describe().replace('|', "\\|")
        );
    }
    Ok(o)
}
