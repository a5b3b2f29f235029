//! The `gitmirror` binary: parses the command line, finds the server home, and hands over to
//! the library. Everything that decides anything lives in the library.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use std::sync::Arc;

use gitmirror::conffile::ConfigError;
use gitmirror::config::ServerConfig;
use gitmirror::home::{self, Home, Invocation};
use gitmirror::mirror;
use gitmirror::names::{AccountName, RepoName};
use gitmirror::peer_shell::PeerShell;
use gitmirror::shell::{Reply, UserShell};
use gitmirror::{compile, daemon, hook, keys, log, status};

const SSHD_SNIPPET: &str = include_str!("../conf/sshd_config.snippet");

/// A self-hosted git server over ssh that keeps every repo's slaves identical to its master.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
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
    /// Apply repos.toml: create missing repos, install hooks, write mirror settings.
    Compile,
    /// Push a repo to its slaves now (on its master), or ask its master to (on a slave).
    RequestPush {
        /// The repo.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        repo: Option<String>,
        /// Every repo this server masters, several at a time.
        #[arg(long)]
        all: bool,
    },
    /// Per repo and slave: in sync, or pending since when, failing with what, last success.
    /// Exits non-zero when a slave has been behind longer than mirror.alert_after_secs.
    Status {
        /// Only this repo.
        repo: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run the replicator: keeps peer connections open and works the mirror queue. Hooks start
    /// one on demand; run it under systemd (conf/gitmirror.service) to have it supervised.
    Daemon,
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

#[derive(Subcommand, Clone, Copy)]
enum HookCmd {
    /// Refuse rewinds, deletions and tag moves by RW users.
    PreReceive,
    /// Record accepted ref updates.
    PostReceive,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_forced = matches!(cli.command, Cmd::Shell { .. } | Cmd::Peer { .. });
    let home = match Home::locate(cli.home.as_deref(), !is_forced) {
        Ok(h) => h,
        Err(e) => return fail(&cli.command, &e.to_string()),
    };
    let config = home.config();
    let log_config = config.as_ref().map(|c| c.log.clone()).unwrap_or_default();
    log::init(&home, &log_config, cli.verbose);
    let _span = tracing::info_span!("gitmirror", pid = std::process::id()).entered();

    let result = match &cli.command {
        Cmd::Init { hostname } => init(&home, hostname),
        Cmd::AddUser { name, keyfile } => add_key(&home, keys::Role::User, name, keyfile),
        Cmd::AddMirroringPeer { keyfile } => add_peer(&home, keyfile),
        Cmd::RemoveUser { name } => remove_key(&home, keys::Role::User, name),
        Cmd::RemoveMirroringPeer { name } => remove_key(&home, keys::Role::Peer, name),
        Cmd::Compile => run_compile(&home),
        Cmd::RequestPush { repo, all } => request_push(&home, config, repo.as_deref(), *all),
        Cmd::Status { repo, json } => {
            return status(&cli.command, &home, config, repo.as_deref(), *json);
        }
        Cmd::Daemon => config
            .map_err(|e| e.to_string())
            .and_then(|c| daemon::run(&home, Arc::new(c)).map_err(|e| e.to_string())),
        Cmd::Shell { user } => return forced(&cli.command, &home, config, user, Side::User),
        Cmd::Peer { name } => return forced(&cli.command, &home, config, name, Side::Peer),
        Cmd::Hook { hook } => run_hook(&home, config, *hook),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            tracing::error!(error = %msg, "command failed");
            fail(&cli.command, &msg)
        }
    }
}

/// Prints a one-line error in the form the caller reads: `FATAL:` for remote clients and
/// git (which shows hook output as `remote:` lines), `gitmirror:` for administrators.
fn fail(cmd: &Cmd, msg: &str) -> ExitCode {
    let prefix = match cmd {
        Cmd::Shell { .. } | Cmd::Peer { .. } | Cmd::Hook { .. } => "FATAL",
        _ => "gitmirror",
    };
    eprintln!("{prefix}: {msg}");
    ExitCode::FAILURE
}

fn init(home: &Home, hostname: &str) -> Result<(), String> {
    let hostname = AccountName::parse(hostname).map_err(|e| format!("--hostname: {e}"))?;
    let report = home::init(home, &hostname).map_err(|e| e.to_string())?;
    let account = std::env::var("USER").unwrap_or_else(|_| "git".into());
    let mut out = format!(
        "gitmirror: server home {} is ready for {hostname}.\n",
        home.root().display()
    );
    for path in &report.created {
        out.push_str(&format!("  created {}\n", path.display()));
    }
    out.push_str(&format!(
        "\nNext steps:\n\
         1. Let sshd serve the {account} account through gitmirror: add to /etc/ssh/sshd_config\n\n{}\n\
         2. Add users: gitmirror add-user alice alice.pub\n   (their keys go into {}; gitmirror owns its own block there)\n\
         3. Describe repos and access in {}, then run: gitmirror compile\n\
         4. Hand {} to the peer servers that will mirror with this one.\n",
        SSHD_SNIPPET.replace("Match User git", &format!("Match User {account}")),
        home.authorized_keys().display(),
        home.rules_path().display(),
        report.peer_key.display(),
    ));
    print(&out)
}

fn add_key(
    home: &Home,
    role: keys::Role,
    name: &str,
    keyfile: &std::path::Path,
) -> Result<(), String> {
    let invocation = Invocation::current(home).map_err(|e| e.to_string())?;
    let outcome = keys::add(home, role, name, keyfile, &invocation).map_err(|e| e.to_string())?;
    let what = match outcome {
        keys::Added::New => "added",
        keys::Added::Replaced => "key replaced for",
        keys::Added::Unchanged => "unchanged:",
    };
    print(&format!(
        "gitmirror: {what} {role} {name} ({})\n",
        home.authorized_keys().display()
    ))
}

fn remove_key(home: &Home, role: keys::Role, name: &str) -> Result<(), String> {
    let invocation = Invocation::current(home).map_err(|e| e.to_string())?;
    keys::remove(home, role, name, &invocation).map_err(|e| e.to_string())?;
    print(&format!(
        "gitmirror: removed {role} {name} ({})\n",
        home.authorized_keys().display()
    ))
}

/// The peer's name is the key file's stem, as with gitolite's `add-mirroring-peer`.
fn add_peer(home: &Home, keyfile: &std::path::Path) -> Result<(), String> {
    let stem = keyfile
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".pub"))
        .ok_or_else(|| format!("{}: expected a file named PEER.pub", keyfile.display()))?;
    add_key(home, keys::Role::Peer, stem, keyfile)
}

fn request_push(
    home: &Home,
    config: Result<ServerConfig, ConfigError>,
    repo: Option<&str>,
    all: bool,
) -> Result<(), String> {
    let config = Arc::new(config.map_err(|e| e.to_string())?);
    let report = match repo {
        Some(repo) if !all => {
            let repo = RepoName::parse(repo).map_err(|e| format!("bad repo name: {e}"))?;
            mirror::request(home, &config, &repo)
        }
        _ => mirror::request_all(home, &config),
    }
    .map_err(|e| e.to_string())?;
    print(&report.text())?;
    if report.ok {
        Ok(())
    } else {
        Err("some slaves were not updated".to_string())
    }
}

fn status(
    cmd: &Cmd,
    home: &Home,
    config: Result<ServerConfig, ConfigError>,
    repo: Option<&str>,
    json: bool,
) -> ExitCode {
    let run = || -> Result<bool, String> {
        let config = config.map_err(|e| e.to_string())?;
        let repo = repo
            .map(|r| RepoName::parse(r).map_err(|e| format!("bad repo name: {e}")))
            .transpose()?;
        let rows = status::collect(home, &config, repo.as_ref()).map_err(|e| e.to_string())?;
        let text = if json {
            status::json(&rows) + "\n"
        } else {
            status::table(&rows)
        };
        print(&text)?;
        Ok(!status::alarming(&rows, config.mirror.alert_after_secs))
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("gitmirror: a slave has been behind longer than mirror.alert_after_secs");
            ExitCode::from(2)
        }
        Err(e) => fail(cmd, &e),
    }
}

fn run_compile(home: &Home) -> Result<(), String> {
    let r = compile::compile(home).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for repo in &r.created {
        out.push_str(&format!("created {repo}\n"));
    }
    for repo in &r.mirror_updated {
        out.push_str(&format!("mirror settings written for {repo}\n"));
    }
    out.push_str(&format!(
        "gitmirror: compiled {} repos ({} created, hooks updated in {})\n",
        r.repos,
        r.created.len(),
        r.hooks_updated
    ));
    print(&out)
}

/// Which forced command is running.
#[derive(Clone, Copy)]
enum Side {
    User,
    Peer,
}

/// Runs a forced command (`shell USER` or `peer NAME`): answer with text, or exec git.
fn forced(
    cmd: &Cmd,
    home: &Home,
    config: Result<ServerConfig, ConfigError>,
    name: &str,
    side: Side,
) -> ExitCode {
    let config = match config {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "server configuration is broken");
            return fail(
                cmd,
                "the server's configuration is broken; ask its administrator",
            );
        }
    };
    let rules = match home.compiled_rules() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "compiled rules are unreadable");
            return fail(
                cmd,
                "the server's rules are unreadable; ask its administrator",
            );
        }
    };
    let original = std::env::var("SSH_ORIGINAL_COMMAND").ok();
    let protocol: Option<OsString> = std::env::var_os("GIT_PROTOCOL");
    let reply = match side {
        Side::User => UserShell::new(home, config, &rules, name)
            .and_then(|s| s.serve(original.as_deref(), protocol.as_deref()))
            .map_err(|e| e.to_string()),
        Side::Peer => PeerShell::new(home, config, &rules, name)
            .and_then(|s| s.serve(original.as_deref(), protocol.as_deref()))
            .map_err(|e| e.to_string()),
    };
    match reply {
        Ok(Reply::Text { text, ok }) => match print(&text) {
            Ok(()) if ok => ExitCode::SUCCESS,
            Ok(()) => ExitCode::FAILURE,
            Err(e) => fail(cmd, &e),
        },
        Ok(Reply::Git(launch)) => {
            let err = launch.exec();
            tracing::error!(error = %err, "cannot start git");
            fail(cmd, &format!("cannot start git: {err}"))
        }
        Err(e) => fail(cmd, &e),
    }
}

fn run_hook(
    home: &Home,
    config: Result<ServerConfig, ConfigError>,
    which: HookCmd,
) -> Result<(), String> {
    let updates = hook::read_updates(io::stdin().lock()).map_err(|e| e.to_string())?;
    let pusher = hook::Pusher::from_env();
    match which {
        HookCmd::PreReceive => hook::pre_receive(&pusher, &updates).map_err(|e| e.to_string()),
        HookCmd::PostReceive => {
            let config = Arc::new(config.map_err(|e| e.to_string())?);
            // git shows a hook's stderr to the pusher as "remote:" lines.
            for line in
                hook::post_receive(home, config, &pusher, &updates).map_err(|e| e.to_string())?
            {
                eprintln!("{line}");
            }
            Ok(())
        }
    }
}

/// Writes command output (not diagnostics) to stdout.
fn print(text: &str) -> Result<(), String> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write output: {e}"))
}
