//! `${env:NAME}` placeholders, resolved at the last moment and never shown.
//!
//! Every value a placeholder resolves to is remembered, and everything the
//! engine writes about a step (its output, its error, the events built from
//! them) goes through [`Secrets::redact`] first. A secret therefore reaches
//! the process or request that needs it and nothing else: not the journal,
//! not a log line, not a report.

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
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        for value in found {
            if !value.is_empty() && !seen.contains(&value) {
                seen.push(value);
                // Longest first, so a secret containing another is hidden whole.
                seen.sort_by_key(|v| std::cmp::Reverse(v.len()));
            }
        }
        Ok(out)
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
}
