//! The repos that left this server's store by `delete` or `rename` while `repos.toml` may still
//! name them (`state/gone.json`).
//!
//! `compile` creates every repo `repos.toml` names. Without this record it would recreate a
//! deleted repo empty, and a renamed one empty under its old name with the rules left behind.
//! With it, `compile` creates neither, lets a renamed repo's rules follow it, and says what to
//! edit; once `repos.toml` no longer names the old name, the entry has done its work and is
//! dropped, so the name can be used again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::trash::TrashEntry;
use crate::fs::{Context, lock, write_atomic};
use crate::names::RepoName;

/// How a repo left the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "kebab-case")]
pub(crate) enum Gone {
    /// Deleted: in the trash as `entry`.
    Trashed { repo: RepoName, entry: String },
    /// Renamed to `to`.
    Renamed { repo: RepoName, to: RepoName },
}

impl Gone {
    /// The name that left.
    pub(crate) fn repo(&self) -> &RepoName {
        match self {
            Gone::Trashed { repo, .. } | Gone::Renamed { repo, .. } => repo,
        }
    }

    /// The record of a deletion.
    pub(crate) fn trashed(entry: &TrashEntry) -> Self {
        Gone::Trashed {
            repo: entry.repo().clone(),
            entry: entry.to_string(),
        }
    }
}

/// The record file of one server.
#[derive(Debug, Clone)]
pub(crate) struct GoneRecord {
    file: PathBuf,
}

impl GoneRecord {
    /// The record in the home's state directory.
    pub(crate) fn in_state(state_dir: &Path) -> Self {
        GoneRecord {
            file: state_dir.join("gone.json"),
        }
    }

    /// Every entry, oldest first. A file that cannot be read counts as empty, with a warning:
    /// the worst it costs is a deleted repo recreated empty, never data.
    pub(crate) fn load(&self) -> Vec<Gone> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %self.file.display(), error = %e, "unreadable record of deleted and renamed repos; ignored");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    /// Changes the record under its lock.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Vec<Gone>)) -> Result<(), StoreError> {
        let _lock = lock(&self.file.with_extension("lock"))?;
        let mut all = self.load();
        let before = all.clone();
        change(&mut all);
        if all != before {
            let bytes = serde_json::to_vec_pretty(&all).unwrap_or_default();
            write_atomic(&self.file, &bytes, 0o600)?;
        }
        Ok(())
    }

    /// Records that a repo left: a newer entry for the same name replaces an older one, and a
    /// repo that comes back (restored, or renamed onto the name) is no longer gone.
    ///
    /// Chains are followed: after `a` was renamed to `b`, renaming `b` to `c` makes `a`'s
    /// entry point at `c` (the table of `a` follows the repo, not a name it no longer has),
    /// and deleting `b` records `a` as deleted too (its table must not bring `b` back).
    pub(crate) fn record(&self, gone: Gone) -> Result<(), StoreError> {
        self.update(|all| {
            all.retain(|g| g.repo() != gone.repo());
            for g in all.iter_mut() {
                let Gone::Renamed { repo, to } = g else {
                    continue;
                };
                if to != gone.repo() {
                    continue;
                }
                *g = match &gone {
                    Gone::Renamed { to: next, .. } => Gone::Renamed {
                        repo: repo.clone(),
                        to: next.clone(),
                    },
                    Gone::Trashed { entry, .. } => Gone::Trashed {
                        repo: repo.clone(),
                        entry: entry.clone(),
                    },
                };
            }
            // A rename back onto an earlier name (a to b, then b to a) leaves nothing gone.
            all.retain(|g| !matches!(g, Gone::Renamed { repo, to } if repo == to));
            all.push(gone);
        })
    }

    /// Forgets `repo`: it is back in the store.
    pub(crate) fn back(&self, repo: &RepoName) -> Result<(), StoreError> {
        self.update(|all| all.retain(|g| g.repo() != repo))
    }

    /// Whether the file can be written (checked before a move, so that a move is never made
    /// without its record).
    pub(crate) fn writable(&self) -> Result<(), StoreError> {
        if let Some(dir) = self.file.parent() {
            crate::fs::ensure_dir(dir, 0o700)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file.with_extension("lock"))
            .map(drop)
            .at("cannot write", &self.file)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn renamed(a: &str, b: &str) -> Gone {
        Gone::Renamed {
            repo: name(a),
            to: name(b),
        }
    }

    #[test]
    fn chains_follow_the_repo() {
        let dir = tempfile::tempdir().unwrap();
        let record = GoneRecord::in_state(dir.path());
        record.record(renamed("a", "b")).unwrap();
        record.record(renamed("b", "c")).unwrap();
        assert_eq!(record.load(), [renamed("a", "c"), renamed("b", "c")]);
        record
            .record(Gone::Trashed {
                repo: name("c"),
                entry: "c-20261202T101500Z".into(),
            })
            .unwrap();
        let all = record.load();
        assert!(
            all.iter().all(|g| matches!(g, Gone::Trashed { .. })),
            "{all:?}"
        );
        assert_eq!(all.len(), 3);
        // Back and forth: nothing is gone.
        let dir = tempfile::tempdir().unwrap();
        let record = GoneRecord::in_state(dir.path());
        record.record(renamed("a", "b")).unwrap();
        record.record(renamed("b", "a")).unwrap();
        record.back(&name("a")).unwrap();
        assert_eq!(record.load(), [renamed("b", "a")]);
    }
}
