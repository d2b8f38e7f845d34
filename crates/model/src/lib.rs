//! blackstart's model: what a playbook says and what restart it compiles to.
//!
//! A playbook is read ([`load`]), checked ([`Validated`]) and compiled into a
//! [`Plan`], which is rendered for people ([`render`]) and compared with
//! another plan for pull requests ([`diff`]). The engine consumes a `Plan`
//! and never looks back at the playbook.
//!
//! This crate is pure: no I/O, no async, no clock. Callers hand it text and
//! get values back, so it runs the same in the CLI, in the operator, in a
//! benchmark and under a fuzzer.

pub mod diag;
pub mod diff;
pub mod duration;
pub mod placeholder;
pub mod plan;
pub mod playbook;
pub mod render;
pub mod schema;
pub mod synth;
pub mod validate;

mod adjacency;
mod decode;
mod yaml;

pub use diag::{Diagnostic, Diagnostics, Pos, Severity};
pub use duration::Duration;
pub use plan::{Plan, PlannedStage, PlannedSystem, playbook_hash};
pub use playbook::Playbook;
pub use validate::Validated;
pub use yaml::{MAX_DEPTH, MAX_INPUT_BYTES, readers_agree};

/// Reads a playbook from the bytes of a YAML file and checks it, reporting
/// every problem found, each with its line and column.
///
/// Bytes rather than text, so that binary junk is refused here with a
/// position instead of wherever the caller happened to decode it.
pub fn load(bytes: &[u8]) -> Result<Validated, Diagnostics> {
    let (playbook, diags, broken) = read(bytes);
    check(playbook, diags, broken)
}

/// [`load`] of bytes it may let go: the text is freed as soon as the
/// playbook is read, before the whole-playbook checks (27 MB less held at
/// once for 100,000 systems). Messages need only positions, not the text.
pub fn load_owned(bytes: Vec<u8>) -> Result<Validated, Diagnostics> {
    let (playbook, diags, broken) = read(&bytes);
    drop(bytes);
    check(playbook, diags, broken)
}

/// The whole-playbook checks after reading, with what reading found.
fn check(
    playbook: Option<Playbook>,
    mut diags: Diagnostics,
    broken: decode::Broken,
) -> Result<Validated, Diagnostics> {
    let Some(playbook) = playbook else {
        return Err(diags);
    };
    // Whole-playbook checks run even when some items could not be read, so
    // one pass reports everything; `broken` keeps them from echoing those.
    match Validated::check(playbook, &broken) {
        Ok(v) if !diags.has_errors() => Ok(v),
        Ok(v) => {
            diags.items.extend(v.warnings().items.iter().cloned());
            diags.sort();
            Err(diags)
        }
        Err(more) => {
            diags.items.extend(more.items);
            diags.sort();
            Err(diags)
        }
    }
}

/// Reads a playbook without the whole-playbook checks: syntax, types, field
/// names and values only.
pub fn parse(bytes: &[u8]) -> Result<Playbook, Diagnostics> {
    match read(bytes) {
        (Some(pb), diags, _) if !diags.has_errors() => Ok(pb),
        (_, diags, _) => Err(diags),
    }
}

/// Reads what can be read: the playbook with its broken items left out, every
/// problem found on the way, and which items were broken.
fn read(bytes: &[u8]) -> (Option<Playbook>, Diagnostics, decode::Broken) {
    read_with(bytes, true)
}

fn read_with(bytes: &[u8], stream: bool) -> (Option<Playbook>, Diagnostics, decode::Broken) {
    match read_tree(bytes, stream) {
        Ok(r) => r,
        Err(d) => (None, d, decode::Broken::default()),
    }
}

fn read_tree(
    bytes: &[u8],
    stream: bool,
) -> Result<(Option<Playbook>, Diagnostics, decode::Broken), Diagnostics> {
    let fail = |d: Diagnostic| Diagnostics { items: vec![d] };
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(fail(Diagnostic::error(
            Pos::UNKNOWN,
            format!(
                "the file is {} bytes; a playbook may be at most {} MiB",
                bytes.len(),
                MAX_INPUT_BYTES / (1024 * 1024)
            ),
        )));
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            return Err(fail(
                Diagnostic::error(
                    position_of(good),
                    format!(
                        "the file is not UTF-8 text (bad byte at offset {})",
                        e.valid_up_to()
                    ),
                )
                .with_help("a playbook is a YAML text file"),
            ));
        }
    };
    if let Some(offset) = text.find('\0') {
        return Err(fail(Diagnostic::error(
            position_of(&bytes[..offset]),
            "the file holds a NUL byte: it looks binary, not like a YAML playbook",
        )));
    }
    let mut tree = yaml::parse(text, stream).map_err(fail)?;
    let mut taken = std::mem::take(&mut tree.taken);
    taken.shrink_to_fit();
    let early = std::mem::take(&mut tree.early_diags);
    let root = tree
        .root
        .as_ref()
        .expect("parse returns a tree with a root");
    let mut cx = decode::Cx {
        diags: Diagnostics { items: early },
        tree: &tree,
        broken: decode::Broken::default(),
        path: Vec::new(),
        taken,
    };
    let playbook = decode::playbook(root, &mut cx);
    let mut diags = cx.diags;
    diags.sort();
    Ok((playbook, diags, cx.broken))
}

/// Whether reading `bytes` gives the same playbook, messages and broken
/// items with systems decoded while the file is read as after it: the
/// test of [`yaml::Value::Taken`].
#[doc(hidden)]
pub fn streaming_agrees(bytes: &[u8]) -> Result<(), String> {
    let (a, b) = (read_with(bytes, true), read_with(bytes, false));
    if a.0 != b.0 {
        return Err("the playbooks differ".to_owned());
    }
    if a.1 != b.1 {
        return Err(format!(
            "the messages differ:\n{}\nagainst\n{}",
            a.1.render("streamed"),
            b.1.render("after")
        ));
    }
    if a.2 != b.2 {
        return Err(format!("broken items differ: {:?} against {:?}", a.2, b.2));
    }
    Ok(())
}

/// Line and column just after `prefix`, counting characters like the parser.
fn position_of(prefix: &[u8]) -> Pos {
    let text = String::from_utf8_lossy(prefix);
    let line = text.matches('\n').count() + 1;
    let column = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Pos::new(
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}
