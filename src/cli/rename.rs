//! `gitmirror rename OLD NEW`: on the repo's master, renames it here and (through the
//! daemon, durably) on every slave. Rules that name OLD follow it to NEW until `repos.toml`
//! is edited; `compile` says what to edit.

use super::{Config, Outcome, print};
use crate::admin::store_ops;
use crate::home::Home;
use crate::names::RepoName;

pub(super) fn run(home: &Home, config: Config, from: &str, to: &str) -> Outcome {
    let config = config.map_err(|e| e.to_string())?;
    let parse = |raw: &str| RepoName::parse(raw).map_err(|e| format!("bad repo name: {e}"));
    let (from, to) = (parse(from)?, parse(to)?);
    let done = store_ops::rename(home, &config, &from, &to).map_err(|e| e.to_string())?;
    print(&format!(
        "{}\nrepos.toml: rules that name {from} now apply to {to}; rename its table there (gitmirror compile says where)\n",
        done.line
    ))
}
