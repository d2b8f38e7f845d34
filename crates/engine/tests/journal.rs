//! The file journal: durable, chained, locked, and honest about damage.

// Helpers outside #[test] functions unwrap too: their failing is the test failing.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use blackstart_engine::journal::{self, GENESIS};
use blackstart_engine::{
    Event, FileJournal, JournalError, RunDir, RunPhase, RunState, StagePhase, SystemPhase,
};

const LAB: &str = "\
apiVersion: blackstart.dev/v1alpha1
kind: Playbook
metadata: { name: lab }
spec:
  sites: [ { id: dc } ]
  systems:
    - { id: db, site: dc, tier: data, start: { noop: {} } }
    - { id: app, site: dc, tier: app, dependsOn: [db], start: { noop: {} } }
  stages:
    - { name: data, select: { tiers: [data] } }
    - { name: apps, select: { tiers: [app] }, gate: { approvals: [incident-commander] } }
";

fn started(run: &str) -> Event {
    let plan = blackstart_model::Plan::build(
        blackstart_model::load(LAB.as_bytes()).expect("LAB is valid"),
    );
    Event::RunStarted {
        run: run.to_owned(),
        playbook: plan.playbook.clone(),
        playbook_hash: plan.playbook_hash.clone(),
        plan: Box::new(plan),
        playbook_path: None,
        drill: false,
        require_signatures: false,
    }
}

fn system(id: &str, phase: SystemPhase) -> Event {
    Event::System {
        system: id.to_owned(),
        phase,
        reason: None,
        waiting_for: None,
    }
}

fn stage(name: &str, phase: StagePhase) -> Event {
    Event::Stage {
        stage: name.to_owned(),
        phase,
        reason: None,
    }
}

fn run_phase(phase: RunPhase) -> Event {
    Event::Run {
        phase,
        reason: None,
    }
}

/// A run part-way through: db healthy, app starting, apps' gate approved once.
fn write_run(dir: &RunDir) -> FileJournal {
    let j = FileJournal::create(dir, &started(&dir.run)).unwrap();
    for e in [
        run_phase(RunPhase::Running),
        stage("data", StagePhase::Running),
        system("db", SystemPhase::Verifying),
        system("db", SystemPhase::Starting),
        system("db", SystemPhase::Healthy),
        stage("data", StagePhase::Succeeded),
        stage("apps", StagePhase::Running),
        system("app", SystemPhase::Starting),
        Event::Approved {
            stage: "apps".into(),
            by: "alice".into(),
            role: Some("incident-commander".into()),
            proof: Default::default(),
        },
    ] {
        j.append(&e).unwrap();
    }
    j
}

fn lines(dir: &RunDir) -> Vec<String> {
    std::fs::read_to_string(dir.journal())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Opens a journal whose writer was just dropped. The lock belongs to the
/// open file, and a child that a test running beside this one forks holds
/// a copy of every open file until it execs: for that instant the lock is
/// still held.
fn reopen(dir: &RunDir) -> (FileJournal, Vec<blackstart_engine::Record>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match FileJournal::open(dir) {
            Err(JournalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other.unwrap(),
        }
    }
}

fn write_lines(dir: &RunDir, lines: &[String]) {
    std::fs::write(
        dir.journal(),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

#[test]
fn events_appended_together_take_one_fsync_and_chain_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    let j = FileJournal::create(&dir, &started("r1")).unwrap();
    let (durable, syncs) = j.stats();
    let records = j
        .append_all(&[
            system("db", SystemPhase::Starting),
            Event::AttemptBegun {
                system: "db".into(),
                step: blackstart_engine::event::StepKind::Start,
                attempt: 1,
            },
            system("db", SystemPhase::Healthy),
        ])
        .unwrap();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [durable + 1, durable + 2, durable + 3]
    );
    assert_eq!(j.stats(), (durable + 3, syncs + 1), "one fsync for three");
    let all = j.load().unwrap();
    assert_eq!(&all[all.len() - 3..], records.as_slice());
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev, pair[0].hash);
    }
    // What follows goes on from the last of them.
    let next = j.append(&system("db", SystemPhase::Stopping)).unwrap();
    assert_eq!((next.seq, &next.prev), (durable + 4, &records[2].hash));
}

#[test]
fn records_chain_and_fold_into_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    let j = write_run(&dir);
    let records = j.load().unwrap();
    assert_eq!(records.len(), 10);
    assert_eq!(records[0].prev, GENESIS);
    for pair in records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].prev, pair[0].hash);
    }
    assert_eq!(journal::read(&dir).unwrap(), records);

    let state = RunState::fold(records.iter().map(|r| (r.seq, &r.event))).unwrap();
    assert_eq!(state.phase, RunPhase::Running);
    assert_eq!(state.stage("data").unwrap().phase, StagePhase::Succeeded);
    assert_eq!(state.system("db").unwrap().phase, SystemPhase::Healthy);
    assert_eq!(state.stage("apps").unwrap().approvals[0].by, "alice");
    let in_flight: Vec<&str> = state.in_flight().map(|s| s.id.as_str()).collect();
    assert_eq!(in_flight, ["app"]);
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["run"], "r1");
    assert_eq!(json["phase"], "Running");
    assert_eq!(json["systems"][1]["phase"], "Starting");
}

#[test]
fn a_second_writer_is_refused_until_the_first_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    let first = write_run(&dir);
    match FileJournal::open(&dir) {
        Err(JournalError::Locked { run, holder }) => {
            assert_eq!(run, "r1");
            assert_eq!(holder, Some(format!("pid {}", std::process::id())));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    // Readers need no lock.
    assert_eq!(journal::read(&dir).unwrap().len(), 10);
    drop(first);
    let (again, records) = reopen(&dir);
    assert_eq!(records.len(), 10);
    assert_eq!(
        again
            .append(&system("app", SystemPhase::Healthy))
            .unwrap()
            .seq,
        11
    );
    assert!(matches!(
        FileJournal::create(&dir, &started("r1")),
        Err(JournalError::Locked { .. })
    ));
    drop(again);
    assert!(matches!(
        FileJournal::create(&dir, &started("r1")),
        Err(JournalError::Exists { .. })
    ));
}

#[test]
fn tampering_is_detected_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    drop(write_run(&dir));
    let good = lines(&dir);
    let check = |lines: &[String], line: usize, reason: &str| {
        write_lines(&dir, lines);
        match journal::read(&dir) {
            Err(JournalError::Corrupt {
                line: l, reason: r, ..
            }) => {
                assert_eq!(l, line, "{r}");
                assert!(r.contains(reason), "{r}");
            }
            other => panic!("expected Corrupt at line {line}, got {other:?}"),
        }
        assert!(FileJournal::open(&dir).is_err());
    };
    // An edited event: the approval claimed by someone else.
    let mut edited = good.clone();
    edited[9] = edited[9].replace("alice", "mallory");
    check(&edited, 10, "does not match its hash");
    // A removed event.
    let mut removed = good.clone();
    removed.remove(5);
    check(&removed, 6, "event 7 where event 6 should be");
    // Two events swapped.
    let mut swapped = good.clone();
    swapped.swap(3, 4);
    check(&swapped, 4, "event 5 where event 4 should be");
    // A line rewritten with a fresh, self-consistent hash still breaks the chain.
    let mut rechained = good.clone();
    let record: serde_json::Value = serde_json::from_str(&good[2]).unwrap();
    let fake = format!(
        "{{\"seq\":3,\"at\":{},\"prev\":\"{}\",\"event\":{{\"type\":\"stage\",\"stage\":\"data\",\"phase\":\"Succeeded\"}}}}",
        record["at"],
        "f".repeat(64)
    );
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(fake.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    rechained[2] = format!("{},\"hash\":\"{hash}\"}}", &fake[..fake.len() - 1]);
    check(&rechained, 3, "chain is broken");
    // Junk.
    let mut junk = good;
    junk[0] = "hello".to_owned();
    check(&junk, 1, "not a journal record");
}

#[test]
fn a_torn_tail_is_set_aside_byte_for_byte_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    drop(write_run(&dir));
    let before = std::fs::read(dir.journal()).unwrap();
    let mut torn = before.clone();
    let tail = b"{\"seq\":11,\"at\":\"2026-11-22T18:00:00.000Z\",\"prev\":\"ab";
    torn.extend_from_slice(tail);
    std::fs::write(dir.journal(), &torn).unwrap();
    // Readers see the complete records only, and are told of the rest.
    let scan = journal::read_scan(&dir).unwrap();
    assert_eq!(scan.records.len(), 10);
    let rest = scan.rest.expect("the torn tail is reported");
    assert_eq!(
        (rest.offset, rest.bytes),
        (before.len() as u64, tail.len() as u64)
    );
    let (j, records) = reopen(&dir);
    let last = records.last().unwrap();
    assert_eq!(last.seq, 11);
    let Event::SetAside { file, bytes, .. } = &last.event else {
        panic!("expected SetAside, got {:?}", last.event);
    };
    assert_eq!(*bytes, tail.len() as u64);
    assert_eq!(
        std::fs::read(dir.dir.join(file)).unwrap(),
        tail,
        "nothing is lost"
    );
    drop(j);
    let after = std::fs::read(dir.journal()).unwrap();
    assert!(
        after.starts_with(&before),
        "complete records are never rewritten"
    );
    let scan = journal::read_scan(&dir).unwrap();
    assert_eq!((scan.records.len(), scan.rest), (11, None));
}

#[test]
fn a_forked_journal_goes_on_from_its_prefix_and_keeps_the_fork_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    drop(write_run(&dir));
    let good = lines(&dir);
    // A second writer that read the journal up to event 6 wrote 7 and 8.
    let fork_dir = RunDir::new(&tmp.path().join("other"), "r1").unwrap();
    std::fs::create_dir_all(&fork_dir.dir).unwrap();
    write_lines(&fork_dir, &good[..6]);
    {
        let (j, _) = reopen(&fork_dir);
        j.append(&system("db", SystemPhase::Failed)).unwrap();
        j.append(&system("app", SystemPhase::Starting)).unwrap();
    }
    let forked_tail = lines(&fork_dir)[6..].to_vec();
    let mut both = good.clone();
    both.extend(forked_tail.iter().cloned());
    write_lines(&dir, &both);

    let scan = journal::read_scan(&dir).unwrap();
    assert_eq!(scan.records.len(), 10, "status goes on from the prefix");
    let rest = scan.rest.unwrap();
    assert_eq!(rest.line, 11);
    assert!(rest.reason.contains("forked"), "{}", rest.reason);

    let (j, records) = reopen(&dir);
    assert_eq!(records.len(), 11);
    let Event::SetAside { file, .. } = &records[10].event else {
        panic!("{:?}", records[10].event);
    };
    let kept = std::fs::read_to_string(dir.dir.join(file)).unwrap();
    assert_eq!(
        kept,
        forked_tail
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    );
    assert_eq!(
        j.append(&system("app", SystemPhase::Healthy)).unwrap().seq,
        12
    );
}

#[test]
fn deleting_or_replacing_the_journal_does_not_admit_a_second_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    let first = write_run(&dir);
    // An old release's `lock` file, or the holder note, mean nothing.
    let _ = std::fs::remove_file(dir.dir.join("lock"));
    let _ = std::fs::remove_file(dir.dir.join("holder"));
    assert!(matches!(
        FileJournal::open(&dir),
        Err(JournalError::Locked { .. })
    ));
    // Someone appends behind the writer's back: it refuses to go on.
    let mut text = std::fs::read_to_string(dir.journal()).unwrap();
    let copy = text.clone();
    text.push_str(copy.lines().last().unwrap());
    text.push('\n');
    std::fs::write(dir.journal(), &text).unwrap();
    let err = first
        .append(&system("app", SystemPhase::Healthy))
        .unwrap_err();
    assert!(
        err.to_string().contains("someone else wrote to it"),
        "{err}"
    );
    drop(first);
    // The journal replaced by another file: the writer refuses too.
    std::fs::write(dir.journal(), copy.as_bytes()).unwrap();
    let (j, _) = reopen(&dir);
    std::fs::remove_file(dir.journal()).unwrap();
    std::fs::write(dir.journal(), copy.as_bytes()).unwrap();
    let err = j.append(&system("app", SystemPhase::Healthy)).unwrap_err();
    assert!(err.to_string().contains("replaced"), "{err}");
}

#[test]
fn records_carry_their_format_and_the_previous_format_still_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    drop(write_run(&dir));
    for line in lines(&dir) {
        assert!(
            line.starts_with(&format!("{{\"v\":{},", journal::FORMAT)),
            "{line}"
        );
    }
    let records = journal::read(&dir).unwrap();
    blackstart_engine::Record::verify_chain(&records).unwrap();
    // blackstart 0.1.0's journal (format 1, no `v`), checked in.
    let old = RunDir::new(tmp.path(), "fixture").unwrap();
    std::fs::create_dir_all(&old.dir).unwrap();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/journal-v1/journal.jsonl"
        ),
        old.journal(),
    )
    .unwrap();
    let records = journal::read(&old).unwrap();
    assert!(records.iter().all(|r| r.v == 1));
    blackstart_engine::Record::verify_chain(&records).unwrap();
    let (j, records) = reopen(&old);
    let next = j.append(&system("app", SystemPhase::Pending)).unwrap();
    assert_eq!(
        (next.v, next.seq),
        (journal::FORMAT, records.len() as u64 + 1)
    );
    drop(j);
    let mixed = journal::read(&old).unwrap();
    blackstart_engine::Record::verify_chain(&mixed).unwrap();
}

#[test]
fn concurrent_appends_share_fsyncs_and_keep_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "busy").unwrap();
    let j = Arc::new(FileJournal::create(&dir, &started("busy")).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let j = Arc::clone(&j);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let e = Event::Output {
                        system: "db".into(),
                        step: format!("t{t}"),
                        exit_code: Some(i),
                        output: String::new(),
                    };
                    let r = j.append(&e).unwrap();
                    assert!(r.seq >= 2);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (durable, syncs) = j.stats();
    assert_eq!(durable, 401);
    // Eight writers at once share fsyncs (the benchmark sees about four
    // events per fsync); one fsync per record would mean no group commit.
    assert!(syncs < durable, "{syncs} fsyncs for {durable} records");
    let records = journal::read(&dir).unwrap();
    assert_eq!(records.len(), 401);
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, r)| r.seq == i as u64 + 1)
    );
}

#[tokio::test]
async fn a_write_is_durable_when_the_committer_says_so_and_a_poisoned_journal_ends_every_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::new(tmp.path(), "r1").unwrap();
    let j = FileJournal::create(&dir, &started("r1")).unwrap();
    let written = j
        .write_all(&[
            system("db", SystemPhase::Starting),
            system("db", SystemPhase::Healthy),
        ])
        .unwrap();
    let last = written.last().unwrap().seq;
    assert_eq!(last, 3);
    j.durable(last).await.unwrap();
    assert!(j.durable_seq() >= last);
    assert_eq!(journal::read(&dir).unwrap().len(), 3);
    // Someone else writes to the file: the next write is refused, and a
    // wait for a record that never reached the disk ends with that
    // refusal, for async and blocking waiters alike, instead of hanging.
    let mut text = std::fs::read_to_string(dir.journal()).unwrap();
    text.push_str("{}\n");
    std::fs::write(dir.journal(), &text).unwrap();
    let err = j
        .write_all(&[system("app", SystemPhase::Starting)])
        .unwrap_err();
    assert!(
        err.to_string().contains("someone else wrote to it"),
        "{err}"
    );
    let waited = tokio::time::timeout(Duration::from_secs(10), j.durable(last + 1))
        .await
        .expect("the wait ends");
    assert!(waited.is_err());
    assert!(j.wait_durable(last + 1).is_err());
    // What was on disk before stays so.
    j.durable(last).await.unwrap();
}

#[test]
fn fold_refuses_journals_that_are_not_runs() {
    use blackstart_engine::FoldError;
    assert_eq!(RunState::fold(std::iter::empty()), Err(FoldError::Empty));
    let e = run_phase(RunPhase::Running);
    assert_eq!(
        RunState::fold([(1, &e)]),
        Err(FoldError::NotStarted { seq: 1 })
    );
    let s = started("r");
    let ghost = system("ghost", SystemPhase::Healthy);
    assert_eq!(
        RunState::fold([(1, &s), (2, &ghost)]),
        Err(FoldError::Unknown {
            seq: 2,
            what: "system",
            id: "ghost".into()
        })
    );
}

#[test]
fn run_ids_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "../etc", "a/b", ".hidden", "run id"] {
        assert!(
            matches!(RunDir::new(tmp.path(), bad), Err(JournalError::BadRunId(_))),
            "{bad}"
        );
    }
    let dir = RunDir::new(tmp.path(), "missing").unwrap();
    assert!(matches!(
        journal::read(&dir),
        Err(JournalError::NotFound { .. })
    ));
    assert!(matches!(
        FileJournal::open(&dir),
        Err(JournalError::NotFound { .. })
    ));
}

/// Run by `a_lock_left_by_a_killed_process_is_taken_over` in a child
/// process: start a run, say so, and hold the lock until killed.
#[test]
fn child_holding_the_lock() {
    let Ok(state_dir) = std::env::var("BLACKSTART_TEST_CHILD_STATE_DIR") else {
        return; // Only meaningful as the child.
    };
    let dir = RunDir::new(std::path::Path::new(&state_dir), "killed").unwrap();
    let _j = write_run(&dir);
    println!("ready");
    std::thread::sleep(std::time::Duration::from_secs(30));
}

#[test]
fn a_lock_left_by_a_killed_process_is_taken_over() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holding_the_lock",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BLACKSTART_TEST_CHILD_STATE_DIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.contains("ready") {
        line.clear();
    }
    assert!(line.contains("ready"), "the child never started its run");
    let dir = RunDir::new(tmp.path(), "killed").unwrap();
    let holder = format!("pid {}", child.id());
    match FileJournal::open(&dir) {
        Err(JournalError::Locked { holder: h, .. }) => assert_eq!(h, Some(holder)),
        other => panic!("expected Locked while the child lives, got {other:?}"),
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no unlock
    child.wait().unwrap();
    let (j, records) = FileJournal::open(&dir).unwrap();
    assert_eq!(records.len(), 10);
    assert_eq!(j.append(&run_phase(RunPhase::Paused)).unwrap().seq, 11);
}
