//! An sshd of a test's (or a benchmark's) own: Debian's openssh-server on
//! a free port of 127.0.0.1, with a host key made for it, letting in one
//! key made for it as the current user. `cargo xtask test` installs the
//! package; nothing is installed by hand.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// The running server; killed when dropped.
#[derive(Debug)]
pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

/// Makes an ed25519 key pair at `path` and `path.pub`, without a passphrase.
pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs (Debian's openssh-client)");
    assert!(out.status.success(), "ssh-keygen failed: {out:?}");
}

/// The current user's name, whom the server lets in.
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("`id` runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Sshd {
    /// Starts the server and waits (at most 10 s) until it listens.
    pub fn start() -> Result<Sshd, String> {
        if !Path::new(SSHD).exists() {
            return Err(format!(
                "{SSHD} is missing: Debian's openssh-server, which `cargo xtask lab` installs"
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path();
        keygen(&d.join("host"));
        keygen(&d.join("id"));
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).map_err(|e| e.to_string())?;
        // Privilege separation wants its directory, as root.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let config = format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nLogLevel ERROR\nMaxStartups 100\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("sshd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {SSHD}: {e}"))?;
        let sshd = Sshd { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "sshd did not listen: {}",
                    std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(sshd)
    }

    /// Its host key, one line of a `.pub` file.
    pub fn host_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.pub"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// The private key it lets in.
    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("id")
    }

    /// A site's `connect` in flow YAML, with `host_key` pinned and the
    /// identity file read from `${env:SITE_KEY}`.
    pub fn connect(&self, host_key: &str) -> String {
        format!(
            "{{ ssh: {{ host: 127.0.0.1, port: {}, user: {}, hostKey: \"{host_key}\", identityFile: \"${{env:SITE_KEY}}\" }} }}",
            self.port,
            user()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
