//! gitmirror: a self-hosted git server over ssh whose point is replication.
//!
//! Every repo has one master server and any number of slaves; the master keeps the slaves
//! identical to itself. This crate is the whole server; `main.rs` only parses arguments and
//! calls [`cli::Cli::run`]. Only `cli` is public: everything else is the crate's own.
//!
//! # Layout
//!
//! Each folder is a concept, each file one noun. Imports go one way, from the top of this list
//! to the bottom, never back up:
//!
//! - `cli/`: one file per subcommand: its output text and exit code.
//! - `serve/`: what runs because someone connected: the command parser, the access decision,
//!   the user and peer shells, launching git, and the hooks git runs (`serve/hook/`:
//!   pre-receive, post-receive on a master, the same on a slave).
//! - `admin/`: what an administrator runs: `init`, keys and `authorized_keys`, `compile`
//!   (which queues new slaves for the daemon), and the admin repo (`admin_repo/`: a
//!   configuration read from a commit, the gate its pushes pass, `init --admin`, applying it),
//!   and `import_gitolite/` (a gitolite.conf and keydir as `repos.toml` and keys: reading the
//!   conf as gitolite does, wild patterns as globs, the conversion in gitolite's rule order).
//! - `daemon/`: the long-running replicator's socket `protocol`, its `server`, the `client`
//!   hooks and commands use, and `request` (request-push and sync waits, over the client).
//! - `metrics/`: Prometheus metrics: gauges read from durable state at each scrape
//!   (`collect`), the daemon's live counters and the exposition (`registry`), and the HTTP
//!   endpoint the daemon serves (`http`); `gitmirror metrics` prints the gauges once.
//! - `external/`: external mirrors: pulling a repo from an upstream URL, pushing it to
//!   downstream ones, and `repo` manifests; how git runs against such remotes.
//! - `replicate/`: the durable `queue`, the `scheduler` that works it (behind the `pusher`
//!   seam, telling the `observer` seam of each push), one `mirror_push` (git's push protocol
//!   in `send_pack`, the pack from `pack`: libgit2 for a small repo, `git pack-objects` for a
//!   big one), its `push_error`, how results and `status` read, and `verify` (asking slaves
//!   what they hold: digests, the wire format, the record `status` shows).
//! - `repo/`: the repository `store`, the hooks installed in it, per-repo mirror settings,
//!   the mastership and its epoch, the orphaned refs a change of master left.
//! - `ssh/`: the outbound connection `pool` (one multiplexed OpenSSH connection per peer) and
//!   `remote` commands over a session on it, for git's protocol; the `login` a forced command
//!   becomes to carry a user's push to the repo's master.
//! - `config/`: `gitmirror.toml`, `repos.toml` (`rules/`: its tables, each rule, repo name
//!   patterns, and the access decision; and the index of it the shells read one repo at a
//!   time), and the TOML reader whose errors say `file:line`.
//! - Leaves, used by all (in an order of their own: `LEVELS` in `layout_tests.rs`): `proto`
//!   (the contract between gitmirror processes and servers: push options, reserved refs,
//!   verbs, environment names, git-config keys, how a repo name becomes a file name), `names`
//!   (repo and server names, validated), `home` (the paths of a server home), `invocation`
//!   (how gitmirror names itself in authorized_keys lines and hooks), `fs` (atomic writes,
//!   locks), `text` (errors on one line), `log`.
//!
//! The command line builds a config, the config drives the library, the library talks to git
//! and ssh.

pub mod cli;

mod admin;
mod config;
mod daemon;
mod external;
mod fs;
mod home;
mod invocation;
mod log;
mod metrics;
mod names;
mod progress;
mod proto;
mod replicate;
mod repo;
mod serve;
mod ssh;
mod text;

#[cfg(test)]
mod layout_tests;
