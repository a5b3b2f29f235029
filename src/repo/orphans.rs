//! Orphaned refs: what this server kept when a mirror push after a change of master
//! overwrote refs whose old value the new one does not contain, under [`ORPHANED_NS`]
//! (`refs/gitmirror/orphaned/<epoch>/<ref without refs/>`). Nothing prunes them and no peer
//! or user sees them: they wait for an administrator, who finds them here (through `status`
//! and `gitmirror orphans`), re-pushes what should be kept, and drops each one.

use std::path::Path;

use thiserror::Error;
use tracing::{info, warn};

use super::{StoreError, git_err};
use crate::proto::ORPHANED_NS;

/// Why an orphaned ref could not be dropped.
#[derive(Debug, Error)]
pub(crate) enum OrphanError {
    #[error("{shown:?} is not an orphaned ref: only refs under {ORPHANED_NS} can be dropped")]
    NotOrphaned { shown: String },
    #[error("repo {repo}: no orphaned ref {name}")]
    Missing { repo: String, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One kept ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Orphan {
    /// The full ref name, under [`ORPHANED_NS`].
    pub(crate) name: String,
    /// What it points at: the value the mirror push overwrote (a commit, or an annotated tag).
    pub(crate) target: git2::Oid,
}

/// The commit an orphaned ref leads to, for the administrator deciding what to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitSummary {
    /// The commit (the ref's target, or what an annotated tag there points at).
    pub(crate) id: git2::Oid,
    /// Its first line.
    pub(crate) subject: String,
    /// `Name <email>`.
    pub(crate) author: String,
    /// When it was authored, in seconds since the Unix epoch.
    pub(crate) time: i64,
}

/// The orphaned refs of the repo at `path`, sorted by name.
///
/// `status` asks this of every repo, so a repo whose ref files show none is answered without
/// opening it: on a server of ten thousand repos that is one `stat` and one small read each.
pub(crate) fn orphans(path: &Path) -> Result<Vec<Orphan>, StoreError> {
    if surely_none(path) {
        return Ok(Vec::new());
    }
    let repo = git2::Repository::open_bare(path).map_err(git_err(path))?;
    read(&repo, path)
}

/// The orphaned refs of the repo at `path` with the commit each leads to; `None` where the
/// ref names no commit this repo holds (a tree or a blob, or an object gone missing).
pub(crate) fn described(path: &Path) -> Result<Vec<(Orphan, Option<CommitSummary>)>, StoreError> {
    if surely_none(path) {
        return Ok(Vec::new());
    }
    let repo = git2::Repository::open_bare(path).map_err(git_err(path))?;
    let orphans = read(&repo, path)?;
    Ok(orphans
        .into_iter()
        .map(|o| {
            let commit = summary(&repo, o.target);
            (o, commit)
        })
        .collect())
}

/// Deletes the orphaned ref `name` from the repo at `path` and returns what it held, for
/// the administrator's record (the commit stays in the repo until git collects garbage).
pub(crate) fn drop_orphan(path: &Path, name: &str) -> Result<Orphan, OrphanError> {
    let inside = name.len() > ORPHANED_NS.len() && name.starts_with(ORPHANED_NS);
    // A valid ref name cannot climb out of the namespace (`..` is refused).
    if !inside || !git2::Reference::is_valid_name(name) {
        return Err(OrphanError::NotOrphaned {
            shown: name.to_string(),
        });
    }
    let repo = git2::Repository::open_bare(path).map_err(git_err(path))?;
    let missing = || OrphanError::Missing {
        repo: path.display().to_string(),
        name: name.to_string(),
    };
    let mut reference = match repo.find_reference(name) {
        Ok(r) => r,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Err(missing()),
        Err(e) => return Err(git_err(path)(e).into()),
    };
    let target = reference
        .resolve()
        .ok()
        .and_then(|r| r.target())
        .or_else(|| reference.target())
        .ok_or_else(missing)?;
    reference.delete().map_err(git_err(path))?;
    info!(repo = %path.display(), name, %target, "dropped an orphaned ref");
    Ok(Orphan {
        name: name.to_string(),
        target,
    })
}

/// Whether the repo's ref files show no orphaned ref: no loose ref directory for the
/// namespace, and no line for it in `packed-refs`. Any doubt (a file that cannot be read)
/// says no, and the caller asks libgit2.
fn surely_none(path: &Path) -> bool {
    let loose = path.join(ORPHANED_NS.trim_end_matches('/'));
    match std::fs::symlink_metadata(&loose) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        _ => return false,
    }
    let packed = match std::fs::read(path.join("packed-refs")) {
        Ok(bytes) => bytes,
        Err(e) => return e.kind() == std::io::ErrorKind::NotFound,
    };
    // Lines are `<object id> <name>`; peeled (`^`) and header (`#`) lines hold no name.
    !packed.split(|b| *b == b'\n').any(|line| {
        line.iter()
            .position(|b| *b == b' ')
            .is_some_and(|space| line[space + 1..].starts_with(ORPHANED_NS.as_bytes()))
    })
}

fn read(repo: &git2::Repository, path: &Path) -> Result<Vec<Orphan>, StoreError> {
    let mut found = Vec::new();
    let glob = format!("{ORPHANED_NS}*");
    for r in repo.references_glob(&glob).map_err(git_err(path))? {
        let r = r.map_err(git_err(path))?;
        // gitmirror names these after refs git accepted, so they are UTF-8; one that is not
        // was made by hand and could not be named to `--drop` anyway.
        let Ok(name) = r.name() else {
            warn!(repo = %path.display(), name = %String::from_utf8_lossy(r.name_bytes()),
                "an orphaned ref whose name is not UTF-8; ignored");
            continue;
        };
        if !name.starts_with(ORPHANED_NS) {
            continue;
        }
        // A symbolic ref here was made by hand too; it counts as what it leads to.
        let Some(target) = r.resolve().ok().and_then(|r| r.target()) else {
            warn!(repo = %path.display(), name, "an orphaned ref that leads nowhere; ignored");
            continue;
        };
        found.push(Orphan {
            name: name.to_string(),
            target,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn summary(repo: &git2::Repository, target: git2::Oid) -> Option<CommitSummary> {
    let commit = repo.find_object(target, None).ok()?.peel_to_commit().ok()?;
    let author = commit.author();
    Some(CommitSummary {
        id: commit.id(),
        subject: String::from_utf8_lossy(commit.summary_bytes().unwrap_or_default()).into_owned(),
        author: format!(
            "{} <{}>",
            String::from_utf8_lossy(author.name_bytes()),
            String::from_utf8_lossy(author.email_bytes())
        ),
        time: author.when().seconds(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare repo with two commits on main; returns them, oldest first.
    fn repo_with_history() -> (tempfile::TempDir, git2::Repository, git2::Oid, git2::Oid) {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::new(
            "Alice Example",
            "alice@example.com",
            &git2::Time::new(1_700_000_000, 0),
        )
        .unwrap();
        let tree = {
            let blob = repo.blob(b"hello\n").unwrap();
            let mut b = repo.treebuilder(None).unwrap();
            b.insert("README", blob, 0o100644).unwrap();
            b.write().unwrap()
        };
        let tree = repo.find_tree(tree).unwrap();
        let first = repo
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                "first\n\nbody",
                &tree,
                &[],
            )
            .unwrap();
        let parent = repo.find_commit(first).unwrap();
        let second = repo
            .commit(
                Some("refs/heads/main"),
                &sig,
                &sig,
                "lost work",
                &tree,
                &[&parent],
            )
            .unwrap();
        drop((tree, parent));
        (dir, repo, first, second)
    }

    #[test]
    fn only_the_namespace_is_listed_with_what_each_ref_leads_to() {
        let (dir, repo, first, second) = repo_with_history();
        assert_eq!(orphans(dir.path()).unwrap(), []);
        repo.reference("refs/gitmirror/orphaned/2/heads/main", second, false, "t")
            .unwrap();
        repo.reference("refs/gitmirror/orphaned/2/heads/team/x", first, false, "t")
            .unwrap();
        // Neighbours that are not orphaned: kept divergences, and a look-alike.
        repo.reference("refs/gitmirror/diverged/1/heads/main", first, false, "t")
            .unwrap();
        repo.reference("refs/heads/gitmirror/orphaned/2", first, false, "t")
            .unwrap();
        let found = orphans(dir.path()).unwrap();
        let names: Vec<(&str, git2::Oid)> =
            found.iter().map(|o| (o.name.as_str(), o.target)).collect();
        assert_eq!(
            names,
            [
                ("refs/gitmirror/orphaned/2/heads/main", second),
                ("refs/gitmirror/orphaned/2/heads/team/x", first)
            ]
        );
        let described = described(dir.path()).unwrap();
        let commit = described[0].1.as_ref().unwrap();
        assert_eq!(commit.id, second);
        assert_eq!(commit.subject, "lost work");
        assert_eq!(commit.author, "Alice Example <alice@example.com>");
        assert_eq!(commit.time, 1_700_000_000);
        assert_eq!(described[1].1.as_ref().unwrap().subject, "first");
    }

    #[test]
    fn packed_refs_are_read_too_and_a_tag_leads_to_its_commit() {
        let (dir, repo, first, _) = repo_with_history();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let object = repo.find_object(first, None).unwrap();
        let tag = repo
            .tag_annotation_create("v1", &object, &sig, "v1")
            .unwrap();
        repo.reference("refs/gitmirror/orphaned/3/tags/v1", tag, false, "t")
            .unwrap();
        let blob = repo.blob(b"not history").unwrap();
        repo.reference("refs/gitmirror/orphaned/3/heads/odd", blob, false, "t")
            .unwrap();
        // What `git pack-refs --all` (or gc) does: the loose files go into packed-refs.
        let loose = dir.path().join("refs/gitmirror/orphaned");
        let mut packed = String::from("# pack-refs with: peeled fully-peeled sorted \n");
        packed.push_str(&format!("{blob} refs/gitmirror/orphaned/3/heads/odd\n"));
        packed.push_str(&format!(
            "{tag} refs/gitmirror/orphaned/3/tags/v1\n^{first}\n"
        ));
        std::fs::write(dir.path().join("packed-refs"), packed).unwrap();
        std::fs::remove_dir_all(&loose).unwrap();
        assert!(!surely_none(dir.path()));
        let described = described(dir.path()).unwrap();
        assert_eq!(described.len(), 2, "{described:?}");
        assert_eq!(described[0].0.target, blob);
        assert_eq!(described[0].1, None);
        assert_eq!(described[1].0.target, tag);
        assert_eq!(described[1].1.as_ref().map(|c| c.id), Some(first));
        // Dropping a packed one removes it from packed-refs.
        drop_orphan(dir.path(), "refs/gitmirror/orphaned/3/tags/v1").unwrap();
        let left = orphans(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, "refs/gitmirror/orphaned/3/heads/odd");
    }

    #[test]
    fn drop_takes_only_an_orphaned_ref_that_exists() {
        let (dir, repo, first, second) = repo_with_history();
        repo.reference("refs/gitmirror/orphaned/2/heads/main", first, false, "t")
            .unwrap();
        for bad in [
            "refs/heads/main",
            "refs/gitmirror/orphaned/",
            "refs/gitmirror/orphaned/../../heads/main",
            "refs/gitmirror/diverged/1/heads/main",
            "refs/gitmirror/orphaned/2/heads/ma\nin",
        ] {
            let e = drop_orphan(dir.path(), bad).unwrap_err();
            assert!(matches!(e, OrphanError::NotOrphaned { .. }), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = drop_orphan(dir.path(), "refs/gitmirror/orphaned/9/heads/main").unwrap_err();
        assert!(matches!(e, OrphanError::Missing { .. }), "{e}");
        // Nothing else moved.
        assert_eq!(repo.refname_to_id("refs/heads/main").unwrap(), second);
        let dropped = drop_orphan(dir.path(), "refs/gitmirror/orphaned/2/heads/main").unwrap();
        assert_eq!(dropped.target, first);
        assert_eq!(orphans(dir.path()).unwrap(), []);
        assert_eq!(repo.refname_to_id("refs/heads/main").unwrap(), second);
    }

    #[test]
    fn a_repo_that_cannot_be_read_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("refs/gitmirror/orphaned")).unwrap();
        assert!(orphans(dir.path()).is_err());
    }
}
