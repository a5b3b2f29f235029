//! The repository store: bare repos under `repositories/`, found, created and configured here.
//!
//! Lookups go through [`Store::find`], which refuses anything that resolves outside the store
//! (a symlink planted inside it, say), so the rest of the crate never builds a repo path itself.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::warn;

use crate::fsutil::{self, Context, FsError};
use crate::home::Invocation;
use crate::names::{AccountName, RepoName};
use crate::rules::MirrorRule;

/// The git config key naming a repo's master, as gitolite spelled it.
pub const MASTER_KEY: &str = "gitolite.mirror.master";
/// The git config key listing a repo's slaves (space separated), as gitolite spelled it.
pub const SLAVES_KEY: &str = "gitolite.mirror.slaves";
/// The git config key saying whether pushes to this repo wait for its slaves (gitmirror's own;
/// gitolite had no such setting).
pub const SYNC_KEY: &str = "gitmirror.sync";

/// The hooks gitmirror installs into every repo, from `hooks/` in the source tree.
/// `@GITMIRROR@` is replaced by the [`Invocation`] of the compiling binary.
const HOOKS: &[(&str, &str)] = &[
    ("pre-receive", include_str!("../hooks/pre-receive")),
    ("post-receive", include_str!("../hooks/post-receive")),
];

/// The hooks a peer's mirror push runs: no pre-receive, whose checks are for users.
const PEER_HOOKS: &[(&str, &str)] = &[("post-receive", include_str!("../hooks/post-receive"))];

/// What can go wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("repo {repo}: {source}")]
    Git {
        repo: String,
        #[source]
        source: git2::Error,
    },
    #[error("repo {repo}: {key} = {value:?} is not a server name")]
    BadMirrorConfig {
        repo: String,
        key: &'static str,
        value: String,
    },
    #[error("repo {repo}: its directory would lie outside the store")]
    Escapes { repo: String },
    #[error(transparent)]
    Fs(#[from] FsError),
}

fn git_err(repo: &Path) -> impl FnOnce(git2::Error) -> StoreError + '_ {
    move |source| StoreError::Git {
        repo: repo.display().to_string(),
        source,
    }
}

/// The bare repositories of one server.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store rooted at `root` (the home's `repositories/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    /// The path of an existing repo, or `None` when it is missing, is not a git directory, or
    /// resolves (through a symlink) outside the store.
    pub fn find(&self, name: &RepoName) -> Option<PathBuf> {
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
    pub fn name_of(&self, path: &Path) -> Option<RepoName> {
        let root = fs::canonicalize(&self.root).ok()?;
        let real = fs::canonicalize(path).ok()?;
        RepoName::parse(real.strip_prefix(root).ok()?.to_str()?).ok()
    }

    /// Creates a repo complete (bare, incoming objects checked, gitmirror's hooks, mirror
    /// settings) and returns its path. It is built in a temporary directory and renamed into
    /// place, so nobody ever sees a half-made repo: one without its mirror settings would
    /// take users' pushes as if it were local.
    pub fn create(
        &self,
        name: &RepoName,
        invocation: &Invocation,
        mirror: Option<&MirrorRule>,
    ) -> Result<PathBuf, StoreError> {
        let path = self.root.join(name.relative_dir());
        let parent = path.parent().unwrap_or(&self.root);
        fsutil::ensure_dir(parent, 0o755)?;
        let root = fs::canonicalize(&self.root).at("cannot resolve", &self.root)?;
        let real_parent = fs::canonicalize(parent).at("cannot resolve", parent)?;
        if !real_parent.starts_with(&root) {
            return Err(StoreError::Escapes {
                repo: name.to_string(),
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
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
        fs::rename(&staged, &path).at("cannot move the new repo to", &path)?;
        fs::File::open(&real_parent)
            .and_then(|d| d.sync_all())
            .at("cannot sync directory", &real_parent)?;
        Ok(path)
    }

    /// Every repo in the store, found by walking it for `*.git` directories. Entries whose
    /// names are not valid repo names are skipped with a warning.
    pub fn list(&self) -> Result<Vec<RepoName>, StoreError> {
        let mut found = Vec::new();
        self.walk(&self.root, &mut found)?;
        found.sort();
        Ok(found)
    }

    fn walk(&self, dir: &Path, found: &mut Vec<RepoName>) -> Result<(), StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
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

/// Installs gitmirror's hooks into the repo at `repo`, rewriting only those that differ.
/// Returns how many it wrote.
pub fn install_hooks(repo: &Path, invocation: &Invocation) -> Result<usize, StoreError> {
    write_hooks(&repo.join("hooks"), invocation)
}

/// Writes gitmirror's hook scripts into `dir`, rewriting only those that differ. Returns how
/// many it wrote.
pub fn write_hooks(dir: &Path, invocation: &Invocation) -> Result<usize, StoreError> {
    write_hook_set(dir, invocation, HOOKS, true)
}

/// Writes the hooks peers' pushes run into `dir` (see [`PEER_HOOKS`]).
pub fn write_peer_hooks(dir: &Path, invocation: &Invocation) -> Result<usize, StoreError> {
    write_hook_set(dir, invocation, PEER_HOOKS, true)
}

/// Writes `hooks` into `dir`: replacing live files atomically (`in_place`), or plainly into a
/// directory nobody uses yet.
fn write_hook_set(
    dir: &Path,
    invocation: &Invocation,
    hooks: &[(&str, &str)],
    in_place: bool,
) -> Result<usize, StoreError> {
    fsutil::ensure_dir(dir, 0o755)?;
    let mut written = 0;
    for (name, template) in hooks {
        let text = template.replace("@GITMIRROR@", invocation.as_str());
        let path = dir.join(name);
        if in_place {
            if fsutil::write_if_changed(&path, text.as_bytes(), 0o755)? {
                written += 1;
            }
        } else {
            fs::write(&path, text)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o755)))
                .at("cannot write", &path)?;
            written += 1;
        }
    }
    Ok(written)
}

/// The mirror settings in a repo's own git config, where the shell and hooks read them at run
/// time. `None` means the repo is local to this server.
pub fn mirror_config(repo: &Path) -> Result<Option<MirrorRule>, StoreError> {
    let config = git2::Config::open(&repo.join("config")).map_err(git_err(repo))?;
    let get = |key| match config.get_string(key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_err(repo)(e)),
    };
    let server = |key: &'static str, value: &str| {
        AccountName::parse(value).map_err(|_| StoreError::BadMirrorConfig {
            repo: repo.display().to_string(),
            key,
            value: value.to_string(),
        })
    };
    let Some(master) = get(MASTER_KEY)?.filter(|m| !m.trim().is_empty()) else {
        return Ok(None);
    };
    let master = server(MASTER_KEY, master.trim())?;
    let slaves = get(SLAVES_KEY)?
        .unwrap_or_default()
        .split_whitespace()
        .map(|s| server(SLAVES_KEY, s))
        .collect::<Result<_, _>>()?;
    let sync = match config.get_bool(SYNC_KEY) {
        Ok(v) => Some(v),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(git_err(repo)(e)),
    };
    Ok(Some(MirrorRule {
        master,
        slaves,
        sync,
    }))
}

/// Writes a repo's mirror settings into its git config, if they differ. Returns whether it
/// wrote.
pub fn set_mirror_config(repo: &Path, rule: &MirrorRule) -> Result<bool, StoreError> {
    if mirror_config(repo)?.as_ref() == Some(rule) {
        return Ok(false);
    }
    let mut config = git2::Config::open(&repo.join("config")).map_err(git_err(repo))?;
    let slaves: Vec<&str> = rule.slaves.iter().map(AccountName::as_str).collect();
    config
        .set_str(MASTER_KEY, rule.master.as_str())
        .and_then(|()| config.set_str(SLAVES_KEY, &slaves.join(" ")))
        .and_then(|()| match rule.sync {
            Some(sync) => config.set_bool(SYNC_KEY, sync),
            None => match config.remove(SYNC_KEY) {
                Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
                other => other,
            },
        })
        .map_err(git_err(repo))?;
    Ok(true)
}
