//! How big a RestartRun's status grows: reads a finished run's journal
//! (from `blackstart drill … --state-dir DIR --run-id RUN`), builds the status the
//! operator would keep for it, and prints its size beside the API server's
//! 1.5 MiB request limit. `cargo xtask bench` runs it on drills of 63 and
//! 1,000 systems; the README quotes the figures.
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
    let status = RestartRunStatus {
        journal: records.clone(),
        ..blackstart_operator::store::summarize(
            &state,
            plan,
            &records[0].at,
            &records[records.len() - 1].at,
            &[],
            1,
        )
    };
    let total = serde_json::to_vec(&status).map_or(0, |v| v.len());
    let plan_bytes = serde_json::to_vec(&records[0]).map_or(0, |v| v.len());
    let systems = plan.system_count();
    println!(
        "{systems} systems, {} events: status {:.1} KiB ({:.0} bytes per system; the plan record {:.1} KiB); about {} systems fit in 1.5 MiB",
        records.len(),
        total as f64 / 1024.0,
        total as f64 / systems as f64,
        plan_bytes as f64 / 1024.0,
        (1.5 * 1024.0 * 1024.0 / (total as f64 / systems as f64)) as u64
    );
}
