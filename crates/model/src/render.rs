//! A plan, shown to people and machines: a terminal view, the JSON contract,
//! a pull-request comment in Markdown, and the graph as Mermaid or DOT.
//!
//! Renderers only format: every number they print was decided by the plan,
//! so all five views always agree.

use std::fmt::Write as _;

use crate::plan::{Plan, PlannedStage};

/// Above this many dependency edges, a Mermaid graph is not drawn in
/// Markdown: GitHub refuses to render graphs past about 500 edges, and a
/// reviewer cannot read one anyway. `plan --format dot` still draws it.
pub const MERMAID_MAX_EDGES: usize = 500;

/// Past this many systems the Markdown lists the stages but not every system.
pub const MARKDOWN_MAX_SYSTEM_ROWS: usize = 1000;

pub fn json(plan: &Plan) -> String {
    let mut out = Vec::new();
    // Writing into memory fails only for want of memory, which aborts.
    let _ = write_json(plan, &mut out);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// [`json`] written straight to `out`: the plan of 100,000 systems is about
/// 100 MB of JSON, which is then never held in memory whole.
pub fn write_json(plan: &Plan, out: &mut impl std::io::Write) -> std::io::Result<()> {
    if plan.system_count() >= JSON_ON_TWO_THREADS {
        return write_json_in_parallel(plan, out);
    }
    written_at(plan, 0, out)?;
    out.write_all(b"\n")
}

/// From this many systems the JSON is rendered on two threads.
const JSON_ON_TWO_THREADS: usize = 5_000;

/// How many systems a thread renders at a time: about a megabyte of JSON.
const SYSTEMS_PER_CHUNK: usize = 1_000;

/// `value` as JSON in the plan's layout, starting `depth` levels in.
fn written_at<T: serde::Serialize + ?Sized>(
    value: &T,
    depth: usize,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, Indented::at(depth));
    value.serialize(&mut ser).map_err(std::io::Error::from)
}

/// [`write_json`] with the systems, nearly all of the 100 MB, rendered on
/// two threads: the plan is written without its systems, and each stage's
/// list is written in its place, the second thread rendering every other
/// thousand systems while this one renders and writes the rest. The same
/// bytes as rendered on one thread; a megabyte or two in memory at once.
fn write_json_in_parallel(plan: &Plan, out: &mut impl std::io::Write) -> std::io::Result<()> {
    // Every field listed: a field added to the plan cannot be left out.
    let stages = plan
        .stages
        .iter()
        .map(|s| PlannedStage {
            name: s.name.clone(),
            description: s.description.clone(),
            max_parallel: s.max_parallel,
            failure_domain: s.failure_domain,
            gate: s.gate.clone(),
            layers: s.layers,
            estimated_start: s.estimated_start,
            estimated_duration: s.estimated_duration,
            systems: Vec::new(),
            rollback_order: s.rollback_order.clone(),
        })
        .collect();
    let skeleton = Plan {
        playbook: plan.playbook.clone(),
        playbook_hash: plan.playbook_hash.clone(),
        estimated_duration: plan.estimated_duration,
        worst_case: plan.worst_case,
        critical_path: plan.critical_path.clone(),
        env: plan.env.clone(),
        inherit_env: plan.inherit_env.clone(),
        roles: plan.roles.clone(),
        connections: plan.connections.clone(),
        site_names: plan.site_names.clone(),
        notify: plan.notify.clone(),
        stages,
    };
    let mut text = Vec::new();
    written_at(&skeleton, 0, &mut text)?;
    // Each stage's empty list, in stage order. A quote inside a JSON string
    // is escaped, so this text is found nowhere else.
    const EMPTY: &[u8] = b"\"systems\": []";
    let mut holes = Vec::with_capacity(plan.stages.len());
    let mut from = 0;
    while let Some(at) = text[from..].windows(EMPTY.len()).position(|w| w == EMPTY) {
        holes.push(from + at);
        from += at + EMPTY.len();
    }
    if holes.len() != plan.stages.len() {
        written_at(plan, 0, out)?;
        return out.write_all(b"\n");
    }
    let mut written = 0;
    for (stage, at) in plan.stages.iter().zip(holes) {
        out.write_all(&text[written..at])?;
        out.write_all(b"\"systems\": ")?;
        // The list is the stage object's value: three levels in.
        systems_in_parallel(&stage.systems, 3, out)?;
        written = at + EMPTY.len();
    }
    out.write_all(&text[written..])?;
    out.write_all(b"\n")
}

/// A list of systems `depth` levels in, as [`Indented`] lays a list out,
/// its chunks rendered alternately here and on a second thread.
fn systems_in_parallel(
    systems: &[crate::plan::PlannedSystem],
    depth: usize,
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    if systems.is_empty() {
        return out.write_all(b"[]");
    }
    let item = Indented::at(depth + 1);
    let render = |k: usize, chunk: &[crate::plan::PlannedSystem]| -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(chunk.len() * 1_100);
        for (i, system) in chunk.iter().enumerate() {
            if k > 0 || i > 0 {
                buf.push(b',');
            }
            item.line(&mut buf)?;
            written_at(system, depth + 1, &mut buf)?;
        }
        Ok(buf)
    };
    out.write_all(b"[")?;
    let chunks: Vec<&[crate::plan::PlannedSystem]> = systems.chunks(SYSTEMS_PER_CHUNK).collect();
    std::thread::scope(|scope| -> std::io::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(1);
        let odd = chunks.iter().enumerate().skip(1).step_by(2);
        let helper = std::thread::Builder::new().spawn_scoped(scope, move || {
            for (k, chunk) in odd {
                if tx.send(render(k, chunk)).is_err() {
                    return;
                }
            }
        });
        // Returning early drops the receiver, which stops the renderer at
        // its next send, before the scope waits for it.
        let rx = helper.is_ok().then_some(rx);
        for (k, chunk) in chunks.iter().enumerate() {
            let buf = match &rx {
                Some(rx) if k % 2 == 1 => rx
                    .recv()
                    .map_err(|_| std::io::Error::other("the JSON renderer stopped"))??,
                // No second thread to be had: this one renders them all.
                _ => render(k, chunk)?,
            };
            out.write_all(&buf)?;
        }
        Ok(())
    })?;
    Indented::at(depth).line(out)?;
    out.write_all(b"]")
}

/// serde_json's pretty layout (two spaces a level), byte for byte, with
/// each line's break and indentation written at once: serde_json writes the
/// indentation a level at a time, about 18 million writes for the 100 MB
/// plan of 100,000 systems.
struct Indented {
    depth: usize,
    has_value: bool,
}

impl Indented {
    /// A layout starting `depth` levels in.
    fn at(depth: usize) -> Indented {
        Indented {
            depth,
            has_value: false,
        }
    }

    /// A line break and the indentation of the current depth.
    fn line<W: ?Sized + std::io::Write>(&self, out: &mut W) -> std::io::Result<()> {
        const SPACES: &[u8; 129] = b"\n                                                                                                                                ";
        let mut want = 1 + 2 * self.depth;
        let mut chunk = &SPACES[..want.min(SPACES.len())];
        loop {
            out.write_all(chunk)?;
            want -= chunk.len();
            if want == 0 {
                return Ok(());
            }
            chunk = &SPACES[1..=want.min(SPACES.len() - 1)];
        }
    }

    fn open<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        out.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.line(out)?;
        }
        out.write_all(bracket)
    }

    /// Before an item of a list or a key of a mapping.
    fn item<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if !first {
            out.write_all(b",")?;
        }
        self.line(out)
    }
}

impl serde_json::ser::Formatter for Indented {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.open(out, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.close(out, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(out, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.open(out, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, out: &mut W) -> std::io::Result<()> {
        self.close(out, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.item(out, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        out: &mut W,
    ) -> std::io::Result<()> {
        out.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

fn gate_summary(plan: &Plan, stage: &PlannedStage) -> String {
    let mut parts = Vec::new();
    if let Some(soak) = stage.gate.soak {
        parts.push(format!("soak {soak}"));
    }
    if !stage.gate.approvals.is_empty() {
        let roles: Vec<String> = stage
            .gate
            .approvals
            .iter()
            .map(|r| match who_may(plan, r) {
                Some(people) => format!("{r} ({people})"),
                None => r.clone(),
            })
            .collect();
        parts.push(format!("approval by {}", roles.join(", ")));
    }
    if parts.is_empty() {
        parts.push("all healthy".to_owned());
    }
    match stage.failure_domain {
        crate::playbook::FailureDomain::Stage => {
            parts.push(format!("on failure {}", stage.gate.on_failure));
        }
        crate::playbook::FailureDomain::Site => parts.push(format!(
            "on failure {} of the failing site only (the others go on)",
            stage.gate.on_failure
        )),
    }
    parts.join(" · ")
}

/// Who may decide for `role`, as a reviewer reads it: each member, and
/// whether they sign with a key. `None` without `spec.roles`.
fn who_may(plan: &Plan, role: &str) -> Option<String> {
    let r = plan.roles.as_ref()?.iter().find(|r| r.name == role)?;
    Some(
        r.members
            .iter()
            .map(|m| {
                if m.key.is_some() {
                    format!("{}, signs", m.name)
                } else {
                    format!("{}, unsigned", m.name)
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
    )
}

fn systems_and_sites(plan: &Plan) -> String {
    let systems = plan.system_count();
    let sites = plan.site_count();
    format!(
        "{systems} system{} at {sites} site{} in {} stage{}",
        plural(systems),
        plural(sites),
        plan.stages.len(),
        plural(plan.stages.len())
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn needs_approvals(plan: &Plan) -> bool {
    plan.stages.iter().any(|s| !s.gate.approvals.is_empty())
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// How each connected site is reached, one line per site: where a
/// reviewer sees which host and key a restart will trust.
fn connections(plan: &Plan) -> Vec<String> {
    plan.connections
        .iter()
        .map(|(site, c)| {
            let mut how = Vec::new();
            if let Some(s) = &c.ssh {
                how.push(format!(
                    "exec over ssh to {} (host key {})",
                    s.target(),
                    crate::diff::fingerprint(&s.host_key)
                ));
            }
            if let Some(k) = &c.kubernetes {
                let mut to = Vec::new();
                if let Some(ctx) = &k.context {
                    to.push(format!("context {ctx}"));
                }
                if let Some(secret) = &k.secret_ref {
                    to.push(format!("Secret {secret} (operator)"));
                }
                how.push(format!("kubernetes via {}", to.join(", ")));
            }
            format!("{site}: {}", how.join("; "))
        })
        .collect()
}

/// What one receiver is told of, and how often it is reminded.
pub fn notified_of(n: &crate::playbook::Notify) -> String {
    let on: Vec<&str> = if n.on.is_empty() {
        crate::playbook::NotifyOn::NAMES.to_vec()
    } else {
        n.on.iter().map(|o| o.as_str()).collect()
    };
    match n.remind {
        Some(every) => format!(
            "{}, reminded every {every} while a gate waits",
            on.join(", ")
        ),
        None => on.join(", "),
    }
}

/// Who is told what, one line per receiver (its URL as written: the
/// environment variable that holds it, never the value).
fn notifications(plan: &Plan) -> Vec<String> {
    plan.notify
        .iter()
        .map(|n| format!("{} is told of {}", n.webhook.url, notified_of(n)))
        .collect()
}

/// What sets a system apart beyond its start: optional, retried.
fn traits(sys: &crate::plan::PlannedSystem) -> Option<String> {
    let mut t = Vec::new();
    if sys.optional {
        t.push("optional".to_owned());
    }
    if let Some(r) = sys.retry {
        t.push(match r.backoff {
            Some(b) => format!("up to {} starts, {b} apart", r.attempts),
            None => format!("up to {} starts", r.attempts),
        });
    }
    (!t.is_empty()).then(|| t.join("; "))
}

/// A readable terminal view: stages in order, each with its layers.
pub fn text(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Plan for {}  ({})", plan.playbook, plan.playbook_hash);
    let _ = writeln!(
        o,
        "{}, estimated {}{}",
        systems_and_sites(plan),
        plan.estimated_duration,
        if needs_approvals(plan) {
            " plus approval waits"
        } else {
            ""
        }
    );
    if let Some(worst) = plan.worst_case {
        let _ = writeln!(o, "Worst case, every retry used: {worst}");
    }
    if !plan.env.is_empty() {
        let _ = writeln!(o, "Reads from the environment: {}", plan.env.join(", "));
    }
    for line in connections(plan) {
        let _ = writeln!(o, "Site {line}");
    }
    for line in notifications(plan) {
        let _ = writeln!(o, "Notify: {line}");
    }
    let total = plan.stages.len();
    for (k, stage) in plan.stages.iter().enumerate() {
        let _ = writeln!(o);
        let _ = write!(
            o,
            "Stage {}/{total}  {}  at +{}, takes {}",
            k + 1,
            stage.name,
            stage.estimated_start,
            stage.estimated_duration
        );
        if let Some(m) = stage.max_parallel {
            let _ = write!(o, ", at most {m} at once");
        }
        let _ = writeln!(o);
        if let Some(d) = &stage.description {
            let _ = writeln!(o, "  {d}");
        }
        let _ = writeln!(o, "  gate: {}", gate_summary(plan, stage));
        let id_width = stage.systems.iter().map(|s| s.id.len()).max().unwrap_or(0);
        let site_width = stage
            .systems
            .iter()
            .map(|s| s.site.len())
            .max()
            .unwrap_or(0);
        let mut current_layer = None;
        for sys in &stage.systems {
            if current_layer != Some(sys.layer) {
                current_layer = Some(sys.layer);
                let _ = writeln!(o, "  layer {}", sys.layer);
            }
            let mark = if sys.critical { "*" } else { " " };
            let _ = write!(
                o,
                "   {mark} {:<id_width$}  {:<site_width$}  {:>7}  {}",
                sys.id,
                sys.site,
                sys.expected_duration.to_string(),
                shorten(&sys.start.summary(), 60)
            );
            if !sys.depends_on.is_empty() {
                let _ = write!(o, "  after {}", sys.depends_on.join(", "));
            }
            if let Some(t) = traits(sys) {
                let _ = write!(o, "  [{t}]");
            }
            let _ = writeln!(o);
        }
        let _ = writeln!(o, "  rollback: {}", stage.rollback_order.join(", "));
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Critical path (*): {}", plan.critical_path.join(" → "));
    o
}

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A pull-request comment: summary, the stages, each stage's systems, and
/// the graph with the critical path highlighted.
pub fn markdown(plan: &Plan) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Restart plan: `{}`", plan.playbook);
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{}. Estimated duration **{}**{}.",
        systems_and_sites(plan),
        plan.estimated_duration,
        if needs_approvals(plan) {
            " plus the time approvals take"
        } else {
            ""
        }
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "- Playbook hash: `{}`", plan.playbook_hash);
    if let Some(worst) = plan.worst_case {
        let _ = writeln!(o, "- Worst case, every retry used: {worst}");
    }
    let _ = writeln!(
        o,
        "- Critical path: {}",
        code_list(&plan.critical_path, " → ")
    );
    if !plan.env.is_empty() {
        let _ = writeln!(
            o,
            "- Reads from the environment: {}",
            code_list(&plan.env, ", ")
        );
    }
    for line in connections(plan) {
        let _ = writeln!(o, "- Site {line}");
    }
    for line in notifications(plan) {
        let _ = writeln!(o, "- Notify: {line}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| # | Stage | Systems | Layers | At once | Starts at | Takes | Gate |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|");
    for (k, s) in plan.stages.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | `{}` | {} | {} | {} | +{} | {} | {} |",
            k + 1,
            s.name,
            s.systems.len(),
            s.layers,
            s.max_parallel.map_or("all".to_owned(), |m| m.to_string()),
            s.estimated_start,
            s.estimated_duration,
            cell(&gate_summary(plan, s))
        );
    }
    let _ = writeln!(o);
    if plan.system_count() <= MARKDOWN_MAX_SYSTEM_ROWS {
        for (k, stage) in plan.stages.iter().enumerate() {
            let _ = writeln!(
                o,
                "<details><summary>Stage {}: <code>{}</code> ({} systems)</summary>",
                k + 1,
                stage.name,
                stage.systems.len()
            );
            let _ = writeln!(o);
            if let Some(d) = &stage.description {
                let _ = writeln!(o, "{}", cell(d));
                let _ = writeln!(o);
            }
            let _ = writeln!(
                o,
                "| Layer | System | Site | Expected | Starts at | Start | Depends on |"
            );
            let _ = writeln!(o, "|---|---|---|---|---|---|---|");
            for sys in &stage.systems {
                let mut name = if sys.critical {
                    format!("**`{}`** (critical)", sys.id)
                } else {
                    format!("`{}`", sys.id)
                };
                if let Some(t) = traits(sys) {
                    name.push_str(&format!(" ({})", cell(&t)));
                }
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | +{} | {} | {} |",
                    sys.layer,
                    name,
                    cell(&sys.site),
                    sys.expected_duration,
                    sys.estimated_start,
                    cell(&sys.start.summary()),
                    cell(&sys.depends_on.join(", "))
                );
            }
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "Rollback order: {}",
                code_list(&stage.rollback_order, ", ")
            );
            let _ = writeln!(o);
            let _ = writeln!(o, "</details>");
            let _ = writeln!(o);
        }
    } else {
        let _ = writeln!(
            o,
            "_{} systems: too many to list here; run `blackstart plan --format text` for each one._",
            plan.system_count()
        );
        let _ = writeln!(o);
    }
    let edges: usize = plan.systems().map(|(_, s)| s.depends_on.len()).sum();
    if edges <= MERMAID_MAX_EDGES {
        // Folded: a reviewer reads the change first (`diff` draws it), and
        // opens the whole graph when it helps.
        let _ = writeln!(
            o,
            "<details><summary>The whole dependency graph ({} systems, {edges} dependencies)</summary>\n",
            plan.system_count()
        );
        let _ = writeln!(o, "```mermaid");
        o.push_str(&mermaid(plan));
        let _ = writeln!(o, "```");
        let _ = writeln!(o, "\n</details>");
    } else {
        let _ = writeln!(
            o,
            "_The graph has {edges} dependencies, more than a Mermaid diagram can show (at most {MERMAID_MAX_EDGES}); run `blackstart plan --format dot` to draw it._"
        );
    }
    o
}

fn code_list(items: &[impl std::fmt::Display], sep: &str) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(sep)
}

/// Plan-wide node names: `s0`, `s1`, … in plan order, so no id can collide
/// with a Mermaid or DOT keyword.
fn node_names(plan: &Plan) -> std::collections::HashMap<&str, String> {
    plan.systems()
        .enumerate()
        .map(|(k, (_, s))| (s.id.as_str(), format!("s{k}")))
        .collect()
}

/// The dependency graph as a Mermaid flowchart, one subgraph per stage, the
/// critical path's systems and edges highlighted.
pub fn mermaid(plan: &Plan) -> String {
    let names = node_names(plan);
    let mut o = String::from("flowchart LR\n");
    for (k, stage) in plan.stages.iter().enumerate() {
        let _ = writeln!(o, "  subgraph st{k}[\"{}. {}\"]", k + 1, stage.name);
        for sys in &stage.systems {
            let _ = writeln!(
                o,
                "    {}[\"{}<br/><small>{}</small>\"]",
                names[sys.id.as_str()],
                sys.id,
                sys.site
            );
        }
        let _ = writeln!(o, "  end");
    }
    let critical_edges = critical_edges(plan);
    let mut highlighted = Vec::new();
    let mut edge = 0usize;
    for (_, sys) in plan.systems() {
        for dep in &sys.depends_on {
            let _ = writeln!(
                o,
                "  {} --> {}",
                names[dep.as_str()],
                names[sys.id.as_str()]
            );
            if critical_edges.contains(&(dep.as_str(), sys.id.as_str())) {
                highlighted.push(edge.to_string());
            }
            edge += 1;
        }
    }
    let _ = writeln!(
        o,
        "  classDef critical fill:#fde2e1,stroke:#c0392b,stroke-width:2px"
    );
    let critical: Vec<&str> = plan
        .systems()
        .filter(|(_, s)| s.critical)
        .map(|(_, s)| names[s.id.as_str()].as_str())
        .collect();
    if !critical.is_empty() {
        let _ = writeln!(o, "  class {} critical", critical.join(","));
    }
    if !highlighted.is_empty() {
        let _ = writeln!(
            o,
            "  linkStyle {} stroke:#c0392b,stroke-width:3px",
            highlighted.join(",")
        );
    }
    o
}

fn critical_edges(plan: &Plan) -> std::collections::HashSet<(&str, &str)> {
    plan.critical_path
        .windows(2)
        .map(|w| (w[0].as_str(), w[1].as_str()))
        .collect()
}

/// The dependency graph for Graphviz, one cluster per stage.
pub fn dot(plan: &Plan) -> String {
    let names = node_names(plan);
    let mut o = String::new();
    let _ = writeln!(o, "digraph \"{}\" {{", plan.playbook);
    let _ = writeln!(o, "  rankdir=LR;");
    // Rank the whole graph at once, so the invisible edges that keep the
    // stages in order (below) hold across clusters.
    let _ = writeln!(o, "  newrank=true;");
    let _ = writeln!(
        o,
        "  node [shape=box, style=rounded, fontname=\"Helvetica\"];"
    );
    for (k, stage) in plan.stages.iter().enumerate() {
        let _ = writeln!(o, "  subgraph cluster_{k} {{");
        // Two invisible points hold each stage between the one before and
        // the one after: every system is right of `in` and left of `out`.
        let _ = writeln!(
            o,
            "    stage_{k}_in [shape=point, style=invis];\n    stage_{k}_out [shape=point, style=invis];"
        );
        let _ = writeln!(
            o,
            "    label=\"{}. {} ({})\";",
            k + 1,
            stage.name,
            gate_summary(plan, stage)
        );
        for sys in &stage.systems {
            let style = if sys.critical {
                ", color=\"#c0392b\", penwidth=2"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "    {} [label=\"{}\\n{}\"{style}];",
                names[sys.id.as_str()],
                sys.id,
                sys.site
            );
        }
        let _ = writeln!(o, "  }}");
    }
    let critical_edges = critical_edges(plan);
    for (_, sys) in plan.systems() {
        for dep in &sys.depends_on {
            let style = if critical_edges.contains(&(dep.as_str(), sys.id.as_str())) {
                " [color=\"#c0392b\", penwidth=2]"
            } else {
                ""
            };
            let _ = writeln!(
                o,
                "  {} -> {}{style};",
                names[dep.as_str()],
                names[sys.id.as_str()]
            );
        }
    }
    // Stages in order, left to right: without these, Graphviz places a
    // cluster wherever its edges pull it, and stage 3 may stand left of 2.
    for (k, stage) in plan.stages.iter().enumerate() {
        for sys in &stage.systems {
            let n = &names[sys.id.as_str()];
            let _ = writeln!(o, "  stage_{k}_in -> {n} -> stage_{k}_out [style=invis];");
        }
        if k + 1 < plan.stages.len() {
            let _ = writeln!(o, "  stage_{k}_out -> stage_{}_in [style=invis];", k + 1);
        }
    }
    let _ = writeln!(o, "}}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bytes as serde_json's pretty printer, on plans and on
    /// nesting deeper than the indentation written at once.
    #[test]
    fn the_json_is_serde_jsons_pretty_layout() {
        let yaml = crate::synth::playbook_yaml(crate::synth::Shape::new(300, 7));
        let plan = Plan::build(crate::load(yaml.as_bytes()).expect("synth is valid"));
        let mut want = serde_json::to_vec_pretty(&plan).expect("a plan serializes");
        want.push(b'\n');
        assert_eq!(json(&plan).as_bytes(), want.as_slice());
        // On two threads, past JSON_ON_TWO_THREADS and with odd and even
        // chunks in several stages, and with a stage left empty.
        for n in [300, 2_500, 7_001] {
            let yaml = crate::synth::playbook_yaml(crate::synth::Shape::new(n, 7));
            let mut plan = Plan::build(crate::load(yaml.as_bytes()).expect("synth is valid"));
            if n == 2_500 {
                plan.stages[1].systems.clear();
            }
            let mut want = serde_json::to_vec_pretty(&plan).expect("a plan serializes");
            want.push(b'\n');
            let mut ours = Vec::new();
            write_json_in_parallel(&plan, &mut ours).expect("into memory");
            assert!(ours == want, "{n} systems on two threads differ");
        }

        let mut deep = serde_json::json!({"leaf": [1, {}, [], "x"]});
        for i in 0..80 {
            deep = if i % 2 == 0 {
                serde_json::json!([deep, i])
            } else {
                serde_json::json!({ "k": deep, "e": [] })
            };
        }
        let mut ours = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(&mut ours, Indented::at(0));
        serde::Serialize::serialize(&deep, &mut ser).expect("into memory");
        assert_eq!(ours, serde_json::to_vec_pretty(&deep).expect("into memory"));
    }
}
