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
