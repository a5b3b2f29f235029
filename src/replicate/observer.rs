//! What the scheduler tells whoever counts its work (the daemon's metrics): each mirror push
//! that reached a slave or failed, how long it took and what it sent. A seam, so that
//! replication does not depend on how it is counted, and counts nothing when nobody listens.

use std::time::Duration;

use crate::names::AccountName;

/// How one attempt ended, as far as counting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// The slave was asked and has the state; `bytes` of pack went to it (0 when it
    /// needed no objects).
    Pushed { bytes: u64 },
    /// The attempt failed; `reason` is [`super::PushError::reason`].
    Failed { reason: &'static str },
}

/// Told of every mirror push that asked a slave or failed. Attempts that found nothing
/// changed since the slave last confirmed (a sweep over thousands of repos) ask nobody and
/// are not told: they are not pushes.
pub(crate) trait PushObserver: Send + Sync + 'static {
    /// One attempt to push to `slave` ended after `took`.
    fn finished(&self, slave: &AccountName, took: Duration, observed: Observed);
}
