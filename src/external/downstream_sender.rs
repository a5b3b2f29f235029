//! The daemon's sender of push mirrors: works the [`DownstreamQueue`] down, one push per repo
//! and downstream at a time (a few downstreams at once in all), retried with the mirror
//! backoff (capped), forever, until the downstream has our refs.
//!
//! Only the repo's master pushes: before each attempt the repo's own mirror settings are read
//! (a local repo, with none, is its own master). A server that finds it no longer masters a
//! repo, or a downstream no longer in `repos.toml`, forgets its entry; the new master's
//! sweep queues the downstream for itself.
//!
//! The sweep ([`queue_new_downstreams`], at start, every `mirror.rescan_secs`, and after
//! `compile`) queues every downstream of a repo mastered here that has no entry yet: a
//! downstream just added (its first push carries the existing content), or a repo this server
//! has just become master of. It also queues a downstream whose refs as last pushed differ
//! from the repo's own ([`queue_changed`]): a ref update no hook announced.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

use super::downstream::{self, Outcome};
use super::downstream_queue::{Attempt, DownstreamQueue};
use crate::config::external::{Downstream, pattern_matches};
use crate::config::{MirrorConfig, Rules};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::proto::OWN_NS;
use crate::replicate::queue::{Backoff, now};
use crate::repo::{self, Store};

/// The longest the sender sleeps without looking at the queue again.
const IDLE: Duration = Duration::from_secs(30);

/// The longest wait between attempts on one downstream: one that comes back gets the pushes
/// within this.
const RETRY_CAP: Duration = Duration::from_secs(600);

/// How many pushes to downstreams run at once, over every repo.
const PARALLEL: usize = 4;

/// Whether this server masters a repo, for its downstreams.
pub(crate) enum Role {
    /// It does (or the repo is local): its path.
    Master(PathBuf),
    /// It does not, or the repo is not here.
    Not,
    /// Its settings cannot be read: neither push nor forget.
    Unknown(String),
}

/// Whether `this` masters `repo` here.
pub(crate) fn role(home: &Home, this: &AccountName, repo: &RepoName) -> Role {
    let Some(path) = Store::new(home.repositories()).find(repo) else {
        return Role::Not;
    };
    match repo::mirror_config(&path) {
        Ok(None) => Role::Master(path),
        Ok(Some(rule)) if rule.is_master(this) => Role::Master(path),
        Ok(Some(_)) => Role::Not,
        Err(e) => Role::Unknown(e.to_string()),
    }
}

/// Queues every downstream `rules` gives a repo mastered here that the queue has no entry
/// for; returns the repos queued.
pub(crate) fn queue_new_downstreams(
    home: &Home,
    this: &AccountName,
    rules: &Rules,
) -> Vec<RepoName> {
    let queue = DownstreamQueue::in_external_dir(home.external_dir());
    let mut queued = Vec::new();
    for repo in rules.named_repos() {
        let downstreams = rules.downstreams(repo);
        if downstreams.is_empty() || !matches!(role(home, this, repo), Role::Master(_)) {
            continue;
        }
        let known = match queue.load(repo) {
            Ok(r) => r.remotes,
            Err(e) => {
                warn!(%repo, error = %e, "cannot read the downstream record; new downstreams not queued");
                continue;
            }
        };
        let new: Vec<&str> = downstreams
            .iter()
            .map(|d| d.url.url.as_str())
            .filter(|u| !known.contains_key(*u))
            .collect();
        if new.is_empty() {
            continue;
        }
        match queue.enqueue(repo, &new) {
            Ok(_) => {
                info!(%repo, downstreams = ?new, "downstreams queued for a first push");
                queued.push(repo.clone());
            }
            Err(e) => warn!(%repo, error = %e, "cannot queue new downstreams"),
        }
    }
    queued
}

/// Queues every downstream, in sync by its record, whose refs as last pushed differ from the
/// repo's now (refs kept as diverged aside): a ref update no hook announced (an
/// administrator's `git update-ref`, a crash between git's update and the hook). Returns the
/// repos queued.
pub(crate) fn queue_changed(home: &Home, this: &AccountName, rules: &Rules) -> Vec<RepoName> {
    let queue = DownstreamQueue::in_external_dir(home.external_dir());
    let mut queued = Vec::new();
    for repo in queue.repos().unwrap_or_default() {
        let Role::Master(path) = role(home, this, &repo) else {
            continue;
        };
        let Ok(record) = queue.load(&repo) else {
            continue;
        };
        let Ok(git) = git2::Repository::open_bare(&path) else {
            continue;
        };
        let Ok(refs) = git.references() else {
            continue;
        };
        let mut ours: Vec<(String, String)> = Vec::new();
        for r in refs.flatten() {
            if let (Ok(name), Some(oid)) = (r.name(), r.target())
                && !name.starts_with(OWN_NS)
            {
                ours.push((name.to_string(), oid.to_string()));
            }
        }
        let mut changed: Vec<&str> = Vec::new();
        for d in rules.downstreams(&repo) {
            let Some(entry) = record.remotes.get(&d.url.url) else {
                continue;
            };
            if entry.pending.is_some() {
                continue;
            }
            let diverged: Vec<&str> = entry
                .diverged
                .iter()
                .map(|d| d.split_once(" (").map_or(d.as_str(), |(n, _)| n))
                .collect();
            let wanted =
                |n: &str| d.refs.iter().any(|p| pattern_matches(p, n)) && !diverged.contains(&n);
            let now: BTreeMap<&str, &str> = ours
                .iter()
                .filter(|(n, _)| wanted(n))
                .map(|(n, o)| (n.as_str(), o.as_str()))
                .collect();
            let then: BTreeMap<&str, &str> = entry
                .pushed
                .iter()
                .filter(|(n, _)| wanted(n))
                .map(|(n, o)| (n.as_str(), o.as_str()))
                .collect();
            if now != then {
                changed.push(d.url.url.as_str());
            }
        }
        if changed.is_empty() {
            continue;
        }
        match queue.enqueue(&repo, &changed) {
            Ok(_) => {
                info!(%repo, downstreams = ?changed, "refs changed with no push announcing it: downstreams queued");
                queued.push(repo);
            }
            Err(e) => warn!(%repo, error = %e, "cannot queue downstreams"),
        }
    }
    queued
}

/// Forgets the queue's entries this server has no business with: every one of a repo it no
/// longer masters (the new master has its own), and downstreams `rules` no longer give.
pub(crate) fn forget_stale(home: &Home, this: &AccountName, rules: &Rules) {
    let queue = DownstreamQueue::in_external_dir(home.external_dir());
    for repo in queue.repos().unwrap_or_default() {
        let keep_any = match role(home, this, &repo) {
            Role::Master(_) => true,
            Role::Not => false,
            Role::Unknown(_) => continue,
        };
        let configured = rules.downstream_urls(&repo);
        match queue.forget(&repo, |u| keep_any && configured.contains(&u)) {
            Ok(gone) if !gone.is_empty() => {
                info!(%repo, downstreams = ?gone, mastered = keep_any, "downstream entries forgotten")
            }
            Ok(_) => {}
            Err(e) => warn!(%repo, error = %e, "cannot forget downstream entries"),
        }
    }
}

/// Queues every downstream of `repo` (a server just promoted to its master pushes to them
/// now); returns how many.
pub(crate) fn queue_all(home: &Home, repo: &RepoName) -> Result<usize, String> {
    let rules = Rules::compiled_for(home, repo).map_err(|e| e.to_string())?;
    let urls = rules.downstream_urls(repo);
    if urls.is_empty() {
        return Ok(0);
    }
    DownstreamQueue::in_external_dir(home.external_dir())
        .enqueue(repo, &urls)
        .map_err(|e| e.to_string())?;
    Ok(urls.len())
}

/// Works the downstream queue of one server.
pub(crate) struct DownstreamSender {
    home: Home,
    this: AccountName,
    queue: DownstreamQueue,
    backoff: Backoff,
    sweep_every: Duration,
    kick: Notify,
    slots: Arc<Semaphore>,
    /// (repo, url) pairs a task is pushing now.
    busy: Mutex<HashSet<(RepoName, String)>>,
}

impl DownstreamSender {
    pub(crate) fn new(home: &Home, this: &AccountName, mirror: &MirrorConfig) -> Arc<Self> {
        Arc::new(DownstreamSender {
            home: home.clone(),
            this: this.clone(),
            queue: DownstreamQueue::in_external_dir(home.external_dir()),
            backoff: Backoff::from_config(mirror),
            sweep_every: Duration::from_secs_f64(mirror.rescan_secs.max(1.0)),
            kick: Notify::new(),
            slots: Arc::new(Semaphore::new(PARALLEL)),
            busy: Mutex::new(HashSet::new()),
        })
    }

    /// Looks at the queue now (a push was just queued).
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashSet<(RepoName, String)>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs forever: each round starts a task for every downstream that is due and not being
    /// pushed already, then sleeps until the next is due, or a kick.
    pub(crate) async fn run(self: Arc<Self>) {
        let mut swept: Option<Instant> = None;
        loop {
            if swept.is_none_or(|t| t.elapsed() >= self.sweep_every) {
                swept = Some(Instant::now());
                let (home, this) = (self.home.clone(), self.this.clone());
                let _ = tokio::task::spawn_blocking(move || match Rules::compiled(&home) {
                    Ok(rules) => {
                        forget_stale(&home, &this, &rules);
                        queue_new_downstreams(&home, &this, &rules);
                        queue_changed(&home, &this, &rules);
                    }
                    Err(e) => warn!(error = %e, "cannot read the compiled rules for downstreams"),
                })
                .await;
            }
            let queue = self.queue.clone();
            let records = match tokio::task::spawn_blocking(move || queue.load_all()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read the downstream queue");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            let t = now();
            let mut wake = t + IDLE.as_secs_f64();
            for record in records {
                let Ok(repo) = RepoName::parse(&record.repo) else {
                    continue;
                };
                for (url, entry) in record.remotes {
                    let Some(p) = &entry.pending else { continue };
                    if p.next_attempt > t {
                        wake = wake.min(p.next_attempt);
                        continue;
                    }
                    if !self.lock_busy().insert((repo.clone(), url.clone())) {
                        continue;
                    }
                    let (sender, repo) = (self.clone(), repo.clone());
                    let (generation, attempts) = (p.generation, p.attempts);
                    tokio::spawn(async move {
                        let key = (repo.clone(), url.clone());
                        sender
                            .attempt(&repo, &url, generation, attempts, entry.pushed)
                            .await;
                        sender.lock_busy().remove(&key);
                        // A push that came in meanwhile is due now.
                        sender.kick();
                    });
                }
            }
            let mut pause = Duration::from_secs_f64((wake - now()).clamp(0.05, IDLE.as_secs_f64()));
            if let Some(t) = swept {
                pause = pause.min(self.sweep_every.saturating_sub(t.elapsed()));
            }
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One push of `repo` to `url`, if this server still masters the repo and the downstream
    /// is still configured; else its entry is forgotten.
    async fn attempt(
        &self,
        repo: &RepoName,
        url: &str,
        generation: u64,
        attempts: u32,
        last: BTreeMap<String, String>,
    ) {
        let (home, this, r) = (self.home.clone(), self.this.clone(), repo.clone());
        let looked = tokio::task::spawn_blocking(move || {
            let rules = Rules::compiled_for(&home, &r).map_err(|e| e.to_string())?;
            let downstreams: Vec<Downstream> = rules.downstreams(&r).to_vec();
            Ok::<_, String>((role(&home, &this, &r), downstreams))
        })
        .await;
        let (role, downstreams) = match looked {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                warn!(%repo, %url, error = %e, "cannot read the compiled rules; downstream push deferred");
                self.failed(repo, url, generation, attempts, last, e).await;
                return;
            }
            Err(_) => return,
        };
        let path = match role {
            Role::Master(path) => path,
            Role::Unknown(e) => {
                self.failed(repo, url, generation, attempts, last, e).await;
                return;
            }
            Role::Not => {
                let queue = self.queue.clone();
                let r = repo.clone();
                let forgot = tokio::task::spawn_blocking(move || queue.forget(&r, |_| false)).await;
                info!(%repo, forgot = ?forgot.ok().and_then(Result::ok), "not the master here: downstreams left to the master");
                return;
            }
        };
        let Some(downstream) = downstreams.iter().find(|d| d.url.url == url) else {
            let queue = self.queue.clone();
            let r = repo.clone();
            let urls: Vec<String> = downstreams.iter().map(|d| d.url.url.clone()).collect();
            let _ = tokio::task::spawn_blocking(move || {
                queue.forget(&r, |u| urls.iter().any(|k| k == u))
            })
            .await;
            info!(%repo, %url, "downstream no longer configured: forgotten");
            return;
        };
        let _slot = self.slots.clone().acquire_owned().await;
        let started = Instant::now();
        let Outcome {
            pushed,
            diverged,
            sent,
            error,
        } = downstream::push(&self.home, &path, downstream, &last).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let failed = match error {
            None => {
                info!(%repo, %url, refs = sent, diverged = diverged.len(), elapsed_ms, "pushed to downstream");
                if !diverged.is_empty() {
                    warn!(%repo, %url, refs = ?diverged, "refs diverged on the downstream were left alone");
                }
                None
            }
            Some(e) => {
                let delay = self.delay(attempts);
                warn!(%repo, %url, error = %e, refs = sent, attempts = attempts + 1, retry_in_secs = delay.as_secs(), elapsed_ms, "push to downstream failed");
                Some((e.to_string(), now() + delay.as_secs_f64()))
            }
        };
        let attempt = Attempt {
            generation,
            pushed,
            diverged,
            failed,
        };
        self.record(repo, url, attempt).await;
    }

    fn delay(&self, attempts: u32) -> Duration {
        self.backoff
            .delay(attempts.saturating_add(1))
            .min(RETRY_CAP)
    }

    async fn failed(
        &self,
        repo: &RepoName,
        url: &str,
        generation: u64,
        attempts: u32,
        last: BTreeMap<String, String>,
        words: String,
    ) {
        let next = now() + self.delay(attempts).as_secs_f64();
        let attempt = Attempt {
            generation,
            pushed: last,
            diverged: Vec::new(),
            failed: Some((words, next)),
        };
        self.record(repo, url, attempt).await;
    }

    async fn record(&self, repo: &RepoName, url: &str, attempt: Attempt) {
        let (queue, r, u) = (self.queue.clone(), repo.clone(), url.to_string());
        let recorded = tokio::task::spawn_blocking(move || queue.record(&r, &u, attempt)).await;
        if let Ok(Err(e)) = recorded {
            warn!(%repo, %url, error = %e, "cannot record a downstream push's outcome");
        }
    }
}
