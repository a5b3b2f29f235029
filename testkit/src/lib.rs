//! gitmirror's test harness: real servers (a unix account, a gitmirror home, a real sshd on its
//! own 127.0.0.x address) and real clients (`ssh`, `git`) talking to them. The integration
//! tests, the replication benchmark and the demo all use it: `use gitmirror_testkit::*;`.
//!
//! Everything a test starts is stopped by pid and removed when its handle drops.
//!
//! Layout, one concern per module:
//! - `sandbox`: the per-process scratch directory, the gitmirror binary in it, [`Scratch`] dirs.
//! - `process`: running commands ([`run`], [`OutputExt`]), waiting ([`wait_for`]), and
//!   signalling processes found in /proc ([`signal`], [`process_tree`]).
//! - `unix_user`: the unix account each server runs as ([`UnixUser`]).
//! - `server`: one server ([`Server`]): its account, home and sshd, and what its
//!   administrator runs there.
//! - `client`: a person at a workstation ([`Client`], [`Key`]): real `ssh` and `git`.
//! - `cluster`: servers that mirror each other ([`Cluster`]) and the peer settings they need.
//! - `faults`: a server's sshd crashed, or frozen and thawed; a peer answering junk.
//! - `daemon`: the replication daemon a test starts ([`Daemon`]) and what it reports.
//! - `snapshot`: a server's disk before and after, to check a refusal changed nothing.
//! - `prometheus`: a real Prometheus scraping a daemon ([`Prometheus`]), and bare HTTP
//!   requests ([`http`]).

mod client;
mod cluster;
mod daemon;
mod faults;
mod measure;
mod process;
mod prometheus;
mod sandbox;
mod server;
mod snapshot;
mod unix_user;

pub use client::{Client, Key};
pub use cluster::Cluster;
pub use daemon::{Daemon, daemon_pid_in, stop_daemon_in};
pub use measure::{arg_flag, arg_value, machine, median, noise, peak_rss_kib, plain_target};
pub use process::{OutputExt, process_tree, run, signal, wait_for};
pub use prometheus::{HttpReply, PROMETHEUS, Prometheus, free_port, http};
pub use sandbox::{SSHD, Sandbox, Scratch, sandbox};
pub use server::Server;
pub use snapshot::{assert_unchanged, snapshot};
pub use unix_user::{UnixUser, processes_of};
