//! The server home: one directory that holds everything a server is (its config, rules,
//! repositories, key pair, authorized_keys and state), and `gitmirror init`, which creates it.
//!
//! With the home equal to the account's `$HOME`, the key pair and authorized_keys sit at the
//! standard OpenSSH paths, so sshd and ssh need no extra wiring.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::conffile::ConfigError;
use crate::config::ServerConfig;
use crate::fsutil::{self, Context, FsError};
use crate::names::AccountName;
use crate::rules::Rules;

/// What can go wrong locating or creating a home.
#[derive(Debug, Error)]
pub enum HomeError {
    #[error("no server home: pass --home DIR or set GITMIRROR_HOME or HOME")]
    Unknown,
    #[error(
        "{config} already names this server {existing:?}, not {requested:?}; nothing was changed"
    )]
    HostnameMismatch {
        config: PathBuf,
        existing: String,
        requested: String,
    },
    #[error("ssh-keygen failed ({0}); is openssh-client installed?")]
    Keygen(String),
    #[error(
        "{path} holds characters that cannot go into an authorized_keys command or a hook (use an absolute path of letters, digits and /._+@-)"
    )]
    UnsafePath { path: PathBuf },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The paths of one server home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// A home at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Home { root: root.into() }
    }

    /// The home to use: `--home`, else `$GITMIRROR_HOME` (when `from_env` allows it), else
    /// `$HOME`. The forced commands pass `from_env = false`: their environment comes partly
    /// from sshd, and the home must come only from the authorized_keys line or the account.
    /// Relative paths are made absolute so that hooks and forced commands written from them
    /// keep working.
    pub fn locate(explicit: Option<&Path>, from_env: bool) -> Result<Self, HomeError> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = explicit
            .map(Path::to_path_buf)
            .or_else(|| from_env.then(|| env("GITMIRROR_HOME")).flatten())
            .or_else(|| env("HOME"))
            .ok_or(HomeError::Unknown)?;
        let root = std::path::absolute(&root).at("cannot resolve", &root)?;
        Ok(Home { root })
    }

    /// Whether this is the account's own `$HOME`, in which case forced commands and hooks
    /// need no `--home`.
    pub fn is_default(&self) -> bool {
        let canon = |p: &Path| fs::canonicalize(p).ok();
        std::env::var_os("HOME").is_some_and(|h| {
            canon(Path::new(&h)).is_some() && canon(Path::new(&h)) == canon(&self.root)
        })
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `gitmirror.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("gitmirror.toml")
    }
    /// `repos.toml`, as the administrator edits it.
    pub fn rules_path(&self) -> PathBuf {
        self.root.join("repos.toml")
    }
    /// The copy of `repos.toml` that the last successful `compile` validated; the shell reads
    /// this one, so a half-edited `repos.toml` never affects running service.
    pub fn compiled_rules_path(&self) -> PathBuf {
        self.state_dir().join("repos.compiled.toml")
    }
    /// Where the bare repositories live.
    pub fn repositories(&self) -> PathBuf {
        self.root.join("repositories")
    }
    /// `.ssh/`.
    pub fn ssh_dir(&self) -> PathBuf {
        self.root.join(".ssh")
    }
    /// The server's private key, used to log in to peers.
    pub fn private_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519")
    }
    /// The server's public key, as peers register it.
    pub fn public_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519.pub")
    }
    /// The file sshd reads.
    pub fn authorized_keys(&self) -> PathBuf {
        self.ssh_dir().join("authorized_keys")
    }
    /// Registered keys of users and peers, the truth authorized_keys is rendered from.
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// Runtime state: compiled rules, locks, and later the mirror queue.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    /// The durable mirror queue.
    pub fn queue_dir(&self) -> PathBuf {
        self.state_dir().join("queue")
    }
    /// Held by the running daemon, so that only one runs per home.
    pub fn daemon_lock(&self) -> PathBuf {
        self.state_dir().join("daemon.lock")
    }
    /// The running daemon's pid.
    pub fn daemon_pid(&self) -> PathBuf {
        self.state_dir().join("daemon.pid")
    }
    /// Serializes changes to the key store and authorized_keys.
    pub fn keys_lock(&self) -> PathBuf {
        self.state_dir().join("keys.lock")
    }
    /// Serializes compiles.
    pub fn compile_lock(&self) -> PathBuf {
        self.state_dir().join("compile.lock")
    }
    /// gitmirror's hooks, used by every push that comes through ssh (`core.hooksPath`);
    /// written by `compile`, as are the copies inside each repo for local pushes.
    pub fn hooks_dir(&self) -> PathBuf {
        self.root.join("hooks")
    }
    /// The hooks mirror pushes from peers run (`core.hooksPath` for peer sessions).
    pub fn peer_hooks_dir(&self) -> PathBuf {
        self.state_dir().join("peer-hooks")
    }
    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("gitmirror.log")
    }

    /// Loads `gitmirror.toml`.
    pub fn config(&self) -> Result<ServerConfig, ConfigError> {
        ServerConfig::load(&self.config_path())
    }

    /// Loads the compiled rules; before the first compile there are none and nobody has access.
    pub fn compiled_rules(&self) -> Result<Rules, ConfigError> {
        let path = self.compiled_rules_path();
        match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Rules::default()),
            _ => Rules::load(&path),
        }
    }
}

/// How gitmirror invokes itself from authorized_keys lines and repo hooks: its absolute
/// path, plus `--home` when the server home is not the account's `$HOME`.
///
/// Built only from paths that need no quoting inside `command="..."` and no escaping for the
/// login shell that runs it, so the string can be pasted into both as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation(String);

impl Invocation {
    /// Checks both paths and joins them.
    pub fn new(exe: &Path, home: Option<&Path>) -> Result<Self, HomeError> {
        let plain = |p: &Path| -> Result<String, HomeError> {
            let s = p.to_str().unwrap_or("");
            let ok = s.starts_with('/')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._+@-".contains(c));
            if ok {
                Ok(s.to_string())
            } else {
                Err(HomeError::UnsafePath {
                    path: p.to_path_buf(),
                })
            }
        };
        let mut prefix = plain(exe)?;
        if let Some(home) = home {
            prefix.push_str(" --home ");
            prefix.push_str(&plain(home)?);
        }
        Ok(Invocation(prefix))
    }

    /// The running binary, with `--home` unless `home` is the account's `$HOME`.
    pub fn current(home: &Home) -> Result<Self, HomeError> {
        let exe = std::env::current_exe().at("cannot locate", Path::new("the gitmirror binary"))?;
        Self::new(&exe, (!home.is_default()).then(|| home.root()))
    }

    /// The command prefix, e.g. `/usr/bin/gitmirror --home /srv/git`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What `init` did, for the message it prints.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// Files and directories created by this run.
    pub created: Vec<PathBuf>,
    /// The public key to hand to peers, named after this server.
    pub peer_key: PathBuf,
}

/// Creates a server home, or completes one: every missing piece is created, nothing that
/// exists is overwritten, and a home that already belongs to another hostname is refused.
pub fn init(home: &Home, hostname: &AccountName) -> Result<InitReport, HomeError> {
    let config_path = home.config_path();
    if config_path.exists() {
        let existing = home.config()?;
        if &existing.hostname != hostname {
            return Err(HomeError::HostnameMismatch {
                config: config_path,
                existing: existing.hostname.to_string(),
                requested: hostname.to_string(),
            });
        }
    }
    let mut created = Vec::new();
    for (dir, mode) in [
        (home.root().to_path_buf(), 0o755),
        (home.repositories(), 0o755),
        (home.ssh_dir(), 0o700),
        (home.keys_dir(), 0o700),
        (home.state_dir(), 0o700),
    ] {
        if !dir.exists() {
            fsutil::ensure_dir(&dir, mode)?;
            created.push(dir);
        }
    }
    let files: [(PathBuf, String, u32); 5] = [
        (config_path, ServerConfig::template(hostname), 0o644),
        (home.rules_path(), Rules::template().to_string(), 0o644),
        (home.authorized_keys(), String::new(), 0o600),
        (home.keys_lock(), String::new(), 0o600),
        (home.compile_lock(), String::new(), 0o600),
    ];
    for (path, text, mode) in files {
        if !path.exists() {
            fsutil::write_atomic(&path, text.as_bytes(), mode)?;
            created.push(path);
        }
    }
    if !home.private_key().exists() {
        keygen(&home.private_key(), hostname)?;
        created.push(home.private_key());
    }
    let peer_key = home.root().join(format!("{hostname}.pub"));
    let public = fs::read(home.public_key()).at("cannot read", &home.public_key())?;
    if fsutil::write_if_changed(&peer_key, &public, 0o644)? {
        created.push(peer_key.clone());
    }
    Ok(InitReport { created, peer_key })
}

fn keygen(path: &Path, hostname: &AccountName) -> Result<(), HomeError> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("gitmirror@{hostname}"))
        .arg("-f")
        .arg(path)
        .output()
        .map_err(|e| HomeError::Keygen(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(HomeError::Keygen(err.trim().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_paths_must_be_plain() {
        let exe = Path::new("/usr/bin/gitmirror");
        let cmd = Invocation::new(exe, Some(Path::new("/srv/git"))).unwrap();
        assert_eq!(cmd.as_str(), "/usr/bin/gitmirror --home /srv/git");
        for bad in [
            "/opt/my dir/gitmirror",
            "/x/\"y",
            "/x/$(id)",
            "/x/a'b",
            "/x/\\",
            "rel/x",
        ] {
            assert!(Invocation::new(Path::new(bad), None).is_err(), "{bad}");
            assert!(Invocation::new(exe, Some(Path::new(bad))).is_err(), "{bad}");
        }
    }
}
