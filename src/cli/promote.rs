//! `gitmirror promote REPO... | --all [--force]`: on a slave, become the master of those repos
//! (see `replicate::promote`), then push to every slave now and say how each went. Exits
//! non-zero when a repo was not promoted or a slave was not reached (it gets the push when it
//! is back).

use std::sync::Arc;

use super::{Config, Outcome, print};
use crate::daemon::{client, request};
use crate::external::downstream_sender;
use crate::home::Home;
use crate::names::RepoName;
use crate::replicate::promote::{self, Promoted};
use crate::repo::Store;
use crate::repo::mastership;
use crate::ssh::Pool;

pub(super) fn run(
    home: &Home,
    config: Config,
    repos: &[String],
    all: bool,
    force: bool,
) -> Outcome {
    let config = Arc::new(config.map_err(|e| e.to_string())?);
    let repos: Vec<RepoName> = if all {
        slave_repos(home, &config.hostname)?
    } else {
        repos
            .iter()
            .map(|r| RepoName::parse(r).map_err(|e| format!("bad repo name {r:?}: {e}")))
            .collect::<Result<_, _>>()?
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let pool = Pool::new(home.clone(), config.clone());
    let mut ok = true;
    let mut out = String::new();
    for repo in &repos {
        match runtime.block_on(promote::promote(home, &config, &pool, repo, force)) {
            Ok(p) => {
                out.push_str(&describe(&p));
                // The downstreams are this server's to push to now.
                match downstream_sender::queue_all(home, repo) {
                    Ok(0) => {}
                    Ok(n) => {
                        let _ = client::notify_downstream(home, repo);
                        out.push_str(&format!("{repo}: {n} downstream(s) queued\n"));
                    }
                    Err(e) => out.push_str(&format!("{repo}: downstreams not queued: {e}\n")),
                }
                // Push now; a slave that cannot be reached gets it when it is back.
                match request::request(home, &config, repo) {
                    Ok(report) => {
                        ok &= report.ok;
                        out.push_str(&report.text());
                    }
                    Err(e) => {
                        ok = false;
                        out.push_str(&format!("{repo}: pushes queued, not yet done: {e}\n"));
                    }
                }
            }
            Err(e) => {
                ok = false;
                out.push_str(&format!("not promoted: {e}\n"));
            }
        }
    }
    runtime.block_on(pool.close());
    print(&out)?;
    if ok {
        Ok(())
    } else {
        Err("not every repo was promoted and pushed to every slave".into())
    }
}

/// Every repo this server is a slave of; a repo whose settings cannot be read is an error,
/// not a repo with nothing to do.
fn slave_repos(home: &Home, this: &crate::names::AccountName) -> Result<Vec<RepoName>, String> {
    let store = Store::new(home.repositories());
    let mut repos = Vec::new();
    for r in store.list().map_err(|e| e.to_string())? {
        let Some(path) = store.find(&r) else {
            continue;
        };
        match mastership::mastership(&path) {
            Ok(Some(m)) if m.master != *this && m.slaves.contains(this) => repos.push(r),
            Ok(_) => {}
            Err(e) => return Err(format!("{r}: {e}")),
        }
    }
    Ok(repos)
}

fn describe(p: &Promoted) -> String {
    let m = &p.mastership;
    let mut text = if p.already {
        format!(
            "{}: {} masters it already at epoch {}\n",
            p.repo, m.master, m.epoch
        )
    } else {
        format!(
            "promoted {}: {} masters it now at epoch {} (slaves: {})\n",
            p.repo,
            m.master,
            m.epoch,
            m.slaves
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if let Some(from) = &p.caught_up_from {
        text.push_str(&format!("  caught up from {from} first\n"));
    }
    for r in &p.orphaned {
        text.push_str(&format!(
            "  kept {r} as an orphaned ref (gitmirror orphans {})\n",
            p.repo
        ));
    }
    for (server, why) in &p.unreachable {
        text.push_str(&format!(
            "  {server} unreachable ({why}): it learns of the new master when it is back\n"
        ));
    }
    for server in &p.forced_past {
        text.push_str(&format!(
            "  {server} had commits this server lacks: forced; the first push keeps them there as orphaned refs\n"
        ));
    }
    text
}
