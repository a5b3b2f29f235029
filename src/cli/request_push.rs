//! `gitmirror request-push REPO | --all`: push now, and say per slave how it went; exits
//! non-zero when any slave was not updated.

use std::sync::Arc;

use super::{Config, Outcome, print};
use crate::daemon::request;
use crate::home::Home;
use crate::names::RepoName;

pub(super) fn run(home: &Home, config: Config, repo: Option<&str>, all: bool) -> Outcome {
    let config = Arc::new(config.map_err(|e| e.to_string())?);
    let report = match repo {
        Some(repo) if !all => {
            let repo = RepoName::parse(repo).map_err(|e| format!("bad repo name: {e}"))?;
            request::request(home, &config, &repo)
        }
        _ => request::request_all(home, &config),
    }
    .map_err(|e| e.to_string())?;
    print(&report.text())?;
    if report.ok {
        Ok(())
    } else {
        Err("some slaves were not updated".to_string())
    }
}
