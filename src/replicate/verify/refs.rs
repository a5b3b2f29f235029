//! A repo's refs and HEAD read straight from its files, and their digest: what both ends of a
//! verify compute, with this one function, so that equal states always digest equally.
//!
//! A slave answers for thousands of repos in one request; opening each with libgit2 costs
//! more than the whole answer should. Reading `HEAD`, `packed-refs` and the loose refs under
//! `refs/` is a handful of system calls per repo. Like [`RefState::local`], symbolic refs
//! other than HEAD count as the value they point to and [`OWN_NS`] is left out; refs git
//! itself would ignore (names it refuses, unreadable values) are left out on both sides.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use crate::proto::OWN_NS;
use crate::replicate::ref_state::RefState;

/// How many symbolic refs in a row are followed before giving up (git stops at 5 too).
const SYMREF_DEPTH: usize = 5;

/// The refs (outside [`OWN_NS`]) and HEAD of the repo at `path`, from its files.
pub(crate) fn read(path: &Path) -> io::Result<RefState> {
    let head = match fs::read_to_string(path.join("HEAD")) {
        Ok(text) => symref_target(&text).filter(|t| valid_name(t)),
        Err(e) => return Err(e),
    };
    // Each name's raw value: an object id or `ref: TARGET`. Loose refs win over packed ones.
    let mut raw: BTreeMap<String, String> = BTreeMap::new();
    match fs::read_to_string(path.join("packed-refs")) {
        Ok(text) => {
            for line in text.lines() {
                if line.starts_with('#') || line.starts_with('^') {
                    continue;
                }
                if let Some((oid, name)) = line.split_once(' ')
                    && is_oid(oid)
                {
                    raw.insert(name.to_string(), oid.to_string());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    loose(&path.join("refs"), "refs", &mut raw)?;
    let mut state = RefState {
        head,
        ..RefState::default()
    };
    for name in raw.keys() {
        if name.starts_with(OWN_NS) || !valid_name(name) {
            continue;
        }
        if let Some(oid) = resolve(&raw, name) {
            state.refs.insert(name.clone(), oid);
        }
    }
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

/// Reads the loose refs under `dir` (named `prefix`) into `raw`.
fn loose(dir: &Path, prefix: &str, raw: &mut BTreeMap<String, String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // A name that is not UTF-8 is no ref git would use.
        let Some(file) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let name = format!("{prefix}/{file}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            loose(&entry.path(), &name, raw)?;
        } else if kind.is_file() {
            // A ref deleted while we list is simply not there.
            let text = match fs::read_to_string(entry.path()) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
                Err(e) => return Err(e),
            };
            let value = text.trim_end();
            if is_oid(value) || symref_target(value).is_some() {
                raw.insert(name, value.to_string());
            }
        }
    }
    Ok(())
}

/// The object id `name` stands for, following symbolic refs.
fn resolve(raw: &BTreeMap<String, String>, name: &str) -> Option<String> {
    let mut current = raw.get(name)?;
    for _ in 0..SYMREF_DEPTH {
        match symref_target(current) {
            None => return Some(current.clone()),
            Some(target) => current = raw.get(&target)?,
        }
    }
    None
}

/// The target of a symbolic ref's contents (`ref: refs/heads/main`).
fn symref_target(text: &str) -> Option<String> {
    text.trim_end()
        .strip_prefix("ref:")
        .map(|t| t.trim().to_string())
}

/// Whether `s` is a full object id (SHA-1 or SHA-256), lowercase hex.
pub(crate) fn is_oid(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `name` is a ref name git accepts (`git check-ref-format`), under `refs/`. One that
/// is not never reaches the digest, so it cannot break the reply line it would travel on.
pub(crate) fn valid_name(name: &str) -> bool {
    name.starts_with("refs/")
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && !name.bytes().any(|b| {
            b < 0x20
                || b == 0x7f
                || matches!(b, b' ' | b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\')
        })
        && name
            .split('/')
            .all(|c| !c.is_empty() && !c.starts_with('.') && !c.ends_with(".lock"))
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
            fs::write(heads.join(bad), format!("{a}\n")).unwrap();
        }
        fs::write(heads.join("junk"), "not an id\n").unwrap();
        fs::write(heads.join("dangling"), "ref: refs/heads/nowhere\n").unwrap();
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
