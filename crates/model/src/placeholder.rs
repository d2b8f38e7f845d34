//! `${env:NAME}` placeholders: how secrets reach a playbook without living in it.
//!
//! The model only finds and checks placeholders; it never looks a value up.
//! Resolution happens at run time in the engine, through a lookup the caller
//! passes in, so plans, diffs and hashes always show the placeholder, never
//! the secret.

/// Why a placeholder is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceholderError {
    #[error("unterminated placeholder starting at {0:?}: close it with `}}`")]
    Unterminated(String),
    #[error("unknown placeholder `${{{0}}}`: only `${{env:NAME}}` is supported")]
    UnknownSource(String),
    #[error(
        "bad variable name in `${{env:{0}}}`: use letters, digits and `_`, not starting with a digit"
    )]
    BadName(String),
    #[error("environment variable `{0}` is not set")]
    Unset(String),
}

/// One piece of a string: literal text, or an environment variable's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Env(&'a str),
}

/// Splits `text` into literal pieces and `${env:NAME}` references.
pub fn pieces(text: &str) -> Result<Vec<Piece<'_>>, PlaceholderError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(PlaceholderError::Unterminated(
                rest[start..].chars().take(40).collect(),
            ));
        };
        let inner = &after[..end];
        let Some(name) = inner.strip_prefix("env:") else {
            return Err(PlaceholderError::UnknownSource(inner.to_owned()));
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(PlaceholderError::BadName(name.to_owned()));
        }
        out.push(Piece::Env(name));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// The names of the environment variables `text` reads.
pub fn env_names(text: &str) -> Result<Vec<&str>, PlaceholderError> {
    Ok(pieces(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Env(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect())
}

/// Replaces every placeholder with what `lookup` gives for its name.
pub fn expand(
    text: &str,
    mut lookup: impl FnMut(&str) -> Option<String>,
) -> Result<String, PlaceholderError> {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text)? {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Env(name) => {
                out.push_str(&lookup(name).ok_or_else(|| PlaceholderError::Unset(name.to_owned()))?)
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_env_references() {
        assert_eq!(
            env_names("Bearer ${env:API_TOKEN} for ${env:_USER2}").unwrap(),
            vec!["API_TOKEN", "_USER2"]
        );
        assert!(
            env_names("no placeholders, $HOME stays")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn refuses_malformed_placeholders() {
        assert!(matches!(
            pieces("${env:X"),
            Err(PlaceholderError::Unterminated(_))
        ));
        assert!(matches!(
            pieces("${vault:x}"),
            Err(PlaceholderError::UnknownSource(_))
        ));
        assert!(matches!(
            pieces("${env:1X}"),
            Err(PlaceholderError::BadName(_))
        ));
        assert!(matches!(
            pieces("${env:}"),
            Err(PlaceholderError::BadName(_))
        ));
    }

    #[test]
    fn expands_with_a_lookup() {
        let got = expand("u=${env:U}!", |n| (n == "U").then(|| "ops".to_owned())).unwrap();
        assert_eq!(got, "u=ops!");
        assert_eq!(
            expand("${env:MISSING}", |_| None).unwrap_err(),
            PlaceholderError::Unset("MISSING".into())
        );
    }
}
