//! The replicator: works the durable queue down, inside the daemon.
//!
//! For each (repo, slave) at most one mirror push runs at a time and at most one more is
//! queued behind it: any number of notifications while a push runs collapse into that one.
//! A failed push is retried with backoff, forever; a success on a peer wakes every push that
//! was waiting to retry on it, so a slave that comes back catches up at once. Callers that
//! want to know (sync pushes, `request-push`) wait for a push that started after their ref
//! updates were queued.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::peers::Pool;
use crate::push::{self, Failure, Pushed, RefState, When};
use crate::queue::{Backoff, Queue};
use crate::store::{self, Store};

/// The outcome one waiter learns: `Ok` once the slave has the state, or the slave's words.
pub type Outcome = Result<(), String>;

struct Waiter {
    generation: u64,
    tx: oneshot::Sender<Outcome>,
}

/// The in-memory state of one (repo, slave).
#[derive(Default)]
struct Slot {
    running: bool,
    /// Another push is wanted after the running one (the one queued behind it)...
    again: Option<When>,
    /// ...for the queue generation it was asked at; a run that started from this generation
    /// or a later one already covers it.
    again_generation: u64,
    waiters: Vec<Waiter>,
    /// Cuts a retry's backoff short: someone asked for this push now.
    kick: Arc<Notify>,
}

type Key = (RepoName, AccountName);

/// The daemon's replication engine.
pub struct Replicator {
    home: Home,
    config: Arc<ServerConfig>,
    queue: Queue,
    backoff: Backoff,
    pool: Pool,
    slots: Mutex<HashMap<Key, Slot>>,
    peer_back: Mutex<HashMap<AccountName, Arc<Notify>>>,
    probing: Mutex<HashSet<AccountName>>,
}

/// The longest pause between attempts to reach a peer that is down.
const PROBE_CAP: Duration = Duration::from_secs(5);

/// How often the daemon looks for queued work that nothing works on.
pub const RESCAN: Duration = Duration::from_secs(30);

impl Replicator {
    /// A replicator for this server.
    pub fn new(home: &Home, config: Arc<ServerConfig>) -> Arc<Self> {
        Arc::new(Replicator {
            home: home.clone(),
            queue: Queue::new(home.queue_dir()),
            backoff: Backoff::from_config(&config.mirror),
            pool: Pool::new(home.clone(), config.clone()),
            config,
            slots: Mutex::new(HashMap::new()),
            peer_back: Mutex::new(HashMap::new()),
            probing: Mutex::new(HashSet::new()),
        })
    }

    /// The server home.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// This server's name.
    pub fn this(&self) -> &AccountName {
        &self.config.hostname
    }

    /// The repo's path and slaves, if this server masters it.
    pub fn mastered(&self, repo: &RepoName) -> Result<(PathBuf, Vec<AccountName>), String> {
        let path = Store::new(self.home.repositories())
            .find(repo)
            .ok_or_else(|| format!("{repo}: no such repo here"))?;
        match store::mirror_config(&path).map_err(|e| e.to_string())? {
            Some(rule) if rule.is_master(self.this()) => Ok((path, rule.slaves)),
            Some(rule) => Err(format!(
                "{repo}: mastered by {}, not {}",
                rule.master,
                self.this()
            )),
            None => Err(format!("{repo}: not mirrored")),
        }
    }

    /// Asks for a mirror push of `repo` to `slave`. With `wait`, returns a receiver that
    /// yields the outcome of the first push that starts after this call.
    pub fn submit(
        self: &Arc<Self>,
        repo: &RepoName,
        slave: &AccountName,
        when: When,
        wait: bool,
    ) -> Option<oneshot::Receiver<Outcome>> {
        let generation = self.queue.generation(repo, slave).unwrap_or(0);
        let key = (repo.clone(), slave.clone());
        let mut slots = self.lock_slots();
        let slot = slots.entry(key.clone()).or_default();
        debug!(%repo, %slave, ?when, queued = slot.running, "mirror push requested");
        let rx = wait.then(|| {
            let (tx, rx) = oneshot::channel();
            slot.waiters.push(Waiter { generation, tx });
            rx
        });
        if slot.running {
            slot.again = Some(match (slot.again, when) {
                (Some(When::Always), _) | (_, When::Always) => When::Always,
                _ => When::IfDifferent,
            });
            slot.again_generation = slot.again_generation.max(generation);
            slot.kick.notify_one();
        } else {
            slot.running = true;
            let me = self.clone();
            tokio::spawn(async move { me.run(key, when).await });
        }
        rx
    }

    /// Starts work on everything the queue holds, then checks every repo this server masters
    /// against what its slaves last confirmed (without network when nothing changed). That
    /// second pass catches a push whose hook never ran (a crash between git's ref update and
    /// the hook).
    pub fn resume(self: &Arc<Self>) {
        let resumed = self.rescan();
        let pairs = self.mastered_pairs();
        for (repo, slave) in &pairs {
            self.submit(repo, slave, When::IfChanged, false);
        }
        info!(resumed, checked = pairs.len(), "replicator started");
    }

    /// Every (repo, slave) of the repos this server masters.
    pub fn mastered_pairs(&self) -> Vec<(RepoName, AccountName)> {
        let store = Store::new(self.home.repositories());
        let mut pairs = Vec::new();
        for repo in store.list().unwrap_or_default() {
            if let Ok((_, slaves)) = self.mastered(&repo) {
                pairs.extend(slaves.into_iter().map(|s| (repo.clone(), s)));
            }
        }
        pairs
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peer_back(&self, peer: &AccountName) -> Arc<Notify> {
        let mut map = self.peer_back.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(peer.clone()).or_default().clone()
    }

    /// Resolves the waiters a push that started at `generation` satisfies (all of them on
    /// failure: a sync push learns at once that this slave is failing).
    fn resolve(&self, key: &Key, generation: u64, outcome: &Outcome) {
        let mut slots = self.lock_slots();
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        let (done, keep): (Vec<_>, Vec<_>) = slot
            .waiters
            .drain(..)
            .partition(|w| outcome.is_err() || w.generation <= generation);
        slot.waiters = keep;
        for w in done {
            let _ = w.tx.send(outcome.clone());
        }
    }

    /// Runs pushes for one (repo, slave) until nothing more is wanted.
    async fn run(self: Arc<Self>, key: Key, mut when: When) {
        let (repo, slave) = (&key.0, &key.1);
        loop {
            let outcome = match self.queue.generation(repo, slave) {
                Ok(generation) => match self.push_once(repo, slave, when).await {
                    Ok(Some((diverged, fingerprint))) => self
                        .queue
                        .succeeded(repo, slave, generation, diverged, &fingerprint)
                        .map(|cleared| (generation, cleared))
                        .map_err(|e| Failure::Refused(format!("cannot record success: {e}"))),
                    // Not this server's business any more.
                    Ok(None) => {
                        let _ = self.queue.forget(repo, slave);
                        self.resolve(
                            &key,
                            u64::MAX,
                            &Err(format!("{slave} is no longer a slave of {repo} here")),
                        );
                        self.lock_slots().remove(&key);
                        return;
                    }
                    Err(f) => Err(f),
                },
                Err(e) => Err(Failure::Refused(format!("cannot read the queue: {e}"))),
            };
            match outcome {
                Ok((generation, cleared)) => {
                    self.resolve(&key, generation, &Ok(()));
                    self.peer_back(slave).notify_waiters();
                    let mut slots = self.lock_slots();
                    let slot = slots.entry(key.clone()).or_default();
                    let again = slot
                        .again
                        .take()
                        .filter(|_| slot.again_generation > generation);
                    slot.again_generation = 0;
                    match again {
                        Some(next) => when = next,
                        // A push landed meanwhile whose notification may still be on its way.
                        None if !cleared && generation > 0 => when = When::Always,
                        None => {
                            slot.running = false;
                            return;
                        }
                    }
                }
                Err(failure) => {
                    let words = failure.words().to_string();
                    self.resolve(&key, u64::MAX, &Err(words.clone()));
                    let transport = matches!(failure, Failure::Transport(_));
                    if transport {
                        self.pool.invalidate(slave);
                        self.probe(slave);
                    }
                    let delay = self
                        .queue
                        .failed(repo, slave, &words, &self.backoff)
                        .unwrap_or(self.backoff.delay(1));
                    warn!(%repo, %slave, error = %words, retry_in = ?delay, "mirror push failed");
                    let kick = {
                        let mut slots = self.lock_slots();
                        let slot = slots.entry(key.clone()).or_default();
                        slot.again.take();
                        slot.again_generation = 0;
                        slot.kick.clone()
                    };
                    // A peer that comes back wakes the retries that failed to reach it; a
                    // refusal waits for its own backoff (or for someone asking).
                    let back = self.peer_back(slave);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = back.notified(), if transport => {}
                        _ = kick.notified() => self.pool.forget_failure(slave),
                    }
                    // Whatever was pushed meanwhile, a comparison decides what is left to do.
                    when = When::IfDifferent;
                }
            }
        }
    }

    /// Keeps trying to reach a peer that is down, on a short cap whatever the per-repo
    /// backoff says, and wakes everything waiting on it once it answers: a slave that comes
    /// back catches up within seconds even after hours away.
    fn probe(self: &Arc<Self>, peer: &AccountName) {
        {
            let mut probing = self.probing.lock().unwrap_or_else(|p| p.into_inner());
            if !probing.insert(peer.clone()) {
                return;
            }
        }
        let (me, peer) = (self.clone(), peer.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(250);
            loop {
                tokio::time::sleep(delay).await;
                me.pool.forget_failure(&peer);
                if me.pool.get(&peer).await.is_ok() {
                    info!(%peer, "peer is back");
                    me.peer_back(&peer).notify_waiters();
                    break;
                }
                delay = (delay * 2).min(PROBE_CAP);
            }
            me.probing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&peer);
        });
    }

    /// Submits every pending entry that nothing works on, and returns how many: a
    /// notification that never arrived (a hook killed at the wrong moment, a daemon
    /// restarting) is picked up within [`RESCAN`].
    pub fn rescan(self: &Arc<Self>) -> usize {
        let records = self.queue.all().unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the queue");
            Vec::new()
        });
        let mut submitted = 0;
        for record in records {
            let Ok(repo) = RepoName::parse(&record.repo) else {
                continue;
            };
            for (slave, entry) in &record.slaves {
                let Ok(slave) = AccountName::parse(slave) else {
                    continue;
                };
                let idle = !self
                    .lock_slots()
                    .get(&(repo.clone(), slave.clone()))
                    .is_some_and(|s| s.running);
                if entry.pending.is_some() && idle {
                    self.submit(&repo, &slave, When::IfDifferent, false);
                    submitted += 1;
                }
            }
        }
        submitted
    }

    /// One mirror push. `Ok(None)` when the repo is no longer mastered here with this slave;
    /// otherwise the divergence the slave reported and the fingerprint it now has.
    async fn push_once(
        &self,
        repo: &RepoName,
        slave: &AccountName,
        when: When,
    ) -> Result<Option<(Option<String>, String)>, Failure> {
        let Ok((path, slaves)) = self.mastered(repo) else {
            return Ok(None);
        };
        if !slaves.contains(slave) {
            return Ok(None);
        }
        let local = RefState::local(&path).map_err(Failure::Refused)?;
        let fingerprint = local.fingerprint();
        let confirmed = self
            .queue
            .confirmed(repo, slave)
            .map_err(|e| Failure::Refused(e.to_string()))?;
        if when == When::IfChanged && confirmed.as_deref() == Some(fingerprint.as_str()) {
            return Ok(Some((None, fingerprint)));
        }
        let conn = self
            .pool
            .get(slave)
            .await
            .map_err(|e| Failure::Transport(e.to_string()))?;
        debug!(%repo, %slave, ?when, "mirror push started");
        let done = push::mirror_push(conn, repo, &path, local, when, confirmed.is_some()).await?;
        if done.pushed != Pushed::Nothing {
            info!(%repo, %slave, pushed = ?done.pushed, "mirror push done");
        }
        if let Some(d) = &done.diverged {
            warn!(%repo, %slave, diverged = %d, "slave had diverged; its refs were kept there");
        }
        Ok(Some((done.diverged, fingerprint)))
    }

    /// Closes the peer connections.
    pub async fn close(self: Arc<Self>) {
        if let Ok(me) = Arc::try_unwrap(self) {
            me.pool.close().await;
        }
    }
}
