//! Servers that mirror each other, set up with gitmirror's own commands as an administrator
//! would: `[peers.NAME]` tables in gitmirror.toml, `add-mirroring-peer` with the key each
//! peer's `init` wrote, `[mirror]` settings. And the check every mirroring test ends with:
//! master and slaves identical in refs and HEAD ([`Cluster::wait_in_sync`]).

use std::fs;
use std::io::Write;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::process::{OutputExt, run};
use crate::sandbox::sandbox;
use crate::server::Server;

/// Several servers that know each other as mirroring peers, set up with gitmirror's own
/// commands: `init` on each, `[peers.X]` in each gitmirror.toml, `add-mirroring-peer` both ways.
pub struct Cluster {
    pub servers: Vec<Server>,
}

impl Cluster {
    pub fn new(names: &[&str]) -> Cluster {
        let servers: Vec<Server> = names.iter().map(|n| Server::start(n)).collect();
        for a in &servers {
            for b in servers.iter().filter(|b| b.hostname != a.hostname) {
                a.add_peer_address(b);
                b.add_peer(a);
            }
        }
        Cluster { servers }
    }

    pub fn server(&self, name: &str) -> &Server {
        self.servers
            .iter()
            .find(|s| s.hostname == name)
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    pub fn add_user(&self, client: &Client) {
        for s in &self.servers {
            s.add_user(&client.name, &client.key);
        }
    }

    /// Writes the same repos.toml on every server and compiles it.
    pub fn set_rules(&self, text: &str) {
        for s in &self.servers {
            s.set_rules(text);
        }
    }

    /// Waits until `repo` on each of `slaves` has exactly the refs and HEAD of `master`.
    pub fn wait_in_sync(&self, repo: &str, master: &str, slaves: &[&str]) {
        let m = self.server(master);
        for name in slaves {
            let s = self.server(name);
            let mut last = String::new();
            let start = Instant::now();
            loop {
                let want = m.refs(repo);
                if s.repo_path(repo).exists() {
                    // Unreadable for a moment while the slave creates or moves it: not yet.
                    last = s.try_refs(repo).unwrap_or_else(|e| e);
                    if last == want {
                        break;
                    }
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "{name} never matched {master} for {repo}:\nmaster:\n{want}\n{name}:\n{last}\n{name}'s log:\n{}\n{master}'s log:\n{}",
                    s.log(),
                    m.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Server {
    /// Appends text to gitmirror.toml (peer addresses, mirror settings).
    fn append_config(&self, text: &str) {
        let path = self.home().join("gitmirror.toml");
        let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// How a peer reaches this server, as a `[peers.NAME]` table.
    fn peer_entry(&self) -> String {
        format!(
            "\n[peers.{}]\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n",
            self.hostname, self.addr, self.port, self.user.name
        )
    }

    /// Tells this server how to reach `other`: a `[peers.NAME]` table in its gitmirror.toml.
    pub fn add_peer_address(&self, other: &Server) {
        self.append_config(&other.peer_entry());
    }

    /// Registers `other` as a mirroring peer, from the `NAME.pub` its init wrote.
    pub fn add_peer(&self, other: &Server) {
        let copy = self.sshd_dir.path().join(format!("{}.pub", other.hostname));
        fs::copy(other.home().join(format!("{}.pub", other.hostname)), &copy).unwrap();
        self.gitmirror(&["add-mirroring-peer", copy.to_str().unwrap()])
            .ok();
    }

    /// Has the next daemon serve metrics at `addr`: `[metrics] listen` in gitmirror.toml.
    pub fn metrics_listen(&self, addr: std::net::SocketAddr) {
        self.append_config(&format!("\n[metrics]\nlisten = \"{addr}\"\n"));
    }

    /// Turns sync mode on or off in gitmirror.toml's `[mirror]` table.
    pub fn set_sync(&self, sync: bool) {
        let path = self.home().join("gitmirror.toml");
        let text = fs::read_to_string(&path).unwrap();
        let text = text
            .replace("sync = false", &format!("sync = {sync}"))
            .replace("sync = true", &format!("sync = {sync}"));
        fs::write(&path, text).unwrap();
    }

    /// Adds `key = value` lines to gitmirror.toml's `[mirror]` table.
    pub fn mirror_settings(&self, lines: &str) {
        let path = self.home().join("gitmirror.toml");
        let text = fs::read_to_string(&path).unwrap();
        let text = text.replacen("[mirror]\n", &format!("[mirror]\n{lines}\n"), 1);
        fs::write(&path, text).unwrap();
    }

    /// `ssh OTHER COMMAND` as this server's account with its own key: what a peer sends.
    pub fn ssh_as_peer(&self, other: &Server, command: &str) -> Output {
        run(&mut self.peer_ssh_to(other, command))
    }

    /// [`Server::ssh_as_peer`] with `input` (a file the account can read) as the command's
    /// stdin: a peer speaking a protocol by hand.
    pub fn ssh_as_peer_fed(
        &self,
        other: &Server,
        command: &str,
        input: &std::path::Path,
    ) -> Output {
        let file = fs::File::open(input).unwrap();
        self.peer_ssh_to(other, command)
            .stdin(file)
            .output()
            .unwrap()
    }

    /// The ssh process that runs `command` on `other` with this server's peer key.
    fn peer_ssh_to(&self, other: &Server, command: &str) -> std::process::Command {
        let mut cmd = self.user.command("sh");
        cmd.arg("-c")
            .arg(format!(
                "{} -p {} \"$0\" \"$1\"",
                self.peer_ssh(),
                other.port
            ))
            .arg(format!("{}@{}", other.user.name, other.addr))
            .arg(command);
        cmd
    }

    /// `git ARGS` as this server's account in `dir` (which it must be able to read), with
    /// its peer key for ssh: a master pushing as plain git would, or as a lying one might.
    pub fn git_as_peer(&self, dir: &std::path::Path, args: &[&str]) -> Output {
        run(self
            .user
            .command("git")
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", self.peer_ssh())
            .args(args))
    }

    /// The ssh command line this server's account logs in to peers with (as a shell word
    /// list, without the destination).
    fn peer_ssh(&self) -> String {
        format!(
            "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i {} -o UserKnownHostsFile={}",
            self.home().join(".ssh/id_ed25519").display(),
            sandbox().known_hosts.display()
        )
    }

    /// Every ref with its value, plus where HEAD points: what must match across a mirror.
    /// A server's `refs/gitmirror/diverged/` and `refs/gitmirror/orphaned/` (what it kept when
    /// it had diverged, or when a change of master overwrote it) are its own and left out.
    pub fn refs(&self, repo: &str) -> String {
        self.try_refs(repo).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Server::refs`], or why git could not read them: a repo being created or moved
    /// (a slave applying a rename) exists on disk a moment before git can read it.
    fn try_refs(&self, repo: &str) -> Result<String, String> {
        let read = |args: &[&str]| {
            let out = self.git(repo, args);
            if out.status.success() {
                Ok(out.text())
            } else {
                Err(format!("git {args:?} in {repo} failed: {}", out.err()))
            }
        };
        let refs: String = read(&["for-each-ref", "--format=%(objectname) %(refname)"])?
            .lines()
            .filter(|l| {
                !l.contains(" refs/gitmirror/diverged/")
                    && !l.contains(" refs/gitmirror/orphaned/")
                    && !l.contains(" refs/gitmirror/upstream/")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let head = read(&["symbolic-ref", "HEAD"])?;
        Ok(format!("{refs}HEAD -> {head}"))
    }
}
