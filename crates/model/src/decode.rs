//! From the node tree to the typed playbook, collecting every problem.
//!
//! Each decoder reads what it can, records what is wrong with the position of
//! the offending node, and carries on with the siblings, so that one pass
//! over a broken file reports all of it. A value that could not be read
//! becomes `None` and its parent gives up quietly: the cause is already
//! recorded, and a second message about the parent would only be noise.

use std::collections::BTreeMap;

use crate::diag::{Diagnostic, Diagnostics, Pos};
use crate::duration::Duration;
use crate::playbook::*;
use crate::yaml::{Key, Node, Tree, Value};

pub(crate) struct Cx<'t> {
    pub diags: Diagnostics,
    pub tree: &'t Tree<'t>,
    pub broken: Broken,
}

/// Sites, systems and stages that could not be read. The rest of the
/// playbook is still checked as a whole; these say which of those checks'
/// findings could be mere echoes of an item already reported as broken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Broken {
    pub sites: Vec<String>,
    pub systems: Vec<String>,
    pub stages: Vec<String>,
    /// Broken items whose id could not be read either.
    pub unnamed_sites: usize,
    pub unnamed_systems: usize,
    pub unnamed_stages: usize,
}

impl Broken {
    pub fn site(&self, id: &str) -> bool {
        self.unnamed_sites > 0 || self.sites.iter().any(|s| s == id)
    }
    pub fn system(&self, id: &str) -> bool {
        self.unnamed_systems > 0 || self.systems.iter().any(|s| s == id)
    }
    pub fn any_system(&self) -> bool {
        self.unnamed_systems > 0 || !self.systems.is_empty()
    }
    pub fn any_stage(&self) -> bool {
        self.unnamed_stages > 0 || !self.stages.is_empty()
    }
}

#[derive(Clone, Copy)]
enum ItemKind {
    Site,
    System,
    Stage,
}

/// A top-level list whose readable items are kept even when others are
/// broken, so that one pass can still check the playbook as a whole.
fn items<'t, T: Decode>(node: &'t Node<'t>, kind: ItemKind, cx: &mut Cx<'t>) -> Option<Vec<T>> {
    let tree = cx.tree;
    let Some(nodes) = tree.seq(node) else {
        wrong_type(node, "a list", cx);
        return None;
    };
    let mut out = Vec::with_capacity(nodes.len());
    for item in nodes {
        match T::decode(item, cx) {
            Some(v) => out.push(v),
            None => {
                let key = match kind {
                    ItemKind::Stage => "name",
                    ItemKind::Site | ItemKind::System => "id",
                };
                let id = tree.map(item).and_then(|entries| {
                    entries.iter().find_map(|(k, v)| match &v.value {
                        Value::Str(s) if k.name == key => Some(s.to_string()),
                        _ => None,
                    })
                });
                let b = &mut cx.broken;
                let (named, unnamed) = match kind {
                    ItemKind::Site => (&mut b.sites, &mut b.unnamed_sites),
                    ItemKind::System => (&mut b.systems, &mut b.unnamed_systems),
                    ItemKind::Stage => (&mut b.stages, &mut b.unnamed_stages),
                };
                match id {
                    Some(id) => named.push(id),
                    None => *unnamed += 1,
                }
            }
        }
    }
    Some(out)
}

impl Cx<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(pos, message));
    }
}

/// A value that can be read from a node.
pub(crate) trait Decode: Sized {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self>;
}

fn wrong_type(node: &Node<'_>, expected: &str, cx: &mut Cx<'_>) {
    let mut d = Diagnostic::error(
        node.pos,
        format!("expected {expected}, found {}", node.value.kind()),
    );
    if expected == "a string"
        && matches!(
            node.value,
            Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Null
        )
    {
        d = d.with_help(format!("quote it to make it text: \"{}\"", node.value));
    }
    cx.diags.push(d);
}

impl Decode for String {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        match &node.value {
            Value::Str(s) if s.contains("${") => match crate::placeholder::pieces(s) {
                Ok(_) => Some(s.to_string()),
                Err(e) => {
                    cx.error(node.pos, e.to_string());
                    None
                }
            },
            Value::Str(s) => Some(s.to_string()),
            _ => {
                wrong_type(node, "a string", cx);
                None
            }
        }
    }
}

fn decode_int(node: &Node<'_>, cx: &mut Cx<'_>, min: i64, max: i64) -> Option<i64> {
    match node.value {
        Value::Int(i) if (min..=max).contains(&i) => Some(i),
        Value::Int(i) => {
            cx.error(
                node.pos,
                format!("{i} is out of range: expected a whole number from {min} to {max}"),
            );
            None
        }
        _ => {
            wrong_type(node, "a whole number", cx);
            None
        }
    }
}

impl Decode for u32 {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        decode_int(node, cx, 0, i64::from(u32::MAX)).and_then(|i| u32::try_from(i).ok())
    }
}

impl Decode for u16 {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        decode_int(node, cx, 0, i64::from(u16::MAX)).and_then(|i| u16::try_from(i).ok())
    }
}

impl Decode for bool {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                wrong_type(node, "true or false", cx);
                None
            }
        }
    }
}

impl Decode for Duration {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        match &node.value {
            Value::Str(s) => match s.parse() {
                Ok(d) => Some(d),
                Err(e) => {
                    cx.error(node.pos, e.to_string());
                    None
                }
            },
            Value::Int(i) => {
                cx.diags.push(
                    Diagnostic::error(node.pos, format!("bad duration {i}: a unit is missing"))
                        .with_help(format!("write it with a unit, like {i}s or {i}m")),
                );
                None
            }
            _ => {
                wrong_type(node, "a duration such as 30s", cx);
                None
            }
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let tree = cx.tree;
        let Some(items) = tree.seq(node) else {
            wrong_type(node, "a list", cx);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items {
            match T::decode(item, cx) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// String maps (labels, env, headers). Values must be text, as in Kubernetes.
impl Decode for BTreeMap<String, String> {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let tree = cx.tree;
        let Some(entries) = tree.map(node) else {
            wrong_type(node, "a mapping of names to text", cx);
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries {
            match String::decode(value, cx) {
                Some(v) => {
                    out.insert(key.name.to_string(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// A value together with where it was written.
pub(crate) struct At<T>(pub T, pub Pos);

impl<T: Decode> Decode for At<T> {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        T::decode(node, cx).map(|v| At(v, node.pos))
    }
}

fn split<T>(items: Vec<At<T>>) -> (Vec<T>, Vec<Pos>) {
    items.into_iter().map(|At(v, p)| (v, p)).unzip()
}

/// The fields of one mapping, read one by one; whatever is never asked for
/// is reported as unknown when the reader is finished.
struct Fields<'a> {
    what: &'static str,
    pos: Pos,
    entries: &'a [(Key<'a>, Node<'a>)],
    /// The names asked for so far; a fixed array, as decoding a large
    /// playbook reads millions of mappings and none has more fields.
    known: [&'static str; MAX_FIELDS],
    known_len: usize,
}

/// More fields than any type of the playbook has.
const MAX_FIELDS: usize = 16;

impl<'a> Fields<'a> {
    fn of(node: &'a Node<'a>, what: &'static str, cx: &mut Cx<'a>) -> Option<Self> {
        let tree = cx.tree;
        match tree.map(node) {
            Some(entries) => Some(Fields {
                what,
                pos: node.pos,
                entries,
                known: [""; MAX_FIELDS],
                known_len: 0,
            }),
            None => {
                wrong_type(node, &format!("a mapping ({what})"), cx);
                None
            }
        }
    }

    fn get(&mut self, name: &'static str) -> Option<&'a Node<'a>> {
        assert!(
            self.known_len < MAX_FIELDS,
            "a playbook type has at most {MAX_FIELDS} fields"
        );
        self.known[self.known_len] = name;
        self.known_len += 1;
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| v)
    }

    /// A field that must be there.
    fn req<T: Decode>(&mut self, name: &'static str, cx: &mut Cx<'a>) -> Option<T> {
        self.req_node(name, cx).and_then(|node| T::decode(node, cx))
    }

    /// The node of a field that must be there.
    fn req_node(&mut self, name: &'static str, cx: &mut Cx<'a>) -> Option<&'a Node<'a>> {
        let node = self.get(name);
        if node.is_none() {
            cx.error(
                self.pos,
                format!("{} is missing the field `{name}`", self.what),
            );
        }
        node
    }

    /// A field that may be left out; `None` when absent or unreadable.
    fn opt<T: Decode>(&mut self, name: &'static str, cx: &mut Cx<'a>) -> Option<T> {
        self.get(name).and_then(|node| T::decode(node, cx))
    }

    fn or_default<T: Decode + Default>(&mut self, name: &'static str, cx: &mut Cx<'a>) -> T {
        self.opt(name, cx).unwrap_or_default()
    }

    /// Reports every field that was never asked for, with the nearest known one.
    fn finish(self, cx: &mut Cx<'_>) {
        let known = &self.known[..self.known_len];
        for (key, _) in self.entries {
            if known.contains(&key.name.as_ref()) {
                continue;
            }
            let mut d = Diagnostic::error(
                key.pos,
                format!("unknown field `{}` in {}", key.name, self.what),
            );
            d = match nearest(&key.name, known.iter().copied()) {
                Some(near) => d.with_help(format!("did you mean `{near}`?")),
                None => d.with_help(format!("expected one of: {}", known.join(", "))),
            };
            cx.diags.push(d);
        }
    }
}

/// The candidate closest to `wanted`, if it is close enough to be a typo.
pub(crate) fn nearest<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let wanted_lower = wanted.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&wanted_lower, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, c)| c)
}

/// A mapping with exactly one key naming its kind, as `exec: {...}`.
fn one_of<'a>(
    node: &'a Node<'a>,
    what: &'static str,
    kinds: &[&'static str],
    cx: &mut Cx<'a>,
) -> Option<(&'a str, &'a Node<'a>)> {
    let tree = cx.tree;
    let Some(entries) = tree.map(node) else {
        wrong_type(
            node,
            &format!("a mapping with one of: {}", kinds.join(", ")),
            cx,
        );
        return None;
    };
    let mut found = None;
    for (key, value) in entries {
        if !kinds.contains(&key.name.as_ref()) {
            let mut d =
                Diagnostic::error(key.pos, format!("`{}` is not a kind of {what}", key.name));
            d = match nearest(&key.name, kinds.iter().copied()) {
                Some(near) => d.with_help(format!(
                    "did you mean `{near}`? expected one of: {}",
                    kinds.join(", ")
                )),
                None => d.with_help(format!("expected one of: {}", kinds.join(", "))),
            };
            cx.diags.push(d);
            return None;
        }
        if found.is_some() {
            cx.error(
                key.pos,
                format!(
                    "a {what} has exactly one kind; found a second one, `{}`",
                    key.name
                ),
            );
            return None;
        }
        found = Some((key.name.as_ref(), value));
    }
    if found.is_none() {
        cx.error(
            node.pos,
            format!("empty {what}: give one of: {}", kinds.join(", ")),
        );
    }
    found
}

/// A text value that must be one of a fixed set.
fn named<'t, T>(
    node: &'t Node<'t>,
    what: &str,
    names: &[&str],
    from: impl Fn(&str) -> Option<T>,
    cx: &mut Cx<'t>,
) -> Option<T> {
    let text = String::decode(node, cx)?;
    let found = from(&text);
    if found.is_none() {
        let mut d = Diagnostic::error(
            node.pos,
            format!(
                "unknown {what} {text:?}; expected one of: {}",
                names.join(", ")
            ),
        );
        if let Some(near) = nearest(&text, names.iter().copied()) {
            d = d.with_help(format!("did you mean `{near}`?"));
        }
        cx.diags.push(d);
    }
    found
}

impl Decode for Playbook {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "the playbook", cx)?;
        let api_version: Option<At<String>> = f.req("apiVersion", cx);
        let kind: Option<At<String>> = f.req("kind", cx);
        let metadata = f.req("metadata", cx);
        let spec = f.req("spec", cx);
        f.finish(cx);
        if let Some(At(v, pos)) = &api_version
            && v != API_VERSION
        {
            cx.diags.push(
                Diagnostic::error(*pos, format!("unsupported apiVersion {v:?}"))
                    .with_help(format!("this blackstart reads `apiVersion: {API_VERSION}`")),
            );
        }
        if let Some(At(k, pos)) = &kind
            && k != KIND
        {
            cx.diags.push(
                Diagnostic::error(*pos, format!("kind {k:?} is not a playbook"))
                    .with_help(format!("expected `kind: {KIND}`")),
            );
        }
        Some(Playbook {
            api_version: api_version?.0,
            kind: kind?.0,
            metadata: metadata?,
            spec: spec?,
        })
    }
}

impl Decode for Metadata {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "metadata", cx)?;
        let name = f.req("name", cx);
        let namespace = f.opt("namespace", cx);
        let labels = f.or_default("labels", cx);
        let annotations = f.or_default("annotations", cx);
        f.finish(cx);
        Some(Metadata {
            name: name?,
            namespace,
            labels,
            annotations,
        })
    }
}

impl Decode for PlaybookSpec {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "spec", cx)?;
        let description = f.opt("description", cx);
        let defaults = f.or_default("defaults", cx);
        let sites = f
            .req_node("sites", cx)
            .and_then(|n| items(n, ItemKind::Site, cx));
        let systems = f
            .req_node("systems", cx)
            .and_then(|n| items(n, ItemKind::System, cx));
        let stages = f
            .req_node("stages", cx)
            .and_then(|n| items(n, ItemKind::Stage, cx));
        f.finish(cx);
        Some(PlaybookSpec {
            description,
            defaults,
            sites: sites?,
            systems: systems?,
            stages: stages?,
        })
    }
}

impl Decode for Defaults {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "defaults", cx)?;
        let d = Defaults {
            start_timeout: f.opt("startTimeout", cx),
            expected_duration: f.opt("expectedDuration", cx),
            probe: f.or_default("probe", cx),
            inherit_env: env_names_at(&mut f, cx),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for ProbeSettings {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "probe settings", cx)?;
        let p = ProbeSettings {
            initial_delay: f.opt("initialDelay", cx),
            interval: f.opt("interval", cx),
            timeout: f.opt("timeout", cx),
            success_threshold: f.opt("successThreshold", cx),
            failure_threshold: f.opt("failureThreshold", cx),
        };
        f.finish(cx);
        for (value, name) in [
            (p.success_threshold, "successThreshold"),
            (p.failure_threshold, "failureThreshold"),
        ] {
            if value == Some(0) {
                cx.error(node.pos, format!("{name} must be at least 1"));
            }
        }
        if p.interval == Some(Duration::ZERO) {
            cx.error(node.pos, "interval must be longer than 0s");
        }
        Some(p)
    }
}

impl Decode for Site {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a site", cx)?;
        let id: Option<At<String>> = f.req("id", cx);
        let name = f.opt("name", cx);
        let labels = f.or_default("labels", cx);
        f.finish(cx);
        let At(id, id_pos) = id?;
        Some(Site {
            id,
            name,
            labels,
            src: SiteSrc {
                node: node.pos,
                id: id_pos,
            },
        })
    }
}

impl Decode for System {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a system", cx)?;
        let id: Option<At<String>> = f.req("id", cx);
        let name = f.opt("name", cx);
        let site: Option<At<String>> = f.req("site", cx);
        let tier = f.opt("tier", cx);
        let labels = f.or_default("labels", cx);
        let depends_on: Option<Vec<At<String>>> = f.opt("dependsOn", cx);
        let expected_duration = f.opt("expectedDuration", cx);
        let start_timeout = f.opt("startTimeout", cx);
        let probe = f.or_default("probe", cx);
        let verify = f.or_default("verify", cx);
        let start: Option<At<Action>> = f.req("start", cx);
        let stop = f.opt("stop", cx);
        let health = f.or_default("health", cx);
        f.finish(cx);
        let (At(id, id_pos), At(site, site_pos)) = (id?, site?);
        let At(start, start_pos) = start?;
        if let Action::Kubernetes(k) = &start
            && k.replicas.is_none()
            && !k.rollout_restart
        {
            cx.diags.push(
                Diagnostic::error(
                    start_pos,
                    format!("system `{id}`: a kubernetes start needs `replicas` or `rolloutRestart`"),
                )
                .with_ids([id.clone()])
                .with_help("e.g. start: { kubernetes: { kind: Deployment, name: dealer-portal, replicas: 3 } }"),
            );
            return None;
        }
        let (depends_on, dep_pos) = split(depends_on.unwrap_or_default());
        Some(System {
            id,
            name,
            site,
            tier,
            labels,
            depends_on,
            expected_duration,
            start_timeout,
            probe,
            verify,
            start,
            stop,
            health,
            src: SystemSrc {
                node: node.pos,
                id: id_pos,
                site: site_pos,
                depends_on: dep_pos,
            },
        })
    }
}

impl Decode for Action {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let (kind, body) = one_of(node, "action", &Action::KINDS, cx)?;
        Some(match kind {
            "exec" => Action::Exec(Exec::decode(body, cx)?),
            "http" => Action::Http(decode_http(body, "an http action", cx)?),
            "kubernetes" => Action::Kubernetes(KubernetesAction::decode(body, cx)?),
            "manual" => Action::Manual(Manual::decode(body, cx)?),
            _ => Action::Noop(Noop::decode(body, cx)?),
        })
    }
}

impl Decode for Check {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let (kind, body) = one_of(node, "check", &Check::KINDS, cx)?;
        Some(match kind {
            "http" => Check::Http(decode_http(body, "an http check", cx)?),
            "tcp" => Check::Tcp(Tcp::decode(body, cx)?),
            "kubernetes" => Check::Kubernetes(Workload::decode(body, cx)?),
            _ => Check::Exec(Exec::decode(body, cx)?),
        })
    }
}

impl Decode for Exec {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "an exec", cx)?;
        let command: Option<Vec<String>> = f.req("command", cx);
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
            Some(n) => match &n.value {
                Value::Str(s) => Some(s.to_string()),
                Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Null => {
                    Some(n.value.to_string())
                }
                _ => {
                    wrong_type(n, "a plain value", cx);
                    None
                }
            },
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
        let address: Option<At<String>> = f.req("address", cx);
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
        f.finish(cx);
        Some(Manual {
            instruction: instruction?,
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

impl Decode for Stage {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a stage", cx)?;
        let name: Option<At<String>> = f.req("name", cx);
        let description = f.opt("description", cx);
        let select_node = f.get("select");
        let max_parallel: Option<At<u32>> = f.opt("maxParallel", cx);
        let gate: Option<GateWithSrc> = f.opt("gate", cx);
        f.finish(cx);
        if select_node.is_none() {
            cx.error(node.pos, "a stage is missing the field `select`");
        }
        let (select, mut src) = decode_selector(select_node?, cx)?;
        let At(name, name_pos) = name?;
        let max_parallel = match max_parallel {
            Some(At(0, pos)) => {
                cx.error(pos, "maxParallel must be at least 1");
                None
            }
            other => other.map(|At(n, _)| n),
        };
        let GateWithSrc { gate, approvals } = gate.unwrap_or_default();
        src.node = node.pos;
        src.name = name_pos;
        src.approvals = approvals;
        Some(Stage {
            name,
            description,
            select,
            max_parallel,
            gate,
            src,
        })
    }
}

fn decode_selector<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<(Selector, StageSrc)> {
    let mut f = Fields::of(node, "a stage selector", cx)?;
    let sites: Option<Vec<At<String>>> = f.opt("sites", cx);
    let tiers: Option<Vec<At<String>>> = f.opt("tiers", cx);
    let systems: Option<Vec<At<String>>> = f.opt("systems", cx);
    let labels = f.or_default("labels", cx);
    f.finish(cx);
    let (sites, site_pos) = split(sites.unwrap_or_default());
    let (tiers, tier_pos) = split(tiers.unwrap_or_default());
    let (systems, system_pos) = split(systems.unwrap_or_default());
    Some((
        Selector {
            sites,
            tiers,
            systems,
            labels,
        },
        StageSrc {
            select: node.pos,
            sites: site_pos,
            tiers: tier_pos,
            systems: system_pos,
            ..StageSrc::default()
        },
    ))
}

/// A gate and the positions of its approval roles, which live on the stage.
#[derive(Default)]
struct GateWithSrc {
    gate: Gate,
    approvals: Vec<Pos>,
}

impl Decode for GateWithSrc {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let mut f = Fields::of(node, "a gate", cx)?;
        let soak = f.opt("soak", cx);
        let approvals: Option<Vec<At<String>>> = f.opt("approvals", cx);
        let on_failure = f
            .get("onFailure")
            .and_then(|n| named(n, "onFailure", &OnFailure::NAMES, OnFailure::from_name, cx));
        f.finish(cx);
        let (approvals, approval_pos) = split(approvals.unwrap_or_default());
        Some(GateWithSrc {
            gate: Gate {
                soak,
                approvals,
                on_failure: on_failure.unwrap_or_default(),
            },
            approvals: approval_pos,
        })
    }
}

/// Reads a whole playbook from its node tree. `None` means at least one error
/// was recorded in `cx`.
pub(crate) fn playbook<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Playbook> {
    Playbook::decode(node, cx)
}

/// `inheritEnv`: names of environment variables, each checked where it is
/// written, since a typo here means a step silently runs without it.
fn env_names_at<'t>(f: &mut Fields<'t>, cx: &mut Cx<'t>) -> Vec<String> {
    let names: Vec<At<String>> = f.or_default("inheritEnv", cx);
    let mut out = Vec::with_capacity(names.len());
    for At(name, pos) in names {
        let mut chars = name.chars();
        let ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            out.push(name);
        } else {
            cx.diags.push(
                Diagnostic::error(pos, format!("{name:?} is not an environment variable name"))
                    .with_help(
                        "use letters, digits and `_`, not starting with a digit, e.g. KUBECONFIG",
                    ),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}
