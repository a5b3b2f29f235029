//! A login to a peer that this process becomes: OpenSSH's client, exec'd in place of a forced
//! command, running one command on the peer with this process's stdin, stdout and stderr. A
//! slave carries a user's push to the repo's master this way, so the pack goes from the
//! user's session to the master's without passing through gitmirror, and whatever the master
//! says (its refusals, its hooks' lines) reaches the user as the master wrote it.
//!
//! The login is the server's own, as the daemon's connections are (see [`super::pool`]): its
//! key, its `known_hosts` (a peer's host key trusted on first contact, refused if it ever
//! changes), the peer's `host`, `port` and `user` from `gitmirror.toml`. Logins to one peer
//! share an OpenSSH control master kept open for a while after its last use: a fresh login
//! costs about 190 ms, a session on an open connection a few.

use std::fmt;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use tracing::warn;

use crate::config::ServerConfig;
use crate::home::Home;
use crate::names::AccountName;
use crate::proto::SAFE_PATH;

/// The control socket's name in its directory: OpenSSH's `%C` is 40 hex digits.
const CONTROL_NAME: &str = "login-%C";

/// Room the socket needs in its directory: `/`, the name with `%C` expanded, and the 17 bytes
/// (`.` and 16 random characters) OpenSSH appends while it binds a new socket.
const CONTROL_ROOM: usize = 1 + "login-".len() + 40 + 17;

/// How long a control master stays after its last session, in seconds: long enough that
/// users pushing now and then share it, short enough that it does not outlive much.
const CONTROL_PERSIST_SECS: u32 = 600;

/// How long connecting may take before the peer counts as down, in seconds.
const CONNECT_TIMEOUT_SECS: u32 = 10;

/// An OpenSSH client command line to one peer, ready to run one command there.
pub(crate) struct Login {
    peer: AccountName,
    args: Vec<String>,
    destination: String,
}

impl Login {
    /// How this server logs in to `peer`.
    pub(crate) fn to(home: &Home, config: &ServerConfig, peer: &AccountName) -> Self {
        let settings = config.peers.get(peer).cloned().unwrap_or_default();
        let key = home.private_key();
        let known_hosts = home.ssh_dir().join("known_hosts");
        let mut args: Vec<String> = vec![
            // No terminal, no forwarding of anything: one command's stdio, nothing else.
            "-T".into(),
            "-o".into(),
            "ClearAllForwardings=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-i".into(),
            key.display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", known_hosts.display()),
            // Trust a peer's host key on first contact, refuse it if it ever changes, as the
            // daemon's connections do (they share this known_hosts).
            "-o".into(),
            "StrictHostKeyChecking=accept-new".into(),
            "-o".into(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            // A peer that stops answering is noticed within three intervals.
            "-o".into(),
            "ServerAliveInterval=5".into(),
            // ssh's own notices (a host key added) would land in the user's terminal.
            "-o".into(),
            "LogLevel=ERROR".into(),
        ];
        match control_dir(home) {
            Some(dir) => args.extend([
                "-o".into(),
                "ControlMaster=auto".into(),
                "-o".into(),
                format!("ControlPath={}", dir.join(CONTROL_NAME).display()),
                "-o".into(),
                format!("ControlPersist={CONTROL_PERSIST_SECS}"),
            ]),
            None => args.extend(["-o".into(), "ControlMaster=no".into()]),
        }
        if let Some(port) = settings.port {
            args.extend(["-p".into(), port.to_string()]);
        }
        if let Some(user) = settings.user {
            args.extend(["-l".into(), user]);
        }
        Login {
            peer: peer.clone(),
            args,
            destination: settings.host.unwrap_or_else(|| peer.to_string()),
        }
    }

    /// The peer this logs in to.
    pub(crate) fn peer(&self) -> &AccountName {
        &self.peer
    }

    /// `ssh ... PEER REMOTE`, with a cleared environment. `protocol` (git's `GIT_PROTOCOL`,
    /// already in its one harmless form) is passed on when given; the peer's sshd accepts it
    /// as it does from users.
    pub(crate) fn command(&self, remote: &str, protocol: Option<&str>) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.env_clear().env("PATH", SAFE_PATH);
        cmd.args(&self.args);
        if let Some(p) = protocol {
            cmd.env("GIT_PROTOCOL", p)
                .args(["-o", "SendEnv=GIT_PROTOCOL"]);
        }
        // The host cannot start with `-` (gitmirror.toml is validated), and `--` makes sure.
        cmd.arg("--").arg(&self.destination).arg(remote);
        cmd
    }

    /// Replaces this process with [`Self::command`]. Returns only if the exec failed.
    pub(crate) fn exec(&self, remote: &str, protocol: Option<&str>) -> io::Error {
        // `Command` looks "ssh" up in the child's PATH, which is SAFE_PATH.
        self.command(remote, protocol).exec()
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("peer", &self.peer)
            .field("destination", &self.destination)
            .finish()
    }
}

/// Where the control sockets of logins live, or `None` when no directory can be had: then
/// each login is a connection of its own, slower but as good.
fn control_dir(home: &Home) -> Option<PathBuf> {
    home.socket_dir(&home.ssh_control_dir(), CONTROL_ROOM)
        .map_err(|e| warn!(error = %e, "no directory for ssh control sockets; logging in afresh"))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn logs_in_as_the_server_to_the_configured_address() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(dir.path()), false).unwrap();
        let config = ServerConfig::from_source(&Source::from_text(
            "gitmirror.toml",
            "hostname = \"server2\"\n[peers.server1]\nhost = \"10.0.0.1\"\nport = 2222\nuser = \"git\"\n",
        ))
        .unwrap();
        let peer = AccountName::parse("server1").unwrap();
        let login = Login::to(&home, &config, &peer);
        let cmd = login.command("info", Some("version=1"));
        let a = args(&cmd);
        let key = home.private_key().display().to_string();
        let pair = |flag: &str, value: &str| a.windows(2).any(|w| w[0] == flag && w[1] == value);
        assert!(pair("-i", &key), "{a:?}");
        assert!(pair("-o", "BatchMode=yes"), "{a:?}");
        assert!(pair("-o", "StrictHostKeyChecking=accept-new"), "{a:?}");
        assert!(pair("-p", "2222") && pair("-l", "git"), "{a:?}");
        assert!(pair("-o", "SendEnv=GIT_PROTOCOL"), "{a:?}");
        assert!(a.iter().any(|x| x.starts_with("ControlPath=")), "{a:?}");
        assert_eq!(a[a.len() - 3..], ["--", "10.0.0.1", "info"]);
        let env: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        assert!(
            env.iter()
                .any(|(k, v)| k == "GIT_PROTOCOL" && v.as_deref() == Some("version=1".as_ref()))
        );
        // An unconfigured peer is an ssh host alias, and no protocol is sent without one.
        let other = AccountName::parse("server3").unwrap();
        let a = args(&Login::to(&home, &config, &other).command("info", None));
        assert_eq!(a[a.len() - 3..], ["--", "server3", "info"]);
        assert!(
            !a.iter().any(|x| x.contains("SendEnv") || x == "-p"),
            "{a:?}"
        );
    }
}
