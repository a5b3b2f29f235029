//! The refs and HEAD of one copy of a repo, as a mirror push compares them: this server's,
//! read from disk, or a slave's, as its upload-pack advertises them.

use std::collections::BTreeMap;
use std::path::Path;

use super::push_error::PushError;
use crate::proto::OWN_NS;

/// Refs (without [`OWN_NS`]) and HEAD of one copy of a repo.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RefState {
    pub(super) head: Option<String>,
    pub(super) refs: BTreeMap<String, String>,
    /// This server's refs that cannot be mirrored (made on disk behind gitmirror's back: the
    /// hooks refuse them), by name, with why. They are left out, and left alone on the slave,
    /// so that they do not hold up every other ref.
    pub(crate) skipped: BTreeMap<String, String>,
}

impl RefState {
    /// This server's copy, read from disk. Symbolic refs other than HEAD count as the value
    /// they point to, as a push carries them and `ls-remote` shows them.
    pub(crate) fn local(path: &Path) -> Result<Self, PushError> {
        let local = PushError::LocalRepo;
        let repo = git2::Repository::open_bare(path).map_err(local)?;
        let mut state = RefState {
            head: repo
                .find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string)),
            ..RefState::default()
        };
        for r in repo.references().map_err(local)? {
            let r = r.map_err(local)?;
            let Ok(name) = r.name() else {
                let name = String::from_utf8_lossy(r.name_bytes()).into_owned();
                let why = format!("ref {name:?} is not UTF-8; gitmirror cannot mirror it");
                state.skipped.insert(name, why);
                continue;
            };
            if name.starts_with(OWN_NS) {
                continue;
            }
            let Some(oid) = r.resolve().ok().and_then(|r| r.target()) else {
                continue;
            };
            // libgit2 sends a tree or blob named by a ref without its contents.
            if !points_at_history(&repo, oid) {
                let why =
                    format!("ref {name} points at a tree or blob; gitmirror cannot mirror it");
                state.skipped.insert(name.to_string(), why);
                continue;
            }
            state.refs.insert(name.to_string(), oid.to_string());
        }
        Ok(state)
    }

    /// This server's copy as its files say, without opening the repo or its objects: what
    /// the "nothing changed" check of thousands of repos reads (a fraction of the cost of
    /// [`RefState::local`]). The same refs and HEAD as `local` for any repo gitmirror keeps;
    /// where it cannot be sure (a name that is not UTF-8, an unreadable file, another ref
    /// storage) it says [`Unsure`], and the caller takes the full path.
    pub(crate) fn on_disk(path: &Path) -> Result<Self, Unsure> {
        let mut loose = BTreeMap::new();
        read_loose(&path.join("refs"), "refs/", &mut loose)?;
        let mut raw = match std::fs::read(path.join("packed-refs")) {
            Ok(bytes) => packed(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(_) => return Err(Unsure),
        };
        raw.extend(loose);
        let head = match std::fs::read(path.join("HEAD")) {
            Ok(bytes) => match target(&bytes)? {
                Value::Symbolic(to) => Some(to),
                Value::Direct(_) => None,
            },
            Err(_) => return Err(Unsure),
        };
        let mut state = RefState {
            head,
            ..RefState::default()
        };
        for (name, value) in &raw {
            if name.starts_with(OWN_NS) || !valid_name(name) {
                continue;
            }
            // Symbolic refs count as what they point to; a dangling one, as nothing.
            let mut value = value;
            for _ in 0..5 {
                match value {
                    Value::Direct(oid) => {
                        state.refs.insert(name.clone(), oid.clone());
                        break;
                    }
                    Value::Symbolic(to) => match raw.get(to) {
                        Some(next) => value = next,
                        None => break,
                    },
                }
            }
        }
        Ok(state)
    }

    /// The refs by name, each with the commit (or tag) it names.
    pub(crate) fn refs(&self) -> &BTreeMap<String, String> {
        &self.refs
    }

    /// The same HEAD with no refs: what an empty copy of this repo looks like.
    pub(crate) fn emptied(&self) -> RefState {
        RefState {
            head: self.head.clone(),
            ..RefState::default()
        }
    }

    /// Whether `other` has the same HEAD and refs (what a mirror push carries).
    pub(super) fn matches(&self, other: &RefState) -> bool {
        self.head == other.head && self.refs == other.refs
    }

    /// Why the skipped refs could not be mirrored, on one line; `None` when none were.
    pub(crate) fn skipped_words(&self) -> Option<String> {
        let reasons: Vec<&str> = self.skipped.values().map(String::as_str).collect();
        (!reasons.is_empty())
            .then(|| format!("{}; every other ref is mirrored", reasons.join("; ")))
    }

    /// A digest of the whole state, stable across versions (git's own SHA-1 of the text),
    /// recorded when a slave confirms it so that "nothing changed" needs no network.
    pub(crate) fn fingerprint(&self) -> String {
        let mut text = format!("HEAD {}\n", self.head.as_deref().unwrap_or(""));
        for (name, oid) in &self.refs {
            text.push_str(&format!("{oid} {name}\n"));
        }
        // A state with refs it cannot mirror is never "unchanged": it must be reported.
        for name in self.skipped.keys() {
            text.push_str(&format!("skipped {name}\n"));
        }
        git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
            .map_or_else(|_| text.len().to_string(), |o| o.to_string())
    }
}

/// [`RefState::on_disk`] cannot vouch for what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unsure;

/// A ref's value as its file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Direct(String),
    Symbolic(String),
}

/// The value in a loose ref file: an object id, or `ref: TARGET`.
fn target(bytes: &[u8]) -> Result<Value, Unsure> {
    let text = std::str::from_utf8(bytes).map_err(|_| Unsure)?.trim_end();
    if let Some(to) = text.strip_prefix("ref: ") {
        return Ok(Value::Symbolic(to.trim().to_string()));
    }
    if is_oid(text) {
        return Ok(Value::Direct(text.to_string()));
    }
    Err(Unsure)
}

/// Whether `s` is a full object id (SHA-1 or SHA-256), lowercase hex.
pub(crate) fn is_oid(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `name` is a ref name git accepts (`git check-ref-format`), under `refs/`. git
/// ignores a file under `refs/` whose name it refuses, and so does [`RefState::on_disk`]; it
/// never reaches a digest or a line of the verify protocol.
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

/// The refs in `packed-refs`: `OID NAME` lines, with `#` headers and `^` peeled lines.
fn packed(bytes: &[u8]) -> Result<BTreeMap<String, Value>, Unsure> {
    let text = std::str::from_utf8(bytes).map_err(|_| Unsure)?;
    let mut refs = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with('^') || line.is_empty() {
            continue;
        }
        match line.split_once(' ') {
            Some((oid, name)) if is_oid(oid) => {
                refs.insert(name.to_string(), Value::Direct(oid.to_string()));
            }
            _ => return Err(Unsure),
        }
    }
    Ok(refs)
}

/// The loose refs under `dir` (named from `prefix`), skipping the lock files of updates in
/// flight as git does.
fn read_loose(dir: &Path, prefix: &str, refs: &mut BTreeMap<String, Value>) -> Result<(), Unsure> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => return Err(Unsure),
    };
    for entry in entries {
        let entry = entry.map_err(|_| Unsure)?;
        let file_name = entry.file_name();
        let name = file_name.to_str().ok_or(Unsure)?;
        if name.ends_with(".lock") || name.starts_with('.') {
            continue;
        }
        let full = format!("{prefix}{name}");
        let kind = entry.file_type().map_err(|_| Unsure)?;
        if kind.is_dir() {
            read_loose(&entry.path(), &format!("{full}/"), refs)?;
        } else if kind.is_file() {
            match std::fs::read(entry.path()) {
                Ok(bytes) => {
                    refs.insert(full, target(&bytes)?);
                }
                // Deleted while we looked (a ref being packed): packed-refs has it, or it
                // is gone.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => return Err(Unsure),
            }
        } else {
            return Err(Unsure);
        }
    }
    Ok(())
}

/// Whether `oid` is a commit, or a tag that leads to one.
fn points_at_history(repo: &git2::Repository, oid: git2::Oid) -> bool {
    let Ok(object) = repo.find_object(oid, None) else {
        return false;
    };
    match object.kind() {
        Some(git2::ObjectType::Commit) => true,
        Some(git2::ObjectType::Tag) => object.peel(git2::ObjectType::Commit).is_ok(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    #[test]
    fn the_files_say_what_libgit2_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        git(path, &["init", "-q", "-b", "main"]);
        git(path, &["commit", "-q", "--allow-empty", "-m", "one"]);
        git(path, &["tag", "-a", "-m", "t", "v1"]);
        git(path, &["branch", "nested/deep/x"]);
        git(path, &["branch", "old"]);
        git(path, &["pack-refs", "--all"]);
        // Loose refs over packed ones, a new loose one, a symbolic ref, our own namespace.
        git(path, &["commit", "-q", "--allow-empty", "-m", "two"]);
        git(path, &["branch", "-f", "old"]);
        git(path, &["branch", "loose"]);
        git(
            path,
            &["symbolic-ref", "refs/heads/alias", "refs/heads/loose"],
        );
        git(
            path,
            &["symbolic-ref", "refs/heads/dangling", "refs/heads/nowhere"],
        );
        git(path, &["update-ref", "refs/gitmirror/diverged/x", "HEAD"]);
        git(path, &["update-ref", "-d", "refs/heads/nested/deep/x"]);
        let gitdir = path.join(".git");
        let fast = RefState::on_disk(&gitdir).unwrap();
        let full = RefState::local(&gitdir).unwrap();
        assert_eq!(fast, full);
        assert_eq!(fast.fingerprint(), full.fingerprint());
        assert!(fast.refs.contains_key("refs/heads/alias"), "{fast:?}");
        assert!(!fast.refs.contains_key("refs/heads/dangling"), "{fast:?}");
        assert_eq!(fast.head.as_deref(), Some("refs/heads/main"));
        // Detached HEAD: no symbolic HEAD on either side.
        git(path, &["checkout", "-q", "--detach"]);
        assert_eq!(
            RefState::on_disk(&gitdir).unwrap(),
            RefState::local(&gitdir).unwrap()
        );
    }

    #[test]
    fn what_it_cannot_vouch_for_is_unsure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        git(path, &["init", "-q", "--bare"]);
        assert!(RefState::on_disk(path).is_ok());
        std::fs::write(path.join("refs/heads/bad"), "not an oid\n").unwrap();
        assert_eq!(RefState::on_disk(path), Err(Unsure));
        std::fs::remove_file(path.join("refs/heads/bad")).unwrap();
        std::fs::write(path.join("packed-refs"), "garbage\n").unwrap();
        assert_eq!(RefState::on_disk(path), Err(Unsure));
    }
}
