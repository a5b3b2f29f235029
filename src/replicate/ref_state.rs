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
                return Err(PushError::Unmirrorable(format!(
                    "ref {:?} is not UTF-8; gitmirror cannot mirror it",
                    String::from_utf8_lossy(r.name_bytes())
                )));
            };
            if name.starts_with(OWN_NS) {
                continue;
            }
            let Some(oid) = r.resolve().ok().and_then(|r| r.target()) else {
                continue;
            };
            // libgit2 sends a tree or blob named by a ref without its contents.
            if !points_at_history(&repo, oid) {
                return Err(PushError::Unmirrorable(format!(
                    "ref {name} points at a tree or blob; gitmirror cannot mirror it"
                )));
            }
            state.refs.insert(name.to_string(), oid.to_string());
        }
        Ok(state)
    }

    /// The same HEAD with no refs: what an empty copy of this repo looks like.
    pub(crate) fn emptied(&self) -> RefState {
        RefState {
            head: self.head.clone(),
            refs: BTreeMap::new(),
        }
    }

    /// A digest of the whole state, stable across versions (git's own SHA-1 of the text),
    /// recorded when a slave confirms it so that "nothing changed" needs no network.
    pub(crate) fn fingerprint(&self) -> String {
        let mut text = format!("HEAD {}\n", self.head.as_deref().unwrap_or(""));
        for (name, oid) in &self.refs {
            text.push_str(&format!("{oid} {name}\n"));
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
