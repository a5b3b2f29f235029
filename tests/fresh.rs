//! A repo a slave does not have yet arrives through the daemon's verb complete, or not at all:
//! a long history (git's index-pack path), tags and HEAD as on the master; and a master that
//! sends broken objects or no pack creates nothing.

use gitmirror_testkit::*;

const RULES: &str = "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n\
                     [repos.fresh]\n\"RW+\" = [\"alice\"]\n";

fn pair() -> (Cluster, Client) {
    let cluster = Cluster::new(&["server1", "server2"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    // server2's rules make server1 the master of anything (through @all), but name no repo:
    // "fresh" is missing there until server1 pushes it.
    cluster.server("server1").set_rules(RULES);
    cluster.server("server2").set_rules(
        "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n",
    );
    cluster.server("server1").set_sync(true);
    (cluster, alice)
}

#[test]
fn a_long_history_arrives_whole_with_its_tags_and_head() {
    let (cluster, alice) = pair();
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    assert!(!s2.repo_path("fresh").exists());
    alice.init_repo("w");
    // 60 commits of a file each: well over the 100 objects under which git stores them loose.
    for i in 0..60 {
        alice.commit("w", &format!("f{i}"));
    }
    alice
        .git_in("w", &["tag", "-a", "-m", "release", "v1"])
        .ok();
    alice.git_in("w", &["tag", "light", "HEAD~5"]).ok();
    alice.git_in("w", &["branch", "dev", "HEAD~10"]).ok();
    let err = alice
        .git_in(
            "w",
            &["push", &s1.url("fresh"), "main", "dev", "v1", "light"],
        )
        .err();
    assert!(err.contains("server1 ==== (fresh) ===> server2"), "{err}");
    cluster.wait_in_sync("fresh", "server1", &["server2"]);
    assert!(s2.refs("fresh").ends_with("HEAD -> refs/heads/main\n"));
    // It came through the daemon's verb, which took it without receive-pack.
    let log = s2.log();
    assert!(
        log.contains(
            "actor=server1 verb=\"mirror-receive-pack\" repo=\"fresh\" decision=\"allow\""
        ),
        "{log}"
    );
    s1.git("fresh", &["symbolic-ref", "HEAD", "refs/heads/dev"])
        .ok();
    s1.gitmirror(&["request-push", "fresh"]).ok();
    cluster.wait_in_sync("fresh", "server1", &["server2"]);
    assert!(s2.refs("fresh").ends_with("HEAD -> refs/heads/dev\n"));
    // Stored as a pack (more than 100 objects), every object sound, settings in place.
    s2.git("fresh", &["fsck", "--strict", "--no-dangling"]).ok();
    let packs = std::fs::read_dir(s2.repo_path("fresh").join("objects/pack"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .count();
    assert_eq!(packs, 1);
    assert_eq!(
        s2.git("fresh", &["config", "gitolite.mirror.master"])
            .ok()
            .trim(),
        "server1"
    );
    assert!(s2.repo_path("fresh").join("hooks/post-receive").is_file());
    // The next push goes to the repo that now exists, the usual way.
    alice.commit("w", "after");
    let err = alice.git_in("w", &["push", &s1.url("fresh"), "main"]).err();
    assert!(err.contains("===> server2"), "{err}");
    cluster.wait_in_sync("fresh", "server1", &["server2"]);
    let log = s2.log();
    assert_eq!(
        log.matches("created repo for its master").count(),
        1,
        "{log}"
    );
}

/// A repo in server1's home, owned by its account, holding what `setup` makes with git.
fn liar_repo(s1: &Server, setup: &str) -> std::path::PathBuf {
    let dir = s1.home().join("liar");
    let script = format!(
        "set -e\nrm -rf '{d}'\ngit init -q --bare '{d}'\ncd '{d}'\n{setup}\n",
        d = dir.display()
    );
    run(s1.user.command("sh").arg("-c").arg(script)).ok();
    dir
}

fn assert_nothing_created(s2: &Server) {
    assert!(!s2.repo_path("fresh").exists());
    let leftovers: Vec<String> = std::fs::read_dir(s2.home().join("repositories"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".new-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_master_sending_broken_objects_creates_nothing() {
    let (cluster, _alice) = pair();
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    // A commit without an author: git's fsck refuses it; the master's git does not look.
    let dir = liar_repo(
        s1,
        "tree=$(git hash-object -t tree -w --stdin </dev/null)\n\
         commit=$(printf 'tree %s\\n\\nno author\\n' $tree | git hash-object -t commit --literally -w --stdin)\n\
         git update-ref refs/heads/main $commit",
    );
    let url = s2.url("fresh");
    let out = s1.git_as_peer(
        &dir,
        &["push", "--receive-pack=mirror-receive-pack 0", &url, "main"],
    );
    let err = out.err();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("unpack"), "{err}");
    assert!(err.contains("missingAuthor"), "{err}");
    assert_nothing_created(s2);
    // The slave's own fsck settings decide, as receive-pack's would: told to let this
    // kind of breakage pass, it takes the same push.
    for msg in [
        "receive.fsck.missingAuthor",
        "receive.fsck.missingCommitter",
    ] {
        run(s2
            .user
            .command("git")
            .args(["config", "--global", msg, "ignore"]))
        .ok();
    }
    let out = s1.git_as_peer(
        &dir,
        &["push", "--receive-pack=mirror-receive-pack 0", &url, "main"],
    );
    out.ok();
    assert!(s2.repo_path("fresh").is_dir());
}

#[test]
fn a_master_sending_no_pack_or_garbage_creates_nothing() {
    let (cluster, _alice) = pair();
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    let zero = "0".repeat(40);
    let line = format!(
        "{zero} {} refs/heads/main\0report-status side-band-64k\n",
        "1".repeat(40)
    );
    let command = format!("{:04x}{line}0000", line.len() + 4);
    let feed = s1.home().join("feed");
    for (what, input, needle) in [
        (
            "not a pack",
            format!("{command}NOTAPACKATALL"),
            "pack signature mismatch",
        ),
        (
            "no pack at all",
            command.clone(),
            "cannot read the pack header",
        ),
        (
            "not even commands",
            "zzzz".to_string(),
            "where a packet length was due",
        ),
    ] {
        std::fs::write(&feed, &input).unwrap();
        let out = s1.ssh_as_peer_fed(s2, "mirror-receive-pack 0 'fresh.git'", &feed);
        let said = format!("{}{}", out.text(), out.err());
        assert!(said.contains(needle), "{what}: {said}");
        assert_nothing_created(s2);
    }
    // A sound pack, but the ref names an object it does not hold.
    let dir = liar_repo(
        s1,
        "echo hello | git hash-object -w --stdin | git pack-objects -q --stdout > ../one.pack",
    );
    let pack = std::fs::read(dir.parent().unwrap().join("one.pack")).unwrap();
    let mut input = command.into_bytes();
    input.extend_from_slice(&pack);
    std::fs::write(&feed, &input).unwrap();
    let out = s1.ssh_as_peer_fed(s2, "mirror-receive-pack 0 'fresh.git'", &feed);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("ng refs/heads/main missing necessary objects"),
        "{said}"
    );
    assert_nothing_created(s2);
}
