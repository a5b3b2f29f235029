//! `gitmirror hook NAME`: what the hook scripts in `hooks/` run inside git's receive-pack.
//!
//! - `pre-receive` refuses what `RW` does not allow, for users without `RW+` (the script
//!   calls us only for them), and on a slave keeps refs that diverged from the master.
//! - `post-receive` records the ref updates and, on a repo's master, queues them durably for
//!   the slaves and has the daemon push them: waiting in sync mode, not in async mode. On a
//!   slave (a push from the master) it applies the master's HEAD and replicates nothing.

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::daemon;
use crate::home::Home;
use crate::mirror;
use crate::names::RepoName;
use crate::push::{HEAD_OPTION, SET_HEAD_REF};
use crate::queue::Queue;
use crate::store::{self, Store};

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
    #[error("{user} may not do this to {repo}: {refused}")]
    Refused {
        user: String,
        repo: String,
        refused: String,
    },
    #[error("{repo}: {message}; its slaves were not updated")]
    Mirror { repo: String, message: String },
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

/// Who pushed and to which repo, as the shells told git in the environment.
#[derive(Debug, Clone, Default)]
pub struct Pusher {
    /// The user behind the push; empty for a peer's or a local push.
    pub actor: String,
    /// The peer behind the push (a mirror push from the repo's master), if any.
    pub peer: Option<String>,
    /// The repo name; empty for a local push.
    pub repo: String,
    /// The user's access level as the shell decided it (`RW`, `RW+`).
    pub access: String,
}

impl Pusher {
    /// Reads `GITMIRROR_USER`, `GITMIRROR_PEER` and `GITMIRROR_REPO`.
    pub fn from_env() -> Self {
        let var = |k| std::env::var(k).unwrap_or_default();
        let peer = var("GITMIRROR_PEER");
        Pusher {
            actor: var("GITMIRROR_USER"),
            peer: (!peer.is_empty()).then_some(peer),
            repo: var("GITMIRROR_REPO"),
            access: var("GITMIRROR_ACCESS"),
        }
    }
}

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
pub fn pre_receive(pusher: &Pusher, updates: &[RefUpdate]) -> Result<(), HookError> {
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

/// The post-receive step. Logs each accepted update; then, on the repo's master, queues the
/// push for every slave durably (fsynced before the pusher hears back) and has the daemon
/// carry it out: waiting for the slaves in sync mode, not in async mode. On a slave it applies
/// the master's HEAD. Returns the lines the pusher should see.
pub fn post_receive(
    home: &Home,
    config: Arc<ServerConfig>,
    pusher: &Pusher,
    updates: &[RefUpdate],
) -> Result<Vec<String>, HookError> {
    let actor = pusher.peer.as_deref().unwrap_or(&pusher.actor);
    for u in updates {
        info!(actor = %actor, repo = %pusher.repo, reference = %u.name, old = %u.old, new = %u.new, "ref updated");
    }
    let path = std::env::current_dir().map_err(HookError::Input)?;
    if pusher.peer.is_some() {
        apply_head_option(&path);
        return Ok(slave_side(home, pusher, &path, updates));
    }
    let mirror_err = |message: String| HookError::Mirror {
        repo: pusher.repo.clone(),
        message,
    };
    let repo = match RepoName::parse(&pusher.repo) {
        Ok(r) => r,
        Err(_) => match Store::new(home.repositories()).name_of(&path) {
            Some(r) => r,
            None => return Ok(Vec::new()),
        },
    };
    let rule = match store::mirror_config(&path).map_err(|e| mirror_err(e.to_string()))? {
        Some(rule) if rule.is_master(&config.hostname) && !rule.slaves.is_empty() => rule,
        _ => return Ok(Vec::new()),
    };
    let queue = Queue::new(home.queue_dir());
    let record = match queue.enqueue_record(&repo, &rule.slaves) {
        Ok(r) => r,
        Err(e) => {
            // The refs have moved: have the daemon push them even though the queue could
            // not record it, and say so.
            let _ = daemon::notify(home, &repo);
            return Err(mirror_err(format!("cannot queue the mirror push: {e}")));
        }
    };
    let mut lines = failing_slaves(&record, &repo, &config.hostname);
    let m = &config.mirror;
    if rule.sync.unwrap_or(m.sync) {
        let diverged = |r: crate::queue::Record| -> Vec<(String, Option<String>)> {
            r.slaves
                .into_iter()
                .map(|(s, e)| (s, e.last_diverged))
                .collect()
        };
        let before = diverged(record);
        let deadline = Instant::now() + Duration::from_secs_f64(m.sync_timeout_secs);
        let report = mirror::wait(home, &config, &repo, &rule.slaves, deadline, m.sync_quorum)
            .map_err(|e| mirror_err(e.to_string()))?;
        lines.extend(report.lines);
        for (slave, d) in queue.load(&repo).map(diverged).unwrap_or_default() {
            if let Some(d) = d.filter(|d| !before.contains(&(slave.clone(), Some(d.clone())))) {
                lines.push(format!(
                    "WARNING: {slave} had diverged from {}; the master's state won, and {slave} kept its own: {d}",
                    config.hostname
                ));
            }
        }
        return Ok(lines);
    }
    if let Err(e) = daemon::notify(home, &repo) {
        // The queue holds the work; the daemon picks it up whenever it runs.
        warn!(%repo, error = %e, "cannot reach the daemon; the push stays queued");
    }
    lines.extend(
        rule.slaves
            .iter()
            .map(|slave| format!("{} ==== ({repo}) ===> {slave} (async)", config.hostname)),
    );
    Ok(lines)
}

/// Warnings for the pusher about slaves of `repo` that have been failing.
fn failing_slaves(
    record: &crate::queue::Record,
    repo: &RepoName,
    this: &crate::names::AccountName,
) -> Vec<String> {
    record
        .slaves
        .iter()
        .filter_map(|(slave, entry)| {
            let p = entry.pending.as_ref()?;
            let error = p.last_error.as_ref()?;
            Some(format!(
                "WARNING: {this} ==== ({repo}) =X=> {slave} has been failing for {} ({} attempts): {error}",
                crate::status::age(p.since),
                p.attempts
            ))
        })
        .collect()
}

/// Where diverged refs are kept on a slave; hidden from peers, so mirror pushes leave them be.
pub const DIVERGED_NS: &str = "refs/gitmirror/diverged/";

/// On a slave, after a mirror push: keeps every ref the push overwrote that was not what the
/// master last gave us (changed behind its back), reports it, and remembers the new state.
fn slave_side(home: &Home, pusher: &Pusher, path: &Path, updates: &[RefUpdate]) -> Vec<String> {
    let Ok(repo_name) = RepoName::parse(&pusher.repo) else {
        return Vec::new();
    };
    let memory = home
        .state_dir()
        .join("mirrored")
        .join(format!("{}.json", repo_name.as_str().replace('/', "~")));
    let last: std::collections::BTreeMap<String, String> = std::fs::read(&memory)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut lines = Vec::new();
    let result = git2::Repository::open_bare(path).and_then(|repo| {
        let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let mut memory_now = last.clone();
        for u in updates {
            if u.name.starts_with(crate::push::OWN_NS) {
                continue;
            }
            // What the master gave us becomes what we remember, ref by ref.
            if u.new.is_zero() {
                memory_now.remove(&u.name);
            } else {
                memory_now.insert(u.name.clone(), u.new.to_string());
            }
            let expected = last.get(&u.name).map(String::as_str).unwrap_or("");
            let had = if u.old.is_zero() {
                String::new()
            } else {
                u.old.to_string()
            };
            if had == expected {
                continue;
            }
            if u.old.is_zero() {
                lines.push(format!(
                    "{}{} had been deleted here",
                    crate::push::DIVERGED_PREFIX,
                    u.name
                ));
                continue;
            }
            let base = format!(
                "{DIVERGED_NS}{stamp}/{}",
                u.name.trim_start_matches("refs/")
            );
            let kept = (0..)
                .map(|n| {
                    if n == 0 {
                        base.clone()
                    } else {
                        format!("{base}.{n}")
                    }
                })
                .find(|name| repo.find_reference(name).is_err())
                .unwrap_or(base);
            repo.reference(&kept, u.old, false, "gitmirror: diverged from the master")?;
            lines.push(format!(
                "{}{} was {} here, kept as {kept}",
                crate::push::DIVERGED_PREFIX,
                u.name,
                &had[..12.min(had.len())]
            ));
        }
        Ok(memory_now)
    });
    match result {
        Ok(now) => {
            let text = serde_json::to_vec(&now).unwrap_or_default();
            let written = crate::fsutil::ensure_dir(memory.parent().unwrap_or(path), 0o700)
                // Losing this in a crash only makes the next push keep extra refs.
                .and_then(|()| crate::fsutil::replace(&memory, &text, 0o600));
            if let Err(e) = written {
                warn!(repo = %repo_name, error = %e, "cannot remember the mirrored state");
            }
        }
        Err(e) => warn!(repo = %repo_name, error = %e, "cannot check for divergence"),
    }
    for l in &lines {
        warn!(repo = %repo_name, report = %l, "diverged from the master");
    }
    lines
}

/// On a slave: points HEAD where the master's HEAD points, as carried in the push option.
fn apply_head_option(path: &Path) {
    let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let target = (0..count)
        .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
        .find_map(|o| o.strip_prefix(HEAD_OPTION).map(str::to_string));
    let Some(target) = target else {
        return;
    };
    if !target.starts_with("refs/") || !git2::Reference::is_valid_name(&target) {
        warn!(target, "ignoring an invalid HEAD from the master");
        return;
    }
    let result = git2::Repository::open_bare(path).and_then(|repo| {
        let current = repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string));
        if current.as_deref() != Some(target.as_str()) {
            repo.set_head(&target)?;
            info!(head = target, "HEAD set as on the master");
        }
        if let Ok(mut carrier) = repo.find_reference(SET_HEAD_REF) {
            carrier.delete()?;
        }
        Ok(())
    });
    if let Err(e) = result {
        warn!(error = %e, "cannot set HEAD as on the master");
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
        assert!(read_updates("garbage\n".as_bytes()).is_err());
        assert!(read_updates(format!("{zero} xyz refs/x\n").as_bytes()).is_err());
    }
}
