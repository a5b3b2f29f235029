//! The daemon's sender of store operations: works [`OpQueue`] down, sending each slave its
//! operations in order over the pool's connection (the `store-op` verb), retried with the
//! mirror backoff, forever, until the slave applies them.
//!
//! Once a slave has applied an operation whose result holds content (a restore, a rename),
//! the repo is submitted for a mirror push to it, which the operation held back until then.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
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
        })
    }

    /// Looks at the queue now (a command just queued an operation).
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    /// Runs forever: each round sends every slave its first due operation.
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
            let mut seen: BTreeSet<String> = BTreeSet::new();
            let mut due = Vec::new();
            let mut wake = t + IDLE.as_secs_f64();
            for record in &records {
                for (slave, pending) in &record.slaves {
                    // Each slave's first operation only: they go in order.
                    if !seen.insert(slave.clone()) {
                        continue;
                    }
                    if !record.ready {
                        wake = wake.min(t + 1.0);
                    } else if pending.next_attempt <= t {
                        if let Ok(s) = AccountName::parse(slave) {
                            due.push((record.clone(), s, pending.attempts));
                        }
                    } else {
                        wake = wake.min(pending.next_attempt);
                    }
                }
            }
            if due.is_empty() {
                let pause = Duration::from_secs_f64((wake - t).clamp(0.05, IDLE.as_secs_f64()));
                tokio::select! {
                    _ = self.kick.notified() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
            join_all(
                due.into_iter()
                    .map(|(record, slave, attempts)| self.send(record, slave, attempts)),
            )
            .await;
        }
    }

    /// Sends one operation to one slave and records the outcome.
    async fn send(&self, record: OpRecord, slave: AccountName, attempts: u32) {
        let mut args = vec![STORE_OP_VERB.to_string(), record.epoch.to_string()];
        args.extend(record.op.words());
        let result = match self.pool.get(&slave).await {
            Ok(conn) => {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                match conn.run(&args).await {
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
