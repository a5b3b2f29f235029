//! A repo's mirror settings, kept in its own git config under the keys gitolite used
//! ([`MASTER_KEY`], [`SLAVES_KEY`]) plus gitmirror's [`SYNC_KEY`]. `compile` writes them; an
//! administrator may set them by hand; the shells, hooks and daemon read them at run time.

use std::path::Path;

use super::{StoreError, git_err};
use crate::config::MirrorRule;
use crate::names::AccountName;
use crate::proto::{MASTER_KEY, SLAVES_KEY, SYNC_KEY};

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

/// Writes a repo's mirror settings into its git config, if they differ. Returns whether it
/// wrote.
pub(crate) fn set_mirror_config(repo: &Path, rule: &MirrorRule) -> Result<bool, StoreError> {
    if mirror_config(repo)?.as_ref() == Some(rule) {
        return Ok(false);
    }
    let mut config = git2::Config::open(&repo.join("config")).map_err(git_err(repo))?;
    let slaves: Vec<&str> = rule.slaves.iter().map(AccountName::as_str).collect();
    config
        .set_str(MASTER_KEY, rule.master.as_str())
        .and_then(|()| config.set_str(SLAVES_KEY, &slaves.join(" ")))
        .and_then(|()| match rule.sync {
            Some(sync) => config.set_bool(SYNC_KEY, sync),
            None => match config.remove(SYNC_KEY) {
                Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(()),
                other => other,
            },
        })
        .map_err(git_err(repo))?;
    Ok(true)
}
