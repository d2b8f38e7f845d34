//! A YAML document as a tree of nodes that remember where they stood.
//!
//! serde stops at the first error, but a person fixing a restart plan wants
//! every problem in one pass, like a compiler. So the file is read in two
//! steps: this module turns text into a tree whose every node and key knows
//! its line and column, then [`crate::decode`] walks the tree into the typed
//! playbook and records every problem it meets.
//!
//! The tree is built from the event stream of granit-parser, the YAML parser
//! underneath serde-saphyr (and re-exported by it). Going through serde with
//! `serde_saphyr::Spanned` on every node measured 3.8x slower than the events
//! themselves on a 100,000-system playbook, too slow for the plan budget, so
//! this builder does the little serde-saphyr did for us here: core-schema
//! scalar types, anchors and aliases, merge keys, duplicate keys, and budgets
//! (depth, node count including alias expansion) that keep hostile input
//! bounded. It is iterative, so no input can overflow the stack.
//!
//! The items of `spec.systems` are decoded as soon as each is read, and
//! their nodes given back (see [`Value::Taken`]): a tree of every node of a
//! 100,000-system playbook took more memory than the playbook it becomes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{self, Event, Marker, ScalarStyle, Span};

use crate::diag::{Diagnostic, Pos};

/// The largest playbook accepted, in bytes. A restart of 100,000 systems is
/// about 30 MiB of YAML; anything far beyond that is a mistake or an attack.
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Deepest nesting accepted. A playbook needs about ten levels; the limit
/// keeps later recursive walks (decoding, dropping the tree) shallow.
pub const MAX_DEPTH: usize = 32;

/// Most nodes one document may hold, aliases expanded: about 50 per system
/// for 200,000 systems. It bounds memory whatever the input (an alias bomb
/// hits it after expanding a few hundred megabytes, not gigabytes).
pub const MAX_NODES: usize = 10_000_000;

/// The whole document. Collections keep their children in two arenas, so
/// building the tree makes no allocation per list or mapping and dropping it
/// is two frees, whatever its size.
#[derive(Debug, Default)]
pub(crate) struct Tree<'a> {
    pub root: Option<Node<'a>>,
    items: Vec<Node<'a>>,
    entries: Vec<(Key<'a>, Node<'a>)>,
    /// The text it was read from: messages quote a value as it was written.
    source: &'a str,
    /// Where each line of `source` begins, and whether it is ASCII
    /// (columns are bytes there), indexed on first use.
    line_starts: std::sync::OnceLock<Vec<(usize, bool)>>,
    /// The last column found in a line that is not ASCII, as (line,
    /// column, byte): messages come in file order, so finding the next one
    /// goes on from there instead of counting from the line's start.
    last_column: std::sync::Mutex<(usize, usize, usize)>,
    /// The rare keys that are not plain text: where each is, what YAML
    /// reads it as ("a number"; `None` for text), and whether it is a
    /// merge key (a plain `<<`). Kept aside, not on every [`Key`]: a large
    /// playbook has millions of keys and next to none of these.
    odd_keys: Vec<(Pos, Option<&'static str>, bool)>,
    /// The systems decoded while the file was read (see [`Value::Taken`]),
    /// with what decoding them found.
    pub taken: Vec<crate::decode::Early>,
    pub early_diags: Vec<Diagnostic>,
}

/// Where a collection's children stand in their arena.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Span32 {
    start: u32,
    len: u32,
}

impl Span32 {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.start as usize + self.len as usize
    }
}

impl<'a> Tree<'a> {
    /// A plain value as it is written at `pos` (`1.10`, `0755`, `~`), up to
    /// where a plain scalar ends; empty for a value left out. Messages show
    /// this, never the value as read, which may differ (`1.10` reads 1.1).
    pub fn written(&self, pos: Pos) -> &'a str {
        // Built on the first message: a file with many type errors does not
        // scan its text once per error.
        let starts = self.line_starts.get_or_init(|| {
            let begins: Vec<usize> = std::iter::once(0)
                .chain(self.source.match_indices('\n').map(|(i, _)| i + 1))
                .collect();
            begins
                .iter()
                .enumerate()
                .map(|(k, &b)| {
                    let e = begins.get(k + 1).map_or(self.source.len(), |&e| e - 1);
                    (b, self.source[b..e].is_ascii())
                })
                .collect()
        });
        let line = (pos.line as usize).saturating_sub(1);
        let Some(&(start, ascii)) = starts.get(line) else {
            return "";
        };
        let end = starts
            .get(line + 1)
            .map_or(self.source.len(), |&(e, _)| e - 1);
        let text = &self.source[start..end];
        let col = (pos.column as usize).saturating_sub(1);
        let byte = if ascii {
            col.min(text.len())
        } else {
            // Many messages on one long line must not each count it from
            // its start: go on from the last column found.
            let mut last = self.last_column.lock().unwrap_or_else(|p| p.into_inner());
            let (from_col, from_byte) = if last.0 == line && last.1 <= col {
                (last.1, last.2)
            } else {
                (0, 0)
            };
            let byte = text[from_byte..]
                .char_indices()
                .nth(col - from_col)
                .map_or(text.len(), |(i, _)| from_byte + i);
            *last = (line, col, byte);
            byte
        };
        token_from(&text[byte..])
    }

    /// What the key at `pos` reads as when it is not text ("a number",
    /// "a boolean", "null"): a map of names refuses it rather than guess.
    pub fn key_reads_as(&self, key: &Key<'_>) -> Option<&'static str> {
        self.odd_keys
            .iter()
            .find(|(p, _, _)| *p == key.pos)
            .and_then(|(_, kind, _)| *kind)
    }

    /// Whether `key` is a merge key: a plain `<<`, never a quoted `"<<"`.
    fn is_merge(&self, key: &Key<'_>) -> bool {
        !self.odd_keys.is_empty()
            && self
                .odd_keys
                .iter()
                .any(|(p, _, merge)| *merge && *p == key.pos)
    }

    /// The items of a list, or `None` if the node is not one.
    pub fn seq(&self, node: &Node<'a>) -> Option<&[Node<'a>]> {
        match node.value {
            Value::Seq(span) => Some(&self.items[span.range()]),
            _ => None,
        }
    }

    /// The entries of a mapping, in file order, or `None` if it is not one.
    pub fn map(&self, node: &Node<'a>) -> Option<&[(Key<'a>, Node<'a>)]> {
        match node.value {
            Value::Map(span) => Some(&self.entries[span.range()]),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node<'a> {
    pub pos: Pos,
    pub value: Value<'a>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Seq(Span32),
    /// Entries in file order; duplicate keys are refused.
    Map(Span32),
    /// An item of `spec.systems`, decoded as soon as it was read and its
    /// nodes given back: the `k`th of [`Tree::taken`]. Holding every
    /// system's nodes until the whole file is read took more memory than
    /// the playbook itself (150 MiB of nodes for 100,000 systems).
    Taken(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key<'a> {
    pub pos: Pos,
    /// As written: a plain `1.10` key is the text "1.10", never "1.1".
    /// Whether it reads as text is [`Tree::key_reads_as`]'s to say.
    pub name: Cow<'a, str>,
}

/// The plain scalar at `pos` of `source`, as written. Scans the text to
/// the line: for a one-off message (a syntax error); the tree's messages use
/// [`Tree::written`], which indexes the lines once.
fn written_at(source: &str, pos: Pos) -> &str {
    let line = source
        .split('\n')
        .nth((pos.line as usize).saturating_sub(1))
        .unwrap_or("");
    token_at(line, pos)
}

/// The plain scalar at `pos.column` of `line`, as written.
fn token_at(line: &str, pos: Pos) -> &str {
    let start = line
        .char_indices()
        .nth((pos.column as usize).saturating_sub(1))
        .map_or(line.len(), |(i, _)| i);
    token_from(&line[start..])
}

/// The plain scalar `rest` begins with, as written.
fn token_from(rest: &str) -> &str {
    let end = rest.find([',', ']', '}', '\r', '#']).unwrap_or(rest.len());
    let token = rest[..end].trim_end();
    // `key: value` read from the key's position: the value's own text only.
    token.strip_suffix(':').unwrap_or(token)
}

impl Value<'_> {
    /// What a person would call this kind of value, for "expected X, found Y".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) | Value::Taken(_) => "a mapping",
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Seq(_) => f.write_str("a list"),
            Value::Map(_) | Value::Taken(_) => f.write_str("a mapping"),
        }
    }
}

fn pos_of(m: &Marker) -> Pos {
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Pos::new(clamp(m.line()), clamp(m.col().saturating_add(1)))
}

/// The YAML 1.2 core schema's reading of a plain scalar.
fn resolve_plain(text: Cow<'_, str>) -> Value<'_> {
    match text.as_ref() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let t = text.as_ref();
    let first = t.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
        let digits = t.trim_start_matches(['-', '+']);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(i) = t.parse::<i64>() {
                return Value::Int(i);
            }
            // Too large for 64 bits: still a number, never quietly text.
            if let Ok(x) = t.parse::<f64>() {
                return Value::Float(x);
            }
        } else if let Some(hex) = t.strip_prefix("0x") {
            // from_str_radix takes a sign (`0x-1`); YAML's core schema does not.
            if hex.bytes().all(|b| b.is_ascii_hexdigit())
                && let Ok(i) = i64::from_str_radix(hex, 16)
            {
                return Value::Int(i);
            }
        } else if let Some(oct) = t.strip_prefix("0o") {
            if oct.bytes().all(|b| matches!(b, b'0'..=b'7'))
                && let Ok(i) = i64::from_str_radix(oct, 8)
            {
                return Value::Int(i);
            }
        } else if t.bytes().any(|b| b.is_ascii_digit())
            && t.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
            && let Ok(x) = t.parse::<f64>()
        {
            return Value::Float(x);
        }
    }
    Value::Str(text)
}

/// A collection under construction: where its children begin on the
/// pending stacks.
enum Frame<'a> {
    Seq {
        pos: Pos,
        anchor: usize,
        start: usize,
    },
    Map {
        pos: Pos,
        anchor: usize,
        start: usize,
        key: Option<Key<'a>>,
        marks: Marks,
    },
}

/// The arenas' lengths and the anchors defined when a mapping began: a
/// system's nodes are what was added since, given back once it is decoded
/// unless an anchor among them may still be aliased.
#[derive(Clone, Copy)]
struct Marks {
    items: usize,
    entries: usize,
    anchored: usize,
}

struct Builder<'a> {
    tree: Tree<'a>,
    stack: Vec<Frame<'a>>,
    /// Finished children of the open collections, innermost last.
    items: Vec<Node<'a>>,
    entries: Vec<(Key<'a>, Node<'a>)>,
    /// Anchored nodes and how many nodes each expands to.
    anchors: HashMap<usize, (Node<'a>, usize)>,
    nodes: usize,
    /// The scalar being placed, as written and as YAML reads it plain: what
    /// a key made of it keeps (see [`Key`]).
    scalar: Option<(Cow<'a, str>, Option<&'static str>, bool)>,
    /// How many anchors have been defined.
    anchored: usize,
    /// Decode systems as they are read (off only to test that it changes
    /// nothing).
    stream: bool,
}

fn fail(pos: Pos, message: impl Into<String>) -> Diagnostic {
    Diagnostic::error(pos, message)
}

fn to_u32(n: usize, pos: Pos) -> Result<u32, Diagnostic> {
    u32::try_from(n).map_err(|_| fail(pos, "the document is too large"))
}

impl<'a> Builder<'a> {
    fn new(text: &'a str, stream: bool) -> Builder<'a> {
        Builder {
            tree: Tree {
                root: None,
                items: Vec::new(),
                entries: Vec::new(),
                source: text,
                line_starts: std::sync::OnceLock::new(),
                last_column: std::sync::Mutex::new((usize::MAX, 0, 0)),
                odd_keys: Vec::new(),
                taken: Vec::new(),
                early_diags: Vec::new(),
            },
            stack: Vec::new(),
            items: Vec::new(),
            entries: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            scalar: None,
            anchored: 0,
            stream,
        }
    }

    /// A scalar read as `value` (resolved already when tagged); `plain`
    /// when written without quotes or tag.
    /// `raw` is the text as written, kept when the scalar is a key.
    fn scalar(
        &mut self,
        pos: Pos,
        raw: Option<Cow<'a, str>>,
        value: Value<'a>,
        plain: bool,
        anchor: usize,
    ) -> Result<(), Diagnostic> {
        self.charge(1, pos)?;
        if let Some(raw) = raw {
            let not_text = (!matches!(value, Value::Str(_))).then(|| value.kind());
            let merge = plain && raw == "<<";
            self.scalar = Some((raw, not_text, merge));
        }
        self.place(Node { pos, value }, anchor)
    }

    /// Whether the next scalar is a mapping's key.
    fn awaits_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// A plain or quoted scalar without a tag.
    fn untagged(
        &mut self,
        pos: Pos,
        text: Cow<'a, str>,
        plain: bool,
        anchor: usize,
    ) -> Result<(), Diagnostic> {
        let raw = self.awaits_key().then(|| text.clone());
        let value = if plain {
            resolve_plain(text)
        } else {
            Value::Str(text)
        };
        self.scalar(pos, raw, value, plain, anchor)
    }

    fn seq_start(&mut self, pos: Pos, anchor: usize) -> Result<(), Diagnostic> {
        let start = self.items.len();
        self.open(Frame::Seq { pos, anchor, start }, pos)
    }

    fn map_start(&mut self, pos: Pos, anchor: usize) -> Result<(), Diagnostic> {
        let start = self.entries.len();
        let marks = Marks {
            items: self.tree.items.len(),
            entries: self.tree.entries.len(),
            anchored: self.anchored,
        };
        self.open(
            Frame::Map {
                pos,
                anchor,
                start,
                key: None,
                marks,
            },
            pos,
        )
    }

    /// The index of the mapping about to be placed when it is an item of
    /// `spec.systems` that may be decoded now: no anchor on it, on its
    /// list, or among its nodes (an alias later could need them).
    fn system_index(&self, anchor: usize, anchors_before: usize) -> Option<usize> {
        if !self.stream || anchor != 0 || anchors_before != self.anchored {
            return None;
        }
        let key_is = |frame: &Frame<'_>, name: &str| {
            matches!(frame, Frame::Map { key: Some(k), anchor: 0, .. }
                if k.name == name && !self.tree.is_merge(k))
        };
        match self.stack.as_slice() {
            [
                root,
                spec,
                Frame::Seq {
                    anchor: 0, start, ..
                },
            ] if key_is(root, "spec") && key_is(spec, "systems") => Some(self.items.len() - start),
            _ => None,
        }
    }

    /// Decodes the `index`th system, gives its nodes back and keeps what
    /// decoding found: the value that stands for it in the tree.
    fn take_system(
        &mut self,
        node: &Node<'a>,
        index: usize,
        marks: Marks,
    ) -> Result<Value<'a>, Diagnostic> {
        let (early, diags) = crate::decode::system_early(&self.tree, node, index);
        self.tree.early_diags.extend(diags);
        self.tree.items.truncate(marks.items);
        self.tree.entries.truncate(marks.entries);
        let taken = &mut self.tree.taken;
        let value = Value::Taken(to_u32(taken.len(), node.pos)?);
        if taken.len() == taken.capacity() {
            // Doubled while small (a copy each time), then an eighth more
            // at a time (the allocator moves large blocks without copying):
            // the list is most of the playbook, and doubled it would be up
            // to twice that.
            let len = taken.len();
            taken.reserve_exact(if len < 1 << 16 { len.max(64) } else { len / 8 });
        }
        taken.push(early);
        Ok(value)
    }

    /// An alias of anchor `id`, or `None` when no such anchor came before.
    fn alias(&mut self, id: usize, pos: Pos) -> Option<Result<(), Diagnostic>> {
        let (node, size) = self.anchors.get(&id)?;
        let (mut node, size) = (node.clone(), *size);
        debug_assert!(
            !matches!(node.value, Value::Taken(_)),
            "a taken system is never anchored"
        );
        Some(self.charge(size, pos).and_then(|()| {
            node.pos = pos;
            self.place(node, 0)
        }))
    }

    fn finish(self) -> Result<Tree<'a>, Diagnostic> {
        if self.tree.root.is_none() {
            return Err(fail(
                Pos::new(1, 1),
                "the file is empty (only comments or blank lines); a playbook starts with `apiVersion: blackstart.dev/v1alpha1`",
            ));
        }
        Ok(self.tree)
    }

    /// How many nodes a finished tree holds, to charge an alias its expansion.
    fn size_of(&self, node: &Node<'a>) -> usize {
        let mut count = 0usize;
        let mut todo = vec![node];
        while let Some(n) = todo.pop() {
            count += 1;
            if let Some(items) = self.tree.seq(n) {
                todo.extend(items);
            } else if let Some(entries) = self.tree.map(n) {
                todo.extend(entries.iter().map(|(_, v)| v));
            }
        }
        count
    }

    fn charge(&mut self, count: usize, pos: Pos) -> Result<(), Diagnostic> {
        self.nodes = self.nodes.saturating_add(count);
        if self.nodes > MAX_NODES {
            return Err(fail(
                pos,
                format!(
                    "the document holds more than {MAX_NODES} YAML nodes (aliases expanded); a playbook is far smaller, so this is refused"
                ),
            ));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame<'a>, pos: Pos) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(fail(
                pos,
                format!("nesting deeper than {MAX_DEPTH} levels; a playbook needs about ten"),
            ));
        }
        self.charge(1, pos)?;
        self.stack.push(frame);
        Ok(())
    }

    /// Places a finished node in its parent (or as the document's root).
    fn place(&mut self, node: Node<'a>, anchor: usize) -> Result<(), Diagnostic> {
        if anchor != 0 {
            self.anchored += 1;
            let size = self.size_of(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => self.tree.root = Some(node),
            Some(Frame::Seq { .. }) => self.items.push(node),
            Some(Frame::Map { key, .. }) => match key.take() {
                Some(k) => self.entries.push((k, node)),
                None => {
                    let (name, not_text, merge) = match (self.scalar.take(), node.value) {
                        (Some((text, not_text, merge)), _) => (text, not_text, merge),
                        (None, Value::Str(s)) => (s, None, false),
                        (None, Value::Seq(_) | Value::Map(_)) => {
                            return Err(fail(
                                node.pos,
                                "a mapping key must be a plain value, not a list or mapping",
                            ));
                        }
                        // An alias to a scalar: as it reads.
                        (None, other) => (Cow::Owned(other.to_string()), Some(other.kind()), false),
                    };
                    if not_text.is_some() || merge {
                        self.tree.odd_keys.push((node.pos, not_text, merge));
                    }
                    *key = Some(Key {
                        pos: node.pos,
                        name,
                    });
                }
            },
        }
        Ok(())
    }

    fn close(&mut self, pos: Pos) -> Result<(), Diagnostic> {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq { pos, anchor, start }) => {
                let at = to_u32(self.tree.items.len(), pos)?;
                let len = to_u32(self.items.len() - start, pos)?;
                self.tree.items.extend(self.items.drain(start..));
                (
                    Node {
                        pos,
                        value: Value::Seq(Span32 { start: at, len }),
                    },
                    anchor,
                )
            }
            Some(Frame::Map {
                pos,
                anchor,
                start,
                marks,
                ..
            }) => {
                let own = &self.entries[start..];
                if own.iter().any(|(k, _)| self.tree.is_merge(k)) {
                    let merged = merge(self.entries.drain(start..).collect(), &self.tree)?;
                    self.entries.extend(merged);
                }
                check_duplicates(&self.entries[start..])?;
                let at = to_u32(self.tree.entries.len(), pos)?;
                let len = to_u32(self.entries.len() - start, pos)?;
                self.tree.entries.extend(self.entries.drain(start..));
                let mut node = Node {
                    pos,
                    value: Value::Map(Span32 { start: at, len }),
                };
                if let Some(index) = self.system_index(anchor, marks.anchored) {
                    node.value = self.take_system(&node, index, marks)?;
                }
                (node, anchor)
            }
            None => {
                return Err(fail(
                    pos,
                    "invalid YAML: a collection ends that never began",
                ));
            }
        };
        self.place(node, anchor)
    }
}

fn check_duplicates(entries: &[(Key<'_>, Node<'_>)]) -> Result<(), Diagnostic> {
    if entries.len() <= 16 {
        for (i, (k, _)) in entries.iter().enumerate() {
            if let Some((first, _)) = entries[..i].iter().find(|(f, _)| f.name == k.name) {
                return Err(duplicate(k, first));
            }
        }
    } else {
        let mut seen: HashMap<&str, &Key<'_>> = HashMap::with_capacity(entries.len());
        for (k, _) in entries {
            if let Some(first) = seen.insert(k.name.as_ref(), k) {
                return Err(duplicate(k, first));
            }
        }
    }
    Ok(())
}

fn duplicate(key: &Key<'_>, first: &Key<'_>) -> Diagnostic {
    fail(key.pos, format!("duplicate key `{}`", key.name))
        .with_help(format!("first given at line {}", first.pos.line))
}

/// Applies YAML merge keys (`<<: *defaults`): entries written in the mapping
/// win over merged ones, earlier merged mappings over later ones.
fn merge<'a>(
    entries: Vec<(Key<'a>, Node<'a>)>,
    tree: &Tree<'a>,
) -> Result<Vec<(Key<'a>, Node<'a>)>, Diagnostic> {
    let not_a_map = |pos| {
        fail(
            pos,
            "a merge key `<<` takes a mapping or a list of mappings",
        )
    };
    let mut own = Vec::with_capacity(entries.len());
    let mut merged: Vec<(Key<'a>, Node<'a>)> = Vec::new();
    let mut first_merge: Option<Key<'a>> = None;
    for (k, v) in entries {
        if !tree.is_merge(&k) {
            own.push((k, v));
            continue;
        }
        if let Some(first) = &first_merge {
            // YAML calls two `<<` in one mapping duplicate keys; one wins
            // silently elsewhere.
            return Err(duplicate(&k, first).with_help(format!(
                "first given at line {}; merge several mappings with one key: `<<: [*a, *b]`",
                first.pos.line
            )));
        }
        first_merge = Some(k.clone());
        if let Some(m) = tree.map(&v) {
            merged.extend(m.iter().cloned());
        } else if let Some(items) = tree.seq(&v) {
            for item in items {
                merged.extend(
                    tree.map(item)
                        .ok_or_else(|| not_a_map(item.pos))?
                        .iter()
                        .cloned(),
                );
            }
        } else {
            return Err(not_a_map(v.pos));
        }
    }
    for (k, v) in merged {
        if !own.iter().any(|(o, _)| o.name == k.name) {
            own.push((k, v));
        }
    }
    Ok(own)
}

fn unsupported_tag(pos: Pos, tag: &granit_parser::Tag) -> Diagnostic {
    fail(
        pos,
        format!(
            "unsupported YAML tag `{}{}`",
            tag.original_handle(),
            tag.suffix()
        ),
    )
    .with_help("a playbook needs no tags; remove it")
}

/// A syntax error where it is. The scanner reports a tab in indentation
/// at the end of the line before it; it is reported on the tab's own line.
fn syntax_error(text: &str, e: &granit_parser::ScanError) -> Diagnostic {
    let pos = pos_of(e.marker());
    if e.info().contains("tab") {
        let from = (pos.line as usize).saturating_sub(1);
        let tab = text
            .split('\n')
            .enumerate()
            .skip(from)
            .find_map(|(i, line)| {
                let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
                line[..indent].find('\t').map(|col| (i, col))
            });
        if let Some((line, col)) = tab {
            return fail(
                Pos::new(
                    u32::try_from(line + 1).unwrap_or(u32::MAX),
                    u32::try_from(col + 1).unwrap_or(u32::MAX),
                ),
                "invalid YAML: a tab in indentation",
            )
            .with_help("YAML indents with spaces only");
        }
    }
    if e.info().contains("unknown anchor") {
        return unknown_alias(text, pos);
    }
    fail(pos, format!("invalid YAML: {}", e.info()))
}

/// An alias whose anchor is not defined before it, named.
fn unknown_alias(text: &str, pos: Pos) -> Diagnostic {
    let name = written_at(text, pos);
    fail(
        pos,
        format!("invalid YAML: the alias `{name}` names no anchor defined before it"),
    )
    .with_help(format!(
        "define it first with `&{}` on the value to repeat",
        name.trim_start_matches('*')
    ))
}

/// Parses one YAML document into a node tree, or says where it is wrong;
/// `stream`: decode systems as they are read (see [`Value::Taken`]).
pub(crate) fn parse(text: &str, stream: bool) -> Result<Tree<'_>, Diagnostic> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(fail(
            Pos::UNKNOWN,
            format!(
                "the file is {} bytes; a playbook may be at most {} bytes",
                text.len(),
                MAX_INPUT_BYTES
            ),
        ));
    }
    if text.trim().is_empty() {
        return Err(fail(
            Pos::new(1, 1),
            "the file is empty; a playbook starts with `apiVersion: blackstart.dev/v1alpha1`",
        ));
    }
    match fast::parse(text, stream) {
        Some(tree) => Ok(tree),
        None => full(text, stream),
    }
}

/// The full parser's reading: every file the fast reader declines.
fn full(text: &str, stream: bool) -> Result<Tree<'_>, Diagnostic> {
    let mut options = granit_parser::Options::default();
    options.block_nesting_limit = MAX_DEPTH + 1;
    options.flow_nesting_limit = MAX_DEPTH + 1;
    let mut parser = granit_parser::Parser::new_from_str_with_options(text, options);
    let mut b = Builder::new(text, stream);
    let mut documents = 0usize;
    while let Some(event) = parser.next_event() {
        let (event, span): (Event<'_>, Span) = event.map_err(|e| syntax_error(text, &e))?;
        let pos = pos_of(&span.start);
        match event {
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(fail(
                        pos,
                        "the file holds more than one YAML document; a playbook is one document",
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let plain = style == ScalarStyle::Plain;
                match &tag {
                    Some(t) => {
                        let raw = b.awaits_key().then(|| value.clone());
                        let resolved = tagged(value, t, pos)?;
                        b.scalar(pos, raw, resolved, false, anchor)?;
                    }
                    None => b.untagged(pos, value, plain, anchor)?,
                }
            }
            Event::SequenceStart(_, anchor, tag) => {
                if let Some(t) = &tag
                    && t.core_suffix() != Some("seq")
                {
                    return Err(unsupported_tag(pos, t));
                }
                b.seq_start(pos, anchor)?;
            }
            Event::MappingStart(_, anchor, tag) => {
                if let Some(t) = &tag
                    && t.core_suffix() != Some("map")
                {
                    return Err(unsupported_tag(pos, t));
                }
                b.map_start(pos, anchor)?;
            }
            Event::SequenceEnd | Event::MappingEnd => b.close(pos)?,
            Event::Alias(id) => match b.alias(id, pos) {
                Some(placed) => placed?,
                None => return Err(unknown_alias(text, pos)),
            },
            _ => {}
        }
    }
    b.finish()
}

/// A scalar with an explicit core-schema tag (`!!str 10`, `!!int "3"`).
fn tagged<'a>(
    value: Cow<'a, str>,
    tag: &granit_parser::Tag,
    pos: Pos,
) -> Result<Value<'a>, Diagnostic> {
    let suffix = tag.core_suffix();
    if suffix == Some("str") {
        return Ok(Value::Str(value));
    }
    match (suffix, resolve_plain(value)) {
        (Some("int"), v @ Value::Int(_))
        | (Some("bool"), v @ Value::Bool(_))
        | (Some("float"), v @ (Value::Float(_) | Value::Int(_)))
        | (Some("null"), v @ Value::Null) => Ok(v),
        (Some("int" | "bool" | "float" | "null"), _) => {
            Err(fail(pos, "a tagged scalar does not match its tag"))
        }
        _ => Err(unsupported_tag(pos, tag)),
    }
}

mod fast;

/// Whether the fast reader and the full parser read `text` alike: the
/// same tree, node for node, with the same positions. `Ok(false)` when the
/// fast reader declined it (the full parser reads it alone).
#[doc(hidden)]
pub fn readers_agree(text: &str) -> Result<bool, String> {
    let Some(fast) = fast::parse(text, true) else {
        return Ok(false);
    };
    let full = full(text, true).map_err(|d| {
        format!(
            "the full parser refused what the fast reader took: {}",
            d.message
        )
    })?;
    if fast.taken != full.taken || fast.early_diags != full.early_diags {
        return Err("the systems decoded while reading differ".to_owned());
    }
    let mut todo = vec![(fast.root.clone(), full.root.clone(), String::from("(root)"))];
    while let Some((a, b, at)) = todo.pop() {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(format!("{at}: one reader has no node"));
        };
        if a.pos != b.pos {
            return Err(format!("{at}: at {:?} against {:?}", a.pos, b.pos));
        }
        match (fast.seq(&a), full.seq(&b), fast.map(&a), full.map(&b)) {
            (Some(x), Some(y), _, _) => {
                if x.len() != y.len() {
                    return Err(format!("{at}: {} items against {}", x.len(), y.len()));
                }
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    todo.push((Some(p.clone()), Some(q.clone()), format!("{at}[{i}]")));
                }
            }
            (_, _, Some(x), Some(y)) => {
                if x.len() != y.len() {
                    return Err(format!("{at}: {} entries against {}", x.len(), y.len()));
                }
                for ((k, p), (l, q)) in x.iter().zip(y) {
                    if k != l || fast.key_reads_as(k) != full.key_reads_as(l) {
                        return Err(format!("{at}: key {k:?} against {l:?}"));
                    }
                    todo.push((Some(p.clone()), Some(q.clone()), format!("{at}.{}", k.name)));
                }
            }
            _ => {
                let same = match (&a.value, &b.value) {
                    (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
                    (x, y) => x == y,
                };
                if !same {
                    return Err(format!("{at}: {:?} against {:?}", a.value, b.value));
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
