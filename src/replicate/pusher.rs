//! The seam between scheduling mirror pushes and doing them: [`Pusher`] pushes one repo to one
//! slave; [`SshPusher`] does it for real, over the daemon's peer connections.
//!
//! The scheduler's state machine (one in flight, one queued, generations, waiters, backoff)
//! is what must never lose a push; behind this trait it is tested with a fake pusher whose
//! answers the test decides, without ssh or git.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use tracing::{debug, info, warn};

use super::mastered::{Mastered, NotMastered};
use super::mirror_push::{self, Pushed, When};
use super::op_queue::OpQueue;
use super::push_error::PushError;
use super::queue::Queue;
use super::ref_state::RefState;
use crate::names::{AccountName, RepoName};
use crate::repo::mastership;
use crate::ssh::Pool;

/// What a slave confirmed after a mirror push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Confirmed {
    /// False when nothing had changed since the slave last confirmed, so it was not asked.
    pub(crate) contacted: bool,
    /// The fingerprint of the state the slave now has (see [`RefState::fingerprint`]).
    pub(crate) fingerprint: String,
    /// The slave's report of refs changed behind the master's back, if any.
    pub(crate) diverged: Option<String>,
    /// The bytes of pack sent to it (0 when it needed no objects, or was not asked).
    pub(crate) bytes: u64,
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

    /// This server's copy of `repo` as its files say, read without opening it: its slaves,
    /// and the fingerprint of its refs when the files can vouch for them (see
    /// [`RefState::on_disk`]). `None` when it is not mastered here or its settings cannot
    /// be read. Blocking disk work; for checking thousands of repos at once.
    fn quick_state(&self, repo: &RepoName) -> Option<(Vec<AccountName>, Option<String>)>;

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
    pool: Arc<Pool>,
    /// The mirror queue, to tell a repo deleted or renamed here from one away for a moment.
    queue: Queue,
    /// The store operations owed to slaves, which hold back pushes of the names they move.
    ops: OpQueue,
    /// Listings of local refs at once: each takes a blocking thread, and a bulk request of
    /// thousands of repos must not start a thread for every one.
    listings: Arc<tokio::sync::Semaphore>,
}

/// See [`SshPusher::listings`].
const LISTINGS_AT_ONCE: usize = 4;

impl SshPusher {
    /// Pushes the repos `mastered` lists, over connections from `pool`.
    pub(crate) fn new(mastered: Mastered, pool: Pool, queue: Queue, ops: OpQueue) -> Arc<Self> {
        Arc::new(SshPusher {
            mastered,
            pool: Arc::new(pool),
            queue,
            ops,
            listings: Arc::new(tokio::sync::Semaphore::new(LISTINGS_AT_ONCE)),
        })
    }

    /// The peer connections, shared with verify so that it asks each slave over the
    /// connection the pushes use.
    pub(crate) fn pool(&self) -> Arc<Pool> {
        self.pool.clone()
    }

    async fn push_one(
        &self,
        repo: &RepoName,
        slave: &AccountName,
        when: When,
        confirmed: Option<String>,
    ) -> Result<Option<Confirmed>, PushError> {
        // Only settings that say so end the work; a repo that cannot be read (a typo in its
        // config, its directory away for a moment) keeps it pending, as a failure.
        let (path, slaves) = match self.mastered.slaves_of(repo) {
            Ok(found) => found,
            Err(NotMastered::Elsewhere { .. } | NotMastered::NotMirrored(_)) => return Ok(None),
            // Deleted or renamed here: `delete` and `rename` take its queue record along (a
            // push that failed meanwhile may have written it back).
            Err(NotMastered::NoRepo(_))
                if !self.queue.has_record(repo) || self.mastered.moved_away(repo) =>
            {
                return Ok(None);
            }
            Err(e @ (NotMastered::NoRepo(_) | NotMastered::Settings(_))) => {
                return Err(PushError::Settings(e));
            }
        };
        if !slaves.contains(slave) {
            return Ok(None);
        }
        // A delete or rename of this name the slave has not applied yet goes first: a push
        // now would recreate there what the operation is about to move. The sender submits
        // the push again once the slave has applied it.
        if self.ops.blocks(repo, slave) {
            return Err(PushError::Held(format!(
                "waiting for {slave} to apply a delete, rename or restore of {repo} first"
            )));
        }
        let local = self.list_refs(&path).await?;
        // The epoch goes with the push: a slave that knows a later master refuses it. It is
        // part of what a slave confirms, so that a promotion reaches slaves whose refs match.
        // Master and epoch from one read, taken again now: a handover recorded since the
        // settings above were read must not go out as this server's claim at the new epoch.
        let epoch = match mastership::mastership(&path) {
            Ok(Some(m)) if m.master == *self.mastered.this() && m.slaves.contains(slave) => m.epoch,
            Ok(_) => return Ok(None),
            Err(e) => return Err(PushError::Settings(e.into())),
        };
        let fingerprint = with_epoch(local.fingerprint(), epoch);
        if when == When::IfChanged && confirmed.as_deref() == Some(fingerprint.as_str()) {
            return Ok(Some(Confirmed {
                contacted: false,
                fingerprint,
                diverged: None,
                bytes: 0,
            }));
        }
        // A slave that last confirmed an empty repo (a new slave, a repo compiled before its
        // first push) is pushed to straight away, like one that never confirmed anything.
        let known = confirmed.is_some_and(|c| c != local.emptied().fingerprint());
        let skipped = local.skipped_words();
        let conn = self.pool.get(slave).await?;
        debug!(%repo, %slave, ?when, "mirror push started");
        let done = match mirror_push::mirror_push(conn, repo, &path, epoch, local, when, known)
            .await
        {
            Err(PushError::Refused(words)) => {
                // The slave names a master whose claim beats ours: this server was replaced
                // (promoted elsewhere while it was away). It steps down, and the work ends.
                if mastership::step_down(&path, self.mastered.this(), slave, &words).is_some() {
                    warn!(%repo, told_by = %slave, "another server was promoted to master this repo; this server is now its slave");
                    return Ok(None);
                }
                return Err(PushError::Refused(words));
            }
            other => other?,
        };
        let (bytes, builder) = done.pack.as_ref().map_or((0, "none"), |p| {
            (
                p.bytes,
                if p.by_process {
                    "git pack-objects"
                } else {
                    "libgit2"
                },
            )
        });
        if done.pushed != Pushed::Nothing {
            info!(%repo, %slave, pushed = ?done.pushed, pack_bytes = bytes, pack_builder = builder, "mirror push done");
        }
        if let Some(d) = &done.diverged {
            warn!(%repo, %slave, diverged = %d, "slave had diverged; its refs were kept there");
        }
        // Deleted or renamed here while the push was under way: what it confirmed belongs to
        // a name that is gone, and recording it would bring back a queue record for it.
        if !path.exists() {
            return Ok(None);
        }
        // Pushed, but not whole: a failure in status and to pushers until someone removes or
        // fixes the refs, retried on the backoff.
        if let Some(words) = skipped {
            return Err(PushError::Incomplete(words));
        }
        Ok(Some(Confirmed {
            contacted: true,
            fingerprint,
            diverged: done.diverged,
            bytes,
        }))
    }
}

impl SshPusher {
    /// This server's refs of the repo at `path`. A small repo's are read here, in a moment; a
    /// big one's (tens of thousands of refs) on a blocking thread, so that the async workers,
    /// which serve the socket and every other push, never wait on it.
    async fn list_refs(&self, path: &Path) -> Result<RefState, PushError> {
        if few_refs(path) {
            return RefState::local(path);
        }
        let permit = self.listings.clone().acquire_owned().await;
        let path = path.to_path_buf();
        let listing = tokio::task::spawn_blocking(move || {
            // Held as long as the thread works, even past the wait below.
            let _permit = permit;
            RefState::local(&path)
        });
        match tokio::time::timeout(self.pool.io_timeout(), listing).await {
            Ok(done) => done.map_err(PushError::Worker)?,
            Err(_) => Err(PushError::LocalRepo(git2::Error::from_str(
                "listing this repo's refs did not finish in time",
            ))),
        }
    }
}

/// A state's fingerprint with the epoch it was mastered at (none at epoch 0, so that
/// fingerprints recorded before epochs existed still match).
fn with_epoch(fingerprint: String, epoch: u64) -> String {
    if epoch == 0 {
        fingerprint
    } else {
        format!("{fingerprint}@{epoch}")
    }
}

/// Whether a repo's refs are few enough to list without a thread of their own: its packed
/// refs, if any, a regular file under 256 KiB (about 2,500 refs). Anything else, a named pipe
/// included, goes to a blocking thread.
fn few_refs(path: &Path) -> bool {
    match std::fs::symlink_metadata(path.join("packed-refs")) {
        Ok(meta) => meta.is_file() && meta.len() < 256 * 1024,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
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

    fn quick_state(&self, repo: &RepoName) -> Option<(Vec<AccountName>, Option<String>)> {
        let (path, slaves) = self.mastered.slaves_of(repo).ok()?;
        let epoch = mastership::epoch(&path).ok()?;
        let fingerprint = RefState::on_disk(&path)
            .ok()
            .map(|s| with_epoch(s.fingerprint(), epoch));
        Some((slaves, fingerprint))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ServerConfig, Source};
    use crate::home::Home;
    use crate::replicate::push_error::Blame;

    /// A pusher for server1 over a home with one repo whose git config is `config`. Nothing
    /// here connects: every case is decided before a connection is needed.
    fn pusher_with(config: Option<&str>) -> (tempfile::TempDir, Arc<SshPusher>) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(dir.path()), false).unwrap();
        let path = home.repositories().join("testing.git");
        git2::Repository::init_bare(&path).unwrap();
        if let Some(text) = config {
            std::fs::write(path.join("config"), text).unwrap();
        }
        let server = ServerConfig::from_source(&Source::from_text(
            "gitmirror.toml",
            "hostname = \"server1\"\n",
        ))
        .unwrap();
        let this = server.hostname.clone();
        let pool = Pool::new(home.clone(), Arc::new(server));
        let (queue, ops) = (Queue::new(home.queue_dir()), OpQueue::new(home.ops_dir()));
        (
            dir,
            SshPusher::new(Mastered::new(&home, &this), pool, queue, ops),
        )
    }

    async fn push(pusher: &SshPusher) -> Result<Option<Confirmed>, PushError> {
        let repo = RepoName::parse("testing").unwrap();
        let slave = AccountName::parse("server2").unwrap();
        pusher.push(&repo, &slave, When::IfChanged, None).await
    }

    const BARE: &str = "[core]\n\tbare = true\n";

    #[tokio::test]
    async fn settings_that_drop_the_slave_end_the_work() {
        for mirror in [
            "",
            "[gitolite \"mirror\"]\n\tmaster = server3\n\tslaves = server1 server2\n",
            "[gitolite \"mirror\"]\n\tmaster = server1\n\tslaves = server3\n",
        ] {
            let (_dir, pusher) = pusher_with(Some(&format!("{BARE}{mirror}")));
            assert!(push(&pusher).await.unwrap().is_none(), "{mirror:?}");
        }
    }

    #[tokio::test]
    async fn settings_that_cannot_be_read_keep_the_work_pending() {
        for broken in [
            // A typo in a hand-edited slave list.
            format!(
                "{BARE}[gitolite \"mirror\"]\n\tmaster = server1\n\tslaves = server2 bad/name\n"
            ),
            // Not git config at all.
            "[gitolite \"mirror\"\n\tmaster = server1\n".to_string(),
        ] {
            let (_dir, pusher) = pusher_with(Some(&broken));
            let err = push(&pusher).await.unwrap_err();
            assert_eq!(err.blame(), Blame::Local, "{broken:?}: {}", err.words());
            assert!(
                err.words().starts_with("cannot tell this repo's slaves: "),
                "{}",
                err.words()
            );
        }
        // The repo gone from where it was, with a push owed for it: kept pending.
        let (dir, pusher) = pusher_with(None);
        let home = Home::locate(Some(dir.path()), false).unwrap();
        let repo = RepoName::parse("testing").unwrap();
        let slave = AccountName::parse("server2").unwrap();
        Queue::new(home.queue_dir())
            .enqueue_record(&repo, std::slice::from_ref(&slave))
            .unwrap();
        std::fs::remove_dir_all(dir.path().join("repositories/testing.git")).unwrap();
        let err = push(&pusher).await.unwrap_err();
        assert_eq!(
            err.words(),
            "cannot tell this repo's slaves: testing: no such repo here"
        );
        // Deleted (or renamed) here, which takes its queue record along: nothing is owed.
        Queue::new(home.queue_dir()).remove_record(&repo).unwrap();
        assert!(push(&pusher).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_push_waiting_for_its_turn_holds_little_memory() {
        // A bulk request spawns a push for every repo and slave; most wait for a session
        // slot. The exchange's buffers must not be part of each waiting task.
        let (_dir, pusher) = pusher_with(None);
        let repo = RepoName::parse("testing").unwrap();
        let slave = AccountName::parse("server2").unwrap();
        let waiting = pusher.push_one(&repo, &slave, When::IfChanged, None);
        let size = std::mem::size_of_val(&waiting);
        assert!(size < 4096, "a waiting push is {size} bytes");
    }
}
