//! Repo name patterns: the tables of user-created repos (`[repos."users/CREATOR/*"]`).
//!
//! `*` is one or more characters inside one path component, `**` one or more characters `/`
//! included, `CREATOR` the creating user's name. A pattern is matched only against names that
//! already passed the name rules, and is refused at compile if it could stand for a name that
//! does not.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::grant::CREATOR;
use crate::names::RepoName;

/// Characters a repo name component may hold besides letters and digits.
const NAME_PUNCT: &str = "._@+-";

/// A validated pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RepoPattern(String);

/// Whether a table name is a pattern rather than one repo's name.
pub(crate) fn is_pattern(key: &str) -> bool {
    key.contains('*') || key.split('/').any(|c| c == CREATOR)
}

impl RepoPattern {
    /// Checks that every name the pattern can match passes the name rules: only name
    /// characters, `/`, `*`; no empty component; every component able to start with a letter
    /// or digit; `CREATOR` a whole component.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            Err(format!(
                "pattern {text:?}: {why}; expected a name with * (inside a component), ** (across components) or CREATOR, like \"users/CREATOR/*\""
            ))
        };
        if text.ends_with(".git") {
            return bad("write it without .git");
        }
        for component in text.split('/') {
            if component.is_empty() {
                return bad("an empty path component");
            }
            if component.contains(CREATOR) && component != CREATOR {
                return bad("CREATOR must be a whole path component");
            }
            if component.contains("***") {
                return bad("*** means nothing");
            }
            let first = component.chars().next().unwrap_or('.');
            if !(first.is_ascii_alphanumeric() || first == '*') {
                return bad("a component must start with a letter, a digit or *");
            }
            if let Some(c) = component
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || NAME_PUNCT.contains(*c) || *c == '*'))
            {
                return bad(&format!("{c:?} cannot be part of a repo name"));
            }
        }
        // The longest name it stands for must still be short enough to be a name.
        let example = text.replace(CREATOR, "u").replace('*', "x");
        if let Err(e) = RepoName::parse(&example) {
            return bad(&e.to_string());
        }
        Ok(RepoPattern(text.to_string()))
    }

    /// As written.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `repo` matches, with `CREATOR` standing for `creator`: the user creating it,
    /// or the one who did. A pattern naming `CREATOR` matches nothing without one.
    pub(crate) fn matches(&self, repo: &RepoName, creator: Option<&str>) -> bool {
        self.is_match(repo, creator.map(regex::escape))
    }

    /// Whether `repo` matches with `CREATOR` standing for any user name: for settings that
    /// are the same whoever created the repo (its master and slaves).
    pub(crate) fn matches_anyone(&self, repo: &RepoName) -> bool {
        self.is_match(repo, Some("[A-Za-z0-9._@+-]+".to_string()))
    }

    fn is_match(&self, repo: &RepoName, creator: Option<String>) -> bool {
        // CREATOR is a whole component: a NUL keeps the cache key apart from any pattern.
        let key = format!("{}\0{}", self.0, creator.as_deref().unwrap_or("\0"));
        super::grant::cached(
            &key,
            || self.regex(creator.clone()),
            |re| re.is_some_and(|re| re.is_match(repo.as_str())),
        )
    }

    /// The pattern as a regular expression, `CREATOR` as `creator` (a regex itself).
    fn regex(&self, creator: Option<String>) -> Option<regex::Regex> {
        let mut re = String::from("^");
        for (i, component) in self.0.split('/').enumerate() {
            if i > 0 {
                re.push('/');
            }
            if component == CREATOR {
                re.push_str(creator.as_deref()?);
                continue;
            }
            let mut rest = component;
            while !rest.is_empty() {
                if let Some(r) = rest.strip_prefix("**") {
                    re.push_str("[A-Za-z0-9._@+/-]+");
                    rest = r;
                } else if let Some(r) = rest.strip_prefix('*') {
                    re.push_str("[A-Za-z0-9._@+-]+");
                    rest = r;
                } else {
                    let end = rest.find('*').unwrap_or(rest.len());
                    re.push_str(&regex::escape(&rest[..end]));
                    rest = &rest[end..];
                }
            }
        }
        re.push('$');
        regex::Regex::new(&re).ok()
    }
}

impl Serialize for RepoPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RepoPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        RepoPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn stars_and_creator_match_as_documented() {
        let p = RepoPattern::parse("users/CREATOR/*").unwrap();
        assert!(p.matches(&repo("users/alice/x"), Some("alice")));
        assert!(!p.matches(&repo("users/alice/x"), Some("bob")));
        assert!(!p.matches(&repo("users/alice/x"), None));
        assert!(!p.matches(&repo("users/alice/x/y"), Some("alice")));
        let deep = RepoPattern::parse("proj/**").unwrap();
        assert!(deep.matches(&repo("proj/a/b"), None));
        assert!(!deep.matches(&repo("proj"), None));
        let mid = RepoPattern::parse("tmp-*-x").unwrap();
        assert!(mid.matches(&repo("tmp-1-x"), None));
        assert!(!mid.matches(&repo("tmp--x"), None));
        assert!(is_pattern("a/*") && is_pattern("u/CREATOR") && !is_pattern("a/b"));
    }

    #[test]
    fn patterns_that_could_name_bad_names_are_refused() {
        for bad in [
            "../*",
            "a//*",
            "/a/*",
            "a/.*",
            "a/-*",
            "a/x CREATOR",
            "a/CREATORx",
            "a/*.git",
            "a/***",
            "a/$*",
        ] {
            assert!(RepoPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
