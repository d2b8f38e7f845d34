//! What systems do and how they are checked: actions (exec, http,
//! kubernetes, manual, noop) and checks (http, tcp, exec, kubernetes).

use super::*;

impl Decode for Action {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let (kind, body) = one_of(node, "action", &Action::KINDS, cx)?;
        cx.at(Seg::Key(kind), |cx| {
            Some(match kind {
                "exec" => Action::Exec(Exec::decode(body, cx)?),
                "http" => Action::Http(Box::new(decode_http(body, "an http action", cx)?)),
                "kubernetes" => Action::Kubernetes(KubernetesAction::decode(body, cx)?),
                "manual" => Action::Manual(Manual::decode(body, cx)?),
                _ => Action::Noop(Noop::decode(body, cx)?),
            })
        })
    }
}

impl Decode for Check {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let (kind, body) = one_of(node, "check", &Check::KINDS, cx)?;
        cx.at(Seg::Key(kind), |cx| {
            Some(match kind {
                "http" => Check::Http(Box::new(decode_http(body, "an http check", cx)?)),
                "tcp" => Check::Tcp(Tcp::decode(body, cx)?),
                "kubernetes" => Check::Kubernetes(Workload::decode(body, cx)?),
                _ => Check::Exec(Exec::decode(body, cx)?),
            })
        })
    }
}

impl Decode for Exec {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "an exec", cx)?;
        let command: Option<Vec<SmolStr>> = f.req("command", cx);
        let env = f.or_default("env", cx);
        let working_dir = f.opt("workingDir", cx);
        let timeout = f.opt("timeout", cx);
        let inherit_env = env_names_at(&mut f, cx);
        let idempotent = f.or_default("idempotent", cx);
        f.finish(cx);
        let command = command?;
        if command.first().is_none_or(|c| c.is_empty()) {
            cx.diags.push(
                Diagnostic::error(node.pos, "`command` needs the program to run")
                    .with_help("give argv as a list, e.g. command: [systemctl, start, mes]"),
            );
            return None;
        }
        Some(Exec {
            command,
            env,
            working_dir,
            timeout,
            inherit_env,
            idempotent,
        })
    }
}

fn decode_http<'t>(node: &'t Node<'t>, what: &'static str, cx: &mut Cx<'t>) -> Option<Http> {
    let mut f = Fields::of(node, what, cx)?;
    let url: Option<At<String>> = f.req("url", cx);
    let method = f
        .get("method")
        .and_then(|n| named(n, "HTTP method", &Method::NAMES, Method::from_name, cx));
    let headers = f.or_default("headers", cx);
    let body = f.opt("body", cx);
    let expect_status: Option<At<u16>> = f.opt("expectStatus", cx);
    let body_contains = f.opt("bodyContains", cx);
    let json_pointer = f.opt("jsonPointer", cx);
    let timeout = f.opt("timeout", cx);
    let idempotent = f.or_default("idempotent", cx);
    f.finish(cx);
    let At(url, url_pos) = url?;
    if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("${")) {
        cx.diags.push(
            Diagnostic::error(
                url_pos,
                format!("url {url:?} is not an http:// or https:// URL"),
            )
            .with_help("write the scheme, e.g. http://mes.wolv.example:8080/healthz"),
        );
    }
    let expect_status = match expect_status {
        Some(At(s, pos)) if !(100..=599).contains(&s) => {
            cx.error(
                pos,
                format!("expectStatus {s} is not an HTTP status (100 to 599)"),
            );
            None
        }
        other => other.map(|At(s, _)| s),
    };
    Some(Http {
        url,
        method,
        headers,
        body,
        expect_status,
        body_contains,
        json_pointer,
        timeout,
        idempotent,
    })
}

impl Decode for JsonMatch {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a jsonPointer match", cx)?;
        let pointer: Option<At<String>> = f.req("pointer", cx);
        let equals = match f.get("equals") {
            None => {
                cx.error(
                    node.pos,
                    "a jsonPointer match is missing the field `equals`",
                );
                None
            }
            Some(n) => cx.at(Seg::Field("equals"), |cx| match &n.value {
                Value::Str(_) => String::decode(n, cx).map(serde_json::Value::String),
                Value::Int(i) => Some(serde_json::Value::from(*i)),
                Value::Float(x) => match serde_json::Number::from_f64(*x) {
                    Some(num) => Some(serde_json::Value::Number(num)),
                    None => {
                        let written = cx.tree.written(n.pos);
                        cx.diags.push(
                            Diagnostic::error(
                                n.pos,
                                format!(
                                    "`{written}` is not a JSON number, so no body can equal it"
                                ),
                            )
                            .with_help(format!("quote it to compare with text: \"{written}\"")),
                        );
                        None
                    }
                },
                Value::Bool(b) => Some(serde_json::Value::Bool(*b)),
                Value::Null => Some(serde_json::Value::Null),
                _ => {
                    wrong_type(n, "a plain value", cx);
                    None
                }
            }),
        };
        f.finish(cx);
        let At(pointer, pos) = pointer?;
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            cx.diags.push(
                Diagnostic::error(pos, format!("JSON pointer {pointer:?} must start with `/`"))
                    .with_help("e.g. pointer: /status"),
            );
        }
        Some(JsonMatch {
            pointer,
            equals: equals?,
        })
    }
}

impl Decode for Tcp {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a tcp check", cx)?;
        let address: Option<At<SmolStr>> = f.req("address", cx);
        f.finish(cx);
        let At(address, pos) = address?;
        let has_port = address
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port && !address.contains("${") {
            cx.diags.push(
                Diagnostic::error(pos, format!("tcp address {address:?} has no host:port"))
                    .with_help("e.g. address: mes-db.wolv.example:5432"),
            );
        }
        Some(Tcp { address })
    }
}

impl Decode for WorkloadKind {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        named(
            node,
            "workload kind",
            &WorkloadKind::NAMES,
            WorkloadKind::from_name,
            cx,
        )
    }
}

/// A Kubernetes object name: a DNS label or subdomain, as the API server
/// will insist; said here, with a position, rather than mid-run.
fn check_object_name(what: &str, At(name, pos): &At<String>, cx: &mut Cx<'_>) {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        cx.diags.push(
            Diagnostic::error(*pos, format!("{what} {name:?} is not a Kubernetes name"))
                .with_help("use lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit"),
        );
    }
}

/// The `kind`, `name` and `namespace` every kubernetes step names; the
/// caller reads its other fields and finishes.
fn workload_fields<'a>(f: &mut Fields<'a>, cx: &mut Cx<'a>) -> Option<Workload> {
    let kind = f.req("kind", cx);
    let name: Option<At<String>> = f.req("name", cx);
    let namespace: Option<At<String>> = f.opt("namespace", cx);
    let name = name?;
    check_object_name("name", &name, cx);
    if let Some(ns) = &namespace {
        check_object_name("namespace", ns, cx);
    }
    Some(Workload {
        kind: kind?,
        name: name.0,
        namespace: namespace.map(|At(ns, _)| ns),
    })
}

impl Decode for Workload {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a kubernetes check", cx)?;
        let workload = workload_fields(&mut f, cx);
        f.finish(cx);
        workload
    }
}

impl Decode for KubernetesAction {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a kubernetes action", cx)?;
        let workload = workload_fields(&mut f, cx);
        let replicas = f.opt("replicas", cx);
        let rollout_restart = f.or_default("rolloutRestart", cx);
        f.finish(cx);
        if replicas.is_some() && rollout_restart {
            cx.diags.push(
                Diagnostic::error(
                    node.pos,
                    "a kubernetes action either scales (`replicas`) or restarts (`rolloutRestart`), not both",
                )
                .with_help("use two systems if both must happen, one depending on the other"),
            );
            return None;
        }
        let Workload {
            kind,
            name,
            namespace,
        } = workload?;
        Some(KubernetesAction {
            kind,
            name,
            namespace,
            replicas,
            rollout_restart,
        })
    }
}

impl Decode for Manual {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a manual step", cx)?;
        let instruction = f.req("instruction", cx);
        let role = f.opt("role", cx);
        f.finish(cx);
        Some(Manual {
            instruction: instruction?,
            role,
        })
    }
}

impl Decode for Noop {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        if matches!(node.value, Value::Null) {
            return Some(Noop {});
        }
        let f = Fields::of(node, "noop", cx)?;
        f.finish(cx);
        Some(Noop {})
    }
}
