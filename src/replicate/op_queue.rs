//! The durable queue of store operations (delete, restore, rename, purge) that this server,
//! as master, owes its slaves: one JSON file per operation in `state/ops/`, numbered in the
//! order they were made, each listing the slaves that have not applied it yet.
//!
//! A slave gets its operations strictly in that order (a rename after a restore of the same
//! name must not overtake it), one at a time, retried with backoff until it applies them, like
//! a mirror push. An operation is queued before this server applies it to its own store and
//! marked `ready` after, so a crash in between is told apart: an operation never marked ready
//! whose effect stands here is sent; one whose effect does not stand is dropped, since it never
//! happened.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::queue::{QueueError, now};
use crate::fs::{Context, ensure_dir, lock, write_atomic};
use crate::names::{AccountName, RepoName};
use crate::repo::Store;
use crate::repo::store_op::StoreOp;

/// A slave that has not applied an operation yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpPending {
    /// Failed attempts so far.
    pub(crate) attempts: u32,
    /// The last failure, in the slave's (or ssh's) own words.
    pub(crate) last_error: Option<String>,
    /// When the next attempt is due.
    pub(crate) next_attempt: f64,
}

/// One operation and the slaves still owed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpRecord {
    /// Its place in the order.
    pub(crate) seq: u64,
    #[serde(flatten)]
    pub(crate) op: StoreOp,
    /// The master's epoch of the repo when the operation was made, sent with it.
    pub(crate) epoch: u64,
    /// When it was made.
    pub(crate) created: f64,
    /// Whether it stands in this server's own store.
    pub(crate) ready: bool,
    /// By slave name.
    pub(crate) slaves: BTreeMap<String, OpPending>,
}

/// How long an operation may stay not ready before the queue looks at the store to decide
/// whether it happened (the command that made it was killed in between).
const SETTLE_SECS: f64 = 60.0;

/// The operations directory of one server.
#[derive(Debug, Clone)]
pub(crate) struct OpQueue {
    dir: PathBuf,
}

impl OpQueue {
    /// The queue in `dir` (the home's `state/ops`).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        OpQueue { dir: dir.into() }
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.json"))
    }

    /// Queues `op` for `slaves`, not ready yet; returns its record.
    pub(crate) fn begin(
        &self,
        op: StoreOp,
        epoch: u64,
        slaves: &[AccountName],
    ) -> Result<OpRecord, QueueError> {
        ensure_dir(&self.dir, 0o700)?;
        let _lock = lock(&self.dir.join("ops.lock"))?;
        // Never a number used before, even one whose operation is gone: a command that was
        // slow to mark its operation ready must find it missing, not overwrite another.
        let counter = self.dir.join("last-seq");
        let last = std::fs::read_to_string(&counter)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let seq = self.seqs()?.last().copied().unwrap_or(0).max(last) + 1;
        write_atomic(&counter, format!("{seq}\n").as_bytes(), 0o600)?;
        let t = now();
        let record = OpRecord {
            seq,
            op,
            epoch,
            created: t,
            ready: false,
            slaves: slaves
                .iter()
                .map(|s| {
                    let pending = OpPending {
                        next_attempt: t,
                        ..OpPending::default()
                    };
                    (s.to_string(), pending)
                })
                .collect(),
        };
        self.write(&record)?;
        Ok(record)
    }

    /// Marks an operation as standing here: from now on it is sent. Fails if the queue gave
    /// up on it meanwhile (its command took longer than [`SETTLE_SECS`]).
    pub(crate) fn ready(&self, record: &mut OpRecord) -> Result<(), QueueError> {
        let _lock = lock(&self.dir.join("ops.lock"))?;
        let file = self.file(record.seq);
        if !file.exists() {
            return Err(QueueError::Corrupt {
                file,
                message: "the operation was dropped while its command was still at work".into(),
            });
        }
        record.ready = true;
        self.write(record)
    }

    /// Drops an operation that did not happen here.
    pub(crate) fn abandon(&self, record: &OpRecord) -> Result<(), QueueError> {
        let file = self.file(record.seq);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).at("cannot remove", &file)?
            }
            _ => Ok(()),
        }
    }

    fn write(&self, record: &OpRecord) -> Result<(), QueueError> {
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        Ok(write_atomic(&self.file(record.seq), &bytes, 0o600)?)
    }

    fn seqs(&self) -> Result<Vec<u64>, QueueError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at("cannot list", &self.dir)?,
        };
        let mut seqs: Vec<u64> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json")?.parse().ok()
            })
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Every operation still owed to some slave, in order. One that cannot be read is set
    /// aside as `<file>.corrupt` and reported; the rest go on.
    pub(crate) fn load_all(&self) -> Result<Vec<OpRecord>, QueueError> {
        let mut out = Vec::new();
        for seq in self.seqs()? {
            let file = self.file(seq);
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at("cannot read", &file)?,
            };
            match serde_json::from_slice::<OpRecord>(&bytes) {
                Ok(r) if r.seq == seq => out.push(r),
                Ok(_) | Err(_) => {
                    let aside = file.with_extension("json.corrupt");
                    let _ = std::fs::rename(&file, &aside);
                    warn!(file = %file.display(), kept_as = %aside.display(), "corrupt store operation set aside");
                }
            }
        }
        Ok(out)
    }

    /// The operations to send, in order: those ready, and those a killed command left not
    /// ready whose effect stands in `store` (marked ready now); those whose effect does not
    /// stand are dropped.
    pub(crate) fn to_send(&self, store: &Store) -> Result<Vec<OpRecord>, QueueError> {
        let mut out = Vec::new();
        for mut record in self.load_all()? {
            if !record.ready {
                if now() - record.created < SETTLE_SECS {
                    // Its command may still be at work: it blocks its slaves' later ones.
                    out.push(record);
                    continue;
                }
                if record.op.stands_in(store) {
                    self.ready(&mut record)?;
                } else {
                    warn!(op = %record.op.describe(), "a store operation that never happened here was dropped");
                    self.abandon(&record)?;
                    continue;
                }
            }
            out.push(record);
        }
        Ok(out)
    }

    /// Records the outcome of sending operation `seq` to `slave`: `Ok` removes the slave
    /// (and the operation once nobody is owed it), `Err` keeps it with the words and when to
    /// try again.
    pub(crate) fn outcome(
        &self,
        seq: u64,
        slave: &AccountName,
        result: Result<(), (String, f64)>,
    ) -> Result<(), QueueError> {
        let _lock = lock(&self.dir.join("ops.lock"))?;
        let Some(mut record) = self.load_all()?.into_iter().find(|r| r.seq == seq) else {
            return Ok(());
        };
        match result {
            Ok(()) => {
                record.slaves.remove(slave.as_str());
                if record.slaves.is_empty() {
                    return self.abandon(&record);
                }
            }
            Err((words, next_attempt)) => {
                if let Some(p) = record.slaves.get_mut(slave.as_str()) {
                    p.attempts = p.attempts.saturating_add(1);
                    p.last_error = Some(words);
                    p.next_attempt = next_attempt;
                }
            }
        }
        self.write(&record)
    }

    /// Gives up sending operation `seq` to `slave` (an administrator's decision: the slave
    /// will never apply it, say it was rebuilt); `false` if it was not owed.
    pub(crate) fn drop_for(&self, seq: u64, slave: &str) -> Result<bool, QueueError> {
        let _lock = lock(&self.dir.join("ops.lock"))?;
        let Some(mut record) = self.load_all()?.into_iter().find(|r| r.seq == seq) else {
            return Ok(false);
        };
        if record.slaves.remove(slave).is_none() {
            return Ok(false);
        }
        warn!(seq, %slave, op = %record.op.describe(), "store operation dropped for a slave by an administrator");
        if record.slaves.is_empty() {
            self.abandon(&record)?;
        } else {
            self.write(&record)?;
        }
        Ok(true)
    }

    /// Whether a mirror push of `repo` to `slave` must wait: an operation on that name is
    /// still owed to it.
    pub(crate) fn blocks(&self, repo: &RepoName, slave: &AccountName) -> bool {
        if !self.dir.exists() {
            return false;
        }
        self.load_all().is_ok_and(|all| {
            all.iter()
                .any(|r| r.slaves.contains_key(slave.as_str()) && r.op.names().contains(&repo))
        })
    }

    /// Whether any operation is owed to anyone.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.seqs().map_or(true, |s| s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::TrashEntry;
    use std::time::SystemTime;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn operations_keep_their_order_and_leave_when_every_slave_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let q = OpQueue::new(dir.path().join("ops"));
        let (two, three) = (
            AccountName::parse("two").unwrap(),
            AccountName::parse("three").unwrap(),
        );
        let entry = TrashEntry::new(&name("a"), SystemTime::now());
        let mut first = q
            .begin(
                StoreOp::Trash {
                    repo: name("a"),
                    entry,
                },
                0,
                &[two.clone(), three.clone()],
            )
            .unwrap();
        let mut second = q
            .begin(
                StoreOp::Rename {
                    from: name("b"),
                    to: name("a"),
                },
                0,
                std::slice::from_ref(&two),
            )
            .unwrap();
        assert!(second.seq > first.seq);
        q.ready(&mut first).unwrap();
        q.ready(&mut second).unwrap();
        assert!(q.blocks(&name("a"), &two));
        assert!(!q.blocks(&name("c"), &two));
        q.outcome(first.seq, &two, Err(("down".into(), 5.0)))
            .unwrap();
        let all = q.load_all().unwrap();
        assert_eq!(all[0].slaves["two"].attempts, 1);
        assert_eq!(all[0].slaves["two"].last_error.as_deref(), Some("down"));
        q.outcome(first.seq, &two, Ok(())).unwrap();
        q.outcome(first.seq, &three, Ok(())).unwrap();
        assert_eq!(q.load_all().unwrap().len(), 1);
        assert!(!q.blocks(&name("a"), &three));
        q.outcome(second.seq, &two, Ok(())).unwrap();
        assert!(q.is_empty());
    }
}
