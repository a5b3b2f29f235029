//! Which pushes to the admin repo are accepted: only to its default branch (HEAD's), and only
//! a commit whose whole configuration is valid. Other branches and tags are refused rather
//! than accepted without effect: an administrator pushing to one would believe the
//! configuration changed.

use git2::{Oid, Repository};

use super::snapshot::{Snapshot, default_branch};
use super::{ADMIN_REPO, AdminRepoError, name};
use crate::admin::keys::Role;
use crate::config::Access;
use crate::names::AccountName;

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
        keeps_every_mirror_key(&snapshot)?;
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

/// With `keys/peers/` in use, refuses a configuration that names a server in a mirror table
/// without its key there: every server applying it would unregister that server. For the admin
/// repo's master that is final (its slaves would refuse its pushes, so no fix could reach
/// them); for any other repo it cuts that repo's replication, and a slave without a key could
/// not ask its master for a push, carry a user's push there or be promoted. The admin repo's
/// own servers are checked first, so that the refusal names the worst case.
fn keeps_every_mirror_key(snapshot: &Snapshot) -> Result<(), AdminRepoError> {
    if !snapshot.has_peers {
        return Ok(());
    }
    let has_key = |server: &AccountName| {
        snapshot
            .keys
            .iter()
            .any(|e| e.role == Role::Peer && &e.name == server)
    };
    let missing = |server: &AccountName, master: bool, repo: String| AdminRepoError::NoPeerKey {
        server: server.to_string(),
        role: if master { "master" } else { "slave" },
        repo,
    };
    let admin = name();
    if let Some(rule) = snapshot.rules.mirror(&admin) {
        let servers =
            std::iter::once((&rule.master, true)).chain(rule.slaves.iter().map(|s| (s, false)));
        for (server, master) in servers {
            if !has_key(server) {
                return Err(missing(server, master, ADMIN_REPO.to_string()));
            }
        }
    }
    for named in snapshot.rules.mirror_servers() {
        if !has_key(&named.server) {
            return Err(missing(&named.server, named.master, named.table));
        }
    }
    Ok(())
}

/// The message for a push to the admin repo refused by [`check_push`].
pub(crate) fn refusal(e: &AdminRepoError) -> String {
    format!("{ADMIN_REPO}: push refused, nothing was changed: {e}")
}
