//! `repos.toml`: who may read, write and rewind which repo, and which server masters it.
//!
//! The file is normally the same on every server of a cluster. It is validated whole before
//! anything uses it, so a mistake is reported with its line and nothing half-applies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::external::{self, Downstream, RawDownstream, RawUpstream, Upstream};
use super::file::{ConfigError, Source};
use crate::home::Home;
use crate::names::{AccountName, RepoName};

mod decide;
mod grant;
mod pattern;

pub(crate) use decide::{Ask, Decision, RepoRoles};
use grant::Member;
pub(crate) use grant::{Grant, ROLES, full_ref};
pub(crate) use pattern::RepoPattern;

/// The rule key that applies to every repo, named in the file or not.
pub(crate) const ALL_REPOS: &str = "@all";
/// The group that stands for every user.
pub(crate) const ALL_USERS: &str = "@all";

/// What one user may do to one repo, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Access {
    /// Nothing; the repo is not even admitted to exist.
    None,
    /// Clone and fetch (`R`).
    Read,
    /// Push fast-forwards and new refs (`RW`).
    Write,
    /// Also rewind, delete and move tags (`RW+`).
    Rewind,
}

impl Access {
    /// The rule's spelling in `repos.toml` (empty for none).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Access::None => "",
            Access::Read => "R",
            Access::Write => "RW",
            Access::Rewind => "RW+",
        }
    }
}

/// Which server masters a repo, which servers mirror it, whether pushes wait for them, and
/// whether a slave carries users' pushes to the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MirrorRule {
    /// The only server that accepts users' pushes.
    pub(crate) master: AccountName,
    /// The servers the master keeps identical to itself.
    pub(crate) slaves: Vec<AccountName>,
    /// Whether a user's push waits for the slaves; `None` defers to `gitmirror.toml`.
    pub(crate) sync: Option<bool>,
    /// Whether a user's push to a slave is carried to the master (on the slave) and taken
    /// from the slave (on the master); `None` defers to `gitmirror.toml`.
    pub(crate) redirect: Option<bool>,
}

impl MirrorRule {
    /// Whether `server` is this repo's master.
    pub(crate) fn is_master(&self, server: &AccountName) -> bool {
        &self.master == server
    }

    /// Whether `server` is one of this repo's slaves.
    pub(crate) fn is_slave(&self, server: &AccountName) -> bool {
        self.slaves.contains(server)
    }
}

/// A server named in a mirror table (see [`Rules::mirror_servers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NamedServer {
    /// `@all` or the repo's name.
    pub(crate) table: String,
    pub(crate) server: AccountName,
    /// Named as the master (else as a slave).
    pub(crate) master: bool,
}

/// The mirror table of one `[repos.X]` entry: `master` brings its own `slaves` (replacing
/// those of `@all`), `sync` and `redirect` override on their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct MirrorPart {
    servers: Option<(AccountName, Vec<AccountName>)>,
    sync: Option<bool>,
    // Absent in an index compiled before the setting existed: read as not set.
    #[serde(default)]
    redirect: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default, rename = "repo-groups")]
    repo_groups: BTreeMap<Spanned<String>, Vec<Spanned<String>>>,
    #[serde(default)]
    repos: BTreeMap<Spanned<String>, RawRepo>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    #[serde(rename = "RW+", default)]
    rewind: Vec<Spanned<String>>,
    #[serde(rename = "RW", default)]
    write: Vec<Spanned<String>>,
    #[serde(rename = "R", default)]
    read: Vec<Spanned<String>>,
    #[serde(rename = "C", default)]
    create: Vec<Spanned<String>>,
    #[serde(rename = "-", default)]
    deny: Vec<Spanned<String>>,
    #[serde(default)]
    rules: Vec<Spanned<String>>,
    deny_rules: Option<bool>,
    mirror: Option<Spanned<RawMirror>>,
    upstream: Option<Spanned<RawUpstream>>,
    #[serde(default)]
    downstream: Vec<Spanned<RawDownstream>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    master: Option<Spanned<String>>,
    slaves: Option<Vec<Spanned<String>>>,
    sync: Option<bool>,
    redirect: Option<bool>,
}

/// What one table (`@all`, a repo, a repo group, a pattern) says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(in crate::config) struct RepoRule {
    grants: Vec<Grant>,
    /// Where the table is written: mirror settings of groups and patterns apply in this order.
    #[serde(default)]
    seq: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deny_rules: Option<bool>,
    mirror: MirrorPart,
    // Absent in an index compiled before external mirrors existed: read as none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<Upstream>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    downstream: Vec<Downstream>,
}

/// Which table a rule is read for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableKind {
    All,
    Repo,
    Group,
    Pattern,
}

/// How a pattern naming `CREATOR` is matched.
#[derive(Debug, Clone, Copy)]
enum CreatorIs<'a> {
    /// The repo's creator (or the user creating it).
    Known(&'a str),
    /// No creator: the repo was not created by a user, so `CREATOR` matches nothing.
    Nobody,
    /// Whoever it was: for settings that do not depend on the user (mirror settings).
    Anyone,
}

/// A validated `repos.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    pub(in crate::config) groups: BTreeMap<String, BTreeSet<AccountName>>,
    pub(in crate::config) repo_groups: BTreeMap<String, BTreeSet<RepoName>>,
    pub(in crate::config) all: RepoRule,
    /// `[repos."@group"]` tables, by group name.
    pub(in crate::config) group_tables: BTreeMap<String, RepoRule>,
    /// Tables of user-created repos, in the order written.
    pub(in crate::config) patterns: Vec<(RepoPattern, RepoRule)>,
    pub(in crate::config) repos: BTreeMap<RepoName, RepoRule>,
}

impl Rules {
    /// The rules the last successful `compile` validated, which the shells read; before the
    /// first compile there are none and nobody has access.
    pub(crate) fn compiled(home: &Home) -> Result<Self, ConfigError> {
        Self::compiled_index(home, None)
    }

    /// [`compiled`](Self::compiled), as far as it concerns `repo`: what a connection for one
    /// repo reads, in a moment however many repos the server has.
    pub(crate) fn compiled_for(home: &Home, repo: &RepoName) -> Result<Self, ConfigError> {
        Self::compiled_index(home, Some(repo))
    }

    fn compiled_index(home: &Home, repo: Option<&RepoName>) -> Result<Self, ConfigError> {
        let path = home.compiled_rules_path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let read = match repo {
                    Some(repo) => super::rules_index::read_for(&bytes, repo),
                    None => super::rules_index::read_all(&bytes),
                };
                read.map_err(|e| {
                    let (line, message) = match e {
                        super::rules_index::IndexError::Line { line, message } => (line, message),
                        e => (1, e.to_string()),
                    };
                    ConfigError::Invalid {
                        file: path.clone(),
                        line,
                        message,
                    }
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Compiled by an earlier version, which kept the validated file as it was.
                let legacy = home.state_dir().join("repos.compiled.toml");
                match std::fs::metadata(&legacy) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Rules::default()),
                    _ => Rules::load(&legacy),
                }
            }
            Err(source) => Err(ConfigError::Read { file: path, source }),
        }
    }

    /// The compiled form [`compiled`](Self::compiled) reads, for `compile` to write.
    pub(crate) fn to_index(&self) -> Result<Vec<u8>, serde_json::Error> {
        super::rules_index::write(self)
    }

    /// Reads and validates the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_source(&Source::read(path)?)
    }

    /// Validates already-read text.
    pub(crate) fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let raw: RawRules = src.parse()?;
        let mut rules = Rules::default();
        for (name, members) in &raw.groups {
            if name.get_ref() == "all" || AccountName::parse(name.get_ref()).is_err() {
                return Err(src.error(
                    name.span(),
                    format!(
                        "group name {:?}: expected a name like \"devs\" (written @devs in rules; \"all\" is reserved)",
                        name.get_ref()
                    ),
                ));
            }
            let mut set = BTreeSet::new();
            for m in members {
                let user = AccountName::parse(m.get_ref()).map_err(|e| {
                    src.error(
                        m.span(),
                        format!(
                            "member of group {}: {e}; groups hold user names and do not nest",
                            name.get_ref()
                        ),
                    )
                })?;
                set.insert(user);
            }
            rules.groups.insert(name.get_ref().clone(), set);
        }
        for (name, members) in &raw.repo_groups {
            if name.get_ref() == "all" || AccountName::parse(name.get_ref()).is_err() {
                return Err(src.error(
                    name.span(),
                    format!(
                        "repo group name {:?}: expected a name like \"webapps\" (written @webapps in table names; \"all\" is reserved)",
                        name.get_ref()
                    ),
                ));
            }
            let mut set = BTreeSet::new();
            for m in members {
                let repo = RepoName::parse(m.get_ref()).map_err(|e| {
                    src.error(
                        m.span(),
                        format!(
                            "member of repo group {}: repo {e}; repo groups hold repo names and do not nest",
                            name.get_ref()
                        ),
                    )
                })?;
                set.insert(repo);
            }
            rules.repo_groups.insert(name.get_ref().clone(), set);
        }
        // Whether any rule makes C or D a letter of its own: a deny rule is only proved
        // useless if the rule before it decides those letters too.
        let letters = used_letters(&raw);
        for (key, raw_repo) in &raw.repos {
            let k = key.get_ref();
            let kind = if k == ALL_REPOS {
                TableKind::All
            } else if k.starts_with('@') {
                TableKind::Group
            } else if pattern::is_pattern(k) {
                TableKind::Pattern
            } else {
                TableKind::Repo
            };
            let mut rule = rules.repo_rule(src, k, kind, raw_repo, &letters)?;
            rule.seq = key.span().start;
            match kind {
                TableKind::All => rules.all = rule,
                TableKind::Group => {
                    let group = &k[1..];
                    if !rules.repo_groups.contains_key(group) {
                        return Err(src.error(
                            key.span(),
                            format!("unknown repo group {k}; expected a group defined under [repo-groups], or @all"),
                        ));
                    }
                    rules.group_tables.insert(group.to_string(), rule);
                }
                TableKind::Pattern => {
                    let pattern = RepoPattern::parse(k).map_err(|e| src.error(key.span(), e))?;
                    if !rule.grants.iter().any(|g| g.who == Member::Creator) {
                        // The creator of a repo may do everything to it unless the table
                        // says otherwise: after the table's own rules, so that its deny
                        // rules bind the creator too.
                        let at = rule.grants.last().map_or(key.span().start, |g| g.seq);
                        rule.grants.push(Grant {
                            perm: "RW+".into(),
                            refs: Vec::new(),
                            who: Member::Creator,
                            seq: at,
                            line: src.line(key.span().start),
                        });
                    }
                    rules.patterns.push((pattern, rule));
                }
                TableKind::Repo => {
                    let name = RepoName::parse(k).map_err(|e| {
                        src.error(
                            key.span(),
                            format!("repo {e}; expected a name like \"site-b/tools\", a pattern like \"users/CREATOR/*\", @group or \"@all\""),
                        )
                    })?;
                    if k.ends_with(".git") {
                        return Err(
                            src.error(key.span(), format!("repo {k:?}: write it without .git"))
                        );
                    }
                    rules.repos.insert(name, rule);
                }
            }
        }
        rules.patterns.sort_by_key(|(_, r)| r.seq);
        Ok(rules)
    }

    fn repo_rule(
        &self,
        src: &Source,
        repo: &str,
        kind: TableKind,
        raw: &RawRepo,
        letters: &Letters,
    ) -> Result<RepoRule, ConfigError> {
        let mut grants = Vec::new();
        for (perm, list) in [
            ("RW+", &raw.rewind),
            ("RW", &raw.write),
            ("R", &raw.read),
            ("C", &raw.create),
            ("-", &raw.deny),
        ] {
            for who in list {
                let at = who.span().start;
                grants.push(self.grant(src, repo, kind, perm, Vec::new(), who.get_ref(), at)?);
            }
        }
        for text in &raw.rules {
            let at = text.span().start;
            let parts = grant::split(text.get_ref())
                .map_err(|e| src.error(text.span(), format!("{repo}: {e}")))?;
            let mut refs = Vec::new();
            for r in &parts.refs {
                let full = grant::full_ref(r);
                if let Err(e) = grant::anchored(&full) {
                    let e = e.to_string();
                    let first = e.lines().last().unwrap_or("invalid").trim();
                    return Err(src.error(
                        text.span(),
                        format!("{repo}: ref {r:?} is not a valid regular expression ({first})"),
                    ));
                }
                refs.push(full);
            }
            for who in parts.who {
                grants.push(self.grant(src, repo, kind, parts.perm, refs.clone(), who, at)?);
            }
        }
        grants.sort_by_key(|g| g.seq);
        // In a pattern's table a deny rule also decides who may create (C), which no RW
        // rule does: it is never useless there.
        if kind != TableKind::Pattern {
            check_denies(src, repo, &grants, letters)?;
        }
        let mirror = match &raw.mirror {
            None => MirrorPart::default(),
            Some(m) => mirror_part(src, repo, m)?,
        };
        if kind != TableKind::Repo {
            // One URL cannot serve several repos.
            if let Some(u) = &raw.upstream {
                return Err(src.error(
                    u.span(),
                    format!(
                        "{repo}: upstream is set per repo, never for @all, a group or a pattern"
                    ),
                ));
            }
            if let Some(d) = raw.downstream.first() {
                return Err(src.error(
                    d.span(),
                    format!(
                        "{repo}: downstream is set per repo, never for @all, a group or a pattern"
                    ),
                ));
            }
        }
        let upstream = raw
            .upstream
            .as_ref()
            .map(|u| external::upstream(src, repo, u))
            .transpose()?;
        let downstream = external::downstreams(src, repo, &raw.downstream)?;
        if repo == crate::proto::ADMIN_REPO
            && let Some(u) = &raw.upstream
        {
            // Every server's configuration would come from elsewhere, unchecked.
            return Err(src.error(
                u.span(),
                format!("{repo}: the admin repo cannot be a pull mirror (no upstream)"),
            ));
        }
        Ok(RepoRule {
            grants,
            seq: 0,
            deny_rules: raw.deny_rules,
            mirror,
            upstream,
            downstream,
        })
    }

    /// One rule for one member, checked against the table it is in.
    #[allow(clippy::too_many_arguments)]
    fn grant(
        &self,
        src: &Source,
        repo: &str,
        kind: TableKind,
        perm: &str,
        refs: Vec<String>,
        who: &str,
        at: usize,
    ) -> Result<Grant, ConfigError> {
        let err = |message: String| Err(src.error(at..at, message));
        if !grant::PERMS.contains(&perm) {
            return err(format!(
                "{repo}: unknown permission {perm:?}; expected one of {}",
                grant::PERMS.join(" ")
            ));
        }
        if perm == "C" && kind != TableKind::Pattern {
            return err(format!(
                "{repo}: C (creating repos) belongs in a pattern's table, like [repos.\"users/CREATOR/*\"]"
            ));
        }
        if perm == "C" && !refs.is_empty() {
            return err(format!("{repo}: C (creating repos) takes no refs"));
        }
        let member = self
            .member(who)
            .map_err(|e| src.error(at..at, format!("{perm} of repo {repo}: {e}")))?;
        if member.is_wild() && kind != TableKind::Pattern {
            return err(format!(
                "{perm} of repo {repo}: {who} stands for a user-created repo's creator or roles; use it in a pattern's table, like [repos.\"users/CREATOR/*\"]"
            ));
        }
        Ok(Grant {
            perm: perm.to_string(),
            refs,
            who: member,
            seq: at,
            line: src.line(at),
        })
    }

    fn member(&self, text: &str) -> Result<Member, String> {
        if text == ALL_USERS {
            return Ok(Member::Everyone);
        }
        if text == grant::CREATOR {
            return Ok(Member::Creator);
        }
        if grant::ROLES.contains(&text) {
            return Ok(Member::Role(text.to_string()));
        }
        if let Some(group) = text.strip_prefix('@') {
            if self.groups.contains_key(group) {
                return Ok(Member::Group(group.to_string()));
            }
            return Err(format!(
                "unknown group {text}; expected a group defined under [groups], or @all"
            ));
        }
        AccountName::parse(text)
            .map(Member::User)
            .map_err(|e| format!("{e}; expected a user name or @group"))
    }

    /// Every rule that applies to `repo`, in the order written: `@all`'s, its own table's, its
    /// groups', and those of the patterns it matches (with `CREATOR` as `creator`).
    fn grants_for(&self, repo: &RepoName, creator: Option<&str>) -> Vec<&Grant> {
        let creator = creator.map_or(CreatorIs::Nobody, CreatorIs::Known);
        let mut grants: Vec<&Grant> = self
            .tables_for(repo, creator)
            .into_iter()
            .chain(std::iter::once(&self.all))
            .flat_map(|t| &t.grants)
            .collect();
        grants.sort_by_key(|g| g.seq);
        grants
    }

    /// The tables besides `@all` that apply to `repo`: its own first, then its groups' and the
    /// patterns it matches, in the order written.
    fn tables_for(&self, repo: &RepoName, creator: CreatorIs) -> Vec<&RepoRule> {
        let mut shared: Vec<&RepoRule> = self
            .group_tables
            .iter()
            .filter(|(g, _)| {
                self.repo_groups
                    .get(*g)
                    .is_some_and(|set| set.contains(repo))
            })
            .map(|(_, t)| t)
            .chain(
                self.patterns
                    .iter()
                    // The admin repo (every server's keys and rules) is never a pattern's.
                    .filter(|_| repo.as_str() != crate::proto::ADMIN_REPO)
                    .filter(|(p, _)| match creator {
                        CreatorIs::Known(c) => p.matches(repo, Some(c)),
                        CreatorIs::Nobody => p.matches(repo, None),
                        CreatorIs::Anyone => p.matches_anyone(repo),
                    })
                    .map(|(_, t)| t),
            )
            .collect();
        shared.sort_by_key(|t| t.seq);
        self.repos.get(repo).into_iter().chain(shared).collect()
    }

    /// Whether repo-level checks honour deny rules that name refs: the first table that
    /// says, its own first, then `@all`.
    fn deny_rules(&self, repo: &RepoName, creator: Option<&str>) -> bool {
        let creator = creator.map_or(CreatorIs::Nobody, CreatorIs::Known);
        self.tables_for(repo, creator)
            .into_iter()
            .chain(std::iter::once(&self.all))
            .find_map(|t| t.deny_rules)
            .unwrap_or(false)
    }

    /// The pattern a repo name matches whose `C` could let a user create it, if any: the
    /// first written.
    pub(crate) fn pattern_for(&self, repo: &RepoName) -> Option<&RepoPattern> {
        if repo.as_str() == crate::proto::ADMIN_REPO {
            return None;
        }
        self.patterns
            .iter()
            .find(|(p, _)| p.matches_anyone(repo))
            .map(|(p, _)| p)
    }

    /// The mirror settings for `repo`: master and slaves from its own table if it names a
    /// master, else from `@all`; `sync` and `redirect` likewise, each on its own. `None` when
    /// no master is named.
    pub(crate) fn mirror(&self, repo: &RepoName) -> Option<MirrorRule> {
        // Its own table, then its groups' and patterns' in the order written, then @all:
        // the first to name a master brings the slaves; sync and redirect each on their own.
        let tables: Vec<&MirrorPart> = self
            .tables_for(repo, CreatorIs::Anyone)
            .into_iter()
            .chain(std::iter::once(&self.all))
            .map(|t| &t.mirror)
            .collect();
        let (master, slaves) = tables.iter().find_map(|m| m.servers.clone())?;
        let sync = tables.iter().find_map(|m| m.sync);
        let redirect = tables.iter().find_map(|m| m.redirect);
        Some(MirrorRule {
            master,
            slaves,
            sync,
            redirect,
        })
    }

    /// Every server a mirror table names, with the table (`@all` or a repo's name) and
    /// whether as master, table by table (`@all` first), each server once per table.
    pub(crate) fn mirror_servers(&self) -> Vec<NamedServer> {
        let groups: Vec<(String, &RepoRule)> = self
            .group_tables
            .iter()
            .map(|(g, t)| (format!("@{g}"), t))
            .chain(
                self.patterns
                    .iter()
                    .map(|(p, t)| (p.as_str().to_string(), t)),
            )
            .collect();
        let tables = std::iter::once((ALL_REPOS, &self.all))
            .chain(self.repos.iter().map(|(name, rule)| (name.as_str(), rule)))
            .chain(groups.iter().map(|(n, t)| (n.as_str(), *t)));
        let mut named = Vec::new();
        for (table, rule) in tables {
            let Some((master, slaves)) = &rule.mirror.servers else {
                continue;
            };
            named.push(NamedServer {
                table: table.to_string(),
                server: master.clone(),
                master: true,
            });
            for slave in slaves.iter().filter(|s| *s != master) {
                named.push(NamedServer {
                    table: table.to_string(),
                    server: slave.clone(),
                    master: false,
                });
            }
        }
        named
    }

    /// The repo's upstream, when it is a pull mirror.
    pub(crate) fn upstream(&self, repo: &RepoName) -> Option<&Upstream> {
        self.repos.get(repo).and_then(|r| r.upstream.as_ref())
    }

    /// The repo's push mirrors.
    // Used by the push-mirror engine, which is being built on another branch.
    #[allow(dead_code)]
    pub(crate) fn downstreams(&self, repo: &RepoName) -> &[Downstream] {
        self.repos
            .get(repo)
            .map_or(&[], |r| r.downstream.as_slice())
    }

    /// The URLs of the repo's push mirrors.
    pub(crate) fn downstream_urls(&self, repo: &RepoName) -> Vec<&str> {
        self.downstreams(repo)
            .iter()
            .map(|d| d.url.url.as_str())
            .collect()
    }

    /// The repos named in the file: in a table of their own, or in a repo group that has
    /// one (as gitolite creates the members of `repo @group`).
    pub(crate) fn named_repos(&self) -> impl Iterator<Item = &RepoName> {
        let grouped = self
            .group_tables
            .keys()
            .filter_map(|g| self.repo_groups.get(g))
            .flatten();
        self.repos
            .keys()
            .chain(grouped)
            .collect::<BTreeSet<_>>()
            .into_iter()
    }

    /// Whether the file names `repo` (see [`named_repos`](Self::named_repos)).
    pub(crate) fn names(&self, repo: &RepoName) -> bool {
        self.repos.contains_key(repo)
            || self.group_tables.keys().any(|g| {
                self.repo_groups
                    .get(g)
                    .is_some_and(|set| set.contains(repo))
            })
    }

    /// Drops `repo`'s own table and its places in repo groups (a deleted repo's, which must
    /// not be recreated).
    pub(crate) fn forget_repo(&mut self, repo: &RepoName) {
        self.repos.remove(repo);
        for set in self.repo_groups.values_mut() {
            set.remove(repo);
        }
    }

    /// Gives `to` the table and repo groups of `from` (a renamed repo's rules follow it),
    /// unless the file names `to` itself; `from`'s apply to nothing afterwards. Returns
    /// whether they moved.
    pub(crate) fn follow_rename(&mut self, from: &RepoName, to: &RepoName) -> bool {
        let named_to = self.names(to);
        let own = self.repos.remove(from);
        let mut grouped = false;
        for set in self.repo_groups.values_mut() {
            if set.remove(from) {
                grouped = true;
                if !named_to {
                    set.insert(to.clone());
                }
            }
        }
        if named_to {
            return false;
        }
        if let Some(rule) = own {
            self.repos.insert(to.clone(), rule);
            return true;
        }
        grouped
    }

    /// The text `gitmirror init` writes for a new server.
    pub(crate) fn template() -> &'static str {
        r#"# repos.toml: who may do what to which repo, and which server masters it.
# Normally the same file on every server. Apply changes with `gitmirror compile`.
#
# [groups]
# devs = ["alice", "bob"]
#
# [repos."@all"]                 # applies to every repo, named here or not
# mirror.master = "server1"
# mirror.slaves = ["server2", "server3"]
# mirror.redirect = true         # users may push to a slave; it carries the push to the master
#
# [repos.testing]
# "RW+" = ["alice"]              # push, rewind, delete, move tags
# RW = ["@devs"]                 # push fast-forwards and new refs
# R = ["carol"]                  # clone and fetch
"#
    }
}

/// The letters some rule of the file makes its own: `C` (by an `RW...C` rule) and `D`.
struct Letters {
    create: bool,
    delete: bool,
}

fn used_letters(raw: &RawRules) -> Letters {
    let perms: Vec<String> = raw
        .repos
        .values()
        .flat_map(|r| &r.rules)
        .filter_map(|t| grant::split(t.get_ref()).ok().map(|p| p.perm.to_string()))
        .collect();
    Letters {
        create: perms.iter().any(|p| p.starts_with("RW") && p.contains('C')),
        delete: perms.iter().any(|p| p.starts_with("RW") && p.contains('D')),
    }
}

/// Refuses a deny rule that can never decide: an earlier rule of the same table, for every
/// ref, names the same users (or everyone) and allows every letter any check can ask, so
/// it decides first whatever is asked.
fn check_denies(
    src: &Source,
    repo: &str,
    grants: &[Grant],
    letters: &Letters,
) -> Result<(), ConfigError> {
    let mut needed = vec!['R', 'W', '+'];
    if letters.create {
        needed.push('C');
    }
    if letters.delete {
        needed.push('D');
    }
    for (i, deny) in grants.iter().enumerate().filter(|(_, g)| g.is_deny()) {
        let shadow = grants[..i].iter().find(|g| {
            g.refs.is_empty()
                && !g.is_deny()
                && (g.who == Member::Everyone || g.who == deny.who)
                && needed.iter().all(|l| g.has(*l))
        });
        if let Some(g) = shadow {
            return Err(src.error(
                deny.seq..deny.seq,
                format!(
                    "{repo}: deny rule \"{}\" can never decide: the rule before it on line {} (\"{}\") already allows everything to them; put the deny rule first",
                    deny.text(),
                    g.line,
                    g.text()
                ),
            ));
        }
    }
    Ok(())
}

fn mirror_part(
    src: &Source,
    repo: &str,
    raw: &Spanned<RawMirror>,
) -> Result<MirrorPart, ConfigError> {
    let m = raw.get_ref();
    let Some(master) = &m.master else {
        if m.slaves.is_some() {
            return Err(src.error(
                raw.span(),
                format!("mirror of repo {repo}: mirror.slaves needs mirror.master = \"server1\""),
            ));
        }
        return Ok(MirrorPart {
            servers: None,
            sync: m.sync,
            redirect: m.redirect,
        });
    };
    let server = |s: &Spanned<String>, what: &str| {
        AccountName::parse(s.get_ref()).map_err(|e| {
            src.error(
                s.span(),
                format!("{what} of repo {repo}: {e}; expected a server's hostname"),
            )
        })
    };
    let master_name = server(master, "mirror.master")?;
    let mut slaves = Vec::new();
    for s in m.slaves.iter().flatten() {
        let slave = server(s, "mirror.slaves")?;
        if slave == master_name || slaves.contains(&slave) {
            return Err(src.error(
                s.span(),
                format!("mirror.slaves of repo {repo}: {slave} is listed twice or is the master"),
            ));
        }
        slaves.push(slave);
    }
    Ok(MirrorPart {
        servers: Some((master_name, slaves)),
        sync: m.sync,
        redirect: m.redirect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[groups]
devs = ["alice", "bob"]

[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2", "server3"]
R = ["auditor"]

[repos.testing]
"RW+" = ["alice"]
RW = ["@devs"]
R = ["carol"]

[repos."site-b/tools"]
RW = ["@devs"]
mirror.master = "server2"
mirror.slaves = ["server1"]

[repos.public]
R = ["@all"]
mirror.sync = true
mirror.redirect = true
"#;

    fn rules(text: &str) -> Result<Rules, ConfigError> {
        Rules::from_source(&Source::from_text("repos.toml", text))
    }

    fn user(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn access_levels_combine() {
        let r = rules(EXAMPLE).unwrap();
        assert_eq!(r.access(&user("alice"), &repo("testing")), Access::Rewind);
        assert_eq!(r.access(&user("bob"), &repo("testing")), Access::Write);
        assert_eq!(r.access(&user("carol"), &repo("testing")), Access::Read);
        assert_eq!(r.access(&user("mallory"), &repo("testing")), Access::None);
        assert_eq!(r.access(&user("auditor"), &repo("anything")), Access::Read);
        assert_eq!(r.access(&user("mallory"), &repo("public")), Access::Read);
        assert_eq!(r.access(&user("bob"), &repo("site-b/tools")), Access::Write);
    }

    #[test]
    fn mirror_settings_per_repo_override_all() {
        let r = rules(EXAMPLE).unwrap();
        let t = r.mirror(&repo("testing")).unwrap();
        assert_eq!(t.master, user("server1"));
        assert_eq!(t.slaves, vec![user("server2"), user("server3")]);
        let s = r.mirror(&repo("site-b/tools")).unwrap();
        assert_eq!(s.master, user("server2"));
        assert_eq!(s.slaves, vec![user("server1")]);
        assert_eq!(s.sync, None);
        assert_eq!(s.redirect, None);
        // A table with only `sync` and `redirect` keeps @all's servers.
        let p = r.mirror(&repo("public")).unwrap();
        assert_eq!(p.master, user("server1"));
        assert_eq!(p.sync, Some(true));
        assert_eq!(p.redirect, Some(true));
        assert_eq!(r.named_repos().count(), 3);
    }

    #[test]
    fn empty_file_grants_nothing() {
        let r = rules("").unwrap();
        assert_eq!(r.access(&user("alice"), &repo("x")), Access::None);
        assert!(r.mirror(&repo("x")).is_none());
        rules(Rules::template()).unwrap();
    }

    const ORDERED: &str = r#"
[groups]
devs = ["alice", "bob", "carol"]
leads = ["alice"]

[repo-groups]
web = ["web/site", "web/api"]

[repos."@all"]
R = ["auditor"]

[repos.testing]
"RW+" = ["@leads"]
rules = [
  "- master = bob",
  "RW = @devs",
  "RW refs/tags/v[0-9] = carol",
  "- refs/heads/secret = carol",
]

[repos.strict]
deny_rules = true
rules = ["- refs/heads/secret = carol", "RW+ = @devs"]

[repos."@web"]
RW = ["carol"]
mirror.master = "server2"

[repos."users/CREATOR/*"]
C = ["@devs"]
RW = ["WRITERS"]
R = ["READERS"]
"#;

    fn ask(r: &Rules, u: &str, repo_: &str, a: Ask, refname: Option<&str>) -> bool {
        r.decide(&user(u), &repo(repo_), a, refname, &RepoRoles::default())
            .allowed
    }

    #[test]
    fn the_first_matching_rule_decides_in_the_order_written() {
        let r = rules(ORDERED).unwrap();
        let main = Some("refs/heads/master");
        // bob is denied master by the rule before the one that lets devs write.
        assert!(!ask(&r, "bob", "testing", Ask::Write, main));
        assert!(ask(
            &r,
            "bob",
            "testing",
            Ask::Write,
            Some("refs/heads/dev")
        ));
        // alice's RW+ comes first.
        assert!(ask(&r, "alice", "testing", Ask::Rewind, main));
        assert!(!ask(
            &r,
            "bob",
            "testing",
            Ask::Rewind,
            Some("refs/heads/dev")
        ));
        // A repo-level check skips deny rules that name refs...
        assert_eq!(r.access(&user("bob"), &repo("testing")), Access::Write);
        // ...unless the repo says otherwise: carol is then refused the whole repo.
        assert_eq!(r.access(&user("carol"), &repo("strict")), Access::None);
        assert!(ask(&r, "bob", "strict", Ask::Rewind, None));
        let d = r.decide(
            &user("bob"),
            &repo("testing"),
            Ask::Write,
            main,
            &RepoRoles::default(),
        );
        assert_eq!(d.by.unwrap().text(), "- refs/heads/master = bob");
        // With no rule deciding, denied.
        let none = r.decide(
            &user("mallory"),
            &repo("testing"),
            Ask::Read,
            None,
            &RepoRoles::default(),
        );
        assert!(!none.allowed && none.by.is_none());
    }

    #[test]
    fn repo_groups_and_patterns_bring_their_rules_and_mirror_settings() {
        let r = rules(ORDERED).unwrap();
        assert_eq!(r.access(&user("carol"), &repo("web/site")), Access::Write);
        assert_eq!(r.access(&user("carol"), &repo("web/other")), Access::None);
        assert_eq!(r.mirror(&repo("web/api")).unwrap().master, user("server2"));
        assert!(r.names(&repo("web/site")));
        // Anyone in C may create under their own name, nowhere else.
        assert!(ask(&r, "bob", "users/bob/x", Ask::CreateRepo, None));
        assert!(!ask(&r, "bob", "users/alice/x", Ask::CreateRepo, None));
        assert!(!ask(
            &r,
            "mallory",
            "users/mallory/x",
            Ask::CreateRepo,
            None
        ));
        let roles = RepoRoles {
            creator: Some(user("bob")),
            roles: vec![("READERS".into(), vec![user("dave")])],
        };
        let repo_ = repo("users/bob/x");
        assert_eq!(r.access_with(&user("bob"), &repo_, &roles), Access::Rewind);
        assert_eq!(r.access_with(&user("dave"), &repo_, &roles), Access::Read);
        assert_eq!(r.access_with(&user("carol"), &repo_, &roles), Access::None);
        // Not created by a user: CREATOR stands for nobody.
        assert_eq!(r.access(&user("bob"), &repo_), Access::None);
    }

    #[test]
    fn create_and_delete_letters_count_only_where_a_rule_uses_them() {
        let r = rules(
            "[repos.a]\nrules = [\"RW+ = alice\", \"RWC = bob\"]\n[repos.b]\nRW = [\"bob\"]\n",
        )
        .unwrap();
        assert!(!ask(&r, "alice", "a", Ask::CreateRef, Some("refs/heads/x")));
        assert!(ask(&r, "bob", "a", Ask::CreateRef, Some("refs/heads/x")));
        assert!(ask(&r, "bob", "b", Ask::CreateRef, Some("refs/heads/x")));
        assert!(!ask(&r, "bob", "b", Ask::DeleteRef, Some("refs/heads/x")));
        // An index written now reads back deciding the same.
        let back = crate::config::rules_index::read_all(&r.to_index().unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn deleted_and_renamed_group_members_are_not_recreated_and_their_rules_follow() {
        let mut r = rules(ORDERED).unwrap();
        r.forget_repo(&repo("web/site"));
        assert!(!r.names(&repo("web/site")));
        assert!(!r.named_repos().any(|n| n.as_str() == "web/site"));
        assert!(r.named_repos().any(|n| n.as_str() == "web/api"));
        let mut r = rules(ORDERED).unwrap();
        assert!(r.follow_rename(&repo("web/site"), &repo("web/new")));
        assert!(!r.names(&repo("web/site")) && r.names(&repo("web/new")));
        assert_eq!(r.access(&user("carol"), &repo("web/new")), Access::Write);
        // Patterns never reach the admin repo.
        let p = rules("[repos.\"*\"]\nC = [\"@all\"]\nR = [\"@all\"]\n").unwrap();
        assert_eq!(p.access(&user("mallory"), &repo("anything")), Access::Read);
        let admin = repo(crate::proto::ADMIN_REPO);
        assert_eq!(
            p.access_with(
                &user("mallory"),
                &admin,
                &RepoRoles {
                    creator: Some(user("mallory")),
                    roles: vec![]
                }
            ),
            Access::None
        );
    }

    #[test]
    fn mistakes_are_located() {
        for (text, line, needle) in [
            (
                "[repos.testing]\nRW = [\"@nope\"]\n",
                2,
                "unknown group @nope",
            ),
            ("[repos.testing]\n\nRWX = [\"a\"]\n", 3, "unknown field"),
            ("[repos.\"../x\"]\nR = [\"a\"]\n", 1, "repo"),
            ("[repos.x]\nR = [\"a b\"]\n", 2, "expected a user name"),
            ("[groups]\nall = [\"a\"]\n", 2, "reserved"),
            ("[groups]\ndevs = [\"@x\"]\n", 2, "do not nest"),
            (
                "[repos.x]\nmirror.slaves = [\"s2\"]\n",
                2,
                "needs mirror.master",
            ),
            (
                "[repos.x]\nmirror.master = \"s1\"\nmirror.slaves = [\"s1\"]\n",
                3,
                "twice or is the master",
            ),
            ("[repos.x]\nR = \"alice\"\n", 2, "expected a sequence"),
            (
                "[repos.x]\nrules = [\"RWX = a\"]\n",
                2,
                "unknown permission",
            ),
            (
                "[repos.x]\nrules = [\"RW a(b = a\"]\n",
                2,
                "not a valid regular expression",
            ),
            ("[repos.x]\nrules = [\"RW master\"]\n", 2, "expected \"PERM"),
            ("[repos.x]\nRW = [\"CREATOR\"]\n", 2, "pattern's table"),
            ("[repos.x]\nC = [\"alice\"]\n", 2, "pattern's table"),
            ("[repos.\"u/../*\"]\n", 1, "pattern"),
            ("[repos.\"@nope\"]\n", 1, "unknown repo group"),
            ("[repo-groups]\nw = [\"../x\"]\n", 2, "repo group"),
            (
                "[repos.x]\n\"RW+\" = [\"@all\"]\nrules = [\"- = bob\"]\n",
                3,
                "can never decide",
            ),
            ("[repos.x.git]\n", 1, ""),
        ] {
            let err = rules(text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("repos.toml:{line}: ")), "{err}");
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }
}
