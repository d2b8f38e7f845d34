//! A fast reader for the YAML that playbooks are written in, beside the
//! full parser.
//!
//! Profiling validate + plan of 100,000 systems put most of its time in
//! the general YAML scanner: it handles every corner of YAML for every
//! character. Playbooks use a small part of it: block mappings and lists,
//! flow lists and mappings on one line, plain and quoted scalars,
//! comments, anchors, aliases and merge keys. This reader reads exactly that
//! part, line by line, and feeds the same [`Builder`] the full parser feeds,
//! with the same positions, so the tree (and every message drawn from it)
//! is the same whichever read it.
//!
//! It declines rather than guesses: at the first thing outside that part (a
//! tag, a block scalar, a scalar over several lines, a rare escape, a tab, an
//! empty value, a second document, anything it finds malformed) it returns
//! `None`, and the full parser reads the file from the start and reports
//! what is wrong in its words. A test compares the two readers' trees,
//! positions included, on every example and on generated playbooks.

use std::borrow::Cow;
use std::collections::HashMap;

use super::{Builder, Pos, Tree};

/// The tree of `text`, or `None` when the full parser must read it.
pub(super) fn parse(text: &str, stream: bool) -> Option<Tree<'_>> {
    let bytes = text.as_bytes();
    if bytes.contains(&b'\t') || bytes.contains(&b'\r') || text.starts_with('\u{feff}') {
        return None;
    }
    let mut f = Fast {
        b: Builder::new(text, stream),
        blocks: Vec::new(),
        pending: Some(Pending {
            parent: None,
            anchor: 0,
        }),
        anchors: HashMap::new(),
        seen_content: false,
        ascii: std::cell::Cell::new(true),
        cursor: std::cell::Cell::new((0, 0)),
    };
    for (i, line) in text.split('\n').enumerate() {
        f.line(i + 1, line)?;
    }
    if f.pending.is_some() {
        // A key with no value, or an empty file: the full parser says.
        return None;
    }
    while f.blocks.pop().is_some() {
        f.b.close(Pos::UNKNOWN).ok()?;
    }
    f.b.finish().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Map,
    Seq,
}

#[derive(Debug, Clone, Copy)]
struct Block {
    indent: usize,
    kind: Kind,
}

/// A value that the next lines hold (after `key:` or `-` and nothing else).
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// The block it belongs to; none for the document's root.
    parent: Option<Block>,
    anchor: usize,
}

struct Fast<'a> {
    b: Builder<'a>,
    blocks: Vec<Block>,
    pending: Option<Pending>,
    anchors: HashMap<&'a str, usize>,
    seen_content: bool,
    /// Whether the current line is ASCII, and the byte and character
    /// column of the last position counted in it.
    ascii: std::cell::Cell<bool>,
    cursor: std::cell::Cell<(usize, usize)>,
}

/// Where byte `at` of `line` stands: YAML counts columns in characters.
fn skip_spaces(line: &str, mut i: usize) -> usize {
    while line.as_bytes().get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// Whether the line ends at `i`: nothing, or a comment after a space.
fn ends(line: &str, i: usize) -> bool {
    let i = skip_spaces(line, i);
    i >= line.len() || (line.as_bytes()[i] == b'#' && (i == 0 || line.as_bytes()[i - 1] == b' '))
}

/// Characters that make a plain scalar something else when it starts with
/// them.
fn indicator(c: u8) -> bool {
    matches!(
        c,
        b'-' | b'?'
            | b':'
            | b','
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'#'
            | b'&'
            | b'*'
            | b'!'
            | b'|'
            | b'>'
            | b'\''
            | b'"'
            | b'%'
            | b'@'
            | b'`'
    )
}

impl<'a> Fast<'a> {
    /// Where byte `at` of `line` stands. YAML counts columns in
    /// characters: in a line that is not ASCII they are counted on from the
    /// last node's, since a line's nodes come left to right, so a long line
    /// costs its length once, not once per node.
    fn pos(&self, no: usize, line: &str, at: usize) -> Pos {
        let col = if self.ascii.get() {
            at
        } else {
            let (mut byte, mut col) = self.cursor.get();
            if at < byte {
                (byte, col) = (0, 0);
            }
            col += line[byte..at].chars().count();
            byte = at;
            self.cursor.set((byte, col));
            col
        };
        Pos::new(
            u32::try_from(no).unwrap_or(u32::MAX),
            u32::try_from(col + 1).unwrap_or(u32::MAX),
        )
    }

    fn line(&mut self, no: usize, line: &'a str) -> Option<()> {
        self.ascii.set(line.is_ascii());
        self.cursor.set((0, 0));
        let n = skip_spaces(line, 0);
        let rest = &line[n..];
        if rest.is_empty() || rest.starts_with('#') {
            return Some(());
        }
        if n == 0 && (rest.starts_with("---") || rest.starts_with("...")) {
            // One `---` before the content; anything else is the full
            // parser's (documents, directives).
            if rest == "---" && !self.seen_content && self.blocks.is_empty() {
                self.seen_content = true;
                return Some(());
            }
            return None;
        }
        if rest.starts_with('%') {
            return None;
        }
        self.seen_content = true;
        let item = rest == "-" || rest.starts_with("- ");
        if let Some(p) = self.pending.take() {
            // The value of the key (or item) before: a block below it.
            let below = match p.parent {
                None => true,
                Some(parent) => {
                    n > parent.indent || (item && n == parent.indent && parent.kind == Kind::Map)
                }
            };
            if !below {
                return None;
            }
            if item {
                // A list at its key's own indent (`key:\n- a`) stands, for
                // the full parser, where its first item's content does.
                let at = match p.parent {
                    Some(parent) if parent.indent == n => {
                        let c = skip_spaces(line, n + 1);
                        if c >= line.len() {
                            return None;
                        }
                        c
                    }
                    _ => n,
                };
                self.b.seq_start(self.pos(no, line, at), p.anchor).ok()?;
                self.blocks.push(Block {
                    indent: n,
                    kind: Kind::Seq,
                });
            } else {
                self.b.map_start(self.pos(no, line, n), p.anchor).ok()?;
                self.blocks.push(Block {
                    indent: n,
                    kind: Kind::Map,
                });
            }
        } else {
            while self.blocks.last().is_some_and(|b| b.indent > n) {
                self.blocks.pop();
                self.b.close(Pos::UNKNOWN).ok()?;
            }
            // A list at its key's own indent ends where the items do.
            if !item
                && self
                    .blocks
                    .last()
                    .is_some_and(|b| b.indent == n && b.kind == Kind::Seq)
            {
                self.blocks.pop();
                self.b.close(Pos::UNKNOWN).ok()?;
            }
            let top = self.blocks.last()?;
            if top.indent != n || (top.kind == Kind::Seq) != item {
                return None;
            }
        }
        if item {
            self.item(no, line, n)
        } else {
            self.entry(no, line, n)
        }
    }

    /// `- …`: an item of the list at `n`.
    fn item(&mut self, no: usize, line: &'a str, n: usize) -> Option<()> {
        let parent = Block {
            indent: n,
            kind: Kind::Seq,
        };
        let c = skip_spaces(line, n + 1);
        if ends(line, c) {
            self.pending = Some(Pending {
                parent: Some(parent),
                anchor: 0,
            });
            return Some(());
        }
        if line[c..].starts_with('-') && (line[c..].len() == 1 || line[c..].starts_with("- ")) {
            return None;
        }
        if self.key_end(line, c).is_some() {
            // `- key: value`: a mapping whose keys stand at `c`.
            self.b.map_start(self.pos(no, line, c), 0).ok()?;
            self.blocks.push(Block {
                indent: c,
                kind: Kind::Map,
            });
            return self.entry(no, line, c);
        }
        self.value(no, line, c, parent, 0)
    }

    /// Where a key that starts at `at` ends (its colon), if the text there
    /// is a `key: …` at all.
    fn key_end(&self, line: &str, at: usize) -> Option<usize> {
        let bytes = line.as_bytes();
        match bytes.get(at)? {
            q @ (b'"' | b'\'') => {
                let end = quoted_end(line, at, *q)?;
                (bytes.get(end) == Some(&b':') && matches!(bytes.get(end + 1), None | Some(b' ')))
                    .then_some(end)
            }
            c if indicator(*c) => None,
            _ => {
                let mut i = at;
                while i < bytes.len() {
                    match bytes[i] {
                        b':' if matches!(bytes.get(i + 1), None | Some(b' ')) => return Some(i),
                        b'#' if bytes[i - 1] == b' ' => return None,
                        _ => i += 1,
                    }
                }
                None
            }
        }
    }

    /// `key: …` of the mapping at `n`.
    fn entry(&mut self, no: usize, line: &'a str, n: usize) -> Option<()> {
        let colon = self.key_end(line, n)?;
        let (key, plain) = match line.as_bytes()[n] {
            q @ (b'"' | b'\'') => (unquote(&line[n + 1..colon - 1], q)?, false),
            _ => {
                let key = &line[n..colon];
                if key.ends_with(' ') {
                    return None;
                }
                (Cow::Borrowed(key), true)
            }
        };
        self.b.untagged(self.pos(no, line, n), key, plain, 0).ok()?;
        let parent = Block {
            indent: n,
            kind: Kind::Map,
        };
        let mut c = skip_spaces(line, colon + 1);
        let mut anchor = 0;
        if line.as_bytes().get(c) == Some(&b'&') {
            let (id, next) = self.anchor(line, c)?;
            anchor = id;
            c = next;
        }
        if ends(line, c) {
            self.pending = Some(Pending {
                parent: Some(parent),
                anchor,
            });
            return Some(());
        }
        self.value(no, line, c, parent, anchor)
    }

    /// `&name `: a new anchor's id, and where the value after it starts.
    fn anchor(&mut self, line: &'a str, at: usize) -> Option<(usize, usize)> {
        let end = line[at..].find(' ').map_or(line.len(), |e| at + e);
        let name = &line[at + 1..end];
        if name.is_empty()
            || name
                .bytes()
                .any(|c| matches!(c, b',' | b'[' | b']' | b'{' | b'}'))
        {
            return None;
        }
        let id = self.anchors.len() + 1;
        // A name given again names the newer node from here on.
        self.anchors.insert(name, id);
        Some((id, skip_spaces(line, end)))
    }

    /// A value written on the line from `at`, to its end.
    fn value(
        &mut self,
        no: usize,
        line: &'a str,
        at: usize,
        _parent: Block,
        anchor: usize,
    ) -> Option<()> {
        let bytes = line.as_bytes();
        let end = match bytes[at] {
            b'[' | b'{' => self.flow(no, line, at, anchor)?,
            q @ (b'"' | b'\'') => {
                let end = quoted_end(line, at, q)?;
                let text = unquote(&line[at + 1..end - 1], q)?;
                self.b
                    .untagged(self.pos(no, line, at), text, false, anchor)
                    .ok()?;
                end
            }
            b'*' => {
                if anchor != 0 {
                    return None;
                }
                let end = line[at..].find(' ').map_or(line.len(), |e| at + e);
                let id = *self.anchors.get(&line[at + 1..end])?;
                self.b.alias(id, self.pos(no, line, at))?.ok()?;
                end
            }
            b'-' if bytes.get(at + 1).is_some_and(|c| *c != b' ') => {
                self.plain(no, line, at, anchor)?
            }
            c if indicator(c) => return None,
            _ => self.plain(no, line, at, anchor)?,
        };
        ends(line, end).then_some(())
    }

    /// A plain scalar in a block, to the end of the line or a comment.
    fn plain(&mut self, no: usize, line: &'a str, at: usize, anchor: usize) -> Option<usize> {
        let bytes = line.as_bytes();
        let mut end = line.len();
        let mut i = at;
        while i < bytes.len() {
            match bytes[i] {
                b'#' if bytes[i - 1] == b' ' => {
                    end = i;
                    break;
                }
                // `a: b` in a value is no scalar: the full parser says why.
                b':' if matches!(bytes.get(i + 1), None | Some(b' ')) => return None,
                _ => i += 1,
            }
        }
        let text = line[at..end].trim_end_matches(' ');
        self.b
            .untagged(self.pos(no, line, at), Cow::Borrowed(text), true, anchor)
            .ok()?;
        Some(at + text.len())
    }

    /// A flow list or mapping that starts at `at` and ends on the line;
    /// where it ends.
    fn flow(&mut self, no: usize, line: &'a str, at: usize, anchor: usize) -> Option<usize> {
        let bytes = line.as_bytes();
        let close = if bytes[at] == b'[' { b']' } else { b'}' };
        if close == b']' {
            self.b.seq_start(self.pos(no, line, at), anchor).ok()?;
        } else {
            self.b.map_start(self.pos(no, line, at), anchor).ok()?;
        }
        let mut i = skip_spaces(line, at + 1);
        if bytes.get(i) == Some(&close) {
            self.b.close(Pos::UNKNOWN).ok()?;
            return Some(i + 1);
        }
        loop {
            if close == b'}' {
                i = self.flow_node(no, line, i, true)?;
                if bytes.get(i) != Some(&b':') || bytes.get(i + 1) != Some(&b' ') {
                    return None;
                }
                i = skip_spaces(line, i + 1);
            }
            i = self.flow_node(no, line, i, false)?;
            i = skip_spaces(line, i);
            match bytes.get(i) {
                Some(b',') => {
                    i = skip_spaces(line, i + 1);
                    if matches!(bytes.get(i), Some(b']' | b'}') | None) {
                        return None;
                    }
                }
                Some(c) if *c == close => {
                    self.b.close(Pos::UNKNOWN).ok()?;
                    return Some(i + 1);
                }
                _ => return None,
            }
        }
    }

    /// One node inside a flow collection; where it ends.
    fn flow_node(&mut self, no: usize, line: &'a str, at: usize, key: bool) -> Option<usize> {
        let bytes = line.as_bytes();
        match *bytes.get(at)? {
            b'[' | b'{' if !key => self.flow(no, line, at, 0),
            q @ (b'"' | b'\'') => {
                let end = quoted_end(line, at, q)?;
                let text = unquote(&line[at + 1..end - 1], q)?;
                self.b
                    .untagged(self.pos(no, line, at), text, false, 0)
                    .ok()?;
                Some(end)
            }
            b'-' if bytes
                .get(at + 1)
                .is_some_and(|c| !matches!(c, b' ' | b',' | b']' | b'}')) =>
            {
                self.flow_plain(no, line, at)
            }
            c if indicator(c) => None,
            _ => self.flow_plain(no, line, at),
        }
    }

    fn flow_plain(&mut self, no: usize, line: &'a str, at: usize) -> Option<usize> {
        let bytes = line.as_bytes();
        let mut i = at;
        while i < bytes.len() {
            match bytes[i] {
                b',' | b'[' | b']' | b'{' | b'}' => break,
                b':' if matches!(bytes.get(i + 1), None | Some(b' ' | b',' | b']' | b'}')) => break,
                b'#' if bytes[i - 1] == b' ' => return None,
                _ => i += 1,
            }
        }
        let text = line[at..i].trim_end_matches(' ');
        if text.is_empty() {
            return None;
        }
        self.b
            .untagged(self.pos(no, line, at), Cow::Borrowed(text), true, 0)
            .ok()?;
        Some(at + text.len())
    }
}

/// Where the quoted scalar that starts at `at` ends (just past its closing
/// quote), on this line.
fn quoted_end(line: &str, at: usize, q: u8) -> Option<usize> {
    let bytes = line.as_bytes();
    let mut i = at + 1;
    while i < bytes.len() {
        if q == b'"' && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == q {
            if q == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// The text of a quoted scalar's inside; `None` for an escape it does
/// not know, which the full parser reads.
fn unquote(inside: &str, q: u8) -> Option<Cow<'_, str>> {
    if q == b'"' {
        if !inside.contains('\\') {
            return Some(Cow::Borrowed(inside));
        }
        let mut out = String::with_capacity(inside.len());
        let mut chars = inside.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let hex = |chars: &mut std::str::Chars<'_>, n: usize| {
                let digits: String = chars.by_ref().take(n).collect();
                (digits.len() == n)
                    .then(|| u32::from_str_radix(&digits, 16).ok())
                    .flatten()
                    .and_then(char::from_u32)
            };
            out.push(match chars.next()? {
                '\\' => '\\',
                '"' => '"',
                '/' => '/',
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                'x' => hex(&mut chars, 2)?,
                'u' => hex(&mut chars, 4)?,
                'U' => hex(&mut chars, 8)?,
                _ => return None,
            });
        }
        return Some(Cow::Owned(out));
    }
    Some(if inside.contains("''") {
        Cow::Owned(inside.replace("''", "'"))
    } else {
        Cow::Borrowed(inside)
    })
}
