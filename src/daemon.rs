//! `gitmirror daemon`: the long-running replicator, and how hooks and commands talk to it.
//!
//! The daemon keeps one multiplexed ssh connection per peer and works the durable queue
//! (see [`crate::replicator`]). It listens on a unix socket in the home; one runs per home (a
//! lock file sees to it). Hooks start one on demand when none answers, so an administrator
//! gets the fast path without configuring anything; `conf/gitmirror.service` runs it under
//! systemd for those who want it supervised.
//!
//! The protocol is one request line, answered by lines:
//! `push REPO` (queue, answer `ok`); `wait REPO`, `request REPO`, `request-for REPO SLAVE`,
//! `all` (answer `done REPO SLAVE` or `fail REPO SLAVE WORDS` per slave as each finishes,
//! then `end`). `error WORDS` answers a request that cannot be served. `all` compares each
//! repo with what its slaves last confirmed and asks a slave only when that differs;
//! `request` always compares with the slave itself.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream as AsyncStream};
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::fsutil::{self, Context, FsError};
use crate::git::SAFE_PATH;
use crate::home::Home;
use crate::mirror::SlaveResult;
use crate::names::{AccountName, RepoName};
use crate::peers::home_tag;
use crate::push::When;
use crate::replicator::{Outcome, RESCAN, Replicator};

/// How long a client waits for a daemon it started to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong running or reaching the daemon.
#[derive(Debug, Error)]
pub enum DaemonError {
    #[error("a daemon already runs for this home (pid {0})")]
    AlreadyRunning(String),
    #[error("the daemon did not answer: {0}")]
    Unreachable(String),
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The daemon's socket: in the home's state directory, or under /tmp when that path is too
/// long for a unix socket.
pub fn socket_path(home: &Home) -> Result<PathBuf, FsError> {
    let name = "daemon.sock";
    Ok(fsutil::socket_dir(&home.state_dir(), name.len() + 1, &home_tag(home))?.join(name))
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(home: &Home, config: Arc<ServerConfig>) -> Result<(), DaemonError> {
    fsutil::ensure_dir(&home.state_dir(), 0o700)?;
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
    fsutil::write_atomic(
        &home.daemon_pid(),
        format!("{}\n", std::process::id()).as_bytes(),
        0o644,
    )?;
    let socket = socket_path(home)?;
    // Two workers: queue writes fsync, and must not stall the socket or the pushes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .at("cannot start", &socket)?;
    let result = runtime.block_on(serve(home, config, &socket));
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
    crate::transport::register().map_err(|e| DaemonError::Refused(e.message().to_string()))?;
    // We hold the lock, so a socket file left here belongs to a daemon that died.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).at("cannot listen on", socket)?;
    let replicator = Replicator::new(home, config);
    info!(socket = %socket.display(), pid = std::process::id(), "daemon started");
    replicator.resume();
    let rescanner = replicator.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RESCAN).await;
            rescanner.rescan();
        }
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .at("cannot catch SIGTERM in", socket)?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let r = replicator.clone();
                    tokio::spawn(async move {
                        if let Err(e) = handle(r, stream).await {
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
    replicator.close().await;
    Ok(())
}

/// Serves one client: one request line, then answer lines.
async fn handle(rep: Arc<Replicator>, stream: AsyncStream) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(read.take(4096));
    // A client that never finishes its request line is dropped.
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request line"))??;
    let words: Vec<&str> = line.split_whitespace().collect();
    let repo = |i: usize| -> Result<RepoName, String> {
        let raw = words.get(i).ok_or("missing repo")?;
        RepoName::parse(raw).map_err(|e| e.to_string())
    };
    let work: Result<Vec<(RepoName, AccountName, When, bool)>, String> = match words.as_slice() {
        ["push", _] => repo(1).and_then(|r| {
            rep.mastered(&r)
                .map(|(_, s)| jobs(&r, &s, When::Always, false))
        }),
        ["wait", _] => repo(1).and_then(|r| {
            rep.mastered(&r)
                .map(|(_, s)| jobs(&r, &s, When::Always, true))
        }),
        ["request", _] => repo(1).and_then(|r| {
            rep.mastered(&r)
                .map(|(_, s)| jobs(&r, &s, When::IfDifferent, true))
        }),
        ["request-for", _, slave] => repo(1).and_then(|r| {
            let slave = AccountName::parse(slave).map_err(|e| e.to_string())?;
            let (_, slaves) = rep.mastered(&r)?;
            if slaves.contains(&slave) {
                Ok(jobs(&r, &[slave], When::IfDifferent, true))
            } else {
                Err(format!("{slave} is not a slave of {r} here"))
            }
        }),
        ["all"] => Ok(all_jobs(&rep)),
        _ => Err(format!("unknown request {:?}", line.trim())),
    };
    let work = match work {
        Ok(w) => w,
        Err(e) => return write.write_all(format!("error {e}\n").as_bytes()).await,
    };
    let mut waiting = FuturesUnordered::new();
    for (repo, slave, when, wait) in work {
        if let Some(rx) = rep.submit(&repo, &slave, when, wait) {
            waiting.push(async move {
                let outcome: Outcome = rx.await.unwrap_or_else(|_| Err("daemon stopped".into()));
                (repo, slave, outcome)
            });
        }
    }
    if waiting.is_empty() && !line.starts_with("all") {
        return write.write_all(b"ok\n").await;
    }
    while let Some((repo, slave, outcome)) = waiting.next().await {
        let text = match outcome {
            Ok(()) => format!("done {repo} {slave}\n"),
            Err(e) => format!("fail {repo} {slave} {}\n", crate::peers::one_line(&e)),
        };
        write.write_all(text.as_bytes()).await?;
    }
    write.write_all(b"end\n").await
}

fn jobs(
    repo: &RepoName,
    slaves: &[AccountName],
    when: When,
    wait: bool,
) -> Vec<(RepoName, AccountName, When, bool)> {
    slaves
        .iter()
        .map(|s| (repo.clone(), s.clone(), when, wait))
        .collect()
}

fn all_jobs(rep: &Replicator) -> Vec<(RepoName, AccountName, When, bool)> {
    rep.mastered_pairs()
        .into_iter()
        .map(|(repo, slave)| (repo, slave, When::IfChanged, true))
        .collect()
}

/// A request to the daemon, from a hook or a command.
#[derive(Debug, Clone)]
pub enum Ask {
    /// Queue pushes of a repo to its slaves; do not wait.
    Push(RepoName),
    /// Push a repo (refs just changed) and report each slave.
    Wait(RepoName),
    /// Compare a repo with its slaves, push what differs, report each slave.
    Request(RepoName),
    /// The same for one slave (a slave's own request).
    RequestFor(RepoName, AccountName),
    /// Every repo this server masters.
    All,
}

impl Ask {
    fn line(&self) -> String {
        match self {
            Ask::Push(r) => format!("push {r}\n"),
            Ask::Wait(r) => format!("wait {r}\n"),
            Ask::Request(r) => format!("request {r}\n"),
            Ask::RequestFor(r, s) => format!("request-for {r} {s}\n"),
            Ask::All => "all\n".to_string(),
        }
    }
}

/// What the daemon answered before the caller stopped listening.
#[derive(Debug, Default)]
pub struct Answer {
    /// One result per slave that finished.
    pub results: Vec<SlaveResult>,
    /// Whether the caller stopped waiting (timeout or quorum) before every slave finished.
    pub cut_short: bool,
}

/// Sends `ask` to the daemon (starting one if none answers) and collects its answers until it
/// is done, `deadline` passes, or `quorum` slaves have succeeded.
pub fn ask(
    home: &Home,
    this: &AccountName,
    ask: &Ask,
    deadline: Option<Instant>,
    quorum: Option<usize>,
) -> Result<Answer, DaemonError> {
    let mut stream = connect(home, true)?;
    stream
        .write_all(ask.line().as_bytes())
        .map_err(|e| DaemonError::Unreachable(e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let mut answer = Answer::default();
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                answer.cut_short = true;
                return Ok(answer);
            }
            let _ = reader.get_ref().set_read_timeout(Some(left));
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(DaemonError::Unreachable("connection closed".into())),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                answer.cut_short = true;
                return Ok(answer);
            }
            Err(e) => return Err(DaemonError::Unreachable(e.to_string())),
        }
        let mut words = line.trim_end().splitn(4, ' ');
        let verb = words.next().unwrap_or("");
        let parse = |r: Option<&str>, s: Option<&str>| {
            Some((RepoName::parse(r?).ok()?, AccountName::parse(s?).ok()?))
        };
        match verb {
            "ok" | "end" => return Ok(answer),
            "error" => {
                return Err(DaemonError::Refused(
                    line.trim_end().trim_start_matches("error ").to_string(),
                ));
            }
            "done" | "fail" => {
                let Some((repo, slave)) = parse(words.next(), words.next()) else {
                    continue;
                };
                let outcome = if verb == "done" {
                    Ok(())
                } else {
                    Err(words.next().unwrap_or("failed").to_string())
                };
                answer.results.push(SlaveResult {
                    master: this.clone(),
                    repo,
                    slave,
                    outcome,
                });
                let ok = answer.results.iter().filter(|r| r.outcome.is_ok()).count();
                if quorum.is_some_and(|q| ok >= q) {
                    answer.cut_short = true;
                    return Ok(answer);
                }
            }
            _ => {}
        }
    }
}

/// Hands a repo's freshly queued pushes to the daemon without waiting for them. When no
/// daemon answers, one is started and this returns at once: the daemon reads the queue when
/// it starts, so the work is not lost either way.
pub fn notify(home: &Home, repo: &RepoName) -> Result<(), DaemonError> {
    match connect(home, false) {
        Ok(mut stream) => {
            stream
                .write_all(Ask::Push(repo.clone()).line().as_bytes())
                .map_err(|e| DaemonError::Unreachable(e.to_string()))?;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut line = String::new();
            let _ = BufReader::new(stream).read_line(&mut line);
            match line.trim_end() {
                "ok" => Ok(()),
                refused if refused.starts_with("error ") => Err(DaemonError::Refused(
                    refused.trim_start_matches("error ").to_string(),
                )),
                // A daemon on its way out: make sure one runs; it reads the queue at start.
                _ => spawn(home)
                    .map_err(|e| DaemonError::Unreachable(format!("cannot start it: {e}"))),
            }
        }
        Err(_) => {
            spawn(home).map_err(|e| DaemonError::Unreachable(format!("cannot start it: {e}")))
        }
    }
}

/// Connects to the daemon; when none answers and `start` is set, starts one and waits for it.
pub fn connect(home: &Home, start: bool) -> Result<UnixStream, DaemonError> {
    let socket = socket_path(home)?;
    if let Ok(s) = UnixStream::connect(&socket) {
        return Ok(s);
    }
    if !start {
        return Err(DaemonError::Unreachable(format!(
            "nothing listens on {}",
            socket.display()
        )));
    }
    spawn(home).map_err(|e| DaemonError::Unreachable(format!("cannot start it: {e}")))?;
    let begun = Instant::now();
    loop {
        match UnixStream::connect(&socket) {
            Ok(s) => return Ok(s),
            Err(e) if begun.elapsed() > START_TIMEOUT => {
                return Err(DaemonError::Unreachable(format!(
                    "{}: {e}",
                    socket.display()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Starts a daemon detached from the caller: its own process group, no stdio, so neither git
/// nor sshd waits for it. A second one exits at once (the lock), so racing starts are harmless.
pub fn spawn(home: &Home) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .arg("--home")
        .arg(home.root())
        .arg("daemon")
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("HOME", home.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(|_| ())
}
