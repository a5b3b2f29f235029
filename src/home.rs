//! The server home: one directory that holds everything a server is (its config, rules,
//! repositories, key pair, authorized_keys and state). This module knows its paths and nothing
//! of what is in them; `admin::init` creates it.
//!
//! With the home equal to the account's `$HOME`, the key pair and authorized_keys sit at the
//! standard OpenSSH paths, so sshd and ssh need no extra wiring.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::fs::{Context, FsError, ensure_dir};
use crate::proto::ENV_HOME;

/// What can go wrong locating a home.
#[derive(Debug, Error)]
pub(crate) enum HomeError {
    #[error("no server home: pass --home DIR or set GITMIRROR_HOME or HOME")]
    Unknown,
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// The paths of one server home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Home {
    root: PathBuf,
}

impl Home {
    /// The home to use: `--home`, else `$GITMIRROR_HOME` (when `from_env` allows it), else
    /// `$HOME`. The forced commands pass `from_env = false`: their environment comes partly
    /// from sshd, and the home must come only from the authorized_keys line or the account.
    /// Relative paths are made absolute so that hooks and forced commands written from them
    /// keep working.
    pub(crate) fn locate(explicit: Option<&Path>, from_env: bool) -> Result<Self, HomeError> {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = explicit
            .map(Path::to_path_buf)
            .or_else(|| from_env.then(|| env(ENV_HOME)).flatten())
            .or_else(|| env("HOME"))
            .ok_or(HomeError::Unknown)?;
        let root = std::path::absolute(&root).at("cannot resolve", &root)?;
        Ok(Home { root })
    }

    /// Whether this is the account's own `$HOME`, in which case forced commands and hooks
    /// need no `--home`.
    pub(crate) fn is_default(&self) -> bool {
        let canon = |p: &Path| fs::canonicalize(p).ok();
        std::env::var_os("HOME").is_some_and(|h| {
            canon(Path::new(&h)).is_some() && canon(Path::new(&h)) == canon(&self.root)
        })
    }

    /// The home directory itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
    /// `gitmirror.toml`.
    pub(crate) fn config_path(&self) -> PathBuf {
        self.root.join("gitmirror.toml")
    }
    /// `repos.toml`, as the administrator edits it.
    pub(crate) fn rules_path(&self) -> PathBuf {
        self.root.join("repos.toml")
    }
    /// The rules the last successful `compile` validated, indexed by repo; the shells read
    /// this, so a half-edited `repos.toml` never affects running service.
    pub(crate) fn compiled_rules_path(&self) -> PathBuf {
        self.state_dir().join("repos.compiled.index")
    }
    /// Where the bare repositories live.
    pub(crate) fn repositories(&self) -> PathBuf {
        self.root.join("repositories")
    }
    /// `.ssh/`.
    pub(crate) fn ssh_dir(&self) -> PathBuf {
        self.root.join(".ssh")
    }
    /// The server's private key, used to log in to peers.
    pub(crate) fn private_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519")
    }
    /// The server's public key, as peers register it.
    pub(crate) fn public_key(&self) -> PathBuf {
        self.ssh_dir().join("id_ed25519.pub")
    }
    /// The file sshd reads.
    pub(crate) fn authorized_keys(&self) -> PathBuf {
        self.ssh_dir().join("authorized_keys")
    }
    /// Registered keys of users and peers, the truth authorized_keys is rendered from.
    pub(crate) fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// Runtime state: compiled rules, locks, the mirror queue, the daemon's socket.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    /// The durable mirror queue.
    pub(crate) fn queue_dir(&self) -> PathBuf {
        self.state_dir().join("queue")
    }
    /// External mirrors' state: each upstream's and downstream's record and last log.
    pub(crate) fn external_dir(&self) -> PathBuf {
        self.state_dir().join("external")
    }
    /// The host keys of external remotes, pinned (an OpenSSH known_hosts file).
    pub(crate) fn external_known_hosts(&self) -> PathBuf {
        self.ssh_dir().join("external_known_hosts")
    }
    /// The store operations (delete, rename, ...) owed to slaves, one file each.
    pub(crate) fn ops_dir(&self) -> PathBuf {
        self.state_dir().join("ops")
    }
    /// Held by the running daemon, so that only one runs per home.
    pub(crate) fn daemon_lock(&self) -> PathBuf {
        self.state_dir().join("daemon.lock")
    }
    /// The running daemon's pid.
    pub(crate) fn daemon_pid(&self) -> PathBuf {
        self.state_dir().join("daemon.pid")
    }
    /// Serializes changes to the key store and authorized_keys.
    pub(crate) fn keys_lock(&self) -> PathBuf {
        self.state_dir().join("keys.lock")
    }
    /// Serializes compiles.
    pub(crate) fn compile_lock(&self) -> PathBuf {
        self.state_dir().join("compile.lock")
    }
    /// gitmirror's hooks, used by every push that comes through ssh (`core.hooksPath`);
    /// written by `compile`, as are the copies inside each repo for local pushes.
    pub(crate) fn hooks_dir(&self) -> PathBuf {
        self.root.join("hooks")
    }
    /// The hooks mirror pushes from peers run (`core.hooksPath` for peer sessions).
    pub(crate) fn peer_hooks_dir(&self) -> PathBuf {
        self.state_dir().join("peer-hooks")
    }
    /// What a slave remembers of the state its master last gave it, per repo.
    pub(crate) fn mirrored_dir(&self) -> PathBuf {
        self.state_dir().join("mirrored")
    }
    /// What the last verify of each slave found and repaired, for `status`.
    pub(crate) fn verified_path(&self) -> PathBuf {
        self.state_dir().join("verified.json")
    }
    /// Where the control sockets of the ssh connections to peers are preferred to live.
    pub(crate) fn ssh_control_dir(&self) -> PathBuf {
        self.state_dir().join("ssh")
    }
    /// The log file.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.root.join("gitmirror.log")
    }

    /// A short name for this home, for paths outside it; stable across versions (git's SHA-1
    /// of the path), so a hook and a daemon built apart agree on it.
    fn tag(&self) -> String {
        let path = self.root.as_os_str().as_encoded_bytes();
        let oid = git2::Oid::hash_object(git2::ObjectType::Blob, path)
            .map(|o| o.to_string())
            .unwrap_or_else(|_| format!("{:012x}", path.len()));
        oid.chars().take(12).collect()
    }

    /// A directory for unix sockets: `preferred` if its path is short enough for one (`room`
    /// bytes left for the file name inside; sockets are limited to about 104 bytes), else a
    /// subdirectory of [`private_runtime_dir`] named after this home's [`tag`](Self::tag).
    pub(crate) fn socket_dir(&self, preferred: &Path, room: usize) -> Result<PathBuf, FsError> {
        const SUN_PATH: usize = 100;
        if preferred.as_os_str().len() + room <= SUN_PATH {
            ensure_dir(preferred, 0o700)?;
            return Ok(preferred.to_path_buf());
        }
        let dir = private_runtime_dir()?.join(self.tag());
        ensure_dir(&dir, 0o700)?;
        Ok(dir)
    }
}

/// Where sockets go when the home's own path is too long for one: `/tmp/gitmirror-<uid>`, created private, and refused unless it
/// is a real directory owned by this account and closed to everyone else.
fn private_runtime_dir() -> Result<PathBuf, FsError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let me = fs::metadata("/proc/self")
        .at("cannot stat", Path::new("/proc/self"))?
        .uid();
    let dir = PathBuf::from(format!("/tmp/gitmirror-{me}"));
    ensure_dir(&dir, 0o700)?;
    let meta = fs::symlink_metadata(&dir).at("cannot stat", &dir)?;
    if !meta.is_dir() || meta.uid() != me || meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "not a private directory of this account; remove it",
        ))
        .at("refusing", &dir);
    }
    Ok(dir)
}
