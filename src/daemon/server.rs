//! The daemon itself: holds the lock, listens on the socket, and hands each request to the
//! scheduler.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::protocol::{ProtocolError, Reply, Request};
use super::verifier::Verifier;
use super::{DaemonError, socket_path};
use crate::config::ServerConfig;
use crate::external::downstream_sender::DownstreamSender;
use crate::external::upstream_scheduler::UpstreamScheduler;
use crate::fs::{Context, ensure_dir, write_atomic};
use crate::home::Home;
use crate::metrics;
use crate::names::{AccountName, RepoName};
use crate::replicate::mastered::{Mastered, NotMastered};
use crate::replicate::op_queue::OpQueue;
use crate::replicate::op_sender::OpSender;
use crate::replicate::pusher::SshPusher;
use crate::replicate::queue::{Backoff, Queue};
use crate::replicate::scheduler::{Checked, Outcome, Scheduler};
use crate::replicate::{Delivered, PushError, When};
use crate::repo::Store;
use crate::ssh::Pool;

/// A running daemon: the scheduler, and which repos it may be asked about.
struct Daemon {
    scheduler: Arc<Scheduler>,
    mastered: Mastered,
    verifier: Arc<Verifier>,
    ops: Arc<OpSender>,
    upstreams: Arc<UpstreamScheduler>,
    downstreams: Arc<DownstreamSender>,
}

/// Why a request cannot be served; its words go back as the `error` reply.
#[derive(Debug, Error)]
enum JobError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    NotMastered(#[from] NotMastered),
    #[error("{slave} is not a slave of {repo} here")]
    NotSlave { repo: RepoName, slave: AccountName },
}

/// One mirror push the daemon was asked for: repo, slave, how much to check, and whether the
/// client waits for its outcome.
type Job = (RepoName, AccountName, When, bool);

/// glibc gives each thread that allocates an arena of its own, up to eight per core, and
/// memory freed in one is not reused by another: the daemon's blocking threads (listings,
/// small packs built by libgit2) would each keep their high-water mark. Two arenas hold it
/// to what the work needs at once.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter (under glibc's own lock); called
    // before the runtime starts its threads.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) fn run(home: &Home, config: Arc<ServerConfig>) -> Result<(), DaemonError> {
    ensure_dir(&home.state_dir(), 0o700)?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.daemon_lock())
        .at("cannot open", &home.daemon_lock())?;
    if lock.try_lock().is_err() {
        let pid = std::fs::read_to_string(home.daemon_pid()).unwrap_or_default();
        return Err(DaemonError::AlreadyRunning(pid.trim().to_string()));
    }
    write_atomic(
        &home.daemon_pid(),
        format!("{}\n", std::process::id()).as_bytes(),
        0o644,
    )?;
    let socket = socket_path(home)?;
    limit_malloc_arenas();
    // Two workers: queue writes fsync, and must not stall the socket or the pushes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .at("cannot start", &socket)?;
    let result = runtime.block_on(serve(home, config, &socket));
    // A listing stuck on a blocking thread (a hung mount) must not keep the daemon alive.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(home.daemon_pid());
    drop(lock);
    result
}

async fn serve(
    home: &Home,
    config: Arc<ServerConfig>,
    socket: &PathBuf,
) -> Result<(), DaemonError> {
    // We hold the lock, so a socket file left here belongs to a daemon that died.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).at("cannot listen on", socket)?;
    let mastered = Mastered::new(home, &config.hostname);
    let pusher = SshPusher::new(
        mastered.clone(),
        Pool::new(home.clone(), config.clone()),
        Queue::new(home.queue_dir()),
        OpQueue::new(home.ops_dir()),
    );
    let pool = pusher.pool();
    let scheduler = Scheduler::new(
        Queue::new(home.queue_dir()),
        Backoff::from_config(&config.mirror),
        pusher,
    );
    let verifier = Arc::new(Verifier {
        home: home.clone(),
        mastered: mastered.clone(),
        pool,
        scheduler: scheduler.clone(),
    });
    tokio::spawn(
        verifier
            .clone()
            .periodically(Duration::from_secs_f64(config.mirror.verify_interval)),
    );
    let ops = OpSender::new(
        OpQueue::new(home.ops_dir()),
        Store::new(home.repositories()),
        verifier.pool.clone(),
        Backoff::from_config(&config.mirror),
        scheduler.clone(),
    );
    tokio::spawn(ops.clone().run());
    let upstreams =
        UpstreamScheduler::new(home, &config.hostname, &config.mirror, scheduler.clone());
    tokio::spawn(upstreams.clone().run());
    let downstreams = DownstreamSender::new(home, &config.hostname, &config.mirror);
    tokio::spawn(downstreams.clone().run());
    if let Some(addr) = config.metrics.listen {
        // Not bound is logged there, and not fatal: replication goes on without metrics.
        metrics::http::start(
            addr,
            home,
            &config.hostname,
            verifier.pool.clone(),
            &scheduler,
        )
        .await;
    }
    let daemon = Arc::new(Daemon {
        scheduler,
        mastered,
        verifier,
        ops,
        upstreams,
        downstreams,
    });
    info!(socket = %socket.display(), pid = std::process::id(), "daemon started");
    let sweeper = daemon.clone();
    let every = Duration::from_secs_f64(config.mirror.rescan_secs);
    tokio::spawn(async move {
        let mut first = true;
        loop {
            // Listing every repo and reading its files is disk work: off the workers.
            let started = std::time::Instant::now();
            let (mastered, scheduler) = (sweeper.mastered.clone(), sweeper.scheduler.clone());
            let swept = tokio::task::spawn_blocking(move || scheduler.sweep(&mastered.repos()))
                .await
                .unwrap_or_default();
            if first {
                info!(
                    resumed = swept.resumed,
                    unchanged = swept.unchanged,
                    submitted = swept.submitted,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "start-up sweep done"
                );
                first = false;
            }
            tokio::time::sleep(every).await;
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .at("cannot catch SIGTERM in", socket)?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let d = daemon.clone();
                    tokio::spawn(async move {
                        if let Err(e) = d.handle(stream).await {
                            warn!(error = %e, "client connection failed");
                        }
                    });
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    info!("daemon stopping");
    daemon.scheduler.close().await;
    Ok(())
}

impl Daemon {
    /// Serves one client: one request line, then reply lines.
    async fn handle(&self, stream: UnixStream) -> io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(read.take(4096));
        // A client that never finishes its request line is dropped.
        tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request line"))??;
        let request = Request::parse(&line);
        if let Ok(Request::Verify { repo, repair }) = &request {
            return self.verify(&mut write, repo.as_ref(), *repair).await;
        }
        if request == Ok(Request::Ops) {
            self.ops.kick();
            return write.write_all(Reply::Ok.line().as_bytes()).await;
        }
        if let Ok(Request::Fetch(repo)) = &request {
            return self.fetch(&mut write, repo.as_ref()).await;
        }
        if let Ok(Request::Downstream(_)) = &request {
            self.downstreams.kick();
            return write.write_all(Reply::Ok.line().as_bytes()).await;
        }
        let mut answered = Vec::new();
        let mut waiting = FuturesUnordered::new();
        let wait_for = |repo: RepoName, slave: AccountName, rx: oneshot::Receiver<Outcome>| {
            waiting.push(async move {
                let outcome: Outcome = rx
                    .await
                    .unwrap_or_else(|_| Err(Arc::new(PushError::Stopped)));
                (repo, slave, outcome)
            });
        };
        if request == Ok(Request::All) {
            // Thousands of repos: checked in bulk, off the workers; what has not changed is
            // answered at once.
            let (mastered, scheduler) = (self.mastered.clone(), self.scheduler.clone());
            let checked =
                tokio::task::spawn_blocking(move || scheduler.check(&mastered.repos(), true)).await;
            let Ok(checked) = checked else {
                let reply = Reply::Error("the bulk check failed; see the daemon's log".into());
                return write.write_all(reply.line().as_bytes()).await;
            };
            for (repo, slave, checked) in checked {
                match checked {
                    Checked::Unchanged { since } => {
                        answered.push(Reply::Unchanged(repo, slave, since))
                    }
                    Checked::Submitted(Some(rx)) => wait_for(repo, slave, rx),
                    Checked::Submitted(None) | Checked::Running => {}
                }
            }
        } else {
            let work = match request.map_err(JobError::from).and_then(|r| self.jobs(r)) {
                Ok(w) => w,
                Err(e) => {
                    let reply = Reply::Error(e.to_string());
                    return write.write_all(reply.line().as_bytes()).await;
                }
            };
            for (repo, slave, when, wait) in work {
                if let Some(rx) = self.scheduler.submit(&repo, &slave, when, wait) {
                    wait_for(repo, slave, rx);
                }
            }
            if waiting.is_empty() {
                return write.write_all(Reply::Ok.line().as_bytes()).await;
            }
        }
        let mut out = tokio::io::BufWriter::new(write);
        for reply in answered {
            out.write_all(reply.line().as_bytes()).await?;
        }
        while let Some((repo, slave, outcome)) = waiting.next().await {
            let reply = match outcome {
                Ok(Delivered::Pushed) => Reply::Done(repo, slave),
                Ok(Delivered::Unchanged { since }) => Reply::Unchanged(repo, slave, since),
                Err(e) => Reply::Fail(repo, slave, e.words()),
            };
            out.write_all(reply.line().as_bytes()).await?;
            // Each outcome reaches the client as it comes, not when the buffer fills.
            out.flush().await?;
        }
        out.write_all(Reply::End.line().as_bytes()).await?;
        out.flush().await
    }

    /// Serves `verify`: a line per repo and slave, then the repairs' outcomes as they finish.
    async fn verify(
        &self,
        write: &mut (impl AsyncWriteExt + Unpin),
        repo: Option<&RepoName>,
        repair: bool,
    ) -> io::Result<()> {
        let run = match self.verifier.run(repo, repair, true).await {
            Ok(run) => run,
            Err(e) => {
                return write
                    .write_all(Reply::Error(e.to_string()).line().as_bytes())
                    .await;
            }
        };
        for f in run.findings {
            let words = f.verdict.words(&f.slave);
            let reply = Reply::Verified {
                state: f.verdict.state().to_string(),
                repo: f.repo,
                slave: f.slave,
                words,
            };
            write.write_all(reply.line().as_bytes()).await?;
        }
        let mut waiting: FuturesUnordered<_> = run
            .repairs
            .into_iter()
            .filter_map(|(f, rx)| rx.map(|rx| (f, rx)))
            .map(|(f, rx)| async move {
                let outcome = rx
                    .await
                    .unwrap_or_else(|_| Err(Arc::new(PushError::Stopped)));
                (f.repo, f.slave, outcome)
            })
            .collect();
        while let Some((repo, slave, outcome)) = waiting.next().await {
            let reply = match outcome {
                Ok(Delivered::Pushed) => Reply::Done(repo, slave),
                Ok(Delivered::Unchanged { since }) => Reply::Unchanged(repo, slave, since),
                Err(e) => Reply::Fail(repo, slave, e.words()),
            };
            write.write_all(reply.line().as_bytes()).await?;
        }
        write.write_all(Reply::End.line().as_bytes()).await
    }

    /// Serves `fetch`: each pull mirror asked for (one, or every one this server fetches) is
    /// fetched now, a `fetched` line each as it ends.
    async fn fetch(
        &self,
        write: &mut tokio::net::unix::OwnedWriteHalf,
        only: Option<&RepoName>,
    ) -> io::Result<()> {
        let upstreams = self.upstreams.clone();
        let mirrors = tokio::task::spawn_blocking(move || upstreams.mirrors())
            .await
            .unwrap_or_default();
        let chosen: Vec<_> = mirrors
            .into_iter()
            .filter(|(r, _)| only.is_none_or(|o| o == r))
            .collect();
        if let (Some(repo), true) = (only, chosen.is_empty()) {
            let reply = Reply::Error(format!(
                "{repo} is not a pull mirror this server fetches (no upstream in repos.toml, or mastered elsewhere)"
            ));
            return write.write_all(reply.line().as_bytes()).await;
        }
        let mut running: FuturesUnordered<_> = chosen
            .into_iter()
            .map(|(repo, upstream)| {
                let upstreams = self.upstreams.clone();
                async move {
                    let outcome = upstreams.fetch(&repo, &upstream, true).await;
                    (repo, outcome)
                }
            })
            .collect();
        while let Some((repo, outcome)) = running.next().await {
            let reply = match outcome {
                Ok(f) => Reply::Fetched {
                    repo,
                    ok: true,
                    words: format!(
                        "{} refs updated, {} diverged{}",
                        f.updated.len(),
                        f.diverged.len(),
                        if f.guarded.is_some() {
                            ", deletions held back"
                        } else {
                            ""
                        }
                    ),
                },
                Err(words) => Reply::Fetched {
                    repo,
                    ok: false,
                    words,
                },
            };
            write.write_all(reply.line().as_bytes()).await?;
        }
        write.write_all(Reply::End.line().as_bytes()).await
    }

    /// The mirror pushes a request stands for, or why it cannot be served.
    fn jobs(&self, request: Request) -> Result<Vec<Job>, JobError> {
        let each = |repo: RepoName, when, wait| -> Result<Vec<Job>, JobError> {
            let (_, slaves) = self.mastered.slaves_of(&repo)?;
            Ok(slaves
                .into_iter()
                .map(|s| (repo.clone(), s, when, wait))
                .collect())
        };
        match request {
            Request::Push(r) => each(r, When::Always, false),
            Request::Wait(r) => each(r, When::Always, true),
            Request::Compare(r) => each(r, When::IfDifferent, true),
            Request::CompareFor(r, slave) => {
                let (_, slaves) = self.mastered.slaves_of(&r)?;
                if slaves.contains(&slave) {
                    Ok(vec![(r, slave, When::IfDifferent, true)])
                } else {
                    Err(JobError::NotSlave { repo: r, slave })
                }
            }
            // Checked in bulk by `handle`, which never brings it here.
            Request::All => Ok(Vec::new()),
            // Served by `verify`, the operation sender and `fetch` before any job is made.
            Request::Verify { .. } | Request::Ops | Request::Fetch(_) | Request::Downstream(_) => {
                Ok(Vec::new())
            }
        }
    }
}
