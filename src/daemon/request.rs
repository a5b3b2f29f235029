//! Mirror requests as people and peers make them (`request-push`, sync pushes), each answered
//! with a [`Report`] (one line per slave, in gitolite's style).
//!
//! The work itself is the daemon's (see [`super::server`]); this module turns a request into
//! questions for it, or, on a slave, into a question for the repo's master over ssh.

use std::sync::Arc;
use std::time::Instant;

use thiserror::Error;

use super::DaemonError;
use super::client::{self, Quorum};
use super::protocol::{Reply, Request};
use crate::config::ServerConfig;
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::proto::{MASTER_KEY, REQUEST_PUSH_VERB};
use crate::replicate::Report;
use crate::replicate::SlaveResult;
use crate::replicate::push_error::remote_words;
use crate::repo::{self, Store, StoreError};
use crate::ssh::Pool;

/// Why a request could not be made at all (per-slave failures are results).
#[derive(Debug, Error)]
pub(crate) enum RequestError {
    #[error("{0}: no such repo here")]
    NoRepo(RepoName),
    #[error("{0} has no mirror settings here ({key} is not set)", key = MASTER_KEY)]
    NotMirrored(RepoName),
    #[error(transparent)]
    Settings(#[from] StoreError),
    #[error("cannot start a runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// A runtime for asking a master over ssh from a synchronous command: one thread is enough,
/// since the work is waiting on ssh.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// `request-push REPO`: on the master, push to every slave now (through the daemon); on a
/// slave, ask the master to push to this server.
pub(crate) fn request(
    home: &Home,
    config: &Arc<ServerConfig>,
    repo: &RepoName,
) -> Result<Report, RequestError> {
    let path = Store::new(home.repositories())
        .find(repo)
        .ok_or_else(|| RequestError::NoRepo(repo.clone()))?;
    let rule =
        repo::mirror_config(&path)?.ok_or_else(|| RequestError::NotMirrored(repo.clone()))?;
    if rule.is_master(&config.hostname) {
        let answer = client::ask(
            home,
            &config.hostname,
            &Request::Compare(repo.clone()),
            None,
            None,
        )?;
        return Ok(Report::new(
            &config.hostname,
            Some(repo),
            &rule.slaves,
            &answer.results,
        ));
    }
    let runtime = runtime().map_err(RequestError::Runtime)?;
    Ok(runtime.block_on(ask_master(home, config.clone(), repo, &rule.master)))
}

/// `request-push --all`: every repo this server masters.
pub(crate) fn request_all(
    home: &Home,
    config: &ServerConfig,
    seen: &mut dyn FnMut(&SlaveResult),
) -> Result<Report, RequestError> {
    let answer = client::ask_seeing(home, &config.hostname, &Request::All, None, None, seen)?;
    Ok(Report::new(&config.hostname, None, &[], &answer.results))
}

/// `verify REPO | --all [--repair]` on a master: the daemon's answer, a `Verified` line per
/// repo and slave, then with `repair` a `Done`/`Fail` per repair push.
pub(crate) fn verify(
    home: &Home,
    repo: Option<&RepoName>,
    repair: bool,
    seen: &mut dyn FnMut(&Reply),
) -> Result<Vec<Reply>, RequestError> {
    let ask = Request::Verify {
        repo: repo.cloned(),
        repair,
    };
    Ok(client::ask_replies_seeing(home, &ask, seen)?)
}

/// On the master, for a slave's peer session: push `repo` to that slave now.
pub(crate) fn request_for(
    home: &Home,
    config: &ServerConfig,
    repo: &RepoName,
    slave: &AccountName,
) -> Result<Report, RequestError> {
    let ask = Request::CompareFor(repo.clone(), slave.clone());
    let answer = client::ask(home, &config.hostname, &ask, None, None)?;
    Ok(Report::new(
        &config.hostname,
        Some(repo),
        std::slice::from_ref(slave),
        &answer.results,
    ))
}

/// A sync push: the hook has queued the refs; wait for the slaves (or a quorum of them, with
/// `including` among them when named) until the deadline.
pub(crate) fn wait(
    home: &Home,
    config: &ServerConfig,
    repo: &RepoName,
    slaves: &[AccountName],
    deadline: Instant,
    quorum: Option<usize>,
    including: Option<&AccountName>,
) -> Result<Report, RequestError> {
    // Without a quorum every slave is waited for, `including` too.
    let quorum = quorum.map(|count| Quorum {
        count,
        including: including.filter(|s| slaves.contains(s)),
    });
    let answer = client::ask(
        home,
        &config.hostname,
        &Request::Wait(repo.clone()),
        Some(deadline),
        quorum,
    )?;
    let mut report = Report::new(&config.hostname, Some(repo), slaves, &answer.results);
    // Meeting the quorum is success, even with slaves still pending.
    if let Some(q) = quorum {
        report.ok = q.met(&answer.results);
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
        Ok(conn) => conn.run(&[REQUEST_PUSH_VERB, repo.as_str()]).await,
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
