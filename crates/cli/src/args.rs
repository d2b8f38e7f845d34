//! The command line: every command, option and `--help` text, as clap
//! parses them. What each command does is in `main.rs` and `runs/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::runs;

#[derive(Debug, Parser)]
#[command(
    name = "blackstart",
    version,
    about = "Controlled restarts after a cyber incident: site by site, in dependency order, each step proven healthy.",
    long_about = "blackstart brings a company's systems back after they were shut down on purpose: \
                  the stages of a playbook run in order, each system starts only when what it leans on \
                  is healthy, and a gate decides whether the next wave may begin.",
    after_help = "Examples:\n  blackstart validate playbooks/global-restart.yaml\n  blackstart plan playbooks/global-restart.yaml --format markdown\n  blackstart diff main.yaml playbooks/global-restart.yaml --exit-code\n\nExit codes: 0 success, 1 run failed, rolled back or paused (diff: changed), 2 invalid input or usage, 3 stale plan, 4 run locked, 130 interrupted by a second Ctrl-C."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// How runs report progress: `text` (a live view on a terminal, plain
    /// lines otherwise) or `json` (one JSON object per transition, for machines).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Parse and check a playbook; report every problem with file:line:col.
    #[command(
        after_help = "Examples:\n  blackstart validate playbooks/global-restart.yaml\n  blackstart validate --format json playbooks/local-lab.yaml\n  cat playbook.yaml | blackstart validate -\n\nExits 2 when the playbook has any error; warnings alone exit 0."
    )]
    Validate {
        /// The playbook file, or `-` for standard input.
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = DiagFormat::Text)]
        format: DiagFormat,
    },
    /// The preflight: what a restart needs is there, before it begins; changes nothing.
    #[command(
        after_help = "Examples:\n  blackstart check playbooks/global-restart.yaml\n  blackstart check playbooks/global-restart.yaml --site nitra --site pune --format json\n\nChanges nothing. Checks that every ${env:} the plan reads is set (never printing a value);\nthat each site's ssh connection logs in with the pinned host key and each kube context\nloads; that every exec command is present where it runs (this machine, or the site's host\nover ssh); that every kubernetes workload exists and may be read and patched\n(SelfSubjectAccessReview); and that every host an http or tcp step or probe names resolves.\nA site reached only through the operator's Secret is listed as not checked.\nExits 0 when every check passed, 1 when one failed, 2 for a bad playbook."
    )]
    Check {
        /// The playbook file, or `-` for standard input.
        file: PathBuf,
        /// Only the systems at this site (repeat for more).
        #[arg(long = "site", value_name = "SITE")]
        sites: Vec<String>,
        #[arg(long, value_enum, default_value_t = DiagFormat::Text)]
        format: DiagFormat,
    },
    /// Compile a playbook into its dry-run plan: stages, order, layers, gates,
    /// rollback order, critical path and estimated duration.
    #[command(
        after_help = "Examples:\n  blackstart plan playbooks/global-restart.yaml\n  blackstart plan playbooks/global-restart.yaml -o plan.json\n  blackstart plan playbooks/global-restart.yaml --format markdown > plan.md\n  blackstart plan playbooks/global-restart.yaml --format dot | dot -Tsvg > plan.svg\n\nThe same playbook always gives byte-identical output."
    )]
    Plan {
        /// The playbook file, or `-` for standard input.
        file: PathBuf,
        /// Write the plan here instead of standard output.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Output format [default: json when --output ends in .json, else text]
        #[arg(long, value_enum)]
        format: Option<PlanFormat>,
    },
    /// Show what a change to a playbook does to the restart: systems added,
    /// removed or moved, dependencies, gates, order and estimated duration.
    #[command(
        after_help = "Examples:\n  blackstart diff old.yaml playbooks/global-restart.yaml\n  git show main:playbooks/global-restart.yaml > /tmp/base.yaml\n  blackstart diff /tmp/base.yaml playbooks/global-restart.yaml --format text --exit-code\n\nA BASE that does not exist is read as an empty playbook, so a new file diffs as all added."
    )]
    Diff {
        /// The playbook before the change.
        base: PathBuf,
        /// The playbook after the change.
        new: PathBuf,
        #[arg(long, value_enum, default_value_t = DiffFormat::Markdown)]
        format: DiffFormat,
        /// Exit 1 when the restart changed, 0 when it did not.
        #[arg(long)]
        exit_code: bool,
    },
    /// Run a playbook: stage by stage, each system started once what it
    /// depends on is healthy, each gate held until it passes.
    #[command(
        after_help = "Examples:\n  blackstart apply playbooks/local-lab.yaml\n  blackstart plan playbooks/global-restart.yaml -o plan.json   # reviewed in a PR\n  blackstart apply playbooks/global-restart.yaml --plan plan.json --run-id ir-2025-09\n\nEvery ${env:NAME} the playbook reads must be set before anything starts (else exit 2); steps\nget a clean environment: PATH, HOME, LANG, TZ, what they declare, and `inheritEnv`.\nCtrl-C or SIGTERM pauses gracefully (no new starts; steps under way finish); `resume` carries\non. A second one kills the steps under way, journals them interrupted and exits 130.\nFrom another terminal: `status`, `approve`, `confirm`.\nExits 0 when the run succeeds, 1 when it fails, rolls back or pauses, 3 when --plan no longer matches, 4 when the run is locked."
    )]
    Apply(ApplyArgs),
    /// Run a playbook against the simulated plant: the real engine, probes and
    /// journal, every system a small HTTP service on 127.0.0.1.
    #[command(
        after_help = "Examples:\n  blackstart drill playbooks/global-restart.yaml\n  blackstart drill playbooks/global-restart.yaml --fail wolv-engine-mes --speed 2000\n  blackstart drill playbooks/third-party-reconnect.yaml --flap minimal-feed --manual-approvals\n\nEach system becomes healthy after its expectedDuration divided by --speed. Gates are approved and\nmanual steps confirmed by a stand-in (one member per role, unsigned) unless --manual-approvals;\nwith --require-signatures too, only signed decisions count, as in a real run. Exits like apply."
    )]
    Drill(DrillArgs),
    /// Carry on a paused or interrupted run from its journal.
    #[command(
        after_help = "Examples:\n  blackstart resume ir-2025-09\n  blackstart resume ir-2025-09 --playbook playbooks/global-restart.yaml\n\nThe playbook file `apply` ran is read again and planned: the run resumes only if that\nplan is the journal's (else exit 3). With neither that file nor --playbook readable,\n--trust-journal resumes from the journal's own copy of the plan.\n\nSystems already healthy are not started again. A start a crash cut short is waited for\nwhile its process still runs, then probed; it is started again only when it certainly\nended and health says the system is down, or when its action is idempotent. A system\nwithout health checks waits for `confirm` or `retry`. A run whose rollback began\nfinishes its rollback."
    )]
    Resume(ResumeArgs),
    /// Stop everything a paused, failed or finished run started, dependents first.
    #[command(
        after_help = "Examples:\n  blackstart rollback ir-2025-09 --by alice --dry-run   # what it would stop, in order\n  blackstart rollback ir-2025-09 --by alice --key ~/.ssh/id_ed25519 --reason \"EDR alert\"\n\nWith spec.roles, --by names a member, and a member with an enrolled key signs (--key, or\n--message then --signature); the signature binds the journal's head. The rollback is\njournaled, with what it will stop, before the first stop; a rollback cut short (a\ncrash, Ctrl-C) is finished by running it again, or by `resume`, and no system is stopped\ntwice. A run rolled back already is left as it is.\nExits 0 when every stop action succeeded, 1 otherwise, 3 when the playbook no longer\nmatches the journal."
    )]
    Rollback(RollbackArgs),
    /// Revoke a member's key for this run: its decisions are refused from then on.
    #[command(
        after_help = "Examples:\n  blackstart revoke ir-2025-09 --key SHA256:T4KOyv… --by carol --reason \"alice's laptop stolen\" --sign-with ~/.ssh/id_ecdsa\n\nFor a key that may be compromised (a stolen laptop during a cyber incident). Taken from a\nmember of a role the key's owner is not in, signed like any decision (the signature binds\nthe journal's head); journaled, and every later decision signed with that key is refused.\nLike approve, it reaches the process that drives the run, or the next resume."
    )]
    Revoke(RevokeArgs),
    /// Pause a run another process drives, from any terminal.
    #[command(
        after_help = "Examples:\n  blackstart pause ir-2025-09 --by alice --reason \"EDR alert at Nitra\" --key ~/.ssh/id_ed25519\n  blackstart pause dealer-restart-1 --by alice --k8s --namespace blackstart-demo   # a RestartRun\n\nThe same graceful pause as Ctrl-C in the terminal that drives the run: no new starts,\nsteps under way finish; the journal names who asked. `resume` carries on. With\nspec.roles, only members of a role may pause, and a member with an enrolled key signs\n(the signature binds the journal's head)."
    )]
    Pause(PauseArgs),
    /// Start again a failed system, a held site, or a start a crash left unknown.
    #[command(
        after_help = "Examples:\n  blackstart retry ir-2025-09 wolv-plc-gateway --by olga\n  blackstart retry ir-2025-09 --site nitra --by alice --key ~/.ssh/id_ed25519\n\nFor a system without health checks whose start was cut short by a crash: the run waits\nfor `confirm` (it is up) or `retry` (start it again, as a new attempt). Works from any\nterminal while `apply` or `resume` waits, like `approve`.\n\n--site: a site held by a failure (failureDomain: site) starts again, once the run has ended\nDegraded or while it is paused: its systems that are not Healthy and every Blocked system\ngo back to Pending with a new budget of attempts, their stages' gates wait for their\napprovals again, and this process drives the run on; it ends Succeeded when all is healthy.\n\nA Failed system (an optional one, one whose site's rest is Healthy, or one whose failure\npaused the run) starts again the same way, once the run has ended Degraded or while it is\npaused, with every Blocked system: `blackstart retry ir-2025-09 warranty --by alice`."
    )]
    Retry(RetryArgs),
    /// Where a run stands: the run's, each stage's and each system's phase.
    #[command(
        after_help = "Examples:\n  blackstart status ir-2025-09\n  blackstart status ir-2025-09 --format json | jq .phase\n  blackstart status dealer-restart-1 --k8s --namespace blackstart-demo   # a RestartRun, from its whole journal"
    )]
    Status {
        run: String,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        state: StateDir,
        #[arg(long, value_enum, default_value_t = DiagFormat::Text)]
        format: DiagFormat,
    },
    /// Print a completion script for a shell.
    #[command(
        after_help = "Examples:\n  blackstart completions bash > /etc/bash_completion.d/blackstart\n  blackstart completions zsh > \"${fpath[1]}/_blackstart\"\n  blackstart completions fish > ~/.config/fish/completions/blackstart.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff); `cargo xtask man` writes it to target/man/.
    #[command(hide = true)]
    Man,
    /// Run the Kubernetes operator: Playbooks and RestartRuns in, restarts out.
    #[command(
        after_help = "Examples:\n  blackstart operator\n  blackstart operator --namespace restart --listen 0.0.0.0:8080\n\nThe operator watches RestartRuns (in NS, or in every namespace), plans each\nfrom its Playbook, and drives it with the same engine as `apply`, keeping\nthe run's journal in ConfigMaps it owns and a summary in its status. Replicas elect a leader on the\nLease blackstart-system/blackstart-operator (also when run outside the cluster); only\nthe leader drives runs, and it stops when it cannot confirm it still holds the Lease. It serves /metrics\n(Prometheus), /healthz and /readyz on --listen. It talks to the cluster of\nits pod, or of the kubeconfig when run outside one.\n\nInstall the CRDs and RBAC from manifests/ first; see the README's\n\"Kubernetes operator\" section."
    )]
    Operator {
        /// Watch RestartRuns in this namespace only; every namespace when not given.
        #[arg(long, value_name = "NS")]
        namespace: Option<String>,
        /// Where /metrics, /healthz and /readyz are served.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// The namespace of the leader-election Lease: the same for every replica,
        /// in the cluster or not, whatever the kubeconfig's default namespace.
        #[arg(long, value_name = "NS", default_value = blackstart_operator::LEASE_NAMESPACE)]
        lease_namespace: String,
        /// This replica's name in the Lease and in Events; $POD_NAME or the host name by default.
        #[arg(long, value_name = "NAME")]
        identity: Option<String>,
    },
    /// Approve a stage's gate, from any terminal, while `apply` waits.
    #[command(
        after_help = "Examples:\n  blackstart approve ir-2025-09 engine-plant --by alice --role incident-commander --key ~/.ssh/id_ed25519\n  blackstart approve ir-2025-09 engine-plant --by alice --role incident-commander --key ~/.ssh/id_ed25519.pub   # through ssh-agent\n  blackstart approve ir-2025-09 engine-plant --by alice --role incident-commander --message > decision.txt\n  ssh-keygen -Y sign -n blackstart -f ~/.ssh/id_ed25519 decision.txt\n  blackstart approve ir-2025-09 engine-plant --by alice --role incident-commander --signature decision.txt.sig\n  blackstart approve ir-2025-09 engine-plant --by alice --k8s --namespace restart --key ~/.ssh/id_ed25519\n\nAn approval is taken only while every system of the stage is healthy (its gate waits),\nfrom a member of the role (with spec.roles), one role per person per gate; a member\nwith an enrolled key must sign. The signature covers run, playbook, stage, role, person,\nnote and the wait it answers, so it is good for this one wait only. Refusals exit 2 and\nsay why. --role may be left out when the gate needs a single role. With --k8s the\napproval is appended to the RestartRun's spec.approvals."
    )]
    Approve(ApproveArgs),
    /// Say no at a stage's gate: the gate fails and its onFailure applies.
    #[command(
        after_help = "Examples:\n  blackstart deny ir-2025-09 engine-plant --by carol --role ciso --reason \"EDR still alerting on wolv-mes\" --key ~/.ssh/id_ecdsa\n\nTaken, like an approval, while the gate waits, from a member of a role the gate needs;\nsigned alike."
    )]
    Deny(DenyArgs),
    /// Confirm a manual step was done.
    #[command(
        after_help = "Examples:\n  blackstart confirm ir-2025-09 wolv-plc-gateway --by dave --key ~/.ssh/id_ed25519\n  blackstart confirm dealer-restart-1 parts-db --by dave --k8s --namespace restart\n\nTaken only for a system that waits for it: a manual step, or a start a crash left\nunknown on a system without health checks. With spec.roles, from a member of the manual\nstep's role (or of a role of the stage's gate); signed like an approval."
    )]
    Confirm(ConfirmArgs),
    /// The run's timeline for the post-incident review, or a check of its hash chain.
    #[command(
        after_help = "Examples:\n  blackstart audit ir-2025-09\n  blackstart audit ir-2025-09 --format markdown > audit.md\n  blackstart audit ir-2025-09 --format html > audit.html   # the auditor's report, one file\n  blackstart audit ir-2025-09 --verify\n  blackstart audit ir-2025-09 --verify --head 3f1c…\n  blackstart audit dealer-restart-1 --k8s --namespace blackstart-demo --verify   # a RestartRun's journal, from its ConfigMaps\n\n--verify prints `head: SEQ SHA256` and exits 0 when the chain is intact; it exits 1 and\nsays why when a record was changed, the journal is empty or ends in an unfinished write,\nrecords follow that do not continue the chain, or the --head record is not in it."
    )]
    Audit(AuditArgs),
    /// The incident room: a read-only web page of every run, live from the journal.
    #[command(
        after_help = "Examples:\n  blackstart serve                                  # http://127.0.0.1:8080/, runs in .blackstart\n  blackstart serve --state-dir /srv/restart --listen 127.0.0.1:9000\n  blackstart serve --listen 0.0.0.0:8080 --token-file /etc/blackstart/room-token   # behind TLS\n  blackstart serve --k8s --namespace restart        # the cluster's RestartRuns\n\n/ lists the runs; /runs/ID is a run's page: stages and systems by site, the dependency\ngraph, the timeline against the estimate, what each gate waits for with the command that\ndecides it, failures with their last output, and who decided what. JSON at /api/runs and\n/api/runs/ID; Server-Sent Events at /api/runs/ID/events. It decides nothing. It binds\nloopback unless told otherwise; any other address needs --token-file (give the token as\n`Authorization: Bearer TOKEN`, or open /?token=TOKEN once in a browser) and TLS in front."
    )]
    Serve(ServeArgs),
}

/// `serve`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where to listen.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// A file holding the bearer token every request must carry; needed to
    /// listen beyond loopback.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Show the cluster's RestartRuns instead of the runs in --state-dir.
    #[arg(long)]
    pub(crate) k8s: bool,
    /// The RestartRuns' namespace; the kubeconfig's when not given.
    #[arg(long, requires = "k8s", value_name = "NS")]
    pub(crate) namespace: Option<String>,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `apply`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// The playbook file.
    pub(crate) file: PathBuf,
    /// A reviewed JSON plan: refuse (exit 3) if FILE no longer has its hash.
    #[arg(long, value_name = "PLAN.json")]
    pub(crate) plan: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) state: StateDir,
    /// The run's id [default: the playbook's name and the start time].
    #[arg(long, value_name = "ID")]
    pub(crate) run_id: Option<String>,
    /// Who starts the run; recorded in the journal.
    #[arg(long, value_name = "NAME")]
    pub(crate) by: Option<String>,
}

/// `resume`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ResumeArgs {
    pub(crate) run: String,
    /// Who resumes the run; recorded in the journal.
    #[arg(long, value_name = "NAME")]
    pub(crate) by: Option<String>,
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `rollback`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    pub(crate) run: String,
    /// Who asks for the rollback; recorded in the journal.
    #[arg(long, value_name = "NAME")]
    pub(crate) by: Option<String>,
    /// Why; recorded in the journal.
    #[arg(long, requires = "by")]
    pub(crate) reason: Option<String>,
    /// Print what would be stopped, in order, and change nothing.
    #[arg(long, conflicts_with_all = ["key", "signature", "message", "k8s"])]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) signing: runs::Signing,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `revoke`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct RevokeArgs {
    pub(crate) run: String,
    /// The key's fingerprint, as `audit` and `plan` show it: SHA256:…
    #[arg(long, value_name = "SHA256")]
    pub(crate) key: String,
    /// Who revokes; recorded in the journal.
    #[arg(long)]
    pub(crate) by: String,
    /// Why; recorded in the journal.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Sign with this key (as --key does for approve).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["signature", "message"])]
    pub(crate) sign_with: Option<PathBuf>,
    /// A signature of --message's text made elsewhere.
    #[arg(long, value_name = "FILE", conflicts_with = "message")]
    pub(crate) signature: Option<PathBuf>,
    /// Print the exact text to sign, and do nothing else.
    #[arg(long)]
    pub(crate) message: bool,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `pause`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct PauseArgs {
    pub(crate) run: String,
    /// Who asks; recorded in the journal.
    #[arg(long)]
    pub(crate) by: String,
    /// Why; recorded in the journal.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    #[command(flatten)]
    pub(crate) signing: runs::Signing,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `retry`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct RetryArgs {
    pub(crate) run: String,
    /// The system to start again.
    #[arg(required_unless_present = "site", conflicts_with = "site")]
    pub(crate) system: Option<String>,
    /// The held site to start again.
    #[arg(long, value_name = "SITE")]
    pub(crate) site: Option<String>,
    /// Who asks; recorded in the journal.
    #[arg(long)]
    pub(crate) by: String,
    #[command(flatten)]
    pub(crate) signing: runs::Signing,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `approve`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ApproveArgs {
    pub(crate) run: String,
    pub(crate) stage: String,
    /// Who approves; recorded in the journal.
    #[arg(long)]
    pub(crate) by: String,
    /// The gate role approved as.
    #[arg(long)]
    pub(crate) role: Option<String>,
    #[command(flatten)]
    pub(crate) signing: runs::Signing,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `deny`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DenyArgs {
    pub(crate) run: String,
    pub(crate) stage: String,
    /// Who denies; recorded in the journal.
    #[arg(long)]
    pub(crate) by: String,
    /// The gate role denied as.
    #[arg(long)]
    pub(crate) role: Option<String>,
    /// Why; recorded in the journal and shown where the run stopped.
    #[arg(long)]
    pub(crate) reason: String,
    #[command(flatten)]
    pub(crate) signing: runs::Signing,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `confirm`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfirmArgs {
    pub(crate) run: String,
    pub(crate) system: String,
    /// Who confirms; recorded in the journal.
    #[arg(long)]
    pub(crate) by: String,
    #[command(flatten)]
    pub(crate) signing: runs::Signing,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// `audit`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    pub(crate) run: String,
    /// Check every record against its hash and the chain, and print the head.
    #[arg(long)]
    pub(crate) verify: bool,
    /// With --verify: fail unless the record with this hash (a head kept
    /// earlier, as notifications carry it) is in the chain.
    #[arg(long, value_name = "SHA256", requires = "verify")]
    pub(crate) head: Option<String>,
    #[arg(long, value_enum, default_value_t = AuditFormat::Text)]
    pub(crate) format: AuditFormat,
    #[command(flatten)]
    pub(crate) target: Target,
    #[command(flatten)]
    pub(crate) state: StateDir,
}

/// How `resume` and `rollback` make sure the journal's plan is the playbook's.
#[derive(Debug, clap::Args)]
pub(crate) struct TrustArgs {
    /// The playbook to check the journal against [default: the file `apply` ran].
    #[arg(long, value_name = "FILE")]
    pub(crate) playbook: Option<PathBuf>,
    /// Go on from the journal's own copy of the plan when no playbook file
    /// can be read (the journal cannot prove itself: say why you trust it).
    #[arg(long)]
    pub(crate) trust_journal: bool,
}

/// `drill`'s arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DrillArgs {
    /// The playbook file.
    pub(crate) file: PathBuf,
    /// Keep this system unhealthy (repeatable).
    #[arg(long, value_name = "SYSTEM")]
    pub(crate) fail: Vec<String>,
    /// Make this system flap between healthy and not (repeatable).
    #[arg(long, value_name = "SYSTEM")]
    pub(crate) flap: Vec<String>,
    /// Make this system ten times slower to become healthy (repeatable).
    #[arg(long, value_name = "SYSTEM")]
    pub(crate) slow: Vec<String>,
    /// How much faster than real time the plant runs.
    #[arg(long, default_value_t = 1000.0)]
    pub(crate) speed: f64,
    /// Wait for `approve` and `confirm` as in a real run.
    #[arg(long)]
    pub(crate) manual_approvals: bool,
    /// With --manual-approvals: take signed decisions only, from members
    /// whose keys are enrolled, as a real run does (rehearse the keys too).
    #[arg(long, requires = "manual_approvals")]
    pub(crate) require_signatures: bool,
    #[command(flatten)]
    pub(crate) state: StateDir,
    /// The run's id [default: drill-, the playbook's name and the start time].
    #[arg(long, value_name = "ID")]
    pub(crate) run_id: Option<String>,
}

/// Where a decision goes: a run in --state-dir, or with --k8s a
/// RestartRun in the cluster.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// Decide for a RestartRun in the cluster (the kubeconfig's) instead
    /// of a run in --state-dir.
    #[arg(long)]
    pub(crate) k8s: bool,
    /// The RestartRun's namespace; the kubeconfig's when not given.
    #[arg(long, requires = "k8s", value_name = "NS")]
    pub(crate) namespace: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StateDir {
    /// Where runs are kept.
    #[arg(long, value_name = "DIR", default_value = ".blackstart")]
    pub(crate) state_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AuditFormat {
    Text,
    Markdown,
    /// The auditor's report: one self-contained HTML file (timeline
    /// against the plan, gates and who approved with which key, the
    /// journal's verification and head, failures and rollbacks).
    Html,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DiagFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PlanFormat {
    Text,
    Json,
    Markdown,
    Mermaid,
    Dot,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum DiffFormat {
    Markdown,
    Text,
    Json,
}
