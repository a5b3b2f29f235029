//! An accepted commit of the admin repo made this server's configuration: `repos.toml`
//! written, the keys made those of the commit, then the same compile `gitmirror compile` runs.
//!
//! Everything is validated before the first write (the commit by [`Snapshot::of_commit`], the
//! key set against authorized_keys by `keys::replace_all`). Should a write still fail, what was
//! written is undone where that is possible (repos.toml, if the keys could not be changed);
//! compile itself is idempotent, so a failure there leaves files that a later compile finishes.
//! Either way the outcome is recorded in `state/admin.json` for `status`, and the pusher sees
//! it. Applies are serialized (`state/admin.lock`) and each applies the branch's tip.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::AdminRepoError;
use super::name;
use super::snapshot::{Snapshot, default_branch};
use crate::admin::compile::{self, CompileReport};
use crate::admin::keys::{self, Role};
use crate::config::ServerConfig;
use crate::fs::{Context, ensure_dir, lock, write_atomic, write_if_changed};
use crate::home::Home;
use crate::invocation::Invocation;
use crate::names::AccountName;
use crate::replicate::queue::now;
use crate::repo::Store;

/// What `state/admin.json` keeps: the last commit applied, and the last failure since.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AppliedRecord {
    /// The last commit applied whole.
    pub(crate) applied: Option<String>,
    /// When (seconds since the epoch).
    pub(crate) applied_at: Option<f64>,
    /// A commit that could not be applied, with why; cleared by the next success.
    pub(crate) failed: Option<Failure>,
}

/// A commit that was accepted but not applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub(crate) commit: String,
    pub(crate) at: f64,
    pub(crate) error: String,
}

impl AppliedRecord {
    /// The record, or an empty one when there is none (or it cannot be read: `status` says
    /// nothing then rather than fail).
    pub(crate) fn load(home: &Home) -> Self {
        std::fs::read(record_path(home))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, home: &Home) {
        let path = record_path(home);
        let saved = serde_json::to_vec_pretty(self)
            .map_err(|e| e.to_string())
            .and_then(|b| write_atomic(&path, &b, 0o600).map_err(|e| e.to_string()));
        if let Err(e) = saved {
            error!(file = %path.display(), error = %e, "cannot record the admin repo's state");
        }
    }
}

fn record_path(home: &Home) -> PathBuf {
    home.state_dir().join("admin.json")
}

/// Applies `commit` of the admin repo at `repo_path` to this server and returns one line per
/// change. The outcome is recorded either way.
pub(crate) fn apply_commit(
    home: &Home,
    hostname: &AccountName,
    repo_path: &Path,
    commit: git2::Oid,
) -> Result<Vec<String>, AdminRepoError> {
    apply_recorded(home, hostname, repo_path, commit, false).map(|(lines, _)| lines)
}

/// What `gitmirror compile` did on a server that has an admin repo.
#[derive(Debug)]
pub(crate) struct CompiledCommitted {
    /// The commit whose configuration was compiled.
    pub(crate) commit: git2::Oid,
    /// Where the hand-edited repos.toml it replaced was kept, if it differed.
    pub(crate) hand_edit: Option<PathBuf>,
    /// One line per change (repos.toml, keys, then the compile's own).
    pub(crate) lines: Vec<String>,
    pub(crate) report: CompileReport,
}

/// On a server with an admin repo whose default branch has a commit, `compile` compiles that
/// commit, not whatever `repos.toml` holds: a hand edit would otherwise be undone by the next
/// admin push, silently. A `repos.toml` that differs is kept beside it
/// (`repos.toml.hand-edited`) and reported. `None`: no admin repo, or an empty one.
pub(crate) fn compile_committed(
    home: &Home,
    hostname: &AccountName,
    accept: bool,
) -> Result<Option<CompiledCommitted>, AdminRepoError> {
    let Some(path) = Store::new(home.repositories()).find(&name()) else {
        return Ok(None);
    };
    let repo = git2::Repository::open_bare(&path)?;
    let branch = default_branch(&repo)?;
    let commit = match repo.refname_to_id(&branch) {
        Ok(c) => c,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let snapshot = Snapshot::of_commit(&repo, commit)?;
    let rules_path = home.rules_path();
    let hand_edit = match std::fs::read(&rules_path) {
        Ok(text) if text != snapshot.rules_text.as_bytes() => {
            let kept = home.root().join("repos.toml.hand-edited");
            write_atomic(&kept, &text, 0o600)?;
            warn!(%commit, kept = %kept.display(), "repos.toml differs from the admin repo's; the committed one is compiled");
            Some(kept)
        }
        _ => None,
    };
    let (lines, report) = apply_recorded(home, hostname, &path, commit, accept)?;
    Ok(Some(CompiledCommitted {
        commit,
        hand_edit,
        lines,
        report,
    }))
}

/// [`apply`], with the outcome recorded in `state/admin.json`.
fn apply_recorded(
    home: &Home,
    hostname: &AccountName,
    repo_path: &Path,
    commit: git2::Oid,
    accept: bool,
) -> Result<(Vec<String>, CompileReport), AdminRepoError> {
    // Two pushes close together run their hooks side by side; one at a time, each applying
    // the branch as it is then, the last to finish cannot leave an older commit in force.
    ensure_dir(&home.state_dir(), 0o700)?;
    let _lock = lock(&home.state_dir().join("admin.lock"))?;
    let repo = git2::Repository::open_bare(repo_path)?;
    let commit = default_branch(&repo)
        .and_then(|b| Ok(repo.refname_to_id(&b)?))
        .unwrap_or(commit);
    let result = Snapshot::of_commit(&repo, commit)
        .and_then(|snapshot| apply(home, hostname, &snapshot, accept));
    let mut record = AppliedRecord::load(home);
    match &result {
        Ok((lines, _)) => {
            info!(%commit, changes = lines.len(), "admin repo applied");
            record.applied = Some(commit.to_string());
            record.applied_at = Some(now());
            record.failed = None;
        }
        Err(e) => {
            error!(%commit, error = %e, "admin repo not applied");
            record.failed = Some(Failure {
                commit: commit.to_string(),
                at: now(),
                error: e.to_string(),
            });
        }
    }
    record.save(home);
    result
}

/// Makes `snapshot` this server's configuration (see the module doc for the order); `accept`
/// as `compile --accept-config`.
pub(crate) fn apply(
    home: &Home,
    hostname: &AccountName,
    snapshot: &Snapshot,
    accept: bool,
) -> Result<(Vec<String>, CompileReport), AdminRepoError> {
    let config = ServerConfig::of(home)?;
    let invocation = Invocation::current(home, config.program.as_deref())?;
    let rules_path = home.rules_path();
    let previous = match std::fs::read(&rules_path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).at("cannot read", &rules_path)?,
    };
    let mut lines = Vec::new();
    if write_if_changed(&rules_path, snapshot.rules_text.as_bytes(), 0o600)? {
        lines.push("repos.toml updated".to_string());
    }
    // This server's own key is in keys/peers for the other servers; it is not its own peer.
    let wanted: Vec<keys::Entry> = snapshot
        .keys
        .iter()
        .filter(|e| !(e.role == Role::Peer && &e.name == hostname))
        .cloned()
        .collect();
    let roles: &[Role] = if snapshot.has_peers {
        &[Role::User, Role::Peer]
    } else {
        &[Role::User]
    };
    match keys::replace_all(home, roles, &wanted, &invocation) {
        Ok(changes) => lines.extend(changes.iter().map(ToString::to_string)),
        Err(e) => {
            // The keys are all checked before the first is written, so a refused set left them
            // as they were: put repos.toml back too, so that the server is as it was.
            if let Some(old) = &previous {
                let _ = write_if_changed(&rules_path, old, 0o600);
            }
            return Err(e.into());
        }
    }
    let report = compile::compile(home, accept)?;
    lines.extend(report.lines());
    Ok((lines, report))
}
