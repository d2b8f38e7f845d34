//! The file journal's cost per event, fsync included: one appender (each
//! event its own fsync, the worst case) and 8 or 64 appenders at once (a
//! stage starting many systems together, where group commit shares
//! fsyncs); appenders as threads that block (`append`, as `create` and a
//! blocking record use), and as async tasks on two workers that write and
//! then wait without a thread (`write_all` and `durable`, as the engine
//! does), where the journal's committer thread runs the fsyncs.
//!
//! Writes under `target/bench-journal/` on purpose: `/tmp` is often tmpfs,
//! where an fsync costs nothing and the figure would mean nothing.
//! `cargo bench -p blackstart-engine --bench journal`.

use std::sync::Arc;
use std::time::Instant;

use blackstart_engine::{Event, FileJournal, RunDir};

fn event(i: usize) -> Event {
    Event::Output {
        system: "wolv-engine-mes".to_owned(),
        step: "start".to_owned(),
        exit_code: Some(0),
        output: format!("started unit mes.service ({i})"),
    }
}

fn started(run: &str) -> Event {
    Event::Run {
        phase: blackstart_engine::RunPhase::Running,
        reason: Some(run.to_owned()),
    }
}

/// A new run's journal under `base`.
fn fresh(base: &std::path::Path, run: &str) -> Arc<FileJournal> {
    let dir = RunDir::new(base, run).expect("a valid run id");
    Arc::new(FileJournal::create(&dir, &started(run)).expect("the bench directory is writable"))
}

fn report(who: &str, events: usize, begin: Instant, journal: &FileJournal, syncs_before: u64) {
    let elapsed = begin.elapsed();
    let (_, syncs) = journal.stats();
    let syncs = syncs - syncs_before;
    println!(
        "{who:>10}  {events:>8}  {:>14.1}  {syncs:>12}  {:>16.1}",
        elapsed.as_secs_f64() * 1e6 / events as f64,
        events as f64 / syncs.max(1) as f64
    );
}

fn main() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-journal");
    let _ = std::fs::remove_dir_all(&base);
    println!(
        "{:>10}  {:>8}  {:>14}  {:>12}  {:>16}",
        "appenders", "events", "µs per event", "fsyncs", "events per fsync"
    );
    for (appenders, per) in [(1usize, 2000usize), (8, 500), (64, 50)] {
        let journal = fresh(&base, &format!("bench-{appenders}"));
        let (_, syncs_before) = journal.stats();
        let begin = Instant::now();
        let threads: Vec<_> = (0..appenders)
            .map(|_| {
                let j = Arc::clone(&journal);
                std::thread::spawn(move || {
                    for i in 0..per {
                        j.append(&event(i)).expect("append succeeds");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("appender finished");
        }
        report(
            &format!("{appenders} threads"),
            appenders * per,
            begin,
            &journal,
            syncs_before,
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    for (appenders, per) in [(1usize, 2000usize), (8, 500), (64, 50)] {
        let journal = fresh(&base, &format!("bench-async-{appenders}"));
        let (_, syncs_before) = journal.stats();
        let begin = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..appenders)
                .map(|_| {
                    let j = Arc::clone(&journal);
                    tokio::spawn(async move {
                        for i in 0..per {
                            let written = j.write_all(&[event(i)]).expect("write succeeds");
                            j.durable(written[0].seq).await.expect("durable");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("appender finished");
            }
        });
        report(
            &format!("{appenders} tasks"),
            appenders * per,
            begin,
            &journal,
            syncs_before,
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
