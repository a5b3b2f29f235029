//! A read `gitolite.conf` as `repos.toml` text in the language of `docs/access.md`: the walk
//! over its lines and `repo` blocks, each rule made a gitmirror rule string.
//!
//! gitolite numbers every rule in file order and, for a repo and a user, takes the rules of
//! every `repo` block that applies (the repo, its groups, matching patterns, `@all`) sorted by
//! that number: the first that matches decides. gitmirror takes the tables that apply in the
//! order they are written. So each block becomes a table in place, with its rules as one
//! ordered `rules` array; `tables` says where a block's rules go when its name has a table
//! already. Options and configs are not positional: `settings` resolves them per repo.
//! `output` writes the text last.
//!
//! Those files add to `Converter`, the one state every step reads and adds to (groups,
//! tables, settings, what was left out), in the order `convert` calls them; each file holds
//! one concern so that it reads in one sitting.

use std::collections::{BTreeMap, BTreeSet};

use super::conf::{Conf, ConfError, Loc, Stmt};
use super::pattern;
use super::settings::Setting;
use super::tables::{OutRule, Scope, Table, Who};
use crate::names::{AccountName, RepoName};

/// Something of the configuration that the import cannot carry over exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) loc: Loc,
    pub(crate) what: String,
}

/// The conversion: the text, what it holds, and what it left out.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub(crate) text: String,
    /// Repos named in the configuration (not patterns).
    pub(crate) repos: usize,
    pub(crate) patterns: usize,
    pub(crate) groups: usize,
    /// Left out or changed in meaning: the import fails unless `--partial`.
    pub(crate) problems: Vec<Problem>,
    /// Left out without changing anything gitolite would decide (said, never fatal).
    pub(crate) notes: Vec<Problem>,
}

const ROLES: [&str; 3] = ["CREATOR", "READERS", "WRITERS"];

/// What a block's `repo` item stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    All,
    Named(String),
    Group(String),
    Pattern(String),
}

/// A rule or setting in a block, as read.
#[derive(Debug, Clone)]
enum Entry {
    Rule {
        loc: Loc,
        perm: String,
        refs: Vec<String>,
        users: Vec<String>,
    },
    Setting {
        loc: Loc,
        seq: usize,
        key: String,
        value: String,
        option: bool,
    },
}

#[derive(Debug)]
struct Block {
    loc: Loc,
    items: Vec<String>,
    entries: Vec<Entry>,
}

/// The conversion as it goes. One state, because every step reads what the earlier ones
/// made; the steps of each concern are in its own file (`impl Converter` in `tables`,
/// `settings`, `output`), and `convert` runs them in order.
pub(super) struct Converter {
    /// Groups as gitolite expands them: nested groups flattened when defined.
    pub(super) groups: BTreeMap<String, (Vec<String>, Loc)>,
    blocks: Vec<Block>,
    pub(super) user_groups: BTreeSet<String>,
    pub(super) repo_groups: BTreeSet<String>,
    pub(super) tables: Vec<Table>,
    /// Repo groups of one block's repos, made where merging a block named again would
    /// change the rules' order (`tables`).
    pub(super) synthetic: BTreeMap<String, (Vec<String>, Loc)>,
    pub(super) settings: Vec<Setting>,
    pub(super) named: BTreeSet<String>,
    pub(super) out: Converted,
}

/// Converts `conf`. A configuration gitolite would refuse (an undefined group in a group
/// definition or ref list) is an error; what gitolite accepts but the import cannot carry
/// over is listed in the result's problems.
pub(crate) fn convert(conf: &Conf) -> Result<Converted, ConfError> {
    let mut c = Converter {
        groups: BTreeMap::new(),
        blocks: Vec::new(),
        user_groups: BTreeSet::new(),
        repo_groups: BTreeSet::new(),
        tables: Vec::new(),
        synthetic: BTreeMap::new(),
        settings: Vec::new(),
        named: BTreeSet::new(),
        out: Converted::default(),
    };
    for s in &conf.skipped {
        c.problem(&s.loc, s.what.clone());
    }
    c.read(conf)?;
    c.classify_groups();
    for i in 0..c.blocks.len() {
        c.place_block(i);
    }
    c.resolve_settings();
    c.creator_as_gitolite();
    c.drop_shadowed_denies();
    c.out.text = c.render();
    // A setting of @all's that cannot be carried over is found once per repo it reaches.
    let mut seen = BTreeSet::new();
    c.out
        .problems
        .retain(|p| seen.insert((p.loc.to_string(), p.what.clone())));
    c.out
        .notes
        .retain(|p| seen.insert((p.loc.to_string(), p.what.clone())));
    Ok(c.out)
}

impl Converter {
    pub(super) fn problem(&mut self, loc: &Loc, what: impl Into<String>) {
        self.out.problems.push(Problem {
            loc: loc.clone(),
            what: what.into(),
        });
    }

    pub(super) fn note(&mut self, loc: &Loc, what: impl Into<String>) {
        self.out.notes.push(Problem {
            loc: loc.clone(),
            what: what.into(),
        });
    }

    /// gitolite's `expand_list` at the moment of reading: `@group` becomes its members as
    /// they are now (later additions to it are not seen), `@all` stays.
    fn expand(&self, loc: &Loc, items: &[String]) -> Result<Vec<String>, ConfError> {
        let mut out = Vec::new();
        for item in items {
            if item.starts_with('@') && item != "@all" {
                let Some((members, _)) = self.groups.get(item) else {
                    return Err(ConfError::Syntax {
                        loc: loc.clone(),
                        what: format!("undefined group {item}; define it before this line"),
                    });
                };
                out.extend(members.iter().cloned());
            } else {
                out.push(item.clone());
            }
        }
        Ok(out)
    }

    fn read(&mut self, conf: &Conf) -> Result<(), ConfError> {
        // gitolite's rule numbers: file order, which the settings are resolved by too.
        for (seq, line) in conf.lines.iter().enumerate() {
            let loc = &line.loc;
            match &line.stmt {
                Stmt::Group { name, members } => {
                    let add = self.expand(loc, members)?;
                    let entry = self
                        .groups
                        .entry(name.clone())
                        .or_insert_with(|| (Vec::new(), loc.clone()));
                    for m in add {
                        if !entry.0.contains(&m) {
                            entry.0.push(m);
                        }
                    }
                }
                Stmt::Repo { items } => self.blocks.push(Block {
                    loc: loc.clone(),
                    items: items.clone(),
                    entries: Vec::new(),
                }),
                Stmt::Rule { perm, refs, users } => {
                    let refs = self.expand(loc, refs)?;
                    let entry = Entry::Rule {
                        loc: loc.clone(),
                        perm: perm.clone(),
                        refs,
                        users: users.clone(),
                    };
                    match self.blocks.last_mut() {
                        Some(b) => b.entries.push(entry),
                        None => self.note(
                            loc,
                            "a rule before any repo line applies to no repo in gitolite; left out",
                        ),
                    }
                }
                Stmt::Opt { key, value } | Stmt::Config { key, value } => {
                    let entry = Entry::Setting {
                        loc: loc.clone(),
                        seq,
                        key: key.clone(),
                        value: value.clone(),
                        option: matches!(line.stmt, Stmt::Opt { .. }),
                    };
                    match self.blocks.last_mut() {
                        Some(b) => b.entries.push(entry),
                        None => self.note(loc, "a setting before any repo line applies to no repo in gitolite; left out"),
                    }
                }
            }
        }
        Ok(())
    }

    /// One @group namespace in gitolite; here a group named in rules goes to `[groups]`, one
    /// named in `repo` lines to `[repo-groups]`.
    fn classify_groups(&mut self) {
        for block in &self.blocks {
            for item in &block.items {
                if let Some(g) = item.strip_prefix('@')
                    && item != "@all"
                {
                    self.repo_groups.insert(g.to_string());
                }
            }
            for e in &block.entries {
                if let Entry::Rule { users, .. } = e {
                    for u in users {
                        if let Some(g) = u.strip_prefix('@')
                            && self.groups.contains_key(u)
                        {
                            self.user_groups.insert(g.to_string());
                        }
                    }
                }
            }
        }
    }

    pub(super) fn members(&self, group: &str) -> Vec<String> {
        self.groups
            .get(&format!("@{group}"))
            .map(|(m, _)| m.clone())
            .unwrap_or_default()
    }

    pub(super) fn who(&self, users: &[String]) -> Who {
        let mut set = BTreeSet::new();
        for u in users {
            if u == "@all" || ROLES.contains(&u.as_str()) {
                return Who::Everyone;
            }
            match u.strip_prefix('@') {
                Some(g) => set.extend(self.members(g)),
                None => {
                    set.insert(u.clone());
                }
            }
        }
        Who::Users(set)
    }

    /// What a `repo` item stands for, or `None` (said why) when it cannot be imported.
    fn target(&mut self, loc: &Loc, item: &str) -> Option<(Target, String, Scope)> {
        if item == "@all" {
            return Some((Target::All, "@all".into(), Scope::All));
        }
        if let Some(g) = item.strip_prefix('@') {
            if !self.groups.contains_key(item) {
                self.note(loc, format!("{item} is not defined: gitolite applies this block to no repo through it; left out"));
                return None;
            }
            let members = self.members(g);
            if let Some(p) = members.iter().find(|m| !pattern::is_plain_name(m)) {
                self.problem(
                    loc,
                    format!("{item} holds the pattern {p}: a repo group holds names only; give the pattern a block of its own"),
                );
                return None;
            }
            if AccountName::parse(g).is_err() {
                self.problem(
                    loc,
                    format!("group name {item}: not a valid gitmirror group name"),
                );
                return None;
            }
            let names = members.iter().map(|m| strip_git(m).to_string()).collect();
            return Some((Target::Group(g.into()), item.into(), Scope::Names(names)));
        }
        if pattern::is_plain_name(item) {
            let name = strip_git(item);
            if let Err(e) = RepoName::parse(name) {
                self.problem(loc, format!("repo {item}: {e}"));
                return None;
            }
            if name
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|w| w == "CREATOR")
            {
                self.problem(
                    loc,
                    format!("repo {item}: gitolite reads this as a plain name (no regex character), gitmirror as a pattern with CREATOR"),
                );
                return None;
            }
            if name == "gitolite-admin" && !self.named.contains(name) {
                self.note(loc, "gitolite-admin is gitolite's admin repo; gitmirror's is gitmirror-admin (gitmirror init --admin), so this one is imported as an ordinary repo");
            }
            self.named.insert(name.to_string());
            return Some((
                Target::Named(name.into()),
                name.into(),
                Scope::Names([name.to_string()].into()),
            ));
        }
        match pattern::to_glob(item) {
            Ok(glob) => Some((
                Target::Pattern(glob.clone()),
                glob.clone(),
                Scope::Pattern(glob),
            )),
            Err(why) => {
                self.problem(loc, format!("wild repo pattern {why}"));
                None
            }
        }
    }

    fn place_block(&mut self, index: usize) {
        let block_loc = self.blocks[index].loc.clone();
        let items = self.blocks[index].items.clone();
        let entries = self.blocks[index].entries.clone();
        for item in &items {
            let Some((target, key, scope)) = self.target(&block_loc, item) else {
                continue;
            };
            let mut rules = Vec::new();
            for e in &entries {
                match e {
                    Entry::Rule {
                        loc,
                        perm,
                        refs,
                        users,
                    } => {
                        if let Some(r) = self.rule(&target, loc, perm, refs, users) {
                            rules.push(r);
                        }
                    }
                    Entry::Setting {
                        loc,
                        seq,
                        key,
                        value,
                        option,
                    } => self.setting(&target, loc, *seq, key, value, *option),
                }
            }
            let from = format!("{block_loc}: repo {}", items.join(" "));
            self.put(&target, key, scope, rules, from, &block_loc);
        }
    }

    /// One gitolite rule as a rule string for `target`'s table, or `None` (said why).
    fn rule(
        &mut self,
        target: &Target,
        loc: &Loc,
        perm: &str,
        refs: &[String],
        users: &[String],
    ) -> Option<OutRule> {
        if perm.ends_with('M') {
            self.problem(
                loc,
                format!("{perm}: M (merge-check) permissions have no equivalent; rule left out"),
            );
            return None;
        }
        if let Some(v) = refs.iter().find(|r| r.starts_with("VREF/")) {
            self.problem(
                loc,
                format!("{v}: virtual refs (VREFs) have no equivalent; rule left out"),
            );
            return None;
        }
        let is_pattern = matches!(target, Target::Pattern(_));
        if perm == "C" && !is_pattern {
            if *target == Target::All {
                self.problem(loc, "C in repo @all lets users create repos of any name in gitolite; gitmirror has C only in a pattern's table (write a ** pattern); rule left out");
            } else {
                // The repo exists (gitolite creates named repos), so C never decides.
                self.note(loc, "C on a named repo or group: gitolite never asks it of an existing repo; left out");
            }
            return None;
        }
        let mut who = Vec::new();
        for u in users {
            let bare = u.strip_prefix('@').unwrap_or(u);
            if ROLES.contains(&bare) {
                if is_pattern {
                    who.push(bare.to_string());
                } else if *target == Target::All {
                    self.problem(
                        loc,
                        format!("{bare} in repo @all (meant for every wild repo): gitmirror allows it only in a pattern's table; copy the rule into each pattern's block"),
                    );
                } else {
                    self.note(
                        loc,
                        format!(
                            "{bare} on a repo that is not wild matches nobody in gitolite; left out"
                        ),
                    );
                }
                continue;
            }
            if u.starts_with('@') && u != "@all" && !self.groups.contains_key(u) {
                if bare.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                    self.problem(
                        loc,
                        format!("{u}: a role other than CREATOR, READERS and WRITERS (or an undefined group) has no equivalent"),
                    );
                } else {
                    self.note(
                        loc,
                        format!("{u} is not defined: it matches nobody in gitolite; left out"),
                    );
                }
                continue;
            }
            who.push(u.clone());
        }
        if who.is_empty() {
            return None;
        }
        let perm = perm.replace("DC", "CD");
        let mut refs = refs.to_vec();
        // gitolite's deny without refs has the refex refs/.* and is skipped by repo-level
        // checks unless deny-rules is on; gitmirror's is never skipped. With the refex
        // written out, gitmirror skips it the same way.
        if perm == "-" && refs.is_empty() {
            refs.push("refs/.*".into());
        }
        let mut text = perm.clone();
        for r in &refs {
            text.push(' ');
            text.push_str(r);
        }
        text.push_str(" =");
        for w in &who {
            text.push(' ');
            text.push_str(w);
        }
        Some(OutRule {
            why: None,
            who: self.who(&who),
            text,
            loc: loc.clone(),
        })
    }
}

/// gitolite strips one `.git` from a repo name (with a warning).
pub(super) fn strip_git(name: &str) -> &str {
    name.strip_suffix(".git").unwrap_or(name)
}

/// The helpers are shared: the tests of `tables` and `settings` convert whole
/// configurations too.
#[cfg(test)]
pub(super) mod tests {
    use super::super::conf::parse_text;
    use super::super::output::quote;
    use super::*;

    pub(crate) fn convert_text(text: &str) -> Converted {
        convert(&parse_text("g.conf", text).unwrap()).unwrap()
    }

    fn table<'a>(text: &'a str, key: &str) -> &'a str {
        let header = format!("[repos.{}]\n", quote(key));
        let start = text
            .find(&header)
            .unwrap_or_else(|| panic!("no {header} in\n{text}"));
        let rest = &text[start + header.len()..];
        let end = rest.find("\n\n").map_or(rest.len(), |e| e + 1);
        &rest[..end]
    }

    pub(crate) fn parsed(c: &Converted) -> toml::Table {
        c.text.parse::<toml::Table>().expect("valid TOML")
    }

    #[test]
    fn rules_keep_their_order_and_refless_denies_get_refs() {
        let c = convert_text(
            "@devs = alice bob\n@leads = alice\nrepo foo bar\n  - master = bob\n  - = carol\n  RW+ = @leads\n  RW dev/ refs/tags/v[0-9] = @devs\n  RW+DC = dave\n",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let t = parsed(&c);
        let rules = t["repos"]["foo"]["rules"].as_array().unwrap();
        let texts: Vec<&str> = rules.iter().map(|r| r.as_str().unwrap()).collect();
        assert_eq!(
            texts,
            vec![
                "- master = bob",
                "- refs/.* = carol",
                "RW+ = @leads",
                "RW dev/ refs/tags/v[0-9] = @devs",
                "RW+CD = dave",
            ]
        );
        assert_eq!(t["repos"]["bar"]["rules"], t["repos"]["foo"]["rules"]);
        assert_eq!(t["groups"]["devs"].as_array().unwrap().len(), 2);
        assert_eq!((c.repos, c.groups), (2, 2));
    }

    #[test]
    fn nested_groups_are_flattened_when_defined() {
        let c = convert_text(
            "@a = x\n@b = @a y\n@a = z\n@repos = r1\n@repos = r2\nrepo @repos\n  RW = @b @a\n",
        );
        let t = parsed(&c);
        let members = |k: &str, g: &str| -> Vec<String> {
            t[k][g]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        // @b took @a as it was: z came later (gitolite's expand_list).
        assert_eq!(members("groups", "b"), vec!["x", "y"]);
        assert_eq!(members("groups", "a"), vec!["x", "z"]);
        assert_eq!(members("repo-groups", "repos"), vec!["r1", "r2"]);
        assert!(t["repos"]["@repos"]["rules"].is_array());
    }

    #[test]
    fn wild_repos_become_patterns() {
        let c = convert_text(
            "@devs = alice\nrepo users/CREATOR/..*\n  C = @devs\n  RW+ = CREATOR\n  RW = WRITERS\n  R = @READERS\n",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(
            table(&c.text, "users/CREATOR/**"),
            "rules = [\n  \"C = @devs\",   # g.conf:3\n  \"RW+ = CREATOR\",   # g.conf:4\n  \"RW = WRITERS\",   # g.conf:5\n  \"R = READERS\",   # g.conf:6\n]\n"
        );
        // A pattern that never names CREATOR: gitolite gives the creator nothing, so a rule
        // naming CREATOR that never decides keeps gitmirror from giving RW+.
        let c = convert_text("repo scratch/..*\n  C = @all\n  RW = bob\n");
        let t = parsed(&c);
        assert_eq!(
            t["repos"]["scratch/**"]["rules"][0].as_str(),
            Some("- refs/\\x20 = CREATOR")
        );
        let c = convert_text("repo scratch/..*\n  C = @all\n  option deny-rules = 1\n");
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        let c = convert_text("repo foo/[a-z].*\n  RW = a\n");
        assert_eq!(c.problems.len(), 1);
        assert!(c.problems[0].what.contains("character class"));
    }

    #[test]
    fn what_cannot_be_said_is_listed_with_its_line() {
        let c = convert_text(
            "repo foo\n  RW = a\n  - VREF/COUNT/5 = b\n  RWM = c\n  RW+ personal/USER/ = d\n  option hook.x = y\n  config core.z = 1\n  desc = \"x\"\nrepo @all\n  RW+ = CREATOR\n",
        );
        let lines: Vec<usize> = c.problems.iter().map(|p| p.loc.line).collect();
        assert_eq!(lines, vec![3, 4, 6, 7, 8, 10], "{:?}", c.problems);
        // /USER/ (the user asking) means the same in both.
        assert_eq!(
            table(&c.text, "foo"),
            "rules = [\n  \"RW = a\",   # g.conf:2\n  \"RW+ personal/USER/ = d\",   # g.conf:5\n]\n"
        );
    }
}
