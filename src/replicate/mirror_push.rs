//! One mirror push: what makes one slave's copy of one repo identical to this server's, over
//! an open peer connection, speaking git's protocol in the daemon (see [`super::send_pack`]).
//!
//! Changed refs are pushed forced and refs the slave has and the master lacks are deleted,
//! leaving each server's own `refs/gitmirror/` alone; HEAD travels as a push option the
//! slave's hook applies. A push option needs a ref update to ride on, so when only HEAD
//! differs it rides on a throwaway ref ([`SET_HEAD_REF`]) that the slave's hook deletes again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::advertisement::Advertisement;
use super::pack::Sent;
use super::push_error::PushError;
use super::ref_state::RefState;
use super::send_pack::{self, Command};
use crate::names::RepoName;
use crate::proto::{DIVERGED_PREFIX, ORPHANED_PREFIX, SET_HEAD_REF};
use crate::ssh::Connection;

/// How much to check before pushing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum When {
    /// Push straight away: the caller knows refs changed (a user's push just landed).
    Always,
    /// Compare with the slave's refs and HEAD first (one round trip to its upload-pack) and
    /// push only what differs.
    IfDifferent,
    /// Compare with what the slave last confirmed, without asking it; only if that differs,
    /// compare with the slave (or, when it never confirmed anything, push straight away).
    IfChanged,
}

/// What a mirror push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Refs were pushed.
    Refs,
    /// Only HEAD differed, and was set.
    Head,
    /// The slave already matched.
    Nothing,
}

/// What a mirror push did, and what the slave said about refs it had of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    /// What was pushed.
    pub(crate) pushed: Pushed,
    /// The slave's report of refs changed behind the master's back (kept on the slave under
    /// `refs/gitmirror/diverged/`), if it had any.
    pub(crate) diverged: Option<String>,
    /// The biggest pack sent, if any was.
    pub(crate) pack: Option<Sent>,
}

/// Makes `repo` on the connection's peer identical to `local` (the state at `path`).
/// `When::IfChanged` is decided by the caller before connecting; here it means "compare
/// with the slave unless it never confirmed anything", given by `confirmed`.
pub(crate) async fn mirror_push(
    conn: Arc<Connection>,
    repo: &RepoName,
    path: &Path,
    epoch: u64,
    local: RefState,
    when: When,
    confirmed: bool,
) -> Result<Done, PushError> {
    let compare = match when {
        When::Always => false,
        When::IfDifferent => true,
        When::IfChanged => confirmed,
    };
    // One session slot for the whole push: its exchanges follow one another.
    let _slot = conn.owned_slot().await;
    let job = Job {
        conn: &conn,
        repo,
        path,
        epoch,
    };
    // The exchange's state (buffers, the pack's stream) is allocated only now, with a slot:
    // a bulk request spawns a task for every repo and slave, and thousands wait above.
    Box::pin(job.mirror(&local, compare)).await
}

/// One mirror push's work.
struct Job<'a> {
    conn: &'a Connection,
    repo: &'a RepoName,
    path: &'a Path,
    /// The epoch this server masters the repo at.
    epoch: u64,
}

/// What one push exchange did.
struct Exchange {
    /// Whether anything was pushed (no ref differing means nothing was sent).
    sent: bool,
    /// Only the deletions that stood in the way of creations were sent (`a` deleted so that
    /// `a/b` can be created): the rest needs another exchange.
    partial: bool,
    /// The remote's messages (hook output).
    messages: String,
    pack: Option<Sent>,
}

impl Job<'_> {
    async fn mirror(&self, local: &RefState, compare: bool) -> Result<Done, PushError> {
        let nothing = || Done {
            pushed: Pushed::Nothing,
            diverged: None,
            pack: None,
        };
        // Only a slave that says it has no such repo is answered by pushing, which creates it
        // there; any other refusal, a broken connection or a failure here is an error (and a
        // master with no refs must not take a refusal for an empty slave).
        let remote = if compare || local.refs.is_empty() {
            match self.remote_state().await {
                // What the slave has under a name we skip is left alone, so it is no difference.
                Ok(mut r) => {
                    r.refs.retain(|name, _| !local.skipped.contains_key(name));
                    Some(r)
                }
                Err(PushError::Missing(_)) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        if let Some(remote) = &remote {
            if remote.matches(local) {
                // Nothing to carry but this server's claim: a session with no update puts it
                // to the slave, which records a promoted master's epoch before receive-pack
                // runs, or refuses a master that was replaced, naming the one it knows (this
                // server then steps down).
                send_pack::push(self.conn, self.repo, self.path, self.epoch, None, |_| {
                    Ok(Vec::new())
                })
                .await?;
                return Ok(nothing());
            }
            if remote.refs == local.refs {
                return self.set_head(local).await;
            }
        }
        if local.refs.is_empty() && remote.as_ref().is_none_or(|r| r.refs.is_empty()) {
            // Nothing here; a slave without the repo needs nothing yet.
            return Ok(nothing());
        }
        let mut exchange = self.push(local).await?;
        let mut messages = std::mem::take(&mut exchange.messages);
        let mut pack = exchange.pack;
        // Conflicting deletions went first; the rest follows on a fresh listing. Bounded: a
        // second round finds no conflict unless the master changed in between.
        for _ in 0..2 {
            if !exchange.partial {
                break;
            }
            exchange = self.push(local).await?;
            exchange.sent = true;
            messages.push_str(&exchange.messages);
            pack = pack.max(exchange.pack);
        }
        if exchange.partial {
            return Err(PushError::Refused(
                "the slave still has refs in the way of new ones after deleting them".into(),
            ));
        }
        if !exchange.sent {
            // No ref differed, so no push option went either: make sure of HEAD.
            let remote = self.remote_state().await?;
            if remote.head != local.head {
                return self.set_head(local).await;
            }
            return Ok(nothing());
        }
        Ok(Done {
            pushed: Pushed::Refs,
            diverged: diverged_report(&messages),
            pack,
        })
    }

    /// Carries a HEAD-only change on [`SET_HEAD_REF`], pointed at any commit the slave has.
    async fn set_head(&self, local: &RefState) -> Result<Done, PushError> {
        let (Some(head), Some(any)) = (&local.head, local.refs.values().next()) else {
            return Ok(Done {
                pushed: Pushed::Nothing,
                diverged: None,
                pack: None,
            });
        };
        // A carrier left behind (the slave's hook could not apply a HEAD) is replaced, not
        // tripped over: the update names its value.
        let command = |ad: &Advertisement| Command {
            name: SET_HEAD_REF.to_string(),
            old: ad.own.get(SET_HEAD_REF).cloned(),
            new: Some(any.clone()),
        };
        let pushed = send_pack::push(
            self.conn,
            self.repo,
            self.path,
            self.epoch,
            Some(head),
            |ad| Ok(vec![command(ad)]),
        )
        .await?;
        if let Some((_, answer)) = pushed
            && !answer.rejected.is_empty()
        {
            return Err(rejected(&answer.rejected));
        }
        Ok(Done {
            pushed: Pushed::Head,
            diverged: None,
            pack: None,
        })
    }

    /// The slave's refs and HEAD, as its upload-pack advertises them.
    async fn remote_state(&self) -> Result<RefState, PushError> {
        let ad = send_pack::list(self.conn, self.repo).await?;
        Ok(RefState {
            head: ad.head,
            refs: ad.refs,
            skipped: BTreeMap::new(),
        })
    }

    /// Pushes whatever makes the slave's advertised refs equal to `local` (changed refs,
    /// forced; refs it lacks, deleted), carrying HEAD as a push option.
    async fn push(&self, local: &RefState) -> Result<Exchange, PushError> {
        let mut partial = false;
        let path = self.path;
        let plan = |ad: &Advertisement| {
            let git = git2::Repository::open_bare(path).map_err(PushError::LocalRepo)?;
            let missing = ad
                .refs
                .keys()
                .filter(|n| !local.refs.contains_key(*n) && !local.skipped.contains_key(*n));
            // One pass over the master's refs can miss one that a concurrent pack-refs
            // moves: a deletion goes only for a name that is still absent when looked up
            // again. (A ref that reappears reaches the slave with the next comparison.)
            let deletions: Vec<&String> = still_absent(&git, missing);
            // git cannot delete `a` and create `a/b` in one push: deletions in the way of a
            // new ref go alone first.
            let blocking: Vec<&String> = deletions
                .iter()
                .copied()
                .filter(|d| blocks(d, &local.refs))
                .collect();
            if blocking.is_empty() {
                Ok(send_pack::commands(&local.refs, &ad.refs, &deletions))
            } else {
                partial = true;
                Ok(send_pack::commands(&BTreeMap::new(), &ad.refs, &blocking))
            }
        };
        let pushed = send_pack::push(
            self.conn,
            self.repo,
            self.path,
            self.epoch,
            local.head.as_deref(),
            plan,
        )
        .await?;
        let Some((_, answer)) = pushed else {
            return Ok(Exchange {
                sent: false,
                partial: false,
                messages: String::new(),
                pack: None,
            });
        };
        if !answer.rejected.is_empty() {
            return Err(rejected(&answer.rejected));
        }
        Ok(Exchange {
            sent: true,
            partial,
            messages: answer.messages,
            pack: answer.pack,
        })
    }
}

fn rejected(refs: &[String]) -> PushError {
    PushError::Refused(format!("the slave rejected {}", refs.join(", ")))
}

/// The names among `names` that this repo has no ref for, each looked up on its own.
fn still_absent<'n>(
    git: &git2::Repository,
    names: impl Iterator<Item = &'n String>,
) -> Vec<&'n String> {
    names
        .filter(|name| {
            matches!(git.find_reference(name), Err(e) if e.code() == git2::ErrorCode::NotFound)
        })
        .collect()
}

/// Whether the slave's ref `deleted` stands in the way of one of `refs`: a ref cannot be both
/// a file and a directory (`a` and `a/b`).
fn blocks(deleted: &str, refs: &BTreeMap<String, String>) -> bool {
    let below = format!("{deleted}/");
    let under = refs
        .range::<str, _>((
            std::ops::Bound::Included(below.as_str()),
            std::ops::Bound::Unbounded,
        ))
        .next()
        .is_some_and(|(n, _)| n.starts_with(&below));
    let above = deleted
        .match_indices('/')
        .any(|(i, _)| refs.contains_key(&deleted[..i]));
    under || above
}

/// The slave's `DIVERGED:` and `ORPHANED:` lines (refs it kept) from its messages, joined
/// on one line.
fn diverged_report(messages: &str) -> Option<String> {
    let lines: Vec<&str> = messages
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches("remote: ");
            l.strip_prefix(DIVERGED_PREFIX)
                .or_else(|| l.strip_prefix(ORPHANED_PREFIX))
        })
        .map(str::trim)
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ref_is_deleted_on_the_slave_only_if_it_is_still_absent_here() {
        let dir = tempfile::tempdir().unwrap();
        let git = git2::Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = git.treebuilder(None).unwrap().write().unwrap();
        let tree = git.find_tree(tree).unwrap();
        let commit = git
            .commit(Some("refs/heads/kept"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        // A ref the first listing missed (say, moved by pack-refs meanwhile) exists now.
        git.reference("refs/heads/packed", commit, false, "t")
            .unwrap();
        let names: Vec<String> = ["refs/heads/packed", "refs/heads/gone", "refs/heads/kept"]
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(still_absent(&git, names.iter()), [&names[1]]);
    }

    #[test]
    fn a_deletion_blocks_a_ref_below_or_above_it() {
        let refs: BTreeMap<String, String> = [
            "refs/heads/a-x",
            "refs/heads/a.y",
            "refs/heads/a/b",
            "refs/heads/c",
            "refs/heads/ab",
        ]
        .iter()
        .map(|n| (n.to_string(), String::new()))
        .collect();
        assert!(blocks("refs/heads/a", &refs));
        assert!(blocks("refs/heads/c/d", &refs));
        assert!(!blocks("refs/heads/b", &refs));
        assert!(!blocks("refs/heads/a/bc", &refs));
        assert!(!blocks("refs/heads/x/y", &refs));
    }
}
