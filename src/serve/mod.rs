//! Serving clients: everything that runs because someone connected over ssh.
//!
//! sshd runs one of two forced commands: [`user_shell`] for a user's key, [`peer_shell`] for
//! another gitmirror server's. Both parse the client's command ([`command`]), decide and log
//! through [`access`], and exec git through [`git`] in an environment we build. git then runs
//! our [`hook`]s inside receive-pack; a master daemon's push runs receive-pack under
//! [`mirror_receive`], which does the slave's hook work itself, or, for a repo this server
//! does not have yet, [`fresh_receive`], which takes the push without receive-pack. A user's
//! push to a slave with `mirror.redirect` is carried to the master by an ssh login the user
//! shell becomes; there the peer shell hands it to the user shell's own push decision. A
//! master's store operations (delete, rename, ...) land in [`peer_store_op`].

pub(crate) mod access;
pub(crate) mod command;
pub(crate) mod fresh_receive;
pub(crate) mod git;
pub(crate) mod hook;
pub(crate) mod mirror_receive;
pub(crate) mod peer_shell;
pub(crate) mod peer_store_op;
pub(crate) mod user_shell;
