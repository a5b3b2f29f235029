//! A read `gitolite.conf` as `repos.toml` text in the language of `docs/access.md`.
//!
//! gitolite numbers every rule in file order and, for a repo and a user, takes the rules of
//! every `repo` block that applies (the repo, its groups, matching patterns, `@all`) sorted by
//! that number: the first that matches decides. gitmirror takes the tables that apply in the
//! order they are written. So each block becomes a table in place, with its rules as one
//! ordered `rules` array. TOML has one table per name, so a repo named again in a later block
//! is merged into its earlier table only when no table in between has a rule for the same
//! repo and users whose order against the moved rules matters (one of the two a deny rule:
//! two allowing rules decide the same in either order); else the later block becomes a repo
//! group of that one repo (or, for `@all` and patterns, which no group can hold, is reported).
//!
//! Options and configs are not positional in gitolite: each key takes its last value among
//! the blocks that apply. They are resolved per repo here and written where they differ from
//! `@all`'s.

use std::collections::{BTreeMap, BTreeSet};

use super::conf::{Conf, ConfError, Loc, Stmt};
use super::pattern;
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
enum Target {
    All,
    Named(String),
    Group(String),
    Pattern(String),
}

/// Which repos a table can apply to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    All,
    Names(BTreeSet<String>),
    Pattern(String),
}

impl Scope {
    fn overlaps(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, _) | (_, Scope::All) => true,
            (Scope::Names(a), Scope::Names(b)) => !a.is_disjoint(b),
            (Scope::Names(names), Scope::Pattern(glob))
            | (Scope::Pattern(glob), Scope::Names(names)) => {
                names.iter().any(|n| pattern::glob_matches(glob, n))
            }
            // Whether two patterns can match one name is not worth deciding: assume so.
            (Scope::Pattern(_), Scope::Pattern(_)) => true,
        }
    }
}

/// Who a rule can apply to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    Everyone,
    Users(BTreeSet<String>),
}

impl Who {
    fn overlaps(&self, other: &Who) -> bool {
        match (self, other) {
            (Who::Users(a), Who::Users(b)) => !a.is_disjoint(b),
            _ => true,
        }
    }
}

#[derive(Debug, Clone)]
struct OutRule {
    text: String,
    loc: Loc,
    who: Who,
    /// Said in the comment after the location, when the rule is not the configuration's own.
    why: Option<&'static str>,
}

impl OutRule {
    fn is_deny(&self) -> bool {
        self.text.starts_with("- ")
    }
}

/// A rule that names `CREATOR` and never decides: its only ref has a space, which no ref
/// name has, and a deny rule with refs is skipped by checks without a ref (unless
/// `deny_rules`). gitmirror gives a pattern's creator `RW+` when its table never names
/// `CREATOR`; gitolite gives the creator nothing it does not say, and this keeps it so.
const CREATOR_NAMED: &str = "- refs/\\x20 = CREATOR";
const CREATOR_NAMED_WHY: &str =
    "never decides: it only stops gitmirror giving the creator RW+, which gitolite does not";

#[derive(Debug)]
struct Table {
    key: String,
    scope: Scope,
    /// The blocks it was made from, for the comment above it.
    from: Vec<String>,
    rules: Vec<OutRule>,
    settings: Vec<String>,
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

/// An `option` or `config` that gitolite resolves per repo (last one wins per key).
#[derive(Debug, Clone)]
struct Setting {
    seq: usize,
    target: Target,
    /// `deny-rules`, `master`, `copies...` or `redirectOK...`.
    key: String,
    value: String,
    loc: Loc,
}

struct Converter {
    /// Groups as gitolite expands them: nested groups flattened when defined.
    groups: BTreeMap<String, (Vec<String>, Loc)>,
    blocks: Vec<Block>,
    user_groups: BTreeSet<String>,
    repo_groups: BTreeSet<String>,
    tables: Vec<Table>,
    synthetic: BTreeMap<String, (Vec<String>, Loc)>,
    settings: Vec<Setting>,
    named: BTreeSet<String>,
    out: Converted,
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
    fn problem(&mut self, loc: &Loc, what: impl Into<String>) {
        self.out.problems.push(Problem {
            loc: loc.clone(),
            what: what.into(),
        });
    }

    fn note(&mut self, loc: &Loc, what: impl Into<String>) {
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

    fn members(&self, group: &str) -> Vec<String> {
        self.groups
            .get(&format!("@{group}"))
            .map(|(m, _)| m.clone())
            .unwrap_or_default()
    }

    fn who(&self, users: &[String]) -> Who {
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

    /// Puts a block's rules for one target into the tables, keeping gitolite's order.
    fn put(
        &mut self,
        target: &Target,
        key: String,
        scope: Scope,
        rules: Vec<OutRule>,
        from: String,
        loc: &Loc,
    ) {
        let Some(at) = self.tables.iter().position(|t| t.key == key) else {
            self.tables.push(Table {
                key,
                scope,
                from: vec![from],
                rules,
                settings: Vec::new(),
            });
            return;
        };
        // Moving the block's rules up to the earlier table passes them over the rules of the
        // tables in between. Only a deny rule's place among rules for the same users matters:
        // two allowing rules decide the same whichever comes first (each allows, or lets the
        // search go on).
        let in_between_conflicts = self.tables[at + 1..].iter().any(|later| {
            later.scope.overlaps(&scope)
                && later.rules.iter().any(|l| {
                    rules
                        .iter()
                        .any(|r| (r.is_deny() || l.is_deny()) && r.who.overlaps(&l.who))
                })
        });
        if !in_between_conflicts {
            let table = &mut self.tables[at];
            table.from.push(from);
            table.rules.extend(rules);
            return;
        }
        let members: Vec<String> = match (target, &scope) {
            (Target::Named(_) | Target::Group(_), Scope::Names(names)) => {
                names.iter().cloned().collect()
            }
            _ => {
                self.problem(
                    loc,
                    format!(
                        "{key} is named again after other blocks that apply to the same repos and users; gitmirror has one table per name and no group can hold {key}, so these rules cannot keep their order"
                    ),
                );
                return;
            }
        };
        // A repo group of the same repos, under a name that says where it came from.
        let stem = std::path::Path::new(&loc.file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "conf".into());
        let stem: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let mut name = format!("{stem}-line{}", loc.line);
        while self.groups.contains_key(&format!("@{name}")) || self.synthetic.contains_key(&name) {
            name.push('x');
        }
        self.synthetic
            .insert(name.clone(), (members.clone(), loc.clone()));
        self.tables.push(Table {
            key: format!("@{name}"),
            scope: Scope::Names(members.into_iter().collect()),
            from: vec![format!(
                "{from} (again; a group of its own keeps gitolite's order)"
            )],
            rules,
            settings: Vec::new(),
        });
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

    fn setting(
        &mut self,
        target: &Target,
        loc: &Loc,
        seq: usize,
        key: &str,
        value: &str,
        option: bool,
    ) {
        let known = if option {
            match key {
                "deny-rules" => Some("deny-rules".to_string()),
                "mirror.master" => Some("master".into()),
                k if k.starts_with("mirror.copies") || k.starts_with("mirror.redirectOK") => {
                    Some(k["mirror.".len()..].to_string())
                }
                _ => None,
            }
        } else {
            // gitolite 2's form, kept by many configurations.
            match key {
                "gitolite.mirror.master" => Some("master".into()),
                k if k.starts_with("gitolite.mirror.slaves") => {
                    Some(format!("copies{}", &k["gitolite.mirror.slaves".len()..]))
                }
                k if k.starts_with("gitolite.mirror.redirectOK") => {
                    Some(k["gitolite.mirror.".len()..].to_string())
                }
                _ => None,
            }
        };
        let Some(key) = known else {
            let what = if option { "option" } else { "config" };
            self.problem(loc, format!("{what} {key}: has no equivalent; left out"));
            return;
        };
        self.settings.push(Setting {
            seq,
            target: target.clone(),
            key,
            value: value.to_string(),
            loc: loc.clone(),
        });
    }

    /// Does `target` apply to the repo or pattern `scope` (a name or a glob)?
    fn applies(&self, target: &Target, scope: &Target) -> bool {
        match (target, scope) {
            (Target::All, _) => true,
            (Target::Named(a), Target::Named(b)) => a == b,
            (Target::Group(g), Target::Named(n)) => {
                self.members(g).iter().any(|m| strip_git(m) == n)
            }
            (Target::Pattern(p), Target::Named(n)) => pattern::glob_matches(p, n),
            (Target::Pattern(a), Target::Pattern(b)) => a == b,
            _ => false,
        }
    }

    /// The settings in force for `scope`, as gitolite's `git_config`: per key, the last.
    fn effective(&self, scope: &Target) -> Settings {
        let mut list: Vec<&Setting> = self
            .settings
            .iter()
            .filter(|s| self.applies(&s.target, scope))
            .collect();
        list.sort_by_key(|s| s.seq);
        list.into_iter()
            .map(|s| (s.key.clone(), (s.value.clone(), s.loc.clone(), s.seq)))
            .collect()
    }

    /// Writes each table's `deny_rules` and `mirror.*` where what gitmirror would otherwise
    /// take for the repo (from the tables it falls back to: matching patterns, then `@all`)
    /// differs from what gitolite resolves for it.
    fn resolve_settings(&mut self) {
        let all_settings = self.effective(&Target::All);
        let all = self.wanted(&all_settings);
        let all_emitted = Emitted {
            deny: all.deny.then_some(true),
            servers: all.servers.clone(),
            sync: all.sync.then_some(true),
            redirect: all.redirect.then_some(true),
        };
        self.emit("@all", Scope::All, all_emitted.clone());
        // Patterns first: named repos may fall back to them.
        let patterns: Vec<String> = self
            .tables
            .iter()
            .filter_map(|t| match &t.scope {
                Scope::Pattern(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        let mut emitted_patterns: Vec<(String, Emitted)> = Vec::new();
        for p in &patterns {
            let own = self.effective(&Target::Pattern(p.clone()));
            let want = self.wanted(&own);
            let e = want.beyond(&[&all_emitted]);
            self.emit(p, Scope::Pattern(p.clone()), e.clone());
            emitted_patterns.push((p.clone(), e));
        }
        let mut names: BTreeSet<String> = self.named.clone();
        for g in self.repo_groups.clone() {
            for m in self.members(&g) {
                let m = strip_git(&m).to_string();
                if pattern::is_plain_name(&m) {
                    names.insert(m);
                }
            }
        }
        for n in names {
            let own = self.effective(&Target::Named(n.clone()));
            let want = self.wanted(&own);
            let mut fallback: Vec<&Emitted> = emitted_patterns
                .iter()
                .filter(|(p, _)| pattern::glob_matches(p, &n))
                .map(|(_, e)| e)
                .collect();
            fallback.push(&all_emitted);
            let e = want.beyond(&fallback);
            self.emit(&n, Scope::Names([n.clone()].into()), e);
        }
    }

    /// Keeps gitmirror from giving a pattern's creator `RW+` where gitolite gives nothing:
    /// a pattern table that never names `CREATOR` gets a rule that does and never decides.
    fn creator_as_gitolite(&mut self) {
        for i in 0..self.tables.len() {
            let Scope::Pattern(p) = &self.tables[i].scope else {
                continue;
            };
            let names_creator = self.tables[i].rules.iter().any(|r| {
                r.text
                    .split_once(" = ")
                    .is_some_and(|(_, who)| who.split(' ').any(|w| w == "CREATOR"))
            });
            if names_creator || self.tables[i].rules.is_empty() {
                continue;
            }
            let loc = self.tables[i].rules[0].loc.clone();
            let deny = self
                .effective(&Target::Pattern(p.clone()))
                .get("deny-rules")
                .is_some_and(|(v, _, _)| perl_true(v));
            if deny {
                // With deny_rules, a deny rule with refs applies to checks without a ref.
                self.problem(
                    &loc,
                    format!("{p}: never names CREATOR and has deny-rules on: gitmirror would give its creators RW+, gitolite gives them nothing"),
                );
                continue;
            }
            self.tables[i].rules.insert(
                0,
                OutRule {
                    text: CREATOR_NAMED.to_string(),
                    loc,
                    who: Who::Everyone,
                    why: Some(CREATOR_NAMED_WHY),
                },
            );
        }
    }

    /// Leaves out deny rules (or users of them) that an earlier rule of the same table
    /// always decides before: for every ref, for the same user or everyone, with every letter
    /// the file's rules use. They change nothing, and gitmirror refuses them at compile.
    fn drop_shadowed_denies(&mut self) {
        let perms: Vec<String> = self
            .tables
            .iter()
            .flat_map(|t| &t.rules)
            .map(|r| split_rule(&r.text).0.to_string())
            .collect();
        let mut needed = vec!['R', 'W', '+'];
        if perms.iter().any(|p| p.starts_with("RW") && p.contains('C')) {
            needed.push('C');
        }
        if perms.iter().any(|p| p.contains('D')) {
            needed.push('D');
        }
        for t in 0..self.tables.len() {
            let mut i = 0;
            while i < self.tables[t].rules.len() {
                let text = self.tables[t].rules[i].text.clone();
                let (perm, refs, who) = split_rule(&text);
                if perm != "-" {
                    i += 1;
                    continue;
                }
                let shadowed = |member: &str| {
                    self.tables[t].rules[..i].iter().any(|earlier| {
                        let (p, r, w) = split_rule(&earlier.text);
                        p != "-"
                            && r.is_empty()
                            && needed.iter().all(|l| p.contains(*l))
                            && w.iter().any(|x| *x == member || *x == "@all")
                    })
                };
                let (gone, kept): (Vec<&str>, Vec<&str>) = who.iter().partition(|m| shadowed(m));
                if gone.is_empty() {
                    i += 1;
                    continue;
                }
                let loc = self.tables[t].rules[i].loc.clone();
                let key = self.tables[t].key.clone();
                if matches!(self.tables[t].scope, Scope::Pattern(_)) {
                    // There it can still decide ^C (with deny-rules), which no RW rule
                    // allows; gitmirror refuses it all the same.
                    self.problem(
                        &loc,
                        format!("{key}: deny rule for {} after a rule that already allows them everything; gitmirror refuses it, and in a pattern it may still decide who can create repos", gone.join(" ")),
                    );
                } else {
                    self.note(
                        &loc,
                        format!("{key}: deny rule for {} comes after a rule that already allows them everything; it never decides, left out", gone.join(" ")),
                    );
                }
                if kept.is_empty() {
                    self.tables[t].rules.remove(i);
                    continue;
                }
                let mut text = perm.to_string();
                for r in &refs {
                    text.push(' ');
                    text.push_str(r);
                }
                text.push_str(" =");
                for k in &kept {
                    text.push(' ');
                    text.push_str(k);
                }
                let who = self.who(&kept.iter().map(|k| k.to_string()).collect::<Vec<_>>());
                let rule = &mut self.tables[t].rules[i];
                rule.text = text;
                rule.who = who;
                i += 1;
            }
        }
    }

    fn emit(&mut self, key: &str, scope: Scope, e: Emitted) {
        let mut lines = Vec::new();
        if let Some(d) = e.deny {
            lines.push(format!("deny_rules = {d}"));
        }
        if let Some((master, slaves)) = &e.servers {
            lines.push(format!("mirror.master = {}", quote(master)));
            let slaves: Vec<String> = slaves.iter().map(|s| quote(s)).collect();
            lines.push(format!("mirror.slaves = [{}]", slaves.join(", ")));
        }
        if let Some(s) = e.sync {
            lines.push(format!("mirror.sync = {s}"));
        }
        if let Some(r) = e.redirect {
            lines.push(format!("mirror.redirect = {r}"));
        }
        if !lines.is_empty() {
            self.table_for(key, scope).settings = lines;
        }
    }

    fn table_for(&mut self, key: &str, scope: Scope) -> &mut Table {
        let at = match self.tables.iter().position(|t| t.key == key) {
            Some(at) => at,
            None => {
                // Only settings: where it stands does not matter.
                self.tables.push(Table {
                    key: key.to_string(),
                    scope,
                    from: Vec::new(),
                    rules: Vec::new(),
                    settings: Vec::new(),
                });
                self.tables.len() - 1
            }
        };
        &mut self.tables[at]
    }

    /// What gitolite decides from `settings` for one repo or pattern.
    fn wanted(&mut self, settings: &Settings) -> Wanted {
        let deny = settings
            .get("deny-rules")
            .is_some_and(|(v, _, _)| perl_true(v));
        match self.mirror(settings) {
            Some(m) => Wanted {
                deny,
                servers: m.master.map(|master| (master, m.slaves)),
                sync: m.sync,
                redirect: m.redirect,
            },
            None => Wanted {
                deny,
                ..Wanted::default()
            },
        }
    }

    /// gitolite's Mirroring.pm reading of the settings: `copies` keys add slaves (async),
    /// `.sync`/`.nosync` ones set their mode, `redirectOK` names the trusted slaves or `all`.
    /// `None` when they cannot be said in gitmirror's terms (said why).
    fn mirror(&mut self, s: &Settings) -> Option<Mirror> {
        let master = s.get("master").map(|(v, _, _)| v.clone());
        let mut modes: BTreeMap<String, &str> = BTreeMap::new();
        // Problems are reported at the last mirror setting that applies.
        let loc = s
            .iter()
            .filter(|(k, _)| {
                *k == "master" || k.starts_with("copies") || k.starts_with("redirectOK")
            })
            .max_by_key(|(_, (_, _, seq))| *seq)
            .map(|(_, (_, loc, _))| loc.clone());
        for (k, (v, _, _)) in s {
            if let Some(tail) = k.strip_prefix("copies") {
                let mode = if tail.starts_with(".nosync") {
                    "nosync"
                } else if tail.starts_with(".sync") {
                    "sync"
                } else {
                    "async"
                };
                for slave in v.split_whitespace() {
                    let e = modes.entry(slave.to_string()).or_insert(mode);
                    if mode != "async" {
                        *e = mode;
                    }
                }
            }
        }
        let mut redirect_ok = BTreeSet::new();
        for (k, (v, _, _)) in s {
            if k.starts_with("redirectOK") {
                redirect_ok.extend(v.split_whitespace().map(str::to_string));
            }
        }
        let loc = loc?;
        let Some(master_name) = master else {
            if !modes.is_empty() {
                self.problem(
                    &loc,
                    "mirror slaves without mirror.master; gitmirror needs the master",
                );
            }
            return None;
        };
        for name in std::iter::once(&master_name).chain(modes.keys()) {
            if AccountName::parse(name).is_err() {
                self.problem(
                    &loc,
                    format!("server name {name:?} is not a valid hostname"),
                );
                return None;
            }
        }
        // gitolite's master skips itself among its copies; gitmirror refuses it there.
        modes.remove(&master_name);
        let kinds: BTreeSet<&str> = modes.values().copied().collect();
        if kinds.contains("nosync") {
            self.problem(
                &loc,
                "nosync slaves (pushed only by hand) have no equivalent; every slave is pushed to",
            );
        }
        if kinds.len() > 1 {
            self.problem(&loc, "slaves in different modes (sync, async) have no equivalent: mirror.sync is per repo");
        }
        let sync = kinds.contains("sync");
        let slaves: Vec<String> = modes.keys().cloned().collect();
        let redirect = if redirect_ok.len() == 1 && redirect_ok.contains("all") {
            true
        } else if redirect_ok.is_empty() {
            false
        } else if slaves.iter().all(|s| redirect_ok.contains(s)) {
            true
        } else {
            self.problem(
                &loc,
                "redirectOK for only some slaves has no equivalent: mirror.redirect is per repo",
            );
            false
        };
        Some(Mirror {
            master: Some(master_name),
            slaves,
            sync,
            redirect,
        })
    }

    fn render(&mut self) -> String {
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

/// What gitolite resolves for one repo (or pattern).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Wanted {
    deny: bool,
    servers: Option<(String, Vec<String>)>,
    sync: bool,
    redirect: bool,
}

/// What one table says (`None`: nothing, the next table decides).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Emitted {
    deny: Option<bool>,
    servers: Option<(String, Vec<String>)>,
    sync: Option<bool>,
    redirect: Option<bool>,
}

/// The servers gitmirror takes from tables tried in order: the first that names a master.
fn view_servers<'a>(tables: &[&'a Emitted]) -> Option<&'a (String, Vec<String>)> {
    tables.iter().find_map(|e| e.servers.as_ref())
}

impl Wanted {
    /// What a table must say for gitmirror to take `self`, when it would otherwise fall back
    /// to `tables` in order (each setting to the first that says it; false if none does).
    fn beyond(&self, tables: &[&Emitted]) -> Emitted {
        let first =
            |f: fn(&Emitted) -> Option<bool>| tables.iter().find_map(|e| f(e)).unwrap_or(false);
        let differs = |mine: bool, theirs: bool| (mine != theirs).then_some(mine);
        Emitted {
            deny: differs(self.deny, first(|e| e.deny)),
            servers: match (&self.servers, view_servers(tables)) {
                (Some(mine), Some(theirs)) if mine == theirs => None,
                (mine, _) => mine.clone(),
            },
            sync: differs(self.sync, first(|e| e.sync)),
            redirect: differs(self.redirect, first(|e| e.redirect)),
        }
    }
}

/// Per key, its value, where it was set and the rule number it was set at.
type Settings = BTreeMap<String, (String, Loc, usize)>;

#[derive(Debug, Default, PartialEq, Eq)]
struct Mirror {
    master: Option<String>,
    slaves: Vec<String>,
    sync: bool,
    redirect: bool,
}

/// A rule string's permission, refs and members.
fn split_rule(text: &str) -> (&str, Vec<&str>, Vec<&str>) {
    let (head, who) = text.split_once(" =").unwrap_or((text, ""));
    let mut words = head.split(' ');
    let perm = words.next().unwrap_or("");
    (perm, words.collect(), who.split_whitespace().collect())
}

/// gitolite strips one `.git` from a repo name (with a warning).
fn strip_git(name: &str) -> &str {
    name.strip_suffix(".git").unwrap_or(name)
}

/// Perl's truth, which gitolite's `option` values have: "" and "0" are false.
fn perl_true(v: &str) -> bool {
    !(v.is_empty() || v == "0")
}

/// A TOML string.
fn quote(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::conf::parse_text;
    use super::*;

    fn convert_text(text: &str) -> Converted {
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

    fn parsed(c: &Converted) -> toml::Table {
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
    fn a_repo_named_again_merges_only_when_order_is_kept() {
        // Between the two foo blocks, @all has a rule for bob: foo's second block cannot
        // join its first table, so it becomes a group of one, after @all.
        let c = convert_text(
            "repo foo\n  RW = alice\nrepo @all\n  R = bob\nrepo foo\n  - = bob\nrepo bar\n  RW = carol\nrepo bar\n  RW+ = dave\n",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let t = parsed(&c);
        assert_eq!(t["repo-groups"]["g-line5"][0].as_str(), Some("foo"));
        let order: Vec<&str> = c
            .text
            .lines()
            .filter(|l| l.starts_with("[repos."))
            .collect();
        assert_eq!(
            order,
            vec![
                "[repos.\"foo\"]",
                "[repos.\"@all\"]",
                "[repos.\"@g-line5\"]",
                "[repos.\"bar\"]"
            ]
        );
        // bar's blocks have nothing between them: one table.
        assert_eq!(t["repos"]["bar"]["rules"].as_array().unwrap().len(), 2);
        // Allowing rules in between do not stop a merge of allowing rules: their order
        // changes no decision (gitolite's usual `repo @all / R = gitweb daemon` at the end).
        let c = convert_text(
            "repo @all\n  R = bob\nrepo foo\n  RW = bob @all\nrepo @all\n  R = gitweb bob\n",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(
            parsed(&c)["repos"]["@all"]["rules"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // Disjoint users in between do not stop a merge.
        let c =
            convert_text("repo foo\n  RW = alice\nrepo @all\n  R = bob\nrepo foo\n  RW+ = alice\n");
        assert!(!c.text.contains("[repo-groups]"), "{}", c.text);
        // @all named again across a conflict cannot be kept in order.
        let c = convert_text("repo @all\n  R = bob\nrepo foo\n  RW = bob\nrepo @all\n  - = bob\n");
        assert_eq!(c.problems.len(), 1, "{:?}", c.problems);
        assert_eq!(c.problems[0].loc.line, 5);
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

    #[test]
    fn denies_that_never_decide_are_left_out() {
        let c = convert_text(
            "@g = x\nrepo foo\n  RW+ = @all\n  - = bob\nrepo bar\n  RW+ = bob @g\n  - master = bob carol @g\n  RW = carol\n",
        );
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.notes.len(), 2, "{:?}", c.notes);
        let t = parsed(&c);
        assert_eq!(t["repos"]["foo"]["rules"].as_array().unwrap().len(), 1);
        assert_eq!(
            t["repos"]["bar"]["rules"][1].as_str(),
            Some("- master = carol")
        );
        // With C used somewhere, RW+ no longer allows every letter asked.
        let c = convert_text("repo foo\n  RW+ = bob\n  - = bob\nrepo bar\n  RW+C = x\n");
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn deny_rules_written_where_the_fallback_differs() {
        let c = convert_text(
            "repo @all\n  option deny-rules = 1\nrepo foo\n  option deny-rules = 0\n  RW = a\n\
             repo bar\n  RW = b\nrepo scratch/..*\n  C = @all\n  RW+ = CREATOR\n  option deny-rules = 0\n\
             repo scratch/named\n  R = c\n",
        );
        let t = parsed(&c);
        assert_eq!(t["repos"]["@all"]["deny_rules"].as_bool(), Some(true));
        assert_eq!(t["repos"]["foo"]["deny_rules"].as_bool(), Some(false));
        assert!(t["repos"]["bar"].get("deny_rules").is_none());
        assert_eq!(
            t["repos"]["scratch/**"]["deny_rules"].as_bool(),
            Some(false)
        );
        // gitolite applies the pattern's option to the named repo it matches; so does
        // gitmirror's fallback, which tries the pattern before @all.
        assert!(t["repos"]["scratch/named"].get("deny_rules").is_none());
    }

    #[test]
    fn mirror_options_resolve_per_repo() {
        let c = convert_text(
            "repo @all\n  option mirror.master = s1\n  option mirror.slaves = s2 s3\n  option mirror.redirectOK = all\n\
             repo foo\n  option mirror.slaves = s4\n  option deny-rules = 1\n\
             repo bar\n  option mirror.slaves.sync = s2 s3\n\
             repo old\n  config gitolite.mirror.master = \"s2\"\n  config gitolite.mirror.slaves = \"s1\"\n\
             repo mixed\n  option mirror.slaves.nosync = s9\n",
        );
        let t = parsed(&c);
        let all = &t["repos"]["@all"]["mirror"];
        assert_eq!(all["master"].as_str(), Some("s1"));
        assert_eq!(all["slaves"].as_array().unwrap().len(), 2);
        assert_eq!(all["redirect"].as_bool(), Some(true));
        // The same key replaces @all's; the master stays @all's and is written out.
        let foo = &t["repos"]["foo"];
        assert_eq!(foo["mirror"]["master"].as_str(), Some("s1"));
        assert_eq!(foo["mirror"]["slaves"][0].as_str(), Some("s4"));
        assert_eq!(foo["deny_rules"].as_bool(), Some(true));
        // Another key adds to @all's copies, in sync mode for s2 and s3.
        let bar = &t["repos"]["bar"]["mirror"];
        assert_eq!(bar["sync"].as_bool(), Some(true));
        assert!(bar.get("master").is_none());
        let old = &t["repos"]["old"]["mirror"];
        assert_eq!(old["master"].as_str(), Some("s2"));
        // gitolite 2's key is the same as mirror.slaves: it replaces @all's.
        assert_eq!(old["slaves"].as_array().unwrap().len(), 1);
        // s9 nosync beside async s2, s3.
        assert_eq!(c.problems.len(), 2, "{:?}", c.problems);
        assert!(
            c.problems.iter().all(|p| p.loc.line == 14),
            "{:?}",
            c.problems
        );
    }
}
