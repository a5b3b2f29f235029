//! One rule of `repos.toml`: a permission, the refs it covers, and who it names, with where it
//! is written (the order decides, and `gitmirror access` names the line).
//!
//! Rules come in two spellings: the simple lists (`RW = ["@devs"]`), one rule per member, and
//! the ordered strings of `rules = [...]` in gitolite's own form, `"PERM [REF ...] = WHO ..."`.

use serde::{Deserialize, Serialize};

use super::Access;
use crate::names::AccountName;

/// Every permission a rule may carry, as gitolite spells them: `C` and `D` after `RW`/`RW+`
/// make creating and deleting refs letters of their own; `-` denies; `C` alone (patterns
/// only) lets users create repos.
pub(crate) const PERMS: &[&str] = &[
    "R", "RW", "RW+", "RWC", "RW+C", "RWD", "RW+D", "RWCD", "RW+CD", "-", "C",
];

/// The word a pattern's rules use for the user who created the repo.
pub(crate) const CREATOR: &str = "CREATOR";
/// The roles a creator hands out with `perms`, usable in a pattern's rules.
pub(crate) const ROLES: &[&str] = &["READERS", "WRITERS"];

/// Who a rule names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Member {
    User(AccountName),
    Group(String),
    Everyone,
    /// The user who created a user-created repo.
    Creator,
    /// The users its creator listed under a role (`READERS`, `WRITERS`).
    Role(String),
}

impl Member {
    /// As written in `repos.toml`.
    pub(crate) fn text(&self) -> String {
        match self {
            Member::User(u) => u.to_string(),
            Member::Group(g) => format!("@{g}"),
            Member::Everyone => "@all".to_string(),
            Member::Creator => CREATOR.to_string(),
            Member::Role(r) => r.clone(),
        }
    }

    /// Whether it stands for someone only a user-created repo has.
    pub(crate) fn is_wild(&self) -> bool {
        matches!(self, Member::Creator | Member::Role(_))
    }
}

/// One rule, for one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Grant {
    /// One of [`PERMS`].
    pub(crate) perm: String,
    /// Regular expressions matched at the start of a full ref name; none means every ref.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) refs: Vec<String>,
    pub(crate) who: Member,
    /// Where in `repos.toml` it is written (a byte offset): rules are tried in this order.
    pub(crate) seq: usize,
    /// The line it is on, for `gitmirror access` to name.
    pub(crate) line: usize,
}

/// How a grant reads back from a compiled index: as written today, or as `[access, member]`,
/// the form of an index compiled before rules named refs (read with no refs and no position,
/// which for allow-only rules decides the same).
#[derive(Deserialize)]
#[serde(untagged)]
enum GrantForm {
    Now {
        perm: String,
        #[serde(default)]
        refs: Vec<String>,
        who: Member,
        #[serde(default)]
        seq: usize,
        #[serde(default)]
        line: usize,
    },
    Before(Access, Member),
}

impl<'de> Deserialize<'de> for Grant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match GrantForm::deserialize(d)? {
            GrantForm::Now {
                perm,
                refs,
                who,
                seq,
                line,
            } => {
                if !PERMS.contains(&perm.as_str()) {
                    return Err(serde::de::Error::custom(format!(
                        "unknown permission {perm:?}"
                    )));
                }
                Grant {
                    perm,
                    refs,
                    who,
                    seq,
                    line,
                }
            }
            GrantForm::Before(access, who) => Grant {
                perm: access.label().to_string(),
                refs: Vec::new(),
                who,
                seq: 0,
                line: 0,
            },
        })
    }
}

impl Grant {
    /// Whether it denies.
    pub(crate) fn is_deny(&self) -> bool {
        self.perm == "-"
    }

    /// Whether its permission contains `letter` (`R`, `W`, `+`, `C`, `D`), as gitolite tests a
    /// rule. `C` alone (creating repos) contains no letter a ref or a read asks for.
    pub(crate) fn has(&self, letter: char) -> bool {
        self.perm != "C" && self.perm != "-" && self.perm.contains(letter)
    }

    /// Whether it covers `refname` for `user` (every rule covers every ref when it names
    /// none). `/USER/` in a ref stands for the user's name, as in gitolite's refexes
    /// (personal branches: `RW+ personal/USER/ = @devs`).
    pub(crate) fn covers(&self, refname: &str, user: &str) -> bool {
        self.refs.is_empty()
            || self.refs.iter().any(|r| {
                let r = if r.contains("/USER/") {
                    r.replace("/USER/", &format!("/{}/", regex::escape(user)))
                } else {
                    r.clone()
                };
                matches_cached(&r, refname)
            })
    }

    /// The rule as `repos.toml` would spell it for this member alone.
    pub(crate) fn text(&self) -> String {
        let mut out = self.perm.clone();
        for r in &self.refs {
            out.push(' ');
            out.push_str(r);
        }
        out.push_str(" = ");
        out.push_str(&self.who.text());
        out
    }
}

/// A ref pattern as matched: at the start of the name, as gitolite's refexes.
pub(crate) fn anchored(refex: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{refex})"))
}

/// Regular expressions built once per process: a push of thousands of refs asks the same
/// few rules for each, and building one costs far more than matching it.
pub(crate) fn cached<T>(
    pattern: &str,
    build: impl FnOnce() -> Option<regex::Regex>,
    f: impl FnOnce(Option<&regex::Regex>) -> T,
) -> T {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static CACHE: RefCell<HashMap<String, Option<regex::Regex>>> = RefCell::new(HashMap::new());
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        // Bounded: distinct user names in `/USER/` refs could otherwise grow it forever in
        // the daemon.
        if c.len() > 4096 {
            c.clear();
        }
        let re = c.entry(pattern.to_string()).or_insert_with(build);
        f(re.as_ref())
    })
}

fn matches_cached(refex: &str, refname: &str) -> bool {
    cached(
        refex,
        || anchored(refex).ok(),
        |re| re.is_some_and(|re| re.is_match(refname)),
    )
}

/// A ref as a rule writes it, made full: one not under `refs/` is a branch.
pub(crate) fn full_ref(refex: &str) -> String {
    if refex.starts_with("refs/") {
        refex.to_string()
    } else {
        format!("refs/heads/{refex}")
    }
}

/// The parts of `"PERM [REF ...] = WHO ..."`, unchecked beyond the shape.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RuleText<'a> {
    pub(crate) perm: &'a str,
    pub(crate) refs: Vec<&'a str>,
    pub(crate) who: Vec<&'a str>,
}

/// Splits a rule string, or says what shape was expected.
pub(crate) fn split(text: &str) -> Result<RuleText<'_>, String> {
    let Some((left, right)) = text.split_once('=') else {
        return Err(format!(
            "rule {text:?}: expected \"PERM [REF ...] = WHO ...\", e.g. \"RW refs/heads/dev/ = @devs\""
        ));
    };
    let mut words = left.split_whitespace();
    let Some(perm) = words.next() else {
        return Err(format!("rule {text:?}: no permission before the ="));
    };
    let refs: Vec<&str> = words.collect();
    let who: Vec<&str> = right.split_whitespace().collect();
    if who.is_empty() {
        return Err(format!("rule {text:?}: nobody after the ="));
    }
    Ok(RuleText { perm, refs, who })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_strings_split_into_perm_refs_and_members() {
        assert_eq!(
            split("RW+ master refs/tags/v = @leads alice").unwrap(),
            RuleText {
                perm: "RW+",
                refs: vec!["master", "refs/tags/v"],
                who: vec!["@leads", "alice"],
            }
        );
        assert_eq!(split("- = bob").unwrap().refs, Vec::<&str>::new());
        for bad in ["RW @devs", " = bob", "RW ="] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_match_at_the_start_and_branches_need_no_prefix() {
        let g = Grant {
            perm: "RW".into(),
            refs: vec![full_ref("dev/"), full_ref("refs/tags/v[0-9]")],
            who: Member::Everyone,
            seq: 0,
            line: 1,
        };
        assert!(g.covers("refs/heads/dev/x", "u"));
        assert!(g.covers("refs/tags/v1.0", "u"));
        assert!(!g.covers("refs/heads/main", "u"));
        assert!(!g.covers("refs/tags/va", "u"));
        assert!(!g.covers("refs/heads/x/dev/", "u"));
        let personal = Grant {
            refs: vec![full_ref("personal/USER/")],
            ..g.clone()
        };
        assert!(personal.covers("refs/heads/personal/al.ice/x", "al.ice"));
        assert!(!personal.covers("refs/heads/personal/alXice/x", "al.ice"));
        assert!(!personal.covers("refs/heads/personal/bob/x", "al.ice"));
        assert!(g.has('W') && g.has('R') && !g.has('+'));
    }

    #[test]
    fn an_old_index_grant_reads_as_a_rule_for_every_ref() {
        let g: Grant = serde_json::from_str(r#"["Rewind",{"User":"alice"}]"#).unwrap();
        assert_eq!(g.perm, "RW+");
        assert!(g.refs.is_empty());
        assert!(serde_json::from_str::<Grant>(r#"{"perm":"X","who":"Everyone"}"#).is_err());
    }
}
