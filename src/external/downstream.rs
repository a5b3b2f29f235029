//! One push to a downstream: make the remote's refs that match the downstream's patterns what
//! ours are, without ever touching what is not ours to change.
//!
//! The remote is listed first (`git ls-remote`); then each of our refs that matches the
//! patterns (never `refs/gitmirror/`) is compared with the remote's value and with the value we
//! last pushed there:
//!
//! - the same: nothing to send;
//! - missing there: created;
//! - there, at what we last pushed, or at an ancestor of ours: updated (forced if we rewound
//!   it: the remote did not move it, we did);
//! - there, moved by someone else (neither what we pushed nor an ancestor): diverged. With
//!   `divergence = "keep"` it is left alone and reported; with `"overwrite"` it is forced.
//!
//! A ref is deleted there only if we pushed it before and no longer have it, and the remote
//! still holds what we pushed (or `overwrite` says to delete it anyway). Refs the remote has
//! that we never pushed are never touched. Every update carries `--force-with-lease` with the
//! value just listed, so a remote that moves between the listing and the push is not
//! overwritten: that ref is rejected and the next attempt looks again.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use thiserror::Error;
use tokio::process::Command;

use super::remote::{RemoteError, RemoteGit};
use crate::config::external::{Divergence, Downstream, pattern_matches};
use crate::home::Home;
use crate::proto::{OWN_NS, SAFE_PATH};
use crate::text::{one_line, truncate};

/// How long one push to a downstream may take (a first push of a big repo over a slow link is
/// long; a remote that hangs must not hold its slot forever).
const PUSH_TIMEOUT: Duration = Duration::from_secs(1800);

/// How long listing a downstream's refs, or a look at our own repo, may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(300);

/// How many refs one `git push` carries (a first push of thousands of tags must stay under the
/// command line's limit).
const REFS_PER_PUSH: usize = 200;

/// The longest error text kept from git.
const MAX_WORDS: usize = 600;

/// Why a push to a downstream did not happen, or did not all go.
#[derive(Debug, Error)]
pub(crate) enum DownstreamError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git {what} gave no answer in {secs}s")]
    Timeout { what: &'static str, secs: u64 },
    /// git failed; its (and the remote's) words.
    #[error("{0}")]
    Git(String),
    /// Some refs were refused by the remote.
    #[error("refused: {0}")]
    Rejected(String),
}

/// One ref to change there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Update {
    pub(crate) name: String,
    /// Our value, or `None` to delete it.
    pub(crate) new: Option<String>,
    /// The value it must have there now (`None`: it must not exist).
    pub(crate) expect: Option<String>,
}

/// What to send, and what to say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) updates: Vec<Update>,
    /// Refs left alone: `NAME (theirs X, ours Y)`.
    pub(crate) diverged: Vec<String>,
    /// The refs that stand there as pushed by us whatever the push does: those in sync, and
    /// diverged ones at what we last pushed.
    pub(crate) standing: BTreeMap<String, String>,
    /// Refs forced over the remote's own moves (`overwrite`), for the log.
    pub(crate) forced: Vec<String>,
}

/// The end of one attempt: the refs as they stand there as we pushed them, what diverged, and
/// the error if not everything went.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) pushed: BTreeMap<String, String>,
    pub(crate) diverged: Vec<String>,
    pub(crate) sent: usize,
    pub(crate) error: Option<DownstreamError>,
}

fn short(oid: &str) -> &str {
    oid.get(..10).unwrap_or(oid)
}

/// Decides what to send. `ours` and `theirs` are the refs matching the patterns, `last` what we
/// last pushed, `is_ancestor(a, b)` whether `a` is in `b`'s history here.
pub(crate) fn plan(
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
    last: &BTreeMap<String, String>,
    patterns: &[String],
    divergence: Divergence,
    is_ancestor: impl Fn(&str, &str) -> bool,
) -> Plan {
    let mut p = Plan::default();
    let overwrite = divergence == Divergence::Overwrite;
    for (name, o) in ours {
        match theirs.get(name) {
            Some(t) if t == o => {
                p.standing.insert(name.clone(), o.clone());
            }
            None => p.updates.push(Update {
                name: name.clone(),
                new: Some(o.clone()),
                expect: None,
            }),
            Some(t) => {
                let ours_to_move = last.get(name) == Some(t) || is_ancestor(t, o);
                // A remote ahead of us (a new master that is behind, after a failover) is
                // never rewound, even with overwrite: what it has beyond ours would be lost
                // from the only other copy.
                let remote_ahead = !ours_to_move && is_ancestor(o, t);
                if ours_to_move || (overwrite && !remote_ahead) {
                    if !ours_to_move {
                        p.forced.push(name.clone());
                    }
                    p.updates.push(Update {
                        name: name.clone(),
                        new: Some(o.clone()),
                        expect: Some(t.clone()),
                    });
                } else {
                    p.diverged
                        .push(format!("{name} (theirs {}, ours {})", short(t), short(o)));
                    if let Some(l) = last.get(name) {
                        p.standing.insert(name.clone(), l.clone());
                    }
                }
            }
        }
    }
    let ours_once = |name: &str| patterns.iter().any(|pat| pattern_matches(pat, name));
    for (name, l) in last {
        if ours.contains_key(name) || !ours_once(name) {
            continue;
        }
        match theirs.get(name) {
            // Already gone there.
            None => {}
            Some(t) if t == l || overwrite => {
                if t != l {
                    p.forced.push(name.clone());
                }
                p.updates.push(Update {
                    name: name.clone(),
                    new: None,
                    expect: Some(t.clone()),
                });
            }
            Some(t) => {
                p.diverged
                    .push(format!("{name} (theirs {}, deleted here)", short(t)));
                p.standing.insert(name.clone(), l.clone());
            }
        }
    }
    p
}

/// Pushes the repo at `git_dir` to `downstream`, given what we last pushed there.
pub(crate) async fn push(
    home: &Home,
    git_dir: &Path,
    downstream: &Downstream,
    last: &BTreeMap<String, String>,
) -> Outcome {
    let failed = |error: DownstreamError| Outcome {
        pushed: last.clone(),
        diverged: Vec::new(),
        sent: 0,
        error: Some(error),
    };
    let remote = RemoteGit::new(home, &downstream.url, &downstream.credentials);
    let wanted = |name: &str| {
        !name.starts_with(OWN_NS) && downstream.refs.iter().any(|p| pattern_matches(p, name))
    };
    let ours: BTreeMap<String, String> = match local_refs(git_dir).await {
        Ok(refs) => refs.into_iter().filter(|(n, _)| wanted(n)).collect(),
        Err(e) => return failed(e),
    };
    let theirs: BTreeMap<String, String> = match remote.command(git_dir) {
        Err(e) => return failed(e.into()),
        Ok(mut cmd) => {
            cmd.arg("ls-remote").arg(&downstream.url.url);
            match run(cmd, "ls-remote").await {
                Ok(out) => parse_refs(&out, '\t')
                    .into_iter()
                    .filter(|(n, _)| wanted(n))
                    .collect(),
                Err(e) => return failed(e),
            }
        }
    };
    let mut ancestry = BTreeMap::new();
    for (name, o) in &ours {
        if let Some(t) = theirs.get(name)
            && t != o
            && last.get(name) != Some(t)
        {
            ancestry.insert((t.clone(), o.clone()), is_ancestor(git_dir, t, o).await);
        }
    }
    let plan = plan(
        &ours,
        &theirs,
        last,
        &downstream.refs,
        downstream.divergence,
        |a, b| {
            ancestry
                .get(&(a.to_string(), b.to_string()))
                .copied()
                .unwrap_or(false)
        },
    );
    for name in &plan.forced {
        tracing::info!(url = %downstream.url.url, reference = %name, "diverged ref overwritten on the downstream");
    }
    let mut pushed = plan.standing.clone();
    let mut done: HashSet<String> = HashSet::new();
    let mut rejected: Vec<String> = Vec::new();
    for chunk in plan.updates.chunks(REFS_PER_PUSH) {
        let mut cmd = match remote.command(git_dir) {
            Ok(c) => c,
            Err(e) => return finish(pushed, &done, &plan, last, Some(e.into())),
        };
        cmd.args(["push", "--porcelain", "--no-verify"])
            .arg(&downstream.url.url);
        for u in chunk {
            cmd.arg(format!(
                "--force-with-lease={}:{}",
                u.name,
                u.expect.as_deref().unwrap_or("")
            ));
        }
        for u in chunk {
            cmd.arg(format!("{}:{}", u.new.as_deref().unwrap_or(""), u.name));
        }
        let output = match spawn_output(cmd, "push").await {
            Ok(o) => o,
            Err(e) => return finish(pushed, &done, &plan, last, Some(e)),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let mut seen = 0;
        for line in stdout.lines() {
            let mut parts = line.splitn(3, '\t');
            let (Some(flag), Some(spec), summary) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some((_, name)) = spec.split_once(':') else {
                continue;
            };
            let Some(u) = chunk.iter().find(|u| u.name == name) else {
                continue;
            };
            seen += 1;
            if matches!(flag, " " | "+" | "-" | "*" | "=") {
                done.insert(u.name.clone());
                match &u.new {
                    Some(new) => pushed.insert(u.name.clone(), new.clone()),
                    None => pushed.remove(&u.name),
                };
            } else {
                rejected.push(format!("{name} {}", summary.unwrap_or("").trim()));
            }
        }
        if !output.status.success() && seen == 0 {
            // Nothing was said about any ref: the push did not happen (no connection,
            // refused as a whole). What it was to change stands as it was.
            let error = DownstreamError::Git(words(&output.stderr));
            return finish(pushed, &done, &plan, last, Some(error));
        }
    }
    let error = if rejected.is_empty() {
        None
    } else {
        let mut w = rejected.join("; ");
        truncate(&mut w, MAX_WORDS);
        Some(DownstreamError::Rejected(w))
    };
    finish(pushed, &done, &plan, last, error)
}

/// The outcome: refs whose update did not go stand at what we last pushed there.
fn finish(
    mut pushed: BTreeMap<String, String>,
    done: &HashSet<String>,
    plan: &Plan,
    last: &BTreeMap<String, String>,
    error: Option<DownstreamError>,
) -> Outcome {
    for u in plan.updates.iter().filter(|u| !done.contains(&u.name)) {
        if let Some(l) = last.get(&u.name) {
            pushed.insert(u.name.clone(), l.clone());
        }
    }
    Outcome {
        pushed,
        diverged: plan.diverged.clone(),
        sent: done.len(),
        error,
    }
}

/// git's stderr on one line, without ssh's banners of `@`; when too long, its start and its
/// end, where git and ssh put the verdict ("Host key verification failed.", "fatal: ...").
fn words(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let kept: Vec<&str> = text
        .lines()
        .map(|l| l.trim().trim_matches('@').trim())
        .filter(|l| !l.is_empty())
        .collect();
    let w = one_line(&kept.join("\n"));
    if w.is_empty() {
        return "git failed and said nothing".to_string();
    }
    let chars: Vec<char> = w.chars().collect();
    if chars.len() <= MAX_WORDS {
        return w;
    }
    let head: String = chars[..MAX_WORDS / 4].iter().collect();
    let tail: String = chars[chars.len() - MAX_WORDS * 3 / 4..].iter().collect();
    format!("{head} ... {tail}")
}

async fn spawn_output(
    mut cmd: Command,
    what: &'static str,
) -> Result<std::process::Output, DownstreamError> {
    let limit = if what == "push" {
        PUSH_TIMEOUT
    } else {
        LIST_TIMEOUT
    };
    let child = cmd.spawn().map_err(DownstreamError::Spawn)?;
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| DownstreamError::Timeout {
            what,
            secs: limit.as_secs(),
        })?
        .map_err(DownstreamError::Spawn)
}

/// Runs a git command; its stdout if it succeeded, its words if not.
async fn run(cmd: Command, what: &'static str) -> Result<String, DownstreamError> {
    let out = spawn_output(cmd, what).await?;
    if !out.status.success() {
        return Err(DownstreamError::Git(words(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `OID<sep>NAME` lines, peeled (`^{}`) entries and symbolic ones (HEAD) left out.
fn parse_refs(text: &str, sep: char) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (oid, name) = l.split_once(sep)?;
            let name = name.trim();
            (name.starts_with("refs/") && !name.ends_with("^{}") && oid.len() >= 40)
                .then(|| (name.to_string(), oid.to_string()))
        })
        .collect()
}

/// git on our own repo, with a cleared environment.
fn local_git(git_dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .arg("--git-dir")
        .arg(git_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn local_refs(git_dir: &Path) -> Result<BTreeMap<String, String>, DownstreamError> {
    let mut cmd = local_git(git_dir);
    cmd.args(["for-each-ref", "--format=%(objectname) %(refname)"]);
    Ok(parse_refs(&run(cmd, "for-each-ref").await?, ' '))
}

/// Whether `a` is in `b`'s history here (false when we do not have `a` at all).
async fn is_ancestor(git_dir: &Path, a: &str, b: &str) -> bool {
    let mut cmd = local_git(git_dir);
    cmd.args(["merge-base", "--is-ancestor", a, b]);
    matches!(spawn_output(cmd, "merge-base").await, Ok(o) if o.status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, o)| (n.to_string(), o.repeat(40)))
            .collect()
    }

    #[test]
    fn long_words_keep_their_verdict() {
        let banner = "@@@@@@@@\n@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @\n@@@@@@@@\n";
        let noise = "It is also possible that a host key has just been changed.\n".repeat(30);
        let w = words(format!("{banner}{noise}Host key verification failed.\nfatal: Could not read from remote repository.\n").as_bytes());
        assert!(
            w.starts_with("WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!;"),
            "{w}"
        );
        assert!(
            w.ends_with(
                "Host key verification failed.; fatal: Could not read from remote repository."
            ),
            "{w}"
        );
        assert!(w.chars().count() < MAX_WORDS + 10);
        assert_eq!(words(b""), "git failed and said nothing");
    }

    #[test]
    fn keep_leaves_what_the_remote_moved_and_deletes_only_what_we_pushed() {
        let pats = vec!["refs/heads/*".to_string(), "refs/tags/*".to_string()];
        let ours = refs(&[
            ("refs/heads/main", "b"),
            ("refs/heads/ff", "c"),
            ("refs/heads/moved", "d"),
            ("refs/heads/new", "e"),
            ("refs/heads/same", "f"),
        ]);
        let theirs = refs(&[
            ("refs/heads/main", "a"),
            ("refs/heads/ff", "9"),
            ("refs/heads/moved", "8"),
            ("refs/heads/same", "f"),
            ("refs/heads/gone", "1"),
            ("refs/heads/gone-moved", "7"),
            ("refs/heads/theirs", "6"),
        ]);
        let last = refs(&[
            ("refs/heads/main", "a"),
            ("refs/heads/moved", "5"),
            ("refs/heads/gone", "1"),
            ("refs/heads/gone-moved", "2"),
        ]);
        // "9" is an ancestor of "c"; nothing else is.
        let anc = |a: &str, b: &str| a.starts_with('9') && b.starts_with('c');
        let p = plan(&ours, &theirs, &last, &pats, Divergence::Keep, anc);
        let names: Vec<(&str, bool)> = p
            .updates
            .iter()
            .map(|u| (u.name.as_str(), u.new.is_some()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("refs/heads/ff", true),
                ("refs/heads/main", true),
                ("refs/heads/new", true),
                ("refs/heads/gone", false),
            ]
        );
        assert_eq!(p.diverged.len(), 2, "{:?}", p.diverged);
        assert!(p.diverged[0].starts_with("refs/heads/moved (theirs 8888"));
        assert!(p.diverged[1].starts_with("refs/heads/gone-moved"));
        assert!(p.standing.contains_key("refs/heads/same"));
        assert!(p.forced.is_empty());
        let p = plan(&ours, &theirs, &last, &pats, Divergence::Overwrite, anc);
        assert!(p.diverged.is_empty());
        assert_eq!(p.updates.len(), 6);
        assert_eq!(p.forced, vec!["refs/heads/moved", "refs/heads/gone-moved"]);
        // Never the refs the remote alone has.
        assert!(!p.updates.iter().any(|u| u.name == "refs/heads/theirs"));
    }
}
