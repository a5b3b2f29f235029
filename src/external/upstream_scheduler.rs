//! The daemon's pull mirror schedule: every repo with an `upstream` that this server masters
//! (or holds alone) is fetched every `upstream.interval`, spread with jitter so that a
//! thousand mirrors do not fire at once, and on demand (`gitmirror fetch`, `ssh ... fetch`).
//! A failure is retried with the mirror backoff and jitter, forever, never later than the
//! interval. A fetch that changed refs queues the repo for its slaves, durably, as a user's
//! push does: the whole cluster serves the upstream's state.
//!
//! Only the master fetches: a slave's copy comes from its master, and after a promotion the
//! new master's daemon takes the schedule over by the same rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::upstream_fetch::{self, Fetched};
use super::upstream_record::{UpstreamRecord, UpstreamRecords};
use crate::config::external::Upstream;
use crate::config::{MirrorConfig, Rules};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::replicate::When;
use crate::replicate::queue::{Backoff, Queue, now};
use crate::replicate::scheduler::Scheduler;
use crate::repo::{self, Store};

/// Fetches under way at once (each mostly waits on the network or on git).
const FETCHES_AT_ONCE: usize = 8;

/// The longest the schedule sleeps without looking at the configuration again.
const TICK: Duration = Duration::from_secs(10);

/// The result of one fetch, for whoever asked.
pub(crate) type FetchOutcome = Result<Fetched, String>;

/// The pull mirrors of one server, in its daemon.
pub(crate) struct UpstreamScheduler {
    home: Home,
    this: AccountName,
    min_interval: f64,
    backoff: Backoff,
    /// How long one fetch may take in all (`mirror.io_timeout_secs`).
    timeout: Duration,
    records: UpstreamRecords,
    scheduler: Arc<Scheduler>,
    slots: Semaphore,
    /// One lock per repo: a fetch never overlaps another of the same repo.
    running: Mutex<HashMap<RepoName, Arc<tokio::sync::Mutex<()>>>>,
    /// The repos with an upstream, and the compiled rules' time they were read at.
    configured: Mutex<Option<Configured>>,
    /// Wakes the schedule when a fetch ends (its next one is due at a new time).
    ended: tokio::sync::Notify,
    /// Mirrors the schedule has started a fetch task for, not yet ended.
    started: Mutex<std::collections::HashSet<RepoName>>,
}

/// The repos with an upstream in the compiled rules, as of the rules file's time.
struct Configured(std::time::SystemTime, Vec<(RepoName, Upstream)>);

/// The pull mirrors server `this` fetches: in the compiled rules, in the store, and mastered
/// there (or local).
pub(crate) fn pull_mirrors(home: &Home, this: &AccountName) -> Vec<(RepoName, Upstream)> {
    mastered_here(home, this, configured(home))
}

/// Every repo with an upstream in the compiled rules.
fn configured(home: &Home) -> Vec<(RepoName, Upstream)> {
    let Ok(rules) = Rules::compiled(home) else {
        return Vec::new();
    };
    rules
        .named_repos()
        .filter_map(|r| rules.upstream(r).map(|u| (r.clone(), u.clone())))
        .collect()
}

/// Those of `configured` in the store and mastered by `this` (or local).
fn mastered_here(
    home: &Home,
    this: &AccountName,
    configured: Vec<(RepoName, Upstream)>,
) -> Vec<(RepoName, Upstream)> {
    let store = Store::new(home.repositories());
    configured
        .into_iter()
        .filter(|(r, _)| {
            store
                .find(r)
                .is_some_and(|p| match repo::mirror_config(&p) {
                    Ok(Some(m)) => m.is_master(this),
                    Ok(None) => true,
                    Err(_) => false,
                })
        })
        .collect()
}

impl UpstreamScheduler {
    pub(crate) fn new(
        home: &Home,
        this: &AccountName,
        mirror: &MirrorConfig,
        scheduler: Arc<Scheduler>,
    ) -> Arc<Self> {
        Arc::new(UpstreamScheduler {
            home: home.clone(),
            this: this.clone(),
            min_interval: mirror.upstream_min_interval_secs,
            backoff: Backoff::from_config(mirror),
            timeout: Duration::from_secs_f64(mirror.io_timeout_secs),
            records: UpstreamRecords::of(home),
            scheduler,
            slots: Semaphore::new(FETCHES_AT_ONCE),
            running: Mutex::new(HashMap::new()),
            configured: Mutex::new(None),
            ended: tokio::sync::Notify::new(),
            started: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The pull mirrors this server fetches. The compiled rules are read again only when a
    /// compile has rewritten them: with ten thousand repos, reading them every tick would
    /// cost more than the schedule itself.
    pub(crate) fn mirrors(&self) -> Vec<(RepoName, Upstream)> {
        let stamp = std::fs::metadata(self.home.compiled_rules_path())
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.configured.lock().unwrap_or_else(|p| p.into_inner());
        if stamp.is_none() || cache.as_ref().map(|c| c.0) != stamp {
            *cache = stamp.map(|t| Configured(t, configured(&self.home)));
        }
        let list = cache.as_ref().map(|c| c.1.clone()).unwrap_or_default();
        drop(cache);
        mastered_here(&self.home, &self.this, list)
    }

    fn lock_started(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<RepoName>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs the schedule forever.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            let me = self.clone();
            let mirrors = tokio::task::spawn_blocking(move || me.mirrors())
                .await
                .unwrap_or_default();
            let t = now();
            let mut wake = t + TICK.as_secs_f64();
            for (repo, upstream) in mirrors {
                let mut record = self.records.load(&repo);
                let interval = (upstream.interval_secs as f64).max(self.min_interval);
                // A shorter interval (repos.toml or the minimum changed) takes effect now, not
                // after the longer one it replaces.
                let too_far = record.next_attempt.is_some_and(|n| n > t + interval * 1.1);
                if record.url != upstream.url.url || record.next_attempt.is_none() || too_far {
                    // New (or moved, or due too late): first fetch soon, spread over a
                    // minute so that a thousand new mirrors do not start together.
                    let spread = interval.min(60.0) * fastrand::f64();
                    record = UpstreamRecord {
                        url: upstream.url.url.clone(),
                        next_attempt: Some(t + spread),
                        ..record
                    };
                    let _ = self.records.save(&repo, &record);
                }
                let due = record.next_attempt.unwrap_or(t);
                if due > t {
                    wake = wake.min(due);
                    continue;
                }
                // One task per due mirror: one already started (waiting for a slot, or
                // fetching) is not started again at every wake.
                if !self.lock_started().insert(repo.clone()) {
                    continue;
                }
                let me = self.clone();
                tokio::spawn(async move {
                    let _ = me.fetch(&repo, &upstream, false).await;
                    me.lock_started().remove(&repo);
                });
            }
            let pause = (wake - now()).clamp(0.05, TICK.as_secs_f64());
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(pause)) => {}
                _ = self.ended.notified() => {}
            }
        }
    }

    /// Fetches `repo` now: for a request (`asked`), waiting for a fetch under way to end and
    /// then fetching; for the schedule, skipping a repo whose fetch is under way.
    pub(crate) async fn fetch(
        &self,
        repo: &RepoName,
        upstream: &Upstream,
        asked: bool,
    ) -> FetchOutcome {
        let lock = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(repo.clone())
            .or_default()
            .clone();
        let _held = if asked {
            lock.lock().await
        } else {
            match lock.try_lock() {
                Ok(held) => held,
                Err(_) => return Err("a fetch is under way".into()),
            }
        };
        let _slot = self.slots.acquire().await;
        let store = Store::new(self.home.repositories());
        let Some(path) = store.find(repo) else {
            return Err(format!("no repo {repo} here"));
        };
        let started = now();
        let mut log = vec![format!(
            "fetch of {repo} from {} at {}",
            upstream.url.url,
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        )];
        // Counted from its start: calls that come while it runs are rate-limited by it too.
        let mut started_record = self.records.load(repo);
        started_record.last_attempt = Some(started);
        let _ = self.records.save(repo, &started_record);
        let result =
            upstream_fetch::fetch(&self.home, &path, upstream, self.timeout, &mut log).await;
        let mut record = self.records.load(repo);
        record.url = upstream.url.url.clone();
        record.last_attempt = Some(started);
        record.millis = Some(((now() - started) * 1000.0) as u64);
        let interval = (upstream.interval_secs as f64).max(self.min_interval);
        let jitter = 0.9 + fastrand::f64() * 0.2;
        let outcome = match result {
            Ok(fetched) => {
                record.last_success = Some(now());
                record.failures = 0;
                record.last_error = None;
                record.next_attempt = Some(now() + interval * jitter);
                log.push(format!(
                    "done in {} ms: {} refs updated, {} diverged",
                    fetched.millis,
                    fetched.updated.len(),
                    fetched.diverged.len()
                ));
                info!(%repo, updated = fetched.updated.len(), diverged = fetched.diverged.len(), guarded = fetched.guarded.is_some(), millis = fetched.millis, "upstream fetched");
                if fetched.changed() {
                    self.tell_slaves(repo, &path);
                    if upstream.manifest.is_some() {
                        log.extend(self.follow_manifest(repo).await);
                    }
                }
                record.last = Some(fetched.clone());
                Ok(fetched)
            }
            Err(e) => {
                let words = e.to_string();
                record.failures = record.failures.saturating_add(1);
                record.last_error = Some(words.clone());
                let delay = self
                    .backoff
                    .delay(record.failures)
                    .as_secs_f64()
                    .min(interval);
                record.next_attempt = Some(now() + delay);
                log.push(format!("failed: {words}"));
                warn!(%repo, url = %upstream.url.url, error = %words, failures = record.failures, retry_in_secs = delay as u64, "upstream fetch failed");
                Err(words)
            }
        };
        if let Err(e) = self
            .records
            .save(repo, &record)
            .and_then(|()| self.records.save_log(repo, &log))
        {
            warn!(%repo, error = %e, "cannot record the upstream fetch");
        }
        self.ended.notify_one();
        outcome
    }

    /// The manifest this pull mirror carries moved: imported again (new projects get their
    /// tables; projects that left are reported and kept), then compiled by the gitmirror
    /// program itself (compiling is an administrator's command, above this module), which
    /// creates the new mirrors; the schedule fetches them. Returns lines for the fetch's log.
    async fn follow_manifest(&self, repo: &RepoName) -> Vec<String> {
        let (home, r) = (self.home.clone(), repo.clone());
        let report =
            tokio::task::spawn_blocking(move || super::manifest::import::reimport(&home, &r)).await;
        let report = match report {
            Ok(Ok(report)) => report,
            Ok(Err(e)) => {
                warn!(%repo, error = %e, "the followed manifest could not be imported again");
                return vec![format!("manifest not imported again: {e}")];
            }
            Err(_) => return vec!["manifest import stopped".into()],
        };
        let mut lines = report.lines();
        info!(%repo, added = report.added.len(), left = report.left.len(), "followed manifest imported again");
        if report.written {
            let exe = std::env::current_exe();
            let out = match exe {
                Ok(exe) => tokio::process::Command::new(exe)
                    .arg("--home")
                    .arg(self.home.root())
                    .arg("compile")
                    .env_clear()
                    .env("PATH", crate::proto::SAFE_PATH)
                    .env("HOME", self.home.root())
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match out {
                Ok(o) if o.status.success() => lines.push("compiled".into()),
                Ok(o) => {
                    let words = crate::text::one_line(String::from_utf8_lossy(&o.stderr).trim());
                    warn!(%repo, error = %words, "compile after a manifest import failed");
                    lines.push(format!("compile failed: {words}"));
                }
                Err(e) => lines.push(format!("cannot run compile: {e}")),
            }
        }
        lines
    }

    /// Queues the repo for each of its slaves, durably, and has the scheduler push it: what
    /// the post-receive hook does for a user's push.
    fn tell_slaves(&self, repo: &RepoName, path: &std::path::Path) {
        let Ok(Some(rule)) = repo::mirror_config(path) else {
            return;
        };
        if rule.slaves.is_empty() {
            return;
        }
        let queue = Queue::new(self.home.queue_dir());
        if let Err(e) = queue.enqueue_record(repo, &rule.slaves) {
            warn!(%repo, error = %e, "cannot queue the fetched refs for the slaves");
            return;
        }
        for slave in &rule.slaves {
            self.scheduler.submit(repo, slave, When::Always, false);
        }
    }
}
