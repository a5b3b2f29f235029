//! A repo's mirror settings, kept in its own git config under the keys gitolite used
//! ([`MASTER_KEY`], [`SLAVES_KEY`]) plus gitmirror's [`SYNC_KEY`]. `compile` writes them; an
//! administrator may set them by hand; the shells, hooks and daemon read them at run time.

use std::path::Path;

use super::{StoreError, git_err};
use crate::config::MirrorRule;
use crate::names::AccountName;
use crate::proto::{FROM_RULES_KEY, MASTER_KEY, SLAVES_KEY, SYNC_KEY};

/// The mirror settings in a repo's own git config, where the shell and hooks read them at run
/// time. `None` means the repo is local to this server.
pub(crate) fn mirror_config(repo: &Path) -> Result<Option<MirrorRule>, StoreError> {
    let config = git2::Config::open(&repo.join("config")).map_err(git_err(repo))?;
    let get = |key| match config.get_string(key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_err(repo)(e)),
    };
    let server = |key: &'static str, value: &str| {
        AccountName::parse(value).map_err(|_| StoreError::BadMirrorConfig {
            repo: repo.display().to_string(),
            key,
            value: value.to_string(),
        })
    };
    let Some(master) = get(MASTER_KEY)?.filter(|m| !m.trim().is_empty()) else {
        return Ok(None);
    };
    let master = server(MASTER_KEY, master.trim())?;
    let slaves = get(SLAVES_KEY)?
        .unwrap_or_default()
        .split_whitespace()
        .map(|s| server(SLAVES_KEY, s))
        .collect::<Result<_, _>>()?;
    let sync = match config.get_bool(SYNC_KEY) {
        Ok(v) => Some(v),
        Err(e) if e.code() == git2::ErrorCode::NotFound => None,
        Err(e) => return Err(git_err(repo)(e)),
    };
    Ok(Some(MirrorRule {
        master,
        slaves,
        sync,
    }))
}

/// Writes a repo's mirror settings into its git config as `repos.toml` gives them, if they
/// differ (or were set by hand). Returns whether it wrote.
pub(crate) fn set_mirror_config(repo: &Path, rule: &MirrorRule) -> Result<bool, StoreError> {
    let mut config = git2::Config::open(&repo.join("config")).map_err(git_err(repo))?;
    if mirror_config(repo)?.as_ref() == Some(rule) && from_rules(&config) {
        return Ok(false);
    }
    let slaves: Vec<&str> = rule.slaves.iter().map(AccountName::as_str).collect();
    config
        .set_str(MASTER_KEY, rule.master.as_str())
        .and_then(|()| config.set_str(SLAVES_KEY, &slaves.join(" ")))
        .and_then(|()| match rule.sync {
            Some(sync) => config.set_bool(SYNC_KEY, sync),
            None => remove(&mut config, SYNC_KEY),
        })
        .and_then(|()| config.set_bool(FROM_RULES_KEY, true))
        .map_err(git_err(repo))?;
    Ok(true)
}

/// What [`clear_mirror_config`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cleared {
    /// The repo had no mirror settings.
    Nothing,
    /// Settings `compile` had written were removed: the repo is local now.
    Removed,
    /// Settings an administrator set by hand were left as they are.
    KeptByHand,
}

/// Removes a repo's mirror settings when `repos.toml` no longer gives it any, if `compile`
/// wrote them; settings set by hand stay (a former master could otherwise lose, or keep,
/// push access behind the administrator's back).
pub(crate) fn clear_mirror_config(repo: &Path) -> Result<Cleared, StoreError> {
    let mut config = git2::Config::open(&repo.join("config")).map_err(git_err(repo))?;
    let present = |key| config.get_entry(key).is_ok();
    if ![MASTER_KEY, SLAVES_KEY, SYNC_KEY].into_iter().any(present) {
        return Ok(Cleared::Nothing);
    }
    if !from_rules(&config) {
        return Ok(Cleared::KeptByHand);
    }
    [MASTER_KEY, SLAVES_KEY, SYNC_KEY, FROM_RULES_KEY]
        .into_iter()
        .try_for_each(|key| remove(&mut config, key))
        .map_err(git_err(repo))?;
    Ok(Cleared::Removed)
}

fn from_rules(config: &git2::Config) -> bool {
    config.get_bool(FROM_RULES_KEY).unwrap_or(false)
}

fn remove(config: &mut git2::Config, key: &str) -> Result<(), git2::Error> {
    match config.remove(key) {
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
        other => other,
    }
}
