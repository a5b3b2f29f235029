//! A person at a workstation: an ssh key, a directory of their own, and the real `ssh` and
//! `git` clients, configured so that nothing from the machine's or root's own configuration
//! leaks in: this key only, host keys checked against the sandbox's known_hosts.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::process::{OutputExt, run};
use crate::sandbox::{Scratch, sandbox};
use crate::server::Server;

/// An ssh key pair on the client side.
pub struct Key {
    pub private: PathBuf,
    pub public: PathBuf,
}

/// A person at a workstation: a key, a scratch directory, and the real ssh and git clients.
pub struct Client {
    pub name: String,
    pub key: Key,
    pub dir: Scratch,
}

impl Client {
    pub fn new(name: &str) -> Client {
        let dir = Scratch::new(&format!("client-{name}"));
        let private = dir.path().join("id_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{name}@workstation"))
            .arg("-f")
            .arg(&private))
        .ok();
        let public = dir.path().join("id_ed25519.pub");
        Client {
            name: name.to_string(),
            key: Key { private, public },
            dir,
        }
    }

    /// The ssh command line git and the tests use: this key only, strict host checking
    /// against the sandbox's known_hosts, no user config.
    pub fn ssh_command(&self) -> String {
        format!(
            "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o ConnectTimeout=10 -o LogLevel=ERROR",
            self.key.private.display(),
            sandbox().known_hosts.display()
        )
    }

    /// `ssh server COMMAND`.
    pub fn ssh(&self, server: &Server, command: &str) -> Output {
        let cmdline = self.ssh_command();
        let mut words = cmdline.split(' ');
        let mut cmd = Command::new(words.next().unwrap());
        cmd.args(words)
            .arg("-p")
            .arg(server.port.to_string())
            .arg(format!("{}@{}", server.user.name, server.addr))
            .arg(command);
        run(&mut cmd)
    }

    /// `git ARGS` in `cwd` (relative to the client's directory).
    pub fn git_in(&self, cwd: &str, args: &[&str]) -> Output {
        self.git_env(cwd, args, &[])
    }

    pub fn git_env(&self, cwd: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", &self.name)
            .env("GIT_AUTHOR_EMAIL", format!("{}@example.com", self.name))
            .env("GIT_COMMITTER_NAME", &self.name)
            .env("GIT_COMMITTER_EMAIL", format!("{}@example.com", self.name))
            .env("GIT_SSH_COMMAND", self.ssh_command())
            .envs(env.iter().copied())
            .current_dir(self.dir.path().join(cwd))
            .args(args);
        run(&mut cmd)
    }

    pub fn git(&self, args: &[&str]) -> Output {
        self.git_in(".", args)
    }

    /// Clones `repo` from `server` into `dir`.
    pub fn clone(&self, server: &Server, repo: &str, dir: &str) -> Output {
        self.git(&["clone", "-q", &server.url(repo), dir])
    }

    /// Makes a commit in the work tree `dir` that adds `file`, returning its id.
    pub fn commit(&self, dir: &str, file: &str) -> String {
        fs::write(self.dir.path().join(dir).join(file), format!("{file}\n")).unwrap();
        self.git_in(dir, &["add", file]).ok();
        self.git_in(dir, &["commit", "-q", "-m", &format!("add {file}")])
            .ok();
        self.git_in(dir, &["rev-parse", "HEAD"])
            .ok()
            .trim()
            .to_string()
    }

    /// A new local repo in `dir` with one commit on `main`.
    pub fn init_repo(&self, dir: &str) -> String {
        self.git(&["init", "-q", "-b", "main", dir]).ok();
        self.commit(dir, "README")
    }
}
