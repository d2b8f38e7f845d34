//! Project automation, in Rust so it runs wherever cargo does:
//!
//! - `cargo xtask test`  — everything the suite needs, then every test (the README's test command)
//! - `cargo xtask bench` — the benchmarks, and the table the README quotes
//! - `cargo xtask ci`    — formatting, lints and tests, as `.ci/run` does
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

fn test() -> Result<(), String> {
    run(&cargo(), &["test", "--workspace", "--locked"])
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
    bench("blackstart-engine", "journal", &[])?;
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

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "test" => test(),
        "bench" => bench(),
        "ci" => ci(),
        _ => {
            eprintln!("usage: cargo xtask <test|bench|ci>");
            eprintln!("  test   everything the suite needs, then every test");
            eprintln!("  bench  run the benchmarks and print the README's table");
            eprintln!("  ci     cargo fmt --check, clippy -D warnings, then test");
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
