//! gitmirror: a self-hosted git server over ssh whose point is replication.
//!
//! Every repo has one master server and any number of slaves; the master keeps the slaves
//! identical to itself. This crate is the whole server; `main.rs` only parses arguments.
//!
//! Data flows one way: the command line picks a [`home::Home`]; the home's config files
//! ([`config`], [`rules`]) drive the library; the library talks to git ([`git`], [`store`]) and
//! ssh ([`keys`]).
//!
//! - [`names`], [`command`]: everything a client sends is validated here first.
//! - [`shell`]: the forced command for users; [`hook`]: what runs inside git's receive-pack.
//! - [`home`], [`keys`], [`compile`]: the administrator's commands.

pub mod command;
pub mod compile;
pub mod conffile;
pub mod config;
pub mod daemon;
pub mod fsutil;
pub mod git;
pub mod home;
pub mod hook;
pub mod keys;
pub mod log;
pub mod mirror;
pub mod names;
pub mod peer_shell;
pub mod peers;
pub mod push;
pub mod queue;
pub mod replicator;
pub mod rules;
pub mod shell;
pub mod status;
pub mod store;
pub mod transport;
