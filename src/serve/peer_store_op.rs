//! `store-op EPOCH OP ARGS...`: a store operation (delete into the trash, restore, rename,
//! purge) that a repo's master sends its slave, applied here only where this server's own
//! settings for the repo make the sender its master (`StoreOp::apply_from`).
//!
//! What moved is recorded first (`repo::gone`), so that a `compile` here neither recreates a
//! deleted repo nor leaves a renamed one's rules behind; then this server compiles, so that
//! the rules the shells read follow at once.

use thiserror::Error;
use tracing::info;

use crate::admin::compile;
use crate::home::Home;
use crate::names::AccountName;
use crate::repo::gone::{Gone, GoneRecord};
use crate::repo::store_op::{Applied, OpError, StoreOp};
use crate::repo::{Store, StoreError};

/// Why a store operation was not applied here; one line, sent back to the master.
#[derive(Debug, Error)]
pub(crate) enum StoreOpRefused {
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Record(#[from] StoreError),
}

/// Applies `op` from `peer` at `epoch` on this server, `this`; returns the line to answer.
pub(crate) fn apply(
    home: &Home,
    this: &AccountName,
    peer: &AccountName,
    epoch: u64,
    op: &StoreOp,
) -> Result<String, StoreOpRefused> {
    let store = Store::new(home.repositories());
    let gone = GoneRecord::in_state(&home.state_dir());
    gone.writable()?;
    let record = || match op {
        StoreOp::Trash { entry, .. } => gone.record(Gone::trashed(entry)),
        StoreOp::Rename { from, to } => gone.record(Gone::Renamed {
            repo: from.clone(),
            to: to.clone(),
        }),
        StoreOp::Restore { .. } | StoreOp::Purge { .. } => Ok(()),
    };
    let applied = op.apply_from(&store, peer, this, epoch, record)?;
    // A name that comes back is no longer gone; a name that left is gone even where this
    // server never had the repo, so that its compile does not create it empty.
    match op {
        StoreOp::Rename { to, .. } => gone.back(to)?,
        StoreOp::Restore { repo, .. } => gone.back(repo)?,
        StoreOp::Trash { .. } | StoreOp::Purge { .. } if applied == Applied::Nothing => record()?,
        _ => {}
    }
    // As on the master: the rules the shells read follow what moved. A compile that fails
    // here (a broken hand edit) does not undo the operation; the next one completes it.
    let what = op.describe();
    if let Err(e) = compile::compile(home, false) {
        tracing::warn!(op = %what, error = %e, "compile after a store operation failed");
        return Ok(format!(
            "{this}: {what}: done, but its compile failed: {e}; run gitmirror compile there once fixed\n"
        ));
    }
    info!(%peer, op = %what, done = applied == Applied::Done, "store operation from the master");
    Ok(match applied {
        Applied::Done => format!("{this}: {what}: done\n"),
        Applied::Nothing => format!("{this}: {what}: nothing to do here\n"),
    })
}
