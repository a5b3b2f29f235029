//! ssh to peers, outbound: [`pool`] keeps one multiplexed OpenSSH connection per peer, and
//! [`transport`] lets libgit2 speak the git protocol over a session on it.
//!
//! (Inbound, a peer is served by `serve::peer_shell`.)

pub(crate) mod pool;
pub(crate) mod transport;

pub(crate) use pool::{Connection, PeerError, Pool};
