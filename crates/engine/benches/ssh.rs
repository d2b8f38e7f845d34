//! What an exec probe costs at a site reached over ssh: over the site's
//! one shared connection (what a run does), over a fresh connection each
//! time (what a run would cost without the ControlMaster), and run locally
//! for reference. Against a real sshd on 127.0.0.1 (Debian's
//! openssh-server, which `cargo xtask lab` installs), with ed25519 keys,
//! so the figures are the floor: a plant across a WAN adds its round trips
//! to every fresh login. `cargo bench -p blackstart-engine --bench ssh`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use blackstart_engine::secrets::Secrets;
use blackstart_engine::step::{StepContext, run_check, ssh};
use blackstart_model::playbook::{Check, Connect, Exec, SshConnect};
use blackstart_tests::sshd::{Sshd, user};

/// Mean and median of `samples`, in milliseconds.
fn summary(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len().max(1) as f64;
    (mean, ms(samples[samples.len() / 2]))
}

fn main() {
    let sshd = match Sshd::start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot run the ssh benchmark: {e}");
            std::process::exit(1);
        }
    };
    let connections: BTreeMap<String, Connect> = [(
        "plant".to_owned(),
        Connect {
            ssh: Some(SshConnect {
                host: "127.0.0.1".into(),
                port: Some(sshd.port),
                user: Some(user()),
                host_key: sshd.host_key(),
                identity_file: Some(sshd.identity().display().to_string()),
            }),
            kubernetes: None,
        },
    )]
    .into();
    let probe = Check::Exec(Exec {
        command: vec!["true".into()],
        ..Exec::default()
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let cx = StepContext::new(
        Secrets::with_lookup(std::sync::Arc::new(|_| None)),
        Duration::from_secs(30),
    )
    .expect("a step context");
    let (reused, fresh, local) = rt.block_on(async {
        let time = |cx: StepContext| {
            let probe = probe.clone();
            async move {
                let t = Instant::now();
                let outcome = run_check(&probe, &cx).await;
                assert!(outcome.ok, "the probe failed: {}", outcome.detail);
                t.elapsed()
            }
        };
        let sites = ssh::Sites::new(&connections);
        let shared = StepContext {
            remote: sites.get("plant"),
            ..cx.clone()
        };
        time(shared.clone()).await; // logs in once
        let mut reused = Vec::new();
        for _ in 0..200 {
            reused.push(time(shared.clone()).await);
        }
        let mut fresh = Vec::new();
        for _ in 0..30 {
            let sites = ssh::Sites::new(&connections);
            fresh.push(
                time(StepContext {
                    remote: sites.get("plant"),
                    ..cx.clone()
                })
                .await,
            );
        }
        let mut local = Vec::new();
        for _ in 0..200 {
            local.push(time(cx.clone()).await);
        }
        (reused, fresh, local)
    });
    // sshd runs every command through the user's login shell, which may
    // read start-up files (bash reads ~/.bashrc when sshd starts it): that
    // cost is the host's, paid by every session, and shown apart.
    let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
    let mut login = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        // A fresh environment, as sshd gives it: no SHLVL, so bash reads
        // ~/.bashrc as it does under sshd.
        let status = std::process::Command::new(&shell)
            .args(["-c", "true"])
            .env_clear()
            .env("HOME", std::env::var_os("HOME").unwrap_or_default())
            .env("PATH", "/usr/bin:/bin")
            .env("SSH_CLIENT", "127.0.0.1 1 22")
            .status()
            .expect("the login shell runs");
        assert!(status.success());
        login.push(t.elapsed());
    }
    println!("exec probe `true`, latency per probe (sshd on 127.0.0.1):");
    println!("| how | probes | mean | median |");
    println!("|---|---:|---:|---:|");
    for (how, samples) in [
        ("over the site's shared connection", reused),
        ("a fresh ssh login per probe", fresh),
        ("locally, no ssh", local),
        ("(the login shell alone, as sshd starts it)", login),
    ] {
        let n = samples.len();
        let (mean, median) = summary(samples);
        println!("| {how} | {n} | {mean:.1} ms | {median:.1} ms |");
    }
}
