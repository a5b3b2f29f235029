//! The trash: where `delete` puts a repo instead of removing it, and the moves that `rename`
//! and `restore` make, all inside the store.
//!
//! A deleted repo becomes `repositories/.trash/<name>-<time>.git`, the time in UTC to the
//! second (`20261202T101500Z`). The master chooses the time and every slave uses the same
//! entry name, so one name restores or purges the repo everywhere. The store's walk skips dot
//! names, so nothing in the trash is served, listed or pushed.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use thiserror::Error;

use super::{Store, StoreError};
use crate::fs::{Context, ensure_dir, rename_no_replace};
use crate::names::RepoName;

/// The trash directory under `repositories/`.
const TRASH_DIR: &str = ".trash";

/// Why a trash entry's name was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "{shown:?} is not a trash entry: expected NAME-YYYYMMDDTHHMMSSZ, as gitmirror trash list shows"
)]
pub(crate) struct BadEntry {
    shown: String,
}

/// One deleted repo in the trash: its name and when it was deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TrashEntry {
    repo: RepoName,
    stamp: String,
}

impl TrashEntry {
    /// The entry for `repo` deleted at `at`.
    pub(crate) fn new(repo: &RepoName, at: SystemTime) -> Self {
        // "2026-12-02T10:15:00Z" without the separators, which read badly in file names.
        let stamp: String = humantime::format_rfc3339_seconds(at)
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        TrashEntry {
            repo: repo.clone(),
            stamp,
        }
    }

    /// Parses an entry's name as [`fmt::Display`] writes it (an optional `.git` is dropped).
    pub(crate) fn parse(raw: &str) -> Result<Self, BadEntry> {
        let bad = || BadEntry {
            shown: raw.chars().take(80).collect(),
        };
        let name = raw.strip_suffix(".git").unwrap_or(raw);
        let (repo, stamp) = name.rsplit_once('-').ok_or_else(bad)?;
        let b = stamp.as_bytes();
        let stamp_ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        if !stamp_ok {
            return Err(bad());
        }
        let repo = RepoName::parse(repo).map_err(|_| bad())?;
        let entry = TrashEntry {
            repo,
            stamp: stamp.to_string(),
        };
        entry.time().ok_or_else(bad)?;
        Ok(entry)
    }

    /// The repo's name when it was deleted.
    pub(crate) fn repo(&self) -> &RepoName {
        &self.repo
    }

    /// When it was deleted (`None` for a stamp that names no real time).
    pub(crate) fn time(&self) -> Option<SystemTime> {
        let s = &self.stamp;
        let rfc = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &s[..4],
            &s[4..6],
            &s[6..8],
            &s[9..11],
            &s[11..13],
            &s[13..15]
        );
        humantime::parse_rfc3339(&rfc).ok()
    }

    /// How long ago it was deleted (zero for a time in the future).
    pub(crate) fn age(&self) -> Duration {
        self.time()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default()
    }

    fn relative_dir(&self) -> String {
        format!("{TRASH_DIR}/{self}.git")
    }
}

impl std::fmt::Display for TrashEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.repo, self.stamp)
    }
}

impl Store {
    /// The path of a trash entry, if it is there (and, like a repo, inside the store: a
    /// symlink planted in the trash never makes a purge remove anything outside it).
    pub(crate) fn find_trashed(&self, entry: &TrashEntry) -> Option<PathBuf> {
        let path = self.root.join(entry.relative_dir());
        let real = fs::canonicalize(&path).ok()?;
        let root = fs::canonicalize(&self.root).ok()?;
        if !real.starts_with(&root) || fs::symlink_metadata(&path).ok()?.file_type().is_symlink() {
            return None;
        }
        (real.join("HEAD").is_file() && real.join("objects").is_dir()).then_some(path)
    }

    /// Moves the repo `repo` into the trash as `entry`.
    pub(crate) fn move_to_trash(
        &self,
        repo: &RepoName,
        entry: &TrashEntry,
    ) -> Result<PathBuf, StoreError> {
        self.find(repo).ok_or_else(|| StoreError::Missing {
            what: "repo",
            name: repo.to_string(),
        })?;
        // The name itself moves (a symlink planted for it, too), never what it points to.
        let from = self.root.join(repo.relative_dir());
        self.move_dir(&from, &entry.relative_dir(), || entry.to_string())
    }

    /// Moves the trash entry `entry` back into the store as `repo`.
    pub(crate) fn restore(
        &self,
        entry: &TrashEntry,
        repo: &RepoName,
    ) -> Result<PathBuf, StoreError> {
        let from = self
            .find_trashed(entry)
            .ok_or_else(|| StoreError::Missing {
                what: "trash entry",
                name: entry.to_string(),
            })?;
        self.move_dir(&from, &repo.relative_dir(), || repo.to_string())
    }

    /// Renames the repo `from` to `to`.
    pub(crate) fn rename(&self, from: &RepoName, to: &RepoName) -> Result<PathBuf, StoreError> {
        self.find(from).ok_or_else(|| StoreError::Missing {
            what: "repo",
            name: from.to_string(),
        })?;
        let path = self.root.join(from.relative_dir());
        self.move_dir(&path, &to.relative_dir(), || to.to_string())
    }

    /// Moves the directory `from` to `relative` under the store, never over anything there.
    fn move_dir(
        &self,
        from: &std::path::Path,
        relative: &str,
        name: impl Fn() -> String,
    ) -> Result<PathBuf, StoreError> {
        let to = self.root.join(relative);
        let parent = to.parent().unwrap_or(&self.root);
        ensure_dir(parent, 0o700)?;
        let root = fs::canonicalize(&self.root).at("cannot resolve", &self.root)?;
        let real_parent = fs::canonicalize(parent).at("cannot resolve", parent)?;
        if !real_parent.starts_with(&root) {
            return Err(StoreError::Escapes { repo: name() });
        }
        if fs::symlink_metadata(&to).is_ok() {
            return Err(StoreError::Exists {
                what: "repo",
                name: name(),
            });
        }
        match rename_no_replace(from, &to) {
            Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(StoreError::Exists {
                    what: "repo",
                    name: name(),
                })
            }
            other => Ok(other.map(|()| to)?),
        }
    }

    /// Every entry in the trash, oldest first.
    pub(crate) fn trash_list(&self) -> Result<Vec<TrashEntry>, StoreError> {
        let trash = Store::new(self.root.join(TRASH_DIR));
        let mut found: Vec<TrashEntry> = trash
            .list()?
            .iter()
            .filter_map(|name| TrashEntry::parse(name.as_str()).ok())
            .collect();
        found.sort_by(|a, b| a.stamp.cmp(&b.stamp).then(a.repo.cmp(&b.repo)));
        Ok(found)
    }

    /// Removes a trash entry for good; `false` if it was not there.
    pub(crate) fn purge(&self, entry: &TrashEntry) -> Result<bool, StoreError> {
        let Some(path) = self.find_trashed(entry) else {
            return Ok(false);
        };
        fs::remove_dir_all(&path).at("cannot remove", &path)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocation::Invocation;
    use std::path::Path;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn entry_names_round_trip_and_refuse_what_is_not_one() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_206_500);
        let e = TrashEntry::new(&name("site-b/tools"), at);
        assert_eq!(e.to_string(), "site-b/tools-20261202T101500Z");
        assert_eq!(TrashEntry::parse(&e.to_string()).unwrap(), e);
        assert_eq!(
            TrashEntry::parse("site-b/tools-20261202T101500Z.git").unwrap(),
            e
        );
        assert_eq!(e.time(), Some(at));
        for bad in [
            "tools",
            "tools-2026",
            "tools-20261202T101500",
            "tools-20261302T101500Z",
            "../x-20261202T101500Z",
            "-20261202T101500Z",
        ] {
            assert!(TrashEntry::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn moves_never_replace_and_the_trash_is_not_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let inv = Invocation::new(Path::new("/usr/bin/gitmirror"), None).unwrap();
        store.create(&name("a/one"), &inv, None).unwrap();
        store.create(&name("two"), &inv, None).unwrap();
        let entry = TrashEntry::new(&name("a/one"), SystemTime::now());
        store.move_to_trash(&name("a/one"), &entry).unwrap();
        assert_eq!(store.list().unwrap(), [name("two")]);
        assert_eq!(store.trash_list().unwrap(), std::slice::from_ref(&entry));
        // A rename onto an existing repo, or a restore onto one, is refused.
        store.create(&name("a/one"), &inv, None).unwrap();
        assert!(matches!(
            store.rename(&name("two"), &name("a/one")),
            Err(StoreError::Exists { .. })
        ));
        assert!(matches!(
            store.restore(&entry, &name("two")),
            Err(StoreError::Exists { .. })
        ));
        store.restore(&entry, &name("three")).unwrap();
        assert!(store.find(&name("three")).is_some());
        assert!(store.trash_list().unwrap().is_empty());
        assert!(!store.purge(&entry).unwrap());
    }
}
