//! `gitmirror status [REPO] [--json]`: the queue, and per repo this server's role, master,
//! epoch and orphaned refs, as tables or JSON. Exits 2, for monitoring, when a slave has been
//! behind longer than `mirror.alert_after_secs`, or when a repo holds orphaned refs (or
//! cannot be read): both wait for a person, and orphaned refs stay until one drops them. A
//! delete, rename or restore a slave has not applied gets an `OP:` line (and exits 2 past the
//! same threshold). A push mirror (downstream) that is behind or failing gets a `DOWNSTREAM:`
//! line, one whose refs diverged a `DIVERGED:` line (and exits 2 when behind past the
//! threshold); `--json` lists every downstream under `downstreams`.

use std::process::ExitCode;

use super::{Cmd, Config, fail, print};
use crate::admin::admin_repo::ADMIN_REPO;
use crate::admin::admin_repo::apply::AppliedRecord;
use crate::external::downstream_queue::{DownstreamQueue, DownstreamRecord};
use crate::external::upstream_record::{UpstreamRecord, UpstreamRecords};
use crate::external::upstream_scheduler::pull_mirrors;
use crate::home::Home;
use crate::names::RepoName;
use crate::replicate::op_queue::{OpQueue, OpRecord};
use crate::replicate::status;
use crate::replicate::verify::record;

pub(super) fn run(
    cmd: &Cmd,
    home: &Home,
    config: Config,
    repo: Option<&str>,
    json: bool,
    log: bool,
) -> ExitCode {
    let run = || -> Result<Vec<&'static str>, String> {
        let config = config.map_err(|e| e.to_string())?;
        let repo = repo
            .map(|r| RepoName::parse(r).map_err(|e| format!("bad repo name: {e}")))
            .transpose()?;
        let report = status::collect(home, &config, repo.as_ref()).map_err(|e| e.to_string())?;
        // What the last verify found is extra: unreadable, it is logged, not fatal.
        let verified = record::load(home).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the verify record");
            record::Verified::default()
        });
        let admin = AppliedRecord::load(home);
        if log {
            let Some(repo) = &repo else {
                return Err("--log needs a repo: gitmirror status REPO --log".into());
            };
            let text = UpstreamRecords::of(home).log(repo).ok_or_else(|| {
                format!("{repo}: no fetch log (not a pull mirror fetched here, or not fetched yet)")
            })?;
            print(&text)?;
            return Ok(Vec::new());
        }
        let upstreams: Vec<(RepoName, String, UpstreamRecord)> =
            pull_mirrors(home, &config.hostname)
                .into_iter()
                .filter(|(r, _)| repo.as_ref().is_none_or(|only| only == r))
                .map(|(r, u)| {
                    let record = UpstreamRecords::of(home).load(&r);
                    (r, u.url.url, record)
                })
                .collect();
        let ops = OpQueue::new(home.ops_dir()).load_all().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the store operations queue");
            Vec::new()
        });
        let downstreams: Vec<DownstreamRecord> =
            DownstreamQueue::in_external_dir(home.external_dir())
                .load_all()
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the downstream queue");
                    Vec::new()
                })
                .into_iter()
                .filter(|r| repo.as_ref().is_none_or(|want| want.as_str() == r.repo))
                .collect();
        let text = if json {
            let text = status::json(&report, &verified.slaves);
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(mut value) => {
                    value["admin"] = serde_json::to_value(&admin).unwrap_or_default();
                    value["ops"] = serde_json::to_value(&ops).unwrap_or_default();
                    value["upstreams"] = upstreams
                        .iter()
                        .map(|(r, url, rec)| {
                            serde_json::json!({"repo": r.as_str(), "url": url, "state": rec})
                        })
                        .collect();
                    value["downstreams"] = downstream_json(&downstreams);
                    value.to_string() + "\n"
                }
                Err(_) => text + "\n",
            }
        } else {
            status::table(&report.slaves)
                + &status::repo_table(&report.repos)
                + &record::table(&verified)
                + &status::attention_lines(&report.repos)
                + &admin_line(&admin)
                + &ops_lines(&ops)
                + &upstream_lines(&upstreams)
                + &downstream_lines(&downstreams)
        };
        print(&text)?;
        let mut alerts = Vec::new();
        if status::alarming(&report.slaves, config.mirror.alert_after_secs) {
            alerts.push("a slave has been behind longer than mirror.alert_after_secs");
        }
        if status::needs_attention(&report.repos) {
            alerts.push("orphaned refs (or unreadable repos) wait for an administrator");
        }
        let now = crate::replicate::queue::now();
        if ops
            .iter()
            .any(|r| now - r.created > config.mirror.alert_after_secs)
        {
            alerts.push("a delete, rename or restore has waited for a slave longer than mirror.alert_after_secs");
        }
        if upstreams.iter().any(|(_, _, r)| {
            r.failures > 0
                && now - r.last_success.or(r.last_attempt).unwrap_or(now)
                    > config.mirror.alert_after_secs
        }) {
            alerts
                .push("a pull mirror has failed to fetch for longer than mirror.alert_after_secs");
        }
        if downstreams.iter().any(|r| {
            r.remotes.values().any(|e| {
                e.pending
                    .as_ref()
                    .is_some_and(|p| now - p.since > config.mirror.alert_after_secs)
            })
        }) {
            alerts.push("a downstream has been behind longer than mirror.alert_after_secs");
        }
        if admin.failed.is_some() {
            alerts.push("the admin repo's last accepted commit is not applied here");
        }
        Ok(alerts)
    };
    match run() {
        Ok(alerts) if alerts.is_empty() => ExitCode::SUCCESS,
        Ok(alerts) => {
            for alert in alerts {
                eprintln!("gitmirror: {alert}");
            }
            ExitCode::from(2)
        }
        Err(e) => fail(cmd, &e),
    }
}

/// An `UPSTREAM` line per pull mirror fetched here: when it last fetched, or why it fails;
/// then what the last fetch left for a person (diverged refs, deletions held back).
fn upstream_lines(upstreams: &[(RepoName, String, UpstreamRecord)]) -> String {
    let mut out = String::new();
    for (repo, url, r) in upstreams {
        let when =
            |t: Option<f64>| t.map_or("never".to_string(), |t| format!("{} ago", status::age(t)));
        let state = match (&r.last_error, r.failures) {
            (Some(e), n) if n > 0 => format!(
                "FAILING ({n} attempts since the last success, {}; last attempt {}): {e}",
                when(r.last_success),
                when(r.last_attempt)
            ),
            _ => format!(
                "fetched {}{}",
                when(r.last_success),
                r.millis.map(|m| format!(" in {m} ms")).unwrap_or_default()
            ),
        };
        out.push_str(&format!("UPSTREAM {repo} <- {url}: {state}\n"));
        if let Some(last) = &r.last {
            for d in &last.diverged {
                let how = match &d.kept_as {
                    Some(k) => format!("overwritten, ours kept as {k}"),
                    None => "ours kept".to_string(),
                };
                out.push_str(&format!(
                    "    diverged {}: ours {}, upstream {} ({how})\n",
                    d.name, d.ours, d.theirs
                ));
            }
            if let Some(g) = &last.guarded {
                out.push_str(&format!("    deletions held back: {g}\n"));
            }
        }
    }
    out
}

/// An `OP:` line per store operation (delete, rename, ...) a slave has not applied yet.
fn ops_lines(ops: &[OpRecord]) -> String {
    let mut out = String::new();
    for r in ops {
        for (slave, p) in &r.slaves {
            let why = match &p.last_error {
                Some(e) => format!("{} attempts, last: {e}", p.attempts),
                None => "not tried yet".to_string(),
            };
            out.push_str(&format!(
                "OP {}: {} not yet applied on {slave} (queued {} ago; {why})\n",
                r.seq,
                r.op.describe(),
                status::age(r.created)
            ));
        }
    }
    out
}

/// Every downstream of every repo, in sync or not, for `--json`.
fn downstream_json(records: &[DownstreamRecord]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = records
        .iter()
        .flat_map(|r| {
            r.remotes.iter().map(|(url, e)| {
                let p = e.pending.as_ref();
                let state = match p {
                    None => "in sync",
                    Some(p) if p.last_error.is_some() => "failing",
                    Some(_) => "pending",
                };
                serde_json::json!({
                    "repo": r.repo,
                    "url": url,
                    "state": state,
                    "since": p.map(|p| p.since),
                    "attempts": p.map_or(0, |p| p.attempts),
                    "last_error": p.and_then(|p| p.last_error.clone()),
                    "next_attempt": p.map(|p| p.next_attempt),
                    "last_attempt": e.last_attempt,
                    "last_success": e.last_success,
                    "diverged": e.diverged,
                })
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// A `DOWNSTREAM:` line per push mirror that is behind or failing, a `DIVERGED:` line per one
/// whose refs went their own way there (left alone, `divergence = "keep"`).
fn downstream_lines(records: &[DownstreamRecord]) -> String {
    let mut out = String::new();
    for r in records {
        for (url, e) in &r.remotes {
            if let Some(p) = &e.pending {
                let why = match &p.last_error {
                    Some(err) => format!(
                        "failing, {} attempts, last {}: {err}",
                        p.attempts,
                        status::format_time(e.last_attempt)
                    ),
                    None => "not tried yet".to_string(),
                };
                out.push_str(&format!(
                    "DOWNSTREAM: {} -> {url}: behind for {} ({why}); last success: {}\n",
                    r.repo,
                    status::age(p.since),
                    status::format_time(e.last_success)
                ));
            }
            if !e.diverged.is_empty() {
                out.push_str(&format!(
                    "DIVERGED: {} -> {url}: changed there, left alone: {}\n",
                    r.repo,
                    e.diverged.join(", ")
                ));
            }
        }
    }
    out
}

/// An `ADMIN:` line when an accepted commit of the admin repo could not be applied: the
/// server may run on an older configuration than the one its administrators pushed.
fn admin_line(admin: &AppliedRecord) -> String {
    match &admin.failed {
        Some(f) => format!(
            "ADMIN: {ADMIN_REPO} {} was accepted {} ago but is not applied here: {}; fix it and push again, or run `gitmirror compile`\n",
            f.commit,
            status::age(f.at),
            f.error
        ),
        None => String::new(),
    }
}
