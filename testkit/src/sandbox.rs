//! The per-process sandbox: one directory under /tmp that every server's unix account can
//! traverse, holding the gitmirror binary those accounts run and the known_hosts file the
//! clients check sshd's host keys against. Tests take fresh directories in it ([`Scratch`]).
//!
//! It exists because the accounts a test creates cannot read cargo's target directory, and
//! because a killed run must not leave its files behind for ever: the next run removes them.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

pub const SSHD: &str = "/usr/sbin/sshd";

/// Per-process scratch space that the servers' unix accounts can traverse: a copy (or hard
/// link) of the gitmirror binary and the shared known_hosts file live here.
pub struct Sandbox {
    pub(crate) dir: PathBuf,
    /// The gitmirror binary the servers' accounts run.
    pub bin: PathBuf,
    pub(crate) known_hosts: PathBuf,
    pub(crate) known_hosts_lock: Mutex<()>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number not handed out before in this process: keeps names and addresses apart.
pub(crate) fn unique() -> u32 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

pub fn sandbox() -> &'static Sandbox {
    static S: OnceLock<Sandbox> = OnceLock::new();
    S.get_or_init(|| {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (apt-get install -y openssh-server)"
        );
        let built = gitmirror_binary();
        remove_stale_sandboxes();
        let dir = PathBuf::from(format!("/tmp/gmt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("bin/gitmirror");
        if fs::hard_link(&built, &bin).is_err() {
            fs::copy(&built, &bin).unwrap();
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

/// The gitmirror binary cargo built: `GITMIRROR_BIN` if set, else found next to the running
/// executable. Tests and benchmarks run from target/PROFILE/deps/, examples from
/// target/PROFILE/examples/; the binary is target/PROFILE/gitmirror.
fn gitmirror_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("GITMIRROR_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "GITMIRROR_BIN is {}, which is not a file: set it to the gitmirror binary",
            bin.display()
        );
        return bin;
    }
    let exe = std::env::current_exe().expect("cannot find the running executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("gitmirror"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "no gitmirror binary at {} (looked next to {}): build it (cargo build --bin gitmirror) \
         or set GITMIRROR_BIN to its path",
        bin.display(),
        exe.display()
    );
    bin
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
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let n = unique();
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
