//! The daemon's sender of store operations: works [`OpQueue`] down, sending each slave its
//! operations over the pool's connection (the `store-op` verb), those about the same names in
//! order, retried with the mirror backoff (capped), forever, until the slave applies them.
//!
//! Once a slave has applied an operation whose result holds content (a restore, a rename),
//! the repo is submitted for a mirror push to it, which the operation held back until then.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};

use super::mirror_push::When;
use super::op_queue::{OpQueue, OpRecord};
use super::queue::{Backoff, now};
use super::scheduler::Scheduler;
use crate::names::AccountName;
use crate::proto::{FATAL_PREFIX, STORE_OP_VERB};
use crate::repo::Store;
use crate::ssh::Pool;
use crate::text::one_line;

/// The longest the sender sleeps without looking at the queue again.
const IDLE: Duration = Duration::from_secs(30);

/// The longest wait between attempts on one slave. Operations are few and an attempt costs
/// one ssh login, so a slave that comes back gets its deletes and renames within this, not
/// after the mirror backoff's maximum.
const RETRY_CAP: Duration = Duration::from_secs(15);

/// Works the operation queue of one server.
pub(crate) struct OpSender {
    queue: OpQueue,
    store: Store,
    pool: Arc<Pool>,
    backoff: Backoff,
    scheduler: Arc<Scheduler>,
    kick: Notify,
    /// Slaves a task is sending operations to now.
    busy: Mutex<HashSet<AccountName>>,
}

impl OpSender {
    pub(crate) fn new(
        queue: OpQueue,
        store: Store,
        pool: Arc<Pool>,
        backoff: Backoff,
        scheduler: Arc<Scheduler>,
    ) -> Arc<Self> {
        Arc::new(OpSender {
            queue,
            store,
            pool,
            backoff,
            scheduler,
            kick: Notify::new(),
            busy: Mutex::new(HashSet::new()),
        })
    }

    /// Looks at the queue now (a command just queued an operation).
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    /// Runs forever: each round starts, for every slave not already being worked on, a task
    /// that sends it its due operations. An operation waits for earlier ones to the same
    /// slave about the same names (a rename after a restore of that name); others do not, so
    /// one refused operation never holds up the rest, and one slow slave never holds up the
    /// others.
    pub(crate) async fn run(self: Arc<Self>) {
        loop {
            let (queue, store) = (self.queue.clone(), self.store.clone());
            let records = match tokio::task::spawn_blocking(move || queue.to_send(&store)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot read the store operations queue");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            let t = now();
            let mut wake = t + IDLE.as_secs_f64();
            // Per slave: the keys of earlier operations still owed to it, and what is due.
            let mut owed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            let mut due: BTreeMap<String, Vec<(OpRecord, u32)>> = BTreeMap::new();
            for record in &records {
                let keys = record.op.keys();
                for (slave, pending) in &record.slaves {
                    let earlier = owed.entry(slave.clone()).or_default();
                    let waits = keys.iter().any(|k| earlier.contains(k));
                    earlier.extend(keys.iter().cloned());
                    if waits {
                        continue;
                    }
                    // A push of one of its names already under way goes first: it started
                    // before the operation was queued (later ones are held back), and the
                    // operation must land after it, or the push would undo it.
                    let pushing = || {
                        AccountName::parse(slave).is_ok_and(|s| {
                            record
                                .op
                                .names()
                                .iter()
                                .any(|n| self.scheduler.is_attempting(n, &s))
                        })
                    };
                    if !record.ready || pushing() {
                        wake = wake.min(t + 0.2);
                    } else if pending.next_attempt <= t {
                        due.entry(slave.clone())
                            .or_default()
                            .push((record.clone(), pending.attempts));
                    } else {
                        wake = wake.min(pending.next_attempt);
                    }
                }
            }
            for (slave, ops) in due {
                let Ok(slave) = AccountName::parse(&slave) else {
                    continue;
                };
                if !self.lock_busy().insert(slave.clone()) {
                    continue;
                }
                let sender = self.clone();
                tokio::spawn(async move {
                    for (record, attempts) in ops {
                        sender.send(record, slave.clone(), attempts).await;
                    }
                    sender.lock_busy().remove(&slave);
                    // What it did may have made more due (the next of this slave's own).
                    sender.kick();
                });
            }
            let pause = Duration::from_secs_f64((wake - now()).clamp(0.05, IDLE.as_secs_f64()));
            tokio::select! {
                _ = self.kick.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashSet<AccountName>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends one operation to one slave and records the outcome.
    async fn send(&self, record: OpRecord, slave: AccountName, attempts: u32) {
        let mut args = vec![STORE_OP_VERB.to_string(), record.epoch.to_string()];
        args.extend(record.op.words());
        let result = match self.pool.get(&slave).await {
            Ok(conn) => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                // A slave that hangs must not keep its operations (and this task) forever.
                let ran = tokio::time::timeout(self.pool.io_timeout(), conn.run(&args))
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::ssh::PeerError::Connect {
                            peer: slave.clone(),
                            message: "no answer in time".into(),
                        })
                    });
                match ran {
                    Ok(out) if out.status.success() => Ok(()),
                    Ok(out) => {
                        let words = String::from_utf8_lossy(&out.stderr);
                        let words = one_line(words.trim());
                        Err(words
                            .strip_prefix(FATAL_PREFIX)
                            .unwrap_or(&words)
                            .to_string())
                    }
                    Err(e) => {
                        self.pool.invalidate(&slave);
                        Err(e.to_string())
                    }
                }
            }
            Err(e) => Err(e.to_string()),
        };
        let what = record.op.describe();
        let outcome = match &result {
            Ok(()) => {
                info!(%slave, op = %what, "store operation applied on the slave");
                Ok(())
            }
            Err(words) => {
                let delay = self
                    .backoff
                    .delay(attempts.saturating_add(1))
                    .min(RETRY_CAP);
                warn!(%slave, op = %what, error = %words, retry_in_secs = delay.as_secs(), "store operation not applied on the slave");
                Err((words.clone(), now() + delay.as_secs_f64()))
            }
        };
        let (queue, seq, s) = (self.queue.clone(), record.seq, slave.clone());
        let recorded = tokio::task::spawn_blocking(move || queue.outcome(seq, &s, outcome)).await;
        if let Ok(Err(e)) = recorded {
            warn!(%slave, op = %what, error = %e, "cannot record a store operation's outcome");
            return;
        }
        if result.is_ok()
            && let Some(repo) = record.op.result()
        {
            self.scheduler.submit(repo, &slave, When::IfChanged, false);
        }
    }
}
