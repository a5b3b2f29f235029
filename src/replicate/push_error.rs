//! Why a mirror push failed, and whose fault that is.
//!
//! The scheduler must act differently on each: a broken connection is re-opened and the peer
//! probed until it answers; a slave's refusal waits for its backoff; a failure here (our own
//! repo unreadable, the queue unwritable) is retried without blaming the slave or tearing down a
//! healthy connection. [`PushError::blame`] is that classification; [`PushError::words`] is
//! what `status`, the log and a pusher see, on one line.

use thiserror::Error;

use super::mastered::NotMastered;
use super::queue::QueueError;
use crate::names::{AccountName, RepoName};
use crate::proto::{FATAL_PREFIX, NO_SUCH_REPO};
use crate::ssh::PeerError;
use crate::ssh::remote::Finished;
use crate::text::{one_line, with_sources};

/// Who is at fault for a failed mirror push, which decides what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blame {
    /// The connection or ssh: reconnect, probe the peer, retry when it is back.
    Transport,
    /// The slave answered and said no: retry after the backoff, or when someone asks.
    Slave,
    /// This server: retry after the backoff; the slave and its connection are fine.
    Local,
}

/// Why one mirror push of one repo to one slave failed.
#[derive(Debug, Error)]
pub(crate) enum PushError {
    /// The peer could not be reached at all.
    #[error(transparent)]
    Connect(#[from] PeerError),
    /// The exchange broke off: the session died, or nothing came back in time.
    #[error("{0}")]
    Transport(String),
    /// The slave answered and refused: its `FATAL:` line, git's error, or a rejected ref.
    #[error("{0}")]
    Refused(String),
    /// The slave answered that it has no such repo (a mirror push creates it).
    #[error("{0}")]
    Missing(String),
    /// The mirror push's worker thread died without an answer.
    #[error("mirror push failed")]
    Worker(#[source] tokio::task::JoinError),
    /// This repo's mirror settings could not be read, or the repo is not where it was: the
    /// work stays pending (only settings that positively drop the slave end it).
    #[error("cannot tell this repo's slaves: {0}")]
    Settings(#[source] NotMastered),
    /// Our own copy could not be opened or read (libgit2's message; its class and code stay
    /// in the error).
    #[error("{}", .0.message())]
    LocalRepo(git2::Error),
    /// The pack could not be built here (`git pack-objects` failed, or could not start).
    #[error("{0}")]
    Pack(String),
    /// Our own copy holds refs that cannot be mirrored; every other ref was pushed.
    #[error("{0}")]
    Incomplete(String),
    /// The queue could not be read before the push.
    #[error("cannot read the queue")]
    QueueRead(#[source] QueueError),
    /// The slave has the state, but the queue could not record it.
    #[error("cannot record success")]
    QueueRecord(#[source] QueueError),
    /// The daemon stopped before the push was done (told to waiters).
    #[error("daemon stopped")]
    Stopped,
    /// Held back until the slave applies a store operation on the same name (a delete, a
    /// rename); retried on the backoff, and submitted again by the operation's sender.
    #[error("{0}")]
    Held(String),
    /// The repo is no longer mastered here with this slave (told to waiters, not retried).
    #[error("{slave} is no longer a slave of {repo} here")]
    NotSlave { repo: RepoName, slave: AccountName },
}

impl PushError {
    /// Whose fault it is; see [`Blame`].
    pub(crate) fn blame(&self) -> Blame {
        match self {
            PushError::Connect(PeerError::Connect { .. })
            | PushError::Transport(_)
            | PushError::Worker(_) => Blame::Transport,
            PushError::Refused(_) | PushError::Missing(_) | PushError::Held(_) => Blame::Slave,
            PushError::Connect(PeerError::Local(_))
            | PushError::Settings(_)
            | PushError::LocalRepo(_)
            | PushError::Pack(_)
            | PushError::Incomplete(_)
            | PushError::QueueRead(_)
            | PushError::QueueRecord(_)
            | PushError::Stopped
            | PushError::NotSlave { .. } => Blame::Local,
        }
    }

    /// A short, fixed name for the kind of failure, for counting failures by kind (a metric
    /// label must come from a small fixed set, never from the slave's words):
    /// `unreachable` (no connection), `transport` (the exchange broke off), `refused`,
    /// `missing` (the slave has no such repo), `held` (waiting for a store operation),
    /// `local` (this server's side).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            PushError::Connect(PeerError::Connect { .. }) => "unreachable",
            PushError::Transport(_) | PushError::Worker(_) => "transport",
            PushError::Refused(_) => "refused",
            PushError::Missing(_) => "missing",
            PushError::Held(_) => "held",
            PushError::Connect(PeerError::Local(_))
            | PushError::Settings(_)
            | PushError::LocalRepo(_)
            | PushError::Pack(_)
            | PushError::Incomplete(_)
            | PushError::QueueRead(_)
            | PushError::QueueRecord(_)
            | PushError::Stopped
            | PushError::NotSlave { .. } => "local",
        }
    }

    /// The error and its sources on one line, as recorded in the queue and shown in `status`.
    pub(crate) fn words(&self) -> String {
        one_line(&with_sources(self))
    }

    /// A failed exchange, classified: when the remote command never ran or its session broke,
    /// the connection is at fault (reconnect); when the slave answered, it refused (its words).
    pub(crate) fn from_exchange(what: &str, finished: Option<&Finished>, messages: &str) -> Self {
        let Some(f) = finished else {
            return PushError::Transport(what.to_string());
        };
        if f.stderr.contains(FATAL_PREFIX) {
            let words = remote_words(&f.stderr);
            if words.ends_with(NO_SUCH_REPO) {
                return PushError::Missing(words);
            }
            return PushError::Refused(words);
        }
        let words = match said(&format!("{}\n{messages}", f.stderr)) {
            Some(said) => format!("{what}: {said}"),
            None => what.to_string(),
        };
        if f.exited.is_none() {
            PushError::Transport(words)
        } else {
            PushError::Refused(words)
        }
    }
}

/// The slave's own words from a failed command's stderr, on one line: gitmirror's `FATAL:`
/// line when there is one, else git's error lines.
pub(crate) fn remote_words(stderr: &str) -> String {
    said(stderr).unwrap_or_else(|| "failed without a message".to_string())
}

/// What [`remote_words`] finds, if there is anything.
fn said(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim_start_matches("remote: ").trim())
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(fatal) = lines.iter().find(|l| l.starts_with(FATAL_PREFIX)) {
        return Some(fatal.trim_start_matches(FATAL_PREFIX).to_string());
    }
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("error:") || l.starts_with("fatal:") || l.starts_with("! "))
        .collect();
    let chosen = if errors.is_empty() { lines } else { errors };
    let text = one_line(&chosen.join("\n"));
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::super::queue::Queue;
    use super::*;
    use crate::fs::FsError;

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

    #[test]
    fn exchanges_are_blamed_on_whoever_failed() {
        let finished = |stderr: &str, exited| Finished {
            stderr: stderr.to_string(),
            exited,
        };
        // No remote command at all: the connection.
        let e = PushError::from_exchange("cannot start", None, "");
        assert_eq!((e.blame(), e.reason()), (Blame::Transport, "transport"));
        // The session broke before an exit status.
        let e = PushError::from_exchange("early EOF", Some(&finished("", None)), "");
        assert_eq!(e.blame(), Blame::Transport);
        // The slave has no such repo: the one refusal a push answers by creating it.
        let f = finished(
            "FATAL: server2 refuses testing from server1: no such repo here\n",
            Some(false),
        );
        let e = PushError::from_exchange("listing failed", Some(&f), "");
        assert!(matches!(e, PushError::Missing(_)), "{e:?}");
        assert_eq!(e.reason(), "missing");
        // The slave's forced command refused, in its own words.
        let f = finished(
            "FATAL: server2 refuses testing from server1: no\n",
            Some(false),
        );
        let e = PushError::from_exchange("push failed", Some(&f), "");
        assert_eq!((e.blame(), e.reason()), (Blame::Slave, "refused"));
        assert_eq!(e.words(), "server2 refuses testing from server1: no");
        // git on the slave said no, and exited.
        let f = finished("error: cannot lock ref\n", Some(false));
        let e = PushError::from_exchange("push failed", Some(&f), "");
        assert_eq!(
            (e.blame(), e.words().as_str()),
            (Blame::Slave, "push failed: error: cannot lock ref")
        );
    }

    #[test]
    fn a_local_queue_failure_is_blamed_on_this_server() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::new(dir.path());
        let repo = RepoName::parse("r").unwrap();
        // The record cannot be read: a directory stands where its file should be.
        let file = dir.path().join("r.json");
        std::fs::create_dir(&file).unwrap();
        let e = PushError::QueueRead(queue.load(&repo).unwrap_err());
        assert_eq!(e.blame(), Blame::Local);
        // The OS's words once, though both the queue's error and its source carry them.
        assert_eq!(
            e.words(),
            format!(
                "cannot read the queue: cannot read {}: Is a directory (os error 21)",
                file.display()
            )
        );
        let no_dir = FsError {
            action: "cannot create directory",
            path: "/tmp/x".into(),
            source: std::io::Error::other("read-only file system"),
        };
        assert_eq!(
            PushError::Connect(PeerError::from(no_dir)).blame(),
            Blame::Local
        );
    }
}
