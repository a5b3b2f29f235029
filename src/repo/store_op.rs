//! The operations that move whole repos: delete (into the trash), restore, rename, and
//! purge. A master applies one to its own store, then sends the same operation, with its
//! epoch, to each slave, which applies it when it agrees the sender masters the repo.
//!
//! Every operation is idempotent where it lands: applied twice (a retry after an answer was
//! lost), the second time finds its work done and succeeds without touching anything.

use std::fmt;

use super::mastership::{self, Admission};
use super::trash::{BadEntry, TrashEntry};
use super::{Store, StoreError};
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
        }
    }

    /// Reads the words [`Self::words`] wrote (unquoted).
    pub(crate) fn parse(words: &[&str]) -> Result<Self, BadOp> {
        let repo = |s: &str| RepoName::parse(s);
        let entry = |s: &str| TrashEntry::parse(s);
        match words {
            ["trash", r, e] => Ok(StoreOp::Trash {
                repo: repo(r)?,
                entry: entry(e)?,
            }),
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
            [op, ..] => Err(BadOp::Unknown(op.chars().take(40).collect())),
            [] => Err(BadOp::Unknown(String::new())),
        }
    }

    /// The repo names whose mirror pushes must wait until a slave has applied this, so that
    /// a push never recreates what it is about to move.
    pub(crate) fn names(&self) -> Vec<&RepoName> {
        match self {
            StoreOp::Trash { repo, .. } | StoreOp::Restore { repo, .. } => vec![repo],
            StoreOp::Rename { from, to } => vec![from, to],
            StoreOp::Purge { .. } => vec![],
        }
    }

    /// The repo that holds the content afterwards, which its master pushes to a slave once
    /// the slave has applied the operation.
    pub(crate) fn result(&self) -> Option<&RepoName> {
        match self {
            StoreOp::Restore { repo, .. } => Some(repo),
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
        }
    }

    /// One line for logs, status and the operator: `delete site/x (trash entry ...)`.
    pub(crate) fn describe(&self) -> String {
        match self {
            StoreOp::Trash { repo, entry } => format!("delete {repo} (into the trash as {entry})"),
            StoreOp::Restore { entry, repo } => format!("restore {entry} as {repo}"),
            StoreOp::Rename { from, to } => format!("rename {from} to {to}"),
            StoreOp::Purge { entry } => format!("purge {entry} from the trash"),
        }
    }

    /// Applies the operation a peer, `sender`, sent at `epoch`, on this server, `this`: only
    /// where this server's own settings for the repo make `sender` its master (or a claim
    /// that beats the master known here), and never over anything. `before` runs once the
    /// operation is admitted, before anything moves (to record what is about to happen).
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
            StoreOp::Rename { from, to } => match (store.find(from), store.find(to)) {
                (Some(_), Some(_)) => {
                    return Err(OpError::Unsafe(format!(
                        "{this} has both {from} and {to}; renaming would replace {to}"
                    )));
                }
                (Some(p), None) => (p, from.to_string()),
                (None, _) => return Ok(Applied::Nothing),
            },
            StoreOp::Restore { entry, repo } => {
                match (store.find_trashed(entry), store.find(repo)) {
                    (Some(_), Some(_)) => {
                        return Err(OpError::Unsafe(format!(
                            "{this} has a repo {repo} already; restoring {entry} would replace it"
                        )));
                    }
                    (Some(p), None) => (p, entry.to_string()),
                    (None, _) => return Ok(Applied::Nothing),
                }
            }
            StoreOp::Purge { entry } => match store.find_trashed(entry) {
                Some(p) => (p, entry.to_string()),
                None => return Ok(Applied::Nothing),
            },
        };
        let Some(here) = mastership::mastership(&path)? else {
            return Err(OpError::NotYours(format!(
                "{this} refuses to {}: {what} is not mirrored here",
                self.describe()
            )));
        };
        if let Admission::Refused(words) = here.admit(sender, this, epoch) {
            return Err(OpError::NotYours(format!(
                "{this} refuses to {} from {sender}: {words}",
                self.describe()
            )));
        }
        before()?;
        self.apply_here(store)
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
        }?;
        Ok(Applied::Done)
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
        // Restoring over the repo now named a is refused, and changes nothing.
        let restore = StoreOp::Restore {
            entry: entry.clone(),
            repo: name("a"),
        };
        assert!(matches!(
            restore.apply_from(&store, &one, &two, 0, ok),
            Err(OpError::Unsafe(_))
        ));
        assert!(store.find_trashed(&entry).is_some());
    }
}
