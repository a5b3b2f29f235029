//! The admin repo's step in the hooks: once a push moved its default branch, the commit
//! becomes this server's configuration. On the master (a user's push, after pre-receive
//! validated it) and on each slave (the master's mirror push, which the master validated),
//! each server with its own hostname deciding its role in every repo.

use std::path::Path;

use tracing::error;

use super::{PushedBy, RefUpdate};
use crate::admin::admin_repo::snapshot::default_branch;
use crate::admin::admin_repo::{self, ADMIN_REPO, AdminRepoError, apply};
use crate::config::ServerConfig;
use crate::home::Home;
use crate::names::{AccountName, RepoName};

/// On a slave, after a mirror push of any repo: applies it when it is the admin repo. Returns
/// the lines for the master (which logs them).
pub(crate) fn apply_mirrored(
    home: &Home,
    pusher: &PushedBy,
    path: &Path,
    updates: &[RefUpdate],
) -> Vec<String> {
    let is_admin = RepoName::parse(&pusher.repo).is_ok_and(|r| admin_repo::is_admin_repo(&r));
    if !is_admin {
        return Vec::new();
    }
    match ServerConfig::of(home) {
        Ok(config) => apply_pushed(home, &config.hostname, path, updates),
        Err(e) => {
            error!(error = %e, "cannot read this server's config; admin repo not applied");
            vec![format!("ERROR: {ADMIN_REPO} was not applied: {e}")]
        }
    }
}

/// Applies the admin repo's default branch, if this push moved it, and returns the lines the
/// pusher sees: one per change, or why nothing (or not all) was applied. The push itself stands
/// either way (git has moved the ref), so a failure is reported, logged and recorded for
/// `status`, not returned.
pub(crate) fn apply_pushed(
    home: &Home,
    hostname: &AccountName,
    path: &Path,
    updates: &[RefUpdate],
) -> Vec<String> {
    let branch = match git2::Repository::open_bare(path)
        .map_err(AdminRepoError::from)
        .and_then(|r| default_branch(&r))
    {
        Ok(b) => b,
        Err(e) => {
            error!(error = %e, "cannot read the admin repo's default branch");
            return vec![format!(
                "ERROR: {ADMIN_REPO} was not applied on {hostname}: {e}"
            )];
        }
    };
    let Some(new) = updates
        .iter()
        .find(|u| u.name == branch && !u.new.is_zero())
        .map(|u| u.new)
    else {
        return Vec::new();
    };
    match apply::apply_commit(home, hostname, path, new) {
        Ok(changes) => changes
            .into_iter()
            .map(|c| format!("{hostname}: {c}"))
            .collect(),
        Err(e) => vec![format!(
            "ERROR: {ADMIN_REPO} {new} was accepted but NOT applied on {hostname}: {e}; \
             `gitmirror status` there shows it until a later push or `gitmirror compile` applies it"
        )],
    }
}
