//! A site's connections. The host key is parsed here, where its position is
//! known: a key that does not parse, or a host that ssh would read as an
//! option, would stop every step of the site mid-restart.

use super::*;

/// A site's `connect`, with where its `ssh` is written.
impl Decode for (Connect, Option<Pos>) {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a site's connect", cx)?;
        let ssh: Option<At<SshConnect>> = f.opt("ssh", cx);
        let kubernetes = f.opt("kubernetes", cx);
        f.finish(cx);
        let (ssh, pos) = match ssh {
            Some(At(s, p)) => (Some(s), Some(p)),
            None => (None, None),
        };
        Some((Connect { ssh, kubernetes }, pos))
    }
}

impl Decode for SshConnect {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "connect.ssh", cx)?;
        let host: Option<At<String>> = f.req("host", cx);
        let port: Option<At<u16>> = f.opt("port", cx);
        let user: Option<At<String>> = f.opt("user", cx);
        let host_key: Option<At<String>> = f.req("hostKey", cx);
        let identity_file = f.opt("identityFile", cx);
        f.finish(cx);
        let mut ok = true;
        for (what, value) in [("host", host.as_ref()), ("user", user.as_ref())] {
            let Some(At(text, pos)) = value else { continue };
            let bad = if text.is_empty() {
                Some("is empty")
            } else if text.starts_with('-') {
                Some("begins with `-`, which ssh would read as an option")
            } else if text.contains(char::is_whitespace) || text.contains("${") {
                Some("holds a space or a placeholder: it is written as it is, for review")
            } else if what == "user" && text.contains('@') {
                Some("holds `@`")
            } else {
                None
            };
            if let Some(bad) = bad {
                cx.error(*pos, format!("connect.ssh.{what} `{text}` {bad}"));
                ok = false;
            }
        }
        if let Some(At(0, pos)) = port {
            cx.error(pos, "connect.ssh.port must be between 1 and 65535");
            ok = false;
        }
        if let Some(At(text, pos)) = &host_key
            && text.contains(char::is_control)
        {
            // A second line would pin a second key, unseen in the plan's
            // fingerprint and in a diff.
            cx.error(
                *pos,
                "connect.ssh.hostKey holds a line break or control character: one key, one line",
            );
            ok = false;
        } else if let Some(At(text, pos)) = &host_key
            && let Err(e) = ssh_key::PublicKey::from_openssh(text)
        {
            cx.diags.push(
                Diagnostic::error(
                    *pos,
                    format!("connect.ssh.hostKey is not an OpenSSH public key: {e}"),
                )
                .with_help(
                    "paste one line of the host's /etc/ssh/ssh_host_ed25519_key.pub, or what `ssh-keyscan -t ed25519 HOST` prints after the host name",
                ),
            );
            ok = false;
        }
        let (At(host, _), At(host_key, _)) = (host?, host_key?);
        ok.then(|| SshConnect {
            host,
            port: port.map(|At(p, _)| p),
            user: user.map(|At(u, _)| u),
            host_key,
            identity_file,
        })
    }
}

impl Decode for KubeConnect {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "connect.kubernetes", cx)?;
        let context: Option<At<String>> = f.opt("context", cx);
        let secret_ref: Option<At<String>> = f.opt("secretRef", cx);
        f.finish(cx);
        if context.is_none() && secret_ref.is_none() {
            cx.diags.push(
                Diagnostic::error(node.pos, "connect.kubernetes names neither a context nor a secretRef")
                    .with_help("e.g. kubernetes: { context: wolv-prod }, or { secretRef: wolv-kubeconfig } for the operator"),
            );
            return None;
        }
        for At(text, pos) in context.iter().chain(&secret_ref) {
            if text.is_empty() || text.contains("${") {
                cx.error(*pos, "a kubeconfig context or Secret name is written as it is, not empty nor a placeholder");
                return None;
            }
        }
        Some(KubeConnect {
            context: context.map(|At(c, _)| c),
            secret_ref: secret_ref.map(|At(s, _)| s),
        })
    }
}
