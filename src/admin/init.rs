//! `gitmirror init`: creates a server home, or completes one.
//!
//! Every missing piece is created (directories, config templates, the server's key pair and
//! the copy of its public key named for peers); nothing that exists is overwritten, so running
//! it again is safe.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use thiserror::Error;

use crate::config::{ConfigError, Rules, ServerConfig};
use crate::fs::{Context, FsError, ensure_dir, write_atomic, write_if_changed};
use crate::home::Home;
use crate::names::AccountName;

/// What can stop `init`.
#[derive(Debug, Error)]
pub(crate) enum InitError {
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
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Takes group and other access away from a directory of the home (owner bits unchanged).
/// Returns whether it had any.
fn make_private(dir: &Path) -> Result<bool, InitError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(dir)
        .at("cannot stat", dir)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o700))
        .at("cannot change the mode of", dir)?;
    Ok(true)
}

/// What `init` did, for the message it prints.
#[derive(Debug, Clone)]
pub(crate) struct InitReport {
    /// Files and directories created by this run.
    pub(crate) created: Vec<PathBuf>,
    /// Directories that other local accounts could read, made private.
    pub(crate) made_private: Vec<PathBuf>,
    /// The public key to hand to peers, named after this server.
    pub(crate) peer_key: PathBuf,
}

/// Creates a server home, or completes one: every missing piece is created, nothing that
/// exists is overwritten, and a home that already belongs to another hostname is refused.
pub(crate) fn init(home: &Home, hostname: &AccountName) -> Result<InitReport, InitError> {
    let config_path = home.config_path();
    if config_path.exists() {
        let existing = ServerConfig::load(&config_path)?;
        if &existing.hostname != hostname {
            return Err(InitError::HostnameMismatch {
                config: config_path,
                existing: existing.hostname.to_string(),
                requested: hostname.to_string(),
            });
        }
    }
    let mut created = Vec::new();
    let mut made_private = Vec::new();
    for dir in [
        home.root().to_path_buf(),
        home.repositories(),
        home.ssh_dir(),
        home.keys_dir(),
        home.state_dir(),
    ] {
        if !dir.exists() {
            ensure_dir(&dir, 0o700)?;
            created.push(dir);
        } else if make_private(&dir)? {
            made_private.push(dir);
        }
    }
    let files: [(PathBuf, String, u32); 5] = [
        (config_path, ServerConfig::template(hostname), 0o600),
        (home.rules_path(), Rules::template().to_string(), 0o600),
        (home.authorized_keys(), String::new(), 0o600),
        (home.keys_lock(), String::new(), 0o600),
        (home.compile_lock(), String::new(), 0o600),
    ];
    for (path, text, mode) in files {
        if !path.exists() {
            write_atomic(&path, text.as_bytes(), mode)?;
            created.push(path);
        }
    }
    if !home.private_key().exists() {
        keygen(&home.private_key(), hostname)?;
        created.push(home.private_key());
    }
    let peer_key = home.root().join(format!("{hostname}.pub"));
    let public = fs::read(home.public_key()).at("cannot read", &home.public_key())?;
    if write_if_changed(&peer_key, &public, 0o644)? {
        created.push(peer_key.clone());
    }
    Ok(InitReport {
        created,
        made_private,
        peer_key,
    })
}

fn keygen(path: &Path, hostname: &AccountName) -> Result<(), InitError> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("gitmirror@{hostname}"))
        .arg("-f")
        .arg(path)
        .output()
        .map_err(|e| InitError::Keygen(e.to_string()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(InitError::Keygen(err.trim().to_string()));
    }
    Ok(())
}
