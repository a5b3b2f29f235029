//! Names that come from outside: repo names (from clients and config) and account names (users
//! and peers, from the command line and config).
//!
//! Every name is checked here before it reaches a path, a config key or a log line, so the
//! rest of the crate can take a [`RepoName`] or [`AccountName`] as proof that it is safe.

use std::fmt;

use thiserror::Error;

/// Longest repo name accepted, in bytes, after the `.git` suffix is stripped. Long enough for
/// any real hierarchy, short enough that `repositories/NAME.git` stays far from `PATH_MAX`.
const MAX_REPO_NAME: usize = 200;

/// Longest user or peer name accepted.
const MAX_ACCOUNT_NAME: usize = 64;

/// Why a name was refused. The message names the rule that was broken, never echoes more than
/// a bounded prefix of the input.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name is {len} bytes long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("{shown:?} has an empty path component (a leading, trailing or double '/')")]
    EmptyComponent { shown: String },
    #[error(
        "{shown:?}: each part must start with a letter or digit and hold only letters, digits and ._@+-"
    )]
    BadComponent { shown: String },
    #[error(
        "{shown:?}: a part other than the last may not end in .git (it would nest inside another repo)"
    )]
    NestedGit { shown: String },
    #[error(
        "{shown:?}: a name must start with a letter or digit and hold only letters, digits and ._@+- (at most {MAX_ACCOUNT_NAME})"
    )]
    BadAccount { shown: String },
}

/// Shortens hostile input before it goes into a message or a log line.
fn shown(s: &str) -> String {
    const KEEP: usize = 60;
    if s.len() <= KEEP {
        return s.to_string();
    }
    let mut end = KEEP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-')
}

/// A validated repo name without the `.git` suffix, e.g. `site-b/tools`.
///
/// The pattern (from the design): `/`-separated components, each starting with a letter or
/// digit and made of letters, digits and `._@+-`. That excludes `.`, `..`, empty components and
/// leading `-` or `/`, so the name can be joined under `repositories/` without escaping it.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct RepoName(String);

impl RepoName {
    /// Validates `raw`, stripping one optional `.git` suffix.
    pub(crate) fn parse(raw: &str) -> Result<Self, NameError> {
        let name = raw.strip_suffix(".git").unwrap_or(raw);
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_REPO_NAME {
            return Err(NameError::TooLong {
                len: name.len(),
                max: MAX_REPO_NAME,
            });
        }
        for part in name.split('/') {
            let mut chars = part.chars();
            match chars.next() {
                None => return Err(NameError::EmptyComponent { shown: shown(raw) }),
                Some(c) if !is_word_start(c) => {
                    return Err(NameError::BadComponent { shown: shown(raw) });
                }
                Some(_) => {}
            }
            if !chars.all(is_word_char) {
                return Err(NameError::BadComponent { shown: shown(raw) });
            }
            if part.ends_with(".git") {
                return Err(NameError::NestedGit { shown: shown(raw) });
            }
        }
        Ok(RepoName(name.to_string()))
    }

    /// The name as written in config and logs, without `.git`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The path of the repo relative to `repositories/`: `NAME.git`.
    pub(crate) fn relative_dir(&self) -> String {
        format!("{}.git", self.0)
    }
}

// Names read back from gitmirror's own files are validated like any other.
impl TryFrom<String> for RepoName {
    type Error = NameError;
    fn try_from(raw: String) -> Result<Self, NameError> {
        RepoName::parse(&raw)
    }
}

impl From<RepoName> for String {
    fn from(name: RepoName) -> String {
        name.0
    }
}

impl TryFrom<String> for AccountName {
    type Error = NameError;
    fn try_from(raw: String) -> Result<Self, NameError> {
        AccountName::parse(&raw)
    }
}

impl From<AccountName> for String {
    fn from(name: AccountName) -> String {
        name.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated user or peer name (`alice`, `server2`).
///
/// These names end up inside an authorized_keys `command="..."` and in file names under the
/// home, so the pattern is strict: a letter or digit first, then letters, digits and `._@+-`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct AccountName(String);

impl AccountName {
    /// Validates `raw` against the account name pattern.
    pub(crate) fn parse(raw: &str) -> Result<Self, NameError> {
        let mut chars = raw.chars();
        let ok = raw.len() <= MAX_ACCOUNT_NAME
            && chars.next().is_some_and(is_word_start)
            && chars.all(is_word_char);
        if ok {
            Ok(AccountName(raw.to_string()))
        } else if raw.is_empty() {
            Err(NameError::Empty)
        } else {
            Err(NameError::BadAccount { shown: shown(raw) })
        }
    }

    /// The name as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_repo_names() {
        for (raw, name) in [
            ("testing", "testing"),
            ("testing.git", "testing"),
            ("site-b/tools", "site-b/tools"),
            ("site-b/tools.git", "site-b/tools"),
            ("a.b_c@d+e-f", "a.b_c@d+e-f"),
            ("9lives", "9lives"),
        ] {
            assert_eq!(RepoName::parse(raw).unwrap().as_str(), name, "{raw}");
        }
    }

    #[test]
    fn strips_git_suffix_once_only() {
        assert!(matches!(
            RepoName::parse("x.git.git"),
            Err(NameError::NestedGit { .. })
        ));
    }

    #[test]
    fn refuses_hostile_repo_names() {
        let long = "a".repeat(5000);
        for raw in [
            "",
            ".git",
            "../x",
            "a/../../x",
            "/etc",
            "-x",
            "a//b",
            "a/",
            "r.git/config",
            "~root/x",
            ".",
            "..",
            "a/.hidden",
            "a b",
            "a;id",
            "$(id)",
            "`id`",
            "a\nb",
            "a\0b",
            "caf\u{e9}",
            long.as_str(),
        ] {
            assert!(RepoName::parse(raw).is_err(), "accepted {raw:?}");
        }
    }

    #[test]
    fn long_name_error_does_not_echo_input() {
        let long = "a".repeat(5000);
        let msg = RepoName::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 100, "{msg}");
    }

    #[test]
    fn account_names() {
        for ok in ["alice", "server2", "bob.smith", "a@b.c", "x-1_2+3"] {
            assert!(AccountName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "-x", ".x", "a b", "a;b", "a/b", "@devs", "a\nb", "a\"b", "a'b",
        ] {
            assert!(AccountName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AccountName::parse(&"a".repeat(65)).is_err());
    }
}
