//! Test harness: real servers (a unix account, a gitmirror home, a real sshd on its own
//! 127.0.0.x address) and real clients (`ssh`, `git`) talking to them.
//!
//! Everything a test starts is stopped by pid and removed when its handle drops.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// Per-process scratch space that the servers' unix accounts can traverse: a copy (or hard
/// link) of the gitmirror binary and the shared known_hosts file live here.
pub struct Sandbox {
    pub dir: PathBuf,
    pub bin: PathBuf,
    pub known_hosts: PathBuf,
    known_hosts_lock: Mutex<()>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (apt-get install -y openssh-server)"
        );
        remove_stale_sandboxes();
        let dir = PathBuf::from(format!("/tmp/gmt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("bin/gitmirror");
        // Tests get the binary from cargo; the demo (an example) is told where it is.
        let built = std::env::var_os("GITMIRROR_BIN")
            .map(PathBuf::from)
            .or_else(|| option_env!("CARGO_BIN_EXE_gitmirror").map(PathBuf::from))
            .expect("set GITMIRROR_BIN to the gitmirror binary");
        let built = built.as_path();
        if fs::hard_link(built, &bin).is_err() {
            fs::copy(built, &bin).unwrap();
        }
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        // sshd refuses to start without its privilege separation directory.
        fs::create_dir_all("/run/sshd").unwrap();
        let known_hosts = dir.join("known_hosts");
        File::create(&known_hosts).unwrap();
        Sandbox {
            dir,
            bin,
            known_hosts,
            known_hosts_lock: Mutex::new(()),
        }
    })
}

/// Removes sandboxes of test processes that are gone (a killed run leaves them behind).
fn remove_stale_sandboxes() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("gmt-")
            .and_then(|p| p.parse::<u32>().ok())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A fresh directory inside the sandbox, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = sandbox().dir.join(format!("{tag}-{n}"));
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs a command and returns its output; panics only if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub trait OutputExt {
    fn text(&self) -> String;
    fn err(&self) -> String;
    /// Asserts success and returns stdout.
    fn ok(&self) -> String;
    /// Asserts failure with `needle` in stderr and returns stderr.
    fn fails_with(&self, needle: &str) -> String;
}

impl OutputExt for Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn ok(&self) -> String {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.text(),
            self.err()
        );
        self.text()
    }
    fn fails_with(&self, needle: &str) -> String {
        assert!(
            !self.status.success(),
            "command unexpectedly succeeded:\nstdout: {}\nstderr: {}",
            self.text(),
            self.err()
        );
        let err = self.err();
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
        err
    }
}

/// Waits for `cond` to hold, polling, up to `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A unix account created for one server, deleted on drop.
pub struct UnixUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl UnixUser {
    /// Creates an account whose home is `home` and login shell `/bin/sh` (no rc files).
    pub fn create(home: &Path) -> UnixUser {
        let name = format!(
            "gmt{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        // useradd takes a lock on /etc/passwd and fails rather than waits when another test
        // holds it: serialize across processes, and retry what still collides.
        let lock = File::create("/tmp/gitmirror-tests-useradd.lock").unwrap();
        lock.lock().unwrap();
        let mut last = None;
        for _ in 0..20 {
            let out = run(Command::new("useradd")
                .args(["-M", "-U", "-s", "/bin/sh", "-p", "*", "-d"])
                .arg(home)
                .arg(&name));
            if out.status.success() {
                last = None;
                break;
            }
            last = Some(out.err());
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(lock);
        if let Some(err) = last {
            panic!("useradd {name} failed: {err}");
        }
        fs::create_dir_all(home).unwrap();
        let meta_uid = |flag: &str| -> u32 {
            run(Command::new("id").arg(flag).arg(&name))
                .ok()
                .trim()
                .parse()
                .unwrap()
        };
        let (uid, gid) = (meta_uid("-u"), meta_uid("-g"));
        std::os::unix::fs::chown(home, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(home, fs::Permissions::from_mode(0o755)).unwrap();
        UnixUser {
            name,
            uid,
            gid,
            home: home.to_path_buf(),
        }
    }

    /// A command that runs as this account with a login-like environment.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.uid(self.uid)
            .gid(self.gid)
            .env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(&self.home);
        cmd
    }
}

/// Pids of the running processes owned by `uid`, read from /proc.
pub fn processes_of(uid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .is_some_and(|u| u == uid.to_string())
            })
        })
        .collect()
}

/// Sends `signal` (e.g. "KILL", "STOP", "CONT") to each pid.
pub fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

impl Drop for UnixUser {
    fn drop(&mut self) {
        // Whatever the account still runs (a daemon the hooks started, ssh masters it opened)
        // was started by this test: stop it by pid.
        signal(&processes_of(self.uid), "KILL");
        let lock = File::create("/tmp/gitmirror-tests-useradd.lock");
        if let Ok(l) = &lock {
            let _ = l.lock();
        }
        let _ = Command::new("userdel")
            .arg("-f")
            .arg(&self.name)
            .stderr(Stdio::null())
            .status();
    }
}

/// One gitmirror server: account, home, sshd.
pub struct Server {
    pub hostname: String,
    pub user: UnixUser,
    pub addr: Ipv4Addr,
    pub port: u16,
    sshd: Option<Child>,
    pub sshd_dir: Scratch,
    _root: Scratch,
}

fn next_addr() -> Ipv4Addr {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
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

    /// Runs `gitmirror ARGS` as the server's account, as its administrator would.
    pub fn gitmirror(&self, args: &[&str]) -> Output {
        run(self.user.command(&sandbox().bin).args(args))
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

    /// `ssh server COMMAND`, with `options` before the destination.
    pub fn ssh_with(&self, server: &Server, options: &[&str], command: &str) -> Output {
        let cmdline = self.ssh_command();
        let mut words = cmdline.split(' ');
        let mut cmd = Command::new(words.next().unwrap());
        cmd.args(words)
            .args(options)
            .arg("-p")
            .arg(server.port.to_string())
            .arg(format!("{}@{}", server.user.name, server.addr))
            .arg(command);
        run(&mut cmd)
    }

    pub fn ssh(&self, server: &Server, command: &str) -> Output {
        self.ssh_with(server, &[], command)
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

/// Every file under `root` with its contents (directories and symlinks recorded too), except
/// the log file, which the tests expect to grow.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("gitmirror.log") {
                continue;
            }
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(rel, format!("dir {:o}", meta.mode()).into_bytes());
                walk(&p, root, out);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else {
                let mut v = fs::read(&p).unwrap();
                v.extend(format!(" mode {:o}", meta.mode()).bytes());
                out.insert(rel, v);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts two snapshots are equal, naming the paths that differ.
pub fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "changed on disk: {changed:?}");
}

impl Server {
    /// Appends text to gitmirror.toml (peer addresses, mirror settings).
    pub fn append_config(&self, text: &str) {
        let path = self.home().join("gitmirror.toml");
        let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
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

    /// How a peer reaches this server, as a `[peers.NAME]` table.
    pub fn peer_entry(&self) -> String {
        format!(
            "\n[peers.{}]\nhost = \"{}\"\nport = {}\nuser = \"{}\"\n",
            self.hostname, self.addr, self.port, self.user.name
        )
    }

    /// Registers `other` as a mirroring peer, from the `NAME.pub` its init wrote.
    pub fn add_peer(&self, other: &Server) {
        let copy = self.sshd_dir.path().join(format!("{}.pub", other.hostname));
        fs::copy(other.home().join(format!("{}.pub", other.hostname)), &copy).unwrap();
        self.gitmirror(&["add-mirroring-peer", copy.to_str().unwrap()])
            .ok();
    }

    /// `ssh OTHER COMMAND` as this server's account with its own key: what a peer sends.
    pub fn ssh_as_peer(&self, other: &Server, command: &str) -> Output {
        run(self
            .user
            .command("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .arg("-i")
            .arg(self.home().join(".ssh/id_ed25519"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                sandbox().known_hosts.display()
            ))
            .args(["-p", &other.port.to_string()])
            .arg(format!("{}@{}", other.user.name, other.addr))
            .arg(command))
    }

    /// Every ref with its value, plus where HEAD points: what must match across a mirror.
    /// A slave's `refs/gitmirror/diverged/` (what it kept when it had diverged) is its own and
    /// left out.
    pub fn refs(&self, repo: &str) -> String {
        let refs: String = self
            .git(repo, &["for-each-ref", "--format=%(objectname) %(refname)"])
            .ok()
            .lines()
            .filter(|l| !l.contains(" refs/gitmirror/diverged/"))
            .map(|l| format!("{l}\n"))
            .collect();
        let head = self.git(repo, &["symbolic-ref", "HEAD"]).ok();
        format!("{refs}HEAD -> {head}")
    }
}

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
                a.append_config(&b.peer_entry());
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
                    last = s.refs(repo);
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

/// `pid` and every process descended from it, found through /proc.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
                && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|x| x.parse().ok())
            {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

impl Server {
    /// Adds `key = value` lines to gitmirror.toml's `[mirror]` table.
    pub fn mirror_settings(&self, lines: &str) {
        let path = self.home().join("gitmirror.toml");
        let text = fs::read_to_string(&path).unwrap();
        let text = text.replacen("[mirror]\n", &format!("[mirror]\n{lines}\n"), 1);
        fs::write(&path, text).unwrap();
    }

    /// sshd and everything it runs: the listener, each connection, each session.
    pub fn sshd_tree(&self) -> Vec<u32> {
        self.sshd
            .as_ref()
            .map_or(Vec::new(), |c| process_tree(c.id()))
    }

    /// The whole server goes down: sshd and every connection and session it serves.
    pub fn crash_sshd(&mut self) {
        let tree = self.sshd_tree();
        signal(&tree, "KILL");
        self.stop_sshd();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) sshd and everything it runs.
    pub fn freeze(&self, frozen: bool) {
        signal(&self.sshd_tree(), if frozen { "STOP" } else { "CONT" });
    }

    /// The pid the running daemon wrote, if one runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        let pid: u32 = fs::read_to_string(self.home().join("state/daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
    }

    /// Starts `gitmirror daemon` as the server's account, in the background; it is stopped
    /// (by pid) and reaped when the returned guard drops.
    pub fn start_daemon(&self) -> Daemon {
        Daemon(
            self.user
                .command(&sandbox().bin)
                .arg("daemon")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// `gitmirror status --json`, parsed, and whether it exited 0.
    pub fn status(&self) -> (serde_json::Value, bool) {
        let out = self.gitmirror(&["status", "--json"]);
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}{}", out.text(), out.err()));
        (v, out.status.success())
    }

    /// The status row of `repo` on `slave`.
    pub fn slave_status(&self, repo: &str, slave: &str) -> serde_json::Value {
        let (v, _) = self.status();
        v["slaves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["repo"] == repo && r["slave"] == slave)
            .cloned()
            .unwrap_or_else(|| panic!("no status row for {repo} on {slave}: {v}"))
    }

    /// How many receive-pack sessions from `peer` this server has admitted.
    pub fn mirror_pushes_from(&self, peer: &str) -> usize {
        self.log()
            .matches(&format!("actor={peer} verb=\"git-receive-pack\""))
            .count()
    }
}

/// A daemon a test started itself.
pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
