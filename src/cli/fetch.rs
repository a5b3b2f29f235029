//! `gitmirror fetch REPO|--all`: fetch pull mirrors from their upstreams now (through the
//! daemon, which runs every fetch, so that a fetch asked for never overlaps a scheduled one).
//! A line per repo; exits non-zero if any failed.

use super::{Config, Outcome, print};
use crate::daemon::client;
use crate::daemon::protocol::{Reply, Request};
use crate::home::Home;
use crate::names::RepoName;

pub(super) fn run(home: &Home, config: Config, repo: Option<&str>) -> Outcome {
    config.map_err(|e| e.to_string())?;
    let repo = repo
        .map(|r| RepoName::parse(r).map_err(|e| format!("bad repo name: {e}")))
        .transpose()?;
    let (text, failed) = fetch_lines(home, repo)?;
    print(&text)?;
    if failed > 0 {
        return Err(format!("{failed} fetches failed"));
    }
    Ok(())
}

/// The daemon's answer to a fetch request, a line per repo, and how many failed.
pub(crate) fn fetch_lines(home: &Home, repo: Option<RepoName>) -> Result<(String, usize), String> {
    let replies = client::ask_replies(home, &Request::Fetch(repo)).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut failed = 0;
    for reply in replies {
        if let Reply::Fetched { repo, ok, words } = reply {
            if ok {
                out.push_str(&format!("{repo}: fetched: {words}\n"));
            } else {
                failed += 1;
                out.push_str(&format!("{repo}: fetch failed: {words}\n"));
            }
        }
    }
    if out.is_empty() {
        out.push_str("no pull mirrors to fetch here\n");
    }
    Ok((out, failed))
}
