//! `gitmirror verify REPO | --all [--repair]`: what each slave holds against this master, a
//! line per repo and slave (drifted refs each on a line of their own), then the repairs.
//! Exits non-zero unless every copy was `ok`, repaired or not: drift found is news.

use super::{Config, Outcome, print};
use crate::daemon::protocol::Reply;
use crate::daemon::request;
use crate::home::Home;
use crate::names::RepoName;
use crate::progress::Progress;

pub(super) fn run(
    home: &Home,
    config: Config,
    repo: Option<&str>,
    all: bool,
    repair: bool,
    quiet: bool,
) -> Outcome {
    config.map_err(|e| e.to_string())?;
    let repo = match repo {
        Some(r) if !all => Some(RepoName::parse(r).map_err(|e| format!("bad repo name: {e}"))?),
        _ => None,
    };
    // Progress only for --all: one repo is quick.
    let mut progress = Progress::new("verify", quiet || repo.is_some());
    let replies = request::verify(home, repo.as_ref(), repair, &mut |reply| match reply {
        Reply::Verified { state, .. } => progress.tick(state == "ok"),
        Reply::Done(..) | Reply::Unchanged(..) => progress.tick(true),
        Reply::Fail(..) => progress.tick(false),
        Reply::Ok | Reply::End | Reply::Error(_) | Reply::Fetched { .. } => {}
    });
    let summary = progress.finish();
    let replies = replies.map_err(|e| e.to_string())?;
    let (mut text, ok) = render(&replies);
    if repo.is_none() {
        text.push_str(&summary);
    }
    print(&text)?;
    if ok {
        Ok(())
    } else {
        Err("some slaves do not hold what this master holds".to_string())
    }
}

/// The report, and whether every copy was ok and every repair succeeded.
fn render(replies: &[Reply]) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for reply in replies {
        match reply {
            Reply::Verified {
                repo,
                slave,
                state,
                words,
            } => {
                *counts.entry(state.as_str()).or_default() += 1;
                ok &= state == "ok";
                match (state.as_str(), words.is_empty()) {
                    (_, true) => out.push_str(&format!("{repo} {slave} {state}\n")),
                    // A ref name never holds a space, so "; " only ever separates refs.
                    ("drifted", false) => {
                        out.push_str(&format!("{repo} {slave} drifted\n"));
                        for diff in words.split("; ") {
                            out.push_str(&format!("    {diff}\n"));
                        }
                    }
                    (_, false) => out.push_str(&format!("{repo} {slave} {state}: {words}\n")),
                }
            }
            Reply::Done(repo, slave) => out.push_str(&format!("repaired {repo} on {slave}\n")),
            Reply::Unchanged(repo, slave, _) => out.push_str(&format!(
                "repaired {repo} on {slave} (nothing left to push)\n"
            )),
            Reply::Fail(repo, slave, words) => {
                ok = false;
                out.push_str(&format!("repair of {repo} on {slave} failed: {words}\n"));
            }
            Reply::Ok | Reply::End | Reply::Error(_) | Reply::Fetched { .. } => {}
        }
    }
    let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    if summary.is_empty() {
        out.push_str("verified: nothing mastered here has slaves\n");
    } else {
        out.push_str(&format!("verified: {}\n", summary.join(", ")));
    }
    (out, ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::AccountName;

    #[test]
    fn drifted_refs_get_a_line_each_and_fail_the_run() {
        let repo = RepoName::parse("testing").unwrap();
        let slave = AccountName::parse("server2").unwrap();
        let verified = |state: &str, words: &str| Reply::Verified {
            repo: repo.clone(),
            slave: slave.clone(),
            state: state.into(),
            words: words.into(),
        };
        let (text, ok) = render(&[verified("ok", "")]);
        assert!(ok);
        assert_eq!(text, "testing server2 ok\nverified: 1 ok\n");
        let (text, ok) = render(&[
            verified(
                "drifted",
                "refs/heads/a;b master=1 server2=2; HEAD master=x server2=y",
            ),
            Reply::Done(repo.clone(), slave.clone()),
        ]);
        assert!(!ok);
        assert_eq!(
            text,
            "testing server2 drifted\n    refs/heads/a;b master=1 server2=2\n    HEAD master=x server2=y\nrepaired testing on server2\nverified: 1 drifted\n"
        );
    }
}
