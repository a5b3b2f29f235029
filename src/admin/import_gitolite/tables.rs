//! The tables a conversion writes, and gitolite's rule order kept across them.
//!
//! TOML has one table per name, so a repo named again in a later block is merged into its
//! earlier table only when no table in between has a rule for the same repo and users whose
//! order against the moved rules matters (one of the two a deny rule: two allowing rules
//! decide the same in either order); else the later block becomes a repo group of that one
//! repo (or, for `@all` and patterns, which no group can hold, is reported). `Scope` and `Who`
//! are what that check needs to know of a table and of a rule.
//!
//! Once every block is placed, two passes keep gitmirror deciding as gitolite did: a
//! pattern's creator gets nothing gitolite does not give, and deny rules that never decide
//! (which gitmirror refuses) are left out.

use std::collections::BTreeSet;

use super::conf::Loc;
use super::convert::{Converter, Target};
use super::pattern;
use super::settings::perl_true;

/// Which repos a table can apply to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scope {
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
pub(super) enum Who {
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
pub(super) struct OutRule {
    pub(super) text: String,
    pub(super) loc: Loc,
    pub(super) who: Who,
    /// Said in the comment after the location, when the rule is not the configuration's own.
    pub(super) why: Option<&'static str>,
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
pub(super) struct Table {
    pub(super) key: String,
    pub(super) scope: Scope,
    /// The blocks it was made from, for the comment above it.
    pub(super) from: Vec<String>,
    pub(super) rules: Vec<OutRule>,
    pub(super) settings: Vec<String>,
}

impl Converter {
    /// Puts a block's rules for one target into the tables, keeping gitolite's order.
    pub(super) fn put(
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

    /// Keeps gitmirror from giving a pattern's creator `RW+` where gitolite gives nothing:
    /// a pattern table that never names `CREATOR` gets a rule that does and never decides.
    pub(super) fn creator_as_gitolite(&mut self) {
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
    pub(super) fn drop_shadowed_denies(&mut self) {
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
}

/// A rule string's permission, refs and members.
fn split_rule(text: &str) -> (&str, Vec<&str>, Vec<&str>) {
    let (head, who) = text.split_once(" =").unwrap_or((text, ""));
    let mut words = head.split(' ');
    let perm = words.next().unwrap_or("");
    (perm, words.collect(), who.split_whitespace().collect())
}

#[cfg(test)]
mod tests {
    use super::super::convert::tests::{convert_text, parsed};

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
}
