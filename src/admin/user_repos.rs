//! User-created repos on their master: creating one (a push to a new name a pattern's `C`
//! allows, or `ssh git@server create NAME`) and changing who else may use it (`perms`).
//!
//! Both record the creator and roles in the repo (`repo::wild`) and queue a `perms` store
//! operation for each slave of the pattern's mirror settings, through the same durable queue
//! as deletes and renames: a slave creates the repo from it (where its own rules have a
//! matching pattern) before the first push of the name reaches it, and a later change of
//! perms reaches it the same way.

use std::path::PathBuf;

use thiserror::Error;
use tracing::info;

use crate::config::rules::Decision;
use crate::config::rules::ROLES;
use crate::config::{Access, Ask, RepoRoles, Rules, ServerConfig};
use crate::daemon::client;
use crate::home::Home;
use crate::invocation::Invocation;
use crate::names::{AccountName, RepoName};
use crate::replicate::op_queue::OpQueue;
use crate::replicate::queue::QueueError;
use crate::repo::store_op::StoreOp;
use crate::repo::wild::{self, WildError};
use crate::repo::{Placed, Store, StoreError, mastership};

/// Why a repo could not be created, or its perms not changed. One line for the user.
#[derive(Debug, Error)]
pub(crate) enum UserRepoError {
    /// Not allowed, or no pattern: the same answer as for a missing repo.
    #[error("{repo}: no such repo, or {user} may not read it")]
    NoAccess { user: AccountName, repo: RepoName },
    #[error("{repo} exists already")]
    Exists { repo: RepoName },
    #[error("{repo} is created on its master, {master}; this is {this}")]
    NotMaster {
        repo: RepoName,
        master: AccountName,
        this: AccountName,
    },
    #[error("{repo} was not created by a user: its rules are in repos.toml")]
    NotWild { repo: RepoName },
    #[error("only {creator}, who created {repo}, may change its perms")]
    NotCreator {
        repo: RepoName,
        creator: AccountName,
    },
    #[error("unknown role {0:?}; expected {roles}", roles = ROLES.join(" or "))]
    Role(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Wild(#[from] WildError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Invocation(String),
}

/// Creates `repo` for `user` when a pattern's `C` allows it, on this server as its master;
/// returns its path. A repo created meanwhile by someone else is left as it is (and its
/// creator's rules decide what `user` may do next).
pub(crate) fn create(
    home: &Home,
    config: &ServerConfig,
    rules: &Rules,
    user: &AccountName,
    repo: &RepoName,
) -> Result<PathBuf, UserRepoError> {
    let store = Store::new(home.repositories());
    let refused = || UserRepoError::NoAccess {
        user: user.clone(),
        repo: repo.clone(),
    };
    match creation(rules, &store, user, repo) {
        Ok(d) if d.allowed => {}
        // Said only to users who may read it: to anyone else an existing repo and a
        // missing one get the same answer.
        Err(Uncreatable::Exists(path)) => {
            let roles = wild::roles(&path).unwrap_or_default();
            return Err(if rules.access_with(user, repo, &roles) >= Access::Read {
                UserRepoError::Exists { repo: repo.clone() }
            } else {
                refused()
            });
        }
        _ => return Err(refused()),
    }
    let mirror = rules.mirror(repo);
    if let Some(m) = &mirror
        && m.master != config.hostname
    {
        return Err(UserRepoError::NotMaster {
            repo: repo.clone(),
            master: m.master.clone(),
            this: config.hostname.clone(),
        });
    }
    let invocation = Invocation::current(home, config.program.as_deref())
        .map_err(|e| UserRepoError::Invocation(e.to_string()))?;
    let staged = store.stage(repo, &invocation, mirror.as_ref())?;
    let roles = RepoRoles {
        creator: Some(user.clone()),
        roles: Vec::new(),
    };
    // Recorded before the repo appears: nobody sees it without its creator, and no slave
    // misses it (the operation is queued first, and dropped if the repo is not ours).
    wild::save(staged.path(), &roles)?;
    let ops = OpQueue::new(home.ops_dir());
    let slaves = mirror
        .as_ref()
        .map(|m| m.slaves.clone())
        .unwrap_or_default();
    let mut record = match &slaves[..] {
        [] => None,
        _ => Some(ops.begin(perms_op(repo, &roles)?, 0, &slaves)?),
    };
    let placed = staged.place();
    let path = match placed {
        Ok(Placed::Ours(path)) => path,
        Ok(Placed::Theirs(path)) => {
            if let Some(r) = &record {
                ops.abandon(r)?;
            }
            info!(repo = %repo, "created meanwhile by another user");
            return Ok(path);
        }
        Err(e) => {
            if let Some(r) = &record {
                ops.abandon(r)?;
            }
            return Err(e.into());
        }
    };
    info!(repo = %repo, creator = %user, "user-created repo");
    if let Some(r) = record.as_mut() {
        ops.ready(r)?;
        notify(home);
    }
    Ok(path)
}

fn perms_op(repo: &RepoName, roles: &RepoRoles) -> Result<StoreOp, UserRepoError> {
    let creator = roles
        .creator
        .clone()
        .ok_or_else(|| UserRepoError::NotWild { repo: repo.clone() })?;
    Ok(StoreOp::Perms {
        repo: repo.clone(),
        creator,
        roles: roles.roles.clone(),
    })
}

fn notify(home: &Home) {
    if let Err(e) = client::notify_ops(home) {
        tracing::warn!(error = %e, "cannot reach the daemon; the perms stay queued");
    }
}

/// Why a name is not for a user to create, whatever the rules say.
#[derive(Debug)]
pub(crate) enum Uncreatable {
    /// A repo has the name here.
    Exists(PathBuf),
    /// `repos.toml` gives it a table (or a repo group with one): `compile` creates it.
    Named,
    /// The admin repo.
    Admin,
}

impl std::fmt::Display for Uncreatable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Uncreatable::Exists(_) => "it exists",
            Uncreatable::Named => "repos.toml names it (compile creates it)",
            Uncreatable::Admin => "it is the admin repo",
        })
    }
}

/// What decides whether `user` may create `repo`: the name must be free and not the
/// administrator's, then a pattern's `C` decides. `gitmirror access REPO USER C` and the
/// shells ask this same question.
pub(crate) fn creation(
    rules: &Rules,
    store: &Store,
    user: &AccountName,
    repo: &RepoName,
) -> Result<Decision, Uncreatable> {
    if let Some(path) = store.find(repo) {
        return Err(Uncreatable::Exists(path));
    }
    if rules.names(repo) {
        return Err(Uncreatable::Named);
    }
    if repo.as_str() == crate::proto::ADMIN_REPO {
        return Err(Uncreatable::Admin);
    }
    Ok(rules.decide(user, repo, Ask::CreateRepo, None, &RepoRoles::default()))
}

/// The `perms` text of a user-created repo, for users who may read it.
pub(crate) fn list(roles: &RepoRoles) -> String {
    let mut out = String::new();
    if let Some(c) = &roles.creator {
        out.push_str(&format!("CREATOR {c}\n"));
    }
    out.push_str(&wild::perms_text(&roles.roles));
    out
}

/// Adds (`add`) or removes `who` from `role` of the repo at `path`, for its creator `user`,
/// and queues the change for its slaves. Returns the perms as they are now.
pub(crate) fn change(
    home: &Home,
    user: &AccountName,
    repo: &RepoName,
    path: &std::path::Path,
    add: bool,
    role: &str,
    who: &AccountName,
) -> Result<RepoRoles, UserRepoError> {
    if !ROLES.contains(&role) {
        return Err(UserRepoError::Role(role.to_string()));
    }
    // Two changes at once must not lose one.
    let _held = crate::fs::lock(&path.join("gl-perms.lock")).map_err(WildError::from)?;
    let mut roles = wild::roles(path)?;
    let Some(creator) = roles.creator.clone() else {
        return Err(UserRepoError::NotWild { repo: repo.clone() });
    };
    if &creator != user {
        return Err(UserRepoError::NotCreator {
            repo: repo.clone(),
            creator,
        });
    }
    let idx = match roles.roles.iter().position(|(r, _)| r == role) {
        Some(i) => i,
        None => {
            roles.roles.push((role.to_string(), Vec::new()));
            roles.roles.len() - 1
        }
    };
    let users = &mut roles.roles[idx].1;
    if add {
        if !users.contains(who) {
            users.push(who.clone());
            users.sort();
        }
    } else {
        users.retain(|u| u != who);
    }
    roles.roles.retain(|(_, users)| !users.is_empty());
    wild::save(path, &roles)?;
    info!(repo = %repo, role, user = %who, add, "perms changed");
    queue_perms(home, path, repo, None)?;
    Ok(roles)
}

/// Queues the creator and roles of the user-created repo at `path` for `slaves` (all of its
/// slaves when `None`; none when it is local or no user created it), and tells the daemon.
/// `compile` calls it for slaves new to a repo, which receive it by an ordinary push.
pub(crate) fn queue_perms(
    home: &Home,
    path: &std::path::Path,
    repo: &RepoName,
    slaves: Option<&[AccountName]>,
) -> Result<(), UserRepoError> {
    let roles = wild::roles(path)?;
    if roles.creator.is_none() {
        return Ok(());
    }
    let Some(m) = mastership::mastership(path)? else {
        return Ok(());
    };
    let slaves = slaves.unwrap_or(&m.slaves);
    if slaves.is_empty() {
        return Ok(());
    }
    let ops = OpQueue::new(home.ops_dir());
    let mut record = ops.begin(perms_op(repo, &roles)?, m.epoch, slaves)?;
    ops.ready(&mut record)?;
    notify(home);
    Ok(())
}
