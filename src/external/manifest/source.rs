//! Where a manifest's files come from: a directory on this machine (a manifest file given by
//! path; its includes beside it), or a commit of the manifest repository, fetched from its URL
//! into a temporary repository (`git fetch --depth 1`, run as [`RemoteGit`] runs git against
//! any external remote) or read from the manifest repository's pull mirror here.

use std::path::{Path, PathBuf};

use tracing::info;

use super::{Files, ManifestError};
use crate::config::external::{Credentials, RemoteUrl};
use crate::external::remote::RemoteGit;
use crate::home::Home;

/// Files of a directory: the manifest given by path.
pub(crate) struct DirFiles {
    pub(crate) dir: PathBuf,
}

impl Files for DirFiles {
    fn read(&self, path: &str) -> Result<String, ManifestError> {
        let full = self.dir.join(path);
        std::fs::read_to_string(&full).map_err(|e| ManifestError::File {
            file: full.display().to_string(),
            what: format!("cannot read: {e}"),
        })
    }

    fn label(&self, path: &str) -> String {
        self.dir.join(path).display().to_string()
    }
}

/// Files of one commit of a repository.
pub(crate) struct TreeFiles {
    repo: git2::Repository,
    commit: git2::Oid,
    /// How errors name the repository (its URL, or its name here).
    origin: String,
    /// Keeps a fetched temporary repository until the files are read.
    _tmp: Option<tempfile::TempDir>,
}

impl TreeFiles {
    /// The commit `rev` (a full ref name, or `HEAD`) of the repository at `git_dir`.
    pub(crate) fn open(git_dir: &Path, rev: &str, origin: &str) -> Result<Self, ManifestError> {
        let fail = |e: git2::Error| {
            ManifestError::Source(format!("{origin}: cannot read {rev}: {}", e.message()))
        };
        let repo = git2::Repository::open_bare(git_dir).map_err(fail)?;
        let commit = repo
            .revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .map_err(fail)?
            .id();
        Ok(TreeFiles {
            repo,
            commit,
            origin: origin.to_string(),
            _tmp: None,
        })
    }

    /// The commit read.
    pub(crate) fn commit(&self) -> git2::Oid {
        self.commit
    }
}

/// How many symlinks a manifest path may pass through (`default.xml -> release.xml`, as many
/// manifest repositories have it).
const MAX_LINKS: usize = 8;

impl Files for TreeFiles {
    fn read(&self, path: &str) -> Result<String, ManifestError> {
        let fail = |what: String| ManifestError::File {
            file: self.label(path),
            what,
        };
        let commit = self
            .repo
            .find_commit(self.commit)
            .map_err(|e| fail(e.message().to_string()))?;
        let tree = commit.tree().map_err(|e| fail(e.message().to_string()))?;
        let mut at = path.to_string();
        for _ in 0..=MAX_LINKS {
            let entry = tree
                .get_path(Path::new(&at))
                .map_err(|_| fail(format!("no such file at {}", self.commit)))?;
            let blob = entry
                .to_object(&self.repo)
                .and_then(|o| o.peel_to_blob())
                .map_err(|_| fail("not a file".to_string()))?;
            let text = String::from_utf8(blob.content().to_vec())
                .map_err(|_| fail("not UTF-8 text".to_string()))?;
            if entry.filemode() != i32::from(git2::FileMode::Link) {
                return Ok(text);
            }
            // A symlink within the repository: its target, relative to its directory.
            let dir = at.rfind('/').map_or("", |i| &at[..=i]);
            let target = format!("{dir}{text}");
            let mut parts: Vec<&str> = Vec::new();
            for part in target.split('/') {
                match part {
                    "" | "." => {}
                    ".." => {
                        if parts.pop().is_none() {
                            return Err(fail(format!("a symlink out of the repository ({text})")));
                        }
                    }
                    p => parts.push(p),
                }
            }
            if text.starts_with('/') {
                return Err(fail(format!("a symlink out of the repository ({text})")));
            }
            at = parts.join("/");
        }
        Err(fail(format!("more than {MAX_LINKS} symlinks")))
    }

    fn label(&self, path: &str) -> String {
        format!("{}:{path}", self.origin)
    }
}

/// Fetches `branch` (or the remote's HEAD) of the manifest repository at `url` into a
/// temporary repository, one commit deep.
pub(crate) fn fetch(
    home: &Home,
    url: &RemoteUrl,
    credentials: &Credentials,
    branch: Option<&str>,
) -> Result<TreeFiles, ManifestError> {
    let fail = |what: String| ManifestError::Source(format!("{}: {what}", url.url));
    let tmp = tempfile::Builder::new()
        .prefix("gitmirror-manifest-")
        .tempdir()
        .map_err(|e| fail(format!("cannot make a temporary repository: {e}")))?;
    git2::Repository::init_bare(tmp.path()).map_err(|e| {
        fail(format!(
            "cannot make a temporary repository: {}",
            e.message()
        ))
    })?;
    let from = match branch {
        Some(b) => {
            if !git2::Reference::is_valid_name(&format!("refs/heads/{b}")) {
                return Err(fail(format!("{b:?} is not a branch name")));
            }
            format!("refs/heads/{b}")
        }
        None => "HEAD".to_string(),
    };
    let mut cmd = RemoteGit::new(home, url, credentials)
        .command(tmp.path())
        .map_err(|e| fail(e.to_string()))?;
    cmd.as_std_mut()
        .args(["fetch", "--quiet", "--no-tags", "--depth", "1", "--"])
        .arg(&url.url)
        .arg(format!("+{from}:refs/manifest"));
    let out = cmd
        .as_std_mut()
        .output()
        .map_err(|e| fail(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("warning:"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(fail(format!("cannot fetch {from}: {why}")));
    }
    info!(url = %url.url, rev = %from, "manifest repository fetched");
    let mut files = TreeFiles::open(tmp.path(), "refs/manifest", &url.url)?;
    files._tmp = Some(tmp);
    Ok(files)
}
