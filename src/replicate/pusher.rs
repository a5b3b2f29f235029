//! The seam between scheduling mirror pushes and doing them: [`Pusher`] pushes one repo to one
//! slave; [`SshPusher`] does it for real, over the daemon's peer connections.
//!
//! The scheduler's state machine (one in flight, one queued, generations, waiters, backoff)
//! is what must never lose a push; behind this trait it is tested with a fake pusher whose
//! answers the test decides, without ssh or git.

use std::sync::Arc;

use futures::future::BoxFuture;
use tracing::{debug, info, warn};

use super::mastered::Mastered;
use super::mirror_push::{self, Pushed, When};
use super::push_error::PushError;
use super::ref_state::RefState;
use crate::names::{AccountName, RepoName};
use crate::ssh::Pool;

/// What a slave confirmed after a mirror push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confirmed {
    /// The fingerprint of the state the slave now has (see [`RefState::fingerprint`]).
    pub(crate) fingerprint: String,
    /// The slave's report of refs changed behind the master's back, if any.
    pub(crate) diverged: Option<String>,
}

/// Pushes one repo to one slave.
pub(crate) trait Pusher: Send + Sync + 'static {
    /// One mirror push. `confirmed` is the fingerprint the slave last confirmed, if any.
    /// `Ok(None)` when the repo is no longer mastered here with this slave.
    fn push<'a>(
        &'a self,
        repo: &'a RepoName,
        slave: &'a AccountName,
        when: When,
        confirmed: Option<String>,
    ) -> BoxFuture<'a, Result<Option<Confirmed>, PushError>>;

    /// Whether `peer` answers now (probing a peer that is down).
    fn reachable<'a>(&'a self, peer: &'a AccountName) -> BoxFuture<'a, bool>;

    /// After a transport failure: drop the connection, so the next push reconnects.
    fn reset(&self, peer: &AccountName);

    /// Someone asked for a push now: forget a remembered failure to connect.
    fn forget_failure(&self, peer: &AccountName);

    /// Closes whatever connections are open.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// Mirror pushes over one multiplexed ssh connection per peer.
pub(crate) struct SshPusher {
    mastered: Mastered,
    pool: Pool,
}

impl SshPusher {
    /// Pushes the repos `mastered` lists, over connections from `pool`.
    pub(crate) fn new(mastered: Mastered, pool: Pool) -> Arc<Self> {
        Arc::new(SshPusher { mastered, pool })
    }

    async fn push_one(
        &self,
        repo: &RepoName,
        slave: &AccountName,
        when: When,
        confirmed: Option<String>,
    ) -> Result<Option<Confirmed>, PushError> {
        let Ok((path, slaves)) = self.mastered.slaves_of(repo) else {
            return Ok(None);
        };
        if !slaves.contains(slave) {
            return Ok(None);
        }
        let local = RefState::local(&path)?;
        let fingerprint = local.fingerprint();
        if when == When::IfChanged && confirmed.as_deref() == Some(fingerprint.as_str()) {
            return Ok(Some(Confirmed {
                fingerprint,
                diverged: None,
            }));
        }
        let conn = self.pool.get(slave).await?;
        debug!(%repo, %slave, ?when, "mirror push started");
        let done =
            mirror_push::mirror_push(conn, repo, &path, local, when, confirmed.is_some()).await?;
        if done.pushed != Pushed::Nothing {
            info!(%repo, %slave, pushed = ?done.pushed, "mirror push done");
        }
        if let Some(d) = &done.diverged {
            warn!(%repo, %slave, diverged = %d, "slave had diverged; its refs were kept there");
        }
        Ok(Some(Confirmed {
            fingerprint,
            diverged: done.diverged,
        }))
    }
}

impl Pusher for SshPusher {
    fn push<'a>(
        &'a self,
        repo: &'a RepoName,
        slave: &'a AccountName,
        when: When,
        confirmed: Option<String>,
    ) -> BoxFuture<'a, Result<Option<Confirmed>, PushError>> {
        Box::pin(self.push_one(repo, slave, when, confirmed))
    }

    fn reachable<'a>(&'a self, peer: &'a AccountName) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            self.pool.forget_failure(peer);
            self.pool.get(peer).await.is_ok()
        })
    }

    fn reset(&self, peer: &AccountName) {
        self.pool.invalidate(peer);
    }

    fn forget_failure(&self, peer: &AccountName) {
        self.pool.forget_failure(peer);
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.pool.close())
    }
}
