//! The durable mirror queue: for every repo this server masters, which slaves are behind,
//! since when, how often pushing to them has failed and why, and when each last succeeded.
//!
//! One JSON file per repo (`state/queue/<repo>.json`) holds every slave's entry, so a user's
//! push costs one atomic, fsynced write however many slaves there are. Each enqueue bumps the
//! slave's `generation`; a mirror push clears the entry only if the generation it started
//! from is still current, so a push that landed on the master meanwhile stays pending.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::warn;

use crate::config::MirrorConfig;
use crate::fs::{Context, FsError, ensure_dir, lock, replace, write_atomic};
use crate::names::{AccountName, RepoName};
use crate::proto::flat_name;

/// What can go wrong reading or writing the queue.
#[derive(Debug, Error)]
pub(crate) enum QueueError {
    #[error("{file}: corrupt queue record: {message}")]
    Corrupt { file: PathBuf, message: String },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Seconds since the epoch, the queue's clock.
pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A slave that is behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// When it first fell behind (and has been ever since).
    pub(crate) since: f64,
    /// Bumped by every push to the master that the slave must receive.
    pub(crate) generation: u64,
    /// Failed mirror pushes since it fell behind.
    pub(crate) attempts: u32,
    /// The last failure, in the slave's (or ssh's) own words.
    pub(crate) last_error: Option<String>,
    /// When the next retry is due.
    pub(crate) next_attempt: f64,
}

impl Pending {
    /// Behind since `t`, not yet tried.
    fn new(t: f64, generation: u64) -> Self {
        Pending {
            since: t,
            generation,
            attempts: 0,
            last_error: None,
            next_attempt: t,
        }
    }
}

/// One slave's state for one repo.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SlaveEntry {
    /// Set while the slave is behind.
    pub(crate) pending: Option<Pending>,
    /// When a mirror push to it last succeeded.
    pub(crate) last_success: Option<f64>,
    /// The last divergence the slave reported (refs changed behind the master's back).
    pub(crate) last_diverged: Option<String>,
    /// Fingerprint of the state the slave last confirmed, so that "nothing changed" can be
    /// told without asking it.
    #[serde(default)]
    pub(crate) confirmed: Option<String>,
}

/// Every slave's state for one repo.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The repo.
    pub(crate) repo: String,
    /// By slave name.
    pub(crate) slaves: BTreeMap<String, SlaveEntry>,
}

/// Retry delays: exponential from `initial` up to `max`, each with ±25% jitter so that many
/// repos failing together do not retry in lockstep.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    initial: f64,
    max: f64,
    factor: f64,
}

impl Backoff {
    /// The backoff configured in `gitmirror.toml`.
    pub(crate) fn from_config(m: &MirrorConfig) -> Self {
        Backoff {
            initial: m.retry_initial_secs,
            max: m.retry_max_secs,
            factor: m.retry_factor,
        }
    }

    /// The delay after the `attempts`-th consecutive failure (1-based).
    pub(crate) fn delay(&self, attempts: u32) -> Duration {
        let exp = self.factor.powi(attempts.saturating_sub(1).min(64) as i32);
        let base = (self.initial * exp).min(self.max);
        let jitter = 0.75 + fastrand::f64() * 0.5;
        Duration::from_secs_f64((base * jitter).min(self.max))
    }
}

/// The queue directory of one server.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    dir: PathBuf,
    /// Whether a durable update waits for the disk itself (else its caller syncs the
    /// filesystem once, after many).
    sync_each: bool,
}

impl Queue {
    /// The queue in `dir` (the home's `state/queue`).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Queue {
            dir: dir.into(),
            sync_each: true,
        }
    }

    /// The same queue for a bulk operation that syncs the filesystem itself when it is done
    /// (compile queueing thousands of new slaves), before anyone is told of the work.
    pub(crate) fn deferring_sync(mut self) -> Self {
        self.sync_each = false;
        self
    }

    fn file(&self, repo: &RepoName) -> PathBuf {
        self.dir.join(format!("{}.json", flat_name(repo)))
    }

    fn lock_file(&self, repo: &RepoName) -> PathBuf {
        self.dir.join(format!("{}.lock", flat_name(repo)))
    }

    /// The record of `repo` (empty if it has none).
    ///
    /// A record that cannot be parsed (truncated by a crash, edited by hand) is set aside as
    /// `<file>.corrupt`, reported once, and read as empty: every slave then counts as never
    /// synced, which the daemon's sweep answers by pushing to each. One bad file never stops
    /// the repo, `status`, or the rest of the queue.
    pub(crate) fn load(&self, repo: &RepoName) -> Result<Record, QueueError> {
        match read(&self.file(repo)) {
            Ok(record) => Ok(record.unwrap_or_else(|| Self::empty(repo))),
            Err(QueueError::Corrupt { .. }) => {
                ensure_dir(&self.dir, 0o700)?;
                let _lock = lock(&self.lock_file(repo))?;
                self.load_locked(repo)
            }
            Err(e) => Err(e),
        }
    }

    /// [`load`](Self::load), for a caller holding the record's lock.
    fn load_locked(&self, repo: &RepoName) -> Result<Record, QueueError> {
        let file = self.file(repo);
        match read(&file) {
            Ok(record) => Ok(record.unwrap_or_else(|| Self::empty(repo))),
            Err(QueueError::Corrupt { message, .. }) => {
                let aside = file.with_extension("json.corrupt");
                std::fs::rename(&file, &aside).at("cannot set aside", &file)?;
                warn!(
                    %repo,
                    file = %file.display(),
                    kept_as = %aside.display(),
                    error = %message,
                    "corrupt queue record set aside; every slave counts as never synced"
                );
                Ok(Self::empty(repo))
            }
            Err(e) => Err(e),
        }
    }

    fn empty(repo: &RepoName) -> Record {
        Record {
            repo: repo.to_string(),
            ..Record::default()
        }
    }

    /// The repos that have a record, from the file names alone (no record is read).
    pub(crate) fn repos(&self) -> Result<Vec<RepoName>, QueueError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at("cannot list", &self.dir)?,
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry.at("cannot list", &self.dir)?.file_name();
            let repo = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|stem| RepoName::parse(&stem.replace('~', "/")).ok());
            out.extend(repo);
        }
        out.sort();
        Ok(out)
    }

    /// Reads, changes and rewrites `repo`'s record under its lock; `durable` waits for the disk
    /// (fsync). Only recording that a slave is behind needs that: losing the record of a
    /// success, a failure or a forgotten slave costs one more comparison later, never a push.
    /// A crash in the middle of a non-durable write can leave the file empty or torn; that
    /// reads as corrupt, and a corrupt record counts every slave as never synced (see
    /// [`load`](Self::load)), so even then nothing pending is lost.
    fn update<T>(
        &self,
        repo: &RepoName,
        durable: bool,
        change: impl FnOnce(&mut Record) -> T,
    ) -> Result<T, QueueError> {
        ensure_dir(&self.dir, 0o700)?;
        let _lock = lock(&self.lock_file(repo))?;
        let mut record = self.load_locked(repo)?;
        let before = record.clone();
        let out = change(&mut record);
        if record != before {
            let text = serde_json::to_vec_pretty(&record).map_err(|e| QueueError::Corrupt {
                file: self.file(repo),
                message: e.to_string(),
            })?;
            if durable && self.sync_each {
                write_atomic(&self.file(repo), &text, 0o600)?;
            } else {
                replace(&self.file(repo), &text, 0o600)?;
            }
        }
        Ok(out)
    }

    /// Marks every one of `slaves` behind on `repo`; durable when this returns. Returns each
    /// slave's new generation.
    #[cfg(test)]
    pub(crate) fn enqueue(
        &self,
        repo: &RepoName,
        slaves: &[AccountName],
    ) -> Result<Vec<u64>, QueueError> {
        let record = self.enqueue_record(repo, slaves)?;
        Ok(slaves
            .iter()
            .map(|s| {
                record.slaves[s.as_str()]
                    .pending
                    .as_ref()
                    .map_or(0, |p| p.generation)
            })
            .collect())
    }

    /// Marks every one of `slaves` behind on `repo`; durable when this returns. Returns the
    /// record as written, so that the hook needs no second read to tell the pusher about
    /// failing slaves.
    pub(crate) fn enqueue_record(
        &self,
        repo: &RepoName,
        slaves: &[AccountName],
    ) -> Result<Record, QueueError> {
        let t = now();
        self.update(repo, true, |record| {
            for slave in slaves {
                let entry = record.slaves.entry(slave.to_string()).or_default();
                let p = entry.pending.get_or_insert(Pending::new(t, 0));
                p.generation += 1;
                p.next_attempt = t;
            }
            record.clone()
        })
    }

    /// The current generation of `slave`'s pending entry (0 when it is not behind).
    pub(crate) fn generation(
        &self,
        repo: &RepoName,
        slave: &AccountName,
    ) -> Result<u64, QueueError> {
        Ok(self
            .load(repo)?
            .slaves
            .get(slave.as_str())
            .and_then(|e| e.pending.as_ref())
            .map_or(0, |p| p.generation))
    }

    /// Records a mirror push that started at `generation` as confirmed by the slave. The entry
    /// is cleared only if no push to the master came in meanwhile; returns whether it was.
    pub(crate) fn succeeded(
        &self,
        repo: &RepoName,
        slave: &AccountName,
        generation: u64,
        diverged: Option<String>,
        fingerprint: &str,
    ) -> Result<bool, QueueError> {
        let t = now();
        self.update(repo, false, |record| {
            let entry = record.slaves.entry(slave.to_string()).or_default();
            entry.last_success = Some(t);
            entry.confirmed = Some(fingerprint.to_string());
            if diverged.is_some() {
                entry.last_diverged = diverged;
            }
            match &mut entry.pending {
                Some(p) if p.generation > generation => {
                    // Still behind, but not failing: the next push is due now.
                    p.attempts = 0;
                    p.last_error = None;
                    p.next_attempt = t;
                    false
                }
                _ => {
                    entry.pending = None;
                    true
                }
            }
        })
    }

    /// The fingerprint `slave` last confirmed for `repo`, if any.
    #[cfg(test)]
    pub(crate) fn confirmed(
        &self,
        repo: &RepoName,
        slave: &AccountName,
    ) -> Result<Option<String>, QueueError> {
        Ok(self
            .load(repo)?
            .slaves
            .get(slave.as_str())
            .and_then(|e| e.confirmed.clone()))
    }

    /// Whether `repo` has a record (a repo deleted or renamed here has none).
    pub(crate) fn has_record(&self, repo: &RepoName) -> bool {
        self.file(repo).exists()
    }

    /// Removes `repo`'s record: the repo was deleted here, and nothing is owed for it.
    pub(crate) fn remove_record(&self, repo: &RepoName) -> Result<(), QueueError> {
        ensure_dir(&self.dir, 0o700)?;
        let _lock = lock(&self.lock_file(repo))?;
        let file = self.file(repo);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).at("cannot remove", &file)?,
            _ => Ok(()),
        }
    }

    /// Moves `from`'s record to `to` (the repo was renamed): what each slave is owed and last
    /// confirmed goes with the repo, so a slave that renamed its copy too needs no push.
    pub(crate) fn move_record(&self, from: &RepoName, to: &RepoName) -> Result<(), QueueError> {
        let mut record = self.load(from)?;
        record.repo = to.to_string();
        self.update(to, true, |r| {
            for (slave, entry) in std::mem::take(&mut record.slaves) {
                r.slaves.insert(slave, entry);
            }
        })?;
        self.remove_record(from)
    }

    /// Drops `slave`'s entry for `repo`: it is no longer among the repo's slaves here.
    pub(crate) fn forget(&self, repo: &RepoName, slave: &AccountName) -> Result<(), QueueError> {
        self.update(repo, false, |record| {
            record.slaves.remove(slave.as_str());
        })
    }

    /// Records a failed mirror push and schedules the retry; returns the delay until it.
    pub(crate) fn failed(
        &self,
        repo: &RepoName,
        slave: &AccountName,
        error: &str,
        backoff: &Backoff,
    ) -> Result<Duration, QueueError> {
        let t = now();
        self.update(repo, false, |record| {
            let entry = record.slaves.entry(slave.to_string()).or_default();
            let p = entry.pending.get_or_insert(Pending::new(t, 1));
            p.attempts += 1;
            p.last_error = Some(error.to_string());
            let delay = backoff.delay(p.attempts);
            p.next_attempt = t + delay.as_secs_f64();
            delay
        })
    }
}

fn read(path: &Path) -> Result<Option<Record>, QueueError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| QueueError::Corrupt {
                file: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at("cannot read", path)?,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (RepoName, AccountName, AccountName) {
        (
            RepoName::parse("site/tools").unwrap(),
            AccountName::parse("server2").unwrap(),
            AccountName::parse("server3").unwrap(),
        )
    }

    #[test]
    fn enqueue_collapses_and_success_clears_only_the_pushed_generation() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let (repo, s2, s3) = names();
        assert_eq!(q.enqueue(&repo, &[s2.clone(), s3.clone()]).unwrap(), [1, 1]);
        assert_eq!(q.enqueue(&repo, std::slice::from_ref(&s2)).unwrap(), [2]);
        let since = q.load(&repo).unwrap().slaves["server2"]
            .pending
            .clone()
            .unwrap()
            .since;
        // A push that started at generation 1 does not clear generation 2.
        assert!(!q.succeeded(&repo, &s2, 1, None, "f1").unwrap());
        let p = q.load(&repo).unwrap().slaves["server2"]
            .pending
            .clone()
            .unwrap();
        assert_eq!((p.generation, p.since), (2, since));
        assert!(q.succeeded(&repo, &s2, 2, None, "f2").unwrap());
        assert_eq!(q.confirmed(&repo, &s2).unwrap().as_deref(), Some("f2"));
        let r = q.load(&repo).unwrap();
        assert!(r.slaves["server2"].pending.is_none());
        assert!(r.slaves["server2"].last_success.is_some());
        assert!(r.slaves["server3"].pending.is_some());
        assert_eq!(q.repos().unwrap(), std::slice::from_ref(&repo));
        // The file name flattens the '/'.
        assert!(dir.path().join("site~tools.json").exists());
    }

    #[test]
    fn failures_count_and_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        let (repo, s2, _) = names();
        q.enqueue(&repo, std::slice::from_ref(&s2)).unwrap();
        let b = Backoff {
            initial: 1.0,
            max: 8.0,
            factor: 2.0,
        };
        let delays: Vec<f64> = (0..6)
            .map(|_| q.failed(&repo, &s2, "down", &b).unwrap().as_secs_f64())
            .collect();
        assert!(delays[0] >= 0.75 && delays[0] <= 1.25, "{delays:?}");
        assert!(delays[2] >= 3.0 && delays[2] <= 5.0, "{delays:?}");
        assert!(delays.iter().all(|d| *d <= 8.0), "{delays:?}");
        let p = q.load(&repo).unwrap().slaves["server2"]
            .pending
            .clone()
            .unwrap();
        assert_eq!(p.attempts, 6);
        assert_eq!(p.last_error.as_deref(), Some("down"));
    }

    #[test]
    fn a_corrupt_record_is_set_aside_and_blocks_nothing() {
        for bad in [
            "{not json",
            "",
            "{\"repo\": \"site/tools\", \"slaves\": {\"s\": {\"last_success\": 1e999}}}",
        ] {
            let dir = tempfile::tempdir().unwrap();
            let q = Queue::new(dir.path());
            let (repo, s2, _) = names();
            let other = RepoName::parse("other").unwrap();
            q.enqueue(&other, std::slice::from_ref(&s2)).unwrap();
            let file = dir.path().join("site~tools.json");
            std::fs::write(&file, bad).unwrap();
            // Every reader goes on: the whole queue, the repo itself, and its next update.
            let repos = q.repos().unwrap();
            assert_eq!(repos, [other.clone(), repo.clone()], "{bad:?}");
            for r in &repos {
                q.load(r).unwrap();
            }
            assert!(q.load(&repo).unwrap().slaves.is_empty(), "{bad:?}");
            assert_eq!(q.enqueue(&repo, std::slice::from_ref(&s2)).unwrap(), [1]);
            // The bad bytes are kept beside it, once.
            let aside = dir.path().join("site~tools.json.corrupt");
            assert_eq!(std::fs::read_to_string(&aside).unwrap(), bad);
            assert!(q.load(&repo).unwrap().slaves[s2.as_str()].pending.is_some());
        }
    }
}
