//! The replication daemon, seen from outside: started by a test ([`Server::start_daemon`]) or
//! by the hooks, found by its pid file, and observed through what the administrator sees:
//! `gitmirror status --json` and the log. The fault tests kill and restart it and then check,
//! through these, that no accepted push was lost.

use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::process::{OutputExt, signal, wait_for};
use crate::sandbox::sandbox;
use crate::server::Server;

/// A daemon a test started itself; stopped (by pid) and reaped on drop.
pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pid the daemon of the home at `home` wrote, if it runs.
pub fn daemon_pid_in(home: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(home.join("state/daemon.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// Stops the daemon of the home at `home`, if one runs (SIGTERM, by pid), and waits until it
/// is gone. A test whose home has no account of its own (run as root) must call it: nothing
/// else stops a daemon a command started there.
pub fn stop_daemon_in(home: &Path) {
    if let Some(pid) = daemon_pid_in(home) {
        signal(&[pid], "TERM");
        wait_for("the daemon gone", Duration::from_secs(10), || {
            daemon_pid_in(home).is_none()
        });
    }
}

impl Server {
    /// The pid the running daemon wrote, if one runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        daemon_pid_in(self.home())
    }

    /// Stops the running daemon, if any (SIGTERM, by pid), and waits until it is gone: the next
    /// one, started by a push or a command, reads the configuration afresh.
    pub fn stop_daemon(&self) {
        stop_daemon_in(self.home());
        // A daemon the last command spawned may not have written its pid yet: it would go on
        // with the settings the test is replacing. Any `gitmirror daemon` of this server's
        // account is stopped too, by pid, until none is left.
        let uid = self.user.uid;
        wait_for(
            "no daemon of this server left",
            Duration::from_secs(10),
            || {
                let left: Vec<u32> = crate::unix_user::processes_of(uid)
                    .into_iter()
                    .filter(|pid| {
                        fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                            // `gitmirror [--home DIR] daemon`, as a command or a test starts it.
                            let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                            args.iter().skip(1).take(3).any(|a| *a == b"daemon")
                        })
                    })
                    .collect();
                if !left.is_empty() {
                    signal(&left, "TERM");
                }
                left.is_empty()
            },
        );
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
        // The daemon pushes with its own verb; git's is what a plain client (or an older
        // master) uses.
        let log = self.log();
        ["mirror-receive-pack", "git-receive-pack"]
            .iter()
            .map(|verb| {
                log.matches(&format!("actor={peer} verb=\"{verb}\""))
                    .count()
            })
            .sum()
    }
}
