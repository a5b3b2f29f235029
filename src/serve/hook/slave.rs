//! The post-receive hook on a slave, for a mirror push from the repo's master: HEAD set as
//! the master's, and refs that had changed behind the master's back kept and reported.

use std::collections::BTreeMap;
use std::path::Path;

use tracing::{info, warn};

use super::{PushedBy, RefUpdate};
use crate::fs::{ensure_dir, replace};
use crate::home::Home;
use crate::names::RepoName;
use crate::proto::{self, DIVERGED_NS, DIVERGED_PREFIX, HEAD_OPTION, OWN_NS, SET_HEAD_REF};
use crate::repo::orphaning::free_ref_name;

/// After a mirror push from the repo's master: HEAD as the master's (`head`, when the master
/// sent one), then the divergence check. Returns the lines the master should see.
pub(crate) fn received(
    home: &Home,
    pusher: &PushedBy,
    path: &Path,
    head: Option<&str>,
    updates: &[RefUpdate],
) -> Vec<String> {
    if let Some(head) = head {
        apply_head(path, head);
    }
    keep_diverged(home, pusher, path, updates, &[])
}

/// The master's HEAD as the push option carries it to the hook, if it sent one.
pub(crate) fn head_option_from_env() -> Option<String> {
    let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (0..count)
        .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
        .find_map(|o| o.strip_prefix(HEAD_OPTION).map(str::to_string))
}

/// Keeps every ref the push overwrote that was not what the master last gave us (changed
/// behind its back), reports it, and remembers the new state.
pub(crate) fn keep_diverged(
    home: &Home,
    pusher: &PushedBy,
    path: &Path,
    updates: &[RefUpdate],
    kept_already: &[String],
) -> Vec<String> {
    let Ok(repo_name) = RepoName::parse(&pusher.repo) else {
        return Vec::new();
    };
    let memory = home
        .mirrored_dir()
        .join(format!("{}.json", proto::flat_name(&repo_name)));
    let last: BTreeMap<String, String> = std::fs::read(&memory)
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
            if u.name.starts_with(OWN_NS) {
                continue;
            }
            // What the master gave us becomes what we remember, ref by ref.
            if u.new.is_zero() {
                memory_now.remove(&u.name);
            } else {
                memory_now.insert(u.name.clone(), u.new.to_string());
            }
            if kept_already.contains(&u.name) {
                continue;
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
                lines.push(format!("{DIVERGED_PREFIX}{} had been deleted here", u.name));
                continue;
            }
            let base = format!(
                "{DIVERGED_NS}{stamp}/{}",
                u.name.trim_start_matches("refs/")
            );
            let kept = free_ref_name(&repo, &base).unwrap_or(base);
            repo.reference(&kept, u.old, false, "gitmirror: diverged from the master")?;
            lines.push(format!(
                "{DIVERGED_PREFIX}{} was {} here, kept as {kept}",
                u.name,
                &had[..12.min(had.len())]
            ));
        }
        Ok(memory_now)
    });
    match result {
        Ok(now) => {
            let text = serde_json::to_vec(&now).unwrap_or_default();
            let written = ensure_dir(memory.parent().unwrap_or(path), 0o700)
                // Losing this in a crash only makes the next push keep extra refs.
                .and_then(|()| replace(&memory, &text, 0o600));
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

/// On a slave: points HEAD where the master's HEAD points (`target`), and drops the ref that
/// carried a HEAD-only change.
pub(crate) fn apply_head(path: &Path, target: &str) {
    if !target.starts_with("refs/") || !git2::Reference::is_valid_name(target) {
        warn!(target, "ignoring an invalid HEAD from the master");
        return;
    }
    let result = git2::Repository::open_bare(path).and_then(|repo| {
        let current = repo
            .find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string));
        if current.as_deref() != Some(target) {
            repo.set_head(target)?;
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
