//! The repository store: bare repos under `repositories/`, found, listed and created here.
//!
//! Lookups go through [`Store::find`], which refuses anything that resolves outside the store
//! (a symlink planted inside it, say), so the rest of the crate never builds a repo path itself.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::hooks::{HOOKS, write_hook_set};
use super::mirror_settings::set_mirror_config;
use super::{StoreError, git_err};
use crate::config::MirrorRule;
use crate::fs::{Context, ensure_dir};
use crate::invocation::Invocation;
use crate::names::RepoName;

/// How a repo in the making is named (hidden: the store's walk skips dot names).
const STAGING_PREFIX: &str = ".new-";

/// How old a repo in the making must be to count as abandoned.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A repo built by [`Store::stage`], not yet in place; dropped, it leaves nothing behind.
#[derive(Debug)]
pub(crate) struct Staged {
    _tmp: tempfile::TempDir,
    building: PathBuf,
    destination: PathBuf,
    real_parent: PathBuf,
    sync_each: bool,
    name: RepoName,
    store: Store,
}

/// Where a staged repo ended up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placed {
    /// Ours is the repo now, at this path.
    Ours(PathBuf),
    /// Another creator (compile, or another mirror push) placed its own first; it stands,
    /// complete, at this path, and ours was dropped.
    Theirs(PathBuf),
}

impl Staged {
    /// Where the repo is being built (a git directory nobody else sees).
    pub(crate) fn path(&self) -> &Path {
        &self.building
    }

    /// Renames the repo into place.
    pub(crate) fn place(self) -> Result<Placed, StoreError> {
        if let Err(e) = fs::rename(&self.building, &self.destination) {
            return match self.store.find(&self.name) {
                Some(theirs) => Ok(Placed::Theirs(theirs)),
                None => Err(e).at("cannot move the new repo to", &self.destination)?,
            };
        }
        if self.sync_each {
            fs::File::open(&self.real_parent)
                .and_then(|d| d.sync_all())
                .at("cannot sync directory", &self.real_parent)?;
        }
        Ok(Placed::Ours(self.destination))
    }
}

/// The bare repositories of one server.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    pub(super) root: PathBuf,
    /// Whether `create` waits for the disk itself (else its caller syncs the filesystem once).
    sync_each: bool,
}

impl Store {
    /// The store rooted at `root` (the home's `repositories/`).
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        Store {
            root: root.into(),
            sync_each: true,
        }
    }

    /// The same store for a bulk operation that syncs the filesystem itself when it is done
    /// (compile creating thousands of repos).
    pub(crate) fn deferring_sync(mut self) -> Self {
        self.sync_each = false;
        self
    }

    /// The path of an existing repo, or `None` when it is missing, is not a git directory, or
    /// resolves (through a symlink) outside the store.
    pub(crate) fn find(&self, name: &RepoName) -> Option<PathBuf> {
        let path = self.root.join(name.relative_dir());
        let real = fs::canonicalize(&path).ok()?;
        let root = fs::canonicalize(&self.root).ok()?;
        if !real.starts_with(&root) {
            warn!(repo = %name, target = %real.display(), "repo resolves outside the store; ignored");
            return None;
        }
        (real.join("HEAD").is_file() && real.join("objects").is_dir()).then_some(real)
    }

    /// The name of the repo at `path`, if it lies inside the store.
    pub(crate) fn name_of(&self, path: &Path) -> Option<RepoName> {
        let root = fs::canonicalize(&self.root).ok()?;
        let real = fs::canonicalize(path).ok()?;
        RepoName::parse(real.strip_prefix(root).ok()?.to_str()?).ok()
    }

    /// Creates a repo complete (bare, incoming objects checked, gitmirror's hooks, mirror
    /// settings) and returns its path. It is built in a temporary directory and renamed into
    /// place, so nobody ever sees a half-made repo: one without its mirror settings would
    /// take users' pushes as if it were local.
    pub(crate) fn create(
        &self,
        name: &RepoName,
        invocation: &Invocation,
        mirror: Option<&MirrorRule>,
    ) -> Result<PathBuf, StoreError> {
        match self.stage(name, invocation, mirror)?.place()? {
            Placed::Ours(path) => Ok(path),
            Placed::Theirs(path) => {
                info!(repo = %name, "created meanwhile by another process");
                Ok(path)
            }
        }
    }

    /// Builds a complete repo (as [`Store::create`] does) in a temporary directory next to
    /// where it belongs, without placing it: its caller may fill it first, so that the repo
    /// appears with its content or not at all.
    pub(crate) fn stage(
        &self,
        name: &RepoName,
        invocation: &Invocation,
        mirror: Option<&MirrorRule>,
    ) -> Result<Staged, StoreError> {
        let path = self.root.join(name.relative_dir());
        let parent = path.parent().unwrap_or(&self.root);
        ensure_dir(parent, 0o700)?;
        let root = fs::canonicalize(&self.root).at("cannot resolve", &self.root)?;
        let real_parent = fs::canonicalize(parent).at("cannot resolve", parent)?;
        if !real_parent.starts_with(&root) {
            return Err(StoreError::Escapes {
                repo: name.to_string(),
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempdir_in(&real_parent)
            .at("cannot create a temporary directory in", &real_parent)?;
        let staged = tmp.path().join("repo.git");
        let mut opts = git2::RepositoryInitOptions::new();
        // No template directory: its sample hooks are a dozen files per repo nobody runs.
        opts.bare(true).no_reinit(true).external_template(false);
        let repo = git2::Repository::init_opts(&staged, &opts).map_err(git_err(&path))?;
        repo.config()
            .and_then(|mut c| c.set_bool("receive.fsckObjects", true))
            .map_err(git_err(&path))?;
        // Nobody else sees the staging directory: plain writes, and one sync after the rename.
        write_hook_set(&staged.join("hooks"), invocation, HOOKS, false)?;
        if let Some(rule) = mirror {
            set_mirror_config(&staged, rule)?;
        }
        Ok(Staged {
            _tmp: tmp,
            building: staged,
            destination: path,
            real_parent,
            sync_each: self.sync_each,
            name: name.clone(),
            store: self.clone(),
        })
    }

    /// Every repo in the store, found by walking it for `*.git` directories. Entries whose
    /// names are not valid repo names are skipped with a warning.
    pub(crate) fn list(&self) -> Result<Vec<RepoName>, StoreError> {
        let mut found = Vec::new();
        self.walk(&self.root, &mut found)?;
        found.sort();
        Ok(found)
    }

    /// Removes repos in the making ([`Store::stage`]) that a killed process left behind more
    /// than [`ABANDONED_AFTER`] ago; returns how many. A mirror push of a big repo fills its
    /// staging directory for as long as the transfer lasts, so only old ones go.
    pub(crate) fn sweep_abandoned(&self) -> usize {
        let mut removed = 0;
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                if !entry.file_type().is_ok_and(|t| t.is_dir()) || name.ends_with(".git") {
                    continue;
                }
                if !name.starts_with(STAGING_PREFIX) {
                    dirs.push(path);
                    continue;
                }
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ABANDONED_AFTER);
                if old && fs::remove_dir_all(&path).is_ok() {
                    info!(path = %path.display(), "removed a repo abandoned in the making");
                    removed += 1;
                }
            }
        }
        removed
    }

    fn walk(&self, dir: &Path, found: &mut Vec<RepoName>) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            // One directory this account cannot read (a volume's lost+found) must not hide
            // every other repo; the store's own root must be readable.
            Err(e) if dir != self.root && e.kind() == io::ErrorKind::PermissionDenied => {
                warn!(path = %dir.display(), error = %e, "cannot list a directory among the repositories; skipped");
                return Ok(());
            }
            Err(e) => return Err(e).at("cannot list", dir)?,
        };
        for entry in entries {
            let entry = entry.at("cannot list", dir)?;
            let path = entry.path();
            // Hidden entries are gitmirror's repos in the making, or not repos at all.
            if entry.file_name().to_string_lossy().starts_with('.')
                || !entry.file_type().at("cannot stat", &path)?.is_dir()
            {
                continue;
            }
            let rel = path.strip_prefix(&self.root).unwrap_or(&path);
            let rel = rel.to_string_lossy();
            if rel.ends_with(".git") {
                match RepoName::parse(&rel) {
                    Ok(name) => found.push(name),
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "not a valid repo name; skipped")
                    }
                }
            } else {
                self.walk(&path, found)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn creating_a_repo_someone_just_created_takes_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let name = RepoName::parse("site/tools").unwrap();
        let invocation = Invocation::new(Path::new("/usr/bin/gitmirror"), None).unwrap();
        let first = store.create(&name, &invocation, None).unwrap();
        std::fs::write(first.join("description"), "theirs\n").unwrap();
        // A second creator that looked before the first one finished.
        let second = store.create(&name, &invocation, None).unwrap();
        assert_eq!(std::fs::canonicalize(&first).unwrap(), second);
        assert_eq!(
            std::fs::read_to_string(second.join("description")).unwrap(),
            "theirs\n"
        );
        // No staging directory is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path().join("site"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["tools.git"]);
    }
}
