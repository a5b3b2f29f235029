//! Failover across three servers, each its own account behind its own sshd: a slave is
//! promoted while the master is cut off; the old master, back, learns the new master by
//! itself, ends identical to it and keeps what it alone accepted as orphaned refs; a stale
//! slave promoted while a more up-to-date copy is reachable catches up first.

use std::time::Duration;

use gitmirror_testkit::*;

const RULES: &str = r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2", "server3"]

[repos.testing]
"RW+" = ["alice"]
"#;

struct World {
    cluster: Cluster,
    alice: Client,
}

fn world() -> World {
    let cluster = Cluster::new(&["server1", "server2", "server3"]);
    for s in &cluster.servers {
        s.set_sync(true);
    }
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    cluster.set_rules(RULES);
    alice.init_repo("w");
    World { cluster, alice }
}

/// The world after a first commit pushed to server1 and mirrored to both slaves.
fn synced_world() -> World {
    let w = world();
    w.commit_and_push("server1", "a").ok();
    w.cluster
        .wait_in_sync("testing", "server1", &["server2", "server3"]);
    w
}

impl World {
    fn s(&self, name: &str) -> &Server {
        self.cluster.server(name)
    }

    /// alice commits `file` and pushes main to `server`; returns git's output.
    fn commit_and_push(&self, server: &str, file: &str) -> Output {
        self.alice.commit("w", file);
        let url = self.s(server).url("testing");
        self.alice.git_in("w", &["push", url.as_str(), "main"])
    }

    /// alice's clone forgets its last commit (pushed somewhere): only the server keeps it.
    fn forget_last_commit(&self) {
        self.alice
            .git_in("w", &["reset", "-q", "--hard", "HEAD~1"])
            .ok();
    }

    /// What `server` keeps of main from before the change of master to epoch 1.
    fn orphaned_main(&self, server: &str) -> String {
        self.s(server)
            .git(
                "testing",
                &["rev-parse", "refs/gitmirror/orphaned/1/heads/main"],
            )
            .ok()
    }

    fn head_of(&self, server: &str) -> String {
        self.s(server)
            .git("testing", &["rev-parse", "refs/heads/main"])
            .ok()
            .trim()
            .to_string()
    }

    fn config(&self, server: &str, key: &str) -> String {
        self.s(server)
            .git("testing", &["config", key])
            .ok()
            .trim()
            .to_string()
    }

    /// server1 cut off from the other two, both ways (users still reach everyone), with the
    /// daemons stopped so that none keeps a connection from before.
    fn cut_off_master(&self) {
        self.s("server1").cut_off_from(&["server2", "server3"]);
        self.s("server2").cut_off_from(&["server1"]);
        self.s("server3").cut_off_from(&["server1"]);
        self.stop_daemons();
    }

    /// The partition healed, and the daemons' connections from during it dropped (the cut is
    /// made with forced commands, which bind at login).
    fn heal(&self) {
        for s in &self.cluster.servers {
            s.heal();
        }
        self.stop_daemons();
    }

    fn stop_daemons(&self) {
        for s in &self.cluster.servers {
            s.stop_daemon();
        }
    }
}

use std::process::Output;

#[test]
fn a_promoted_slave_takes_over_and_the_old_master_converges_keeping_what_it_alone_took() {
    let w = synced_world();
    // server1 is cut off from its peers, both ways; users still reach it.
    w.cut_off_master();
    // It cannot know: it takes alice's push, and says its slaves did not get it.
    let out = w.commit_and_push("server1", "lost-looking");
    out.ok();
    assert!(out.err().contains("=X=> server2"), "{}", out.err());
    let alone = w.head_of("server1");
    w.forget_last_commit();

    // server2 takes over.
    let out = w.s("server2").gitmirror(&["promote", "testing"]);
    let text = out.text();
    assert!(
        text.contains("promoted testing: server2 masters it now at epoch 1"),
        "{text}"
    );
    assert!(text.contains("server1 unreachable"), "{text}");
    assert!(
        text.contains("server2 ==== (testing) ===> server3"),
        "{text}"
    );
    assert_eq!(w.config("server2", "gitmirror.epoch"), "1");
    assert_eq!(w.config("server3", "gitolite.mirror.master"), "server2");
    assert_eq!(w.config("server3", "gitmirror.epoch"), "1");
    // Users push to the new master; it reaches the other slave; the slave refuses them.
    let out = w.commit_and_push("server2", "b");
    out.ok();
    assert!(
        out.err().contains("server2 ==== (testing) ===> server3"),
        "{}",
        out.err()
    );
    w.cluster.wait_in_sync("testing", "server2", &["server3"]);
    w.commit_and_push("server3", "c")
        .fails_with("testing is mirrored from server2");

    // The old master comes back. Nobody tells it anything by hand.
    w.heal();
    w.s("server2").gitmirror(&["request-push", "testing"]);
    w.cluster
        .wait_in_sync("testing", "server2", &["server1", "server3"]);
    assert_eq!(w.config("server1", "gitolite.mirror.master"), "server2");
    assert_eq!(w.config("server1", "gitmirror.epoch"), "1");
    // What it alone accepted is kept, under the new epoch, and reported to the new master.
    let kept = w.orphaned_main("server1");
    assert_eq!(kept.trim(), alone);
    let status = w.s("server2").gitmirror(&["status", "--json"]).ok();
    assert!(
        status.contains("kept as refs/gitmirror/orphaned/1/heads/main"),
        "{status}"
    );
    // Its own status reports what it keeps, with the commit, until someone acts.
    let out = w.s("server1").gitmirror(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.text());
    assert!(out.text().contains(&alone), "{}", out.text());
    // And it refuses users now, naming the new master.
    w.commit_and_push("server1", "d")
        .fails_with("testing is mirrored from server2");
}

#[test]
fn an_old_master_that_comes_back_first_steps_down_by_itself() {
    let w = synced_world();
    w.cut_off_master();
    // Cut off, it takes a push only it has.
    w.commit_and_push("server1", "alone").ok();
    let alone = w.head_of("server1");
    w.forget_last_commit();
    w.s("server2").gitmirror(&["promote", "testing"]);
    // server2's daemon is stopped: only server1's own attempts can tell it.
    w.heal();
    // Its next push to a slave is refused with the new master's claim, and it steps down.
    w.s("server1").gitmirror(&["request-push", "testing"]);
    wait_for(
        "server1 to know its new master",
        Duration::from_secs(30),
        || w.config("server1", "gitolite.mirror.master") == "server2",
    );
    assert_eq!(w.config("server1", "gitmirror.epoch"), "1");
    w.commit_and_push("server1", "b")
        .fails_with("testing is mirrored from server2");
    // Stepped down first, it still keeps what it alone had when the new master's push comes.
    w.s("server2").gitmirror(&["request-push", "testing"]);
    w.cluster
        .wait_in_sync("testing", "server2", &["server1", "server3"]);
    let kept = w.orphaned_main("server1");
    assert_eq!(kept.trim(), alone);
}

#[test]
fn a_stale_slave_catches_up_before_it_takes_over() {
    let mut w = synced_world();
    // server3 misses a push.
    w.cluster.servers[2].crash_sshd();
    w.commit_and_push("server1", "b").ok();
    w.cluster.wait_in_sync("testing", "server1", &["server2"]);
    let newest = w.head_of("server1");
    w.stop_daemons();
    w.cluster.servers[2].start_sshd();
    assert_ne!(w.head_of("server3"), newest);
    // Promoted while the others are reachable, it takes what they have first.
    let out = w.s("server3").gitmirror(&["promote", "testing"]);
    let text = out.text();
    assert!(text.contains("caught up from server1 first"), "{text}");
    assert!(
        text.contains("server3 ==== (testing) ===> server1"),
        "{text}"
    );
    assert!(
        text.contains("server3 ==== (testing) ===> server2"),
        "{text}"
    );
    assert_eq!(w.head_of("server3"), newest);
    w.cluster
        .wait_in_sync("testing", "server3", &["server1", "server2"]);
    assert_eq!(w.config("server1", "gitolite.mirror.master"), "server3");
    assert_eq!(w.config("server2", "gitolite.mirror.master"), "server3");
    // Promoting again finishes nothing new and says so.
    let again = w.s("server3").gitmirror(&["promote", "testing"]).ok();
    assert!(
        again.contains("testing: server3 masters it already at epoch 1"),
        "{again}"
    );
}

#[test]
fn two_promoted_while_partitioned_meet_and_the_first_name_wins_keeping_the_losers_commits() {
    let w = synced_world();
    // Every server cut off from the others; each slave is promoted on its side.
    w.s("server1").cut_off_from(&["server2", "server3"]);
    w.s("server2").cut_off_from(&["server1", "server3"]);
    w.s("server3").cut_off_from(&["server1", "server2"]);
    w.stop_daemons();
    for s in ["server2", "server3"] {
        let text = w.s(s).gitmirror(&["promote", "testing"]).text();
        assert!(
            text.contains(&format!("promoted testing: {s} masters it now at epoch 1")),
            "{text}"
        );
    }
    // Users push to both "masters".
    w.commit_and_push("server2", "on-server2").ok();
    let winner = w.head_of("server2");
    w.forget_last_commit();
    w.commit_and_push("server3", "on-server3").ok();
    let loser = w.head_of("server3");
    // They meet: at equal epochs, server2's name sorts first.
    w.heal();
    w.s("server3").gitmirror(&["request-push", "testing"]);
    w.s("server2").gitmirror(&["request-push", "testing"]);
    w.cluster
        .wait_in_sync("testing", "server2", &["server1", "server3"]);
    assert_eq!(w.head_of("server3"), winner);
    assert_eq!(w.config("server3", "gitolite.mirror.master"), "server2");
    assert_eq!(w.config("server1", "gitolite.mirror.master"), "server2");
    let kept = w.orphaned_main("server3");
    assert_eq!(kept.trim(), loser);
    w.commit_and_push("server3", "c")
        .fails_with("testing is mirrored from server2");
}

#[test]
fn an_interrupted_promotion_is_finished_by_running_it_again() {
    let w = synced_world();
    w.stop_daemons();
    // Killed right after its one config write: server2 masters the repo, nobody knows.
    let s2 = w.s("server2");
    for (k, v) in [
        ("gitolite.mirror.slaves", "server1 server3"),
        ("gitolite.mirror.master", "server2"),
        ("gitmirror.epoch", "1"),
    ] {
        s2.git("testing", &["config", k, v]).ok();
    }
    assert_eq!(w.config("server1", "gitolite.mirror.master"), "server1");
    let out = s2.gitmirror(&["promote", "testing"]);
    let text = out.ok();
    assert!(
        text.contains("testing: server2 masters it already at epoch 1"),
        "{text}"
    );
    assert!(
        text.contains("server2 ==== (testing) ===> server1"),
        "{text}"
    );
    assert!(
        text.contains("server2 ==== (testing) ===> server3"),
        "{text}"
    );
    for s in ["server1", "server3"] {
        assert_eq!(w.config(s, "gitolite.mirror.master"), "server2");
        assert_eq!(w.config(s, "gitmirror.epoch"), "1");
    }
    w.commit_and_push("server1", "b")
        .fails_with("testing is mirrored from server2");
}

#[test]
fn an_old_master_with_nothing_to_push_learns_its_replacement_from_verify() {
    let w = synced_world();
    w.cut_off_master();
    w.s("server2").gitmirror(&["promote", "testing"]);
    w.heal();
    // Its slaves confirmed this very state: nothing to push. The periodic check (verify,
    // run here by hand) hears the slaves refuse it, naming the new master.
    let out = w.s("server1").gitmirror(&["verify", "testing"]);
    assert!(
        out.text().contains("its master here is server2 at epoch 1"),
        "{}",
        out.text()
    );
    assert_eq!(w.config("server1", "gitolite.mirror.master"), "server2");
    w.commit_and_push("server1", "b")
        .fails_with("testing is mirrored from server2");
}

#[test]
fn a_promotion_refuses_when_copies_went_different_ways_unless_forced() {
    let mut w = synced_world();
    // server3 misses a push; server2 gets it, then its main is moved on by hand.
    w.cluster.servers[2].crash_sshd();
    w.commit_and_push("server1", "b").ok();
    w.cluster.wait_in_sync("testing", "server1", &["server2"]);
    w.stop_daemons();
    w.cluster.servers[2].start_sshd();
    let s2 = w.s("server2");
    let tree = s2.git("testing", &["rev-parse", "main^{tree}"]).ok();
    let by_hand = run(s2
        .user
        .command("git")
        .arg("--git-dir")
        .arg(s2.repo_path("testing"))
        .args([
            "-c",
            "user.name=admin",
            "-c",
            "user.email=admin@example.com",
        ])
        .args(["commit-tree", tree.trim(), "-p", "main", "-m", "by hand"]))
    .ok();
    let by_hand = by_hand.trim().to_string();
    s2.git("testing", &["update-ref", "refs/heads/main", &by_hand])
        .ok();
    // server3 catches up from server1 (the old master first), but server2 still has a main
    // it lacks: it refuses, naming server2, and changes nothing.
    let out = w.s("server3").gitmirror(&["promote", "testing"]);
    let text = out.text();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("server2 has commits this server lacks"),
        "{text}"
    );
    assert_eq!(w.config("server3", "gitolite.mirror.master"), "server1");
    // Forced, it takes over; its first push to server2 keeps the hand-made commit there.
    let text = w
        .s("server3")
        .gitmirror(&["promote", "--force", "testing"])
        .text();
    assert!(
        text.contains("promoted testing: server3 masters it now at epoch 1"),
        "{text}"
    );
    w.cluster
        .wait_in_sync("testing", "server3", &["server1", "server2"]);
    let kept = w.orphaned_main("server2");
    assert_eq!(kept.trim(), by_hand);
}
