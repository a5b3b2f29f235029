//! The `repos.toml` text: `[groups]`, `[repo-groups]`, then the tables in order, each rule
//! with a comment saying where in the configuration it came from.
//!
//! Written last, from the finished tables. Group names and members are checked as they are
//! written (only the groups rules and `repo` lines name are), and the counts the summary
//! gives are taken here, from what was written.

use super::conf::Loc;
use super::convert::{Converter, strip_git};
use super::pattern;
use super::tables::Scope;
use crate::names::AccountName;

impl Converter {
    pub(super) fn render(&mut self) -> String {
        let mut text = String::from(
            "# Imported from gitolite by `gitmirror import-gitolite`. Rules keep gitolite's order:\n\
             # the first that applies to a user and ref decides. Comments say where each came from.\n",
        );
        let mut user_groups = Vec::new();
        for g in self.user_groups.clone() {
            if AccountName::parse(&g).is_err() {
                let loc = self.groups[&format!("@{g}")].1.clone();
                self.problem(
                    &loc,
                    format!("group name @{g}: not a valid gitmirror group name"),
                );
                continue;
            }
            let (members, loc) = self.groups[&format!("@{g}")].clone();
            let mut users = Vec::new();
            for m in members {
                if m.starts_with('@') {
                    // A group's @all is never matched by gitolite's membership lookup.
                    self.note(
                        &loc,
                        format!(
                            "@{g} holds {m}, which gitolite never matches as a member; left out"
                        ),
                    );
                } else if AccountName::parse(&m).is_err() {
                    self.problem(&loc, format!("@{g}: member {m} is not a valid user name"));
                } else {
                    users.push(m);
                }
            }
            user_groups.push((g, users, loc));
        }
        if !user_groups.is_empty() {
            text.push_str("\n[groups]\n");
            for (g, users, loc) in &user_groups {
                text.push_str(&format!("{} = {}   # {loc}\n", quote_key(g), list(users)));
            }
        }
        let mut repo_groups: Vec<(String, Vec<String>, Loc)> = self
            .repo_groups
            .iter()
            .filter(|g| self.groups.contains_key(&format!("@{g}")))
            .map(|g| {
                let (members, loc) = &self.groups[&format!("@{g}")];
                let names = members
                    .iter()
                    .filter(|m| pattern::is_plain_name(m))
                    .map(|m| strip_git(m).to_string())
                    .collect();
                (g.clone(), names, loc.clone())
            })
            .collect();
        repo_groups.extend(
            self.synthetic
                .iter()
                .map(|(g, (m, l))| (g.clone(), m.clone(), l.clone())),
        );
        if !repo_groups.is_empty() {
            text.push_str("\n[repo-groups]\n");
            for (g, names, loc) in &repo_groups {
                text.push_str(&format!("{} = {}   # {loc}\n", quote_key(g), list(names)));
            }
        }
        for t in &self.tables {
            if t.rules.is_empty() && t.settings.is_empty() {
                continue;
            }
            text.push('\n');
            for f in &t.from {
                text.push_str(&format!("# {f}\n"));
            }
            text.push_str(&format!("[repos.{}]\n", quote(&t.key)));
            if !t.rules.is_empty() {
                text.push_str("rules = [\n");
                for r in &t.rules {
                    let why = r.why.map(|w| format!(": {w}")).unwrap_or_default();
                    text.push_str(&format!("  {},   # {}{why}\n", quote(&r.text), r.loc));
                }
                text.push_str("]\n");
            }
            for s in &t.settings {
                text.push_str(s);
                text.push('\n');
            }
        }
        let mut names = self.named.clone();
        for (_, members, _) in &repo_groups {
            names.extend(members.iter().cloned());
        }
        self.out.repos = names.len();
        self.out.patterns = self
            .tables
            .iter()
            .filter(|t| matches!(t.scope, Scope::Pattern(_)))
            .count();
        self.out.groups = user_groups.len() + repo_groups.len();
        text
    }
}

/// A TOML string.
pub(super) fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be.
fn quote_key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_string()
    } else {
        quote(s)
    }
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| quote(i)).collect();
    format!("[{}]", quoted.join(", "))
}
