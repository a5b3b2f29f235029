//! The admin repo (`gitmirror-admin`): created by `init --admin`, cloned and pushed by its
//! administrator over real ssh; a valid push becomes the server's configuration before `git
//! push` returns, an invalid one is refused with file and line and changes nothing.

use std::fs;

use gitmirror_testkit::*;

/// A server whose admin repo alice administers, and alice's clone of it in `admin/`.
fn admin_server() -> (Server, Client) {
    let server = Server::start("server1");
    let alice = Client::new("alice");
    make_admin(&server, &alice);
    (server, alice)
}

/// `init --admin alice` on `server`, and alice's clone of the admin repo in `admin/`.
/// `gitmirror init --hostname server1 --admin alice KEYFILE` on `server`.
fn init_admin(server: &Server, keyfile: &std::path::Path) -> std::process::Output {
    server.gitmirror(&[
        "init",
        "--hostname",
        "server1",
        "--admin",
        "alice",
        keyfile.to_str().unwrap(),
    ])
}

fn make_admin(server: &Server, alice: &Client) {
    let copy = server.sshd_dir.path().join("alice.pub");
    fs::copy(&alice.key.public, &copy).unwrap();
    let out = init_admin(server, &copy).ok();
    assert!(out.contains("created gitmirror-admin"), "{out}");
    alice.clone(server, "gitmirror-admin", "admin").ok();
}

/// Commits everything in alice's clone and pushes it; returns the push's output.
fn commit_and_push(alice: &Client, message: &str) -> std::process::Output {
    alice.git_in("admin", &["add", "-A"]).ok();
    alice.git_in("admin", &["commit", "-q", "-m", message]).ok();
    alice.git_in("admin", &["push", "-q", "origin", "HEAD"])
}

fn admin_file(alice: &Client, path: &str) -> std::path::PathBuf {
    alice.dir.path().join("admin").join(path)
}

#[test]
fn init_admin_commits_the_servers_configuration_and_refuses_to_run_twice() {
    let (server, alice) = admin_server();
    let committed = fs::read_to_string(admin_file(&alice, "repos.toml")).unwrap();
    let on_disk = fs::read_to_string(server.home().join("repos.toml")).unwrap();
    assert_eq!(committed, on_disk);
    assert!(committed.contains("[repos.gitmirror-admin]"), "{committed}");
    assert!(committed.contains("\"RW+\" = [\"alice\"]"), "{committed}");
    let alice_key = fs::read_to_string(admin_file(&alice, "keys/users/alice.pub")).unwrap();
    let given = fs::read_to_string(&alice.key.public).unwrap();
    let body = |k: &str| k.split_whitespace().nth(1).map(str::to_string);
    assert_eq!(body(&alice_key), body(&given));
    // The server's own key, so that the servers the admin repo reaches learn it.
    let own = fs::read_to_string(admin_file(&alice, "keys/peers/server1.pub")).unwrap();
    let server_key = fs::read_to_string(server.home().join("server1.pub")).unwrap();
    assert_eq!(body(&own), body(&server_key));
    let log = alice.git_in("admin", &["log", "--format=%s"]).ok();
    assert_eq!(log.lines().count(), 1, "{log}");

    // A second run is refused, and the history stays.
    let copy = server.sshd_dir.path().join("alice.pub");
    let head = server.git("gitmirror-admin", &["rev-parse", "HEAD"]).ok();
    let refused = init_admin(&server, &copy).fails_with("gitmirror-admin already has history");
    assert_eq!(refused.trim().lines().count(), 1, "{refused}");
    assert_eq!(
        server.git("gitmirror-admin", &["rev-parse", "HEAD"]).ok(),
        head
    );
}

#[test]
fn an_admin_push_adds_a_user_and_a_repo_before_it_returns() {
    let (server, alice) = admin_server();
    let bob = Client::new("bob");
    // Before the push bob is nobody.
    assert!(!bob.ssh(&server, "info").status.success());
    fs::copy(&bob.key.public, admin_file(&alice, "keys/users/bob.pub")).unwrap();
    let mut rules = fs::read_to_string(admin_file(&alice, "repos.toml")).unwrap();
    rules.push_str("\n[repos.project]\n\"RW+\" = [\"bob\"]\n");
    fs::write(admin_file(&alice, "repos.toml"), &rules).unwrap();
    let out = commit_and_push(&alice, "bob and his project");
    assert!(out.status.success(), "{}", out.err());
    let said = out.err();
    assert!(said.contains("server1: user bob added"), "{said}");
    assert!(said.contains("server1: created project"), "{said}");
    assert!(said.contains("server1: repos.toml updated"), "{said}");

    assert_eq!(
        fs::read_to_string(server.home().join("repos.toml")).unwrap(),
        rules
    );
    let info = bob.ssh(&server, "info").ok();
    assert!(info.contains("project"), "{info}");
    let first = bob.init_repo("work");
    bob.git_in("work", &["push", "-q", &server.url("project"), "main"])
        .ok();
    assert_eq!(
        server.git("project", &["rev-parse", "main"]).ok().trim(),
        first
    );

    // Removing bob's key from the admin repo shuts him out again.
    fs::remove_file(admin_file(&alice, "keys/users/bob.pub")).unwrap();
    let out = commit_and_push(&alice, "bob leaves");
    assert!(
        out.err().contains("server1: user bob removed"),
        "{}",
        out.err()
    );
    assert!(!bob.ssh(&server, "info").status.success());
}

/// What a refused push must leave as it was.
fn server_state(server: &Server) -> (String, String, String) {
    (
        fs::read_to_string(server.home().join("repos.toml")).unwrap(),
        fs::read_to_string(server.home().join(".ssh/authorized_keys")).unwrap(),
        server.git("gitmirror-admin", &["for-each-ref"]).ok(),
    )
}

#[test]
fn a_broken_repos_toml_is_refused_with_file_and_line_and_changes_nothing() {
    let (server, alice) = admin_server();
    let before = server_state(&server);
    let mut rules = fs::read_to_string(admin_file(&alice, "repos.toml")).unwrap();
    let line = rules.lines().count() + 3;
    rules.push_str("\n[repos.broken]\nRW = 3\n");
    fs::write(admin_file(&alice, "repos.toml"), &rules).unwrap();
    let err = commit_and_push(&alice, "broken").err();
    assert!(err.contains(&format!("repos.toml:{line}:")), "{err}");
    assert!(err.contains("push refused, nothing was changed"), "{err}");
    assert_eq!(server_state(&server), before);
    assert!(!server.repo_path("broken").exists());
}

#[test]
fn a_bad_key_or_another_branch_is_refused_and_changes_nothing() {
    let (server, alice) = admin_server();
    let before = server_state(&server);
    fs::write(
        admin_file(&alice, "keys/users/mallory.pub"),
        "ssh-ed25519 not!base64 mallory@laptop\n",
    )
    .unwrap();
    let err = commit_and_push(&alice, "mallory").err();
    assert!(
        err.contains("keys/users/mallory.pub:1: the key body is not valid base64"),
        "{err}"
    );
    assert_eq!(server_state(&server), before);

    // A valid commit on another branch would change nothing: refused, naming the branch that
    // counts.
    alice
        .git_in("admin", &["reset", "-q", "--hard", "HEAD~1"])
        .ok();
    alice.commit("admin", "NOTES");
    let err = alice
        .git_in("admin", &["push", "-q", "origin", "HEAD:refs/heads/draft"])
        .err();
    assert!(
        err.contains("only refs/heads/main carries the configuration"),
        "{err}"
    );
    assert_eq!(server_state(&server), before);
}

#[test]
fn compile_runs_the_committed_configuration_and_reports_a_hand_edit() {
    let (server, alice) = admin_server();
    let committed = fs::read_to_string(admin_file(&alice, "repos.toml")).unwrap();
    let edited = format!("{committed}\n[repos.byhand]\nR = [\"alice\"]\n");
    fs::write(server.home().join("repos.toml"), &edited).unwrap();
    let out = server.gitmirror(&["compile"]).ok();
    assert!(out.contains("repos.toml had been edited by hand"), "{out}");
    assert!(!server.repo_path("byhand").exists(), "{out}");
    assert_eq!(
        fs::read_to_string(server.home().join("repos.toml")).unwrap(),
        committed
    );
    assert_eq!(
        fs::read_to_string(server.home().join("repos.toml.hand-edited")).unwrap(),
        edited
    );
}

#[test]
fn a_slave_applies_the_admin_repo_its_master_pushes() {
    let cluster = Cluster::new(&["server1", "server2"]);
    cluster.set_rules(
        "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n",
    );
    for s in &cluster.servers {
        s.set_sync(true);
    }
    let alice = Client::new("alice");
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    // The slave must take the admin repo from its master: its own rules name it.
    let rules = fs::read_to_string(s1.home().join("repos.toml")).unwrap()
        + "\n[repos.gitmirror-admin]\n\"RW+\" = [\"alice\"]\n";
    s2.set_rules(&rules);
    make_admin(s1, &alice);
    cluster.wait_in_sync("gitmirror-admin", "server1", &["server2"]);

    let bob = Client::new("bob");
    fs::copy(&bob.key.public, admin_file(&alice, "keys/users/bob.pub")).unwrap();
    let mut rules = fs::read_to_string(admin_file(&alice, "repos.toml")).unwrap();
    rules.push_str("\n[repos.project]\nR = [\"bob\"]\n");
    fs::write(admin_file(&alice, "repos.toml"), &rules).unwrap();
    let out = commit_and_push(&alice, "bob and his project, everywhere");
    assert!(out.status.success(), "{}", out.err());
    // Sync mode: the slave has the push, and applied it, before the push returns.
    assert!(s2.repo_path("project").exists(), "{}", out.err());
    assert_eq!(
        fs::read_to_string(s2.home().join("repos.toml")).unwrap(),
        rules
    );
    let info = bob.ssh(s2, "info").ok();
    assert!(info.contains("project"), "{info}");
}

#[test]
fn a_commit_that_cannot_be_applied_is_shown_to_the_pusher_and_in_status() {
    let (server, alice) = admin_server();
    let bob = Client::new("bob");
    // bob's key already sits outside gitmirror's block: registering it would let sshd use
    // that line instead, so the apply must refuse it. Pre-receive cannot know (the file is
    // the server's), so the push is accepted and the apply fails.
    let authorized = server.home().join(".ssh/authorized_keys");
    let mut text = fs::read_to_string(&authorized).unwrap();
    text.push_str(&fs::read_to_string(&bob.key.public).unwrap());
    fs::write(&authorized, &text).unwrap();
    let rules_before = fs::read_to_string(server.home().join("repos.toml")).unwrap();

    fs::copy(&bob.key.public, admin_file(&alice, "keys/users/bob.pub")).unwrap();
    let mut rules = fs::read_to_string(admin_file(&alice, "repos.toml")).unwrap();
    rules.push_str("\n[repos.project]\nR = [\"bob\"]\n");
    fs::write(admin_file(&alice, "repos.toml"), &rules).unwrap();
    let out = commit_and_push(&alice, "bob, whose key is also outside the block");
    let said = out.err();
    assert!(
        said.contains("was accepted but NOT applied on server1"),
        "{said}"
    );
    assert!(said.contains("outside gitmirror's block"), "{said}");
    // Nothing half-applied: the previous repos.toml is back, no repo was created.
    assert_eq!(
        fs::read_to_string(server.home().join("repos.toml")).unwrap(),
        rules_before
    );
    assert!(!server.repo_path("project").exists());
    let status = server.gitmirror(&["status"]);
    assert_eq!(status.status.code(), Some(2), "{}", status.text());
    assert!(
        status.text().contains("ADMIN: gitmirror-admin"),
        "{}",
        status.text()
    );

    // Once the stray line is gone, compile applies the commit and status is clear again.
    fs::write(
        &authorized,
        text.lines()
            .filter(|l| !l.contains("bob@"))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = server.gitmirror(&["compile"]).ok();
    assert!(out.contains("user bob added"), "{out}");
    assert!(server.repo_path("project").exists(), "{out}");
    let status = server.gitmirror(&["status"]);
    assert!(!status.text().contains("ADMIN:"), "{}", status.text());
}

#[test]
fn init_admin_on_a_new_home_creates_everything_at_once() {
    let scratch = Scratch::new("admin-new");
    let home = scratch.path().join("home");
    let alice = Client::new("alice");
    let gm = |args: &[&str]| {
        run(std::process::Command::new(&sandbox().bin)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/nonexistent-home")
            .arg("--home")
            .arg(&home)
            .args(args))
    };
    let key = alice.key.public.to_str().unwrap();
    let out = gm(&["init", "--hostname", "server1", "--admin", "alice", key]).ok();
    assert!(out.contains("is ready for server1"), "{out}");
    assert!(out.contains("created gitmirror-admin"), "{out}");
    let repo = home.join("repositories/gitmirror-admin.git");
    let files = run(std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&repo)
        .args(["ls-tree", "-r", "--name-only", "HEAD"]))
    .ok();
    assert_eq!(
        files.lines().collect::<Vec<_>>(),
        [
            "keys/peers/server1.pub",
            "keys/users/alice.pub",
            "repos.toml"
        ]
    );
    assert!(home.join("keys/users/alice.pub").is_file());
    // A key file that cannot be read is refused before anything of the admin repo is made.
    let other = scratch.path().join("other");
    let out = run(std::process::Command::new(&sandbox().bin)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent-home")
        .arg("--home")
        .arg(&other)
        .args([
            "init",
            "--hostname",
            "server2",
            "--admin",
            "bob",
            "/nonexistent.pub",
        ]));
    assert!(!out.status.success());
    assert!(out.err().contains("/nonexistent.pub"), "{}", out.err());
    assert!(!other.join("repositories/gitmirror-admin.git").exists());
}

#[test]
fn a_new_slave_gets_an_existing_repo_in_the_cycle_of_the_admin_push() {
    let cluster = Cluster::new(&["server1", "server2"]);
    let mirrored = "mirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n";
    let project = "[repos.project]\n\"RW+\" = [\"alice\"]\n";
    cluster.set_rules(&format!(
        "[repos.gitmirror-admin]\n\"RW+\" = [\"alice\"]\n{mirrored}{project}"
    ));
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    // Retries and rescans far apart: a push server2 refuses before it knows the repo is its
    // own could only reach it in time if the admin push's arrival sends it again at once.
    s1.mirror_settings("retry_initial_secs = 300\nretry_max_secs = 300\nrescan_secs = 600");
    let alice = Client::new("alice");
    make_admin(s1, &alice);
    cluster.wait_in_sync("gitmirror-admin", "server1", &["server2"]);
    let content = alice.init_repo("project");
    alice
        .git_in("project", &["push", "-q", &s1.url("project"), "main"])
        .ok();
    // server2 has the repo (its rules name it) but not the content: it is local there.
    assert_ne!(
        s2.git("project", &["rev-parse", "main"]).text().trim(),
        content
    );

    let rules = fs::read_to_string(admin_file(&alice, "repos.toml")).unwrap();
    let rules = rules.replace(project, &format!("{project}{mirrored}"));
    fs::write(admin_file(&alice, "repos.toml"), &rules).unwrap();
    let out = commit_and_push(&alice, "project mirrored to server2");
    assert!(out.status.success(), "{}", out.err());
    wait_for(
        "project with its content on server2",
        std::time::Duration::from_secs(60),
        || s2.git("project", &["rev-parse", "main"]).text().trim() == content,
    );
}
