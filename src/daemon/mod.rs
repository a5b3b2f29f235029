//! `gitmirror daemon`: the long-running replicator, and how hooks and commands talk to it.
//!
//! The daemon keeps one multiplexed ssh connection per peer and works the durable queue
//! (see [`crate::replicate::scheduler`]). It listens on a unix socket in the home; one runs
//! per home (a lock file sees to it). Hooks start one on demand when none answers, so an
//! administrator gets the fast path without configuring anything; `gitmirror@ACCOUNT.service`
//! runs it under systemd for those who want it supervised.
//!
//! - [`protocol`]: the request and reply lines, parsed and printed in one place.
//! - [`server`]: the daemon itself.
//! - [`client`]: asking it (and starting it when none answers).
//! - [`request`]: `request-push` and sync waits as people and peers make them, on top of the
//!   client (or, on a slave, over ssh to the repo's master).
//! - [`verifier`]: verify, asked for and periodic, with its repairs.

pub(crate) mod client;
pub(crate) mod protocol;
pub(crate) mod request;
pub(crate) mod server;
pub(crate) mod verifier;

use std::path::PathBuf;

use thiserror::Error;

use crate::fs::FsError;
use crate::home::Home;

/// What can go wrong running or reaching the daemon.
#[derive(Debug, Error)]
pub(crate) enum DaemonError {
    #[error("a daemon already runs for this home (pid {0})")]
    AlreadyRunning(String),
    #[error("the daemon did not answer: {0}")]
    Unreachable(String),
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The daemon's socket: in the home's state directory, or under /tmp when that path is too
/// long for a unix socket.
pub(crate) fn socket_path(home: &Home) -> Result<PathBuf, FsError> {
    let name = "daemon.sock";
    Ok(home
        .socket_dir(&home.state_dir(), name.len() + 1)?
        .join(name))
}
