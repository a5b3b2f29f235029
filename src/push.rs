//! One mirror push: what makes one slave's copy of one repo identical to this server's, over
//! an open peer connection, with libgit2 (see [`crate::transport`]).
//!
//! Changed refs are pushed forced and refs the slave has and the master lacks are deleted,
//! leaving each server's own `refs/gitmirror/` alone; HEAD travels as a push option the
//! slave's hook applies. A push option needs a ref update to ride on, so when only HEAD differs it rides on
//! a throwaway ref ([`SET_HEAD_REF`]) that the slave's hook deletes again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::names::RepoName;
use crate::peers::Connection;
use crate::transport::Registered;

/// The push option that carries the master's HEAD to a slave.
pub const HEAD_OPTION: &str = "gitmirror.head=";

/// The throwaway ref that carries a HEAD-only change; the slave deletes it on arrival.
pub const SET_HEAD_REF: &str = "refs/gitmirror/set-head";

/// How much to check before pushing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
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
    /// The slave answered and refused (its `FATAL:` line, or a rejected ref).
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
            let Ok(name) = r.name() else {
                return Err(format!(
                    "ref {:?} is not UTF-8; gitmirror cannot mirror it",
                    String::from_utf8_lossy(r.name_bytes())
                ));
            };
            if name.starts_with(OWN_NS) {
                continue;
            }
            let Some(oid) = r.resolve().ok().and_then(|r| r.target()) else {
                continue;
            };
            // libgit2 sends a tree or blob named by a ref without its contents.
            if !points_at_history(&repo, oid) {
                return Err(format!(
                    "ref {name} points at a tree or blob; gitmirror cannot mirror it"
                ));
            }
            state.refs.insert(name.to_string(), oid.to_string());
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

/// Whether `oid` is a commit, or a tag that leads to one.
fn points_at_history(repo: &git2::Repository, oid: git2::Oid) -> bool {
    let Ok(object) = repo.find_object(oid, None) else {
        return false;
    };
    match object.kind() {
        Some(git2::ObjectType::Commit) => true,
        Some(git2::ObjectType::Tag) => object.peel(git2::ObjectType::Commit).is_ok(),
        _ => false,
    }
}

/// Makes `repo` on the connection's peer identical to `local` (the state at `path`).
/// `When::IfChanged` is decided by the caller before connecting; here it means "compare
/// with the slave unless it never confirmed anything", given by `confirmed`. The git work
/// runs in libgit2 on a blocking thread (see [`crate::transport`]).
pub async fn mirror_push(
    conn: Arc<Connection>,
    repo: &RepoName,
    path: &Path,
    local: RefState,
    when: When,
    confirmed: bool,
) -> Result<Done, Failure> {
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
    match tokio::time::timeout(GIT_TIMEOUT, work).await {
        Ok(Ok(result)) => result,
        // git2 panics on a ref name the slave advertises that is not UTF-8.
        Ok(Err(e)) if e.is_panic() => Err(Failure::Refused(
            "the slave has a ref whose name is not UTF-8; gitmirror cannot mirror it".into(),
        )),
        Ok(Err(e)) => Err(Failure::Transport(format!("mirror push failed: {e}"))),
        Err(_) => Err(Failure::Transport(format!(
            "no answer within {}s",
            GIT_TIMEOUT.as_secs()
        ))),
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
    /// The remote's messages (hook output), from the sideband and what followed it.
    messages: String,
}

impl Job<'_> {
    fn mirror(&self, local: &RefState, compare: bool) -> Result<Done, Failure> {
        let nothing = || Done {
            pushed: Pushed::Nothing,
            diverged: None,
        };
        // A refusal here (the slave lacks the repo) is answered by pushing, which creates it;
        // a broken connection is an error.
        let remote = if compare || local.refs.is_empty() {
            match self.remote_state() {
                Ok(r) => Some(r),
                Err(Failure::Refused(_)) => None,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        if let Some(remote) = &remote {
            if remote == local {
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
        let exchange = self.push(Vec::new(), local.head.as_deref(), Some(local))?;
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
            diverged: diverged_report(&exchange.messages),
        })
    }

    /// Carries a HEAD-only change on [`SET_HEAD_REF`], pointed at any commit the slave has.
    fn set_head(&self, local: &RefState) -> Result<Done, Failure> {
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

    fn git(&self) -> Result<git2::Repository, Failure> {
        git2::Repository::open_bare(self.path)
            .map_err(|e| Failure::Refused(e.message().to_string()))
    }

    /// This repo's remote for the slave, through a freshly registered operation.
    fn remote<'r>(
        &self,
        git: &'r git2::Repository,
    ) -> Result<(git2::Remote<'r>, Registered), Failure> {
        let op = Registered::new(self.conn.session(), self.runtime.clone());
        let remote = git
            .remote_anonymous(&op.url(&self.repo.relative_dir()))
            .map_err(|e| Failure::Refused(e.message().to_string()))?;
        Ok((remote, op))
    }

    /// The slave's refs and HEAD, as its upload-pack advertises them.
    fn remote_state(&self) -> Result<RefState, Failure> {
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
        listed.map_err(|e| failure(e.message(), finished.as_ref(), ""))
    }

    /// Pushes `specs`, or with `mirror_of` whatever makes the slave's advertised refs equal to
    /// that state (changed refs, force; refs it lacks, deleted), carrying HEAD as a push
    /// option.
    fn push(
        &self,
        mut specs: Vec<String>,
        head: Option<&str>,
        mirror_of: Option<&RefState>,
    ) -> Result<Exchange, Failure> {
        let git = self.git()?;
        let (mut remote, op) = self.remote(&git)?;
        let messages = std::cell::RefCell::new(Vec::new());
        let rejected = std::cell::RefCell::new(Vec::new());
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
                specs.extend(
                    advertised
                        .keys()
                        .filter(|n| !local.refs.contains_key(*n))
                        .map(|n| format!(":{n}")),
                );
            }
            if specs.is_empty() {
                return Ok(false);
            }
            let mut callbacks = git2::RemoteCallbacks::new();
            callbacks.sideband_progress(|data| {
                messages.borrow_mut().extend_from_slice(data);
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
            Err(e) => return Err(failure(e.message(), finished.as_ref(), &text)),
        };
        let rejected = rejected.into_inner();
        if !rejected.is_empty() {
            return Err(Failure::Refused(format!(
                "the slave rejected {}",
                rejected.join(", ")
            )));
        }
        // The report came, but the slave's hook (HEAD, divergence) must have run to the end.
        if sent && finished.as_ref().and_then(|f| f.exited) != Some(true) {
            return Err(failure(
                "the slave's receive-pack did not finish",
                finished.as_ref(),
                &text,
            ));
        }
        Ok(Exchange {
            sent,
            messages: text,
        })
    }
}

/// A failed exchange, classified: when the remote command never ran or its session broke,
/// the connection is at fault (reconnect); when the slave answered, it refused (its words).
fn failure(what: &str, finished: Option<&crate::transport::Finished>, messages: &str) -> Failure {
    let Some(f) = finished else {
        return Failure::Transport(what.to_string());
    };
    if f.stderr.contains("FATAL: ") {
        return Failure::Refused(remote_words(&f.stderr));
    }
    let words = match said(&format!("{}\n{messages}", f.stderr)) {
        Some(said) => format!("{what}: {said}"),
        None => what.to_string(),
    };
    if f.exited.is_none() {
        Failure::Transport(words)
    } else {
        Failure::Refused(words)
    }
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

/// The slave's own words from a failed command's stderr, on one line: gitmirror's `FATAL:`
/// line when there is one, else git's error lines.
pub fn remote_words(stderr: &str) -> String {
    said(stderr).unwrap_or_else(|| "failed without a message".to_string())
}

/// What [`remote_words`] finds, if there is anything.
fn said(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim_start_matches("remote: ").trim())
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(fatal) = lines.iter().find(|l| l.starts_with("FATAL: ")) {
        return Some(fatal.trim_start_matches("FATAL: ").to_string());
    }
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error:") || l.starts_with("fatal:") || l.starts_with("! "))
        .collect();
    let chosen = if errors.is_empty() { lines } else { errors };
    let text = crate::peers::one_line(&chosen.join("\n"));
    (!text.is_empty()).then_some(text)
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
