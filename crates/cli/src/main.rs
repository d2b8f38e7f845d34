//! The `blackstart` binary: argument parsing, file reading and exit codes.
//!
//! It holds no logic a library user would want: reading, checking, planning,
//! rendering and diffing live in `blackstart-model`. What lives here is what
//! only a command line has: files, standard streams and exit codes.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blackstart_model::{Diagnostics, MAX_INPUT_BYTES, Plan, Validated, diff, render};
use clap::{CommandFactory as _, Parser};

/// Exit codes, as the README and `--help` document them.
mod exit {
    pub const SUCCESS: u8 = 0;
    /// The run failed, was rolled back or paused; for `diff --exit-code`,
    /// something changed; for `audit --verify`, the journal was altered.
    pub const FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    /// The playbook no longer has the hash of the reviewed plan.
    pub const STALE_PLAN: u8 = 3;
    /// Another live process holds the run.
    pub const LOCKED: u8 = 4;
    /// A second Ctrl-C (or SIGTERM) stopped the run's steps and the run.
    pub const INTERRUPTED: u8 = 130;
}

mod args;
mod check;
mod cluster;
mod decisions;
mod runs;
mod serve;
mod view;

use args::*;

/// What can go wrong in the binary, each with what a person needs to act.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is {size} bytes; {what} may be at most {} MiB", limit / (1024 * 1024))]
    TooLarge {
        path: String,
        what: String,
        size: u64,
        limit: u64,
    },
    #[error("{path} is {kind}; {what} must be a regular file")]
    NotRegular {
        path: String,
        what: String,
        kind: &'static str,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    /// The diagnostics were printed already; this carries the count.
    #[error("{path}: {diags}")]
    Invalid { path: String, diags: Diagnostics },
    #[error(
        "the playbook changed since its plan was reviewed: the plan is for {reviewed}, the playbook is now {now}; review the new plan"
    )]
    StalePlan { reviewed: String, now: String },
    #[error("{0}")]
    Usage(String),
    /// The journal's plan is not what its playbook compiles to.
    #[error("{0}")]
    Mismatch(String),
    #[error(transparent)]
    Journal(#[from] blackstart_engine::JournalError),
    #[error(transparent)]
    Engine(#[from] blackstart_engine::EngineError),
    #[error("{0}")]
    Runtime(String),
}

impl From<TrustArgs> for runs::Trust {
    fn from(t: TrustArgs) -> runs::Trust {
        runs::Trust {
            playbook: t.playbook,
            trust_journal: t.trust_journal,
        }
    }
}

impl CliError {
    fn exit_code(&self) -> u8 {
        use blackstart_engine::JournalError as J;
        match self {
            CliError::Write { .. } | CliError::Runtime(_) | CliError::Engine(_) => exit::FAILED,
            CliError::StalePlan { .. } | CliError::Mismatch(_) => exit::STALE_PLAN,
            CliError::Journal(J::Locked { .. }) => exit::LOCKED,
            CliError::Journal(J::Io { .. } | J::Corrupt { .. } | J::Poisoned { .. }) => {
                exit::FAILED
            }
            _ => exit::INVALID,
        }
    }
}

/// Whether to colour what goes to a terminal: not when `NO_COLOR` is set
/// to anything (the NO_COLOR convention).
fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs go to standard error: JSON lines at info with `--log-format json`
/// (every recorded transition), otherwise warnings only, since people get
/// the progress view instead.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::fmt;
    let json = format == LogFormat::Json;
    runs::set_json(json);
    let result = if json {
        fmt()
            .json()
            .with_writer(io::stderr)
            .with_max_level(tracing::Level::INFO)
            .try_init()
    } else {
        use std::io::IsTerminal as _;
        fmt()
            .with_writer(io::stderr)
            .with_ansi(io::stderr().is_terminal() && colour())
            .with_max_level(tracing::Level::WARN)
            .try_init()
    };
    if let Err(e) = result {
        eprintln!("blackstart: logging is off: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let CliError::Invalid { path, diags } = &e {
                eprint!("{}", diags.render(path));
            }
            eprintln!("blackstart: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn display(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// The largest JSON plan `apply --plan` reads: a 100,000-system plan is
/// about 100 MB.
const MAX_PLAN_BYTES: u64 = 256 * 1024 * 1024;

/// Reads a playbook (or standard input), refusing what is not a regular
/// file or is over the size limit before reading a byte of it.
fn read_limited(path: &Path) -> Result<Vec<u8>, CliError> {
    read_regular(path, MAX_INPUT_BYTES as u64, "a playbook")
}

/// Reads a file that must be regular and at most `limit` bytes: a FIFO
/// would hang the read and a device such as /dev/zero never ends, so both
/// are refused after an open that cannot block (O_NONBLOCK) and an fstat.
/// Standard input (`-`) is read up to one byte past the limit.
fn read_regular(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, CliError> {
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let name = display(path);
    let read_err = |source| CliError::Read {
        path: name.clone(),
        source,
    };
    let too_large = |size| CliError::TooLarge {
        path: name.clone(),
        what: what.to_owned(),
        size,
        limit,
    };
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    } else {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(path)
            .map_err(read_err)?;
        let meta = file.metadata().map_err(read_err)?;
        let kind = meta.file_type();
        let not_regular = if kind.is_dir() {
            Some("a directory")
        } else if kind.is_fifo() {
            Some("a FIFO (named pipe; for standard input give `-`)")
        } else if kind.is_char_device() || kind.is_block_device() {
            Some("a device")
        } else if kind.is_socket() {
            Some("a socket")
        } else if !kind.is_file() {
            Some("not a regular file")
        } else {
            None
        };
        if let Some(kind) = not_regular {
            return Err(CliError::NotRegular {
                path: name,
                what: what.to_owned(),
                kind,
            });
        }
        if meta.len() > limit {
            return Err(too_large(meta.len()));
        }
        // Its size, so the text is read into one allocation of that size.
        bytes.reserve_exact(usize::try_from(meta.len()).unwrap_or(0));
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    }
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

fn load(path: &Path) -> Result<Validated, CliError> {
    let bytes = read_limited(path)?;
    blackstart_model::load_owned(bytes).map_err(|diags| CliError::Invalid {
        path: display(path),
        diags,
    })
}

fn print_warnings(path: &Path, validated: &Validated) {
    let warnings = validated.warnings();
    if !warnings.items.is_empty() {
        eprint!("{}", warnings.render(&display(path)));
    }
}

pub(crate) fn write_output(output: Option<&Path>, text: &str) -> Result<(), CliError> {
    match output {
        Some(path) => std::fs::write(path, text).map_err(|source| CliError::Write {
            path: path.display().to_string(),
            source,
        }),
        None => {
            let mut out = io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth reporting.
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CliError::Write {
                    path: "standard output".to_owned(),
                    source: e,
                }),
                _ => Ok(()),
            }
        }
    }
}

fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Validate { file, format } => validate(&file, format),
        Command::Check {
            file,
            sites,
            format,
        } => check_command(&file, &sites, format),
        Command::Plan {
            file,
            output,
            format,
        } => plan_command(file, output, format),
        Command::Diff {
            base,
            new,
            format,
            exit_code,
        } => diff_command(base, new, format, exit_code),
        Command::Apply(args) => apply_command(args),
        Command::Drill(args) => drill_command(args),
        Command::Resume(a) => runs::resume(&a.state.state_dir, &a.run, &a.trust.into(), a.by),
        Command::Status {
            run,
            target,
            state,
            format,
        } => {
            let json = matches!(format, DiagFormat::Json);
            if target.k8s {
                let records = cluster::journal(&run, target.namespace)?;
                runs::show_status(&run, &records, false, json)
            } else {
                runs::status(&state.state_dir, &run, json)
            }
        }
        Command::Audit(a) => {
            let verify = a.verify.then_some(a.head.as_deref());
            if a.target.k8s {
                let records = cluster::journal(&a.run, a.target.namespace)?;
                match verify {
                    Some(head) => {
                        runs::verify_records(&format!("RestartRun {}", a.run), &records, head)
                    }
                    None => runs::show_audit(&records, a.format),
                }
            } else {
                runs::audit(&a.state.state_dir, &a.run, verify, a.format)
            }
        }
        Command::Serve(args) => serve_runs(args),
        Command::Approve(args) => decisions::approve(args),
        Command::Deny(args) => decisions::deny(args),
        Command::Confirm(args) => decisions::confirm(args),
        Command::Retry(args) => decisions::retry(args),
        Command::Revoke(args) => decisions::revoke(args),
        Command::Pause(args) => decisions::pause(args),
        Command::Rollback(args) => decisions::rollback(args),
        Command::Operator {
            namespace,
            listen,
            lease_namespace,
            identity,
        } => cluster::operator(namespace, listen, lease_namespace, identity),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "blackstart", &mut out);
            write_output(None, &String::from_utf8_lossy(&out))?;
            Ok(exit::SUCCESS)
        }
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(|source| CliError::Write {
                    path: "standard output".to_owned(),
                    source,
                })?;
            write_output(None, &String::from_utf8_lossy(&out))?;
            Ok(exit::SUCCESS)
        }
    }
}

/// `apply FILE`: a real run, of the reviewed plan when `--plan` names one.
/// `serve`: the token read from its file (never from the command line,
/// where `ps` shows it), then the server.
fn serve_runs(args: ServeArgs) -> Result<u8, CliError> {
    let token = match &args.token_file {
        None => None,
        Some(path) => {
            let bytes = read_regular(path, 4096, "a token file")?;
            let token = String::from_utf8_lossy(&bytes).trim().to_owned();
            if token.len() < 16 || token.chars().any(|c| !c.is_ascii_graphic()) {
                return Err(CliError::Usage(format!(
                    "{}: a token is at least 16 printable ASCII characters, without spaces (e.g. `openssl rand -hex 32`)",
                    path.display()
                )));
            }
            Some(token)
        }
    };
    serve::serve(serve::Options {
        listen: args.listen,
        token,
        runs: if args.k8s {
            Err(args.namespace)
        } else {
            Ok(args.state.state_dir)
        },
    })
}

fn apply_command(a: ApplyArgs) -> Result<u8, CliError> {
    let validated = load(&a.file)?;
    print_warnings(&a.file, &validated);
    runs::apply(
        Plan::build(validated),
        &a.file,
        a.plan.as_deref(),
        &a.state.state_dir,
        a.run_id,
        a.by,
    )
}

/// `check FILE`: the preflight, for every site or the ones named.
fn check_command(file: &Path, sites: &[String], format: DiagFormat) -> Result<u8, CliError> {
    let validated = load(file)?;
    print_warnings(file, &validated);
    check::check(
        &Plan::build(validated),
        sites,
        matches!(format, DiagFormat::Json),
    )
}

/// `diff BASE NEW`: what a playbook change does to the restart.
fn diff_command(
    base: PathBuf,
    new: PathBuf,
    format: DiffFormat,
    exit_code: bool,
) -> Result<u8, CliError> {
    let new_plan = {
        let v = load(&new)?;
        print_warnings(&new, &v);
        Plan::build(v)
    };
    let base_plan = if base.exists() || base == Path::new("-") {
        Plan::build(load(&base)?)
    } else {
        eprintln!(
            "blackstart: {} does not exist; comparing with an empty playbook",
            base.display()
        );
        empty_plan(&new_plan)
    };
    let d = diff::diff(&base_plan, &new_plan);
    let text = match format {
        DiffFormat::Markdown => d.markdown(),
        DiffFormat::Text => d.text(),
        DiffFormat::Json => {
            let mut s = serde_json::to_string_pretty(&d).expect("a diff always serializes");
            s.push('\n');
            s
        }
    };
    write_output(None, &text)?;
    Ok(if exit_code && !d.is_empty() {
        exit::FAILED
    } else {
        exit::SUCCESS
    })
}

/// `plan FILE`: the dry-run plan, in the format asked for.
fn plan_command(
    file: PathBuf,
    output: Option<PathBuf>,
    format: Option<PlanFormat>,
) -> Result<u8, CliError> {
    let validated = load(&file)?;
    print_warnings(&file, &validated);
    let plan = Plan::build(validated);
    let format = format.unwrap_or_else(|| match output.as_ref().and_then(|o| o.extension()) {
        Some(ext) if ext == "json" => PlanFormat::Json,
        _ => PlanFormat::Text,
    });
    let text = match format {
        PlanFormat::Json => {
            write_json_output(output.as_deref(), &plan)?;
            // The process ends next and the kernel takes its memory back
            // at once; freeing a large plan piece by piece takes longer
            // (0.2 s for 100,000 systems).
            std::mem::forget(plan);
            return Ok(exit::SUCCESS);
        }
        PlanFormat::Text => render::text(&plan),
        PlanFormat::Markdown => render::markdown(&plan),
        PlanFormat::Mermaid => render::mermaid(&plan),
        PlanFormat::Dot => render::dot(&plan),
    };
    write_output(output.as_deref(), &text)?;
    Ok(exit::SUCCESS)
}

/// The JSON plan, written as it is rendered into FILE (or standard output).
fn write_json_output(output: Option<&Path>, plan: &Plan) -> Result<(), CliError> {
    let failed = |path: &str, source: io::Error| CliError::Write {
        path: path.to_owned(),
        source,
    };
    match output {
        Some(path) => {
            let file =
                std::fs::File::create(path).map_err(|e| failed(&path.display().to_string(), e))?;
            let mut out = io::BufWriter::with_capacity(1 << 20, file);
            render::write_json(plan, &mut out)
                .and_then(|()| out.flush())
                .map_err(|e| failed(&path.display().to_string(), e))
        }
        None => {
            let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
            match render::write_json(plan, &mut out).and_then(|()| out.flush()) {
                // A closed pipe (`| head`) is not an error worth reporting.
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    Err(failed("standard output", e))
                }
                _ => Ok(()),
            }
        }
    }
}

/// `drill FILE`: the simulated plant, with the faults asked for.
fn drill_command(args: DrillArgs) -> Result<u8, CliError> {
    let DrillArgs {
        file,
        fail,
        flap,
        slow,
        speed,
        manual_approvals,
        require_signatures,
        state,
        run_id,
    } = args;
    let validated = load(&file)?;
    print_warnings(&file, &validated);
    let plan = Plan::build(validated);
    if !(speed.is_finite() && speed >= 0.01) {
        return Err(CliError::Usage(format!(
            "--speed must be a number of at least 0.01 (100 times slower than real time), not {speed}"
        )));
    }
    let mut faults = std::collections::HashMap::new();
    for (ids, fault) in [
        (fail, blackstart_sim::Fault::Fail),
        (flap, blackstart_sim::Fault::Flap),
        (slow, blackstart_sim::Fault::Slow),
    ] {
        for id in ids {
            if !plan.systems().any(|(_, s)| s.id == id) {
                return Err(CliError::Usage(format!(
                    "{} has no system `{id}` to inject a fault into",
                    file.display()
                )));
            }
            faults.insert(id, fault);
        }
    }
    runs::drill(
        plan,
        &file,
        &faults,
        speed,
        &state.state_dir,
        run_id,
        match (manual_approvals, require_signatures) {
            (false, _) => runs::Deciders::StandIn,
            (true, false) => runs::Deciders::People,
            (true, true) => runs::Deciders::PeopleSigning,
        },
    )
}

/// The plan of a playbook that does not exist yet: no stages, no systems.
fn empty_plan(like: &Plan) -> Plan {
    Plan {
        playbook: like.playbook.clone(),
        playbook_hash: String::new(),
        worst_case: None,
        estimated_duration: blackstart_model::Duration::ZERO,
        critical_path: Vec::new(),
        env: Vec::new(),
        inherit_env: Vec::new(),
        roles: None,
        connections: Default::default(),
        site_names: Default::default(),
        notify: Vec::new(),
        stages: Vec::new(),
    }
}

fn validate(file: &Path, format: DiagFormat) -> Result<u8, CliError> {
    let name = display(file);
    let bytes = read_limited(file)?;
    let result = blackstart_model::load_owned(bytes);
    let diags = match &result {
        Ok(v) => v.warnings().clone(),
        Err(d) => d.clone(),
    };
    match format {
        DiagFormat::Json => {
            let report = serde_json::json!({
                "file": name,
                "valid": result.is_ok(),
                "errors": diags.error_count(),
                "warnings": diags.warning_count(),
                "diagnostics": diags.items,
            });
            let mut s = serde_json::to_string_pretty(&report).expect("a report always serializes");
            s.push('\n');
            write_output(None, &s)?;
        }
        DiagFormat::Text => {
            eprint!("{}", diags.render(&name));
            if let Ok(v) = &result {
                let spec = &v.playbook().spec;
                write_output(
                    None,
                    &format!(
                        "{name}: valid: {} systems at {} sites in {} stages{}\n",
                        spec.systems.len(),
                        spec.sites.len(),
                        spec.stages.len(),
                        match diags.warning_count() {
                            0 => String::new(),
                            n => format!(", {n} warning(s)"),
                        }
                    ),
                )?;
            } else {
                eprintln!("{name}: {diags}");
            }
        }
    }
    let code = if result.is_ok() {
        exit::SUCCESS
    } else {
        exit::INVALID
    };
    // The process ends next: a large playbook is not freed piece by piece.
    std::mem::forget(result);
    Ok(code)
}
