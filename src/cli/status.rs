//! `gitmirror status [REPO] [--json]`: the queue, and per repo this server's role, master,
//! epoch and orphaned refs, as tables or JSON. Exits 2, for monitoring, when a slave has been
//! behind longer than `mirror.alert_after_secs`, or when a repo holds orphaned refs (or
//! cannot be read): both wait for a person, and orphaned refs stay until one drops them.

use std::process::ExitCode;

use super::{Cmd, Config, fail, print};
use crate::home::Home;
use crate::names::RepoName;
use crate::replicate::status;
use crate::replicate::verify::record;

pub(super) fn run(
    cmd: &Cmd,
    home: &Home,
    config: Config,
    repo: Option<&str>,
    json: bool,
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
        let text = if json {
            status::json(&report, &verified.slaves) + "\n"
        } else {
            status::table(&report.slaves)
                + &status::repo_table(&report.repos)
                + &record::table(&verified)
                + &status::attention_lines(&report.repos)
        };
        print(&text)?;
        let mut alerts = Vec::new();
        if status::alarming(&report.slaves, config.mirror.alert_after_secs) {
            alerts.push("a slave has been behind longer than mirror.alert_after_secs");
        }
        if status::needs_attention(&report.repos) {
            alerts.push("orphaned refs (or unreadable repos) wait for an administrator");
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
