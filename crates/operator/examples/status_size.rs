//! How big a RestartRun's status and its journal's segments grow: reads a
//! finished run's journal (from `blackstart drill … --state-dir DIR --run-id
//! RUN`), builds the status summary the operator would keep for it, and
//! prints its size, and the journal's, beside the API server's 1.5 MiB
//! object limit. `cargo xtask bench` runs it on drills of 63, 1,000 and
//! 10,000 systems; the README quotes the figures.
use blackstart_engine::{Event, RunDir, RunState, journal};
use blackstart_operator::crd::RestartRunStatus;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state_dir, run] = args.as_slice() else {
        eprintln!("usage: status_size STATE_DIR RUN");
        std::process::exit(2);
    };
    let path = format!("{state_dir}/runs/{run}");
    let records =
        match RunDir::new(std::path::Path::new(state_dir), run).and_then(|d| journal::read(&d)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        };
    let Some(Event::RunStarted { plan, .. }) = records.first().map(|r| &r.event) else {
        eprintln!("{path}: no plan");
        std::process::exit(1);
    };
    let state = match RunState::fold(records.iter().map(|r| (r.seq, &r.event))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    // The status is the summary; the journal goes to segments.
    let last = &records[records.len() - 1];
    let status = RestartRunStatus {
        journal_length: Some(last.seq),
        journal_head: Some(last.hash.clone()),
        ..blackstart_operator::store::summarize(&state, plan, &records[0].at, &last.at, &[], 1)
    };
    let status_bytes = serde_json::to_vec(&status).map_or(0, |v| v.len());
    let journal_bytes: usize = records
        .iter()
        .map(|r| serde_json::to_vec(r).map_or(0, |v| v.len()))
        .sum();
    let plan_bytes = serde_json::to_vec(&records[0]).map_or(0, |v| v.len());
    let segments = journal_bytes.div_ceil(blackstart_operator::segments::SEGMENT_BYTES);
    println!(
        "{} systems, {} events: status {:.1} KiB (written whole with each event); journal {:.0} KiB in about {segments} segments of at most {} KiB ({:.0} bytes per event; the plan record {:.1} KiB)",
        plan.system_count(),
        records.len(),
        status_bytes as f64 / 1024.0,
        journal_bytes as f64 / 1024.0,
        blackstart_operator::segments::SEGMENT_BYTES / 1024,
        journal_bytes as f64 / records.len() as f64,
        plan_bytes as f64 / 1024.0,
    );
}
