//! The scheduler: works the durable queue down, inside the daemon.
//!
//! For each (repo, slave) at most one mirror push runs at a time and at most one more is
//! queued behind it: any number of notifications while a push runs collapse into that one.
//! A failed push is retried with backoff, forever; a success on a peer wakes every push that
//! was waiting to retry on it, so a slave that comes back catches up at once. Callers that
//! want to know (sync pushes, `request-push`) wait for a push that started after their ref
//! updates were queued.
//!
//! The pushing itself is behind [`Pusher`], so this state machine is unit-tested with a fake
//! one (`scheduler_tests.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};
use tracing::{debug, error, info, warn};

use super::mirror_push::When;
use super::observer::{Observed, PushObserver};
use super::push_error::{Blame, PushError};
use super::pusher::Pusher;
use super::queue::{Backoff, Queue};
use super::report::Delivered;
use crate::names::{AccountName, RepoName};
use crate::proto::ADMIN_REPO;

/// The outcome one waiter learns: `Ok` once the slave has the state (and whether it was asked
/// for it), or why not. Shared, since one push answers every waiter it covers.
pub(crate) type Outcome = Result<Delivered, Arc<PushError>>;

struct Waiter {
    generation: u64,
    /// The caller wants the slave itself asked (request-push), not only its last
    /// confirmation compared.
    contact: bool,
    tx: oneshot::Sender<Outcome>,
}

/// What a successful attempt covered.
struct Attempt {
    /// The queue generation it started from.
    generation: u64,
    /// Whether the queue entry was cleared (no push came in meanwhile).
    cleared: bool,
    delivered: Delivered,
    /// The bytes of pack sent.
    bytes: u64,
}

/// The in-memory state of one (repo, slave).
#[derive(Default)]
struct Slot {
    running: bool,
    /// An attempt is under way (not a backoff's wait between two).
    attempting: bool,
    /// Another push is wanted after the running one (the one queued behind it)...
    again: Option<When>,
    /// ...for the queue generation it was asked at; a run that started from this generation
    /// or a later one already covers it.
    again_generation: u64,
    /// ...and whether someone asked for the slave itself to be asked.
    again_contact: bool,
    waiters: Vec<Waiter>,
    /// Cuts a retry's backoff short: someone asked for this push now.
    kick: Arc<Notify>,
}

type Key = (RepoName, AccountName);

/// The daemon's replication engine.
pub(crate) struct Scheduler {
    queue: Queue,
    backoff: Backoff,
    pusher: Arc<dyn Pusher>,
    slots: Mutex<HashMap<Key, Slot>>,
    peer_back: Mutex<HashMap<AccountName, Arc<Notify>>>,
    probing: Mutex<HashSet<AccountName>>,
    /// Attempts under way at once (see [`ATTEMPTS_AT_ONCE`]).
    attempts: tokio::sync::Semaphore,
    /// Who counts the pushes (the daemon's metrics), if anyone.
    observer: OnceLock<Arc<dyn PushObserver>>,
}

/// Attempts under way at once, daemon-wide, besides users' fresh pushes. A bulk request
/// starts a run for every repo and slave (twenty thousand for ten thousand repos); only this
/// many hold an attempt's state (listings, the push's future), the rest wait in a few hundred
/// bytes each. Peer sessions (six per peer) are the narrower limit; this one leaves room to
/// prepare the next pushes.
pub(super) const ATTEMPTS_AT_ONCE: usize = 32;

/// What [`Scheduler::check`] did with one (repo, slave).
pub(crate) enum Checked {
    /// Nothing changed since the slave last confirmed; it was last pushed at `since`.
    Unchanged { since: Option<f64> },
    /// A check was submitted (with its waiter, if asked for one).
    Submitted(Option<oneshot::Receiver<Outcome>>),
    /// A push runs already and will cover it (a sweep does not wait).
    Running,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Pending entries resumed from the queue.
    pub(crate) resumed: usize,
    /// Slaves found unchanged without a task.
    pub(crate) unchanged: usize,
    /// Checks submitted.
    pub(crate) submitted: usize,
}

/// The longest pause between attempts to reach a peer that is down.
const PROBE_CAP: Duration = Duration::from_secs(5);

impl Scheduler {
    /// A scheduler working `queue`, pushing with `pusher`.
    pub(crate) fn new(queue: Queue, backoff: Backoff, pusher: Arc<dyn Pusher>) -> Arc<Self> {
        Arc::new(Scheduler {
            queue,
            backoff,
            pusher,
            slots: Mutex::new(HashMap::new()),
            peer_back: Mutex::new(HashMap::new()),
            probing: Mutex::new(HashSet::new()),
            attempts: tokio::sync::Semaphore::new(ATTEMPTS_AT_ONCE),
            observer: OnceLock::new(),
        })
    }

    /// Has `observer` told of every push from now on (set once: the daemon's metrics).
    pub(crate) fn observe(&self, observer: Arc<dyn PushObserver>) {
        if self.observer.set(observer).is_err() {
            warn!("the scheduler already has an observer; the second is ignored");
        }
    }

    /// Tells the observer, if any, how an attempt ended.
    fn tell(
        &self,
        slave: &AccountName,
        took: Duration,
        attempted: &Result<Option<Attempt>, PushError>,
    ) {
        let Some(observer) = self.observer.get() else {
            return;
        };
        let observed = match attempted {
            Ok(Some(Attempt {
                delivered: Delivered::Pushed,
                bytes,
                ..
            })) => Observed::Pushed { bytes: *bytes },
            // Nothing changed, or not this server's business: nobody was pushed to.
            Ok(_) => return,
            Err(e) => Observed::Failed { reason: e.reason() },
        };
        observer.finished(slave, took, observed);
    }

    /// Asks for a mirror push of `repo` to `slave`. With `wait`, returns a receiver that
    /// yields the outcome of the first push that starts after this call.
    pub(crate) fn submit(
        self: &Arc<Self>,
        repo: &RepoName,
        slave: &AccountName,
        when: When,
        wait: bool,
    ) -> Option<oneshot::Receiver<Outcome>> {
        // Unreadable, the queue counts as nothing pending; the run itself reads it again and
        // reports the failure to every waiter.
        let generation = self.queue.generation(repo, slave).unwrap_or(0);
        let key = (repo.clone(), slave.clone());
        let mut slots = self.lock_slots();
        let slot = slots.entry(key.clone()).or_default();
        debug!(%repo, %slave, ?when, queued = slot.running, "mirror push requested");
        let contact = when != When::IfChanged;
        let rx = wait.then(|| {
            let (tx, rx) = oneshot::channel();
            slot.waiters.push(Waiter {
                generation,
                contact,
                tx,
            });
            rx
        });
        if slot.running {
            slot.again = Some(match (slot.again, when) {
                (Some(When::Always), _) | (_, When::Always) => When::Always,
                _ => When::IfDifferent,
            });
            slot.again_generation = slot.again_generation.max(generation);
            slot.again_contact |= contact;
            slot.kick.notify_one();
        } else {
            slot.running = true;
            let me = self.clone();
            tokio::spawn(async move { me.run(key, when).await });
        }
        rx
    }

    /// Checks every slave of `repos` against what it last confirmed (see
    /// [`Scheduler::check`]), which resumes the work the queue holds for them and catches a
    /// push whose hook never ran (a crash between git's ref update and the hook); then
    /// resumes what the queue holds for any other repo. The daemon runs this at start and
    /// every `mirror.rescan_secs`. Blocking: run it on a blocking thread.
    pub(crate) fn sweep(self: &Arc<Self>, repos: &[RepoName]) -> Swept {
        let mut swept = Swept::default();
        let mut covered: HashSet<RepoName> = HashSet::new();
        for (repo, _, checked) in self.check(repos, false) {
            covered.insert(repo);
            match checked {
                Checked::Unchanged { .. } => swept.unchanged += 1,
                Checked::Submitted(_) => swept.submitted += 1,
                Checked::Running => {}
            }
        }
        // The check covered the work owed for the repos mastered here; the queue is read on
        // its own for the others (gone from disk, or no longer mastered here), whose runs
        // report the failure or forget the work.
        swept.resumed = self.resume(|repo| !covered.contains(repo));
        swept
    }

    /// Checks every slave of `repos` against what it last confirmed. A slave with nothing
    /// pending whose confirmed fingerprint matches this server's files is answered here,
    /// without a task, the network or a write: with ten thousand repos, that is the sweep
    /// and `request-push --all` when nothing changed. Any other is submitted as
    /// [`When::IfChanged`] (with a waiter when `wait`); without `wait`, one already running
    /// is left to its run. Repos not mastered here are skipped. Blocking (disk reads), and
    /// spread over a few threads.
    pub(crate) fn check(
        self: &Arc<Self>,
        repos: &[RepoName],
        wait: bool,
    ) -> Vec<(RepoName, AccountName, Checked)> {
        let runtime = tokio::runtime::Handle::current();
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4);
        let chunk = repos.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = repos
                .chunks(chunk)
                .map(|part| {
                    let runtime = runtime.clone();
                    scope.spawn(move || {
                        // Submitting spawns tasks: this thread needs the runtime's context.
                        let _entered = runtime.enter();
                        part.iter()
                            .flat_map(|repo| self.check_one(repo, wait))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join().unwrap_or_else(|_| {
                        error!("a bulk check thread failed; its repos wait for the next sweep");
                        Vec::new()
                    })
                })
                .collect()
        })
    }

    fn check_one(
        self: &Arc<Self>,
        repo: &RepoName,
        wait: bool,
    ) -> Vec<(RepoName, AccountName, Checked)> {
        let Some((slaves, fingerprint)) = self.pusher.quick_state(repo) else {
            return Vec::new();
        };
        // Unreadable, the queue answers nothing here; the runs read it again and report.
        let record = self.queue.load(repo).ok();
        slaves
            .into_iter()
            .map(|slave| {
                let entry = record.as_ref().and_then(|r| r.slaves.get(slave.as_str()));
                let running = self.is_running(repo, &slave);
                let unchanged = !running
                    && entry.is_some_and(|e| {
                        e.pending.is_none() && e.confirmed.is_some() && e.confirmed == fingerprint
                    });
                // Work owed (a push not yet confirmed, a repair verify asked for) is checked
                // against the slave itself: its last confirmation may be what is wrong.
                let when = if entry.is_some_and(|e| e.pending.is_some()) {
                    When::IfDifferent
                } else {
                    When::IfChanged
                };
                let checked = if unchanged {
                    Checked::Unchanged {
                        since: entry.and_then(|e| e.last_success),
                    }
                } else if running && !wait {
                    Checked::Running
                } else {
                    Checked::Submitted(self.submit(repo, &slave, when, wait))
                };
                (repo.clone(), slave, checked)
            })
            .collect()
    }

    fn is_running(&self, repo: &RepoName, slave: &AccountName) -> bool {
        self.lock_slots()
            .get(&(repo.clone(), slave.clone()))
            .is_some_and(|s| s.running)
    }

    /// Whether a mirror push of `repo` to `slave` is being attempted now (not waiting out a
    /// backoff between attempts).
    pub(crate) fn is_attempting(&self, repo: &RepoName, slave: &AccountName) -> bool {
        self.lock_slots()
            .get(&(repo.clone(), slave.clone()))
            .is_some_and(|s| s.attempting)
    }

    fn set_attempting(&self, key: &Key, on: bool) {
        if let Some(slot) = self.lock_slots().get_mut(key) {
            slot.attempting = on;
        }
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn peer_back(&self, peer: &AccountName) -> Arc<Notify> {
        let mut map = self.peer_back.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(peer.clone()).or_default().clone()
    }

    /// Resolves the waiters a push that started at `generation` satisfies (all of them on
    /// failure: a sync push learns at once that this slave is failing). One that wants the
    /// slave asked is satisfied only by a push that asked it.
    fn resolve(&self, key: &Key, generation: u64, outcome: &Outcome) {
        let mut slots = self.lock_slots();
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        let asked = matches!(outcome, Ok(Delivered::Pushed));
        let (done, keep): (Vec<_>, Vec<_>) = slot.waiters.drain(..).partition(|w| {
            outcome.is_err() || (w.generation <= generation && (asked || !w.contact))
        });
        slot.waiters = keep;
        for w in done {
            let _ = w.tx.send(outcome.clone());
        }
    }

    /// One attempt: the queue generation it covers, the push, and the slave's confirmation
    /// recorded. `Ok(None)` when the slave is no longer this repo's slave here.
    async fn attempt(
        &self,
        repo: &RepoName,
        slave: &AccountName,
        when: When,
    ) -> Result<Option<Attempt>, PushError> {
        let record = self.queue.load(repo).map_err(PushError::QueueRead)?;
        let entry = record
            .slaves
            .get(slave.as_str())
            .cloned()
            .unwrap_or_default();
        let generation = entry.pending.as_ref().map_or(0, |p| p.generation);
        let Some(done) = self.pusher.push(repo, slave, when, entry.confirmed).await? else {
            return Ok(None);
        };
        // Nothing was pending and nothing changed: there is nothing new to record, and a
        // sweep over thousands of repos writes nothing.
        if !done.contacted && generation == 0 {
            return Ok(Some(Attempt {
                generation,
                cleared: true,
                delivered: Delivered::Unchanged {
                    since: entry.last_success,
                },
                bytes: 0,
            }));
        }
        let cleared = self
            .queue
            .succeeded(repo, slave, generation, done.diverged, &done.fingerprint)
            .map_err(PushError::QueueRecord)?;
        let delivered = if done.contacted {
            Delivered::Pushed
        } else {
            Delivered::Unchanged {
                since: entry.last_success,
            }
        };
        Ok(Some(Attempt {
            generation,
            cleared,
            delivered,
            bytes: done.bytes,
        }))
    }

    /// Runs pushes for one (repo, slave) until nothing more is wanted.
    async fn run(self: Arc<Self>, key: Key, mut when: When) {
        let (repo, slave) = (&key.0, &key.1);
        loop {
            let attempted = {
                // Held for the attempt only, never through a backoff. A push a user just
                // made (`Always`, from the hook) does not queue behind a bulk request's
                // thousands: its replication lag must not depend on one.
                let _turn = if when == When::Always {
                    None
                } else {
                    self.attempts.acquire().await.ok()
                };
                self.set_attempting(&key, true);
                let started = Instant::now();
                // Allocated once the turn comes, not by every waiting run.
                let attempted = Box::pin(self.attempt(repo, slave, when)).await;
                self.set_attempting(&key, false);
                self.tell(slave, started.elapsed(), &attempted);
                attempted
            };
            match attempted {
                // Not this server's business any more.
                Ok(None) => {
                    let _ = self.queue.forget(repo, slave);
                    let gone = PushError::NotSlave {
                        repo: repo.clone(),
                        slave: slave.clone(),
                    };
                    self.resolve(&key, u64::MAX, &Err(Arc::new(gone)));
                    self.lock_slots().remove(&key);
                    return;
                }
                Ok(Some(Attempt {
                    generation,
                    cleared,
                    delivered,
                    ..
                })) => {
                    self.resolve(&key, generation, &Ok(delivered));
                    self.peer_back(slave).notify_waiters();
                    let mut slots = self.lock_slots();
                    if delivered == Delivered::Pushed && repo.as_str() == ADMIN_REPO {
                        // The slave has just applied a new configuration, and may now take
                        // repos it refused a moment ago (new to it, or newly its): their
                        // retries go now, in this cycle, not after their backoff.
                        for (other, s) in slots.iter() {
                            if &other.1 == slave && other != &key && s.running {
                                s.kick.notify_one();
                            }
                        }
                    }
                    let slot = slots.entry(key.clone()).or_default();
                    // Wanted again if asked for a later generation, or for the slave itself
                    // while this run only compared with its last confirmation.
                    let asked = delivered == Delivered::Pushed;
                    let again = slot.again.take().filter(|_| {
                        slot.again_generation > generation || (slot.again_contact && !asked)
                    });
                    slot.again_generation = 0;
                    slot.again_contact = false;
                    // A request made while this push ran has been answered (or queued as
                    // `again`); its kick must not cut the backoff of a later failure short.
                    slot.kick = Arc::default();
                    match again {
                        Some(next) => when = next,
                        // A push landed meanwhile whose notification may still be on its way.
                        None if !cleared && generation > 0 => when = When::Always,
                        // Someone started waiting between the answers above and here: they
                        // get a run of their own rather than no answer at all.
                        None if !slot.waiters.is_empty() => when = When::IfDifferent,
                        None => {
                            slot.running = false;
                            return;
                        }
                    }
                }
                Err(failure) => {
                    // Boxed: its state exists only while a run waits to retry.
                    Box::pin(self.retry_after(&key, failure)).await;
                    // Whatever was pushed meanwhile, a comparison decides what is left to do.
                    when = When::IfDifferent;
                }
            }
        }
    }

    /// After a failed attempt: tells the waiters, records the failure, and waits until the
    /// next attempt is due. What ends the wait depends on whose fault it was: a peer that
    /// comes back wakes the retries that failed to reach it; a refusal, or a failure here,
    /// waits for its own backoff or for someone asking.
    async fn retry_after(self: &Arc<Self>, key: &Key, failure: PushError) {
        let (repo, slave) = (&key.0, &key.1);
        let blame = failure.blame();
        let words = failure.words();
        self.resolve(key, u64::MAX, &Err(Arc::new(failure)));
        if blame == Blame::Transport {
            self.pusher.reset(slave);
            self.probe(slave);
        }
        let delay = self
            .queue
            .failed(repo, slave, &words, &self.backoff)
            .unwrap_or_else(|e| {
                error!(%repo, %slave, error = %e, "cannot record a failed mirror push");
                self.backoff.delay(1)
            });
        match blame {
            Blame::Local => {
                error!(%repo, %slave, error = %words, retry_in = ?delay, "mirror push failed here")
            }
            _ => {
                warn!(%repo, %slave, ?blame, error = %words, retry_in = ?delay, "mirror push failed")
            }
        }
        let kick = {
            let mut slots = self.lock_slots();
            let slot = slots.entry(key.clone()).or_default();
            slot.again.take();
            slot.again_generation = 0;
            slot.again_contact = false;
            slot.kick.clone()
        };
        let back = self.peer_back(slave);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = back.notified(), if blame == Blame::Transport => {}
            _ = kick.notified() => self.pusher.forget_failure(slave),
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
                if me.pusher.reachable(&peer).await {
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

    /// Submits every pending entry of the repos `wanted` picks that nothing works on, and
    /// returns how many: a notification that never arrived (a hook killed at the wrong
    /// moment, a daemon restarting) is picked up by the next sweep.
    fn resume(self: &Arc<Self>, wanted: impl Fn(&RepoName) -> bool) -> usize {
        let repos = self.queue.repos().unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the queue");
            Vec::new()
        });
        let mut submitted = 0;
        for repo in repos.into_iter().filter(|r| wanted(r)) {
            let record = match self.queue.load(&repo) {
                Ok(record) => record,
                Err(e) => {
                    warn!(%repo, error = %e, "cannot read the queue");
                    continue;
                }
            };
            for (slave, entry) in &record.slaves {
                let Ok(slave) = AccountName::parse(slave) else {
                    continue;
                };
                if entry.pending.is_some() && !self.is_running(&repo, &slave) {
                    self.submit(&repo, &slave, When::IfDifferent, false);
                    submitted += 1;
                }
            }
        }
        submitted
    }

    /// Closes the pusher's connections.
    pub(crate) async fn close(&self) {
        self.pusher.close().await;
    }
}
#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use super::*;
    use crate::config::MirrorConfig;
    use crate::replicate::pusher::Confirmed;

    /// A pusher that is never asked: the test only builds futures.
    struct Idle;

    impl Pusher for Idle {
        fn push<'a>(
            &'a self,
            _: &'a RepoName,
            _: &'a AccountName,
            _: When,
            _: Option<String>,
        ) -> BoxFuture<'a, Result<Option<Confirmed>, PushError>> {
            Box::pin(async { Ok(None) })
        }
        fn quick_state(&self, _: &RepoName) -> Option<(Vec<AccountName>, Option<String>)> {
            None
        }
        fn reachable<'a>(&'a self, _: &'a AccountName) -> BoxFuture<'a, bool> {
            Box::pin(async { true })
        }
        fn reset(&self, _: &AccountName) {}
        fn forget_failure(&self, _: &AccountName) {}
        fn close(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    #[test]
    fn a_run_waiting_for_its_turn_holds_little_memory() {
        // A bulk request spawns a run for every repo and slave: twenty thousand for ten
        // thousand repos. What a run holds before its turn is multiplied by that.
        let dir = tempfile::tempdir().unwrap();
        let backoff = Backoff::from_config(&MirrorConfig::default());
        let scheduler = Scheduler::new(Queue::new(dir.path()), backoff, Arc::new(Idle));
        let key = (
            RepoName::parse("a").unwrap(),
            AccountName::parse("b").unwrap(),
        );
        let run = scheduler.run(key, When::IfChanged);
        let size = std::mem::size_of_val(&run);
        assert!(size < 512, "a waiting run is {size} bytes");
    }
}
