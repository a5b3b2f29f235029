//! The repositories of one server: where they are, the hooks installed in them, and the
//! mirror settings each carries in its own git config.
//!
//! - [`store`]: finding, listing and creating bare repos under `repositories/`; nothing
//!   outside it is ever resolved.
//! - [`hooks`]: the hook scripts gitmirror installs.
//! - [`mirror_settings`]: `gitolite.mirror.*` in a repo's git config.
//! - [`mastership`]: the same with the epoch, which promotions raise.
//! - [`orphaning`]: keeping what a change of master overwrites.
//! - [`orphans`]: the refs a server kept when a change of master overwrote them.
//! - [`store_op`]: delete, restore, rename and purge, as a master and its slaves apply them.
//! - [`gone`]: the names deleted or renamed here, so that `compile` does not recreate them.
//! - [`trash`]: where deleted repos go, and the moves of `rename` and `restore`.
//! - [`wild`]: a user-created repo's creator and the roles it handed out (`perms`).

pub(crate) mod gone;
pub(crate) mod hooks;
pub(crate) mod mastership;
pub(crate) mod mirror_settings;
pub(crate) mod orphaning;
pub(crate) mod orphans;
pub(crate) mod store;
pub(crate) mod store_op;
pub(crate) mod trash;
pub(crate) mod wild;

use std::path::Path;

use thiserror::Error;

use crate::fs::FsError;

pub(crate) use hooks::{
    install_hooks, peer_hooks_installed, user_hooks_installed, write_hooks, write_peer_hooks,
};
pub(crate) use mastership::{Applied, Mastership, apply_rules};
pub(crate) use mirror_settings::mirror_config;
pub(crate) use store::{Placed, Staged, Store};
pub(crate) use trash::TrashEntry;

/// What can go wrong in the store.
#[derive(Debug, Error)]
pub(crate) enum StoreError {
    #[error("repo {repo}: {source}")]
    Git {
        repo: String,
        #[source]
        source: git2::Error,
    },
    #[error("repo {repo}: {key} = {value:?} is not a server name")]
    BadMirrorConfig {
        repo: String,
        key: &'static str,
        value: String,
    },
    #[error("{what} {name} exists already")]
    Exists { what: &'static str, name: String },
    #[error("no {what} {name} here")]
    Missing { what: &'static str, name: String },
    #[error("repo {repo}: its directory would lie outside the store")]
    Escapes { repo: String },
    #[error(transparent)]
    Fs(#[from] FsError),
}

fn git_err(repo: &Path) -> impl FnOnce(git2::Error) -> StoreError + '_ {
    move |source| StoreError::Git {
        repo: repo.display().to_string(),
        source,
    }
}
