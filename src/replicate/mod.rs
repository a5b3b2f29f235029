//! Replication: making each slave's copy of a repo identical to this server's, and never
//! losing a push on the way.
//!
//! - [`queue`]: the durable record of which slaves are behind (fsynced before a pusher hears
//!   back), with generations and backoff.
//! - [`scheduler`]: works the queue down in the daemon: one push in flight and one queued per
//!   (repo, slave), retries, waiters. It pushes through the [`pusher`] seam.
//! - [`pusher`], [`mastered`]: pushing one repo to one slave for real, and which repos that is.
//! - [`mirror_push`], [`ref_state`]: one mirror push over a peer's ssh session; under it
//!   `send_pack` speaks git's protocol (`pkt_line`, `advertisement`) and `pack` builds the
//!   pack (libgit2 for a small repo, `git pack-objects` for a big one).
//! - [`push_error`]: why a mirror push failed, and whose fault it was.
//! - [`observer`]: the seam through which the scheduler's pushes are counted (metrics).
//! - [`report`], [`status`]: how results and the queue read for people.
//! - [`verify`]: asking each slave what it holds, to find drift no push announced.
//! - [`op_queue`], [`op_sender`]: the store operations (delete, restore, rename, purge) owed
//!   to slaves, durable, in order, and the daemon's task that sends them.

mod advertisement;
pub(crate) mod mastered;
pub(crate) mod mirror_push;
pub(crate) mod observer;
pub(crate) mod op_queue;
pub(crate) mod op_sender;
mod pack;
pub(crate) mod pkt_line;
pub(crate) mod promote;
pub(crate) mod push_error;
pub(crate) mod pusher;
pub(crate) mod queue;
pub(crate) mod ref_state;
pub(crate) mod report;
pub(crate) mod scheduler;
#[cfg(test)]
mod scheduler_tests;
mod send_pack;
pub(crate) mod status;
pub(crate) mod verify;

pub(crate) use mirror_push::When;
pub(crate) use push_error::PushError;
pub(crate) use report::{Delivered, Report, SlaveResult};
