//! One mirror push: what makes one slave's copy of one repo identical to this server's, over
//! an open peer connection, with libgit2 (see [`crate::ssh::transport`]).
//!
//! Changed refs are pushed forced and refs the slave has and the master lacks are deleted,
//! leaving each server's own `refs/gitmirror/` alone; HEAD travels as a push option the
//! slave's hook applies. A push option needs a ref update to ride on, so when only HEAD
//! differs it rides on a throwaway ref ([`SET_HEAD_REF`]) that the slave's hook deletes again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::push_error::PushError;
use super::ref_state::RefState;
use crate::names::RepoName;
use crate::proto::{DIVERGED_PREFIX, HEAD_OPTION, OWN_NS, SET_HEAD_REF};
use crate::ssh::Connection;
use crate::ssh::transport::{MESSAGES_CAP, Registered};

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
}

/// Makes `repo` on the connection's peer identical to `local` (the state at `path`).
/// `When::IfChanged` is decided by the caller before connecting; here it means "compare
/// with the slave unless it never confirmed anything", given by `confirmed`. The git work
/// runs in libgit2 on a blocking thread (see [`crate::ssh::transport`]).
pub(crate) async fn mirror_push(
    conn: Arc<Connection>,
    repo: &RepoName,
    path: &Path,
    local: RefState,
    when: When,
    confirmed: bool,
) -> Result<Done, PushError> {
    let compare = match when {
        When::Always => false,
        When::IfDifferent => true,
        When::IfChanged => confirmed,
    };
    let runtime = tokio::runtime::Handle::current();
    let (repo, path) = (repo.clone(), path.to_path_buf());
    let slot = conn.owned_slot().await;
    let work = tokio::task::spawn_blocking(move || {
        // The session slot is held as long as this thread works, even past a timeout.
        let _slot = slot;
        let job = Job {
            conn: &conn,
            runtime,
            repo: &repo,
            path: &path,
        };
        job.mirror(&local, compare)
    });
    // Awaited to its end, never abandoned: a retry must not start a second transfer of the
    // same repo to the same slave while this one runs. Its socket's inactivity limits (see
    // `ssh::transport`) are what end a stalled exchange.
    match work.await {
        Ok(result) => result,
        // git2 panics on a ref name the slave advertises that is not UTF-8.
        Err(e) if e.is_panic() => Err(PushError::Refused(
            "the slave has a ref whose name is not UTF-8; gitmirror cannot mirror it".into(),
        )),
        Err(e) => Err(PushError::Worker(e)),
    }
}

/// One mirror push's blocking work.
struct Job<'a> {
    conn: &'a Connection,
    runtime: tokio::runtime::Handle,
    repo: &'a RepoName,
    path: &'a Path,
}

/// What libgit2 and the remote command said during one exchange.
struct Exchange {
    /// Whether anything was pushed (no ref differing means nothing was sent).
    sent: bool,
    /// Only the deletions that stood in the way of creations were sent (`a` deleted so that
    /// `a/b` can be created): the rest needs another exchange.
    partial: bool,
    /// The remote's messages (hook output), from the sideband and what followed it.
    messages: String,
}

impl Job<'_> {
    fn mirror(&self, local: &RefState, compare: bool) -> Result<Done, PushError> {
        let nothing = || Done {
            pushed: Pushed::Nothing,
            diverged: None,
        };
        // Only a slave that says it has no such repo is answered by pushing, which creates it
        // there; any other refusal, a broken connection or a failure here is an error (and a
        // master with no refs must not take a refusal for an empty slave).
        let remote = if compare || local.refs.is_empty() {
            match self.remote_state() {
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
                return Ok(nothing());
            }
            if remote.refs == local.refs {
                return self.set_head(local);
            }
        }
        if local.refs.is_empty() && remote.as_ref().is_none_or(|r| r.refs.is_empty()) {
            // Nothing here; a slave without the repo needs nothing yet.
            return Ok(nothing());
        }
        let mut exchange = self.push(Vec::new(), local.head.as_deref(), Some(local))?;
        let mut messages = std::mem::take(&mut exchange.messages);
        // Conflicting deletions went first; the rest follows on a fresh listing. Bounded: a
        // second round finds no conflict unless the master changed in between.
        for _ in 0..2 {
            if !exchange.partial {
                break;
            }
            exchange = self.push(Vec::new(), local.head.as_deref(), Some(local))?;
            exchange.sent = true;
            messages.push_str(&exchange.messages);
        }
        if exchange.partial {
            return Err(PushError::Refused(
                "the slave still has refs in the way of new ones after deleting them".into(),
            ));
        }
        if !exchange.sent {
            // No ref differed, so no push option went either: make sure of HEAD.
            let remote = self.remote_state()?;
            if remote.head != local.head {
                return self.set_head(local);
            }
            return Ok(nothing());
        }
        Ok(Done {
            pushed: Pushed::Refs,
            diverged: diverged_report(&messages),
        })
    }

    /// Carries a HEAD-only change on [`SET_HEAD_REF`], pointed at any commit the slave has.
    fn set_head(&self, local: &RefState) -> Result<Done, PushError> {
        let (Some(head), Some(any)) = (&local.head, local.refs.values().next()) else {
            return Ok(Done {
                pushed: Pushed::Nothing,
                diverged: None,
            });
        };
        self.push(vec![format!("+{any}:{SET_HEAD_REF}")], Some(head), None)?;
        Ok(Done {
            pushed: Pushed::Head,
            diverged: None,
        })
    }

    fn git(&self) -> Result<git2::Repository, PushError> {
        git2::Repository::open_bare(self.path).map_err(PushError::LocalRepo)
    }

    /// This repo's remote for the slave, through a freshly registered operation.
    fn remote<'r>(
        &self,
        git: &'r git2::Repository,
    ) -> Result<(git2::Remote<'r>, Registered), PushError> {
        let op = Registered::new(
            self.conn.session(),
            self.runtime.clone(),
            self.conn.io_timeout(),
        );
        let remote = git
            .remote_anonymous(&op.url(&self.repo.relative_dir()))
            .map_err(PushError::LocalRepo)?;
        Ok((remote, op))
    }

    /// The slave's refs and HEAD, as its upload-pack advertises them.
    fn remote_state(&self) -> Result<RefState, PushError> {
        let git = self.git()?;
        let (mut remote, op) = self.remote(&git)?;
        let listed = remote.connect(git2::Direction::Fetch).map(|()| {
            let mut state = RefState::default();
            for head in remote.list().into_iter().flatten() {
                let name = head.name();
                if name == "HEAD" {
                    state.head = head.symref_target().map(str::to_string);
                } else if !name.ends_with("^{}") && !name.starts_with(OWN_NS) {
                    state.refs.insert(name.to_string(), head.oid().to_string());
                }
            }
            state
        });
        let _ = remote.disconnect();
        drop(remote);
        let finished = op.finish();
        listed.map_err(|e| PushError::from_exchange(e.message(), finished.as_ref(), ""))
    }

    /// Pushes `specs`, or with `mirror_of` whatever makes the slave's advertised refs equal to
    /// that state (changed refs, force; refs it lacks, deleted), carrying HEAD as a push
    /// option.
    fn push(
        &self,
        mut specs: Vec<String>,
        head: Option<&str>,
        mirror_of: Option<&RefState>,
    ) -> Result<Exchange, PushError> {
        let git = self.git()?;
        let (mut remote, op) = self.remote(&git)?;
        let messages = std::cell::RefCell::new(Vec::new());
        let rejected = std::cell::RefCell::new(Vec::new());
        let mut partial = false;
        let result = (|| -> Result<bool, git2::Error> {
            remote.connect(git2::Direction::Push)?;
            if let Some(local) = mirror_of {
                let advertised: BTreeMap<String, String> = remote
                    .list()?
                    .iter()
                    .filter(|h| h.name().starts_with("refs/") && !h.name().starts_with(OWN_NS))
                    .map(|h| (h.name().to_string(), h.oid().to_string()))
                    .collect();
                // Send what differs (forced), delete what the slave has and we do not.
                specs.extend(
                    local
                        .refs
                        .iter()
                        .filter(|(n, oid)| advertised.get(*n) != Some(*oid))
                        .map(|(n, _)| format!("+{n}:{n}")),
                );
                let missing = advertised
                    .keys()
                    .filter(|n| !local.refs.contains_key(*n) && !local.skipped.contains_key(*n));
                // One pass over the master's refs can miss one that a concurrent pack-refs
                // moves: a deletion goes only for a name that is still absent when looked up
                // again. (A ref that reappears reaches the slave with the next comparison.)
                let deletions: Vec<&String> = still_absent(&git, missing);
                // git cannot delete `a` and create `a/b` in one push: deletions in the way of
                // a new ref go alone first.
                let blocking: Vec<String> = deletions
                    .iter()
                    .filter(|d| blocks(d, &local.refs))
                    .map(|d| format!(":{d}"))
                    .collect();
                if blocking.is_empty() {
                    specs.extend(deletions.iter().map(|n| format!(":{n}")));
                } else {
                    specs = blocking;
                    partial = true;
                }
            }
            if specs.is_empty() {
                return Ok(false);
            }
            let mut callbacks = git2::RemoteCallbacks::new();
            callbacks.sideband_progress(|data| {
                let mut kept = messages.borrow_mut();
                let room = MESSAGES_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..data.len().min(room)]);
                true
            });
            callbacks.push_update_reference(|name, status| {
                if let Some(why) = status {
                    rejected.borrow_mut().push(format!("{name}: {why}"));
                }
                Ok(())
            });
            let option = head.map(|h| format!("{HEAD_OPTION}{h}"));
            let options: Vec<&str> = option.iter().map(String::as_str).collect();
            let mut opts = git2::PushOptions::new();
            opts.remote_callbacks(callbacks)
                .remote_push_options(&options);
            remote.push(&specs, Some(&mut opts)).map(|()| true)
        })();
        let _ = remote.disconnect();
        drop(remote);
        let finished = op.finish();
        let mut bytes = messages.into_inner();
        if let Some(f) = &finished {
            bytes.extend(sideband_text(&f.rest));
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let sent = match result {
            Ok(sent) => sent,
            Err(e) => {
                return Err(PushError::from_exchange(
                    e.message(),
                    finished.as_ref(),
                    &text,
                ));
            }
        };
        let rejected = rejected.into_inner();
        if !rejected.is_empty() {
            return Err(PushError::Refused(format!(
                "the slave rejected {}",
                rejected.join(", ")
            )));
        }
        // The report came, but the slave's hook (HEAD, divergence) must have run to the end.
        if sent && finished.as_ref().and_then(|f| f.exited) != Some(true) {
            return Err(PushError::from_exchange(
                "the slave's receive-pack did not finish",
                finished.as_ref(),
                &text,
            ));
        }
        Ok(Exchange {
            sent,
            partial,
            messages: text,
        })
    }
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

/// The payload of sideband channel-2 (progress and hook output) packets in raw protocol
/// bytes.
fn sideband_text(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while raw.len() >= 4 {
        let Some(len) = std::str::from_utf8(&raw[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            break;
        };
        if len < 4 {
            raw = &raw[4..];
            continue;
        }
        if len > raw.len() {
            break;
        }
        if len > 5 && raw[4] == 2 {
            out.extend_from_slice(&raw[5..len]);
        }
        raw = &raw[len..];
    }
    out
}

/// The slave's `DIVERGED:` lines from its messages, joined on one line.
fn diverged_report(messages: &str) -> Option<String> {
    let lines: Vec<&str> = messages
        .lines()
        .filter_map(|l| {
            l.trim_start_matches("remote: ")
                .strip_prefix(DIVERGED_PREFIX)
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
