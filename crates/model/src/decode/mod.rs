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
    /// Where the decoder is: `spec.systems[3].labels.version`, for messages
    /// that name the field rather than only its column.
    pub path: Vec<Seg<'t>>,
    /// The systems decoded while the file was read, taken as
    /// `spec.systems` is decoded.
    pub taken: Vec<Early>,
}

/// A system decoded while the file was read: the system, or the id of a
/// broken one (`None` when that could not be read either).
pub(crate) type Early = Result<System, Option<String>>;

/// Decodes the `index`th item of `spec.systems` as soon as the reader has
/// it, so its nodes can be given back; the messages are the ones decoding
/// it later would give, with the same path.
pub(crate) fn system_early<'t>(
    tree: &'t Tree<'t>,
    node: &'t Node<'t>,
    index: usize,
) -> (Early, Vec<Diagnostic>) {
    let mut cx = Cx {
        diags: Diagnostics::default(),
        tree,
        broken: Broken::default(),
        path: vec![Seg::Field("spec"), Seg::Field("systems"), Seg::Index(index)],
        taken: Vec::new(),
    };
    let early = System::decode(node, &mut cx).ok_or_else(|| item_id(node, ItemKind::System, tree));
    (early, cx.diags.items)
}

/// The id (or a stage's name) of an item that could not be decoded, if it
/// can be read: what later checks need to tell echoes from findings.
fn item_id(item: &Node<'_>, kind: ItemKind, tree: &Tree<'_>) -> Option<String> {
    let key = match kind {
        ItemKind::Stage => "name",
        ItemKind::Site | ItemKind::System => "id",
    };
    tree.map(item).and_then(|entries| {
        entries.iter().find_map(|(k, v)| match &v.value {
            Value::Str(s) if k.name == key => Some(s.to_string()),
            _ => None,
        })
    })
}

/// One step of [`Cx::path`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seg<'t> {
    Field(&'static str),
    Index(usize),
    Key(&'t str),
}

impl Cx<'_> {
    /// The path of the value being decoded, `spec.systems[3].labels.version`.
    fn path(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(f) | Seg::Key(f) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(f);
                }
                Seg::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }
}

impl<'t> Cx<'t> {
    /// Decodes one step further down the path.
    fn at<T>(&mut self, seg: Seg<'t>, decode: impl FnOnce(&mut Cx<'t>) -> T) -> T {
        self.path.push(seg);
        let out = decode(self);
        self.path.pop();
        out
    }
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
    let in_order =
        nodes.len() == cx.taken.len() && (0..).zip(nodes).all(|(k, n)| n.value == Value::Taken(k));
    if in_order && let Some(all) = T::all_taken(&mut cx.taken, &mut cx.broken) {
        return Some(all);
    }
    let mut out = Vec::with_capacity(nodes.len());
    for (k, item) in nodes.iter().enumerate() {
        let decoded = match item.value {
            Value::Taken(i) => match cx.taken.get_mut(i as usize) {
                Some(early) => T::taken(std::mem::replace(early, Err(None))),
                None => Err(None),
            },
            _ => cx
                .at(Seg::Index(k), |cx| T::decode(item, cx))
                .ok_or_else(|| item_id(item, kind, tree)),
        };
        match decoded {
            Ok(v) => out.push(v),
            Err(id) => {
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

    /// The value decoded while the file was read; only systems are.
    fn taken(_early: Early) -> Result<Self, Option<String>> {
        Err(None)
    }

    /// Every item of a list, when all of them were decoded while the file
    /// was read, in order: their list is taken whole, without a copy (for
    /// 100,000 systems a copy is 60 MiB more at once).
    fn all_taken(_taken: &mut Vec<Early>, _broken: &mut Broken) -> Option<Vec<Self>> {
        None
    }
}

/// "`spec.systems[3].labels.version`: expected a string, found a number",
/// with, for a plain value meant as text, the quoting of what was written
/// (`1.10` → `"1.10"`, never the `1.1` it reads as).
fn wrong_type(node: &Node<'_>, expected: &str, cx: &mut Cx<'_>) {
    let written = cx.tree.written(node.pos);
    let found = match node.value {
        Value::Null if written.is_empty() || written == "-" => "nothing (an empty value)",
        ref v => v.kind(),
    };
    let path = cx.path();
    let at = if path.is_empty() {
        String::new()
    } else {
        format!("`{path}`: ")
    };
    let mut d = Diagnostic::error(node.pos, format!("{at}expected {expected}, found {found}"));
    if expected == "a string"
        && matches!(
            node.value,
            Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Null
        )
    {
        d = d.with_help(if written.is_empty() || written == "-" {
            "give it a value; an empty one is null in YAML, and `\"\"` is empty text".to_owned()
        } else {
            format!("quote it to make it text: \"{written}\"")
        });
    }
    cx.diags.push(d);
}

impl Decode for String {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        text(node, cx).map(str::to_owned)
    }
}

impl Decode for SmolStr {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        text(node, cx).map(SmolStr::new)
    }
}

/// A string's text, its `${…}` placeholders checked.
fn text<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<&'t str> {
    match &node.value {
        Value::Str(s) if s.contains("${") => match crate::placeholder::pieces(s) {
            Ok(_) => Some(s),
            Err(e) => {
                cx.error(node.pos, e.to_string());
                None
            }
        },
        Value::Str(s) => Some(s),
        _ => {
            wrong_type(node, "a string", cx);
            None
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
        // Too large for 64 bits, read as a float so as not to become text.
        Value::Float(_)
            if cx
                .tree
                .written(node.pos)
                .trim_start_matches(['-', '+'])
                .bytes()
                .all(|b| b.is_ascii_digit()) =>
        {
            let written = cx.tree.written(node.pos);
            cx.error(
                node.pos,
                format!("{written} is out of range: expected a whole number from {min} to {max}"),
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
        list(node, cx, Vec::with_capacity, |out, v, _| out.push(v))
    }
}

/// The items of a list, each decoded in turn and handed to `keep` with
/// where it was written, into what `new` makes for that many. `None` when
/// the node is not a list or an item is broken; every item is still read,
/// so each broken one is reported.
fn list<'t, T: Decode, C>(
    node: &'t Node<'t>,
    cx: &mut Cx<'t>,
    new: impl FnOnce(usize) -> C,
    mut keep: impl FnMut(&mut C, T, Pos),
) -> Option<C> {
    let tree = cx.tree;
    let Some(items) = tree.seq(node) else {
        wrong_type(node, "a list", cx);
        return None;
    };
    let mut out = new(items.len());
    let mut ok = true;
    for (k, item) in items.iter().enumerate() {
        match cx.at(Seg::Index(k), |cx| T::decode(item, cx)) {
            Some(v) => keep(&mut out, v, item.pos),
            None => ok = false,
        }
    }
    ok.then_some(out)
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
            if let Some(kind) = tree.key_reads_as(key) {
                // `1.10:` would be the name "1.1", `on:` true: never guessed.
                let path = cx.path();
                cx.diags.push(
                    Diagnostic::error(
                        key.pos,
                        format!(
                            "`{path}`: the name `{}` reads as {kind}, and a name here is text",
                            key.name
                        ),
                    )
                    .with_help(format!("quote it: \"{}\"", key.name)),
                );
                ok = false;
                continue;
            }
            let name: &'t str = match &key.name {
                std::borrow::Cow::Borrowed(s) => s,
                std::borrow::Cow::Owned(s) => s.as_str(),
            };
            match cx.at(Seg::Key(name), |cx| String::decode(value, cx)) {
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

/// A list and where each item was written, as the model keeps them: two
/// lists, read without a list of pairs in between.
pub(crate) struct Placed<T>(pub Vec<T>, pub Vec<Pos>);

impl<T> Default for Placed<T> {
    fn default() -> Self {
        Placed(Vec::new(), Vec::new())
    }
}

impl<T: Decode> Decode for Placed<T> {
    fn decode<'t>(node: &'t Node<'t>, cx: &mut Cx<'t>) -> Option<Self> {
        let new = |n| Placed(Vec::with_capacity(n), Vec::with_capacity(n));
        list(node, cx, new, |out: &mut Placed<T>, v, pos| {
            out.0.push(v);
            out.1.push(pos);
        })
    }
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
        let node = self.req_node(name, cx)?;
        cx.at(Seg::Field(name), |cx| T::decode(node, cx))
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
        let node = self.get(name)?;
        cx.at(Seg::Field(name), |cx| T::decode(node, cx))
    }

    /// A field that may be left out: `Ok(None)` when absent, `Err(())` when
    /// written but unreadable (and so already reported).
    fn opt_or_broken<T: Decode>(
        &mut self,
        name: &'static str,
        cx: &mut Cx<'a>,
    ) -> Result<Option<T>, ()> {
        let Some(node) = self.get(name) else {
            return Ok(None);
        };
        cx.at(Seg::Field(name), |cx| T::decode(node, cx))
            .map(Some)
            .ok_or(())
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

mod connect;
mod roles;
mod spec;
mod steps;

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
