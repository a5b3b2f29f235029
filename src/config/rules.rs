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

/// Who a rule names: one user, a group, or everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Member {
    User(AccountName),
    Group(String),
    Everyone,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RepoRule {
    grants: Vec<(Access, Member)>,
    mirror: MirrorPart,
    // Absent in an index compiled before external mirrors existed: read as none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream: Option<Upstream>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    downstream: Vec<Downstream>,
}

/// A validated `repos.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Rules {
    pub(super) groups: BTreeMap<String, BTreeSet<AccountName>>,
    pub(super) all: RepoRule,
    pub(super) repos: BTreeMap<RepoName, RepoRule>,
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
        let mut groups = BTreeMap::new();
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
            groups.insert(name.get_ref().clone(), set);
        }
        let mut rules = Rules {
            groups,
            ..Rules::default()
        };
        for (key, raw_repo) in &raw.repos {
            let rule = rules.repo_rule(src, key.get_ref(), raw_repo)?;
            if key.get_ref() == ALL_REPOS {
                rules.all = rule;
            } else {
                let name = RepoName::parse(key.get_ref()).map_err(|e| {
                    src.error(
                        key.span(),
                        format!("repo {e}; expected a name like \"site-b/tools\" or \"@all\""),
                    )
                })?;
                if key.get_ref().ends_with(".git") {
                    return Err(src.error(
                        key.span(),
                        format!("repo {:?}: write it without .git", key.get_ref()),
                    ));
                }
                rules.repos.insert(name, rule);
            }
        }
        Ok(rules)
    }

    fn repo_rule(&self, src: &Source, repo: &str, raw: &RawRepo) -> Result<RepoRule, ConfigError> {
        let mut grants = Vec::new();
        for (access, list) in [
            (Access::Rewind, &raw.rewind),
            (Access::Write, &raw.write),
            (Access::Read, &raw.read),
        ] {
            for who in list {
                grants.push((access, self.member(src, repo, access, who)?));
            }
        }
        let mirror = match &raw.mirror {
            None => MirrorPart::default(),
            Some(m) => mirror_part(src, repo, m)?,
        };
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
        if repo == ALL_REPOS {
            // One URL cannot serve every repo.
            if let Some(u) = &raw.upstream {
                return Err(src.error(
                    u.span(),
                    "@all: upstream is set per repo, never for every repo".to_string(),
                ));
            }
            if let Some(d) = raw.downstream.first() {
                return Err(src.error(
                    d.span(),
                    "@all: downstream is set per repo, never for every repo".to_string(),
                ));
            }
        }
        Ok(RepoRule {
            grants,
            mirror,
            upstream,
            downstream,
        })
    }

    fn member(
        &self,
        src: &Source,
        repo: &str,
        access: Access,
        who: &Spanned<String>,
    ) -> Result<Member, ConfigError> {
        let text = who.get_ref();
        if text == ALL_USERS {
            return Ok(Member::Everyone);
        }
        if let Some(group) = text.strip_prefix('@') {
            if self.groups.contains_key(group) {
                return Ok(Member::Group(group.to_string()));
            }
            return Err(src.error(
                who.span(),
                format!(
                    "{} of repo {repo}: unknown group {text}; expected a group defined under [groups], or @all",
                    access.label()
                ),
            ));
        }
        AccountName::parse(text).map(Member::User).map_err(|e| {
            src.error(
                who.span(),
                format!(
                    "{} of repo {repo}: {e}; expected a user name or @group",
                    access.label()
                ),
            )
        })
    }

    /// What `user` may do to `repo`: the highest grant from the repo's own rule and `@all`.
    pub(crate) fn access(&self, user: &AccountName, repo: &RepoName) -> Access {
        self.repos
            .get(repo)
            .into_iter()
            .chain(std::iter::once(&self.all))
            .flat_map(|rule| &rule.grants)
            .filter(|(_, who)| self.includes(who, user))
            .map(|(access, _)| *access)
            .max()
            .unwrap_or(Access::None)
    }

    fn includes(&self, who: &Member, user: &AccountName) -> bool {
        match who {
            Member::Everyone => true,
            Member::User(u) => u == user,
            Member::Group(g) => self.groups.get(g).is_some_and(|set| set.contains(user)),
        }
    }

    /// The mirror settings for `repo`: master and slaves from its own table if it names a
    /// master, else from `@all`; `sync` and `redirect` likewise, each on its own. `None` when
    /// no master is named.
    pub(crate) fn mirror(&self, repo: &RepoName) -> Option<MirrorRule> {
        let own = self.repos.get(repo).map(|r| &r.mirror);
        let (master, slaves) = own
            .and_then(|m| m.servers.clone())
            .or_else(|| self.all.mirror.servers.clone())?;
        let sync = own.and_then(|m| m.sync).or(self.all.mirror.sync);
        let redirect = own.and_then(|m| m.redirect).or(self.all.mirror.redirect);
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
        let tables = std::iter::once((ALL_REPOS, &self.all))
            .chain(self.repos.iter().map(|(name, rule)| (name.as_str(), rule)));
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

    /// The repos named in the file (not counting `@all`).
    pub(crate) fn named_repos(&self) -> impl Iterator<Item = &RepoName> {
        self.repos.keys()
    }

    /// Whether the file names `repo` in a table of its own.
    pub(crate) fn names(&self, repo: &RepoName) -> bool {
        self.repos.contains_key(repo)
    }

    /// Drops `repo`'s own table (a deleted repo's, which must not be recreated).
    pub(crate) fn forget_repo(&mut self, repo: &RepoName) {
        self.repos.remove(repo);
    }

    /// Gives `to` the table of `from` (a renamed repo's rules follow it), unless the file
    /// names `to` itself; `from`'s table applies to nothing afterwards. Returns whether it
    /// moved.
    pub(crate) fn follow_rename(&mut self, from: &RepoName, to: &RepoName) -> bool {
        let Some(rule) = self.repos.remove(from) else {
            return false;
        };
        if self.repos.contains_key(to) {
            return false;
        }
        self.repos.insert(to.clone(), rule);
        true
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
            ("[repos.x.git]\n", 1, ""),
        ] {
            let err = rules(text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("repos.toml:{line}: ")), "{err}");
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }
}
