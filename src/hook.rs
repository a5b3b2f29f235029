//! `gitmirror hook NAME`: what the hook scripts in `hooks/` run inside git's receive-pack.
//!
//! - `pre-receive` refuses rewinds, deletions and tag moves by users with `RW` (the script
//!   calls us only for them).
//! - `post-receive` records the ref updates; replication to the slaves starts from here.

use std::io::BufRead;

use thiserror::Error;
use tracing::info;

/// A ref update as git reports it to hooks: `OLD NEW REFNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// The ref's value before the push (zero when created).
    pub old: git2::Oid,
    /// The ref's value after the push (zero when deleted).
    pub new: git2::Oid,
    /// The full ref name, e.g. `refs/heads/master`.
    pub name: String,
}

/// What can go wrong in a hook.
#[derive(Debug, Error)]
pub enum HookError {
    #[error("cannot read the ref updates from git: {0}")]
    Input(#[from] std::io::Error),
    #[error("malformed ref update line from git: {0:?}")]
    Malformed(String),
    #[error("cannot open the repository: {0}")]
    Repo(#[source] git2::Error),
    #[error("{user} has RW on {repo}, which does not allow this: {refused}")]
    Refused {
        user: String,
        repo: String,
        refused: String,
    },
}

/// Reads git's hook input.
pub fn read_updates(input: impl BufRead) -> Result<Vec<RefUpdate>, HookError> {
    let mut updates = Vec::new();
    for line in input.lines() {
        let line = line?;
        let mut parts = line.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(HookError::Malformed(line));
        };
        let oid = |s: &str| git2::Oid::from_str(s).map_err(|_| HookError::Malformed(line.clone()));
        updates.push(RefUpdate {
            old: oid(old)?,
            new: oid(new)?,
            name: name.to_string(),
        });
    }
    Ok(updates)
}

/// Who pushed and to which repo, as the shell told git in the environment.
#[derive(Debug, Clone, Default)]
pub struct Pusher {
    /// The user (or, later, peer) behind the push; empty for a local push.
    pub actor: String,
    /// The repo name.
    pub repo: String,
}

impl Pusher {
    /// Reads `GITMIRROR_USER` and `GITMIRROR_REPO`.
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).unwrap_or_default();
        Pusher {
            actor: var("GITMIRROR_USER"),
            repo: var("GITMIRROR_REPO"),
        }
    }
}

/// Why an `RW` user may not make `u`, or `None` when it is a plain fast-forward or a creation.
fn needs_rewind(repo: &git2::Repository, u: &RefUpdate) -> Option<String> {
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

/// The pre-receive check for `RW` users: every update must be a creation or a fast-forward.
/// Runs inside git's quarantine, so the repository is opened from git's environment.
pub fn pre_receive(pusher: &Pusher, updates: &[RefUpdate]) -> Result<(), HookError> {
    let repo = git2::Repository::open_from_env().map_err(HookError::Repo)?;
    for u in updates {
        if let Some(refused) = needs_rewind(&repo, u) {
            info!(actor = %pusher.actor, repo = %pusher.repo, reference = %u.name, decision = "deny", reason = %refused, "ref update");
            return Err(HookError::Refused {
                user: pusher.actor.clone(),
                repo: pusher.repo.clone(),
                refused: format!("{refused} needs RW+"),
            });
        }
    }
    Ok(())
}

/// The post-receive step: logs each accepted update. (Replication hooks in here.)
pub fn post_receive(pusher: &Pusher, updates: &[RefUpdate]) -> Result<(), HookError> {
    for u in updates {
        info!(actor = %pusher.actor, repo = %pusher.repo, reference = %u.name, old = %u.old, new = %u.new, "ref updated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hook_input() {
        let zero = "0".repeat(40);
        let one = "1".repeat(40);
        let text = format!("{zero} {one} refs/heads/main\n{one} {zero} refs/tags/v 1\n");
        let u = read_updates(text.as_bytes()).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u[0].old.is_zero());
        assert_eq!(u[1].name, "refs/tags/v 1");
        assert!(read_updates("garbage\n".as_bytes()).is_err());
        assert!(read_updates(format!("{zero} xyz refs/x\n").as_bytes()).is_err());
    }
}
