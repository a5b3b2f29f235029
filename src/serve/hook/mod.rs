//! `gitmirror hook NAME`: what the hook scripts in `hooks/` run inside git's receive-pack.
//!
//! - [`pre_receive`]: refuses what `RW` does not allow, for users without `RW+` (the script
//!   calls us only for them).
//! - [`post_receive`]: records the ref updates and, on a repo's master, queues them durably
//!   for the slaves and has the daemon push them: waiting in sync mode, not in async mode.
//! - [`admin`]: the admin repo's commit applied, on its master and on its slaves.
//! - [`slave`]: the same hook on a slave, for a push from its master: applies the master's
//!   HEAD and keeps refs that had diverged from it. It replicates nothing.

pub(crate) mod admin;
pub(crate) mod post_receive;
pub(crate) mod pre_receive;
pub(crate) mod slave;

use std::io::BufRead;

use thiserror::Error;

use crate::daemon::request::RequestError;
use crate::names::RepoName;
use crate::proto;
use crate::replicate::queue::QueueError;
use crate::repo::StoreError;

pub(crate) use post_receive::post_receive;
pub(crate) use pre_receive::pre_receive;

/// A ref update as git reports it to hooks: `OLD NEW REFNAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefUpdate {
    /// The ref's value before the push (zero when created).
    pub(crate) old: git2::Oid,
    /// The ref's value after the push (zero when deleted).
    pub(crate) new: git2::Oid,
    /// The full ref name, e.g. `refs/heads/master` (lossily decoded when not UTF-8).
    pub(crate) name: String,
    /// Whether git gave the name as valid UTF-8; one that is not cannot be mirrored.
    pub(crate) utf8: bool,
}

/// What can go wrong in a hook.
#[derive(Debug, Error)]
pub(crate) enum HookError {
    #[error("cannot read the ref updates from git: {0}")]
    Input(#[from] std::io::Error),
    #[error("malformed ref update line from git: {0:?}")]
    Malformed(String),
    #[error("cannot open the repository: {0}")]
    Repo(#[source] git2::Error),
    #[error("{why}; gitmirror could not mirror it to the slaves, so the push is refused")]
    Unmirrorable { why: String },
    #[error("{user} may not do this to {repo}: {refused}")]
    Refused {
        user: String,
        repo: String,
        refused: String,
    },
    #[error("{repo}: {source}; its slaves were not updated")]
    Settings {
        repo: RepoName,
        #[source]
        source: StoreError,
    },
    #[error("{repo}: cannot queue the mirror push: {source}; its slaves were not updated")]
    Queue {
        repo: RepoName,
        #[source]
        source: QueueError,
    },
    /// A push to the admin repo refused, said in full.
    #[error("{0}")]
    AdminRefused(String),
    /// An error after lines the pusher must see first (what the admin repo's commit changed).
    #[error("{error}")]
    AfterLines {
        lines: Vec<String>,
        error: Box<HookError>,
    },
    #[error("{repo}: {source}; its slaves were not updated")]
    Wait {
        repo: RepoName,
        #[source]
        source: RequestError,
    },
}

/// Reads git's hook input, as bytes: a ref name need not be UTF-8, and one that is not must
/// be refused by name, not stop the hook before it does its work.
pub(crate) fn read_updates(input: impl BufRead) -> Result<Vec<RefUpdate>, HookError> {
    let mut updates = Vec::new();
    for line in input.split(b'\n') {
        let line = line?;
        let shown = || String::from_utf8_lossy(&line).into_owned();
        let mut parts = line.splitn(3, |b| *b == b' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(HookError::Malformed(shown()));
        };
        let oid = |s: &[u8]| {
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| git2::Oid::from_str(s).ok())
                .ok_or_else(|| HookError::Malformed(shown()))
        };
        updates.push(RefUpdate {
            old: oid(old)?,
            new: oid(new)?,
            name: String::from_utf8_lossy(name).into_owned(),
            utf8: std::str::from_utf8(name).is_ok(),
        });
    }
    Ok(updates)
}

/// Who pushed and to which repo, as the shells told git in the environment.
#[derive(Debug, Clone, Default)]
pub(crate) struct PushedBy {
    /// The user behind the push; empty for a peer's or a local push.
    pub(crate) actor: String,
    /// The peer behind the push (a mirror push from the repo's master), if any.
    pub(crate) peer: Option<String>,
    /// The slave that carried the user's push here (a redirected push), if any.
    pub(crate) via: Option<String>,
    /// The repo name; empty for a local push.
    pub(crate) repo: String,
    /// The user's access level as the shell decided it (`RW`, `RW+`).
    pub(crate) access: String,
}

impl PushedBy {
    /// Reads what the shell that started git put into its environment (see [`proto`]).
    pub(crate) fn from_env() -> Self {
        let var = |k| std::env::var(k).unwrap_or_default();
        let given = |k| Some(var(k)).filter(|v| !v.is_empty());
        PushedBy {
            actor: var(proto::ENV_USER),
            peer: given(proto::ENV_PEER),
            via: given(proto::ENV_VIA),
            repo: var(proto::ENV_REPO),
            access: var(proto::ENV_ACCESS),
        }
    }
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
        assert!(u[0].utf8 && u[1].utf8);
        // A name that is not UTF-8 is read, and marked, rather than failing the hook.
        let mut raw = format!("{zero} {one} refs/heads/caf").into_bytes();
        raw.extend_from_slice(b"\xe9\n");
        let u = read_updates(&raw[..]).unwrap();
        assert_eq!(
            (u[0].name.as_str(), u[0].utf8),
            ("refs/heads/caf\u{fffd}", false)
        );
        assert!(read_updates("garbage\n".as_bytes()).is_err());
        assert!(read_updates(format!("{zero} xyz refs/x\n").as_bytes()).is_err());
    }
}
