//! The durable record of push mirrors: for every repo this server masters that has
//! downstreams, per downstream URL whether it is behind (since when, at which generation, how
//! many failed attempts, the last error in the remote's own words, when to try again), when a
//! push to it was last tried and last succeeded, the refs it diverged on, and the refs as we
//! last pushed them there.
//!
//! One JSON file per repo (`state/external/downstream/<repo>.json`). Marking a downstream
//! behind is fsynced before the pusher's `git push` returns; like the mirror queue, each
//! enqueue bumps a generation, and a push clears the entry only if no later push came in.
//!
//! The last-pushed refs are what tells "a ref we deleted" (in them, gone here: its deletion is
//! sent) from "a ref we never had" (not in them: never touched), and "the remote moved it"
//! (its value there is neither ours nor what we last pushed) from "we moved it".

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::fs::{Context, ensure_dir, lock, replace, write_atomic};
use crate::names::RepoName;
use crate::proto::flat_name;
use crate::replicate::queue::{QueueError, now};

/// A downstream that is behind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Behind {
    /// When it first fell behind (and has been ever since).
    pub(crate) since: f64,
    /// Bumped by every accepted push it must receive.
    pub(crate) generation: u64,
    /// Failed attempts since it fell behind.
    pub(crate) attempts: u32,
    /// The last failure, in the remote's (or git's) own words.
    pub(crate) last_error: Option<String>,
    /// When the next attempt is due.
    pub(crate) next_attempt: f64,
}

/// One downstream's state for one repo.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DownstreamEntry {
    /// Set while the downstream is behind.
    pub(crate) pending: Option<Behind>,
    /// When a push to it was last tried.
    pub(crate) last_attempt: Option<f64>,
    /// When a push to it last succeeded.
    pub(crate) last_success: Option<f64>,
    /// Refs the remote moved its own way, left alone (`divergence = "keep"`), as of the last
    /// successful push: `ref (theirs X, ours Y)`.
    #[serde(default)]
    pub(crate) diverged: Vec<String>,
    /// The refs as we last pushed them there (name to object id).
    #[serde(default)]
    pub(crate) pushed: BTreeMap<String, String>,
}

/// Every downstream's state for one repo, by URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct DownstreamRecord {
    pub(crate) repo: String,
    pub(crate) remotes: BTreeMap<String, DownstreamEntry>,
}

/// What one push attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attempt {
    /// The generation the attempt started from.
    pub(crate) generation: u64,
    /// The refs as they stand there now, as far as we pushed them.
    pub(crate) pushed: BTreeMap<String, String>,
    /// Refs left alone because the remote moved them.
    pub(crate) diverged: Vec<String>,
    /// `None` when every ref went; else the words and when to try again.
    pub(crate) failed: Option<(String, f64)>,
}

/// The downstream records of one server.
#[derive(Debug, Clone)]
pub(crate) struct DownstreamQueue {
    dir: PathBuf,
}

impl DownstreamQueue {
    /// The records in `dir` (the home's `state/external/downstream`).
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        DownstreamQueue { dir: dir.into() }
    }

    /// The records of the server whose external state is in `external_dir`.
    pub(crate) fn in_external_dir(external_dir: PathBuf) -> Self {
        Self::new(external_dir.join("downstream"))
    }

    fn file(&self, repo: &RepoName) -> PathBuf {
        self.dir.join(format!("{}.json", flat_name(repo)))
    }

    fn lock_file(&self, repo: &RepoName) -> PathBuf {
        self.dir.join(format!("{}.lock", flat_name(repo)))
    }

    fn empty(repo: &RepoName) -> DownstreamRecord {
        DownstreamRecord {
            repo: repo.to_string(),
            remotes: BTreeMap::new(),
        }
    }

    /// The record of `repo` (empty if it has none). One that cannot be parsed is set aside as
    /// `<file>.corrupt` and read as empty: every downstream then counts as never pushed, and
    /// the daemon's sweep queues each again.
    pub(crate) fn load(&self, repo: &RepoName) -> Result<DownstreamRecord, QueueError> {
        let file = self.file(repo);
        let bytes = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::empty(repo)),
            Err(e) => return Err(e).at("cannot read", &file)?,
        };
        match serde_json::from_slice::<DownstreamRecord>(&bytes) {
            Ok(r) => Ok(r),
            Err(e) => {
                let aside = file.with_extension("json.corrupt");
                std::fs::rename(&file, &aside).at("cannot set aside", &file)?;
                warn!(%repo, file = %file.display(), kept_as = %aside.display(), error = %e,
                    "corrupt downstream record set aside; its downstreams count as never pushed");
                Ok(Self::empty(repo))
            }
        }
    }

    /// The repos that have a record, from the file names alone.
    pub(crate) fn repos(&self) -> Result<Vec<RepoName>, QueueError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at("cannot list", &self.dir)?,
        };
        let mut out: Vec<RepoName> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
                RepoName::parse(&name.replace('~', "/")).ok()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every record, in repo order.
    pub(crate) fn load_all(&self) -> Result<Vec<DownstreamRecord>, QueueError> {
        let mut out = Vec::new();
        for repo in self.repos()? {
            // One record that cannot be read does not stop every other downstream.
            match self.load(&repo) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(%repo, error = %e, "cannot read a downstream record; skipped")
                }
            }
        }
        Ok(out)
    }

    /// Reads, changes and rewrites `repo`'s record under its lock; `durable` waits for the
    /// disk. A record left with no downstream is removed.
    fn update<T>(
        &self,
        repo: &RepoName,
        durable: bool,
        change: impl FnOnce(&mut DownstreamRecord) -> T,
    ) -> Result<T, QueueError> {
        ensure_dir(&self.dir, 0o700)?;
        let _lock = lock(&self.lock_file(repo))?;
        let mut record = self.load(repo)?;
        let before = record.clone();
        let out = change(&mut record);
        if record == before {
            return Ok(out);
        }
        let file = self.file(repo);
        if record.remotes.is_empty() {
            return match std::fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(e).at("cannot remove", &file).map_err(QueueError::from)
                }
                _ => Ok(out),
            };
        }
        let text = serde_json::to_vec_pretty(&record).map_err(|e| QueueError::Corrupt {
            file: file.clone(),
            message: e.to_string(),
        })?;
        if durable {
            write_atomic(&file, &text, 0o600)?;
        } else {
            replace(&file, &text, 0o600)?;
        }
        Ok(out)
    }

    /// Marks each of `urls` behind on `repo`; durable when this returns. Returns the record as
    /// written.
    pub(crate) fn enqueue(
        &self,
        repo: &RepoName,
        urls: &[&str],
    ) -> Result<DownstreamRecord, QueueError> {
        let t = now();
        self.update(repo, true, |record| {
            for url in urls {
                let entry = record.remotes.entry(url.to_string()).or_default();
                let p = entry.pending.get_or_insert(Behind {
                    since: t,
                    generation: 0,
                    attempts: 0,
                    last_error: None,
                    next_attempt: t,
                });
                p.generation += 1;
                p.next_attempt = t;
            }
            record.clone()
        })
    }

    /// Records what an attempt on `url` came to. The entry stops being behind only if the
    /// attempt succeeded from the current generation; a push that came in meanwhile keeps it
    /// behind, due now.
    pub(crate) fn record(
        &self,
        repo: &RepoName,
        url: &str,
        attempt: Attempt,
    ) -> Result<(), QueueError> {
        let t = now();
        self.update(repo, false, |record| {
            let Some(entry) = record.remotes.get_mut(url) else {
                // Forgotten meanwhile (no longer configured, or no longer mastered here).
                return;
            };
            entry.last_attempt = Some(t);
            entry.pushed = attempt.pushed;
            match attempt.failed {
                Some((words, next_attempt)) => {
                    let p = entry.pending.get_or_insert(Behind {
                        since: t,
                        generation: attempt.generation,
                        attempts: 0,
                        last_error: None,
                        next_attempt,
                    });
                    p.attempts = p.attempts.saturating_add(1);
                    p.last_error = Some(words);
                    p.next_attempt = next_attempt;
                }
                None => {
                    entry.last_success = Some(t);
                    entry.diverged = attempt.diverged;
                    match &mut entry.pending {
                        Some(p) if p.generation > attempt.generation => {
                            p.attempts = 0;
                            p.last_error = None;
                            p.next_attempt = t;
                        }
                        _ => entry.pending = None,
                    }
                }
            }
        })
    }

    /// Drops `repo`'s entries for URLs `keep` says no: downstreams no longer configured, or
    /// every one when this server no longer masters the repo. Returns the dropped URLs.
    pub(crate) fn forget(
        &self,
        repo: &RepoName,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, QueueError> {
        self.update(repo, false, |record| {
            let gone: Vec<String> = record
                .remotes
                .keys()
                .filter(|u| !keep(u))
                .cloned()
                .collect();
            for u in &gone {
                record.remotes.remove(u);
            }
            gone
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_during_an_attempt_keeps_the_downstream_behind() {
        let dir = tempfile::tempdir().unwrap();
        let q = DownstreamQueue::new(dir.path().join("d"));
        let repo = RepoName::parse("a/b").unwrap();
        let r = q.enqueue(&repo, &["/srv/x.git"]).unwrap();
        let g = r.remotes["/srv/x.git"].pending.as_ref().unwrap().generation;
        q.enqueue(&repo, &["/srv/x.git"]).unwrap();
        let pushed: BTreeMap<String, String> =
            [("refs/heads/main".to_string(), "1".repeat(40))].into();
        q.record(
            &repo,
            "/srv/x.git",
            Attempt {
                generation: g,
                pushed: pushed.clone(),
                diverged: vec![],
                failed: None,
            },
        )
        .unwrap();
        let e = &q.load(&repo).unwrap().remotes["/srv/x.git"];
        assert!(e.pending.is_some());
        assert_eq!(e.pushed, pushed);
        q.record(
            &repo,
            "/srv/x.git",
            Attempt {
                generation: g + 1,
                pushed: pushed.clone(),
                diverged: vec![],
                failed: Some(("down".into(), 9.0)),
            },
        )
        .unwrap();
        let e = &q.load(&repo).unwrap().remotes["/srv/x.git"];
        let p = e.pending.as_ref().unwrap();
        assert_eq!((p.attempts, p.last_error.as_deref()), (1, Some("down")));
        q.record(
            &repo,
            "/srv/x.git",
            Attempt {
                generation: g + 1,
                pushed,
                diverged: vec!["refs/heads/x".into()],
                failed: None,
            },
        )
        .unwrap();
        let e = &q.load(&repo).unwrap().remotes["/srv/x.git"];
        assert!(e.pending.is_none() && e.last_success.is_some());
        assert_eq!(q.repos().unwrap(), vec![repo.clone()]);
        assert_eq!(q.forget(&repo, |_| false).unwrap(), vec!["/srv/x.git"]);
        assert!(q.repos().unwrap().is_empty());
    }
}
