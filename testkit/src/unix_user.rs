//! The unix account a server runs as. A gitmirror server is one account that sshd logs into
//! and that owns the server's files, so each test server gets a real account of its own:
//! created with `useradd`, and deleted on drop together with every process it still runs.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{OutputExt, run, signal};
use crate::sandbox::unique;

/// useradd and userdel take a lock on /etc/passwd and fail rather than wait when another test
/// process holds it: they are serialized through this file instead.
const LOCK: &str = "/tmp/gitmirror-tests-useradd.lock";

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
        let name = format!("gmt{}x{}", std::process::id(), unique());
        // Serialize with other test processes (see LOCK), and retry what still collides.
        let lock = File::create(LOCK).unwrap();
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
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
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

impl Drop for UnixUser {
    fn drop(&mut self) {
        // Whatever the account still runs (a daemon the hooks started, ssh masters it opened)
        // was started by this test: stop it by pid.
        signal(&processes_of(self.uid), "KILL");
        let lock = File::create(LOCK);
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
