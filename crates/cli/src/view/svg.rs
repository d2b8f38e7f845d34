//! The run's two pictures, drawn as SVG by us: the dependency graph laid
//! out by stage and layer, and the timeline of what happened against the
//! plan's estimate.
//!
//! Drawn here rather than by a script in the page so that the live page and
//! the auditor's report (a file opened offline, perhaps years later) show
//! the same picture, with no library to fetch. Each node carries its phase
//! as a class (the colour) and as a word (for whoever cannot tell colours
//! apart, and for a black-and-white print of the report).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::RunView;
use super::html::esc;

/// Above this many systems the graph is not drawn: a picture of thousands
/// of boxes shows nothing, and the page stays light. The tables still list
/// every system.
pub const GRAPH_LIMIT: usize = 400;

const NODE_W: u32 = 168;
const NODE_H: u32 = 34;
const GAP_X: u32 = 36;
const GAP_Y: u32 = 8;
const LABEL_W: u32 = 150;
const BAND_PAD: u32 = 14;

/// The dependency graph: one band per stage, in order; in each band one
/// column per layer; an arrow from each dependency to what depends on it.
pub fn graph(view: &RunView) -> String {
    if view.systems.len() > GRAPH_LIMIT {
        return format!(
            "<p class=\"note\">The graph is not drawn for {} systems (at most {GRAPH_LIMIT}); `blackstart plan FILE --format dot` draws it.</p>",
            view.systems.len()
        );
    }
    let mut at: HashMap<&str, (u32, u32)> = HashMap::new();
    let mut bands = String::new();
    let mut nodes = String::new();
    let mut y = 0u32;
    let mut width = LABEL_W;
    for stage in &view.stages {
        let members: Vec<_> = view
            .systems
            .iter()
            .filter(|s| s.stage == stage.name)
            .collect();
        let mut per_layer: HashMap<u32, u32> = HashMap::new();
        let mut rows = 1u32;
        for s in &members {
            let row = per_layer.entry(s.layer).or_default();
            let x = LABEL_W + s.layer * (NODE_W + GAP_X);
            let ny = y + BAND_PAD + *row * (NODE_H + GAP_Y);
            at.insert(&s.id, (x, ny));
            *row += 1;
            rows = rows.max(*row);
            width = width.max(x + NODE_W + GAP_X);
            let _ = write!(
                nodes,
                "<g class=\"node ph-{phase:?}\" data-system=\"{id}\"><title>{id}: {phase:?}</title><rect x=\"{x}\" y=\"{ny}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"4\"/><text x=\"{tx}\" y=\"{t1}\">{label}</text><text class=\"phase\" x=\"{tx}\" y=\"{t2}\">{phase:?}</text></g>",
                phase = s.phase,
                id = esc(&s.id),
                tx = x + 6,
                t1 = ny + 14,
                t2 = ny + 28,
                label = esc(&short(&s.id, 24)),
            );
        }
        let h = BAND_PAD * 2 + rows * (NODE_H + GAP_Y) - GAP_Y;
        let _ = write!(
            bands,
            "<g class=\"band ph-{phase:?}\"><rect x=\"0\" y=\"{y}\" width=\"WIDTH\" height=\"{h}\"/><text x=\"8\" y=\"{ty}\">{name}</text><text class=\"phase\" x=\"8\" y=\"{ty2}\">{phase:?}</text></g>",
            phase = stage.phase,
            name = esc(&short(&stage.name, 19)),
            ty = y + 20,
            ty2 = y + 36,
        );
        y += h + 6;
    }
    let stage_of: HashMap<&str, &str> = view
        .systems
        .iter()
        .map(|s| (s.id.as_str(), s.stage.as_str()))
        .collect();
    let mut edges = String::new();
    for s in &view.systems {
        let Some(&(x2, y2)) = at.get(s.id.as_str()) else {
            continue;
        };
        for dep in &s.depends_on {
            let Some(&(x1, y1)) = at.get(dep.as_str()) else {
                continue;
            };
            let (sx, sy) = (x1 + NODE_W, y1 + NODE_H / 2);
            let (ex, ey) = (x2, y2 + NODE_H / 2);
            let bend = GAP_X.max(sx.abs_diff(ex) / 2);
            // An edge from another stage is drawn faint: the stage order
            // already says it, and the stage's own edges stay legible.
            let far = stage_of.get(dep.as_str()) != Some(&s.stage.as_str());
            let _ = write!(
                edges,
                "<path{class} d=\"M{sx},{sy} C{c1},{sy} {c2},{ey} {ex},{ey}\" marker-end=\"url(#arrow)\"/>",
                class = if far { " class=\"far\"" } else { "" },
                c1 = sx + bend,
                c2 = ex.saturating_sub(bend),
            );
        }
    }
    let bands = bands.replace("WIDTH", &width.to_string());
    format!(
        "<svg class=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {y}\" width=\"{width}\" height=\"{y}\" role=\"img\" aria-label=\"dependency graph of run {run}\"><defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\"/></marker></defs>{bands}<g class=\"edges\">{edges}</g>{nodes}</svg>",
        run = esc(&view.run),
    )
}

/// At most this many systems get a row of their own in the timeline;
/// beyond it, stages only.
pub const TIMELINE_SYSTEMS: usize = 60;

/// One line of the timeline: label, phase, planned start and length, and
/// what happened (from, to).
type Row = (String, String, f64, f64, Option<(f64, f64)>);

/// The timeline: for each stage (and, in a small run, each system) the
/// plan's estimate as a hollow bar and what happened as a filled one, on
/// one clock from the run's start.
pub fn timeline(view: &RunView) -> String {
    const ROW: u32 = 22;
    const LEFT: u32 = 190;
    const W: u32 = 720;
    let mut rows: Vec<Row> = Vec::new();
    let now = view.elapsed;
    let span =
        |began: Option<f64>, ended: Option<f64>| began.map(|b| (b, ended.unwrap_or(now).max(b)));
    for st in &view.stages {
        rows.push((
            format!("stage {}", st.name),
            format!("{:?}", st.phase),
            st.estimated_start,
            st.estimated_duration,
            span(st.began, st.ended),
        ));
        if view.systems.len() <= TIMELINE_SYSTEMS {
            for s in view.systems.iter().filter(|s| s.stage == st.name) {
                rows.push((
                    format!("  {}", s.id),
                    format!("{:?}", s.phase),
                    s.estimated_start,
                    s.expected,
                    span(s.began, s.ended),
                ));
            }
        }
    }
    let end = rows
        .iter()
        .map(|(_, _, s, d, a)| (s + d).max(a.map_or(0.0, |a| a.1)))
        .fold(view.estimate.max(now), f64::max)
        .max(0.001);
    let scale = f64::from(W) / end;
    let x = |t: f64| f64::from(LEFT) + t * scale;
    let height = ROW * (rows.len() as u32 + 2);
    let mut o = format!(
        "<svg class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {height}\" width=\"{w}\" height=\"{height}\" role=\"img\" aria-label=\"timeline of run {run} against its estimate\">",
        w = LEFT + W + 20,
        run = esc(&view.run),
    );
    // Ticks: about six, at a round step.
    let step = round_step(end / 6.0);
    let mut t = 0.0;
    while t <= end + 1e-9 {
        let _ = write!(
            o,
            "<line class=\"tick\" x1=\"{x:.1}\" y1=\"0\" x2=\"{x:.1}\" y2=\"{y}\"/><text class=\"tick\" x=\"{x:.1}\" y=\"{ty}\">{label}</text>",
            x = x(t),
            y = height - ROW,
            ty = height - 6,
            label = clock(t),
        );
        t += step;
    }
    for (i, (label, phase, start, dur, actual)) in rows.iter().enumerate() {
        let y = i as u32 * ROW + 4;
        let _ = write!(
            o,
            "<text x=\"4\" y=\"{ty}\">{label}</text><rect class=\"planned\" x=\"{px:.1}\" y=\"{y}\" width=\"{pw:.1}\" height=\"{h}\"><title>planned: {from} to {to}</title></rect>",
            ty = y + 14,
            label = esc(&short(label, 28)),
            px = x(*start),
            pw = (dur * scale).max(1.0),
            h = ROW - 6,
            from = clock(*start),
            to = clock(start + dur),
        );
        if let Some((b, e)) = actual {
            let _ = write!(
                o,
                "<rect class=\"actual ph-{phase}\" x=\"{ax:.1}\" y=\"{ay}\" width=\"{aw:.1}\" height=\"{ah}\"><title>{phase}: {from} to {to}</title></rect>",
                ax = x(*b),
                ay = y + 4,
                aw = ((e - b) * scale).max(1.5),
                ah = ROW - 14,
                from = clock(*b),
                to = clock(*e),
            );
        }
    }
    let _ = write!(
        o,
        "<line class=\"now\" x1=\"{nx:.1}\" y1=\"0\" x2=\"{nx:.1}\" y2=\"{y}\"><title>now: {t}</title></line></svg>",
        nx = x(now),
        y = height - ROW,
        t = clock(now),
    );
    o
}

/// A step of 1, 2 or 5 times a power of ten seconds, at least `raw`.
fn round_step(raw: f64) -> f64 {
    let raw = raw.max(0.001);
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

/// Seconds from the start as a person reads them: `1h02m`, `3m05s`, `4.2s`.
pub fn clock(secs: f64) -> String {
    if secs < 10.0 {
        let r = format!("{secs:.1}s");
        if r == "0.0s" { "0s".to_owned() } else { r }
    } else if secs < 3600.0 {
        let s = secs.round() as u64;
        if s < 60 {
            format!("{s}s")
        } else {
            format!("{}m{:02}s", s / 60, s % 60)
        }
    } else {
        let m = (secs / 60.0).round() as u64;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_steps_read_as_people_write_them() {
        assert_eq!(clock(0.0), "0s");
        assert_eq!(clock(4.24), "4.2s");
        assert_eq!(clock(185.0), "3m05s");
        assert_eq!(clock(3720.0), "1h02m");
        assert_eq!(round_step(0.7), 1.0);
        assert_eq!(round_step(13.0), 20.0);
        assert_eq!(round_step(400.0), 500.0);
    }
}
