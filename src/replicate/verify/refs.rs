//! A repo's refs and HEAD, and their digest: what both ends of a verify compute, with this
//! one function, so that equal states always digest equally.
//!
//! A slave answers for thousands of repos in one request; opening each with libgit2 costs
//! more than the whole answer should, so the refs come from the repo's files (the reader the
//! daemon's "nothing changed" check uses too), and from libgit2 only where the files cannot
//! vouch for them.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

#[cfg(test)]
use crate::proto::OWN_NS;
use crate::replicate::ref_state::{RefState, Unsure};
pub(crate) use crate::replicate::ref_state::{is_oid, valid_name};

/// The refs (outside [`OWN_NS`]) and HEAD of the repo at `path`: from its files
/// ([`RefState::on_disk`]), or, where the files cannot vouch for them, as libgit2 reads them,
/// with the names git refuses left out either way.
pub(crate) fn read(path: &Path) -> io::Result<RefState> {
    let mut state = match RefState::on_disk(path) {
        Ok(state) => state,
        Err(Unsure) => RefState::local(path).map_err(|e| io::Error::other(e.words()))?,
    };
    state.refs.retain(|name, _| valid_name(name));
    Ok(state)
}

/// The digest of a state's refs and HEAD, as verify sends and compares it: the fingerprint
/// the daemon records, of the refs a mirror push carries.
pub(crate) fn digest(state: &RefState) -> String {
    RefState {
        head: state.head.clone(),
        refs: state.refs.clone(),
        skipped: BTreeMap::new(),
    }
    .fingerprint()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &git2::Repository, refname: &str, text: &str) -> git2::Oid {
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let blob = repo.blob(text.as_bytes()).unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("f", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let parent = repo
            .find_reference(refname)
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some(refname), &sig, &sig, text, &tree, &parents)
            .unwrap()
    }

    /// The files reader and libgit2 see the same state: loose, packed, symbolic, and
    /// gitmirror's own namespace left out.
    #[test]
    fn reads_what_libgit2_reads() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let a = commit(&repo, "refs/heads/main", "a");
        commit(&repo, "refs/tags/v1", "b");
        commit(&repo, "refs/gitmirror/diverged/1/refs/heads/x", "c");
        repo.reference_symbolic("refs/heads/alias", "refs/heads/main", true, "")
            .unwrap();
        // Pack them, then move one loose again: the loose value wins.
        let status = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(dir.path())
            .args(["pack-refs", "--all"])
            .status()
            .unwrap();
        assert!(status.success());
        let b = commit(&repo, "refs/heads/main", "d");
        assert_ne!(a, b);
        repo.set_head("refs/heads/main").unwrap();

        let fast = read(dir.path()).unwrap();
        let slow = RefState::local(dir.path()).unwrap();
        assert_eq!(fast.head, slow.head);
        assert_eq!(fast.refs, slow.refs);
        assert_eq!(fast.refs["refs/heads/main"], b.to_string());
        assert_eq!(fast.refs["refs/heads/alias"], b.to_string());
        assert!(!fast.refs.keys().any(|k| k.starts_with(OWN_NS)));
        assert_eq!(digest(&fast), digest(&slow));
    }

    #[test]
    fn refs_git_would_not_use_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let a = commit(&repo, "refs/heads/main", "a").to_string();
        let heads = dir.path().join("refs/heads");
        for bad in ["a b", "x.lock", ".hidden", "c:d"] {
            std::fs::write(heads.join(bad), format!("{a}\n")).unwrap();
        }
        std::fs::write(heads.join("dangling"), "ref: refs/heads/nowhere\n").unwrap();
        let state = read(dir.path()).unwrap();
        assert_eq!(state.refs.keys().collect::<Vec<_>>(), ["refs/heads/main"]);
    }

    #[test]
    fn a_detached_head_is_no_head() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let a = commit(&repo, "refs/heads/main", "a");
        repo.set_head_detached(a).unwrap();
        assert_eq!(read(dir.path()).unwrap().head, None);
        assert_eq!(RefState::local(dir.path()).unwrap().head, None);
    }

    #[test]
    fn names_follow_check_ref_format() {
        for good in ["refs/heads/main", "refs/tags/v1.0", "refs/heads/a/b-c_d"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "HEAD",
            "refs/heads/",
            "refs/heads/a..b",
            "refs/heads/a b",
            "refs/heads/.x",
            "refs/heads/x.lock",
            "refs/heads/a@{1}",
            "refs/heads/a\tb",
            "refs//x",
            "refs/heads/x.",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
