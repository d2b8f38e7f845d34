//! `${env:NAME}` placeholders, resolved at the last moment and never shown.
//!
//! Every value a placeholder resolves to is remembered, and everything the
//! engine writes about a step (its output, its error, the events built from
//! them) goes through [`Secrets::redact`] first. A secret therefore reaches
//! the process or request that needs it and nothing else: not the journal,
//! not a log line, not a report.
//!
//! `apply` registers every secret the plan names before anything starts
//! ([`Secrets::preload`]), so a stage-1 step that prints what it can see
//! cannot put a stage-2 secret into the journal before that secret was
//! ever resolved. A secret also hides in its escaped forms (JSON, Rust
//! debug, URL encoding), since error messages quote values that way.

use std::sync::{Arc, RwLock};

use blackstart_model::placeholder::{self, PlaceholderError};

/// What a redacted secret is shown as.
pub const REDACTED: &str = "[redacted]";

/// Where placeholder values come from; the process environment in real runs.
pub type Lookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Resolves placeholders and remembers what they resolved to. Cheap to
/// clone; clones share what they have seen.
#[derive(Clone)]
pub struct Secrets {
    lookup: Lookup,
    seen: Arc<RwLock<Vec<String>>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values, not even in a debug dump.
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

impl Secrets {
    /// Placeholders read the process environment.
    pub fn from_env() -> Secrets {
        Secrets::with_lookup(Arc::new(|name| std::env::var(name).ok()))
    }

    pub fn with_lookup(lookup: Lookup) -> Secrets {
        Secrets {
            lookup,
            seen: Arc::default(),
        }
    }

    /// Resolves every named variable now and registers it (and its escaped
    /// forms) for redaction; the error lists every name that is not set.
    pub fn preload<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), Vec<String>> {
        let mut missing = Vec::new();
        let mut found = Vec::new();
        for name in names {
            match (self.lookup)(name) {
                Some(v) => found.push(v),
                None => missing.push(name.to_owned()),
            }
        }
        if !missing.is_empty() {
            return Err(missing);
        }
        self.remember(found);
        Ok(())
    }

    /// Registers values that must never be shown, as if resolved.
    pub fn register(&self, values: impl IntoIterator<Item = String>) {
        self.remember(values.into_iter().collect());
    }

    fn remember(&self, found: Vec<String>) {
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        let before = seen.len();
        for value in found {
            for form in forms(&value) {
                if !form.is_empty() && !seen.contains(&form) {
                    seen.push(form);
                }
            }
        }
        if seen.len() != before {
            // Longest first, so a secret containing another is hidden whole.
            seen.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// The length of the longest form of any secret: a window of output
    /// this much longer than what is kept can be redacted before the cut.
    pub fn longest(&self) -> usize {
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        seen.first().map_or(0, String::len)
    }

    /// `text` with every `${env:NAME}` replaced by its value.
    pub fn resolve(&self, text: &str) -> Result<String, PlaceholderError> {
        if !text.contains("${") {
            return Ok(text.to_owned());
        }
        let mut found = Vec::new();
        let out = placeholder::expand(text, |name| {
            let value = (self.lookup)(name)?;
            found.push(value.clone());
            Some(value)
        })?;
        self.remember(found);
        Ok(out)
    }

    /// The redacted text of `text[from..to]`: an occurrence of a secret
    /// that crosses either end is replaced whole, and nothing outside is
    /// shown. For a piece of a stream whose first or last bytes may be part
    /// of a secret cut in two, which `redact` would not recognise.
    pub fn redact_within(&self, text: &str, from: usize, to: usize) -> String {
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        // Occurrences, longest secrets first; a shorter one inside a longer
        // one is already covered.
        let mut hidden: Vec<(usize, usize)> = Vec::new();
        for value in seen.iter() {
            for (at, _) in text.match_indices(value.as_str()) {
                let end = at + value.len();
                if !hidden.iter().any(|&(a, e)| at < e && a < end) {
                    hidden.push((at, end));
                }
            }
        }
        hidden.sort_unstable();
        let mut to = to.min(text.len());
        while !text.is_char_boundary(to) {
            to -= 1;
        }
        let mut start = from.min(to);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        let mut out = String::with_capacity(to - start);
        for (at, end) in hidden {
            if end <= start {
                continue;
            }
            if at >= to {
                break;
            }
            if at > start {
                out.push_str(&text[start..at]);
            }
            out.push_str(REDACTED);
            start = end;
        }
        if start < to {
            out.push_str(&text[start..to]);
        }
        out
    }

    /// `text` with every secret resolved so far replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_owned();
        for value in seen.iter() {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), REDACTED);
            }
        }
        out
    }
}

/// A secret as written plainly and as JSON, Rust's debug format and URL
/// encoding would quote it.
fn forms(value: &str) -> Vec<String> {
    let json = serde_json::to_string(value).unwrap_or_default();
    let debug = format!("{value:?}");
    let unquote = |s: &str| s[1..s.len().saturating_sub(1).max(1)].to_owned();
    let url = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    let form = url.replace("%20", "+");
    let mut out = vec![value.to_owned(), unquote(&json), unquote(&debug), url, form];
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_redacts_everything_it_resolved() {
        let secrets = Secrets::with_lookup(Arc::new(|n| match n {
            "TOKEN" => Some("s3cr3t-token".to_owned()),
            "USER" => Some("ops".to_owned()),
            _ => None,
        }));
        assert_eq!(
            secrets.resolve("Bearer ${env:TOKEN}").unwrap(),
            "Bearer s3cr3t-token"
        );
        assert_eq!(secrets.resolve("plain").unwrap(), "plain");
        assert!(secrets.resolve("${env:MISSING}").is_err());
        let clone = secrets.clone();
        clone.resolve("${env:USER}").unwrap();
        assert_eq!(
            secrets.redact("401 for s3cr3t-token as ops"),
            "401 for [redacted] as [redacted]"
        );
        assert!(!format!("{secrets:?}").contains("s3cr3t"));
    }

    #[test]
    fn preloaded_secrets_hide_in_every_escaped_form() {
        let secret = r#"p"a\ss w/rd"#;
        let secrets =
            Secrets::with_lookup(Arc::new(move |n| (n == "PW").then(|| secret.to_owned())));
        assert_eq!(
            secrets.preload(["PW", "NOPE", "ALSO_NOPE"]),
            Err(vec!["NOPE".to_owned(), "ALSO_NOPE".to_owned()])
        );
        secrets.preload(["PW"]).unwrap();
        let quoted = [
            secret.to_owned(),
            serde_json::to_string(secret).unwrap(),
            format!("{secret:?}"),
            "p%22a%5Css%20w%2Frd".to_owned(),
            "p%22a%5Css+w%2Frd".to_owned(),
        ];
        for text in quoted {
            let shown = secrets.redact(&format!("got {text} back"));
            assert!(
                !shown.contains("ss w") && !shown.contains("w%2F"),
                "{shown}"
            );
            assert!(shown.contains(REDACTED), "{shown}");
        }
        assert!(secrets.longest() >= secret.len());
    }
}
