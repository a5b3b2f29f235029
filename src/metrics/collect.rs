//! The gauges read from durable state at scrape time: the mirror queue (per slave: repos
//! pending and failing, the oldest pending push; the queue's depth), the pull mirrors'
//! fetch records, the push mirrors' queue, and the verify record. What `gitmirror status`
//! reads, so a scrape after a restart, or `gitmirror metrics` with no daemon at all, tells
//! the same truth.
//!
//! Nothing here is labelled by repo for slaves: ten thousand repos times their slaves would
//! be as many series. A pull or push mirror is one remote of one repo, so those are.

use std::collections::BTreeMap;

use tracing::warn;

use crate::external::downstream_queue::DownstreamQueue;
use crate::external::upstream_record::UpstreamRecords;
use crate::external::upstream_scheduler::pull_mirrors;
use crate::home::Home;
use crate::names::AccountName;
use crate::replicate::queue::{Queue, now};
use crate::replicate::verify::record;

/// One slave, over every repo it is a slave of here.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SlaveGauges {
    /// Repos whose latest state it has not confirmed.
    pub(crate) pending: u64,
    /// Of those, the ones whose last attempt failed.
    pub(crate) failing: u64,
    /// Since when the oldest of them has been pending (seconds since the epoch).
    pub(crate) oldest: Option<f64>,
}

/// One external remote (an upstream a repo pulls from, or a downstream it pushes to).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RemoteGauges {
    pub(crate) repo: String,
    pub(crate) url: String,
    /// When a fetch from it (or push to it) last succeeded.
    pub(crate) last_success: Option<f64>,
    /// Failed attempts since then.
    pub(crate) failures: u64,
}

/// The last verify of one slave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VerifyGauges {
    pub(crate) at: f64,
    /// Repos found in each state (`ok`, `drifted`, `missing`, ...).
    pub(crate) counts: BTreeMap<String, usize>,
}

/// Everything read at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// When it was read (seconds since the epoch): lags are measured from it.
    pub(crate) now: f64,
    /// By slave name: every slave the queue has a record of, in sync or not.
    pub(crate) slaves: BTreeMap<String, SlaveGauges>,
    /// Mirror pushes owed, over every repo and slave.
    pub(crate) queue_depth: u64,
    pub(crate) upstreams: Vec<RemoteGauges>,
    pub(crate) downstreams: Vec<RemoteGauges>,
    /// By slave name.
    pub(crate) verified: BTreeMap<String, VerifyGauges>,
}

impl SlaveGauges {
    /// How long the oldest pending push has waited at `now`, 0 when none is pending.
    pub(crate) fn lag(&self, now: f64) -> f64 {
        self.oldest.map_or(0.0, |since| (now - since).max(0.0))
    }
}

/// Reads the snapshot of the server at `home`, named `this` among its peers. Blocking (one
/// small file per repo with a record): call it on a blocking thread. What cannot be read is
/// logged and left out, never fatal: one bad record must not blank every series.
pub(crate) fn snapshot(home: &Home, this: &AccountName) -> Snapshot {
    let mut snap = Snapshot {
        now: now(),
        ..Snapshot::default()
    };
    let queue = Queue::new(home.queue_dir());
    let repos = queue.repos().unwrap_or_else(|e| {
        warn!(error = %e, "metrics: cannot list the queue");
        Vec::new()
    });
    for repo in repos {
        let record = match queue.load(&repo) {
            Ok(r) => r,
            Err(e) => {
                warn!(%repo, error = %e, "metrics: cannot read the queue");
                continue;
            }
        };
        for (slave, entry) in record.slaves {
            let gauges = snap.slaves.entry(slave).or_default();
            if let Some(p) = entry.pending {
                gauges.pending += 1;
                if p.attempts > 0 {
                    gauges.failing += 1;
                }
                gauges.oldest = Some(gauges.oldest.map_or(p.since, |o| o.min(p.since)));
                snap.queue_depth += 1;
            }
        }
    }
    let records = UpstreamRecords::of(home);
    snap.upstreams = pull_mirrors(home, this)
        .into_iter()
        .map(|(repo, upstream)| {
            let r = records.load(&repo);
            RemoteGauges {
                repo: repo.to_string(),
                url: upstream.url.url,
                last_success: r.last_success,
                failures: u64::from(r.failures),
            }
        })
        .collect();
    let downstream = DownstreamQueue::in_external_dir(home.external_dir())
        .load_all()
        .unwrap_or_else(|e| {
            warn!(error = %e, "metrics: cannot read the downstream queue");
            Vec::new()
        });
    snap.downstreams = downstream
        .into_iter()
        .flat_map(|r| {
            let repo = r.repo;
            r.remotes.into_iter().map(move |(url, e)| RemoteGauges {
                repo: repo.clone(),
                url,
                last_success: e.last_success,
                failures: e.pending.map_or(0, |p| u64::from(p.attempts)),
            })
        })
        .collect();
    match record::load(home) {
        Ok(v) => {
            snap.verified = v
                .slaves
                .into_iter()
                .map(|(slave, r)| {
                    (
                        slave,
                        VerifyGauges {
                            at: r.at,
                            counts: r.counts,
                        },
                    )
                })
                .collect();
        }
        Err(e) => warn!(error = %e, "metrics: cannot read the verify record"),
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RepoName;

    #[test]
    fn pending_failing_and_the_oldest_push_per_slave() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(dir.path()), false).unwrap();
        let queue = Queue::new(home.queue_dir());
        let (s2, s3) = (
            AccountName::parse("server2").unwrap(),
            AccountName::parse("server3").unwrap(),
        );
        let (a, b) = (RepoName::parse("a").unwrap(), RepoName::parse("b").unwrap());
        queue.enqueue_record(&a, &[s2.clone(), s3.clone()]).unwrap();
        queue.enqueue_record(&b, std::slice::from_ref(&s2)).unwrap();
        // server3 has a: only server2 is behind, on both, and failing on one.
        let gen_a3 = queue.load(&a).unwrap().slaves["server3"]
            .pending
            .as_ref()
            .unwrap()
            .generation;
        queue.succeeded(&a, &s3, gen_a3, None, "f").unwrap();
        let backoff =
            crate::replicate::queue::Backoff::from_config(&crate::config::MirrorConfig::default());
        queue.failed(&b, &s2, "cannot connect", &backoff).unwrap();

        let this = AccountName::parse("server1").unwrap();
        let snap = snapshot(&home, &this);
        assert_eq!(snap.queue_depth, 2);
        let two = &snap.slaves["server2"];
        assert_eq!((two.pending, two.failing), (2, 1));
        let since = queue.load(&a).unwrap().slaves["server2"]
            .pending
            .as_ref()
            .unwrap()
            .since;
        assert!(two.oldest.unwrap() <= since);
        assert!(two.lag(since + 5.0) >= 5.0);
        // In sync, and still listed: its lag reads 0, not nothing.
        assert_eq!(snap.slaves["server3"], SlaveGauges::default());
        assert_eq!(snap.slaves["server3"].lag(snap.now), 0.0);
    }
}
