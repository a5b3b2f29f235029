//! The administrator's commands run directly: init, add-user, compile. No sshd needed, except
//! to check that the shipped sshd snippet is valid and where a test needs the server's own
//! unprivileged account (what root may read, it may not).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use gitmirror_testkit::*;

/// Runs gitmirror with `--home` (not the default home), as root.
fn gm(home: &Path, args: &[&str]) -> Output {
    run(Command::new(&sandbox().bin)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent-home")
        .arg("--home")
        .arg(home)
        .args(args))
}

/// A home made by `init`, removed on drop with whatever daemon a command started in it
/// (these tests run as root, whose processes nothing else stops).
struct Fresh(Scratch);

impl Drop for Fresh {
    fn drop(&mut self) {
        stop_daemon_in(&self.0.path().join("home"));
    }
}

fn fresh(hostname: &str) -> (Fresh, std::path::PathBuf) {
    let s = Scratch::new("admin");
    let home = s.path().join("home");
    let out = gm(&home, &["init", "--hostname", hostname]).ok();
    assert!(out.contains("is ready for"), "{out}");
    (Fresh(s), home)
}

#[test]
fn init_creates_a_home_and_says_what_next() {
    let s = Scratch::new("admin");
    let home = s.path().join("home");
    let out = gm(&home, &["init", "--hostname", "server1"]).ok();
    for file in [
        "gitmirror.toml",
        "repos.toml",
        "repositories",
        ".ssh/id_ed25519",
        ".ssh/id_ed25519.pub",
        ".ssh/authorized_keys",
        "server1.pub",
    ] {
        assert!(home.join(file).exists(), "{file} missing");
    }
    assert!(out.contains("Match User"), "{out}");
    assert!(out.contains("AcceptEnv GIT_PROTOCOL"), "{out}");
    assert!(
        out.contains(&home.join(".ssh/authorized_keys").display().to_string()),
        "{out}"
    );
    assert!(out.contains("server1.pub"), "{out}");
    let pubkey = fs::read_to_string(home.join("server1.pub")).unwrap();
    assert!(pubkey.starts_with("ssh-ed25519 "), "{pubkey}");
    assert_eq!(
        pubkey,
        fs::read_to_string(home.join(".ssh/id_ed25519.pub")).unwrap()
    );
}

#[test]
fn init_twice_destroys_nothing() {
    let (_s, home) = fresh("server1");
    fs::write(home.join("repos.toml"), "[repos.mine]\nR = [\"a\"]\n").unwrap();
    let before = snapshot(&home);
    gm(&home, &["init", "--hostname", "server1"]).ok();
    assert_unchanged(&before, &snapshot(&home));
    // Another hostname for the same home is refused, naming both.
    gm(&home, &["init", "--hostname", "server2"])
        .fails_with("already names this server \"server1\", not \"server2\"");
    assert_unchanged(&before, &snapshot(&home));
    // A missing piece is restored without touching the rest.
    fs::remove_file(home.join("server1.pub")).unwrap();
    gm(&home, &["init", "--hostname", "server1"]).ok();
    assert_unchanged(&before, &snapshot(&home));
}

#[test]
fn init_refuses_a_bad_hostname() {
    let s = Scratch::new("admin");
    let home = s.path().join("home");
    gm(&home, &["init", "--hostname", "a;b"]).fails_with("--hostname");
    assert!(!home.exists());
}

fn key(name: &str) -> Client {
    Client::new(name)
}

#[test]
fn add_user_writes_restricted_lines_and_keeps_foreign_ones() {
    let (_s, home) = fresh("server1");
    let ak = home.join(".ssh/authorized_keys");
    fs::write(
        &ak,
        "# the admin's own key\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAKE admin\n",
    )
    .unwrap();
    let (alice, bob) = (key("alice"), key("bob"));
    gm(
        &home,
        &["add-user", "alice", alice.key.public.to_str().unwrap()],
    )
    .ok();
    gm(
        &home,
        &["add-user", "bob", bob.key.public.to_str().unwrap()],
    )
    .ok();
    let text = fs::read_to_string(&ak).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "# the admin's own key");
    assert_eq!(lines[1], "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFAKE admin");
    let ours: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("restrict,"))
        .collect();
    assert_eq!(ours.len(), 2, "{text}");
    let bin = sandbox().bin.display().to_string();
    let home_s = home.display().to_string();
    assert!(
        ours[0].starts_with(&format!(
            "restrict,command=\"{bin} --home {home_s} shell alice\" ssh-ed25519 "
        )),
        "{text}"
    );
    assert!(ours[1].contains(" shell bob\" ssh-ed25519 "), "{text}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&ak).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Re-adding the same key is a no-op; a new key for alice replaces the old one.
    let before = fs::read_to_string(&ak).unwrap();
    gm(
        &home,
        &["add-user", "alice", alice.key.public.to_str().unwrap()],
    )
    .ok();
    assert_eq!(fs::read_to_string(&ak).unwrap(), before);
    let alice2 = key("alice2");
    gm(
        &home,
        &["add-user", "alice", alice2.key.public.to_str().unwrap()],
    )
    .ok();
    let after = fs::read_to_string(&ak).unwrap();
    let new_body = fs::read_to_string(&alice2.key.public).unwrap();
    let new_body = new_body.split_whitespace().nth(1).unwrap();
    assert!(after.contains(new_body));
    assert_eq!(after.matches(" shell alice\"").count(), 1, "{after}");
}

#[test]
fn add_user_refuses_a_key_already_in_a_foreign_line() {
    let (_s, home) = fresh("server1");
    let alice = key("alice");
    let ak = home.join(".ssh/authorized_keys");
    let pubkey = fs::read_to_string(&alice.key.public).unwrap();
    fs::write(&ak, format!("no-pty {pubkey}")).unwrap();
    let before = snapshot(&home);
    gm(
        &home,
        &["add-user", "alice", alice.key.public.to_str().unwrap()],
    )
    .fails_with("already appears on line 1");
    assert_unchanged(&before, &snapshot(&home));
}

#[test]
fn compile_reports_config_mistakes_with_line_and_changes_nothing() {
    let (_s, home) = fresh("server1");
    fs::write(home.join("repos.toml"), "[repos.good]\nR = [\"a\"]\n").unwrap();
    gm(&home, &["compile"]).ok();
    let cases = [
        (
            "repos.toml",
            "[repos.new]\nR = [\"a\"]\n\n[repos.x]\nRW = [\"@ghosts\"]\n",
            "repos.toml:5: ",
            "unknown group @ghosts",
        ),
        (
            "repos.toml",
            "[repos.new]\nR = [\"a\"]\n[repos.\"../evil\"]\n",
            "repos.toml:3: ",
            "expected a name",
        ),
        (
            "repos.toml",
            "[repos.new]\nR = [\"a\"\n",
            "repos.toml:2: ",
            "",
        ),
        (
            "repos.toml",
            "[repos.new]\nW = [\"a\"]\n",
            "repos.toml:2: ",
            "expected one of `RW+`, `RW`, `R`, `C`, `-`, `rules`",
        ),
        (
            "gitmirror.toml",
            "hostname = \"server1\"\n[mirror]\nsync = \"yes\"\n",
            "gitmirror.toml:3: ",
            "",
        ),
    ];
    for (file, text, location, needle) in cases {
        let good_rules = fs::read_to_string(home.join("repos.toml")).unwrap();
        let good_config = fs::read_to_string(home.join("gitmirror.toml")).unwrap();
        fs::write(home.join(file), text).unwrap();
        let before = snapshot(&home);
        let err = gm(&home, &["compile"]).fails_with(needle);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(location), "{err}");
        assert!(
            err.contains(&home.join(file).display().to_string()),
            "{err}"
        );
        assert_unchanged(&before, &snapshot(&home));
        assert!(!home.join("repositories/new.git").exists());
        fs::write(home.join("repos.toml"), good_rules).unwrap();
        fs::write(home.join("gitmirror.toml"), good_config).unwrap();
    }
}

#[test]
fn compile_writes_mirror_settings_into_repo_config() {
    let (_s, home) = fresh("server1");
    fs::write(
        home.join("repos.toml"),
        r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2", "server3"]
[repos.a]
R = ["x"]
[repos."site-b/tools"]
mirror.master = "server2"
mirror.slaves = ["server1"]
"#,
    )
    .unwrap();
    gm(&home, &["compile"]).ok();
    let get = |repo: &str, key: &str| {
        run(Command::new("git")
            .arg("--git-dir")
            .arg(home.join("repositories").join(repo))
            .args(["config", key]))
        .ok()
        .trim()
        .to_string()
    };
    assert_eq!(get("a.git", "gitolite.mirror.master"), "server1");
    assert_eq!(get("a.git", "gitolite.mirror.slaves"), "server2 server3");
    assert_eq!(get("site-b/tools.git", "gitolite.mirror.master"), "server2");
    assert_eq!(get("site-b/tools.git", "gitolite.mirror.slaves"), "server1");
    assert_eq!(get("a.git", "receive.fsckObjects"), "true");
}

#[test]
fn shipped_sshd_snippet_is_valid() {
    let s = Scratch::new("sshd-t");
    let key = s.path().join("host");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key))
    .ok();
    let snippet = include_str!("../conf/sshd_config.snippet");
    let config = s.path().join("sshd_config");
    fs::write(
        &config,
        format!("HostKey {}\nPidFile none\n{snippet}", key.display()),
    )
    .unwrap();
    fs::create_dir_all("/run/sshd").unwrap();
    run(Command::new(SSHD).arg("-t").arg("-f").arg(&config)).ok();
}

#[test]
fn a_name_is_a_user_or_a_peer_never_both() {
    let (_s, home) = fresh("server1");
    let (alice, other) = (key("alice"), key("other"));
    gm(
        &home,
        &["add-user", "alice", alice.key.public.to_str().unwrap()],
    )
    .ok();
    // A peer key file named after an existing user is refused...
    let peer_file = home.parent().unwrap().join("alice.pub");
    fs::copy(&other.key.public, &peer_file).unwrap();
    let before = snapshot(&home);
    gm(&home, &["add-mirroring-peer", peer_file.to_str().unwrap()])
        .fails_with("alice is already a user");
    assert_unchanged(&before, &snapshot(&home));
    // ...and a user named after an existing peer.
    let s2 = home.parent().unwrap().join("server2.pub");
    fs::copy(&other.key.public, &s2).unwrap();
    gm(&home, &["add-mirroring-peer", s2.to_str().unwrap()]).ok();
    let text = fs::read_to_string(home.join(".ssh/authorized_keys")).unwrap();
    assert!(text.contains(" peer server2\" ssh-ed25519 "), "{text}");
    let third = key("third");
    gm(
        &home,
        &["add-user", "server2", third.key.public.to_str().unwrap()],
    )
    .fails_with("server2 is already a peer");
    // A peer key file must be NAME.pub with a valid NAME.
    let bad = home.parent().unwrap().join("bad name.pub");
    fs::copy(&third.key.public, &bad).unwrap();
    gm(&home, &["add-mirroring-peer", bad.to_str().unwrap()]).fails_with("bad name");
}

#[test]
fn an_unreadable_directory_among_the_repositories_is_skipped() {
    let server = Server::start("server1");
    let alice = Client::new("alice");
    server.add_user("alice", &alice.key);
    server.set_rules("[repos.\"site/tools\"]\nR = [\"alice\"]\n");
    // A volume's lost+found, which the server's account cannot read.
    let lost = server.home().join("repositories/lost+found");
    fs::create_dir(&lost).unwrap();
    fs::set_permissions(&lost, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    server.gitmirror(&["compile"]).ok();
    server.gitmirror(&["status"]).ok();
    let info = alice.ssh(&server, "info").ok();
    assert!(info.contains("site/tools"), "{info}");
    assert!(
        server.log().contains("lost+found"),
        "the skip is not logged"
    );
}

#[test]
fn compile_removes_the_mirror_settings_it_wrote_and_keeps_those_set_by_hand() {
    let (_s, home) = fresh("server2");
    let git_config = |repo: &str, args: &[&str]| {
        run(Command::new("git")
            .arg("--git-dir")
            .arg(home.join(format!("repositories/{repo}.git")))
            .arg("config")
            .args(args))
    };
    fs::write(
        home.join("repos.toml"),
        "[repos.testing]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\nmirror.sync = true\n[repos.other]\n",
    )
    .unwrap();
    gm(&home, &["compile"]).ok();
    assert_eq!(
        git_config("testing", &["gitolite.mirror.master"]).ok(),
        "server1\n"
    );
    // An administrator mirrors `other` by hand.
    git_config("other", &["gitolite.mirror.master", "server1"]).ok();
    // The rules stop mirroring testing.
    fs::write(home.join("repos.toml"), "[repos.testing]\n[repos.other]\n").unwrap();
    let out = gm(&home, &["compile"]).ok();
    assert!(
        out.contains("mirror settings removed from testing"),
        "{out}"
    );
    for key in [
        "gitolite.mirror.master",
        "gitolite.mirror.slaves",
        "gitmirror.sync",
    ] {
        assert!(
            !git_config("testing", &[key]).status.success(),
            "{key} left"
        );
    }
    assert!(
        out.contains("other: repos.toml gives no mirror settings; those set by hand"),
        "{out}"
    );
    assert_eq!(
        git_config("other", &["gitolite.mirror.master"]).ok(),
        "server1\n"
    );
}

/// What `promote` writes on the server it promotes, as `git config` would: server2 takes
/// over from server1 at epoch 1.
const PROMOTION: [[&str; 3]; 3] = [
    ["config", "gitolite.mirror.master", "server2"],
    ["config", "gitolite.mirror.slaves", "server1 server3"],
    ["config", "gitmirror.epoch", "1"],
];

fn mirror_rules(master: &str, slaves: &str, more: &str) -> String {
    format!(
        "[repos.testing]\nR = [\"alice\"]\nmirror.master = \"{master}\"\nmirror.slaves = [{slaves}]\n{more}"
    )
}

#[test]
fn compile_keeps_a_promoted_master_until_repos_toml_agrees_or_is_accepted() {
    // server3, a slave throughout, learned of the promotion: it never masters the repo, so
    // no compile here starts a daemon.
    let server = Server::start("server3");
    let config_of = |repo: &str| fs::read(server.repo_path(repo).join("config")).unwrap();
    let get = |key: &str| {
        server
            .git("testing", &["config", key])
            .ok()
            .trim()
            .to_string()
    };
    let stale = mirror_rules("server1", "\"server2\", \"server3\"", "");
    server.set_rules(&stale);
    for args in PROMOTION {
        server.git("testing", &args).ok();
    }
    let promoted = config_of("testing");

    // The old repos.toml, plus a new repo: the new repo is made, the promotion kept.
    fs::write(
        server.home().join("repos.toml"),
        format!("{stale}[repos.added]\nR = [\"alice\"]\n"),
    )
    .unwrap();
    let out = server.gitmirror(&["compile"]);
    out.fails_with("1 repo keeps a master repos.toml does not name");
    let text = out.text();
    assert!(
        text.contains(
            "testing: kept master server2 (epoch 1, since a promotion), but repos.toml names \
             server1: name server2 as its master in repos.toml, or run `gitmirror compile \
             --accept-config` to make server1 master at epoch 2"
        ),
        "{text}"
    );
    assert!(text.contains("created added"), "{text}");
    assert!(server.repo_path("added").is_dir());
    assert_eq!(config_of("testing"), promoted);
    assert!(server.log().contains("repos.toml would undo a promotion"));

    // repos.toml names the new master: applied (slaves, sync) and the epoch kept.
    let agreed = mirror_rules(
        "server2",
        "\"server1\", \"server3\"",
        "mirror.sync = true\n",
    );
    fs::write(server.home().join("repos.toml"), &agreed).unwrap();
    let out = server.gitmirror(&["compile"]).ok();
    assert!(out.contains("mirror settings written for testing"), "{out}");
    assert_eq!(get("gitolite.mirror.master"), "server2");
    assert_eq!(get("gitmirror.sync"), "true");
    assert_eq!(get("gitmirror.epoch"), "1");

    // Back to server1: refused again, then accepted at the next epoch.
    fs::write(server.home().join("repos.toml"), &stale).unwrap();
    server
        .gitmirror(&["compile"])
        .fails_with("1 repo keeps a master");
    assert_eq!(get("gitolite.mirror.master"), "server2");
    let out = server.gitmirror(&["compile", "--accept-config"]).ok();
    assert!(
        out.contains(
            "testing: master server1 at epoch 2 as repos.toml says (was master server2 at epoch 1)"
        ),
        "{out}"
    );
    assert_eq!(get("gitolite.mirror.master"), "server1");
    assert_eq!(get("gitolite.mirror.slaves"), "server2 server3");
    assert_eq!(get("gitmirror.epoch"), "2");
    assert_eq!(get("gitmirror.fromRules"), "true");
    assert!(
        !server
            .git("testing", &["config", "gitmirror.sync"])
            .status
            .success()
    );
    // Settled: a plain compile agrees now and changes nothing.
    let settled = config_of("testing");
    let out = server.gitmirror(&["compile"]).ok();
    assert!(!out.contains("testing"), "{out}");
    assert_eq!(config_of("testing"), settled);
}

#[test]
fn compile_does_not_clear_a_promoted_repos_settings_unless_accepted() {
    let (_s, home) = fresh("server3");
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("--git-dir")
            .arg(home.join("repositories/testing.git"))
            .args(args))
    };
    fs::write(
        home.join("repos.toml"),
        mirror_rules("server1", "\"server2\", \"server3\"", ""),
    )
    .unwrap();
    gm(&home, &["compile"]).ok();
    for args in PROMOTION {
        git(&args).ok();
    }
    let config = home.join("repositories/testing.git/config");
    let promoted = fs::read(&config).unwrap();
    fs::write(
        home.join("repos.toml"),
        "[repos.testing]\nR = [\"alice\"]\n",
    )
    .unwrap();
    let out = gm(&home, &["compile"]);
    out.fails_with("1 repo keeps a master repos.toml does not name");
    assert!(
        out.text().contains(
            "testing: kept master server2 (epoch 1, since a promotion), but repos.toml gives it \
             no mirror settings"
        ),
        "{}",
        out.text()
    );
    assert_eq!(fs::read(&config).unwrap(), promoted);
    let out = gm(&home, &["compile", "--accept-config"]).ok();
    assert!(out.contains("testing: local at epoch 2"), "{out}");
    assert!(!git(&["config", "gitolite.mirror.master"]).status.success());
    assert!(!git(&["config", "gitmirror.fromRules"]).status.success());
    assert_eq!(git(&["config", "gitmirror.epoch"]).ok(), "2\n");
    gm(&home, &["compile"]).ok();
}

#[test]
fn what_a_server_keeps_is_private_to_its_account() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start("server1");
    let alice = Client::new("alice");
    server.add_user("alice", &alice.key);
    server.set_rules("[repos.testing]\n\"RW+\" = [\"alice\"]\n");
    alice.init_repo("w");
    alice
        .git_in("w", &["push", &server.url("testing"), "main"])
        .ok();
    let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    let home = server.home();
    for dir in [
        home.to_path_buf(),
        home.join("repositories"),
        server.repo_path("testing"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&home.join("gitmirror.log")), 0o600);
    // Everything git wrote for the push: objects, refs, the repo's files.
    let mut open = Vec::new();
    let mut stack = vec![server.repo_path("testing")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if mode(&path) & 0o077 != 0 {
                open.push(format!("{:o} {}", mode(&path), path.display()));
            }
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    assert!(open.is_empty(), "readable by others:\n{}", open.join("\n"));
}

/// Every command line gitmirror wrote for others to run in `home`: authorized_keys' forced
/// commands, the home's hooks, the peers' hooks, and testing.git's own hooks.
fn written_commands(home: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let ak = fs::read_to_string(home.join(".ssh/authorized_keys")).unwrap();
    for line in ak.lines().filter(|l| l.starts_with("restrict,")) {
        out.push(("authorized_keys".to_string(), line.to_string()));
    }
    for hook in [
        "hooks/pre-receive",
        "hooks/post-receive",
        "state/peer-hooks/post-receive",
        "repositories/testing.git/hooks/pre-receive",
        "repositories/testing.git/hooks/post-receive",
    ] {
        let text = fs::read_to_string(home.join(hook)).unwrap();
        let exec = text.lines().find(|l| l.starts_with("exec ")).unwrap();
        out.push((hook.to_string(), exec.to_string()));
    }
    out
}

/// Asserts that every line [`written_commands`] finds runs `bin` with `--home home`.
fn assert_commands_run(home: &Path, bin: &Path) {
    let prefix = format!("{} --home {} ", bin.display(), home.display());
    for (file, line) in written_commands(home) {
        let ok = if file == "authorized_keys" {
            line.starts_with(&format!("restrict,command=\"{prefix}shell alice\" "))
        } else {
            line == format!(
                "exec {prefix}hook {}",
                &file[file.rfind('/').unwrap() + 1..]
            )
        };
        assert!(ok, "{file}: {line:?} does not run {prefix:?}");
    }
}

#[test]
fn lines_run_gitmirror_by_the_path_it_was_run_as_and_compile_follows_a_move() {
    let (s, home) = fresh("server1");
    let alice = key("alice");
    gm(
        &home,
        &["add-user", "alice", alice.key.public.to_str().unwrap()],
    )
    .ok();
    fs::write(
        home.join("repos.toml"),
        "[repos.testing]\nRW = [\"alice\"]\n",
    )
    .unwrap();
    gm(&home, &["compile"]).ok();
    assert_commands_run(&home, &sandbox().bin);

    let run_as = |program: &Path, path_var: &str| {
        run(Command::new(program)
            .env_clear()
            .env("PATH", path_var)
            .env("HOME", "/nonexistent-home")
            .arg("--home")
            .arg(&home)
            .arg("compile"))
    };
    // A symlink's own path is written, not its target's (an upgrade may swap the target).
    let links = s.0.path().join("links");
    fs::create_dir(&links).unwrap();
    let link = links.join("gitmirror");
    std::os::unix::fs::symlink(&sandbox().bin, &link).unwrap();
    let out = run_as(&link, "/usr/bin:/bin").ok();
    let rewritten = format!(
        "authorized_keys rewritten: forced commands run {} --home {}",
        link.display(),
        home.display()
    );
    assert!(out.contains(&rewritten), "{out}");
    assert_commands_run(&home, &link);

    // Moved, and found through PATH as a shell finds `gitmirror`: one compile follows it.
    let moved = s.0.path().join("moved");
    fs::create_dir(&moved).unwrap();
    let moved_bin = moved.join("gitmirror");
    if fs::hard_link(&sandbox().bin, &moved_bin).is_err() {
        fs::copy(&sandbox().bin, &moved_bin).unwrap();
    }
    let path_var = format!("{}:/usr/bin:/bin", moved.display());
    let out = run_as(Path::new("gitmirror"), &path_var).ok();
    assert!(out.contains("authorized_keys rewritten"), "{out}");
    assert_commands_run(&home, &moved_bin);
    // Nothing moved: nothing rewritten.
    let before = snapshot(&home);
    let out = run_as(Path::new("gitmirror"), &path_var).ok();
    assert!(!out.contains("rewritten"), "{out}");
    for file in [".ssh/authorized_keys", "hooks/post-receive"] {
        assert_eq!(before[Path::new(file)], snapshot(&home)[Path::new(file)]);
    }

    // gitmirror.toml's program wins over the path it was run as.
    let config = home.join("gitmirror.toml");
    let text = fs::read_to_string(&config).unwrap();
    let with = |program: &Path| format!("program = \"{}\"\n{text}", program.display());
    fs::write(&config, with(&link)).unwrap();
    gm(&home, &["compile"]).ok();
    assert_commands_run(&home, &link);
    // One that is not there is refused before anything changes, and so is add-user.
    fs::write(&config, with(&moved.join("absent"))).unwrap();
    let before = snapshot(&home);
    gm(&home, &["compile"]).fails_with("is not an executable file");
    gm(
        &home,
        &["add-user", "bob", key("bob").key.public.to_str().unwrap()],
    )
    .fails_with("is not an executable file");
    assert_unchanged(&before, &snapshot(&home));
}

#[test]
fn completions_and_man_pages_need_no_server_home() {
    let bin = &sandbox().bin;
    let generate = |args: &[&str]| run(Command::new(bin).env_clear().args(args));
    for (shell, marker) in [
        ("bash", "complete -F _gitmirror"),
        ("zsh", "#compdef gitmirror"),
        ("fish", "complete -c gitmirror"),
    ] {
        let script = generate(&["completions", shell]).ok();
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("add-mirroring-peer"), "{shell}");
    }
    let err = generate(&["completions", "tcsh"])
        .fails_with("gitmirror: completions: unknown shell \"tcsh\"; expected bash, zsh or fish");
    assert_eq!(err.lines().count(), 1, "{err}");

    let s = Scratch::new("man");
    let dir = s.path().join("man1");
    let listed = generate(&["man", dir.to_str().unwrap()]).ok();
    assert_eq!(listed.lines().count(), fs::read_dir(&dir).unwrap().count());
    for page in ["gitmirror.1", "gitmirror-init.1", "gitmirror-compile.1"] {
        let path = dir.join(page);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(".TH gitmirror"), "{page}: {text}");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644, "{page}");
    }
    // A place it cannot write is one line and a failure.
    let blocked = s.path().join("file");
    fs::write(&blocked, "").unwrap();
    let err = generate(&["man", blocked.join("man1").to_str().unwrap()]).fails_with("cannot write");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn json_logs_are_one_object_a_line_with_the_usual_fields() {
    let server = Server::start("server1");
    let config = server.home().join("gitmirror.toml");
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains("\nstderr = false\n"), "{text}");
    fs::write(
        &config,
        text.replacen(
            "\nstderr = false\n",
            "\nformat = \"json\"\nstderr = false\n",
            1,
        ),
    )
    .unwrap();
    let alice = Client::new("alice");
    server.add_user("alice", &alice.key);
    server.set_rules("[repos.testing]\n\"RW+\" = [\"alice\"]\n");
    alice.init_repo("w");
    alice
        .git_in("w", &["push", &server.url("testing"), "main"])
        .ok();
    // A refusal and a failed command are logged too.
    alice
        .git_in("w", &["push", &server.url("elsewhere"), "main"])
        .fails_with("");
    server
        .gitmirror(&["rename", "nope", "nope2"])
        .fails_with("nope");

    let log = server.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for v in &lines {
        assert!(v["timestamp"].is_string(), "{v}");
        assert!(v["level"].is_string(), "{v}");
        assert!(
            v["target"].as_str().unwrap_or("").starts_with("gitmirror"),
            "{v}"
        );
        assert!(v["fields"]["message"].is_string(), "{v}");
        assert!(v["span"]["pid"].is_u64(), "{v}");
        assert_eq!(v["spans"][0]["name"], "gitmirror", "{v}");
    }
    let has = |pred: &dyn Fn(&serde_json::Value) -> bool| lines.iter().any(pred);
    assert!(
        has(&|v| v["fields"]["message"] == "access"
            && v["fields"]["decision"] == "allow"
            && v["fields"]["repo"] == "testing"
            && v["fields"]["actor"] == "alice"),
        "{log}"
    );
    assert!(
        has(&|v| v["fields"]["message"] == "ref updated"
            && v["fields"]["reference"] == "refs/heads/main"),
        "{log}"
    );
    assert!(
        has(&|v| v["fields"]["message"] == "access" && v["fields"]["decision"] == "deny"),
        "{log}"
    );
    assert!(
        has(&|v| v["level"] == "ERROR"
            && v["fields"]["message"] == "command failed"
            && v["fields"]["error"] == "no repo nope here"),
        "{log}"
    );

    // A bad value is a one-line startup error naming the file and line.
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replacen("format = \"json\"", "format = \"yaml\"", 1),
    )
    .unwrap();
    let err = server
        .gitmirror(&["compile"])
        .fails_with("log.format \"yaml\"");
    assert!(err.contains("gitmirror.toml:"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
