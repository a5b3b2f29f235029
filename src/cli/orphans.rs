//! `gitmirror orphans [REPO]`: the refs this server kept when a change of master overwrote
//! them, a line each with the commit it leads to. Exits 2 when there are any (they wait for
//! an administrator, as in `status`), 0 when there are none, 1 when a repo cannot be read.
//!
//! `gitmirror orphans --drop REPO REF`: deletes one of them, once what it held is re-pushed
//! to the master or not wanted.

use std::process::ExitCode;

use super::{Cmd, Config, fail, print};
use crate::home::Home;
use crate::names::RepoName;
use crate::replicate::status::format_time;
use crate::repo::Store;
use crate::repo::orphans::{self, CommitSummary, Orphan};

/// Lists the orphaned refs of `repo`, or of every repo here.
pub(super) fn list(cmd: &Cmd, home: &Home, config: Config, repo: Option<&str>) -> ExitCode {
    // Not used, but read: a home without one (a mistyped --home) must not pass for a server
    // with nothing orphaned.
    if let Err(e) = config {
        return fail(cmd, &e.to_string());
    }
    let store = Store::new(home.repositories());
    let repos = match repo {
        Some(r) => match named(&store, r) {
            Ok(found) => vec![found],
            Err(e) => return fail(cmd, &e),
        },
        None => match store.list() {
            Ok(names) => names
                .into_iter()
                .filter_map(|n| store.find(&n).map(|p| (n, p)))
                .collect(),
            Err(e) => return fail(cmd, &e.to_string()),
        },
    };
    let mut out = String::new();
    let (mut listed, mut unreadable) = (0, false);
    for (name, path) in &repos {
        match orphans::described(path) {
            Ok(found) => {
                listed += found.len();
                for (orphan, commit) in &found {
                    out.push_str(&line(name, orphan, commit.as_ref()));
                }
            }
            // One unreadable repo does not hide the others' refs.
            Err(e) => {
                tracing::warn!(repo = %name, error = %e, "cannot read the orphaned refs");
                eprintln!("gitmirror: {name}: cannot read its orphaned refs: {e}");
                unreadable = true;
            }
        }
    }
    if let Err(e) = print(&out) {
        return fail(cmd, &e);
    }
    match (unreadable, listed) {
        (true, _) => ExitCode::FAILURE,
        (false, 0) => ExitCode::SUCCESS,
        (false, _) => ExitCode::from(2),
    }
}

/// Deletes the orphaned ref `refname` of `repo`.
pub(super) fn drop(cmd: &Cmd, home: &Home, config: Config, repo: &str, refname: &str) -> ExitCode {
    let run = || -> Result<String, String> {
        config.map_err(|e| e.to_string())?;
        let (name, path) = named(&Store::new(home.repositories()), repo)?;
        let dropped = orphans::drop_orphan(&path, refname).map_err(|e| e.to_string())?;
        // The id goes to the administrator's terminal: the commit stays in the repo until git
        // collects garbage, and can be brought back by it.
        Ok(format!(
            "dropped {} from {name}; it held {}\n",
            dropped.name, dropped.target
        ))
    };
    match run().and_then(|text| print(&text)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(cmd, &e),
    }
}

/// The repo `repo` names, and its path, if it is here.
fn named(store: &Store, repo: &str) -> Result<(RepoName, std::path::PathBuf), String> {
    let name = RepoName::parse(repo).map_err(|e| format!("bad repo name: {e}"))?;
    let path = store
        .find(&name)
        .ok_or_else(|| format!("{name}: no such repo here"))?;
    Ok((name, path))
}

/// `REPO REF ID DATE AUTHOR: SUBJECT`: the first three words are for scripts, the rest for
/// the person deciding what to keep.
fn line(repo: &RepoName, orphan: &Orphan, commit: Option<&CommitSummary>) -> String {
    let about = match commit {
        // An annotated tag: the ref holds the tag, the words are its commit's.
        Some(c) if c.id != orphan.target => format!(
            "{} (tag of {}) {}: {}",
            format_time(Some(c.time as f64)),
            c.id,
            printable(&c.author),
            printable(&c.subject)
        ),
        Some(c) => format!(
            "{} {}: {}",
            format_time(Some(c.time as f64)),
            printable(&c.author),
            printable(&c.subject)
        ),
        None => "(leads to no commit this repo holds)".to_string(),
    };
    format!("{repo} {} {} {about}\n", orphan.name, orphan.target)
}

/// Author and subject come from whoever made the commit: control characters would reach
/// the administrator's terminal as they are.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_ref_and_its_commit_and_holds_no_control_characters() {
        let repo = RepoName::parse("team/tools").unwrap();
        let id = git2::Oid::from_str("1234567890123456789012345678901234567890").unwrap();
        let orphan = Orphan {
            name: "refs/gitmirror/orphaned/2/heads/main".into(),
            target: id,
        };
        let commit = CommitSummary {
            id,
            subject: "lost \u{1b}[31mwork".into(),
            author: "Alice <alice@example.com>".into(),
            time: 1_700_000_000,
        };
        assert_eq!(
            line(&repo, &orphan, Some(&commit)),
            "team/tools refs/gitmirror/orphaned/2/heads/main 1234567890123456789012345678901234567890 \
             2023-11-14T22:13:20Z Alice <alice@example.com>: lost ?[31mwork\n"
        );
        assert_eq!(
            line(&repo, &orphan, None),
            "team/tools refs/gitmirror/orphaned/2/heads/main 1234567890123456789012345678901234567890 \
             (leads to no commit this repo holds)\n"
        );
    }
}
