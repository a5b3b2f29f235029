//! How git is run against an external remote (an upstream to fetch from, a downstream to push
//! to): with its environment cleared, no prompt, only the transports gitmirror allows, the
//! remote's own credentials and nothing of the account's.
//!
//! - ssh: `GIT_SSH_COMMAND` with the remote's identity (or the server's own key), batch mode,
//!   and a known_hosts file of gitmirror's own (`~/.ssh/external_known_hosts`) with strict
//!   checking: a host key is pinned by `repos.toml`'s `host_key`, or recorded once by
//!   `gitmirror trust-host`; a changed or unknown key fails the run.
//! - https: the token read from `token_file` at each run and handed to git as an
//!   `Authorization` header through `GIT_CONFIG_*` (never on a command line, where `ps` would
//!   show it, and never in a log).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use thiserror::Error;

use crate::config::external::{Credentials, RemoteUrl, Transport};
use crate::home::Home;
use crate::proto::SAFE_PATH;

/// Why git could not be prepared for a remote.
#[derive(Debug, Error)]
pub(crate) enum RemoteError {
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file {0} is empty or holds more than one line")]
    BadToken(PathBuf),
    #[error(
        "{0} is inside this server's home: a mirror never reads or writes this server's own repos or state by path"
    )]
    InsideHome(String),
    #[error("cannot ask {host} for its host key: {words}")]
    Scan { host: String, words: String },
    #[error("cannot write the pinned host keys {path}: {source}")]
    KnownHosts {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A git command for talking to `url`, in the repo at `git_dir`.
pub(crate) struct RemoteGit<'a> {
    home: &'a Home,
    url: &'a RemoteUrl,
    credentials: &'a Credentials,
}

impl<'a> RemoteGit<'a> {
    pub(crate) fn new(home: &'a Home, url: &'a RemoteUrl, credentials: &'a Credentials) -> Self {
        RemoteGit {
            home,
            url,
            credentials,
        }
    }

    /// `git --git-dir GIT_DIR` with everything a run against the remote needs, and its
    /// standard streams closed or piped (stdout and stderr piped).
    pub(crate) fn command(&self, git_dir: &Path) -> Result<tokio::process::Command, RemoteError> {
        if self.url.transport == Transport::Local {
            // A path into the home would read (or, pushed to, write) another repo here around
            // its access rules, or the admin repo, or the state.
            let target = std::fs::canonicalize(&self.url.url)
                .unwrap_or_else(|_| PathBuf::from(&self.url.url));
            let home = std::fs::canonicalize(self.home.root())
                .unwrap_or_else(|_| self.home.root().to_path_buf());
            if target.starts_with(&home) {
                return Err(RemoteError::InsideHome(self.url.url.clone()));
            }
        }
        let mut config: Vec<(String, String)> = vec![
            // Only the transports a remote may use; never ext:: or fd::, whatever a redirect
            // or a submodule says.
            ("protocol.allow".into(), "never".into()),
            ("protocol.file.allow".into(), "always".into()),
            ("protocol.git.allow".into(), "always".into()),
            ("protocol.ssh.allow".into(), "always".into()),
            ("protocol.http.allow".into(), "always".into()),
            ("protocol.https.allow".into(), "always".into()),
            ("credential.helper".into(), String::new()),
            ("core.askPass".into(), String::new()),
            // A token is never sent anywhere but the URL's own host.
            (
                "http.followRedirects".into(),
                if self.credentials.token_file.is_some() {
                    "false"
                } else {
                    "initial"
                }
                .into(),
            ),
            // A remote that stops sending is given up on, not waited for forever.
            ("http.lowSpeedLimit".into(), "1000".into()),
            ("http.lowSpeedTime".into(), "120".into()),
            // What an upstream sends is checked as a push is (a slave would refuse a broken
            // object, and replication of the repo would stop).
            ("fetch.fsckObjects".into(), "true".into()),
        ];
        if self.url.transport == Transport::Https
            && let Some(ca) = &self.credentials.ca_file
        {
            config.push(("http.sslCAInfo".into(), ca.display().to_string()));
        }
        if self.url.transport == Transport::Https
            && let Some(file) = &self.credentials.token_file
        {
            let token = read_token(file)?;
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: Bearer {token}"),
            ));
        }
        let mut cmd = tokio::process::Command::new("git");
        cmd.env_clear()
            .env("PATH", SAFE_PATH)
            .env("HOME", self.home.root())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k)
                .env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        if self.url.transport == Transport::Ssh {
            cmd.env("GIT_SSH_COMMAND", self.ssh_command()?);
            cmd.env("GIT_SSH_VARIANT", "ssh");
        }
        cmd.arg("--git-dir")
            .arg(git_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// ssh with the remote's identity, strict host key checking against gitmirror's own
    /// known_hosts (the pinned key written there first), and no agent or config of the
    /// account's.
    fn ssh_command(&self) -> Result<String, RemoteError> {
        let mut known = self.home.external_known_hosts();
        if let (Some(key), Some(host)) = (&self.credentials.host_key, &self.url.host) {
            // A file of its own per pinned key: two remotes that pin different keys for one
            // host (one of them wrong) must not overwrite each other's pin between a write
            // and the ssh that reads it.
            let line = format!("{} {key}", known_hosts_name(host, self.url.port));
            let id = git2::Oid::hash_object(git2::ObjectType::Blob, line.as_bytes())
                .map_or_else(|_| "pinned".to_string(), |o| o.to_string());
            let mut name = known.as_os_str().to_owned();
            name.push(format!(".pinned/{id}"));
            known = PathBuf::from(name);
            pin_host_key(&known, host, self.url.port, key)?;
        }
        let identity = self
            .credentials
            .identity
            .clone()
            .unwrap_or_else(|| self.home.private_key());
        Ok(format!(
            "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none -o StrictHostKeyChecking=yes -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=30 -o ServerAliveInterval=15 -o ServerAliveCountMax=4 -i {}",
            quote(&known),
            quote(&identity)
        ))
    }
}

/// The host's name as a known_hosts line writes it.
pub(crate) fn known_hosts_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_string(),
    }
}

/// Makes `key` the one key known for `host` in `known` (replacing any other for it).
pub(crate) fn pin_host_key(
    known: &Path,
    host: &str,
    port: Option<u16>,
    key: &str,
) -> Result<(), RemoteError> {
    let name = known_hosts_name(host, port);
    let line = format!("{name} {key}\n");
    let current = std::fs::read_to_string(known).unwrap_or_default();
    if current.lines().any(|l| format!("{l}\n") == line) {
        return Ok(());
    }
    let mut kept: String = current
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(name.as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    kept.push_str(&line);
    let err = |source| RemoteError::KnownHosts {
        path: known.to_path_buf(),
        source,
    };
    if let Some(dir) = known.parent() {
        crate::fs::ensure_dir(dir, 0o700).map_err(|e| err(e.source))?;
    }
    crate::fs::write_atomic(known, kept.as_bytes(), 0o600).map_err(|e| err(e.source))
}

/// Asks `host` for its host key (`ssh-keyscan`, ed25519 first), as the administrator's
/// explicit trust on first use (`gitmirror trust-host`); returns `TYPE BASE64`.
pub(crate) async fn scan_host_key(host: &str, port: Option<u16>) -> Result<String, RemoteError> {
    let scan = |words: String| RemoteError::Scan {
        host: host.to_string(),
        words,
    };
    let out = tokio::process::Command::new("ssh-keyscan")
        .env_clear()
        .env("PATH", SAFE_PATH)
        .args(["-T", "10", "-t", "ed25519,ecdsa,rsa", "-p"])
        .arg(port.unwrap_or(22).to_string())
        .arg("--")
        .arg(host)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| scan(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let keys: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip(1);
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect();
    let best = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"]
        .iter()
        .find_map(|t| keys.iter().find(|(k, _)| k == t))
        .or(keys.first())
        .ok_or_else(|| scan("no key in its answer".into()))?;
    Ok(format!("{} {}", best.0, best.1))
}

fn read_token(file: &Path) -> Result<String, RemoteError> {
    let text = std::fs::read_to_string(file).map_err(|source| RemoteError::Token {
        path: file.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() || token.contains(['\n', '\r']) {
        return Err(RemoteError::BadToken(file.to_path_buf()));
    }
    Ok(token.to_string())
}

/// A path as one word for the shell git runs `GIT_SSH_COMMAND` with.
fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}
