//! One mirror push: the git commands that make one slave's copy of one repo identical to this
//! server's, over an open peer connection.
//!
//! Refs travel with `git push --force --prune 'refs/*'` (a mirror push that leaves each
//! server's own `refs/gitmirror/` alone); HEAD travels as a push option the slave's hook
//! applies. A push option needs a ref update to ride on, so when only HEAD differs it rides on
//! a throwaway ref ([`SET_HEAD_REF`]) that the slave's hook deletes again.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::git::SAFE_PATH;
use crate::home::Home;
use crate::names::RepoName;
use crate::peers::Connection;

/// The push option that carries the master's HEAD to a slave.
pub const HEAD_OPTION: &str = "gitmirror.head=";

/// The throwaway ref that carries a HEAD-only change; the slave deletes it on arrival.
pub const SET_HEAD_REF: &str = "refs/gitmirror/set-head";

/// How much to check before pushing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Push straight away: the caller knows refs changed (a user's push just landed).
    Always,
    /// Compare with the slave's refs and HEAD first (one `ls-remote` round trip) and push
    /// only what differs.
    IfDifferent,
    /// Compare with what the slave last confirmed, without asking it; only if that differs,
    /// compare with the slave (or, when it never confirmed anything, push straight away).
    IfChanged,
}

/// What a mirror push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Refs were pushed.
    Refs,
    /// Only HEAD differed, and was set.
    Head,
    /// The slave already matched.
    Nothing,
}

/// What a mirror push did, and what the slave said about refs it had of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// What was pushed.
    pub pushed: Pushed,
    /// The slave's report of refs changed behind the master's back (kept on the slave under
    /// `refs/gitmirror/diverged/`), if it had any.
    pub diverged: Option<String>,
}

/// Why a mirror push failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection or ssh failed: the peer may be down; reconnect before the next try.
    Transport(String),
    /// The slave answered and refused (its `FATAL:` line, or git's rejection).
    Refused(String),
}

impl Failure {
    /// The words to record and show.
    pub fn words(&self) -> &str {
        match self {
            Failure::Transport(w) | Failure::Refused(w) => w,
        }
    }
}

/// How a slave's hook starts each line about a diverged ref.
pub const DIVERGED_PREFIX: &str = "DIVERGED: ";

/// The namespace that is each server's own and never mirrored: kept divergences, the HEAD
/// carrier. Leaving it out also means a promoted former slave cannot push its kept refs.
pub const OWN_NS: &str = "refs/gitmirror/";

/// How long one git command over a peer connection may take before it counts as failed.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Refs (without [`OWN_NS`]) and HEAD of one copy of a repo.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RefState {
    head: Option<String>,
    refs: BTreeMap<String, String>,
}

impl RefState {
    /// This server's copy, read from disk. Symbolic refs other than HEAD count as the value
    /// they point to, as a push carries them and `ls-remote` shows them.
    pub fn local(path: &Path) -> Result<Self, String> {
        let repo = git2::Repository::open_bare(path).map_err(|e| e.message().to_string())?;
        let mut state = RefState {
            head: repo
                .find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string)),
            ..RefState::default()
        };
        for r in repo.references().map_err(|e| e.message().to_string())? {
            let r = r.map_err(|e| e.message().to_string())?;
            let Ok(name) = r.name() else { continue };
            if name.starts_with(OWN_NS) {
                continue;
            }
            if let Some(oid) = r.resolve().ok().and_then(|r| r.target()) {
                state.refs.insert(name.to_string(), oid.to_string());
            }
        }
        Ok(state)
    }

    /// A digest of the whole state, stable across versions (git's own SHA-1 of the text),
    /// recorded when a slave confirms it so that "nothing changed" needs no network.
    pub fn fingerprint(&self) -> String {
        let mut text = format!("HEAD {}\n", self.head.as_deref().unwrap_or(""));
        for (name, oid) in &self.refs {
            text.push_str(&format!("{oid} {name}\n"));
        }
        git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
            .map_or_else(|_| text.len().to_string(), |o| o.to_string())
    }
}

/// Makes `repo` on the connection's peer identical to `local` (the state at `path`).
/// `When::IfChanged` is decided by the caller before connecting; here it means "compare
/// with the slave unless it never confirmed anything", given by `confirmed`.
pub async fn mirror_push(
    home: &Home,
    conn: &Connection,
    repo: &RepoName,
    path: &Path,
    local: &RefState,
    when: When,
    confirmed: bool,
) -> Result<Done, Failure> {
    if local.refs.is_empty() {
        return empty(home, conn, repo, path).await;
    }
    let compare = match when {
        When::Always => false,
        When::IfDifferent => true,
        When::IfChanged => confirmed,
    };
    if compare && let Ok(remote) = remote_state(home, conn, repo, path).await {
        if &remote == local {
            return Ok(Done {
                pushed: Pushed::Nothing,
                diverged: None,
            });
        }
        if remote.refs == local.refs {
            return set_head(home, conn, repo, path, local).await;
        }
    }
    let mut args: Vec<String> = ["push", "--force", "--prune", "--quiet"]
        .map(String::from)
        .into();
    if let Some(head) = &local.head {
        args.extend(["--push-option".into(), format!("{HEAD_OPTION}{head}")]);
    }
    args.push(conn.url(repo));
    args.extend(["+refs/*:refs/*".to_string(), format!("^{OWN_NS}*")]);
    let out = run(home, conn, path, &args).await?;
    Ok(Done {
        pushed: Pushed::Refs,
        diverged: diverged_report(&String::from_utf8_lossy(&out.stderr)),
    })
}

/// A master copy with no refs: git refuses a mirror push of nothing ("No refs in common"),
/// so delete what the slave still has one by one; a slave without the repo needs nothing yet.
async fn empty(
    home: &Home,
    conn: &Connection,
    repo: &RepoName,
    path: &Path,
) -> Result<Done, Failure> {
    let nothing = Done {
        pushed: Pushed::Nothing,
        diverged: None,
    };
    let Ok(remote) = remote_state(home, conn, repo, path).await else {
        return Ok(nothing);
    };
    if remote.refs.is_empty() {
        return Ok(nothing);
    }
    let mut args: Vec<String> = vec!["push".into(), "--quiet".into(), conn.url(repo)];
    args.extend(remote.refs.keys().map(|name| format!(":{name}")));
    let out = run(home, conn, path, &args).await?;
    Ok(Done {
        pushed: Pushed::Refs,
        diverged: diverged_report(&String::from_utf8_lossy(&out.stderr)),
    })
}

/// The slave's `DIVERGED:` lines from a push's stderr, joined on one line.
fn diverged_report(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| {
            l.trim_start_matches("remote: ")
                .strip_prefix(DIVERGED_PREFIX)
        })
        .map(str::trim)
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// Carries a HEAD-only change on [`SET_HEAD_REF`], pointed at any commit the slave has.
async fn set_head(
    home: &Home,
    conn: &Connection,
    repo: &RepoName,
    path: &Path,
    local: &RefState,
) -> Result<Done, Failure> {
    let done = |pushed| Done {
        pushed,
        diverged: None,
    };
    let (Some(head), Some(any)) = (&local.head, local.refs.values().next()) else {
        return Ok(done(Pushed::Nothing));
    };
    let args = [
        "push".to_string(),
        "--quiet".into(),
        "--push-option".into(),
        format!("{HEAD_OPTION}{head}"),
        conn.url(repo),
        format!("{any}:{SET_HEAD_REF}"),
    ];
    run(home, conn, path, &args).await?;
    Ok(done(Pushed::Head))
}

/// The slave's refs and HEAD, as `git ls-remote --symref` reports them.
async fn remote_state(
    home: &Home,
    conn: &Connection,
    repo: &RepoName,
    path: &Path,
) -> Result<RefState, Failure> {
    let args = ["ls-remote".to_string(), "--symref".into(), conn.url(repo)];
    let out = run(home, conn, path, &args).await?;
    let mut state = RefState::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((left, name)) = line.split_once('\t') else {
            continue;
        };
        if let Some(target) = left.strip_prefix("ref: ") {
            if name == "HEAD" {
                state.head = Some(target.to_string());
            }
        } else if name != "HEAD" && !name.ends_with("^{}") && !name.starts_with(OWN_NS) {
            state.refs.insert(name.to_string(), left.to_string());
        }
    }
    Ok(state)
}

/// Runs `git ARGS` for `path` over the connection, holding one of its session slots, within
/// [`GIT_TIMEOUT`]. Fails with the slave's own words, classified.
async fn run(
    home: &Home,
    conn: &Connection,
    path: &Path,
    args: &[String],
) -> Result<Output, Failure> {
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .env("HOME", home.root())
        .env("GIT_SSH_COMMAND", conn.git_ssh_command())
        .arg("--git-dir")
        .arg(path)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = {
        let _slot = conn.slot().await;
        match tokio::time::timeout(GIT_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(Failure::Transport(format!("cannot run git: {e}"))),
            Err(_) => {
                return Err(Failure::Transport(format!(
                    "no answer within {}s",
                    GIT_TIMEOUT.as_secs()
                )));
            }
        }
    };
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let words = remote_words(&stderr);
    // gitmirror on the slave refuses with a FATAL line; git refuses with "remote rejected".
    // Anything else (ssh gone, control socket dead) is the transport.
    if stderr.contains("FATAL: ") || stderr.contains("[remote rejected]") {
        Err(Failure::Refused(words))
    } else {
        Err(Failure::Transport(words))
    }
}

/// The slave's own words from a failed command's stderr, on one line: gitmirror's `FATAL:`
/// line when there is one, else git's error lines.
pub fn remote_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim_start_matches("remote: ").trim())
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(fatal) = lines.iter().find(|l| l.starts_with("FATAL: ")) {
        return fatal.trim_start_matches("FATAL: ").to_string();
    }
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error:") || l.starts_with("fatal:") || l.starts_with("! "))
        .collect();
    let chosen = if errors.is_empty() { lines } else { errors };
    let text = crate::peers::one_line(&chosen.join("\n"));
    if text.is_empty() {
        "failed without a message".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_words_prefer_gitmirrors_fatal_line() {
        let stderr = "remote: FATAL: server2 refuses testing from server1: its master here is server3\nfatal: Could not read from remote repository.\n\nPlease make sure...\n";
        assert_eq!(
            remote_words(stderr),
            "server2 refuses testing from server1: its master here is server3"
        );
        assert_eq!(
            remote_words("error: failed to push some refs\nhint: x\n"),
            "error: failed to push some refs"
        );
        assert_eq!(remote_words(""), "failed without a message");
    }
}
