//! The Debian package, as an administrator uses it: installed with dpkg on this machine, a
//! server set up with the installed `/usr/bin/gitmirror` only (its own unix account, `init`,
//! `add-user` and `compile` run as that path), a real `git push` over a real sshd, an upgrade
//! in place that needs no step on the server, then removed and purged with nothing left.
//!
//! Ignored in the plain `cargo test` run: it installs into /usr, so it runs alone, after the
//! other tests (`scripts/test`: `cargo test --test package -- --ignored`), on the package
//! `scripts/package` built from the binary those tests used (`GITMIRROR_DEB`, or built here).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gitmirror_testkit::*;

const PACKAGE: &str = "gitmirror";
const BIN: &str = "/usr/bin/gitmirror";
/// Held for the whole test: two runs on one machine (two checkouts) would install and remove
/// the same package under each other.
const LOCK: &str = "/tmp/gitmirror-package-test.lock";

/// Runs dpkg, waiting while another dpkg (or apt) holds its lock.
fn dpkg(args: &[&str]) -> Output {
    let start = Instant::now();
    loop {
        let out = run(Command::new("dpkg").args(args));
        let locked = !out.status.success() && out.err().contains("lock");
        if !locked || start.elapsed() > Duration::from_secs(120) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether the package is installed (or half-installed: anything dpkg still knows of).
fn known_to_dpkg() -> bool {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", PACKAGE]));
    out.status.success() && !out.text().contains("not-installed")
}

/// Purges the package when dropped, so a failing test leaves nothing installed.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if known_to_dpkg() {
            let _ = dpkg(&["--purge", PACKAGE]);
        }
    }
}

/// The .deb: `GITMIRROR_DEB`, else built by `scripts/package` from the binary this test
/// binary was built with (same profile, no build).
fn the_package() -> PathBuf {
    if let Some(deb) = std::env::var_os("GITMIRROR_DEB") {
        return PathBuf::from(deb);
    }
    let exe = std::env::current_exe().unwrap();
    // target/PROFILE_DIR/deps/package-HASH
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_string(),
        Some(p) => p.to_string(),
        None => panic!("no profile in {}", exe.display()),
    };
    let out = run(
        Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/package"))
            .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap())
            .args(["--profile", &profile, "--no-build"]),
    )
    .ok();
    PathBuf::from(out.lines().last().unwrap().trim())
}

#[test]
#[ignore = "installs a Debian package into /usr: run alone, as scripts/test does"]
fn the_package_installs_serves_a_push_and_removes_cleanly() {
    let lock = File::create(LOCK).unwrap();
    lock.lock().unwrap();
    // Never overwrite a gitmirror that this package did not put there.
    if Path::new(BIN).exists() && !known_to_dpkg() {
        panic!("{BIN} exists and is not from the {PACKAGE} package: not touching it");
    }
    let deb = the_package();
    let _purge = Installed;
    // A run killed half-way leaves the package behind: start from none.
    if known_to_dpkg() {
        dpkg(&["--purge", PACKAGE]).ok();
    }
    dpkg(&["-i", deb.to_str().unwrap()]).ok();

    let files: Vec<PathBuf> = dpkg(&["-L", PACKAGE])
        .ok()
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    for f in [
        BIN,
        "/usr/lib/systemd/system/gitmirror@.service",
        "/usr/share/doc/gitmirror/sshd_config.snippet",
        "/usr/share/doc/gitmirror/gitmirror.toml.example",
        "/usr/share/doc/gitmirror/repos.toml.example",
        "/usr/share/doc/gitmirror/prometheus-alerts.yml",
        "/usr/share/doc/gitmirror/grafana-dashboard.json",
        "/usr/share/doc/gitmirror/copyright",
        "/usr/share/man/man1/gitmirror.1.gz",
        "/usr/share/man/man1/gitmirror-init.1.gz",
        "/usr/share/man/man1/gitmirror-compile.1.gz",
        "/usr/share/bash-completion/completions/gitmirror",
        "/usr/share/zsh/vendor-completions/_gitmirror",
        "/usr/share/fish/vendor_completions.d/gitmirror.fish",
    ] {
        assert!(
            files.contains(&PathBuf::from(f)),
            "{f} not installed: {files:?}"
        );
    }
    // The installed completions are what the installed binary prints.
    assert_eq!(
        fs::read_to_string("/usr/share/bash-completion/completions/gitmirror").unwrap(),
        run(Command::new(BIN).args(["completions", "bash"])).ok()
    );

    {
        // A server set up with the installed binary only.
        let server = Server::start_with("server1", Path::new(BIN));
        let alice = Client::new("alice");
        server.add_user("alice", &alice.key);
        server.set_rules("[repos.testing]\nRW = [\"alice\"]\n");
        // The account's own $HOME is the home: no --home, and the package's path, as written.
        let ak = fs::read_to_string(server.home().join(".ssh/authorized_keys")).unwrap();
        assert!(
            ak.contains(&format!(
                "restrict,command=\"{BIN} shell alice\" ssh-ed25519 "
            )),
            "{ak}"
        );
        for hook in [
            "hooks/post-receive",
            "repositories/testing.git/hooks/pre-receive",
        ] {
            let text = fs::read_to_string(server.home().join(hook)).unwrap();
            assert!(
                text.contains(&format!("\nexec {BIN} hook ")),
                "{hook}: {text}"
            );
        }
        // The template unit, for this account, where systemd's own checker is installed.
        if Path::new("/usr/bin/systemd-analyze").exists() {
            let instance = format!(
                "/usr/lib/systemd/system/gitmirror@{}.service",
                server.user.name
            );
            run(Command::new("systemd-analyze").args(["verify", &instance])).ok();
        }

        let head = alice.init_repo("work");
        alice
            .git_in(
                "work",
                &["push", "-q", "-u", &server.url("testing"), "main"],
            )
            .ok();
        assert_eq!(
            server.git("testing", &["rev-parse", "main"]).ok().trim(),
            head
        );
        // An upgrade (dpkg unpacks a new /usr/bin/gitmirror over the old) needs neither
        // add-user nor compile again: the next push just works.
        let inode = |p: &str| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = inode(BIN);
        dpkg(&["-i", deb.to_str().unwrap()]).ok();
        assert_ne!(inode(BIN), before, "dpkg did not replace {BIN}");
        let next = alice.commit("work", "after-upgrade");
        alice.git_in("work", &["push", "-q"]).ok();
        assert_eq!(
            server.git("testing", &["rev-parse", "main"]).ok().trim(),
            next
        );
        // Dropped here: sshd, whatever the account runs (the daemon the hook started, from
        // /usr/bin/gitmirror), and the account itself.
    }

    dpkg(&["-r", PACKAGE]).ok();
    let left: Vec<&PathBuf> = files.iter().filter(|f| f.exists()).collect();
    assert!(left.is_empty(), "left after dpkg -r: {left:?}");
    dpkg(&["--purge", PACKAGE]).ok();
    assert!(!known_to_dpkg(), "dpkg still knows {PACKAGE} after --purge");
    for dir in [
        "/usr/share/doc/gitmirror",
        "/var/lib/dpkg/info/gitmirror.list",
    ] {
        assert!(!Path::new(dir).exists(), "{dir} left after purge");
    }
}
