//! `gitmirror status [REPO] [--json]`: how far behind each slave is, and why.
//!
//! Read from the durable queue, so it tells the truth whether or not the daemon runs. The
//! exit status is for monitoring: non-zero when a slave has been behind longer than
//! `mirror.alert_after_secs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use thiserror::Error;
use tracing::warn;

use super::queue::{Queue, QueueError, Record, now};
use crate::config::ServerConfig;
use crate::home::Home;
use crate::names::RepoName;
use crate::repo::{self, Store, StoreError};

/// What can stop `status`.
#[derive(Debug, Error)]
pub(crate) enum StatusError {
    #[error("{0}: no such repo here")]
    NoRepo(RepoName),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One slave of one repo.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) repo: String,
    pub(crate) slave: String,
    /// `in sync`, `pending` (queued, not failed yet), `failing`, or `never synced` (it has
    /// never confirmed any state: a new slave, or a repo not pushed to it yet).
    pub(crate) state: &'static str,
    /// When it fell behind (seconds since the epoch).
    pub(crate) pending_since: Option<f64>,
    /// Failed attempts since then.
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) last_success: Option<f64>,
    /// The last divergence the slave reported (its own refs, kept under refs/gitmirror/diverged).
    pub(crate) last_diverged: Option<String>,
}

/// The rows for every slave of every repo this server masters (or of `only`).
pub(crate) fn collect(
    home: &Home,
    config: &ServerConfig,
    only: Option<&RepoName>,
) -> Result<Vec<Row>, StatusError> {
    let store = Store::new(home.repositories());
    let queue = Queue::new(home.queue_dir());
    let repos = match only {
        Some(r) if store.find(r).is_none() => return Err(StatusError::NoRepo(r.clone())),
        Some(r) => vec![r.clone()],
        None => store.list()?,
    };
    let mut rows = Vec::new();
    for repo in &repos {
        let Some(path) = store.find(repo) else {
            continue;
        };
        // A record that cannot be read (not corrupt: unreadable) fails this repo's rows,
        // never the whole report.
        let (record, unqueued) = match queue.load(repo) {
            Ok(record) => (record, None),
            Err(e) => {
                warn!(%repo, error = %e, "cannot read the queue");
                (
                    Record::default(),
                    Some(format!("cannot read the queue: {e}")),
                )
            }
        };
        // Settings that cannot be read hide nothing: the slaves the queue knows are shown as
        // failing, with that reason unless the replicator recorded one.
        let (slaves, unreadable) = match repo::mirror_config(&path) {
            Ok(Some(rule)) if rule.is_master(&config.hostname) => (
                rule.slaves.iter().map(ToString::to_string).collect(),
                unqueued,
            ),
            Ok(_) => continue,
            Err(e) => {
                warn!(%repo, error = %e, "cannot read the repo's mirror settings");
                let known: Vec<String> = record.slaves.keys().cloned().collect();
                let known = if known.is_empty() {
                    vec!["-".to_string()]
                } else {
                    known
                };
                (known, Some(format!("cannot tell this repo's slaves: {e}")))
            }
        };
        for slave in &slaves {
            let mut row = row_of(repo.as_str(), slave, &record);
            if let Some(why) = &unreadable {
                row.state = "failing";
                row.last_error.get_or_insert_with(|| why.clone());
            }
            rows.push(row);
        }
    }
    // Work still owed for repos no longer on disk (moved away, deleted): shown, not hidden.
    if only.is_none() {
        let listed: std::collections::HashSet<&RepoName> = repos.iter().collect();
        let owed = queue.repos().unwrap_or_else(|e| {
            warn!(error = %e, "cannot list the queue");
            Vec::new()
        });
        for repo in owed.iter().filter(|r| !listed.contains(r)) {
            let Ok(record) = queue.load(repo) else {
                continue;
            };
            for (slave, entry) in &record.slaves {
                if entry.pending.is_some() {
                    rows.push(row_of(&record.repo, slave, &record));
                }
            }
        }
    }
    Ok(rows)
}

/// One slave's row, from its queue entry.
fn row_of(repo: &str, slave: &str, record: &Record) -> Row {
    let entry = record.slaves.get(slave).cloned().unwrap_or_default();
    let p = entry.pending.as_ref();
    let never = entry.confirmed.is_none() && entry.last_success.is_none();
    Row {
        repo: repo.to_string(),
        slave: slave.to_string(),
        state: match p {
            Some(p) if p.attempts > 0 => "failing",
            _ if never => "never synced",
            Some(_) => "pending",
            None => "in sync",
        },
        pending_since: p.map(|p| p.since),
        attempts: p.map_or(0, |p| p.attempts),
        last_error: p.and_then(|p| p.last_error.clone()),
        last_success: entry.last_success,
        last_diverged: entry.last_diverged,
    }
}

/// Whether any slave has been behind longer than `threshold_secs`. One that is not in sync
/// with nothing queued (never synced, or its repo's settings unreadable) counts at once:
/// nobody knows since when.
pub(crate) fn alarming(rows: &[Row], threshold_secs: f64) -> bool {
    let t = now();
    rows.iter().any(|r| match r.pending_since {
        Some(since) => t - since > threshold_secs,
        None => r.state != "in sync",
    })
}

/// How long ago `since` was, for people: `3m 12s`.
pub(crate) fn age(since: f64) -> String {
    let secs = (now() - since).max(0.0).round() as u64;
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// A time from the queue for people; one out of any sane range (a record edited by hand)
/// reads as `invalid` instead of stopping `status`.
pub(crate) fn format_time(t: Option<f64>) -> String {
    let Some(t) = t else {
        return "-".to_string();
    };
    Duration::try_from_secs_f64(t)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .filter(|st| {
            st.duration_since(UNIX_EPOCH)
                .is_ok_and(|d| d.as_secs() < 253_402_300_800)
        })
        .map_or("invalid".to_string(), |st| {
            humantime::format_rfc3339_seconds(st).to_string()
        })
}

/// The rows as a table.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<24} {:<12} {:<12} {:<20} {:>8} {:<20} {}\n",
        "REPO", "SLAVE", "STATE", "PENDING SINCE", "ATTEMPTS", "LAST SUCCESS", "LAST ERROR"
    );
    for r in rows {
        let mut error = r.last_error.clone().unwrap_or_else(|| "-".into());
        if let Some(d) = &r.last_diverged {
            error.push_str(&format!(" (diverged: {d})"));
        }
        out.push_str(&format!(
            "{:<24} {:<12} {:<12} {:<20} {:>8} {:<20} {}\n",
            r.repo,
            r.slave,
            r.state,
            format_time(r.pending_since),
            r.attempts,
            format_time(r.last_success),
            error
        ));
    }
    out
}

/// The rows as JSON, with the time the report was made and what the last verify of each
/// slave found (`verified`, see `verify::record`).
pub(crate) fn json(rows: &[Row], verified: &impl Serialize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    serde_json::json!({ "now": now, "slaves": rows, "verified": verified }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use crate::names::AccountName;

    /// A home with one repo, `testing`, whose git config is `git_config`, its queue, and
    /// server1's configuration.
    struct Fixture {
        _dir: tempfile::TempDir,
        home: Home,
        repo: RepoName,
        queue: Queue,
        config: ServerConfig,
    }

    fn fixture(git_config: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(dir.path()), false).unwrap();
        let path = home.repositories().join("testing.git");
        git2::Repository::init_bare(&path).unwrap();
        std::fs::write(path.join("config"), git_config).unwrap();
        let config =
            ServerConfig::from_source(&Source::from_text("g.toml", "hostname = \"server1\"\n"))
                .unwrap();
        Fixture {
            queue: Queue::new(home.queue_dir()),
            repo: RepoName::parse("testing").unwrap(),
            _dir: dir,
            home,
            config,
        }
    }

    /// A hand edit that git config cannot parse.
    const BROKEN: &str = "[gitolite \"mirror\"\n";

    #[test]
    fn unreadable_settings_show_the_slaves_the_queue_knows() {
        let f = fixture("[core]\n\tbare = true\n");
        let slave = AccountName::parse("server2").unwrap();
        f.queue
            .enqueue_record(&f.repo, std::slice::from_ref(&slave))
            .unwrap();
        f.queue
            .failed(
                &f.repo,
                &slave,
                "cannot tell this repo's slaves",
                &crate::replicate::queue::Backoff::from_config(&Default::default()),
            )
            .unwrap();
        // A hand edit broke the repo's config.
        std::fs::write(f.home.repositories().join("testing.git/config"), BROKEN).unwrap();
        let rows = collect(&f.home, &f.config, None).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].slave.as_str(), rows[0].state),
            ("server2", "failing")
        );
        assert!(alarming(&rows, -1.0));
    }

    fn row(state: &'static str, pending_since: Option<f64>) -> Row {
        Row {
            repo: "r".into(),
            slave: "s".into(),
            state,
            pending_since,
            attempts: 0,
            last_error: None,
            last_success: None,
            last_diverged: None,
        }
    }

    #[test]
    fn unreadable_settings_with_nothing_recorded_still_fail_and_alert() {
        let f = fixture("[core]\n\tbare = true\n");
        let s2 = AccountName::parse("server2").unwrap();
        f.queue
            .enqueue_record(&f.repo, std::slice::from_ref(&s2))
            .unwrap();
        f.queue.succeeded(&f.repo, &s2, 1, None, "f").unwrap();
        std::fs::write(f.home.repositories().join("testing.git/config"), BROKEN).unwrap();
        let (home, config, queue) = (&f.home, &f.config, &f.queue);
        let rows = collect(home, config, None).unwrap();
        assert_eq!(
            (rows[0].slave.as_str(), rows[0].state),
            ("server2", "failing")
        );
        let error = rows[0].last_error.as_deref().unwrap_or("");
        assert!(
            error.starts_with("cannot tell this repo's slaves: "),
            "{error}"
        );
        assert!(alarming(&rows, 600.0));
        // A repo gone from disk with work still owed is shown too.
        let gone = RepoName::parse("gone").unwrap();
        queue
            .enqueue_record(&gone, std::slice::from_ref(&s2))
            .unwrap();
        let rows = collect(home, config, None).unwrap();
        assert!(
            rows.iter()
                .any(|r| r.repo == "gone" && r.slave == "server2"),
            "{rows:?}"
        );
    }

    #[test]
    fn a_slave_that_never_synced_is_not_in_sync_and_alerts() {
        let f = fixture(
            "[core]\n\tbare = true\n[gitolite \"mirror\"]\n\tmaster = server1\n\tslaves = server2 server3\n",
        );
        let s2 = AccountName::parse("server2").unwrap();
        // server2 is queued and has never confirmed; server3 is not even queued.
        f.queue
            .enqueue_record(&f.repo, std::slice::from_ref(&s2))
            .unwrap();
        let (home, config) = (&f.home, &f.config);
        let rows = collect(home, config, None).unwrap();
        let states: Vec<(&str, &str)> = rows.iter().map(|r| (r.slave.as_str(), r.state)).collect();
        assert_eq!(
            states,
            [("server2", "never synced"), ("server3", "never synced")]
        );
        // Queued a moment ago: not yet past the threshold. Not queued at all: alerts.
        assert!(!alarming(&rows[..1], 600.0));
        assert!(alarming(&rows[1..], 600.0));
        assert!(!alarming(&[row("in sync", None)], 600.0));
        assert!(table(&rows).contains("never synced"));
        // An unreadable record (not corrupt) fails that repo's rows, not the report.
        let file = home.queue_dir().join("testing.json");
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        let rows = collect(home, config, None).unwrap();
        assert!(rows.iter().all(|r| r.state == "failing"), "{rows:?}");
        let error = rows[0].last_error.as_deref().unwrap_or("");
        assert!(error.starts_with("cannot read the queue: "), "{error}");
        std::fs::remove_dir(&file).unwrap();
        // Times out of any range (a record edited by hand) do not stop the table.
        let mut odd = row("failing", Some(1e300));
        odd.last_success = Some(-5.0);
        let text = table(&[odd, row("pending", Some(f64::NAN))]);
        assert_eq!(text.matches("invalid").count(), 3, "{text}");
    }
}
