//! Mirror pushes: making a slave's refs and HEAD identical to the master's.
//!
//! A mirror push is `git push --mirror` over the peer's shared connection, carrying the
//! master's HEAD as a push option the slave's hook applies. Pushes of one repo to one slave
//! are serialized by a lock, and each reads the master's refs only once it holds the lock, so
//! the last push to finish always carries the newest state.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::join_all;
use futures::stream::{self, StreamExt};
use thiserror::Error;
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::fsutil;
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::peers::Pool;
use crate::push::{self, Pushed, When, remote_words};
use crate::store::{self, Store};

/// How many repos `request-push --all` works on at once.
pub const REPOS_AT_ONCE: usize = 8;

/// Why a repo could not be pushed or requested at all (per-slave failures are results).
#[derive(Debug, Error)]
pub enum MirrorError {
    #[error("{0}: no such repo here")]
    NoRepo(RepoName),
    #[error("{0} has no mirror settings here (gitolite.mirror.master is not set)")]
    NotMirrored(RepoName),
    #[error("{repo}: {message}")]
    Repo { repo: RepoName, message: String },
    #[error("{0}")]
    Store(String),
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
    /// False when any slave failed.
    pub ok: bool,
}

impl Report {
    fn from_results(results: &[SlaveResult]) -> Self {
        Report {
            lines: results.iter().map(SlaveResult::line).collect(),
            ok: results.iter().all(|r| r.outcome.is_ok()),
        }
    }

    /// The lines joined, each ending in a newline.
    pub fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}

/// The work of one server on its mirrored repos: shared connections and settings.
pub struct Mirror {
    home: Home,
    config: Arc<ServerConfig>,
    pool: Pool,
}

impl Mirror {
    /// A mirror for this server; connections open lazily.
    pub fn new(home: &Home, config: Arc<ServerConfig>) -> Self {
        Mirror {
            home: home.clone(),
            pool: Pool::new(home.clone(), config.clone()),
            config,
        }
    }

    /// Closes the connections this mirror opened.
    pub async fn close(self) {
        self.pool.close().await;
    }

    fn this(&self) -> &AccountName {
        &self.config.hostname
    }

    /// Pushes `repo` (at `path`) to each of `slaves`, all at once.
    pub async fn push_to(
        &self,
        repo: &RepoName,
        path: &Path,
        slaves: &[AccountName],
        when: When,
    ) -> Vec<SlaveResult> {
        let pushes = slaves.iter().map(|slave| async move {
            let outcome = self.push_one(repo, path, slave, when).await;
            match &outcome {
                Ok(pushed) => info!(%repo, %slave, ?pushed, "mirror push done"),
                Err(e) => warn!(%repo, %slave, error = %e, "mirror push failed"),
            }
            SlaveResult {
                master: self.this().clone(),
                repo: repo.clone(),
                slave: slave.clone(),
                outcome: outcome.map(|_| ()),
            }
        });
        join_all(pushes).await
    }

    async fn push_one(
        &self,
        repo: &RepoName,
        path: &Path,
        slave: &AccountName,
        when: When,
    ) -> Result<Pushed, String> {
        let lock_path = self.lock_path(repo, slave);
        let _lock = tokio::task::spawn_blocking(move || {
            if let Some(dir) = lock_path.parent() {
                fsutil::ensure_dir(dir, 0o700)?;
            }
            fsutil::lock(&lock_path)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let conn = self.pool.get(slave).await.map_err(|e| e.to_string())?;
        push::mirror_push(&self.home, &conn, repo, path, when).await
    }

    fn lock_path(&self, repo: &RepoName, slave: &AccountName) -> PathBuf {
        // '~' cannot occur in a repo name, so the flattened name is unique.
        let flat = repo.as_str().replace('/', "~");
        self.home
            .state_dir()
            .join("locks")
            .join(slave.as_str())
            .join(format!("{flat}.lock"))
    }

    /// `request-push REPO`: on the master, push to every slave now; on a slave, ask the
    /// master (as a peer) to push to this server.
    pub async fn request(&self, repo: &RepoName) -> Result<Report, MirrorError> {
        let store = Store::new(self.home.repositories());
        let path = store
            .find(repo)
            .ok_or_else(|| MirrorError::NoRepo(repo.clone()))?;
        let rule = store::mirror_config(&path)
            .map_err(|e| MirrorError::Repo {
                repo: repo.clone(),
                message: e.to_string(),
            })?
            .ok_or_else(|| MirrorError::NotMirrored(repo.clone()))?;
        if rule.is_master(self.this()) {
            let results = self
                .push_to(repo, &path, &rule.slaves, When::IfDifferent)
                .await;
            return Ok(Report::from_results(&results));
        }
        Ok(self.ask_master(repo, &rule.master).await)
    }

    /// Asks `master` to push `repo` to this server, returning the master's own report.
    async fn ask_master(&self, repo: &RepoName, master: &AccountName) -> Report {
        let reply = match self.pool.get(master).await {
            Ok(conn) => conn.run(&["request-push", repo.as_str()]).await,
            Err(e) => Err(e),
        };
        match reply {
            Ok(out) if out.status.success() => Report {
                lines: String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect(),
                ok: true,
            },
            Ok(out) => {
                let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect();
                if lines.is_empty() {
                    lines.push(format!(
                        "{master} ==== ({repo}) =X=> {}: {}",
                        self.this(),
                        remote_words(&String::from_utf8_lossy(&out.stderr))
                    ));
                }
                Report { lines, ok: false }
            }
            Err(e) => Report {
                lines: vec![format!("{master} ==== ({repo}) =X=> {}: {e}", self.this())],
                ok: false,
            },
        }
    }

    /// `request-push --all`: every repo this server masters, [`REPOS_AT_ONCE`] at a time.
    pub async fn request_all(&self) -> Result<Report, MirrorError> {
        let store = Store::new(self.home.repositories());
        let repos = store
            .list()
            .map_err(|e| MirrorError::Store(e.to_string()))?;
        let mut work = Vec::new();
        for repo in repos {
            let Some(path) = store.find(&repo) else {
                continue;
            };
            match store::mirror_config(&path) {
                Ok(Some(rule)) if rule.is_master(self.this()) && !rule.slaves.is_empty() => {
                    work.push((repo, path, rule.slaves))
                }
                Ok(_) => {}
                Err(e) => warn!(%repo, error = %e, "unreadable mirror settings; skipped"),
            }
        }
        let results: Vec<Vec<SlaveResult>> = stream::iter(&work)
            .map(|(repo, path, slaves)| self.push_to(repo, path, slaves, When::IfDifferent))
            .buffer_unordered(REPOS_AT_ONCE)
            .collect()
            .await;
        let results: Vec<SlaveResult> = results.into_iter().flatten().collect();
        Ok(Report::from_results(&results))
    }

    /// On the master, for a slave's peer session: push `repo` to that slave only, if this
    /// server masters it and the slave is among its slaves.
    pub async fn push_for_slave(
        &self,
        repo: &RepoName,
        path: &Path,
        slave: &AccountName,
    ) -> Report {
        let results = self
            .push_to(repo, path, std::slice::from_ref(slave), When::IfDifferent)
            .await;
        Report::from_results(&results)
    }
}

/// A runtime for the synchronous entry points (hooks, forced commands, the command line):
/// one thread is enough, since the work is waiting on ssh and git processes.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
