//! The post-receive hook on a repo's master: the accepted push becomes durable work for the
//! slaves, and for the repo's downstreams (push mirrors), before the pusher hears back, and
//! the daemon is told (or, in sync mode, waited for by the slaves; downstreams are always
//! pushed asynchronously).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::{HookError, PushedBy, RefUpdate, admin, slave};
use crate::admin::admin_repo;
use crate::config::{Rules, ServerConfig};
use crate::daemon::{client, request};
use crate::external::downstream_queue::DownstreamQueue;
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::replicate::queue::{Queue, Record};
use crate::replicate::status;
use crate::repo::{self, Store};

/// The post-receive step. Logs each accepted update; then, on the repo's master, queues the
/// push for every slave durably (fsynced before the pusher hears back) and has the daemon
/// carry it out: waiting for the slaves in sync mode (with a quorum, for the slave a
/// redirected push came through as well), not in async mode. On a slave (a push
/// from the master) it hands over to [`slave::received`]. Returns the lines the pusher should
/// see.
pub(crate) fn post_receive(
    home: &Home,
    config: Arc<ServerConfig>,
    pusher: &PushedBy,
    updates: &[RefUpdate],
) -> Result<Vec<String>, HookError> {
    let actor = pusher.peer.as_deref().unwrap_or(&pusher.actor);
    let via = pusher.via.as_deref();
    for u in updates {
        info!(actor = %actor, via, repo = %pusher.repo, reference = %u.name, old = %u.old, new = %u.new, "ref updated");
    }
    let path = std::env::current_dir().map_err(HookError::Input)?;
    if pusher.peer.is_some() {
        let head = slave::head_option_from_env();
        let mut lines = slave::received(home, pusher, &path, head.as_deref(), updates);
        lines.extend(admin::apply_mirrored(home, pusher, &path, updates));
        return Ok(lines);
    }
    // The repo's name now: the one the push came in for, unless a rename or delete moved the
    // repo while the push was under way (then its directory's name says where it is; a repo
    // moved into the trash has no name, and nothing is queued for it).
    let store = Store::new(home.repositories());
    let named = RepoName::parse(&pusher.repo)
        .ok()
        .filter(|r| store.find(r).is_some());
    let repo = match named.or_else(|| store.name_of(&path)) {
        Some(r) => r,
        None => return Ok(Vec::new()),
    };
    // Applied before the slaves are queued: the compile may change the admin repo's own
    // mirror settings, and the push must go where the new configuration says.
    let mut lines = if admin_repo::is_admin_repo(&repo) {
        admin::apply_pushed(home, &config.hostname, &path, updates)
    } else {
        Vec::new()
    };
    let settings = match repo::mirror_config(&path) {
        Ok(settings) => settings,
        Err(source) => {
            // The refs moved but nobody can say to which slaves now: keep every slave the
            // queue knows behind, so that the daemon tries, fails visibly, and retries.
            let queue = Queue::new(home.queue_dir());
            let known: Vec<AccountName> = queue
                .load(&repo)
                .map(|r| {
                    r.slaves
                        .keys()
                        .filter_map(|s| AccountName::parse(s).ok())
                        .collect()
                })
                .unwrap_or_default();
            if !known.is_empty() && queue.enqueue_record(&repo, &known).is_ok() {
                let _ = client::notify(home, &repo);
            }
            return Err(after(lines, HookError::Settings { repo, source }));
        }
    };
    let master = settings
        .as_ref()
        .is_none_or(|rule| rule.is_master(&config.hostname));
    if master {
        lines.extend(queue_downstreams(home, &repo, &config.hostname));
    }
    let rule = match settings {
        Some(rule) if rule.is_master(&config.hostname) && !rule.slaves.is_empty() => rule,
        _ => return Ok(lines),
    };
    let queue = Queue::new(home.queue_dir());
    let record = match queue.enqueue_record(&repo, &rule.slaves) {
        Ok(r) => r,
        Err(e) => {
            // The refs have moved: have the daemon push them even though the queue could
            // not record it, and say so.
            let _ = client::notify(home, &repo);
            let error = HookError::Queue {
                repo: repo.clone(),
                source: e,
            };
            return Err(after(lines, error));
        }
    };
    lines.extend(failing_slaves(&record, &repo, &config.hostname));
    let m = &config.mirror;
    if rule.sync.unwrap_or(m.sync) {
        let diverged = |r: Record| -> Vec<(String, Option<String>)> {
            r.slaves
                .into_iter()
                .map(|(s, e)| (s, e.last_diverged))
                .collect()
        };
        let before = diverged(record);
        let deadline = Instant::now() + Duration::from_secs_f64(m.sync_timeout_secs);
        // A push carried here from a slave waits for that slave too, quorum or not: its user
        // reads from it next and must find the push there.
        let carrier = pusher
            .via
            .as_deref()
            .and_then(|v| AccountName::parse(v).ok());
        let report = request::wait(
            home,
            &config,
            &repo,
            &rule.slaves,
            deadline,
            m.sync_quorum,
            carrier.as_ref(),
        )
        .map_err(|source| HookError::Wait {
            repo: repo.clone(),
            source,
        })?;
        lines.extend(report.lines);
        for (slave, d) in queue.load(&repo).map(diverged).unwrap_or_default() {
            if let Some(d) = d.filter(|d| !before.contains(&(slave.clone(), Some(d.clone())))) {
                lines.push(format!(
                    "WARNING: {slave} had diverged from {}; the master's state won, and {slave} kept its own: {d}",
                    config.hostname
                ));
            }
        }
        return Ok(lines);
    }
    if let Err(e) = client::notify(home, &repo) {
        // The queue holds the work; the daemon picks it up whenever it runs.
        warn!(%repo, error = %e, "cannot reach the daemon; the push stays queued");
    }
    lines.extend(
        rule.slaves
            .iter()
            .map(|slave| format!("{} ==== ({repo}) ===> {slave} (async)", config.hostname)),
    );
    Ok(lines)
}

/// Queues the push for `repo`'s downstreams (push mirrors), durably, and tells the daemon;
/// returns the lines for the pusher: one per downstream, and a warning for each that has been
/// failing (or if they could not be queued: the push stands, and the slaves still get it).
/// Cheap when the repo has none: only its own rules are read.
fn queue_downstreams(home: &Home, repo: &RepoName, this: &AccountName) -> Vec<String> {
    let not_queued = |e: String| {
        error!(%repo, error = %e, "cannot queue the push for the downstreams");
        vec![format!(
            "WARNING: {this} ==== ({repo}) =X=> downstreams: not queued: {e}"
        )]
    };
    let rules = match Rules::compiled_for(home, repo) {
        Ok(r) => r,
        Err(e) => return not_queued(e.to_string()),
    };
    let urls = rules.downstream_urls(repo);
    if urls.is_empty() {
        return Vec::new();
    }
    let queue = DownstreamQueue::in_external_dir(home.external_dir());
    let record = queue.enqueue(repo, &urls);
    // Queued or not, the daemon is told: it retries what its sweep finds missing.
    if let Err(e) = client::notify_downstream(home, repo) {
        warn!(%repo, error = %e, "cannot reach the daemon; the downstream pushes stay queued");
    }
    let record = match record {
        Ok(r) => r,
        Err(e) => return not_queued(e.to_string()),
    };
    let mut lines = Vec::new();
    for url in &urls {
        let failing = record
            .remotes
            .get(*url)
            .and_then(|e| e.pending.as_ref())
            .and_then(|p| Some((p, p.last_error.as_ref()?)));
        match failing {
            Some((p, error)) => lines.push(format!(
                "WARNING: {this} ==== ({repo}) =X=> {url} has been failing for {} ({} attempts): {error}",
                status::age(p.since),
                p.attempts
            )),
            None => lines.push(format!("{this} ==== ({repo}) ===> {url} (downstream, async)")),
        }
    }
    lines
}

/// `error`, after `lines` when there are any.
fn after(lines: Vec<String>, error: HookError) -> HookError {
    if lines.is_empty() {
        error
    } else {
        HookError::AfterLines {
            lines,
            error: Box::new(error),
        }
    }
}

/// Warnings for the pusher about slaves of `repo` that have been failing.
fn failing_slaves(record: &Record, repo: &RepoName, this: &AccountName) -> Vec<String> {
    record
        .slaves
        .iter()
        .filter_map(|(slave, entry)| {
            let p = entry.pending.as_ref()?;
            let error = p.last_error.as_ref()?;
            Some(format!(
                "WARNING: {this} ==== ({repo}) =X=> {slave} has been failing for {} ({} attempts): {error}",
                status::age(p.since),
                p.attempts
            ))
        })
        .collect()
}
