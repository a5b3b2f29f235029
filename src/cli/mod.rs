//! The command line: one file per subcommand, each owning its output text and exit code.
//!
//! `main.rs` parses; [`Cli::run`] finds the server home, reads the configuration and hands
//! over to the subcommand. Errors become here the one line a person (or, for the forced
//! commands and hooks, a remote git client) reads, and the exit code.

mod access;
mod compile;
mod completions;
mod daemon;
mod delete;
mod fetch;
mod forced;
mod hook;
mod import_gitolite;
mod import_manifest;
mod init;
mod keys;
mod man;
mod metrics;
mod ops;
mod orphans;
mod promote;
mod rename;
mod request_push;
mod status;
mod trash;
mod trust_host;
mod verify;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, LogConfig, ServerConfig};
use crate::home::Home;
use crate::log;
use crate::proto::FATAL_PREFIX;

/// A self-hosted git server over ssh that keeps every repo's slaves identical to its master.
#[derive(Parser)]
#[command(name = "gitmirror", version, about)]
pub struct Cli {
    /// The server home (default: $GITMIRROR_HOME, else $HOME).
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Also write logs to stderr.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create (or complete) a server home: config files, repositories/, the server's key pair.
    Init {
        /// This server's name among its peers, e.g. server1.
        #[arg(long)]
        hostname: String,
        /// Also create the admin repo, gitmirror-admin, from this server's configuration, and
        /// register NAME (with the key in KEYFILE) as a user with RW+ on it.
        #[arg(long, num_args = 2, value_names = ["NAME", "KEYFILE"])]
        admin: Option<Vec<String>>,
    },
    /// Register a user's public key and rewrite authorized_keys.
    AddUser {
        /// The user's name, as it appears in repos.toml.
        name: String,
        /// A file holding exactly one public key line.
        keyfile: PathBuf,
    },
    /// Register another gitmirror server's key (NAME.pub, as `init` wrote it there).
    AddMirroringPeer {
        /// The peer's public key file; its stem is the peer's hostname.
        keyfile: PathBuf,
    },
    /// Remove a user's key from authorized_keys.
    RemoveUser {
        /// The user's name.
        name: String,
    },
    /// Remove a peer server's key; it can no longer push here or ask for pushes.
    RemoveMirroringPeer {
        /// The peer's hostname.
        name: String,
    },
    /// Apply repos.toml: create missing repos, install hooks, write mirror settings. A repo
    /// promoted to another master than repos.toml names keeps it, and compile exits non-zero.
    Compile {
        /// Where a promotion made another server master than repos.toml names (or repos.toml
        /// gives no mirror settings), apply repos.toml anyway, at the next epoch.
        #[arg(long)]
        accept_config: bool,
    },
    /// Push a repo to its slaves now (on its master), or ask its master to (on a slave).
    RequestPush {
        /// The repo.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        repo: Option<String>,
        /// Every repo this server masters, several at a time.
        #[arg(long)]
        all: bool,
        /// No progress on stderr (with --all); the summary is still printed.
        #[arg(long, short)]
        quiet: bool,
    },
    /// On a slave: become the master of these repos (failover). Catches up first from any
    /// reachable copy that is ahead; the old master becomes a slave and learns it when it is
    /// reachable. Pushes to every slave now and reports each.
    Promote {
        /// The repos.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        repos: Vec<String>,
        /// Every repo this server is a slave of.
        #[arg(long)]
        all: bool,
        /// Take over even when a reachable copy has commits this server could not fetch;
        /// they are kept on that copy as orphaned refs.
        #[arg(long)]
        force: bool,
    },
    /// Ask each slave what its copies hold and compare with this master's: per repo and
    /// slave ok, drifted (which refs), missing or unreachable. Exits non-zero unless all are ok.
    Verify {
        /// The repo.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        repo: Option<String>,
        /// Every repo this server masters, one request per slave.
        #[arg(long)]
        all: bool,
        /// Push what differs (through the daemon) and report each push.
        #[arg(long)]
        repair: bool,
        /// No progress on stderr (with --all); the summary is still printed.
        #[arg(long, short)]
        quiet: bool,
    },
    /// What the rules decide for USER asking PERM (R, W, + to rewind, C to create, D to
    /// delete) of REPO, for REF (a full ref name) or the repo as a whole: exits 0 allowed, 1
    /// denied, naming the rule that decided with its line; 2 for a bad question.
    Access {
        repo: String,
        user: String,
        perm: String,
        #[arg(name = "REF")]
        refname: Option<String>,
    },
    /// Per repo and slave: in sync, or pending since when, failing with what, last success.
    /// Exits non-zero when a slave has been behind longer than mirror.alert_after_secs.
    Status {
        /// Only this repo.
        repo: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// The full log of the pull mirror REPO's last fetch.
        #[arg(long, requires = "repo")]
        log: bool,
    },
    /// Print the metrics' gauges once (Prometheus text), for node_exporter's textfile
    /// collector: per slave repos pending and failing and the replication lag, the queue's
    /// depth, pull and push mirrors' last success and failures, verify results. Read from
    /// this server's records, daemon or not; the counters only a running daemon keeps
    /// (pushes, failures, durations, bytes sent, peer connections) are left out: scrape the
    /// daemon's [metrics] listen address for those.
    Metrics,
    /// List the refs this server kept when a change of master overwrote them: repo, ref,
    /// object id, and the commit's date, author and subject, a line each. Exits 2 when there
    /// are any (they wait for an administrator), 0 when there are none.
    Orphans {
        /// Only this repo (with --drop: the repo to drop from).
        repo: Option<String>,
        /// The orphaned ref to delete (with --drop), e.g. refs/gitmirror/orphaned/3/heads/main.
        #[arg(value_name = "REF", requires = "drop")]
        refname: Option<String>,
        /// Delete the orphaned ref REF of REPO, once what it held is re-pushed or not wanted.
        #[arg(long, requires_all = ["repo", "refname"])]
        drop: bool,
    },
    /// On a repo's master: move it into the trash (repositories/.trash/NAME-TIME.git) here
    /// and on every slave (durably: a slave that is down gets it when it returns).
    Delete {
        /// The repo.
        repo: String,
        /// Even while mirror pushes to a slave are pending (its copy is trashed as it is;
        /// this server's keeps everything).
        #[arg(long)]
        force: bool,
    },
    /// On a repo's master: rename it here and on every slave. Rules naming OLD follow it to
    /// NEW until repos.toml is edited.
    Rename {
        /// The repo's name now.
        old: String,
        /// Its new name (must not exist).
        new: String,
    },
    /// Fetch pull mirrors (repos with an upstream) from their upstreams now, and report each.
    Fetch {
        /// The repo.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        repo: Option<String>,
        /// Every pull mirror this server fetches (those it masters).
        #[arg(long)]
        all: bool,
        /// No progress on stderr (with --all); the summary is still printed.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Pin the host key of REPO's ssh upstream (and downstreams) as their hosts answer now:
    /// trust on first use, said explicitly. A changed key then fails every fetch.
    TrustHost {
        /// The repo.
        repo: String,
    },
    /// Mirror the projects of a `repo` manifest: a pull mirror per project (named NAME as
    /// `repo init --mirror` lays them out), plus the manifest repository; then compile.
    /// Projects already here are left alone; nothing is ever removed.
    ImportManifest {
        /// A manifest file; the URL of the manifest repository (relative fetches resolve
        /// against it); or a repo here that follows a manifest (--follow), to import it again.
        source: String,
        /// Only projects in these groups, as `repo init -g` (e.g. "default,-darwin").
        #[arg(long, value_name = "G")]
        groups: Option<String>,
        /// Name every mirror PREFIX/NAME.
        #[arg(long, value_name = "P")]
        prefix: Option<String>,
        /// New tables copy RW+, RW, R, mirror and upstream settings but the url from this
        /// repo's table (default: only upstream.url, and @all's rules apply).
        #[arg(long, value_name = "REPO")]
        like: Option<String>,
        /// Import again whenever a fetch moves the manifest repository (recorded as its
        /// upstream.manifest).
        #[arg(long)]
        follow: bool,
        /// Print the tables instead of writing repos.toml (to commit them to the admin repo).
        #[arg(long)]
        print: bool,
        /// No progress on stderr while the new repos are created.
        #[arg(long)]
        quiet: bool,
        /// The manifest repository's branch (default: its HEAD).
        #[arg(long, value_name = "B")]
        manifest_branch: Option<String>,
        /// The manifest file in the repository (default: default.xml).
        #[arg(long, value_name = "FILE")]
        manifest_file: Option<String>,
    },
    /// Convert a gitolite server's gitolite.conf and keydir/ into repos.toml and keys/ (the
    /// admin repo's layout), deciding as gitolite did. Lists, with file and line, what cannot
    /// be carried over (VREFs, other options and configs, subconf, ...) and then writes
    /// nothing, unless --partial.
    ImportGitolite {
        /// gitolite.conf (includes are read relative to its directory).
        #[arg(long, value_name = "FILE")]
        conf: PathBuf,
        /// gitolite's keydir/: NAME.pub and NAME@label.pub are user NAME, server-NAME.pub
        /// the peer NAME.
        #[arg(long, value_name = "DIR")]
        keydir: PathBuf,
        /// Where to write repos.toml and keys/ (a checkout of gitmirror-admin, say); files
        /// there are replaced.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Write what can be carried over even when something cannot (still listed).
        #[arg(long)]
        partial: bool,
    },
    /// The deletes, renames, restores and purges this server still owes its slaves, with each
    /// slave's last answer; --drop gives one up for a slave that will never apply it.
    Ops {
        /// With --drop: the operation's number, as listed.
        #[arg(requires = "drop")]
        seq: Option<u64>,
        /// With --drop: the slave.
        #[arg(requires = "drop")]
        slave: Option<String>,
        /// Stop sending operation SEQ to SLAVE.
        #[arg(long, requires_all = ["seq", "slave"])]
        drop: bool,
    },
    /// The deleted repos this server keeps: list, restore, purge.
    Trash {
        #[command(subcommand)]
        action: TrashCmd,
    },
    /// Run the replicator: keeps peer connections open and works the mirror queue. Hooks start
    /// one on demand; run it under systemd (gitmirror@ACCOUNT.service) to have it supervised.
    Daemon,
    /// Print the shell completion script for SHELL (bash, zsh or fish) to stdout.
    Completions {
        /// bash, zsh or fish.
        shell: String,
    },
    /// Write the man pages (gitmirror.1, gitmirror-SUBCOMMAND.1) into DIR.
    #[command(hide = true)]
    Man {
        /// Where to write them; created if missing.
        dir: PathBuf,
    },
    /// The forced command of a user's key (reads SSH_ORIGINAL_COMMAND); not typed by people.
    Shell {
        /// The user the key belongs to.
        user: String,
    },
    /// The forced command of a peer server's key; not typed by people.
    Peer {
        /// The peer the key belongs to.
        name: String,
    },
    /// Run a repository hook (called by the scripts compile installs).
    Hook {
        #[command(subcommand)]
        hook: HookCmd,
    },
}

#[derive(Subcommand)]
enum TrashCmd {
    /// Every entry, when it was deleted, and slaves that have not trashed their copy yet.
    List,
    /// Move an entry back (on its master: on every slave too), as its old name or --as NAME.
    Restore {
        /// The entry, as `trash list` shows it (NAME-YYYYMMDDTHHMMSSZ).
        entry: String,
        /// Restore it under this name instead.
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
    },
    /// Remove entries older than DURATION for good (on their master: on every slave too).
    Purge {
        /// e.g. 30d, 12h, 90min.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum HookCmd {
    /// Refuse rewinds, deletions and tag moves by RW users.
    PreReceive,
    /// Record accepted ref updates.
    PostReceive,
}

impl Cli {
    /// Runs the parsed command line and returns the process's exit code.
    pub fn run(self) -> ExitCode {
        let cmd = &self.command;
        // Made from the command line alone: no server home, and files for everyone to read.
        let generated = match cmd {
            Cmd::Completions { shell } => Some(completions::run(shell)),
            Cmd::Man { dir } => Some(man::run(dir)),
            // Reads files and writes a directory of the administrator's choosing: no home.
            Cmd::ImportGitolite {
                conf,
                keydir,
                out,
                partial,
            } => {
                // No home, so no log file: --verbose shows the log on stderr.
                if self.verbose {
                    log::init(&log::LogTarget {
                        file: None,
                        level: &LogConfig::default().level,
                        format: LogConfig::default().format,
                        stderr: true,
                        complain: true,
                    });
                }
                Some(import_gitolite::run(conf, keydir, out, *partial))
            }
            _ => None,
        };
        if let Some(result) = generated {
            return match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => fail(cmd, &msg),
            };
        }
        crate::fs::private_umask();
        let is_forced = matches!(cmd, Cmd::Shell { .. } | Cmd::Peer { .. });
        let home = match Home::locate(self.home.as_deref(), !is_forced) {
            Ok(h) => h,
            Err(e) => return fail(cmd, &e.to_string()),
        };
        let config = ServerConfig::of(&home);
        let log_config = config.as_ref().map(|c| c.log.clone()).unwrap_or_default();
        init_log(&home, &log_config, self.verbose);
        let _span = tracing::info_span!("gitmirror", pid = std::process::id()).entered();

        let result = match cmd {
            Cmd::Init { hostname, admin } => init::run(&home, hostname, admin.as_deref()),
            Cmd::AddUser { name, keyfile } => keys::add_user(&home, config, name, keyfile),
            Cmd::AddMirroringPeer { keyfile } => keys::add_peer(&home, config, keyfile),
            Cmd::RemoveUser { name } => keys::remove_user(&home, config, name),
            Cmd::RemoveMirroringPeer { name } => keys::remove_peer(&home, config, name),
            Cmd::Compile { accept_config } => compile::run(&home, config, *accept_config),
            Cmd::RequestPush { repo, all, quiet } => {
                request_push::run(&home, config, repo.as_deref(), *all, *quiet)
            }
            Cmd::Promote { repos, all, force } => promote::run(&home, config, repos, *all, *force),
            Cmd::Verify {
                repo,
                all,
                repair,
                quiet,
            } => verify::run(&home, config, repo.as_deref(), *all, *repair, *quiet),
            Cmd::Access {
                repo,
                user,
                perm,
                refname,
            } => {
                return access::run(cmd, &home, config, repo, user, perm, refname.as_deref());
            }
            Cmd::Status { repo, json, log } => {
                return status::run(cmd, &home, config, repo.as_deref(), *json, *log);
            }
            Cmd::Metrics => metrics::run(&home, config),
            Cmd::Orphans {
                repo,
                refname,
                drop,
            } => {
                return match (drop, repo, refname) {
                    (true, Some(repo), Some(refname)) => {
                        orphans::drop(cmd, &home, config, repo, refname)
                    }
                    _ => orphans::list(cmd, &home, config, repo.as_deref()),
                };
            }
            Cmd::ImportManifest {
                source,
                groups,
                prefix,
                like,
                follow,
                print,
                quiet,
                manifest_branch,
                manifest_file,
            } => import_manifest::run(
                &home,
                config,
                &import_manifest::Args {
                    source,
                    groups: groups.as_deref(),
                    prefix: prefix.as_deref(),
                    like: like.as_deref(),
                    follow: *follow,
                    print: *print,
                    quiet: *quiet,
                    branch: manifest_branch.as_deref(),
                    file: manifest_file.as_deref(),
                },
            ),
            Cmd::Delete { repo, force } => delete::run(&home, config, repo, *force),
            Cmd::Rename { old, new } => rename::run(&home, config, old, new),
            Cmd::Fetch {
                repo,
                all: _,
                quiet,
            } => fetch::run(&home, config, repo.as_deref(), *quiet),
            Cmd::TrustHost { repo } => trust_host::run(&home, config, repo),
            Cmd::Ops { seq, slave, drop } => match (drop, seq, slave) {
                (true, Some(seq), Some(slave)) => ops::drop(&home, config, *seq, slave),
                _ => ops::list(&home, config),
            },
            Cmd::Trash { action } => match action {
                TrashCmd::List => trash::list(&home, config),
                TrashCmd::Restore { entry, as_name } => {
                    trash::restore(&home, config, entry, as_name.as_deref())
                }
                TrashCmd::Purge { older_than } => trash::purge(&home, config, older_than),
            },
            Cmd::Daemon => daemon::run(&home, config),
            Cmd::Shell { user } => {
                return forced::run(cmd, &home, config, user, forced::Side::User);
            }
            Cmd::Peer { name } => return forced::run(cmd, &home, config, name, forced::Side::Peer),
            Cmd::Hook { hook } => hook::run(&home, config, *hook),
            Cmd::Completions { .. } | Cmd::Man { .. } | Cmd::ImportGitolite { .. } => Ok(()),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                tracing::error!(error = %msg, "command failed");
                fail(cmd, &msg)
            }
        }
    }
}

/// What a subcommand returns: `Err` is the one line to show.
type Outcome = Result<(), String>;

/// The configuration as read at start; each subcommand decides whether it needs it.
type Config = Result<ServerConfig, ConfigError>;

fn init_log(home: &Home, config: &LogConfig, verbose: bool) {
    let path = home.log_path();
    log::init(&log::LogTarget {
        file: home.root().is_dir().then_some(path.as_path()),
        level: &config.level,
        format: config.format,
        stderr: verbose || config.stderr || log::stderr_is_journal(),
        complain: verbose,
    });
}

/// Prints a one-line error in the form the caller reads: `FATAL:` for remote clients and
/// git (which shows hook output as `remote:` lines), `gitmirror:` for administrators.
fn fail(cmd: &Cmd, msg: &str) -> ExitCode {
    let prefix = match cmd {
        Cmd::Shell { .. } | Cmd::Peer { .. } | Cmd::Hook { .. } => FATAL_PREFIX,
        _ => "gitmirror: ",
    };
    eprintln!("{prefix}{msg}");
    ExitCode::FAILURE
}

/// Writes command output (not diagnostics) to stdout.
fn print(text: &str) -> Outcome {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write output: {e}"))
}
