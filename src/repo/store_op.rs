//! The operations that move whole repos: delete (into the trash), restore, rename, and
//! purge. A master applies one to its own store, then sends the same operation, with its
//! epoch, to each slave, which applies it when it agrees the sender masters the repo.
//!
//! Every operation is idempotent where it lands: applied twice (a retry after an answer was
//! lost), the second time finds its work done and succeeds without touching anything.

use std::fmt;

use super::mastership::{self, Admission};
use super::trash::{BadEntry, TrashEntry};
use super::wild;
use super::{Store, StoreError};
use crate::config::rules::{ROLES, RepoRoles};
use crate::names::{AccountName, NameError, RepoName};

/// One operation on a server's store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum StoreOp {
    /// Move `repo` into the trash as `entry`.
    Trash {
        repo: RepoName,
        #[serde(with = "entry_text")]
        entry: TrashEntry,
    },
    /// Move the trash entry back as `repo`.
    Restore {
        #[serde(with = "entry_text")]
        entry: TrashEntry,
        repo: RepoName,
    },
    /// Rename a repo.
    Rename { from: RepoName, to: RepoName },
    /// Remove a trash entry for good.
    Purge {
        #[serde(with = "entry_text")]
        entry: TrashEntry,
    },
    /// Record a user-created repo's creator and roles (creating the repo where this server's
    /// own rules have a pattern for it, the sender as its master).
    Perms {
        repo: RepoName,
        creator: AccountName,
        roles: Vec<(String, Vec<AccountName>)>,
    },
}

mod entry_text {
    use super::TrashEntry;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(e: &TrashEntry, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(e)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TrashEntry, D::Error> {
        let raw = String::deserialize(d)?;
        TrashEntry::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Why an operation's words could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum BadOp {
    #[error("unknown store operation {0:?} (expected trash, restore, rename or purge)")]
    Unknown(String),
    #[error("{op} takes {expected}")]
    Arity {
        op: &'static str,
        expected: &'static str,
    },
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("{0}")]
    Entry(#[from] BadEntry),
    #[error("trash entry {entry} does not hold {repo}")]
    Mismatch { repo: RepoName, entry: String },
}

/// Why an operation was not applied here.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    /// The sender does not master the repo here (or this server holds no copy of it).
    #[error("{0}")]
    NotYours(String),
    /// Applying it would replace or lose something.
    #[error("{0}")]
    Unsafe(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What applying an operation did here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// It moved or removed a repo.
    Done,
    /// Its work was already done here (or there was nothing of it here).
    Nothing,
}

impl StoreOp {
    /// The operation's words after the verb, as the peer's forced command reads them (names
    /// are validated, so none needs quoting).
    pub(crate) fn words(&self) -> Vec<String> {
        let q = |s: &dyn fmt::Display| s.to_string();
        match self {
            StoreOp::Trash { repo, entry } => vec!["trash".into(), q(repo), q(entry)],
            StoreOp::Restore { entry, repo } => vec!["restore".into(), q(entry), q(repo)],
            StoreOp::Rename { from, to } => vec!["rename".into(), q(from), q(to)],
            StoreOp::Purge { entry } => vec!["purge".into(), q(entry)],
            StoreOp::Perms {
                repo,
                creator,
                roles,
            } => {
                let mut w = vec!["perms".into(), q(repo), q(creator)];
                for (role, users) in roles {
                    let users: Vec<&str> = users.iter().map(AccountName::as_str).collect();
                    w.push(format!("{role}={}", users.join(",")));
                }
                w
            }
        }
    }

    /// Reads the words [`Self::words`] wrote (unquoted).
    pub(crate) fn parse(words: &[&str]) -> Result<Self, BadOp> {
        let repo = |s: &str| RepoName::parse(s);
        let entry = |s: &str| TrashEntry::parse(s);
        match words {
            ["trash", r, e] => {
                let (repo, entry) = (repo(r)?, entry(e)?);
                if entry.repo() != &repo {
                    return Err(BadOp::Mismatch {
                        repo,
                        entry: entry.to_string(),
                    });
                }
                Ok(StoreOp::Trash { repo, entry })
            }
            ["trash", ..] => Err(BadOp::Arity {
                op: "trash",
                expected: "a repo and a trash entry",
            }),
            ["restore", e, r] => Ok(StoreOp::Restore {
                entry: entry(e)?,
                repo: repo(r)?,
            }),
            ["restore", ..] => Err(BadOp::Arity {
                op: "restore",
                expected: "a trash entry and a repo",
            }),
            ["rename", f, t] => Ok(StoreOp::Rename {
                from: repo(f)?,
                to: repo(t)?,
            }),
            ["rename", ..] => Err(BadOp::Arity {
                op: "rename",
                expected: "two repos",
            }),
            ["purge", e] => Ok(StoreOp::Purge { entry: entry(e)? }),
            ["purge", ..] => Err(BadOp::Arity {
                op: "purge",
                expected: "one trash entry",
            }),
            ["perms", r, c, roles @ ..] => {
                let mut parsed = Vec::new();
                for word in roles {
                    let Some((role, users)) = word.split_once('=') else {
                        return Err(BadOp::Arity {
                            op: "perms",
                            expected: "a repo, its creator and ROLE=user,user words",
                        });
                    };
                    if !ROLES.contains(&role) {
                        return Err(BadOp::Unknown(format!("perms role {role}")));
                    }
                    let users = users
                        .split(',')
                        .filter(|u| !u.is_empty())
                        .map(AccountName::parse)
                        .collect::<Result<Vec<_>, _>>()?;
                    parsed.push((role.to_string(), users));
                }
                Ok(StoreOp::Perms {
                    repo: repo(r)?,
                    creator: AccountName::parse(c)?,
                    roles: parsed,
                })
            }
            ["perms", ..] => Err(BadOp::Arity {
                op: "perms",
                expected: "a repo and its creator",
            }),
            [op, ..] => Err(BadOp::Unknown(op.chars().take(40).collect())),
            [] => Err(BadOp::Unknown(String::new())),
        }
    }

    /// The repo names whose mirror pushes must wait until a slave has applied this, so that
    /// a push never recreates what it is about to move.
    pub(crate) fn names(&self) -> Vec<&RepoName> {
        match self {
            StoreOp::Trash { repo, .. }
            | StoreOp::Restore { repo, .. }
            | StoreOp::Perms { repo, .. } => vec![repo],
            StoreOp::Rename { from, to } => vec![from, to],
            StoreOp::Purge { .. } => vec![],
        }
    }

    /// What the operation is about, for ordering: a slave applies operations that share any
    /// of these in the order they were made; others do not wait for each other.
    pub(crate) fn keys(&self) -> Vec<String> {
        match self {
            StoreOp::Trash { repo, entry } | StoreOp::Restore { entry, repo } => {
                vec![repo.to_string(), entry.to_string()]
            }
            StoreOp::Rename { from, to } => vec![from.to_string(), to.to_string()],
            StoreOp::Purge { entry } => vec![entry.to_string()],
            StoreOp::Perms { repo, .. } => vec![repo.to_string()],
        }
    }

    /// The repo that holds the content afterwards, which its master pushes to a slave once
    /// the slave has applied the operation.
    pub(crate) fn result(&self) -> Option<&RepoName> {
        match self {
            StoreOp::Restore { repo, .. } | StoreOp::Perms { repo, .. } => Some(repo),
            StoreOp::Rename { to, .. } => Some(to),
            _ => None,
        }
    }

    /// Whether the operation's effect stands in `store`.
    pub(crate) fn done_in(&self, store: &Store) -> bool {
        match self {
            StoreOp::Trash { repo, entry } => {
                store.find_trashed(entry).is_some() || store.find(repo).is_none()
            }
            StoreOp::Restore { entry, repo } => {
                store.find(repo).is_some() && store.find_trashed(entry).is_none()
            }
            StoreOp::Rename { from, to } => store.find(to).is_some() && store.find(from).is_none(),
            StoreOp::Purge { entry } => store.find_trashed(entry).is_none(),
            StoreOp::Perms { repo, .. } => store
                .find(repo)
                .and_then(|p| wild::roles(&p).ok())
                .is_some_and(|now| now == self.roles().unwrap_or_default()),
        }
    }

    /// The creator and roles a `perms` operation records.
    pub(crate) fn roles(&self) -> Option<RepoRoles> {
        match self {
            StoreOp::Perms { creator, roles, .. } => Some(RepoRoles {
                creator: Some(creator.clone()),
                roles: roles.clone(),
            }),
            _ => None,
        }
    }

    /// One line for logs, status and the operator: `delete site/x (trash entry ...)`.
    pub(crate) fn describe(&self) -> String {
        match self {
            StoreOp::Trash { repo, entry } => format!("delete {repo} (into the trash as {entry})"),
            StoreOp::Restore { entry, repo } => format!("restore {entry} as {repo}"),
            StoreOp::Rename { from, to } => format!("rename {from} to {to}"),
            StoreOp::Purge { entry } => format!("purge {entry} from the trash"),
            StoreOp::Perms {
                repo,
                creator,
                roles,
            } => {
                let mut out = format!("perms {repo} (creator {creator}");
                for (role, users) in roles {
                    let users: Vec<&str> = users.iter().map(AccountName::as_str).collect();
                    out.push_str(&format!(", {role} {}", users.join(" ")));
                }
                out.push(')');
                out
            }
        }
    }

    /// Applies the operation a peer, `sender`, sent at `epoch`, on this server, `this`: only
    /// where this server's own settings for the repo make `sender` its master, and never over
    /// anything. A claim that beats the master known here (a promotion this server has not
    /// heard of) is recorded first, as a mirror push from it would be; a purge, which cannot
    /// be undone, is taken only from the master known here. `before` runs once the operation
    /// is admitted, before anything moves (to record what is about to happen).
    ///
    /// `Nothing` when the repo (or entry) is not here: whether that name's record may change
    /// is for the caller to decide, from this server's own rules.
    pub(crate) fn apply_from(
        &self,
        store: &Store,
        sender: &AccountName,
        this: &AccountName,
        epoch: u64,
        before: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<Applied, OpError> {
        // The copy whose settings decide: the repo, or the trashed repo.
        let (path, what) = match self {
            StoreOp::Trash { repo, .. } => match store.find(repo) {
                Some(p) => (p, repo.to_string()),
                None => return Ok(Applied::Nothing),
            },
            StoreOp::Rename { from, .. } => match store.find(from) {
                Some(p) => (p, from.to_string()),
                None => return Ok(Applied::Nothing),
            },
            StoreOp::Perms { repo, .. } => match store.find(repo) {
                Some(p) => (p, repo.to_string()),
                None => return Ok(Applied::Nothing),
            },
            StoreOp::Restore { entry, .. } | StoreOp::Purge { entry } => {
                match store.find_trashed(entry) {
                    Some(p) => (p, entry.to_string()),
                    None => return Ok(Applied::Nothing),
                }
            }
        };
        let refuse = |words: String| {
            OpError::NotYours(format!(
                "{this} refuses to {} from {sender}: {words}",
                self.describe()
            ))
        };
        let Some(here) = mastership::mastership(&path)? else {
            return Err(refuse(format!("{what} is not mirrored here")));
        };
        match here.admit(sender, this, epoch) {
            Admission::Master { .. } => {}
            Admission::Refused(words) => return Err(refuse(words)),
            Admission::Handover(_) if matches!(self, StoreOp::Purge { .. }) => {
                return Err(refuse(crate::proto::claim_words(&here.master, here.epoch)));
            }
            Admission::Handover(_) => {
                // Decided again under the config's lock, as a mirror push's handover is.
                let mut refused = None;
                mastership::update_mastership(&path, |now| {
                    let now = now?;
                    match now.admit(sender, this, epoch) {
                        Admission::Handover(new) => Some(new),
                        Admission::Master { .. } => None,
                        Admission::Refused(words) => {
                            refused = Some(words);
                            None
                        }
                    }
                })?;
                if let Some(words) = refused {
                    return Err(refuse(words));
                }
            }
        }
        self.make_room(store, this)?;
        before()?;
        self.apply_here(store)
    }

    /// On a slave, the name a rename or restore lands on may hold an empty repo that this
    /// server's own compile created from a `repos.toml` that already names it (an admin push
    /// that arrived before the operation): that one goes to the trash. Any repo with refs
    /// stays, and the operation is refused.
    fn make_room(&self, store: &Store, this: &AccountName) -> Result<(), OpError> {
        let (target, what) = match self {
            StoreOp::Rename { to, .. } => (to, "renaming"),
            StoreOp::Restore { repo, .. } => (repo, "restoring"),
            _ => return Ok(()),
        };
        let Some(path) = store.find(target) else {
            return Ok(());
        };
        let empty = git2::Repository::open_bare(&path)
            .and_then(|r| Ok(r.references()?.next().is_none()))
            .unwrap_or(false);
        if !empty {
            return Err(OpError::Unsafe(format!(
                "{this} has a repo {target} with refs already; {what} onto it would replace it"
            )));
        }
        store.move_to_trash(
            target,
            &TrashEntry::new(target, std::time::SystemTime::now()),
        )?;
        Ok(())
    }

    /// Applies the operation to this server's own store (its master's side; checks made).
    pub(crate) fn apply_here(&self, store: &Store) -> Result<Applied, OpError> {
        if self.done_in(store) {
            return Ok(Applied::Nothing);
        }
        match self {
            StoreOp::Trash { repo, entry } => store.move_to_trash(repo, entry).map(drop),
            StoreOp::Restore { entry, repo } => store.restore(entry, repo).map(drop),
            StoreOp::Rename { from, to } => store.rename(from, to).map(drop),
            StoreOp::Purge { entry } => store.purge(entry).map(drop),
            StoreOp::Perms { repo, .. } => {
                let path = store.find(repo).ok_or_else(|| StoreError::Missing {
                    what: "repo",
                    name: repo.to_string(),
                })?;
                let roles = self.roles().unwrap_or_default();
                return wild::save(&path, &roles)
                    .map(|()| Applied::Done)
                    .map_err(|e| OpError::Unsafe(format!("{repo}: {e}")));
            }
        }
        .map_err(|e| match e {
            StoreError::Exists { what, name } => OpError::Unsafe(format!(
                "{what} {name} exists already; it would be replaced"
            )),
            e => OpError::Store(e),
        })?;
        Ok(Applied::Done)
    }

    /// Whether the operation's effect stands in `store` (for a command killed before it
    /// marked its operation ready): stricter than [`Self::done_in`], since a delete counts
    /// only once the entry is in the trash, not merely when the repo is missing.
    pub(crate) fn stands_in(&self, store: &Store) -> bool {
        match self {
            StoreOp::Trash { entry, .. } => store.find_trashed(entry).is_some(),
            _ => self.done_in(store),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MirrorRule;
    use crate::invocation::Invocation;
    use std::path::Path;
    use std::time::SystemTime;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn server(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    fn store_with(repos: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let inv = Invocation::new(Path::new("/usr/bin/gitmirror"), None).unwrap();
        let rule = MirrorRule {
            master: server("one"),
            slaves: vec![server("two")],
            sync: None,
            redirect: None,
        };
        for r in repos {
            store.create(&name(r), &inv, Some(&rule)).unwrap();
        }
        (dir, store)
    }

    #[test]
    fn words_round_trip() {
        let entry = TrashEntry::new(&name("a/b"), SystemTime::now());
        for op in [
            StoreOp::Trash {
                repo: name("a/b"),
                entry: entry.clone(),
            },
            StoreOp::Restore {
                entry: entry.clone(),
                repo: name("c"),
            },
            StoreOp::Rename {
                from: name("a/b"),
                to: name("d/e"),
            },
            StoreOp::Purge { entry },
            StoreOp::Perms {
                repo: name("users/alice/x"),
                creator: server("alice"),
                roles: vec![("READERS".into(), vec![server("bob"), server("carol")])],
            },
        ] {
            let words = op.words();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            assert_eq!(StoreOp::parse(&words).unwrap(), op);
            let json = serde_json::to_string(&op).unwrap();
            assert_eq!(serde_json::from_str::<StoreOp>(&json).unwrap(), op);
        }
        assert!(StoreOp::parse(&["remove", "x"]).is_err());
        assert!(StoreOp::parse(&["rename", "x"]).is_err());
        assert!(StoreOp::parse(&["trash", "../x", "x-20261202T101500Z"]).is_err());
    }

    #[test]
    fn only_the_master_moves_a_slaves_repo_and_twice_is_once() {
        let ok = || Ok(());
        let (_d, store) = store_with(&["a", "b"]);
        let (one, two, three) = (server("one"), server("two"), server("three"));
        let entry = TrashEntry::new(&name("a"), SystemTime::now());
        let trash = StoreOp::Trash {
            repo: name("a"),
            entry: entry.clone(),
        };
        assert!(matches!(
            trash.apply_from(&store, &three, &two, 0, ok),
            Err(OpError::NotYours(_))
        ));
        assert!(store.find(&name("a")).is_some());
        assert_eq!(
            trash.apply_from(&store, &one, &two, 0, ok).unwrap(),
            Applied::Done
        );
        assert_eq!(
            trash.apply_from(&store, &one, &two, 0, ok).unwrap(),
            Applied::Nothing
        );
        assert!(store.find_trashed(&entry).is_some());
        let rename = StoreOp::Rename {
            from: name("b"),
            to: name("a"),
        };
        assert_eq!(
            rename.apply_from(&store, &one, &two, 0, ok).unwrap(),
            Applied::Done
        );
        // Restoring over the repo now named a, which has a ref, is refused, and changes
        // nothing.
        let a = git2::Repository::open_bare(store.find(&name("a")).unwrap()).unwrap();
        let tree = a.treebuilder(None).unwrap().write().unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let tree = a.find_tree(tree).unwrap();
        a.commit(Some("refs/heads/main"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        let restore = StoreOp::Restore {
            entry: entry.clone(),
            repo: name("a"),
        };
        let r = restore.apply_from(&store, &one, &two, 0, ok);
        assert!(matches!(r, Err(OpError::Unsafe(_))), "{r:?}");
        assert!(store.find_trashed(&entry).is_some());
        // An empty repo in the way (compiled here from a repos.toml that names it already)
        // goes to the trash, and the restore lands.
        store
            .create(
                &name("c"),
                &Invocation::new(Path::new("/usr/bin/gitmirror"), None).unwrap(),
                None,
            )
            .unwrap();
        let onto_empty = StoreOp::Restore {
            entry: entry.clone(),
            repo: name("c"),
        };
        assert_eq!(
            onto_empty.apply_from(&store, &one, &two, 0, ok).unwrap(),
            Applied::Done
        );
        assert!(store.find_trashed(&entry).is_none());
        assert_eq!(
            store.trash_list().unwrap().len(),
            1,
            "the empty c is in the trash"
        );
    }
}
