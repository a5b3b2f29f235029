//! `gitmirror delete REPO [--force]`: on the repo's master, moves it into the trash here and
//! (through the daemon, durably) on every slave.

use super::{Config, Outcome, print};
use crate::admin::store_ops;
use crate::home::Home;
use crate::names::RepoName;

pub(super) fn run(home: &Home, config: Config, repo: &str, force: bool) -> Outcome {
    let config = config.map_err(|e| e.to_string())?;
    let repo = RepoName::parse(repo).map_err(|e| format!("bad repo name: {e}"))?;
    let done = store_ops::delete(home, &config, &repo, force).map_err(|e| e.to_string())?;
    print(&format!("{}\n", done.line))
}
