//! External mirrors: repos whose master pulls from a git URL elsewhere (an upstream), or pushes
//! every accepted push to one (a downstream). Only a repo's master talks to them; its slaves
//! get the result through normal replication.
//!
//! - [`remote`]: how git runs against an external remote (cleared environment, credentials,
//!   pinned host keys).
//! - [`manifest`]: `repo` manifests: parsed as `repo` parses them, and imported as one pull
//!   mirror per project plus the manifest's own repository.

pub(crate) mod manifest;
pub(crate) mod remote;
