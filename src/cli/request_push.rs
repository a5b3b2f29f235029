//! `gitmirror request-push REPO | --all`: push now, and say per slave how it went; exits
//! non-zero when any slave was not updated.

use std::sync::Arc;

use super::{Config, Outcome, print};
use crate::daemon::request;
use crate::home::Home;
use crate::names::RepoName;
use crate::progress::Progress;

pub(super) fn run(
    home: &Home,
    config: Config,
    repo: Option<&str>,
    all: bool,
    quiet: bool,
) -> Outcome {
    let config = Arc::new(config.map_err(|e| e.to_string())?);
    match repo {
        Some(repo) if !all => {
            let repo = RepoName::parse(repo).map_err(|e| format!("bad repo name: {e}"))?;
            let report = request::request(home, &config, &repo).map_err(|e| e.to_string())?;
            print(&report.text())?;
            ok_or_fail(report.ok)
        }
        _ => {
            // A line per repo and slave as the pushes end, then how many went well.
            let mut progress = Progress::new("request-push", quiet);
            let report =
                request::request_all(home, &config, &mut |r| progress.tick(r.outcome.is_ok()));
            let summary = progress.finish();
            let report = report.map_err(|e| e.to_string())?;
            print(&format!("{}{summary}", report.text()))?;
            ok_or_fail(report.ok)
        }
    }
}

fn ok_or_fail(ok: bool) -> Outcome {
    if ok {
        Ok(())
    } else {
        Err("some slaves were not updated".to_string())
    }
}
