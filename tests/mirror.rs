//! Mirroring across three servers, each with its own real sshd on its own 127.0.0.x address:
//! pushes reach the slaves, slaves refuse users' pushes, peers are confined to the repos they
//! master, missing repos are created only when the slave's rules agree, request-push works
//! from either side, and two sites can master repos for each other.

use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use gitmirror_testkit::*;

const RULES: &str = r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2", "server3"]

[repos.testing]
"RW+" = ["alice"]
RW = ["bob"]
R = ["carol"]

[repos."site-b/tools"]
"RW+" = ["alice"]
mirror.master = "server2"
mirror.slaves = ["server1"]
mirror.sync = true
"#;

struct World {
    cluster: Cluster,
    alice: Client,
    bob: Client,
    carol: Client,
}

fn world(sync: bool) -> World {
    let cluster = Cluster::new(&["server1", "server2", "server3"]);
    if sync {
        for s in &cluster.servers {
            s.set_sync(true);
        }
    }
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(Client::new);
    for c in [&alice, &bob, &carol] {
        cluster.add_user(c);
    }
    cluster.set_rules(RULES);
    World {
        cluster,
        alice,
        bob,
        carol,
    }
}

impl World {
    fn s(&self, name: &str) -> &Server {
        self.cluster.server(name)
    }

    /// alice pushes `args` from her work tree `w` to server1's testing; returns stderr.
    fn push(&self, args: &[&str]) -> String {
        let url = self.s("server1").url("testing");
        let mut all = vec!["push", url.as_str()];
        all.extend_from_slice(args);
        let out = self.alice.git_in("w", &all);
        out.ok();
        out.err()
    }

    fn in_sync(&self) {
        self.cluster
            .wait_in_sync("testing", "server1", &["server2", "server3"]);
    }
}

#[test]
fn peers_greet_each_other() {
    let w = world(false);
    let (s1, s2, s3) = (w.s("server1"), w.s("server2"), w.s("server3"));
    assert_eq!(
        s1.ssh_as_peer(s2, "info").ok(),
        "Hello server1, I am server2\n"
    );
    assert_eq!(
        s3.ssh_as_peer(s1, "info").ok(),
        "Hello server3, I am server1\n"
    );
}

#[test]
fn sync_push_reaches_every_slave_and_reports_each() {
    let w = world(true);
    w.alice.init_repo("w");
    let err = w.push(&["main"]);
    assert!(err.contains("server1 ==== (testing) ===> server2"), "{err}");
    assert!(err.contains("server1 ==== (testing) ===> server3"), "{err}");
    // In sync mode the slaves have it when the push returns.
    for slave in ["server2", "server3"] {
        assert_eq!(w.s(slave).refs("testing"), w.s("server1").refs("testing"));
    }
}

#[test]
fn async_push_reaches_every_slave() {
    let w = world(false);
    w.alice.init_repo("w");
    let err = w.push(&["main"]);
    assert!(
        err.contains("server1 ==== (testing) ===> server2 (async)"),
        "{err}"
    );
    w.in_sync();
    // Reads from a slave work for users with R.
    w.carol.clone(w.s("server3"), "testing", "c").ok();
    assert!(w.carol.dir.path().join("c/README").exists());
}

#[test]
fn every_kind_of_ref_change_propagates() {
    let w = world(true);
    let first = w.alice.init_repo("w");
    w.push(&["main"]);
    // New branches, a tag, an annotated tag, a note, a ref in another namespace.
    w.alice.commit("w", "two");
    w.alice.git_in("w", &["tag", "v1"]).ok();
    w.alice
        .git_in("w", &["tag", "-a", "-m", "release", "v2"])
        .ok();
    w.alice
        .git_in("w", &["notes", "add", "-m", "reviewed"])
        .ok();
    w.push(&[
        "main",
        "main:side",
        "v1",
        "v2",
        "refs/notes/commits",
        "main:refs/custom/x",
    ]);
    w.in_sync();
    // Force-push, delete a branch, move and delete tags.
    w.alice.git_in("w", &["reset", "-q", "--hard", &first]).ok();
    w.alice.git_in("w", &["tag", "-f", "v1"]).ok();
    w.push(&["-f", "main", "v1", ":side", ":v2", ":refs/custom/x"]);
    w.in_sync();
    let refs = w.s("server2").refs("testing");
    assert!(!refs.contains("refs/heads/side"), "{refs}");
    assert!(!refs.contains("refs/tags/v2"), "{refs}");
    assert!(refs.contains(&format!("{first} refs/heads/main")), "{refs}");
    // HEAD follows the master's.
    w.s("server1")
        .git("testing", &["symbolic-ref", "HEAD", "refs/heads/other"])
        .ok();
    w.push(&["main:other"]);
    w.in_sync();
    assert!(
        w.s("server3")
            .refs("testing")
            .ends_with("HEAD -> refs/heads/other\n")
    );
}

#[test]
fn slave_refuses_a_users_push_naming_its_master() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main"]);
    w.alice.commit("w", "two");
    let before = w.s("server2").refs("testing");
    w.alice
        .git_in("w", &["push", &w.s("server2").url("testing"), "main"])
        .fails_with(
            "FATAL: testing is mirrored from server1; server2 is a slave and accepts pushes only from its master.",
        );
    assert_eq!(w.s("server2").refs("testing"), before);
}

#[test]
fn peer_is_confined_to_the_repos_it_masters() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main"]);
    let (s2, s3) = (w.s("server2"), w.s("server3"));
    // server2 is not testing's master: server3 refuses its push, naming the real master.
    let out = s2.ssh_as_peer(s3, "git-receive-pack 'testing.git'");
    let err = out.fails_with("server3 refuses testing from server2: its master here is server1");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The same through the daemon's own verb.
    s2.ssh_as_peer(s3, "mirror-receive-pack 0 'testing.git' 'refs/heads/main'")
        .fails_with("server3 refuses testing from server2: its master here is server1");
    // Nor may a peer run anything else.
    for cmd in ["sh", "git-upload-archive 'testing'", "info; id", "scp -t x"] {
        s2.ssh_as_peer(s3, cmd).fails_with("FATAL: ");
    }
    // A peer has no user's rights either: server1 may not request-push a repo it masters
    // itself from server2... and server3 (a slave of testing) may not push it to server2.
    s3.ssh_as_peer(s2, "request-push testing")
        .fails_with("server2 refuses testing from server3");
    let log = s3.log();
    assert!(
        log.contains(
            "actor=server2 verb=\"git-receive-pack\" repo=\"testing\" decision=\"deny\" reason=server3 refuses testing from server2: its master here is server1 at epoch 0 role=peer"
        ),
        "{log}"
    );
    assert!(
        log.contains("actor=server2 command=\"sh\" decision=\"deny\""),
        "{log}"
    );
    assert_eq!(s3.refs("testing"), w.s("server1").refs("testing"));
}

#[test]
fn missing_repo_is_created_only_when_the_slaves_rules_agree() {
    let cluster = Cluster::new(&["server1", "server2"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    // server1 masters "fresh" and "stray" with server2 as slave; server2's own rules agree
    // only about "fresh" (through @all), and give "stray" to another master.
    s1.set_rules(
        "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n\
         [repos.fresh]\n\"RW+\" = [\"alice\"]\n[repos.stray]\n\"RW+\" = [\"alice\"]\n",
    );
    s2.set_rules(
        "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n\
         [repos.other]\nmirror.master = \"server9\"\n[repos.stray]\nmirror.master = \"server9\"\nmirror.slaves = [\"server2\"]\n",
    );
    assert!(!s2.repo_path("fresh").exists());
    // compile on server2 created "stray" from its own rules; remove it to test refusal.
    std::fs::remove_dir_all(s2.repo_path("stray")).unwrap();
    s1.set_sync(true);
    alice.init_repo("w");
    let err = alice.git_in("w", &["push", &s1.url("fresh"), "main"]).err();
    assert!(err.contains("server1 ==== (fresh) ===> server2"), "{err}");
    cluster.wait_in_sync("fresh", "server1", &["server2"]);
    assert_eq!(
        s2.git("fresh", &["config", "gitolite.mirror.master"])
            .ok()
            .trim(),
        "server1"
    );
    assert_eq!(
        s2.git("fresh", &["config", "receive.fsckObjects"])
            .ok()
            .trim(),
        "true"
    );

    let err = alice.git_in("w", &["push", &s1.url("stray"), "main"]).err();
    assert!(
        err.contains("server1 ==== (stray) =X=> server2: server2 has no repo stray, and its repos.toml does not make server1 its master"),
        "{err}"
    );
    assert!(!s2.repo_path("stray").exists());
}

#[test]
fn request_push_from_master_and_from_slave() {
    let mut w = world(false);
    w.alice.init_repo("w");
    // server3 is down while alice pushes (its connections too: compile's daemon may have one
    // open); it comes back on the same address and port.
    w.cluster.servers[2].crash_sshd();
    w.push(&["main"]);
    w.cluster.wait_in_sync("testing", "server1", &["server2"]);
    // Stop the master's daemon, or its probe of server3 catches up before anyone asks.
    w.s("server1").stop_daemon();
    w.cluster.servers[2].start_sshd();
    assert_ne!(
        w.s("server3").refs("testing"),
        w.s("server1").refs("testing")
    );

    let (s1, s2) = (w.s("server1"), w.s("server2"));
    // From the master: every slave's result is printed.
    let out = s1.gitmirror(&["request-push", "testing"]).ok();
    assert!(out.contains("server1 ==== (testing) ===> server2"), "{out}");
    assert!(out.contains("server1 ==== (testing) ===> server3"), "{out}");
    w.in_sync();

    // From a slave: it asks the master, which pushes to that slave.
    s1.git("testing", &["update-ref", "refs/heads/direct", "main"])
        .ok();
    let out = s2.gitmirror(&["request-push", "testing"]).ok();
    assert_eq!(out.trim(), "server1 ==== (testing) ===> server2");
    w.cluster.wait_in_sync("testing", "server1", &["server2"]);

    // Users who may write can ask over ssh; readers cannot.
    let out = w.bob.ssh(s1, "request-push testing").ok();
    assert!(out.contains("===> server3"), "{out}");
    w.in_sync();
    w.carol
        .ssh(s1, "request-push testing")
        .fails_with("carol may read testing but not push to it");
    // --all covers every repo the server masters, and only those; a slave it did not need to
    // ask is reported as unchanged, not as pushed.
    let out = s1.gitmirror(&["request-push", "--all"]).ok();
    assert!(
        out.contains("server1 ==== (testing) ---> server2: unchanged since 20"),
        "{out}"
    );
    assert!(!out.contains("===>"), "{out}");
    assert!(!out.contains("site-b/tools"), "{out}");
    // The summary counts what succeeded and failed; progress went to stderr as plain lines
    // (not a terminal), and --quiet silences it.
    assert!(
        out.ends_with("request-push: 2 succeeded, 0 failed\n"),
        "{out}"
    );
    let all = s1.gitmirror(&["request-push", "--all"]);
    assert!(
        all.err()
            .starts_with("request-push: 1 succeeded, 0 failed so far\n"),
        "{}",
        all.err()
    );
    let quiet = s1.gitmirror(&["request-push", "--all", "--quiet"]);
    assert!(
        quiet
            .ok()
            .ends_with("request-push: 2 succeeded, 0 failed\n")
    );
    assert_eq!(quiet.err(), "");
}

#[test]
fn two_sites_master_repos_for_each_other() {
    // Servers default to async; site-b/tools is sync through its own mirror.sync.
    let w = world(false);
    w.alice.init_repo("w");
    assert!(w.push(&["main"]).contains("===> server2 (async)"));
    w.alice.init_repo("t");
    let err = w
        .alice
        .git_in("t", &["push", &w.s("server2").url("site-b/tools"), "main"])
        .err();
    assert!(
        err.contains("server2 ==== (site-b/tools) ===> server1"),
        "{err}"
    );
    w.cluster
        .wait_in_sync("site-b/tools", "server2", &["server1"]);
    w.cluster
        .wait_in_sync("testing", "server1", &["server2", "server3"]);
    // Each site refuses users' pushes to the other's repo.
    w.alice
        .git_in(
            "t",
            &["push", &w.s("server1").url("site-b/tools"), "main:x"],
        )
        .fails_with("site-b/tools is mirrored from server2; server1 is a slave");
}

#[test]
fn head_only_change_reaches_slaves_on_request_push() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main", "main:dev"]);
    w.in_sync();
    // A HEAD carrier left behind on server2 (its hook once failed to apply a HEAD) must be
    // replaced, not tripped over.
    w.s("server2")
        .git(
            "testing",
            &["update-ref", "refs/gitmirror/set-head", "refs/heads/main"],
        )
        .ok();
    // The administrator points HEAD elsewhere; no ref changes, so no push would carry it.
    let s1 = w.s("server1");
    s1.git("testing", &["symbolic-ref", "HEAD", "refs/heads/dev"])
        .ok();
    let out = s1.gitmirror(&["request-push", "testing"]).ok();
    assert!(
        out.contains("===> server2") && out.contains("===> server3"),
        "{out}"
    );
    // in_sync compares every ref too, so the carrier ref must be gone again.
    w.in_sync();
    assert!(
        w.s("server2")
            .refs("testing")
            .ends_with("HEAD -> refs/heads/dev\n")
    );
    // Asking again with everything equal updates nothing and still reports success. (The
    // master still puts its claim to the slave, in a session with no update: that is how a
    // replaced master learns it was replaced.)
    let updates = |s: &Server| {
        s.log()
            .matches("actor=server1 repo=testing reference=")
            .count()
    };
    let before = updates(w.s("server3"));
    assert!(before > 0, "the earlier pushes' updates are logged");
    let out = s1.gitmirror(&["request-push", "testing"]).ok();
    assert!(out.contains("server1 ==== (testing) ===> server3"), "{out}");
    assert_eq!(
        updates(w.s("server3")),
        before,
        "updated a ref although nothing differed"
    );
}

#[test]
fn sync_quorum_returns_once_enough_slaves_have_the_push() {
    let w = world(true);
    // One of two slaves suffices; the timeout is long, so only the quorum can end the wait.
    w.s("server1")
        .mirror_settings("sync_quorum = 1\nsync_timeout_secs = 600");
    w.alice.init_repo("w");
    w.push(&["main"]);
    w.in_sync();
    w.s("server3").freeze(true);
    w.alice.commit("w", "two");
    let err = w.push(&["main"]);
    w.s("server3").freeze(false);
    assert!(err.contains("server1 ==== (testing) ===> server2"), "{err}");
    assert!(
        err.contains("server1 ==== (testing) ...> server3: pending, will be retried"),
        "{err}"
    );
    w.in_sync();
}

#[test]
fn a_ref_that_cannot_be_mirrored_is_reported_not_skipped() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main"]);
    w.in_sync();
    // A ref naming a tree: libgit2 would send the name without the tree.
    let s1 = w.s("server1");
    s1.git("testing", &["update-ref", "refs/tags/tree", "main^{tree}"])
        .ok();
    let out = s1.gitmirror(&["request-push", "testing"]);
    let text = out.text();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            "=X=> server2: ref refs/tags/tree points at a tree or blob; gitmirror cannot mirror it"
        ),
        "{text}"
    );
}

#[test]
fn a_slave_without_its_hooks_takes_the_daemons_pushes_but_not_plain_ones() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main"]);
    w.in_sync();
    // An upgrade that skipped compile on server2: its peers' hooks are gone.
    let (s1, s2) = (w.s("server1"), w.s("server2"));
    std::fs::remove_file(s2.home().join("state/peer-hooks/post-receive")).unwrap();
    // The daemon's own verb does the hooks' work itself: its pushes still land in full.
    w.alice.commit("w", "two");
    w.alice.git_in("w", &["checkout", "-q", "-b", "dev"]).ok();
    let err = w.push(&["main", "dev"]);
    assert!(err.contains("server1 ==== (testing) ===> server2"), "{err}");
    s1.git("testing", &["symbolic-ref", "HEAD", "refs/heads/dev"])
        .ok();
    s1.gitmirror(&["request-push", "testing"]).ok();
    w.in_sync();
    assert!(s2.refs("testing").ends_with("HEAD -> refs/heads/dev\n"));
    // A plain git push from the peer would land without them: refused until compiled.
    s1.ssh_as_peer(s2, "git-receive-pack 'testing.git'")
        .fails_with("server2 cannot take mirror pushes: its hooks are not installed");
    s2.gitmirror(&["compile"]).ok();
    assert!(s2.home().join("state/peer-hooks/post-receive").is_file());
}

#[test]
fn a_slave_that_predates_the_daemons_verb_still_gets_every_push() {
    let w = world(true);
    let (s1, s2) = (w.s("server1"), w.s("server2"));
    s2.forget_peer_verb("server1", "mirror-receive-pack");
    // The daemon's connection to server2 must log in again to meet the old command.
    s1.stop_daemon();
    w.alice.init_repo("w");
    w.push(&["main", "main:dev"]);
    w.in_sync();
    // HEAD then rides as a push option, for the old slave's hook.
    s1.git("testing", &["symbolic-ref", "HEAD", "refs/heads/dev"])
        .ok();
    let out = s1.gitmirror(&["request-push", "testing"]).ok();
    assert!(out.contains("===> server2"), "{out}");
    w.in_sync();
    assert!(s2.refs("testing").ends_with("HEAD -> refs/heads/dev\n"));
    let log = s2.log();
    assert!(
        log.contains("actor=server1 verb=\"git-receive-pack\" repo=\"testing\" decision=\"allow\""),
        "{log}"
    );
    assert!(!log.contains("verb=\"mirror-receive-pack\""), "{log}");
    // server3 knows the verb and got the same pushes through it.
    assert!(w.s("server3").log().contains(
        "actor=server1 verb=\"mirror-receive-pack\" repo=\"testing\" decision=\"allow\""
    ));
}

#[test]
fn renaming_a_branch_into_a_directory_reaches_the_slaves_at_once() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main", "main:refs/heads/topic"]);
    // topic -> topic/one: a deletion and a creation that cannot both exist on disk.
    let err = w.push(&[":refs/heads/topic", "main:refs/heads/topic/one"]);
    assert!(err.contains("server1 ==== (testing) ===> server2"), "{err}");
    assert!(err.contains("server1 ==== (testing) ===> server3"), "{err}");
    for slave in ["server2", "server3"] {
        assert_eq!(w.s(slave).refs("testing"), w.s("server1").refs("testing"));
    }
}

#[test]
fn deleting_the_branch_head_points_at_reaches_the_slaves() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main", "main:refs/heads/other"]);
    // The master's administrator lets users delete the branch HEAD names.
    w.s("server1")
        .git(
            "testing",
            &["config", "receive.denyDeleteCurrent", "ignore"],
        )
        .ok();
    let err = w.push(&[":refs/heads/main"]);
    assert!(err.contains("server1 ==== (testing) ===> server2"), "{err}");
    assert!(err.contains("server1 ==== (testing) ===> server3"), "{err}");
    for slave in ["server2", "server3"] {
        assert_eq!(w.s(slave).refs("testing"), w.s("server1").refs("testing"));
    }
}

#[test]
fn what_cannot_be_mirrored_is_refused_at_push_time_even_with_rw_plus() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main"]);
    let url = w.s("server1").url("testing");
    // A tag naming a tree.
    let out = w
        .alice
        .git_in("w", &["push", &url, "HEAD^{tree}:refs/tags/t"]);
    let err = out.fails_with("refs/tags/t points at a tree");
    assert!(err.contains("could not mirror it"), "{err}");
    // A branch whose name is not UTF-8, pushed along with a good one.
    let main = w.alice.git_in("w", &["rev-parse", "main"]).ok();
    let bad = w.alice.dir.path().join("w/.git/refs/heads");
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9");
    std::fs::write(bad.join(name), &main).unwrap();
    w.alice.git_in("w", &["branch", "good"]).ok();
    let out = w
        .alice
        .git_in("w", &["push", &url, "refs/heads/*:refs/heads/*"]);
    out.fails_with("is not UTF-8");
    // Nothing of either push landed; the slaves still match the master.
    let master = w.s("server1").refs("testing");
    assert!(
        !master.contains("refs/tags/t") && !master.contains("refs/heads/good"),
        "{master}"
    );
    for slave in ["server2", "server3"] {
        assert_eq!(w.s(slave).refs("testing"), master);
    }
}

#[test]
fn a_ref_that_cannot_be_mirrored_holds_up_no_other_ref() {
    let w = world(true);
    w.alice.init_repo("w");
    w.push(&["main"]);
    // Made on the master's disk, where no hook refuses it.
    let s1 = w.s("server1");
    s1.git("testing", &["update-ref", "refs/tags/tree", "main^{tree}"])
        .ok();
    w.alice.commit("w", "two");
    let err = w.push(&["main"]);
    // The pusher hears of it, and every other ref reaches the slaves.
    assert!(
        err.contains("=X=> server2: ref refs/tags/tree points at a tree or blob; gitmirror cannot mirror it; every other ref is mirrored"),
        "{err}"
    );
    let main = s1.git("testing", &["rev-parse", "main"]).ok();
    for slave in ["server2", "server3"] {
        assert_eq!(w.s(slave).git("testing", &["rev-parse", "main"]).ok(), main);
        assert!(!w.s(slave).refs("testing").contains("refs/tags/tree"));
    }
    // status says so until someone removes it.
    let row = s1.slave_status("testing", "server2");
    assert_eq!(row["state"], "failing", "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("refs/tags/tree"),
        "{row}"
    );
    s1.git("testing", &["update-ref", "-d", "refs/tags/tree"])
        .ok();
    s1.gitmirror(&["request-push", "testing"]).ok();
    assert_eq!(s1.slave_status("testing", "server2")["state"], "in sync");
}

/// The `pack_bytes` of each mirror push to `slave` that server1 logged, in order.
fn packs_logged(w: &World, slave: &str) -> Vec<(u64, String)> {
    w.s("server1")
        .log()
        .lines()
        .filter(|l| l.contains("mirror push done") && l.contains(&format!("slave={slave}")))
        .filter_map(|l| {
            let bytes = l
                .split("pack_bytes=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            let builder = l.split("pack_builder=").nth(1)?.to_string();
            Some((bytes, builder))
        })
        .collect()
}

#[test]
fn a_big_repo_is_packed_by_git_and_only_what_is_new_is_sent_again() {
    let w = world(true);
    w.alice.init_repo("w");
    // 6 MiB that no compression shrinks: over the size a pack is built in the daemon.
    let noise = noise(6 << 20, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(w.alice.dir.path().join("w/blob.bin"), noise).unwrap();
    w.alice.git_in("w", &["add", "blob.bin"]).ok();
    w.alice.git_in("w", &["commit", "-q", "-m", "big"]).ok();
    w.alice
        .git_in("w", &["tag", "-a", "-m", "release", "v1"])
        .ok();
    w.push(&["main", "v1"]);
    w.in_sync();
    let first = packs_logged(&w, "server2");
    let (bytes, builder) = first.last().expect("a mirror push was logged");
    assert!(builder.contains("git pack-objects"), "{first:?}");
    assert!(*bytes > 6 << 20, "{first:?}");
    // A small change on top: the slave's refs bound the pack, so the big file stays home.
    w.alice.commit("w", "small");
    w.push(&["main"]);
    w.in_sync();
    let after = packs_logged(&w, "server2");
    assert_eq!(after.len(), first.len() + 1, "{after:?}");
    let (bytes, _) = after.last().unwrap();
    assert!(*bytes < 64 * 1024, "{after:?}");
    // What arrived is whole: git checks every object on the slave.
    w.s("server3").git("testing", &["fsck", "--strict"]).ok();
}

#[test]
fn a_slave_that_refuses_a_pack_is_blamed_not_the_connection() {
    let w = world(false);
    w.alice.init_repo("w");
    w.push(&["main"]);
    w.in_sync();
    // server2 takes no pack over 64 KiB; 6 MiB arrive, more than the session's buffers hold,
    // so the slave stops reading mid-pack and the master's writes fail.
    w.s("server2")
        .git("testing", &["config", "receive.maxInputSize", "65536"])
        .ok();
    let noise = noise(6 << 20, 0x2545_f491_4f6c_dd1d);
    std::fs::write(w.alice.dir.path().join("w/blob.bin"), noise).unwrap();
    w.alice.git_in("w", &["add", "blob.bin"]).ok();
    w.alice.git_in("w", &["commit", "-q", "-m", "big"]).ok();
    w.push(&["main"]);
    w.cluster.wait_in_sync("testing", "server1", &["server3"]);
    wait_for(
        "server2's refusal in status",
        Duration::from_secs(60),
        || {
            w.s("server1").slave_status("testing", "server2")["last_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        },
    );
    let row = w.s("server1").slave_status("testing", "server2");
    let error = row["last_error"].as_str().unwrap_or("");
    // In the slave's words, and not a connection to tear down and retry at once.
    assert!(error.contains("unpack"), "{row}");
    let log = w.s("server1").log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("mirror push failed") && l.contains("slave=server2"))
        .collect();
    assert!(!failures.is_empty(), "{log}");
    assert!(
        failures.iter().all(|l| l.contains("blame=Slave")),
        "{failures:?}"
    );
}
