//! The pre-receive hook: what `RW` may not do.
//!
//! The hook script runs this only for users without `RW+`; peers and pushes made on the
//! server's disk carry no user and pass without starting a process.

use tracing::info;

use super::{HookError, PushedBy, RefUpdate};

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

/// The pre-receive check for users without `RW+` (the hook script skips the others): every
/// update must be one `RW` allows. The whole push is refused on the first that is not, so an
/// `--atomic` push and a plain one end the same way. Runs inside git's quarantine, so the
/// repository is opened from git's environment.
pub(crate) fn pre_receive(pusher: &PushedBy, updates: &[RefUpdate]) -> Result<(), HookError> {
    let refuse = |refused: String| {
        info!(actor = %pusher.actor, repo = %pusher.repo, decision = "deny", reason = %refused, "ref update");
        HookError::Refused {
            user: pusher.actor.clone(),
            repo: pusher.repo.clone(),
            refused,
        }
    };
    if pusher.access != "RW" {
        return Err(refuse(format!("pushing with access {:?}", pusher.access)));
    }
    let repo = git2::Repository::open_from_env().map_err(HookError::Repo)?;
    for u in updates {
        if let Some(refused) = needs_rewind(&repo, u) {
            return Err(refuse(format!("{refused} needs RW+")));
        }
    }
    Ok(())
}
