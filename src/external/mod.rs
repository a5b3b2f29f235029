//! External mirrors: repos whose master pulls from a git URL elsewhere (an upstream), or pushes
//! every accepted push to one (a downstream). Only a repo's master talks to them; its slaves
//! get the result through normal replication.
//!
//! - [`remote`]: how git runs against an external remote (cleared environment, credentials,
//!   pinned host keys).
//! - [`upstream_fetch`]: one fetch of a pull mirror, a decision per ref (new, fast-forward,
//!   diverged, gone upstream) applied in one transaction.
//! - [`upstream_record`]: each pull mirror's last attempt, success, error and log.
//! - [`upstream_scheduler`]: the daemon's schedule of fetches, and fetches asked for.
//! - [`downstream`]: one push to a downstream (push mirror), keeping refs the remote moved or
//!   alone has; [`downstream_queue`]: the durable record of what each downstream is owed;
//!   [`downstream_sender`]: the daemon task that works it.
//! - [`manifest`]: `repo` manifests: parsed as `repo` parses them, and imported as one pull
//!   mirror per project plus the manifest's own repository.

pub(crate) mod downstream;
pub(crate) mod downstream_queue;
pub(crate) mod downstream_sender;
pub(crate) mod manifest;
pub(crate) mod remote;
pub(crate) mod upstream_fetch;
pub(crate) mod upstream_record;
pub(crate) mod upstream_scheduler;
