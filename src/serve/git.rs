//! Running git's own server programs for a client, in an environment we control.
//!
//! Whatever the client or sshd put into our environment (`GIT_DIR`, `LD_PRELOAD`,
//! `GIT_CONFIG_PARAMETERS`, ...) stays behind: git starts from an empty environment plus
//! a fixed `PATH`, the server's `HOME`, the identity hooks need, and `GIT_PROTOCOL` when it has
//! the one harmless form `version=N`.

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::command::GitService;
use crate::home::Home;
use crate::proto::SAFE_PATH;

/// Returns `GIT_PROTOCOL` if it is exactly `version=N` for a single digit N; anything else
/// is dropped, since git would otherwise parse arbitrary client text.
pub(crate) fn sanitize_protocol(raw: Option<&OsStr>) -> Option<String> {
    let raw = raw?.to_str()?;
    let digit = raw.strip_prefix("version=")?;
    (digit.len() == 1 && digit.bytes().all(|b| b.is_ascii_digit())).then(|| raw.to_string())
}

/// A git service ready to start: what to run, where, and with which environment.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    service: GitService,
    repo: PathBuf,
    env: Vec<(String, String)>,
    config: Vec<String>,
}

impl Launch {
    /// Prepares `git <service> <repo>` with the cleared environment, `HOME` set to the server
    /// home, the client's validated protocol, and `identity` (variables the hooks read).
    ///
    /// A push always runs gitmirror's hooks from the home (`core.hooksPath`) and checks incoming
    /// objects, whatever the repo's own config says: a repo made by hand or migrated from
    /// elsewhere gets the same access checks and replication as one gitmirror created.
    pub(crate) fn new(
        service: GitService,
        repo: &Path,
        home: &Home,
        protocol: Option<String>,
        identity: Vec<(String, String)>,
    ) -> Self {
        let mut env = vec![
            ("PATH".to_string(), SAFE_PATH.to_string()),
            ("HOME".to_string(), home.root().display().to_string()),
        ];
        if let Some(p) = protocol {
            env.push(("GIT_PROTOCOL".to_string(), p));
        }
        env.extend(identity);
        let launch = Launch {
            service,
            repo: repo.to_path_buf(),
            env,
            config: Vec::new(),
        };
        if service == GitService::ReceivePack {
            launch
                .with_config("core.hooksPath", &home.hooks_dir().display().to_string())
                .with_config("receive.fsckObjects", "true")
        } else {
            launch
        }
    }

    /// Sets `git -c KEY=VALUE` for this run only (fixed settings of ours, never client text),
    /// replacing an earlier value of the same key.
    pub(crate) fn with_config(mut self, key: &str, value: &str) -> Self {
        let prefix = format!("{key}=");
        self.config.retain(|c| !c.starts_with(&prefix));
        self.config.push(format!("{key}={value}"));
        self
    }

    /// Sets one more variable of ours (never client text) in git's environment, for the hooks.
    pub(crate) fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds one more `git -c KEY=VALUE` for a key git reads as a list (`transfer.hideRefs`).
    pub(crate) fn with_config_added(mut self, key: &str, value: &str) -> Self {
        self.config.push(format!("{key}={value}"));
        self
    }

    /// The process to run. `--strict` keeps upload-pack from wandering into `<repo>/.git`.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        for c in &self.config {
            cmd.arg("-c").arg(c);
        }
        cmd.arg(self.service.subcommand());
        if self.service == GitService::UploadPack {
            cmd.arg("--strict");
        }
        cmd.arg(&self.repo);
        cmd
    }

    /// Replaces this process with git, so the client talks to git directly and no copy of
    /// the pack stream passes through us. Returns only if the exec failed.
    pub(crate) fn exec(&self) -> io::Error {
        // `Command` looks "git" up in the child's PATH, which is SAFE_PATH.
        self.command().exec()
    }

    /// The environment git will see.
    #[cfg(test)]
    pub(crate) fn env(&self) -> &[(String, String)] {
        &self.env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_passes_only_as_version_n() {
        let ok = |s: &str| sanitize_protocol(Some(OsStr::new(s)));
        assert_eq!(ok("version=2"), Some("version=2".into()));
        assert_eq!(ok("version=0"), Some("version=0".into()));
        for bad in [
            "",
            "version=",
            "version=22",
            "version=2:x=y",
            "x=1",
            "version=a",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
        assert_eq!(sanitize_protocol(None), None);
    }

    #[test]
    fn environment_is_built_not_inherited() {
        let l = Launch::new(
            GitService::UploadPack,
            Path::new("/srv/r.git"),
            &Home::locate(Some(Path::new("/srv")), false).unwrap(),
            None,
            vec![("GITMIRROR_USER".into(), "alice".into())],
        );
        let keys: Vec<&str> = l.env().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["PATH", "HOME", "GITMIRROR_USER"]);
        let cmd = l.command();
        let args: Vec<&OsStr> = cmd.get_args().collect();
        assert_eq!(args, ["upload-pack", "--strict", "/srv/r.git"]);
        let push = Launch::new(
            GitService::ReceivePack,
            Path::new("/srv/r.git"),
            &Home::locate(Some(Path::new("/srv")), false).unwrap(),
            None,
            Vec::new(),
        );
        let cmd = push.command();
        let args: Vec<&OsStr> = cmd.get_args().collect();
        assert_eq!(
            args,
            [
                "-c",
                "core.hooksPath=/srv/hooks",
                "-c",
                "receive.fsckObjects=true",
                "receive-pack",
                "/srv/r.git"
            ]
        );
    }
}
