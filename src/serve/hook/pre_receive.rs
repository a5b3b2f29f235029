//! The pre-receive hook: what no pusher may push, and what `RW` may not do.
//!
//! Every user's push and every push made on the server's disk runs it (peers' mirror pushes
//! run only the post-receive hook): a ref that cannot be mirrored, once accepted, would stop
//! replication of the whole repo, so it is refused for everyone, `RW+` included.

use tracing::info;

use super::{HookError, PushedBy, RefUpdate};
use crate::admin::admin_repo::{self, gate};
use crate::home::Home;
use crate::names::RepoName;
use crate::repo::Store;

/// Namespaces in which `RW` may create refs and fast-forward them. Anything else (say
/// `refs/replace/`, which changes what every fetcher sees) needs `RW+`.
const RW_NAMESPACES: &[&str] = &["refs/heads/", "refs/tags/", "refs/notes/"];

/// Why an `RW` user may not make `u`, or `None` when it is a creation or a fast-forward in a
/// namespace `RW` covers.
fn needs_rewind(repo: &git2::Repository, u: &RefUpdate) -> Option<String> {
    if !RW_NAMESPACES.iter().any(|ns| u.name.starts_with(ns)) {
        return Some(format!(
            "updating {} (outside refs/heads, refs/tags and refs/notes)",
            u.name
        ));
    }
    if u.new.is_zero() {
        return Some(format!("deleting {}", u.name));
    }
    if u.old.is_zero() || u.old == u.new {
        return None;
    }
    if u.name.starts_with("refs/tags/") {
        return Some(format!("moving tag {}", u.name));
    }
    let commit = |oid| {
        repo.find_object(oid, None)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
    };
    match (commit(u.old), commit(u.new)) {
        (Ok(old), Ok(new)) if repo.graph_descendant_of(new, old).unwrap_or(false) => None,
        _ => Some(format!("rewinding {} (a non-fast-forward update)", u.name)),
    }
}

/// Why `u` cannot be mirrored, if it cannot: a name that is not UTF-8, or a ref that points
/// at something other than history (libgit2 would send a tree or blob without its contents).
fn unmirrorable(repo: &git2::Repository, u: &RefUpdate) -> Option<String> {
    if !u.utf8 {
        return Some(format!("ref name {:?} is not UTF-8", u.name));
    }
    if u.new.is_zero() {
        return None;
    }
    let object = match repo.find_object(u.new, None) {
        Ok(o) => o,
        Err(e) => return Some(format!("{} points at {}: {}", u.name, u.new, e.message())),
    };
    match object.kind() {
        Some(git2::ObjectType::Commit) => None,
        Some(git2::ObjectType::Tag) if object.peel(git2::ObjectType::Commit).is_ok() => None,
        Some(git2::ObjectType::Tag) => Some(format!("{} is a tag of a tree or blob", u.name)),
        kind => Some(format!(
            "{} points at a {}",
            u.name,
            kind.map_or("non-commit", |k| k.str())
        )),
    }
}

/// The pre-receive check. Every update must be one that can be mirrored, and, for users with
/// plain `RW`, one `RW` allows. The whole push is refused on the first that is not, so an
/// `--atomic` push and a plain one end the same way. Runs inside git's quarantine, so the
/// repository is opened from git's environment.
pub(crate) fn pre_receive(
    home: &Home,
    pusher: &PushedBy,
    updates: &[RefUpdate],
) -> Result<(), HookError> {
    let refuse = |refused: String| {
        info!(actor = %pusher.actor, repo = %pusher.repo, decision = "deny", reason = %refused, "ref update");
        HookError::Refused {
            user: pusher.actor.clone(),
            repo: pusher.repo.clone(),
            refused,
        }
    };
    let repo = git2::Repository::open_from_env().map_err(HookError::Repo)?;
    for u in updates {
        if let Some(why) = unmirrorable(&repo, u) {
            info!(actor = %pusher.actor, repo = %pusher.repo, decision = "deny", reason = %why, "ref update");
            return Err(HookError::Unmirrorable { why });
        }
    }
    // Checked for RW+ as well: a broken configuration refused here changes nothing anywhere.
    let name = RepoName::parse(&pusher.repo).ok().or_else(|| {
        let here = std::env::current_dir().ok()?;
        Store::new(home.repositories()).name_of(&here)
    });
    if name.as_ref().is_some_and(admin_repo::is_admin_repo) {
        let pushed: Vec<(&str, git2::Oid)> =
            updates.iter().map(|u| (u.name.as_str(), u.new)).collect();
        if let Err(e) = gate::check_push(&repo, &pushed) {
            info!(actor = %pusher.actor, repo = %pusher.repo, decision = "deny", reason = %e, "admin push");
            return Err(HookError::AdminRefused(gate::refusal(&e)));
        }
    }
    match pusher.access.as_str() {
        "RW" => {}
        "RW+" => return Ok(()),
        // A push made on the server's own disk: its administrator's.
        "" if pusher.actor.is_empty() => return Ok(()),
        other => return Err(refuse(format!("pushing with access {other:?}"))),
    }
    for u in updates {
        if let Some(refused) = needs_rewind(&repo, u) {
            return Err(refuse(format!("{refused} needs RW+")));
        }
    }
    Ok(())
}
