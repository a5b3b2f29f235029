//! One gitmirror server as it runs in production: a unix account whose home `gitmirror init`
//! made, behind a real sshd of its own on its own 127.0.0.x address. A test reaches it the way
//! users and peers do (over ssh) and acts on it the way its administrator does (`gitmirror`
//! and `git` run as the account). Its sshd can be stopped and started again; harsher faults are
//! in `faults`.

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::client::Key;
use crate::process::{OutputExt, run, signal};
use crate::sandbox::{SSHD, Scratch, sandbox, unique};
use crate::unix_user::UnixUser;

/// One gitmirror server: account, home, sshd.
pub struct Server {
    pub hostname: String,
    pub user: UnixUser,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub(crate) sshd: Option<Child>,
    pub sshd_dir: Scratch,
    /// The gitmirror binary its administrator runs: the sandbox's, or an installed one.
    pub bin: PathBuf,
    _root: Scratch,
}

/// An address of its own for each server, distinct across concurrent test processes.
fn next_addr() -> Ipv4Addr {
    let n = unique();
    let pid = std::process::id();
    Ipv4Addr::new(
        127,
        (pid % 200) as u8 + 20,
        (n / 250) as u8,
        (n % 250) as u8 + 2,
    )
}

impl Server {
    /// Creates the account and home (`gitmirror init` run as that account) and starts sshd.
    pub fn start(hostname: &str) -> Server {
        Server::start_with(hostname, &sandbox().bin)
    }

    /// As [`Server::start`], with `bin` as the gitmirror its administrator runs (e.g. the
    /// package's `/usr/bin/gitmirror`): what `init` and [`Server::gitmirror`] run.
    pub fn start_with(hostname: &str, bin: &Path) -> Server {
        let root = Scratch::new(hostname);
        let home = root.path().join("home");
        let user = UnixUser::create(&home);
        let sshd_dir = Scratch::new(&format!("{hostname}-sshd"));
        let mut server = Server {
            hostname: hostname.to_string(),
            user,
            addr: next_addr(),
            port: 0,
            sshd: None,
            sshd_dir,
            bin: bin.to_path_buf(),
            _root: root,
        };
        server.gitmirror(&["init", "--hostname", hostname]).ok();
        // New repos get `main` as HEAD, as an administrator would configure the account.
        run(server
            .user
            .command("git")
            .args(["config", "--global", "init.defaultBranch", "main"]))
        .ok();
        let key = server.sshd_dir.path().join("host_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key))
        .ok();
        server.start_sshd();
        server
    }

    pub fn home(&self) -> &Path {
        &self.user.home
    }

    fn sshd_config(&self) -> String {
        let d = self.sshd_dir.path().display();
        format!(
            "ListenAddress {addr}:{port}\n\
             HostKey {d}/host_ed25519\n\
             PidFile none\n\
             AuthorizedKeysFile .ssh/authorized_keys\n\
             AllowUsers {user}\n\
             AuthenticationMethods publickey\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes yes\n\
             PermitRootLogin no\n\
             DisableForwarding yes\n\
             PermitTTY no\n\
             PermitUserRC no\n\
             PrintMotd no\n\
             MaxStartups 100\n\
             LogLevel VERBOSE\n\
             # The real config passes only GIT_PROTOCOL; these let hostile variables through so\n\
             # that the tests check gitmirror's own defence.\n\
             AcceptEnv GIT_PROTOCOL LD_PRELOAD GIT_DIR GIT_NAMESPACE GIT_CONFIG_PARAMETERS\n",
            addr = self.addr,
            port = self.port,
            user = self.user.name,
        )
    }

    /// Starts (or restarts) sshd on a free port of this server's address.
    pub fn start_sshd(&mut self) {
        let mut last_log = String::new();
        for _ in 0..5 {
            if self.port == 0 {
                self.port = TcpListener::bind((self.addr, 0))
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
            }
            let config = self.sshd_dir.path().join("sshd_config");
            fs::write(&config, self.sshd_config()).unwrap();
            let log = self.sshd_dir.path().join("sshd.log");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(&log)
                // sshd logs to its file. Its sessions must not hold the test's output open:
                // a reader of that output would wait for them.
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start sshd");
            let start = Instant::now();
            let listening = format!("Server listening on {} port {}.", self.addr, self.port);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                // sshd says so in its log once the socket is bound and it accepts.
                if fs::read_to_string(&log).is_ok_and(|l| l.contains(&listening))
                    && TcpStream::connect((self.addr, self.port)).is_ok()
                {
                    self.sshd = Some(child);
                    self.add_known_host();
                    return;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            last_log = fs::read_to_string(&log).unwrap_or_default();
            self.port = 0;
        }
        panic!("sshd for {} did not start:\n{last_log}", self.hostname);
    }

    /// Stops sshd (by pid).
    pub fn stop_sshd(&mut self) {
        if let Some(mut c) = self.sshd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn add_known_host(&self) {
        let sb = sandbox();
        let _guard = sb.known_hosts_lock.lock().unwrap();
        let key = fs::read_to_string(self.sshd_dir.path().join("host_ed25519.pub")).unwrap();
        let mut parts = key.split_whitespace();
        let (kind, body) = (parts.next().unwrap(), parts.next().unwrap());
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&sb.known_hosts)
            .unwrap();
        writeln!(f, "[{}]:{} {kind} {body}", self.addr, self.port).unwrap();
    }

    /// A directory beside the server's home (not in it), owned by its account: for what the
    /// account keeps outside gitmirror's reach, such as an upstream a mirror pulls from.
    pub fn outside_dir(&self, name: &str) -> PathBuf {
        let dir = self._root.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(self.user.uid), Some(self.user.gid)).unwrap();
        dir
    }

    /// Runs `gitmirror ARGS` as the server's account, as its administrator would.
    pub fn gitmirror(&self, args: &[&str]) -> Output {
        run(self.user.command(&self.bin).args(args))
    }

    /// Registers a user's key (the public key file is copied where the account can read it).
    pub fn add_user(&self, name: &str, key: &Key) {
        let copy = self.sshd_dir.path().join(format!("{name}.pub"));
        fs::copy(&key.public, &copy).unwrap();
        self.gitmirror(&["add-user", name, copy.to_str().unwrap()])
            .ok();
    }

    /// Replaces repos.toml and compiles it.
    pub fn set_rules(&self, text: &str) {
        let path = self.home().join("repos.toml");
        fs::write(&path, text).unwrap();
        self.gitmirror(&["compile"]).ok();
    }

    pub fn repo_path(&self, repo: &str) -> PathBuf {
        self.home().join("repositories").join(format!("{repo}.git"))
    }

    pub fn url(&self, repo: &str) -> String {
        format!(
            "ssh://{}@{}:{}/{repo}.git",
            self.user.name, self.addr, self.port
        )
    }

    /// `git --git-dir=<repo> ARGS` on the server's disk, as the server's account.
    pub fn git(&self, repo: &str, args: &[&str]) -> Output {
        run(self
            .user
            .command("git")
            .arg("--git-dir")
            .arg(self.repo_path(repo))
            .args(args))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.home().join("gitmirror.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Every connection and session too, thawed first in case a test froze them.
        let tree = self.sshd_tree();
        signal(&tree, "CONT");
        signal(&tree, "KILL");
        self.stop_sshd();
    }
}
