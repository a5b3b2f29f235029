//! ssh to peers, outbound: [`pool`] keeps one multiplexed OpenSSH connection per peer, and
//! [`remote`] runs a command on a peer over a session of that connection, its stdin and
//! stdout as streams (a mirror push speaks git's protocol over them). [`login`] is the one
//! login a forced command becomes (a slave carrying a user's push to the master).
//!
//! (Inbound, a peer is served by `serve::peer_shell`.)

pub(crate) mod login;
pub(crate) mod pool;
pub(crate) mod remote;

pub(crate) use login::Login;
pub(crate) use pool::{Connection, PeerError, Pool};
