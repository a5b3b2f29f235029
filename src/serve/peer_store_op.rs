//! `store-op EPOCH OP ARGS...`: a store operation (delete into the trash, restore, rename,
//! purge) that a repo's master sends its slave, applied here only where this server's own
//! settings for the repo make the sender its master (`StoreOp::apply_from`).
//!
//! What moved is recorded first (`repo::gone`), so that a `compile` here neither recreates a
//! deleted repo nor leaves a renamed one's rules behind; then this server compiles, so that
//! the rules the shells read follow at once. All of it under the compile lock: a compile
//! running meanwhile (an admin push) must not read the record before the move.
//!
//! Where this server has nothing of the repo (it never received it, or the operation was
//! applied before), only the record of the name may change, and only where this server's own
//! rules make the sender that name's master: no other peer can make a name come back or go.

use thiserror::Error;
use tracing::info;

use crate::admin::compile::{self, CompileError};
use crate::config::Rules;
use crate::home::Home;
use crate::names::{AccountName, RepoName};
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
    #[error(transparent)]
    Lock(#[from] CompileError),
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
    if let StoreOp::Perms { .. } = op {
        // Nothing moves and no name comes or goes: no record, no compile. (A repo missing
        // here was created by the caller where this server's rules have a pattern for it.)
        let what = op.describe();
        let applied = op.apply_from(&store, peer, this, epoch, || Ok(()))?;
        info!(%peer, op = %what, done = applied == Applied::Done, "store operation from the master");
        return Ok(match applied {
            Applied::Done => format!("{this}: {what}: done\n"),
            Applied::Nothing => format!("{this}: {what}: nothing to do here\n"),
        });
    }
    let gone = GoneRecord::in_state(&home.state_dir());
    gone.writable()?;
    let held = compile::lock_compile(home)?;
    let record = || match op {
        StoreOp::Trash { entry, .. } => gone.record(Gone::trashed(entry)),
        StoreOp::Rename { from, to } => gone.record(Gone::Renamed {
            repo: from.clone(),
            to: to.clone(),
        }),
        StoreOp::Restore { .. } | StoreOp::Purge { .. } | StoreOp::Perms { .. } => Ok(()),
    };
    let applied = op.apply_from(&store, peer, this, epoch, record)?;
    // A name that comes back is no longer gone, one that left is gone, even where this
    // server never had the repo, so that its compile does not create it empty: by the
    // sender's word only where it masters the name here.
    let admitted = applied == Applied::Done
        || match op {
            StoreOp::Trash { repo, .. } | StoreOp::Restore { repo, .. } => {
                masters_by_rules(home, repo, peer, this)
            }
            StoreOp::Rename { from, to } => {
                masters_by_rules(home, from, peer, this) || masters_by_rules(home, to, peer, this)
            }
            StoreOp::Purge { .. } | StoreOp::Perms { .. } => false,
        };
    if admitted {
        match op {
            StoreOp::Rename { to, .. } => {
                if applied == Applied::Nothing {
                    record()?;
                }
                gone.back(to)?;
            }
            StoreOp::Restore { repo, .. } => gone.back(repo)?,
            StoreOp::Trash { .. } if applied == Applied::Nothing => record()?,
            _ => {}
        }
    }
    // As on the master: the rules the shells read follow what moved. A compile that fails
    // here (a broken hand edit) does not undo the operation; the next one completes it.
    let what = op.describe();
    info!(%peer, op = %what, done = applied == Applied::Done, "store operation from the master");
    if let Err(e) = compile::compile_locked(home, false, &held) {
        tracing::warn!(op = %what, error = %e, "compile after a store operation failed");
        return Ok(format!(
            "{this}: {what}: done, but its compile failed: {e}; run gitmirror compile there once fixed\n"
        ));
    }
    Ok(match applied {
        Applied::Done => format!("{this}: {what}: done\n"),
        Applied::Nothing => format!("{this}: {what}: nothing to do here\n"),
    })
}

/// Whether this server's compiled rules make `peer` the master of `repo`, with this server
/// among its slaves.
fn masters_by_rules(home: &Home, repo: &RepoName, peer: &AccountName, this: &AccountName) -> bool {
    Rules::compiled_for(home, repo)
        .ok()
        .and_then(|rules| rules.mirror(repo))
        .is_some_and(|m| m.is_master(peer) && m.is_slave(this))
}
