//! A repo's mirror settings, kept in its own git config under the keys gitolite used
//! ([`MASTER_KEY`], [`SLAVES_KEY`]) plus gitmirror's [`SYNC_KEY`] and [`REDIRECT_KEY`].
//! `compile` writes them; an administrator may set them by hand; the shells, hooks and daemon
//! read them at run time.
//!
//! The helpers taking an open [`git2::Config`] let `compile` read and write a repo's settings
//! through one parse of its config file (see `mastership::apply_rules`).

use std::path::Path;

use super::{StoreError, git_err};
use crate::config::MirrorRule;
use crate::names::AccountName;
use crate::proto::{FROM_RULES_KEY, MASTER_KEY, REDIRECT_KEY, SLAVES_KEY, SYNC_KEY};

/// The repo's own config file, and only that (not the account's or the system's).
pub(super) fn open(repo: &Path) -> Result<git2::Config, StoreError> {
    git2::Config::open(&repo.join("config")).map_err(git_err(repo))
}

/// The mirror settings in a repo's own git config, where the shell and hooks read them at run
/// time. `None` means the repo is local to this server.
pub(crate) fn mirror_config(repo: &Path) -> Result<Option<MirrorRule>, StoreError> {
    read_rule(&open(repo)?, repo)
}

/// [`mirror_config`] from the repo's config already open.
pub(super) fn read_rule(
    config: &git2::Config,
    repo: &Path,
) -> Result<Option<MirrorRule>, StoreError> {
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
    let flag = |key| match config.get_bool(key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_err(repo)(e)),
    };
    Ok(Some(MirrorRule {
        master,
        slaves,
        sync: flag(SYNC_KEY)?,
        redirect: flag(REDIRECT_KEY)?,
    }))
}

/// Writes a repo's mirror settings into its git config as `repos.toml` gives them, if they
/// differ (or were set by hand). Returns whether it wrote.
pub(crate) fn set_mirror_config(repo: &Path, rule: &MirrorRule) -> Result<bool, StoreError> {
    let mut config = open(repo)?;
    if read_rule(&config, repo)?.as_ref() == Some(rule) && from_rules(&config) {
        return Ok(false);
    }
    write_rule(&mut config, rule).map_err(git_err(repo))?;
    Ok(true)
}

/// Sets the keys as `repos.toml` gives them, marked as compile's.
pub(super) fn write_rule(config: &mut git2::Config, rule: &MirrorRule) -> Result<(), git2::Error> {
    let slaves: Vec<&str> = rule.slaves.iter().map(AccountName::as_str).collect();
    config.set_str(MASTER_KEY, rule.master.as_str())?;
    config.set_str(SLAVES_KEY, &slaves.join(" "))?;
    for (key, value) in [(SYNC_KEY, rule.sync), (REDIRECT_KEY, rule.redirect)] {
        match value {
            Some(v) => config.set_bool(key, v)?,
            None => remove(config, key)?,
        }
    }
    config.set_bool(FROM_RULES_KEY, true)
}

/// Whether any mirror key is set, even one that names no master.
pub(super) fn has_mirror_keys(config: &git2::Config) -> bool {
    [MASTER_KEY, SLAVES_KEY, SYNC_KEY, REDIRECT_KEY]
        .into_iter()
        .any(|key| config.get_entry(key).is_ok())
}

/// Removes every mirror key and the mark that compile wrote them: the repo is local.
pub(super) fn remove_rule(config: &mut git2::Config) -> Result<(), git2::Error> {
    [
        MASTER_KEY,
        SLAVES_KEY,
        SYNC_KEY,
        REDIRECT_KEY,
        FROM_RULES_KEY,
    ]
    .into_iter()
    .try_for_each(|key| remove(config, key))
}

/// Whether `compile` wrote the mirror keys (rather than an administrator, by hand).
pub(super) fn from_rules(config: &git2::Config) -> bool {
    config.get_bool(FROM_RULES_KEY).unwrap_or(false)
}

fn remove(config: &mut git2::Config, key: &str) -> Result<(), git2::Error> {
    match config.remove(key) {
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
        other => other,
    }
}
