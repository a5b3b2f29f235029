//! The admin repo across a cluster: three servers (a fourth joining), real sshd, real git, set
//! up with gitmirror's own commands. One push to the admin repo's master configures every
//! server, new slaves included; a refused push changes nothing anywhere; a slave that was down
//! takes the configuration when it is back; a new server joins by the README's steps.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use gitmirror_testkit::*;

/// How long a condition that replication brings about may take.
const REPLICATION: Duration = Duration::from_secs(60);

/// The rules every server starts with: alice administers the admin repo, which server1
/// masters with server2 and server3 as slaves (through `@all`); `project` is mirrored to
/// server2 only.
const RULES: &str = r#"[repos.gitmirror-admin]
"RW+" = ["alice"]

[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2", "server3"]

[repos.project]
"RW+" = ["alice"]
mirror.master = "server1"
mirror.slaves = ["server2"]
"#;

/// A cluster of three whose admin repo server1 masters, and alice with a clone of it in
/// `admin/`. `mirror` goes into server1's `[mirror]` table before its daemon starts.
fn admin_cluster(mirror: &str) -> (Cluster, Client) {
    let cluster = Cluster::new(&["server1", "server2", "server3"]);
    let s1 = cluster.server("server1");
    s1.mirror_settings(mirror);
    cluster.set_rules(RULES);
    let alice = Client::new("alice");
    let key = s1.sshd_dir.path().join("alice.pub");
    fs::copy(&alice.key.public, &key).unwrap();
    let out = s1
        .gitmirror(&[
            "init",
            "--hostname",
            "server1",
            "--admin",
            "alice",
            key.to_str().unwrap(),
        ])
        .ok();
    assert!(out.contains("created gitmirror-admin"), "{out}");
    cluster.wait_in_sync("gitmirror-admin", "server1", &["server2", "server3"]);
    alice.clone(s1, "gitmirror-admin", "admin").ok();
    (cluster, alice)
}

fn admin_file(alice: &Client, path: &str) -> PathBuf {
    alice.dir.path().join("admin").join(path)
}

/// Edits repos.toml in alice's clone.
fn edit_rules(alice: &Client, edit: impl FnOnce(String) -> String) {
    let path = admin_file(alice, "repos.toml");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, edit(text)).unwrap();
}

/// Commits everything in alice's clone and pushes it; returns the push's output.
fn commit_and_push(alice: &Client, message: &str) -> std::process::Output {
    alice.git_in("admin", &["add", "-A"]).ok();
    alice.git_in("admin", &["commit", "-q", "-m", message]).ok();
    alice.git_in("admin", &["push", "-q", "origin", "HEAD"])
}

/// Alice pushes a first commit of `repo` to server1; returns it.
fn push_content(alice: &Client, server: &Server, repo: &str) -> String {
    let commit = alice.init_repo(repo);
    alice
        .git_in(repo, &["push", "-q", &server.url(repo), "main"])
        .ok();
    commit
}

/// `repo`'s main on `server`, or nothing.
fn main_of(server: &Server, repo: &str) -> String {
    server
        .git(repo, &["rev-parse", "--verify", "-q", "main"])
        .text()
        .trim()
        .to_string()
}

/// Waits until `master` records every slave of every repo in sync: the slaves' side of each
/// push (applying the admin repo among it) is over.
fn wait_settled(master: &Server) {
    wait_for("every slave in sync", REPLICATION, || {
        let (status, _) = master.status();
        status["slaves"]
            .as_array()
            .is_some_and(|rows| rows.iter().all(|r| r["state"] == "in sync"))
    });
}

#[test]
fn one_admin_push_configures_three_servers_and_a_refused_one_changes_nothing() {
    // Retries and rescans far apart: server3 refuses `project` until it has the new
    // configuration, and only its arrival may send the push again in time.
    let (cluster, alice) =
        admin_cluster("retry_initial_secs = 300\nretry_max_secs = 300\nrescan_secs = 600");
    let servers = ["server1", "server2", "server3"].map(|n| cluster.server(n));
    let s1 = servers[0];
    let s3 = servers[2];
    let content = push_content(&alice, s1, "project");
    cluster.wait_in_sync("project", "server1", &["server2"]);
    // server3's rules name project, so it has the repo, empty: it is no slave of it yet.
    assert_ne!(main_of(s3, "project"), content);

    // One push: a user, a repo for every server, server3 a new slave of project.
    let bob = Client::new("bob");
    fs::copy(&bob.key.public, admin_file(&alice, "keys/users/bob.pub")).unwrap();
    edit_rules(&alice, |rules| {
        rules.replace(
            "mirror.slaves = [\"server2\"]",
            "mirror.slaves = [\"server2\", \"server3\"]",
        ) + "\n[repos.shared]\nR = [\"bob\"]\n"
    });
    let out = commit_and_push(&alice, "bob, shared, and project on server3");
    assert!(out.status.success(), "{}", out.err());
    assert!(
        out.err().contains("server1: user bob added"),
        "{}",
        out.err()
    );

    for s in servers {
        wait_for(
            &format!("bob reading shared on {}", s.hostname),
            REPLICATION,
            || {
                bob.git(&["ls-remote", &s.url("shared")]).status.success()
                    && bob.ssh(s, "info").text().contains("shared")
            },
        );
        assert_eq!(
            fs::read_to_string(s.home().join("repos.toml")).unwrap(),
            fs::read_to_string(admin_file(&alice, "repos.toml")).unwrap(),
            "{}",
            s.hostname
        );
    }
    wait_for("project's content on server3", REPLICATION, || {
        main_of(s3, "project") == content
    });
    cluster.wait_in_sync("project", "server1", &["server2", "server3"]);
    cluster.wait_in_sync("gitmirror-admin", "server1", &["server2", "server3"]);
    cluster.wait_in_sync("shared", "server1", &["server2", "server3"]);

    // Refused pushes: each names its file, and no server changes at all.
    wait_settled(s1);
    let before = servers.map(|s| snapshot(s.home()));
    edit_rules(&alice, |rules| rules + "\n[repos.broken]\nRW = 3\n");
    let err = commit_and_push(&alice, "broken").err();
    assert!(
        err.contains("push refused, nothing was changed: repos.toml:"),
        "{err}"
    );
    assert!(err.contains("expected a sequence"), "{err}");
    alice
        .git_in("admin", &["reset", "-q", "--hard", "HEAD~1"])
        .ok();

    // Without server3's key its master's pushes, the fix included, would be refused for good.
    fs::remove_file(admin_file(&alice, "keys/peers/server3.pub")).unwrap();
    let err = commit_and_push(&alice, "server3's key dropped").err();
    assert!(
        err.contains(
            "repos.toml names server3 as slave of gitmirror-admin, but keys/peers/server3.pub is missing"
        ),
        "{err}"
    );
    alice
        .git_in("admin", &["reset", "-q", "--hard", "HEAD~1"])
        .ok();
    for (s, before) in servers.iter().zip(&before) {
        assert_unchanged(before, &snapshot(s.home()));
    }
    assert!(!s1.repo_path("broken").exists());
}

#[test]
fn a_slave_down_during_the_admin_push_takes_it_when_it_is_back() {
    let (mut cluster, alice) = admin_cluster("retry_initial_secs = 1\nretry_max_secs = 2");
    cluster.servers[2].crash_sshd();
    let (s1, s2, s3) = (
        cluster.server("server1"),
        cluster.server("server2"),
        cluster.server("server3"),
    );
    let bob = Client::new("bob");
    fs::copy(&bob.key.public, admin_file(&alice, "keys/users/bob.pub")).unwrap();
    edit_rules(&alice, |rules| {
        rules + "\n[repos.shared]\n\"RW+\" = [\"bob\"]\n"
    });
    let out = commit_and_push(&alice, "bob and shared, while server3 is down");
    assert!(out.status.success(), "{}", out.err());
    // bob works on the master and reads on the slave that is up.
    let content = push_content(&bob, s1, "shared");
    cluster.wait_in_sync("shared", "server1", &["server2"]);
    assert!(bob.git(&["ls-remote", &s2.url("shared")]).status.success());
    // server1 has tried server3 and failed; server3 has none of it.
    wait_for("a failed attempt at server3", REPLICATION, || {
        s1.slave_status("gitmirror-admin", "server3")["attempts"]
            .as_u64()
            .is_some_and(|a| a >= 1)
    });
    assert!(!s3.repo_path("shared").exists());
    assert!(
        !fs::read_to_string(s3.home().join("repos.toml"))
            .unwrap()
            .contains("[repos.shared]")
    );

    cluster.servers[2].start_sshd();
    let s3 = cluster.server("server3");
    cluster.wait_in_sync("gitmirror-admin", "server1", &["server3"]);
    wait_for("shared's content on server3", REPLICATION, || {
        main_of(s3, "shared") == content
    });
    // The new user reads from it, with the key the admin push brought.
    bob.git(&["clone", "-q", &s3.url("shared"), "from-server3"])
        .ok();
    let cloned = bob.git_in("from-server3", &["rev-parse", "HEAD"]).ok();
    assert_eq!(cloned.trim(), content);
}

#[test]
fn a_fourth_server_joins_by_the_readme_steps() {
    let (mut cluster, alice) = admin_cluster("");
    edit_rules(&alice, |rules| {
        rules
            + "\n[repos.site-b]\n\"RW+\" = [\"alice\"]\nmirror.master = \"server2\"\nmirror.slaves = [\"server1\"]\n"
    });
    assert!(commit_and_push(&alice, "site-b").status.success());
    let project = push_content(&alice, cluster.server("server1"), "project");
    let site_b = push_content(&alice, cluster.server("server2"), "site-b");
    cluster.wait_in_sync("site-b", "server2", &["server1"]);

    // 1. `gitmirror init --hostname server4` there (with sshd in front).
    let s4 = Server::start("server4");
    // What init prints (again: it is safe to rerun) names the steps that follow.
    let said = s4.gitmirror(&["init", "--hostname", "server4"]).ok();
    for step in [
        "gitmirror add-mirroring-peer MASTER.pub",
        "a [peers.server4] table in gitmirror.toml",
        "as keys/peers/server4.pub and server4 to the",
    ] {
        assert!(said.contains(step), "{step}: {said}");
    }
    // Before step 2 server4 takes nothing from server1.
    let refused = cluster
        .server("server1")
        .ssh_as_peer(&s4, "mirror-receive-pack 0 'gitmirror-admin'");
    assert!(!refused.status.success(), "{}", refused.text());
    // 2. The admin repo master's key, registered there.
    s4.add_peer(cluster.server("server1"));
    // 3. How server1, and server2 (which masters site-b), reach server4.
    cluster.server("server1").add_peer_address(&s4);
    cluster.server("server2").add_peer_address(&s4);
    // 4. server4's key and name in the admin repo, one push.
    fs::copy(
        s4.home().join("server4.pub"),
        admin_file(&alice, "keys/peers/server4.pub"),
    )
    .unwrap();
    edit_rules(&alice, |rules| {
        rules
            .replace(
                "mirror.slaves = [\"server2\", \"server3\"]",
                "mirror.slaves = [\"server2\", \"server3\", \"server4\"]",
            )
            .replace(
                "mirror.slaves = [\"server2\"]\n",
                "mirror.slaves = [\"server2\", \"server4\"]\n",
            )
            .replace(
                "mirror.slaves = [\"server1\"]",
                "mirror.slaves = [\"server1\", \"server4\"]",
            )
    });
    let out = commit_and_push(&alice, "server4");
    assert!(out.status.success(), "{}", out.err());
    cluster.servers.push(s4);

    cluster.wait_in_sync("gitmirror-admin", "server1", &["server4"]);
    let s4 = cluster.server("server4");
    wait_for("server4 configured by the admin repo", REPLICATION, || {
        fs::read_to_string(s4.home().join("repos.toml")).ok()
            == fs::read_to_string(admin_file(&alice, "repos.toml")).ok()
    });
    wait_for("project and site-b on server4", REPLICATION, || {
        main_of(s4, "project") == project && main_of(s4, "site-b") == site_b
    });
    cluster.wait_in_sync("project", "server1", &["server2", "server4"]);
    cluster.wait_in_sync("site-b", "server2", &["server1", "server4"]);

    // A slave like the others: alice reads there, her pushes there are refused naming the
    // master, and its status has nothing to report about the admin repo.
    alice
        .git(&["clone", "-q", &s4.url("project"), "from-server4"])
        .ok();
    alice.commit("from-server4", "NOTES");
    let err = alice
        .git_in("from-server4", &["push", "-q", "origin", "main"])
        .err();
    assert!(err.contains("mirrored from server1"), "{err}");
    // Nor does a user's push to its admin repo get through, administrator or not.
    let err = alice
        .git_in(
            "admin",
            &["push", "-q", &s4.url("gitmirror-admin"), "HEAD:main"],
        )
        .err();
    assert!(err.contains("mirrored from server1"), "{err}");
    let status = s4.gitmirror(&["status"]);
    assert!(!status.text().contains("ADMIN:"), "{}", status.text());
    // Now that it has an admin repo, a peer that does not master it is refused, by either verb.
    for verb in [
        "mirror-receive-pack 0 'gitmirror-admin'",
        "git-receive-pack 'gitmirror-admin'",
    ] {
        let refused = cluster.server("server2").ssh_as_peer(s4, verb);
        assert!(!refused.status.success(), "{verb}");
        assert!(
            refused
                .err()
                .contains("server4 refuses gitmirror-admin from server2"),
            "{verb}: {}",
            refused.err()
        );
    }
    // And the next admin push reaches it like any slave.
    let carol = Client::new("carol");
    fs::copy(
        &carol.key.public,
        admin_file(&alice, "keys/users/carol.pub"),
    )
    .unwrap();
    edit_rules(&alice, |rules| {
        rules.replace("[repos.project]\n", "[repos.project]\nR = [\"carol\"]\n")
    });
    assert!(commit_and_push(&alice, "carol").status.success());
    wait_for("carol reading project on server4", REPLICATION, || {
        carol
            .git(&["ls-remote", &s4.url("project")])
            .status
            .success()
    });
}

#[test]
fn an_admin_repo_without_history_is_taken_from_a_registered_peer_unless_own_rules_name_another() {
    let cluster = Cluster::new(&["server1", "server2", "server3"]);
    let (s1, s2, s3) = (
        cluster.server("server1"),
        cluster.server("server2"),
        cluster.server("server3"),
    );
    // server2's own rules name the admin repo without mirror settings: compile made it there,
    // empty and local.
    s2.set_rules("[repos.gitmirror-admin]\nR = [\"alice\"]\n");
    assert!(s2.repo_path("gitmirror-admin").exists());
    let mirrored = "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n";
    s1.set_rules(mirrored);
    // server3's own rules name server1 as the admin repo's master: though its admin repo has
    // no history yet, another peer it registered is refused, by either verb.
    s3.set_rules(
        &(mirrored.replace("[\"server2\"]", "[\"server2\", \"server3\"]")
            + "[repos.gitmirror-admin]\nR = [\"alice\"]\n"),
    );
    assert!(s3.repo_path("gitmirror-admin").exists());
    for verb in [
        "mirror-receive-pack 0 'gitmirror-admin'",
        "git-receive-pack 'gitmirror-admin'",
    ] {
        let refused = s2.ssh_as_peer(s3, verb);
        let err = refused.err();
        assert!(!refused.status.success(), "{verb}: {err}");
        assert!(
            err.contains("server3 refuses gitmirror-admin from server2"),
            "{verb}: {err}"
        );
    }
    let alice = Client::new("alice");
    let key = s1.sshd_dir.path().join("alice.pub");
    fs::copy(&alice.key.public, &key).unwrap();
    s1.gitmirror(&[
        "init",
        "--hostname",
        "server1",
        "--admin",
        "alice",
        key.to_str().unwrap(),
    ])
    .ok();
    cluster.wait_in_sync("gitmirror-admin", "server1", &["server2"]);
    wait_for("server2 configured by the admin repo", REPLICATION, || {
        fs::read_to_string(s2.home().join("repos.toml")).ok()
            == fs::read_to_string(s1.home().join("repos.toml")).ok()
    });
    // From then on its master is the one the configuration names.
    let config = s2
        .git("gitmirror-admin", &["config", "gitolite.mirror.master"])
        .ok();
    assert_eq!(config.trim(), "server1");
}
