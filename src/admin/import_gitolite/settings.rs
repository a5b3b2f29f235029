//! `option` and `config` lines as `deny_rules` and `mirror.*`.
//!
//! Options and configs are not positional in gitolite: each key takes its last value among
//! the blocks that apply. They are resolved per repo here and written where they differ from
//! what gitmirror would otherwise take for it (the matching patterns' tables, then `@all`'s).
//! Mirror keys are read as gitolite's Mirroring.pm reads them; what gitmirror cannot say per
//! repo (nosync slaves, modes or redirects for only some slaves) is reported.

use std::collections::{BTreeMap, BTreeSet};

use super::conf::Loc;
use super::convert::{Converter, Target, strip_git};
use super::output::quote;
use super::pattern;
use super::tables::{Scope, Table};
use crate::names::AccountName;

/// An `option` or `config` that gitolite resolves per repo (last one wins per key).
#[derive(Debug, Clone)]
pub(super) struct Setting {
    seq: usize,
    target: Target,
    /// `deny-rules`, `master`, `copies...` or `redirectOK...`.
    key: String,
    value: String,
    loc: Loc,
}

/// Per key, its value, where it was set and the rule number it was set at.
pub(super) type Settings = BTreeMap<String, (String, Loc, usize)>;

impl Converter {
    pub(super) fn setting(
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
    pub(super) fn effective(&self, scope: &Target) -> Settings {
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
    pub(super) fn resolve_settings(&mut self) {
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

#[derive(Debug, Default, PartialEq, Eq)]
struct Mirror {
    master: Option<String>,
    slaves: Vec<String>,
    sync: bool,
    redirect: bool,
}

/// Perl's truth, which gitolite's `option` values have: "" and "0" are false.
pub(super) fn perl_true(v: &str) -> bool {
    !(v.is_empty() || v == "0")
}

#[cfg(test)]
mod tests {
    use super::super::convert::tests::{convert_text, parsed};

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
