//! External mirrors: repos whose master pulls from a git URL elsewhere (an upstream), or pushes
//! every accepted push to one (a downstream). Only a repo's master talks to them; its slaves
//! get the result through normal replication.
//!
//! - [`remote`]: how git runs against an external remote (cleared environment, credentials,
//!   pinned host keys).
//! - [`downstream`]: one push to a downstream (push mirror), keeping refs the remote moved or
//!   alone has; [`downstream_queue`]: the durable record of what each downstream is owed;
//!   [`downstream_sender`]: the daemon task that works it.

pub(crate) mod downstream;
pub(crate) mod downstream_queue;
pub(crate) mod downstream_sender;
pub(crate) mod remote;
