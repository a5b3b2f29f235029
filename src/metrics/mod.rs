//! Prometheus metrics: what the daemon serves at `GET /metrics` when `[metrics] listen` is
//! set, and what `gitmirror metrics` prints once.
//!
//! Two kinds of series, from two places:
//! - gauges read from durable state at each scrape ([`collect`]): per slave the repos
//!   pending and the age of the oldest pending push, the queue's depth, each pull and push
//!   mirror's last success and failures, what the last verify found. Read from the same
//!   records `gitmirror status` reads, so they are right after a restart and the same with
//!   or without a daemon;
//! - counters and a histogram only a running daemon has ([`registry`]): mirror pushes,
//!   their failures by reason, their durations and the bytes they sent, as the scheduler
//!   tells them (through [`crate::replicate::observer`]), and which peer connections are up.
//!
//! [`registry`] puts both into one exposition (prometheus-client writes the format);
//! [`http`] serves it.

pub(crate) mod collect;
pub(crate) mod http;
pub(crate) mod registry;

use thiserror::Error;

/// Why metrics could not be produced.
#[derive(Debug, Error)]
pub(crate) enum MetricsError {
    /// prometheus-client could not write the exposition.
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
    /// The scrape's worker thread died.
    #[error("cannot read the metrics: {0}")]
    Worker(#[from] tokio::task::JoinError),
}
