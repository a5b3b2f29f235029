//! Which pushes to the admin repo are accepted: only to its default branch (HEAD's), and only
//! a commit whose whole configuration is valid. Other branches and tags are refused rather
//! than accepted without effect: an administrator pushing to one would believe the
//! configuration changed.

use git2::{Oid, Repository};

use super::snapshot::{Snapshot, default_branch};
use super::{ADMIN_REPO, AdminRepoError, name};
use crate::admin::keys::Role;
use crate::config::Access;

/// Checks a push of `updates` (`(ref, new value)`, zero for a deletion) to the admin repo
/// `repo` (opened inside git's quarantine, so that the pushed objects are visible).
pub(crate) fn check_push(repo: &Repository, updates: &[(&str, Oid)]) -> Result<(), AdminRepoError> {
    let branch = default_branch(repo)?;
    for (name, new) in updates {
        if *name != branch {
            return Err(AdminRepoError::OtherRef {
                refname: (*name).to_string(),
                branch,
            });
        }
        if new.is_zero() {
            return Err(AdminRepoError::DeleteDefault { branch });
        }
        let snapshot = Snapshot::of_commit(repo, *new)?;
        keeps_an_administrator(&snapshot)?;
    }
    Ok(())
}

/// Refuses a configuration after which nobody could push to the admin repo again: no user
/// with a key in `keys/users/` keeps `RW+` on it. Undoing such a push would take every
/// server's administrator at a shell.
fn keeps_an_administrator(snapshot: &Snapshot) -> Result<(), AdminRepoError> {
    let admin = name();
    let kept = snapshot
        .keys
        .iter()
        .filter(|e| e.role == Role::User)
        .any(|e| snapshot.rules.access(&e.name, &admin) == Access::Rewind);
    if kept {
        Ok(())
    } else {
        Err(AdminRepoError::NoAdministrator)
    }
}

/// The message for a push to the admin repo refused by [`check_push`].
pub(crate) fn refusal(e: &AdminRepoError) -> String {
    format!("{ADMIN_REPO}: push refused, nothing was changed: {e}")
}
