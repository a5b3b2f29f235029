//! Pushes to the nearest server (gitolite's redirectOK), across three servers, each its own
//! account behind its own sshd: with `mirror.redirect`, a user's push to a slave is carried to
//! the master over the slave's peer login and decided there by the master's own rules, and the
//! user sees the master's answer and mirror lines. Without it a slave refuses as before. Users
//! cannot send the carried form themselves, and a peer can send it only for repos it is a
//! slave of, to their master, where the master's settings allow it.

use std::fs;
use std::path::PathBuf;
use std::process::Output;

use gitmirror_testkit::*;

const RULES: &str = r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2", "server3"]

[repos.testing]
"RW+" = ["alice"]
RW = ["bob"]
R = ["carol"]
mirror.redirect = true

[repos.plain]
"RW+" = ["alice"]

[repos.pair]
"RW+" = ["alice"]
mirror.master = "server1"
mirror.slaves = ["server2"]
mirror.redirect = true
"#;

struct World {
    cluster: Cluster,
    alice: Client,
    bob: Client,
    carol: Client,
}

fn world() -> World {
    world_with(|_| {})
}

/// Three servers in sync mode with [`RULES`]; `prepare` runs before any push, when a peer's
/// forced command can still be wrapped (it takes effect at the peer's first login).
fn world_with(prepare: impl FnOnce(&Cluster)) -> World {
    let cluster = Cluster::new(&["server1", "server2", "server3"]);
    for s in &cluster.servers {
        s.set_sync(true);
    }
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(Client::new);
    for c in [&alice, &bob, &carol] {
        cluster.add_user(c);
    }
    cluster.set_rules(RULES);
    prepare(&cluster);
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

    /// `who` pushes `args` from their work tree `w` to `repo` on `server`.
    fn push(&self, who: &Client, server: &str, repo: &str, args: &[&str]) -> Output {
        let url = self.s(server).url(repo);
        let mut all = vec!["push", url.as_str()];
        all.extend_from_slice(args);
        who.git_in("w", &all)
    }

    fn head(&self, server: &str, repo: &str) -> String {
        self.s(server)
            .git(repo, &["rev-parse", "refs/heads/main"])
            .ok()
            .trim()
            .to_string()
    }

    /// Every server's copy of `repo`, on disk.
    fn copies(&self, repo: &str) -> Vec<std::collections::BTreeMap<PathBuf, Vec<u8>>> {
        self.cluster
            .servers
            .iter()
            .map(|s| snapshot(&s.repo_path(repo)))
            .collect()
    }
}

#[test]
fn a_push_to_a_slave_lands_on_the_master_and_every_slave_with_the_masters_words() {
    let w = world();
    let head = w.bob.init_repo("w");
    let out = w.push(&w.bob, "server2", "testing", &["main"]);
    out.ok();
    // The master's hooks ran for bob: its mirror lines reach him as if he had pushed there.
    let err = out.err();
    for slave in ["server2", "server3"] {
        assert!(
            err.contains(&format!("remote: server1 ==== (testing) ===> {slave}")),
            "{err}"
        );
    }
    assert_eq!(w.head("server1", "testing"), head);
    // Sync mode: the slave bob talks to has the push when it returns.
    assert_eq!(w.head("server2", "testing"), head);
    w.cluster
        .wait_in_sync("testing", "server1", &["server2", "server3"]);
    // Each server logged its part: the slave carried it, the master took it from the slave
    // for bob and recorded bob's update as carried.
    let slave_log = w.s("server2").log();
    assert!(
        slave_log.contains(
            "actor=bob verb=\"git-receive-pack\" repo=\"testing\" decision=\"redirect\" master=\"server1\" role=user"
        ),
        "{slave_log}"
    );
    let master_log = w.s("server1").log();
    assert!(
        master_log.contains(
            "actor=server2 verb=\"redirect-receive-pack\" repo=\"testing\" user=\"bob\" decision=\"allow\" role=peer"
        ),
        "{master_log}"
    );
    assert!(
        master_log.contains("actor=bob via=\"server2\" repo=testing reference=refs/heads/main"),
        "{master_log}"
    );
}

#[test]
fn the_masters_rules_decide_a_carried_push_not_the_slaves() {
    let w = world();
    // server2's rules disagree with the master's: carol may write there, bob only read.
    w.s("server2").set_rules(
        &RULES
            .replace("RW = [\"bob\"]", "RW = [\"carol\"]")
            .replace("R = [\"carol\"]", "R = [\"bob\"]"),
    );
    let first = w.alice.init_repo("w");
    w.push(&w.alice, "server1", "testing", &["main"]).ok();
    for who in [&w.bob, &w.carol] {
        who.clone(w.s("server2"), "testing", "w").ok();
        who.commit("w", &who.name);
    }
    // carol may write by server2's rules, but the master's say read: the master refuses, in
    // its own words, before git starts, and no copy changes.
    let before = w.copies("testing");
    w.push(&w.carol, "server2", "testing", &["main"])
        .fails_with("FATAL: carol may read testing but not push to it");
    assert_eq!(w.copies("testing"), before);
    let log = w.s("server1").log();
    assert!(
        log.contains(
            "actor=server2 verb=\"redirect-receive-pack\" repo=\"testing\" user=\"carol\" decision=\"deny\" reason=carol may read testing but not push to it role=peer"
        ),
        "{log}"
    );
    // bob may only read by server2's rules, which is all a slave asks to carry a push; the
    // master's RW lets him in.
    let bobs = w.bob.commit("w", "more");
    w.push(&w.bob, "server2", "testing", &["main"]).ok();
    assert_eq!(w.head("server1", "testing"), bobs);
    w.cluster
        .wait_in_sync("testing", "server1", &["server2", "server3"]);
    // The master's pre-receive holds bob to RW: no rewind, even carried.
    w.bob.git_in("w", &["reset", "-q", "--hard", &first]).ok();
    let before = w.copies("testing");
    w.push(&w.bob, "server2", "testing", &["-f", "main"])
        .fails_with("needs RW+");
    assert_eq!(w.copies("testing"), before);
    assert_eq!(w.head("server1", "testing"), bobs);
    // alice's RW+ on the master lets her rewind through server3.
    w.alice.git_in("w", &["reset", "-q", "--hard", &first]).ok();
    w.push(&w.alice, "server3", "testing", &["-f", "main"]).ok();
    assert_eq!(w.head("server1", "testing"), first);
    assert_eq!(w.head("server3", "testing"), first);
    w.cluster
        .wait_in_sync("testing", "server1", &["server2", "server3"]);
}

#[test]
fn without_the_option_a_slave_refuses_naming_the_master() {
    let w = world();
    w.alice.init_repo("w");
    w.push(&w.alice, "server1", "plain", &["main"]).ok();
    w.cluster
        .wait_in_sync("plain", "server1", &["server2", "server3"]);
    w.alice.commit("w", "two");
    let before = w.copies("plain");
    let err = w
        .push(&w.alice, "server2", "plain", &["main"])
        .fails_with(
            "FATAL: plain is mirrored from server1; server2 is a slave and accepts pushes only from its master.",
        );
    assert!(!err.contains("redirect"), "{err}");
    assert_eq!(w.copies("plain"), before);
    // info tells the two apart.
    let info = w.alice.ssh(w.s("server2"), "info").ok();
    assert!(
        info.contains(" RW+ plain  master: server1\n")
            && info.contains(" RW+ testing  master: server1 (pushes here are carried there)\n"),
        "{info}"
    );
    assert!(
        w.s("server2")
            .log()
            .contains("actor=alice verb=\"git-receive-pack\" repo=\"plain\" decision=\"deny\"")
    );
    // Nor does the master take a carried push of it, whoever carries it.
    let out = w
        .s("server2")
        .ssh_as_peer(w.s("server1"), "redirect-receive-pack alice 'plain'");
    let err = out.fails_with(
        "FATAL: server1 refuses plain from server2: it takes no redirected pushes here (mirror.redirect is off)",
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(w.copies("plain"), before);
}

#[test]
fn a_user_cannot_send_the_carried_form() {
    let w = world();
    w.alice.init_repo("w");
    w.push(&w.alice, "server1", "testing", &["main"]).ok();
    let before = w.copies("testing");
    for server in ["server1", "server2"] {
        for cmd in [
            "redirect-receive-pack alice 'testing'",
            "redirect-receive-pack bob 'testing'",
        ] {
            let err = w
                .alice
                .ssh(w.s(server), cmd)
                .fails_with("FATAL: unknown command \"redirect-receive-pack\"");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
        let log = w.s(server).log();
        assert!(
            log.contains(
                "actor=alice verb=\"redirect-receive-pack\" repo=\"testing\" user=\"bob\" decision=\"deny\" reason=unknown command"
            ),
            "{log}"
        );
    }
    assert_eq!(w.copies("testing"), before);
}

#[test]
fn a_peer_may_carry_pushes_only_for_repos_it_is_a_slave_of_to_their_master() {
    let w = world();
    w.alice.init_repo("w");
    w.push(&w.alice, "server1", "pair", &["main"]).ok();
    w.push(&w.alice, "server1", "testing", &["main"]).ok();
    let (s1, s2, s3) = (w.s("server1"), w.s("server2"), w.s("server3"));
    let (pair, testing) = (w.copies("pair"), w.copies("testing"));
    // server3 is no slave of pair.
    let err = s3
        .ssh_as_peer(s1, "redirect-receive-pack alice 'pair'")
        .fails_with(
            "FATAL: server1 refuses pair from server3: server3 is not among its slaves here",
        );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let log = s1.log();
    assert!(
        log.contains(
            "actor=server3 verb=\"redirect-receive-pack\" repo=\"pair\" user=\"alice\" decision=\"deny\" reason=server1 refuses pair from server3: server3 is not among its slaves here role=peer"
        ),
        "{log}"
    );
    // server2 masters nothing: a carried push sent there is refused naming the master.
    s3.ssh_as_peer(s2, "redirect-receive-pack alice 'testing'")
        .fails_with("server2 refuses testing from server3: its master here is server1 at epoch 0");
    // A slave carries pushes only of users the master knows.
    s2.ssh_as_peer(s1, "redirect-receive-pack mallory 'testing'")
        .fails_with("FATAL: mallory is not a registered user here");
    assert_eq!(w.copies("pair"), pair);
    assert_eq!(w.copies("testing"), testing);
}

/// Random bytes git cannot compress: a pack that takes a while over a slow link.
fn incompressible(path: PathBuf, len: usize) {
    let mut data = vec![0u8; len];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for b in &mut data {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    fs::write(path, data).unwrap();
}

#[test]
fn with_a_quorum_a_carried_push_still_waits_for_the_slave_it_came_through() {
    // server1's pushes reach server3 slowly; a quorum of one is met by server2 long before.
    let w = world_with(|c| {
        c.server("server3").throttle_pushes_from("server1", 16);
        c.server("server1").mirror_settings("sync_quorum = 1");
    });
    w.alice.init_repo("w");
    incompressible(w.alice.dir.path().join("w/blob"), 48 * 1024);
    w.alice.git_in("w", &["add", "blob"]).ok();
    w.alice.git_in("w", &["commit", "-q", "-m", "blob"]).ok();
    let head = w.alice.git_in("w", &["rev-parse", "HEAD"]).ok();
    let out = w.push(&w.alice, "server3", "testing", &["main"]);
    out.ok();
    assert!(
        out.err()
            .contains("remote: server1 ==== (testing) ===> server3"),
        "{}",
        out.err()
    );
    // alice reads from server3 next: it has her push already.
    assert_eq!(w.head("server3", "testing"), head.trim());
    w.cluster
        .wait_in_sync("testing", "server1", &["server2", "server3"]);
}

#[test]
fn after_a_promotion_pushes_are_carried_to_the_new_master() {
    let w = world();
    let (s1, s2, s3) = (w.s("server1"), w.s("server2"), w.s("server3"));
    w.alice.init_repo("w");
    w.push(&w.alice, "server1", "testing", &["main"]).ok();
    w.cluster
        .wait_in_sync("testing", "server1", &["server2", "server3"]);
    // server2 takes over while server3 cannot hear from it: server3 still knows server1.
    s3.cut_off_from(&["server2"]);
    let out = s2.gitmirror(&["promote", "testing"]);
    assert!(
        out.text()
            .contains("promoted testing: server2 masters it now at epoch 1"),
        "{}",
        out.text()
    );
    assert_eq!(
        s1.git("testing", &["config", "gitolite.mirror.master"])
            .ok()
            .trim(),
        "server2"
    );
    // server3 carries alice's push to server1, which masters it no more and says who does.
    w.alice.commit("w", "two");
    let before = w.copies("testing");
    w.push(&w.alice, "server3", "testing", &["main"])
        .fails_with(
            "FATAL: server1 refuses testing from server3: its master here is server2 at epoch 1",
        );
    assert_eq!(w.copies("testing"), before);
    // The old master, a slave now, carries her push to the new one.
    let out = w.push(&w.alice, "server1", "testing", &["main"]);
    out.ok();
    assert!(
        out.err()
            .contains("remote: server2 ==== (testing) ===> server1"),
        "{}",
        out.err()
    );
    let head = w.head("server2", "testing");
    assert_eq!(w.head("server1", "testing"), head);
    // Once server3 hears from server2, it carries pushes there too. (The partition was made
    // with forced commands, which bind at login: server2's connection opened during it goes.)
    s3.heal();
    s2.stop_daemon();
    s2.gitmirror(&["request-push", "testing"]).ok();
    w.cluster
        .wait_in_sync("testing", "server2", &["server1", "server3"]);
    w.alice.commit("w", "three");
    w.push(&w.alice, "server3", "testing", &["main"]).ok();
    assert_eq!(w.head("server3", "testing"), w.head("server2", "testing"));
    assert_eq!(w.head("server1", "testing"), w.head("server2", "testing"));
}
