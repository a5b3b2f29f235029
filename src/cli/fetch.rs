//! `gitmirror fetch REPO|--all`: fetch pull mirrors from their upstreams now (through the
//! daemon, which runs every fetch, so that a fetch asked for never overlaps a scheduled one).
//! A line per repo; exits non-zero if any failed.

use super::{Config, Outcome, print};
use crate::daemon::client;
use crate::daemon::protocol::{Reply, Request};
use crate::home::Home;
use crate::names::RepoName;
use crate::progress::Progress;

pub(super) fn run(home: &Home, config: Config, repo: Option<&str>, quiet: bool) -> Outcome {
    config.map_err(|e| e.to_string())?;
    let repo = repo
        .map(|r| RepoName::parse(r).map_err(|e| format!("bad repo name: {e}")))
        .transpose()?;
    let all = repo.is_none();
    // Progress only for --all: one repo is quick.
    let mut progress = Progress::new("fetch", quiet || !all);
    let lines = fetch_lines(home, repo, &mut |reply| {
        if let Reply::Fetched { ok, .. } = reply {
            progress.tick(*ok);
        }
    });
    let summary = progress.finish();
    let (mut text, failed) = lines?;
    if all {
        text.push_str(&summary);
    }
    print(&text)?;
    if failed > 0 {
        return Err(format!("{failed} fetches failed"));
    }
    Ok(())
}

/// The daemon's answer to a fetch request, a line per repo, and how many failed; each reply
/// is shown to `seen` as it arrives (for progress).
fn fetch_lines(
    home: &Home,
    repo: Option<RepoName>,
    seen: &mut dyn FnMut(&Reply),
) -> Result<(String, usize), String> {
    let replies =
        client::ask_replies_seeing(home, &Request::Fetch(repo), seen).map_err(|e| e.to_string())?;
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
