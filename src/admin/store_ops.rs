//! `delete`, `rename` and the trash (`restore`, `purge`) on a repo's master: checked, applied
//! to this server's store, and queued durably for every slave (`replicate::op_queue`), which
//! the daemon sends them to in order.
//!
//! Each is refused, changing nothing, where it would be unsafe: on a server that is not the
//! repo's master, onto a name that exists, for the admin repo, or a delete while a mirror push
//! to a slave is pending (unless forced: this server's trash keeps everything, and the slave's
//! copy is trashed as it is).
//!
//! The order makes a crash harmless: the operation is queued (not ready), the record of gone
//! names written, the store changed, the mirror queue record moved or removed, and only then
//! is the operation marked ready to send. A command killed in between leaves an operation the
//! queue resolves by looking at the store (`OpQueue::to_send`).

use std::time::{Duration, SystemTime};

use thiserror::Error;
use tracing::info;

use super::compile::{self, CompileError};
use crate::config::ServerConfig;
use crate::daemon::client;
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::proto::ADMIN_REPO;
use crate::replicate::op_queue::{OpQueue, OpRecord};
use crate::replicate::queue::{Queue, QueueError};
use crate::repo::gone::{Gone, GoneRecord};
use crate::repo::mastership::{self, Mastership};
use crate::repo::store_op::{OpError, StoreOp};
use crate::repo::{Store, StoreError, TrashEntry};

/// Why a store operation was refused or failed.
#[derive(Debug, Error)]
pub(crate) enum StoreOpsError {
    #[error("no repo {0} here")]
    NoRepo(RepoName),
    #[error("no trash entry {0} here (see gitmirror trash list)")]
    NoEntry(TrashEntry),
    #[error("{repo} exists already; {what} would replace it")]
    Exists { repo: RepoName, what: &'static str },
    #[error("{0} holds every server's configuration; it cannot be deleted or renamed")]
    AdminRepo(RepoName),
    #[error("{repo} is mastered by {master}, not {this}: run this on {master}")]
    NotMaster {
        repo: RepoName,
        master: AccountName,
        this: AccountName,
    },
    #[error(
        "{repo} has mirror pushes pending for {slaves}: wait until they are done (gitmirror status {repo}), or use --force (this server's copy keeps everything; theirs is {what} as it is)"
    )]
    Pending {
        repo: RepoName,
        slaves: String,
        what: &'static str,
    },
    #[error("{0} and the new name are the same")]
    SameName(RepoName),
    #[error("{0}: the name is too long to keep in the trash with its time; rename it first")]
    TooLong(RepoName),
    #[error("a trash entry {0} exists already; try again in a second")]
    EntryTaken(TrashEntry),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// What an operation did: the line to print.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) line: String,
}

/// The pieces of a server every operation needs.
struct Here<'a> {
    home: &'a Home,
    this: &'a AccountName,
    store: Store,
    queue: Queue,
    ops: OpQueue,
    gone: GoneRecord,
}

impl<'a> Here<'a> {
    fn new(home: &'a Home, config: &'a ServerConfig) -> Self {
        Here {
            home,
            this: &config.hostname,
            store: Store::new(home.repositories()),
            queue: Queue::new(home.queue_dir()),
            ops: OpQueue::new(home.ops_dir()),
            gone: GoneRecord::in_state(&home.state_dir()),
        }
    }

    /// The repo's mastership when this server masters it (`None`: the repo is local).
    fn mastered(
        &self,
        repo: &RepoName,
        path: &std::path::Path,
    ) -> Result<Option<Mastership>, StoreOpsError> {
        match mastership::mastership(path)? {
            Some(m) if &m.master != self.this => Err(StoreOpsError::NotMaster {
                repo: repo.clone(),
                master: m.master,
                this: self.this.clone(),
            }),
            other => Ok(other),
        }
    }

    /// Refuses while a mirror push of `repo` to a slave is pending, unless `force`.
    fn idle(&self, repo: &RepoName, force: bool, what: &'static str) -> Result<(), StoreOpsError> {
        if force {
            return Ok(());
        }
        let pending: Vec<String> = self
            .queue
            .load(repo)?
            .slaves
            .into_iter()
            .filter(|(_, e)| e.pending.is_some())
            .map(|(s, _)| s)
            .collect();
        if pending.is_empty() {
            Ok(())
        } else {
            Err(StoreOpsError::Pending {
                repo: repo.clone(),
                slaves: pending.join(", "),
                what,
            })
        }
    }

    /// Queues `op`, runs `apply` (the store change and its bookkeeping), marks the operation
    /// ready and tells the daemon; an `apply` that fails drops the operation.
    fn run(
        &self,
        op: StoreOp,
        m: Option<&Mastership>,
        apply: impl FnOnce() -> Result<(), StoreOpsError>,
    ) -> Result<(Vec<AccountName>, String), StoreOpsError> {
        // Held from the record to the compile: a compile meanwhile (an admin push, say) must
        // not read the record of gone names before the move and recreate what moved.
        let held = compile::lock_compile(self.home)?;
        let slaves = m.map(|m| m.slaves.clone()).unwrap_or_default();
        let mut record: Option<OpRecord> = if slaves.is_empty() {
            None
        } else {
            Some(
                self.ops
                    .begin(op.clone(), m.map_or(0, |m| m.epoch), &slaves)?,
            )
        };
        if let Err(e) = apply() {
            if let Some(r) = &record {
                self.ops.abandon(r)?;
            }
            return Err(e);
        }
        if let Some(r) = record.as_mut() {
            self.ops.ready(r)?;
        }
        info!(op = %op.describe(), slaves = slaves.len(), "store operation done here");
        if !slaves.is_empty()
            && let Err(e) = client::notify_ops(self.home)
        {
            tracing::warn!(error = %e, "cannot reach the daemon; the operation stays queued");
        }
        // The rules the shells read, the record of gone names and the mirror settings, as
        // `gitmirror compile` leaves them (it reads the record: nothing moved comes back).
        // The operation is done and queued whatever the compile says.
        let note = match compile::compile_locked(self.home, false, &held) {
            Ok(_) => String::new(),
            Err(e) => {
                tracing::warn!(error = %e, "compile after a store operation failed");
                format!("\nbut the compile after it failed: {e}; run gitmirror compile once fixed")
            }
        };
        Ok((slaves, note))
    }
}

/// `; queued for server2, server3` (nothing without slaves), then the compile's note.
fn names((slaves, note): &(Vec<AccountName>, String)) -> String {
    let queued = if slaves.is_empty() {
        String::new()
    } else {
        let s: Vec<&str> = slaves.iter().map(AccountName::as_str).collect();
        format!("; queued for {}", s.join(", "))
    };
    format!("{queued}{note}")
}

/// Moves `repo` into the trash here and on its slaves.
pub(crate) fn delete(
    home: &Home,
    config: &ServerConfig,
    repo: &RepoName,
    force: bool,
) -> Result<Done, StoreOpsError> {
    let here = Here::new(home, config);
    if repo.as_str() == ADMIN_REPO {
        return Err(StoreOpsError::AdminRepo(repo.clone()));
    }
    let path = here
        .store
        .find(repo)
        .ok_or_else(|| StoreOpsError::NoRepo(repo.clone()))?;
    let m = here.mastered(repo, &path)?;
    here.idle(repo, force, "trashed")?;
    let entry = TrashEntry::new(repo, SystemTime::now());
    if TrashEntry::parse(&entry.to_string()).is_err() {
        return Err(StoreOpsError::TooLong(repo.clone()));
    }
    if here.store.find_trashed(&entry).is_some() {
        return Err(StoreOpsError::EntryTaken(entry));
    }
    here.gone.writable()?;
    let op = StoreOp::Trash {
        repo: repo.clone(),
        entry: entry.clone(),
    };
    let slaves = here.run(op.clone(), m.as_ref(), || {
        here.gone.record(Gone::trashed(&entry))?;
        if let Err(e) = op.apply_here(&here.store) {
            here.gone.back(repo)?;
            return Err(e.into());
        }
        here.queue.remove_record(repo)?;
        Ok(())
    })?;
    Ok(Done {
        line: format!("deleted {repo}: in the trash as {entry}{}", names(&slaves)),
    })
}

/// Renames `from` to `to` here and on its slaves.
pub(crate) fn rename(
    home: &Home,
    config: &ServerConfig,
    from: &RepoName,
    to: &RepoName,
) -> Result<Done, StoreOpsError> {
    let here = Here::new(home, config);
    for name in [from, to] {
        if name.as_str() == ADMIN_REPO {
            return Err(StoreOpsError::AdminRepo(name.clone()));
        }
    }
    if from == to {
        return Err(StoreOpsError::SameName(from.clone()));
    }
    let path = here
        .store
        .find(from)
        .ok_or_else(|| StoreOpsError::NoRepo(from.clone()))?;
    if here.store.find(to).is_some() {
        return Err(StoreOpsError::Exists {
            repo: to.clone(),
            what: "renaming onto it",
        });
    }
    // Pending pushes are not in the way: they move with the repo (its queue record), and go
    // to each slave under the new name once it has renamed its copy.
    let m = here.mastered(from, &path)?;
    here.gone.writable()?;
    let op = StoreOp::Rename {
        from: from.clone(),
        to: to.clone(),
    };
    let slaves = here.run(op.clone(), m.as_ref(), || {
        here.gone.record(Gone::Renamed {
            repo: from.clone(),
            to: to.clone(),
        })?;
        if let Err(e) = op.apply_here(&here.store) {
            here.gone.back(from)?;
            return Err(e.into());
        }
        here.gone.back(to)?;
        here.queue.move_record(from, to)?;
        Ok(())
    })?;
    Ok(Done {
        line: format!("renamed {from} to {to}{}", names(&slaves)),
    })
}

/// Moves a trash entry back into the store, as `as_name` or its old name, here and on the
/// slaves, and queues a mirror push of it to each (what they restore may be older).
pub(crate) fn restore(
    home: &Home,
    config: &ServerConfig,
    entry: &TrashEntry,
    as_name: Option<&RepoName>,
) -> Result<Done, StoreOpsError> {
    let here = Here::new(home, config);
    let repo = as_name.unwrap_or(entry.repo()).clone();
    let path = here
        .store
        .find_trashed(entry)
        .ok_or_else(|| StoreOpsError::NoEntry(entry.clone()))?;
    if here.store.find(&repo).is_some() {
        return Err(StoreOpsError::Exists {
            repo,
            what: "restoring onto it",
        });
    }
    let m = here.mastered(entry.repo(), &path)?;
    let op = StoreOp::Restore {
        entry: entry.clone(),
        repo: repo.clone(),
    };
    let slaves = here.run(op.clone(), m.as_ref(), || {
        op.apply_here(&here.store)?;
        here.gone.back(&repo)?;
        if let Some(m) = &m {
            here.queue.enqueue_record(&repo, &m.slaves)?;
        }
        Ok(())
    })?;
    Ok(Done {
        line: format!("restored {entry} as {repo}{}", names(&slaves)),
    })
}

/// Removes every trash entry older than `older_than`. Entries of repos this server mastered
/// are purged on their slaves too; others only here (their master keeps its own copy).
pub(crate) fn purge(
    home: &Home,
    config: &ServerConfig,
    older_than: Duration,
) -> Result<Vec<Done>, StoreOpsError> {
    let here = Here::new(home, config);
    let mut done = Vec::new();
    for entry in here.store.trash_list()? {
        if entry.age() < older_than {
            continue;
        }
        let Some(path) = here.store.find_trashed(&entry) else {
            continue;
        };
        let m = match mastership::mastership(&path)? {
            Some(m) if &m.master == here.this => Some(m),
            _ => None,
        };
        let op = StoreOp::Purge {
            entry: entry.clone(),
        };
        let slaves = here.run(op.clone(), m.as_ref(), || {
            op.apply_here(&here.store)?;
            Ok(())
        })?;
        done.push(Done {
            line: format!("purged {entry}{}", names(&slaves)),
        });
    }
    Ok(done)
}
