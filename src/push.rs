//! One mirror push: the git commands that make one slave's copy of one repo identical to this
//! server's, over an open peer connection.
//!
//! Refs travel with `git push --mirror`; HEAD travels as a push option the slave's hook
//! applies. A push option needs a ref update to ride on, so when only HEAD differs it rides on
//! a throwaway ref ([`SET_HEAD_REF`]) that the slave's hook deletes again.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::git::SAFE_PATH;
use crate::home::Home;
use crate::names::RepoName;
use crate::peers::Connection;

/// The push option that carries the master's HEAD to a slave.
pub const HEAD_OPTION: &str = "gitmirror.head=";

/// The throwaway ref that carries a HEAD-only change; the slave deletes it on arrival.
pub const SET_HEAD_REF: &str = "refs/gitmirror/set-head";

/// Whether to compare before pushing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Push straight away: the caller knows refs changed (a user's push just landed).
    Always,
    /// Compare refs and HEAD first (one `ls-remote` round trip) and push only what differs.
    IfDifferent,
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

/// How a slave's hook starts each line about a diverged ref.
pub const DIVERGED_PREFIX: &str = "DIVERGED: ";

/// Refs and HEAD of one copy of a repo.
#[derive(Debug, Default, PartialEq, Eq)]
struct RefState {
    head: Option<String>,
    refs: BTreeMap<String, String>,
}

/// Makes `repo` on the connection's peer identical to the one at `path`.
pub async fn mirror_push(
    home: &Home,
    conn: &Connection,
    repo: &RepoName,
    path: &Path,
    when: When,
) -> Result<Done, String> {
    let local = local_state(path)?;
    if when == When::IfDifferent
        && let Ok(remote) = remote_state(home, conn, repo, path).await
    {
        if remote == local {
            return Ok(Done {
                pushed: Pushed::Nothing,
                diverged: None,
            });
        }
        if remote.refs == local.refs {
            return set_head(home, conn, repo, path, &local).await;
        }
    }
    let mut args = vec!["push".to_string(), "--mirror".into(), "--quiet".into()];
    if let Some(head) = &local.head {
        args.extend(["--push-option".into(), format!("{HEAD_OPTION}{head}")]);
    }
    args.push(conn.url(repo));
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
) -> Result<Done, String> {
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

/// This server's refs and HEAD, read from disk.
fn local_state(path: &Path) -> Result<RefState, String> {
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
        if let (Ok(name), Some(oid)) = (r.name(), r.target()) {
            state.refs.insert(name.to_string(), oid.to_string());
        }
    }
    Ok(state)
}

/// The slave's refs and HEAD, as `git ls-remote --symref` reports them.
async fn remote_state(
    home: &Home,
    conn: &Connection,
    repo: &RepoName,
    path: &Path,
) -> Result<RefState, String> {
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
        } else if name != "HEAD" && !name.ends_with("^{}") {
            state.refs.insert(name.to_string(), left.to_string());
        }
    }
    Ok(state)
}

/// Runs `git ARGS` for `path` over the connection, holding one of its session slots. Fails
/// with the slave's own words.
async fn run(
    home: &Home,
    conn: &Connection,
    path: &Path,
    args: &[String],
) -> Result<Output, String> {
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
        cmd.output()
            .await
            .map_err(|e| format!("cannot run git: {e}"))?
    };
    if out.status.success() {
        Ok(out)
    } else {
        Err(remote_words(&String::from_utf8_lossy(&out.stderr)))
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
