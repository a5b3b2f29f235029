//! `gitmirror status [REPO] [--json]`: the queue as a table or JSON. Exits 2 when a slave has
//! been behind longer than `mirror.alert_after_secs`, for monitoring.

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
    let run = || -> Result<bool, String> {
        let config = config.map_err(|e| e.to_string())?;
        let repo = repo
            .map(|r| RepoName::parse(r).map_err(|e| format!("bad repo name: {e}")))
            .transpose()?;
        let rows = status::collect(home, &config, repo.as_ref()).map_err(|e| e.to_string())?;
        // What the last verify found is extra: unreadable, it is logged, not fatal.
        let verified = record::load(home).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the verify record");
            record::Verified::default()
        });
        let text = if json {
            status::json(&rows, &verified.slaves) + "\n"
        } else {
            status::table(&rows) + &record::table(&verified)
        };
        print(&text)?;
        Ok(!status::alarming(&rows, config.mirror.alert_after_secs))
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("gitmirror: a slave has been behind longer than mirror.alert_after_secs");
            ExitCode::from(2)
        }
        Err(e) => fail(cmd, &e),
    }
}
