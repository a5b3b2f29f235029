//! `gitmirror status [REPO] [--json]`: how far behind each slave is, and why; and per repo,
//! this server's role in it, its master and epoch, and the orphaned refs kept here.
//!
//! Read from the durable queue and the repos' own files, so it tells the truth whether or
//! not the daemon runs. The exit status is for monitoring: non-zero when a slave has been
//! behind longer than `mirror.alert_after_secs`, or when a repo holds orphaned refs (see
//! [`needs_attention`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use thiserror::Error;
use tracing::warn;

use super::queue::{Queue, QueueError, Record, now};
use crate::config::ServerConfig;
use crate::home::Home;
use crate::names::RepoName;
use crate::proto::ORPHANED_NS;
use crate::repo::mastership::{self, Mastership};
use crate::repo::orphans;
use crate::repo::{Store, StoreError};

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

/// One repo on this server.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RepoRow {
    pub(crate) repo: String,
    /// `master` (this server), `slave` (another server masters it), `local` (not mirrored),
    /// or `unknown` (its mirror settings cannot be read; `error` says why).
    pub(crate) role: &'static str,
    pub(crate) master: Option<String>,
    /// The mastership epoch (0 until a promotion); none for a local repo.
    pub(crate) epoch: Option<u64>,
    /// The refs kept here when a change of master overwrote them, waiting for an
    /// administrator (`gitmirror orphans`).
    pub(crate) orphaned: Vec<OrphanRow>,
    /// What could not be read about this repo.
    pub(crate) error: Option<String>,
}

/// One orphaned ref, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OrphanRow {
    #[serde(rename = "ref")]
    pub(crate) name: String,
    /// The object the ref holds (a commit, or an annotated tag).
    pub(crate) commit: String,
}

/// What `status` reports: a row per slave of each repo mastered here, a row per repo.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) slaves: Vec<Row>,
    pub(crate) repos: Vec<RepoRow>,
}

/// The rows for every slave of every repo this server masters, and for every repo here (or
/// for `only`).
pub(crate) fn collect(
    home: &Home,
    config: &ServerConfig,
    only: Option<&RepoName>,
) -> Result<Report, StatusError> {
    let store = Store::new(home.repositories());
    let queue = Queue::new(home.queue_dir());
    let repos = match only {
        Some(r) if store.find(r).is_none() => return Err(StatusError::NoRepo(r.clone())),
        Some(r) => vec![r.clone()],
        None => store.list()?,
    };
    let mut rows = Vec::new();
    let mut repo_rows = Vec::new();
    for repo in &repos {
        let Some(path) = store.find(repo) else {
            continue;
        };
        let settings = mastership::mastership(&path);
        repo_rows.push(repo_row(repo, &path, &settings, config));
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
        let (slaves, unreadable) = match settings {
            Ok(Some(m)) if m.master == config.hostname => {
                (m.slaves.iter().map(ToString::to_string).collect(), unqueued)
            }
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
    Ok(Report {
        slaves: rows,
        repos: repo_rows,
    })
}

/// The repo's row: its mastership as read (`settings`), and its orphaned refs.
fn repo_row(
    repo: &RepoName,
    path: &std::path::Path,
    settings: &Result<Option<Mastership>, StoreError>,
    config: &ServerConfig,
) -> RepoRow {
    let mut row = RepoRow {
        repo: repo.to_string(),
        role: "local",
        master: None,
        epoch: None,
        orphaned: Vec::new(),
        error: None,
    };
    match settings {
        Ok(Some(m)) => {
            row.role = if m.master == config.hostname {
                "master"
            } else {
                "slave"
            };
            row.master = Some(m.master.to_string());
            row.epoch = Some(m.epoch);
        }
        Ok(None) => {}
        Err(e) => {
            row.role = "unknown";
            row.error = Some(format!("cannot read the mirror settings: {e}"));
        }
    }
    // Read for every repo, local ones too: a repo that stopped being mirrored keeps them.
    match orphans::orphans(path) {
        Ok(found) => {
            row.orphaned = found
                .into_iter()
                .map(|o| OrphanRow {
                    name: o.name,
                    commit: o.target.to_string(),
                })
                .collect();
        }
        Err(e) => {
            warn!(%repo, error = %e, "cannot read the orphaned refs");
            let why = format!("cannot read its orphaned refs: {e}");
            row.error = Some(match row.error.take() {
                Some(first) => format!("{first}; {why}"),
                None => why,
            });
        }
    }
    row
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

/// Whether a repo needs an administrator: it holds orphaned refs (nothing resolves them but
/// a person), or what it holds cannot be read (so nobody can tell).
pub(crate) fn needs_attention(repos: &[RepoRow]) -> bool {
    repos
        .iter()
        .any(|r| !r.orphaned.is_empty() || r.error.is_some())
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

/// The repos as a table, then a line for each repo that holds orphaned refs or could not be
/// read: the count and the command that lists them, where an administrator cannot miss it.
pub(crate) fn repo_table(repos: &[RepoRow]) -> String {
    if repos.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{:<24} {:<8} {:<12} {:>6} {:>8}\n",
        "REPO", "ROLE", "MASTER", "EPOCH", "ORPHANED"
    );
    for r in repos {
        let line = format!(
            "{:<24} {:<8} {:<12} {:>6} {:>8}",
            r.repo,
            r.role,
            r.master.as_deref().unwrap_or("-"),
            r.epoch.map_or("-".to_string(), |e| e.to_string()),
            r.orphaned.len()
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One line per repo that needs an administrator (see [`needs_attention`]).
pub(crate) fn attention_lines(repos: &[RepoRow]) -> String {
    let mut out = String::new();
    for r in repos {
        let n = r.orphaned.len();
        if n > 0 {
            out.push_str(&format!(
                "ORPHANED: {}: {n} ref{} kept under {ORPHANED_NS} after a change of master; \
                 list with: gitmirror orphans {}\n",
                r.repo,
                if n == 1 { "" } else { "s" },
                r.repo
            ));
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("UNREADABLE: {}: {e}\n", r.repo));
        }
    }
    if !out.is_empty() {
        out.insert(0, '\n');
    }
    out
}

/// The report as JSON, with the time it was made and what the last verify of each slave
/// found (`verified`, see `verify::record`).
pub(crate) fn json(report: &Report, verified: &impl Serialize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    serde_json::json!({
        "now": now,
        "slaves": report.slaves,
        "repos": report.repos,
        "verified": verified,
    })
    .to_string()
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
        let rows = collect(&f.home, &f.config, None).unwrap().slaves;
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
        let rows = collect(home, config, None).unwrap().slaves;
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
        let rows = collect(home, config, None).unwrap().slaves;
        assert!(
            rows.iter()
                .any(|r| r.repo == "gone" && r.slave == "server2"),
            "{rows:?}"
        );
    }

    #[test]
    fn each_repo_shows_its_role_master_epoch_and_orphaned_refs() {
        let f = fixture(
            "[core]\n\tbare = true\n[gitolite \"mirror\"]\n\tmaster = server2\n\tslaves = server1\n[gitmirror]\n\tepoch = 3\n",
        );
        let (home, config) = (&f.home, &f.config);
        let solo = home.repositories().join("solo.git");
        git2::Repository::init_bare(&solo).unwrap();
        let report = collect(home, config, None).unwrap();
        // A slave here: no slave rows, and nothing wants a person yet.
        assert!(report.slaves.is_empty(), "{:?}", report.slaves);
        let roles: Vec<(&str, &str, Option<&str>, Option<u64>)> = report
            .repos
            .iter()
            .map(|r| (r.repo.as_str(), r.role, r.master.as_deref(), r.epoch))
            .collect();
        assert_eq!(
            roles,
            [
                ("solo", "local", None, None),
                ("testing", "slave", Some("server2"), Some(3))
            ]
        );
        assert!(!needs_attention(&report.repos));
        assert_eq!(attention_lines(&report.repos), "");
        // A ref kept after a change of master.
        let git = git2::Repository::open_bare(home.repositories().join("testing.git")).unwrap();
        let sig = git2::Signature::now("a", "a@example.com").unwrap();
        let tree = git.treebuilder(None).unwrap().write().unwrap();
        let tree = git.find_tree(tree).unwrap();
        let lost = git.commit(None, &sig, &sig, "lost", &tree, &[]).unwrap();
        git.reference("refs/gitmirror/orphaned/3/heads/main", lost, false, "t")
            .unwrap();
        let report = collect(home, config, Some(&f.repo)).unwrap();
        assert_eq!(report.repos.len(), 1);
        let orphaned: Vec<(&str, String)> = report.repos[0]
            .orphaned
            .iter()
            .map(|o| (o.name.as_str(), o.commit.clone()))
            .collect();
        assert_eq!(
            orphaned,
            [("refs/gitmirror/orphaned/3/heads/main", lost.to_string())]
        );
        assert!(needs_attention(&report.repos));
        let table = repo_table(&report.repos);
        let row: Vec<&str> = table.lines().last().unwrap().split_whitespace().collect();
        assert_eq!(row, ["testing", "slave", "server2", "3", "1"], "{table}");
        assert_eq!(
            attention_lines(&report.repos),
            "\nORPHANED: testing: 1 ref kept under refs/gitmirror/orphaned/ after a change of \
             master; list with: gitmirror orphans testing\n"
        );
        let json: serde_json::Value = serde_json::from_str(&json(&report, &())).unwrap();
        assert_eq!(
            json["repos"][0]["orphaned"][0]["ref"],
            "refs/gitmirror/orphaned/3/heads/main"
        );
        assert_eq!(json["repos"][0]["orphaned"][0]["commit"], lost.to_string());
        // Settings that cannot be read: the role is unknown, and that wants a person too.
        std::fs::write(home.repositories().join("testing.git/config"), BROKEN).unwrap();
        let report = collect(home, config, Some(&f.repo)).unwrap();
        assert_eq!(report.repos[0].role, "unknown");
        let error = report.repos[0].error.as_deref().unwrap_or("");
        assert!(
            error.starts_with("cannot read the mirror settings: "),
            "{error}"
        );
        assert!(attention_lines(&report.repos).contains("UNREADABLE: testing: "));
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
        let rows = collect(home, config, None).unwrap().slaves;
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
        let rows = collect(home, config, None).unwrap().slaves;
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
