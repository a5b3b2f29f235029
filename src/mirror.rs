//! Mirror requests as people and peers make them (`request-push`, sync pushes), and how their
//! results read: one line per slave, in gitolite's style.
//!
//! The work itself is the daemon's (see [`crate::daemon`] and [`crate::replicator`]); this
//! module turns a request into questions for it, or, on a slave, into a question for the
//! repo's master over ssh.

use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;

use crate::config::ServerConfig;
use crate::daemon::{self, Answer, Ask, DaemonError};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::peers::Pool;
use crate::push::remote_words;
use crate::store::{self, Store};

/// Why a request could not be made at all (per-slave failures are results).
#[derive(Debug, Error)]
pub enum MirrorError {
    #[error("{0}: no such repo here")]
    NoRepo(RepoName),
    #[error("{0} has no mirror settings here (gitolite.mirror.master is not set)")]
    NotMirrored(RepoName),
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// One slave's outcome for one repo.
#[derive(Debug, Clone)]
pub struct SlaveResult {
    /// The master (this server, or the one asked).
    pub master: AccountName,
    /// The repo.
    pub repo: RepoName,
    /// The slave.
    pub slave: AccountName,
    /// `Err` holds the slave's (or ssh's) own words, on one line.
    pub outcome: Result<(), String>,
}

impl SlaveResult {
    /// The line users and administrators see, in gitolite's style.
    pub fn line(&self) -> String {
        match &self.outcome {
            Ok(()) => format!("{} ==== ({}) ===> {}", self.master, self.repo, self.slave),
            Err(e) => format!(
                "{} ==== ({}) =X=> {}: {e}",
                self.master, self.repo, self.slave
            ),
        }
    }
}

/// A printable report of a request: lines, and whether everything succeeded.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One line per slave (or the master's reply, when asked from a slave).
    pub lines: Vec<String>,
    /// False when any slave failed or did not answer in time.
    pub ok: bool,
}

impl Report {
    /// A report of the daemon's answer; `expected` slaves that did not answer are pending.
    pub fn from_answer(
        master: &AccountName,
        repo: Option<&RepoName>,
        expected: &[AccountName],
        answer: &Answer,
    ) -> Self {
        let mut lines: Vec<String> = answer.results.iter().map(SlaveResult::line).collect();
        let mut ok = answer.results.iter().all(|r| r.outcome.is_ok());
        if let Some(repo) = repo {
            for slave in expected {
                if !answer.results.iter().any(|r| &r.slave == slave) {
                    lines.push(format!(
                        "{master} ==== ({repo}) ...> {slave}: pending, will be retried"
                    ));
                    ok = false;
                }
            }
        }
        Report { lines, ok }
    }

    /// The lines joined, each ending in a newline.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// A runtime for the synchronous entry points that need async work (asking a master over
/// ssh; the daemon): one thread is enough, since the work is waiting on ssh and git.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `request-push REPO`: on the master, push to every slave now (through the daemon); on a
/// slave, ask the master to push to this server.
pub fn request(
    home: &Home,
    config: &Arc<ServerConfig>,
    repo: &RepoName,
) -> Result<Report, MirrorError> {
    let path = Store::new(home.repositories())
        .find(repo)
        .ok_or_else(|| MirrorError::NoRepo(repo.clone()))?;
    let rule = store::mirror_config(&path)
        .map_err(|e| MirrorError::Store(e.to_string()))?
        .ok_or_else(|| MirrorError::NotMirrored(repo.clone()))?;
    if rule.is_master(&config.hostname) {
        let answer = daemon::ask(
            home,
            &config.hostname,
            &Ask::Request(repo.clone()),
            None,
            None,
        )?;
        return Ok(Report::from_answer(
            &config.hostname,
            Some(repo),
            &rule.slaves,
            &answer,
        ));
    }
    let runtime = runtime().map_err(|e| MirrorError::Store(e.to_string()))?;
    Ok(runtime.block_on(ask_master(home, config.clone(), repo, &rule.master)))
}

/// `request-push --all`: every repo this server masters.
pub fn request_all(home: &Home, config: &ServerConfig) -> Result<Report, MirrorError> {
    let answer = daemon::ask(home, &config.hostname, &Ask::All, None, None)?;
    Ok(Report::from_answer(&config.hostname, None, &[], &answer))
}

/// On the master, for a slave's peer session: push `repo` to that slave now.
pub fn request_for(
    home: &Home,
    config: &ServerConfig,
    repo: &RepoName,
    slave: &AccountName,
) -> Result<Report, MirrorError> {
    let ask = Ask::RequestFor(repo.clone(), slave.clone());
    let answer = daemon::ask(home, &config.hostname, &ask, None, None)?;
    Ok(Report::from_answer(
        &config.hostname,
        Some(repo),
        std::slice::from_ref(slave),
        &answer,
    ))
}

/// A sync push: the hook has queued the refs; wait for the slaves (or a quorum of them) until
/// the deadline.
pub fn wait(
    home: &Home,
    config: &ServerConfig,
    repo: &RepoName,
    slaves: &[AccountName],
    deadline: Instant,
    quorum: Option<usize>,
) -> Result<Report, MirrorError> {
    let answer = daemon::ask(
        home,
        &config.hostname,
        &Ask::Wait(repo.clone()),
        Some(deadline),
        quorum,
    )?;
    let mut report = Report::from_answer(&config.hostname, Some(repo), slaves, &answer);
    // Meeting the quorum is success, even with slaves still pending.
    if let Some(q) = quorum {
        report.ok = answer.results.iter().filter(|r| r.outcome.is_ok()).count() >= q;
    }
    Ok(report)
}

/// Asks `master` over ssh to push `repo` to this server, returning the master's own report.
async fn ask_master(
    home: &Home,
    config: Arc<ServerConfig>,
    repo: &RepoName,
    master: &AccountName,
) -> Report {
    let this = config.hostname.clone();
    let pool = Pool::new(home.clone(), config);
    let reply = match pool.get(master).await {
        Ok(conn) => conn.run(&["request-push", repo.as_str()]).await,
        Err(e) => Err(e),
    };
    pool.close().await;
    let failed = |words: String| Report {
        lines: vec![format!("{master} ==== ({repo}) =X=> {this}: {words}")],
        ok: false,
    };
    match reply {
        Ok(out) => {
            let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if out.status.success() {
                Report { lines, ok: true }
            } else if lines.is_empty() {
                failed(remote_words(&String::from_utf8_lossy(&out.stderr)))
            } else {
                Report { lines, ok: false }
            }
        }
        Err(e) => failed(e.to_string()),
    }
}
