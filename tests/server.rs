//! One server behind a real sshd, driven by the real ssh and git clients: clone, push,
//! fetch, protocol v2, `info`, and the R / RW / RW+ / group rules.

use std::fs;

use gitmirror_testkit::*;

const RULES: &str = r#"
[groups]
devs = ["bob", "erin"]

[repos.testing]
"RW+" = ["alice"]
RW = ["@devs"]
R = ["carol"]

[repos."team/tools"]
RW = ["alice"]
"#;

struct World {
    server: Server,
    alice: Client,
    bob: Client,
    carol: Client,
    dave: Client,
}

/// A server with four registered users (dave has no rules) and the rules above compiled.
fn world() -> World {
    let server = Server::start("server1");
    let [alice, bob, carol, dave] = ["alice", "bob", "carol", "dave"].map(Client::new);
    for c in [&alice, &bob, &carol, &dave] {
        server.add_user(&c.name, &c.key);
    }
    server.set_rules(RULES);
    World {
        server,
        alice,
        bob,
        carol,
        dave,
    }
}

/// alice pushes `main` with one commit to testing; returns the commit.
fn seed(w: &World) -> String {
    let head = w.alice.init_repo("seed");
    w.alice
        .git_in("seed", &["push", "-q", &w.server.url("testing"), "main"])
        .ok();
    head
}

#[test]
fn clone_push_fetch_roundtrip() {
    let w = world();
    let head = seed(&w);
    assert_eq!(
        w.server.git("testing", &["rev-parse", "main"]).ok().trim(),
        head
    );
    // bob (RW through @devs) clones, commits, pushes; carol (R) fetches it.
    w.bob.clone(&w.server, "testing", "t").ok();
    let next = w.bob.commit("t", "two");
    w.bob.git_in("t", &["push", "-q", "origin", "main"]).ok();
    w.carol.clone(&w.server, "testing", "c").ok();
    w.bob.commit("t", "three");
    w.bob.git_in("t", &["push", "-q", "origin", "main"]).ok();
    w.carol.git_in("c", &["fetch", "-q"]).ok();
    let fetched = w.carol.git_in("c", &["rev-parse", "origin/main"]).ok();
    assert_eq!(
        fetched.trim(),
        w.server.git("testing", &["rev-parse", "main"]).ok().trim()
    );
    assert_ne!(fetched.trim(), next);
    // The hook logged the push with the pusher's identity.
    let log = w.server.log();
    assert!(
        log.contains("ref updated actor=bob repo=testing reference=refs/heads/main"),
        "{log}"
    );
}

#[test]
fn protocol_v2_and_v0_both_work() {
    let w = world();
    seed(&w);
    let trace = |version: &str, dir: &str| {
        let out = w.carol.git_env(
            ".",
            &[
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                &w.server.url("testing"),
                dir,
            ],
            &[("GIT_TRACE_PACKET", "1")],
        );
        out.ok();
        out.err()
    };
    let v2 = trace("2", "v2");
    assert!(v2.contains("< version 2"), "no v2 handshake:\n{v2}");
    let v0 = trace("0", "v0");
    assert!(!v0.contains("< version 2"), "v0 clone spoke v2:\n{v0}");
    assert!(v0.contains("refs/heads/main"), "{v0}");
    for dir in ["v2", "v0"] {
        assert!(w.carol.dir.path().join(dir).join("README").exists());
    }
}

#[test]
fn read_only_user_cannot_push() {
    let w = world();
    seed(&w);
    w.carol.clone(&w.server, "testing", "c").ok();
    w.carol.commit("c", "x");
    let err = w
        .carol
        .git_in("c", &["push", "origin", "main"])
        .fails_with("carol may read testing but not push to it");
    assert!(err.contains("FATAL:"), "{err}");
}

#[test]
fn rw_user_cannot_rewind_delete_or_move_tags() {
    let w = world();
    let first = seed(&w);
    w.bob.clone(&w.server, "testing", "b").ok();
    w.bob.commit("b", "two");
    w.bob.git_in("b", &["push", "-q", "origin", "main"]).ok();
    w.bob.git_in("b", &["tag", "v1"]).ok();
    w.bob.git_in("b", &["push", "-q", "origin", "v1"]).ok();
    w.bob
        .git_in("b", &["push", "-q", "origin", "main:side"])
        .ok();
    let before = w.server.git("testing", &["for-each-ref"]).ok();

    w.bob.git_in("b", &["reset", "-q", "--hard", &first]).ok();
    w.bob
        .git_in("b", &["push", "-f", "origin", "main"])
        .fails_with("rewinding refs/heads/main");
    w.bob
        .git_in("b", &["push", "origin", ":side"])
        .fails_with("deleting refs/heads/side");
    w.bob.git_in("b", &["tag", "-f", "v1", &first]).ok();
    w.bob
        .git_in("b", &["push", "-f", "origin", "v1"])
        .fails_with("moving tag refs/tags/v1");
    assert_eq!(w.server.git("testing", &["for-each-ref"]).ok(), before);

    // A new branch and a fast-forward are fine.
    w.bob
        .git_in("b", &["push", "-q", "origin", "HEAD:feature"])
        .ok();
}

#[test]
fn rw_plus_user_can_rewind_and_delete() {
    let w = world();
    let first = seed(&w);
    w.alice.commit("seed", "two");
    w.alice.git_in("seed", &["tag", "v1"]).ok();
    let url = w.server.url("testing");
    w.alice
        .git_in("seed", &["push", "-q", &url, "main", "v1", "main:side"])
        .ok();
    w.alice
        .git_in("seed", &["reset", "-q", "--hard", &first])
        .ok();
    w.alice.git_in("seed", &["tag", "-f", "v1"]).ok();
    w.alice
        .git_in("seed", &["push", "-q", "-f", &url, "main", "v1", ":side"])
        .ok();
    assert_eq!(
        w.server.git("testing", &["rev-parse", "main", "v1"]).ok(),
        format!("{first}\n{first}\n")
    );
    w.server
        .git("testing", &["rev-parse", "--verify", "-q", "side"])
        .fails_with("");
}

#[test]
fn user_without_rules_sees_nothing_and_missing_equals_forbidden() {
    let w = world();
    seed(&w);
    let forbidden = w.dave.clone(&w.server, "testing", "x").err();
    let missing = w.dave.clone(&w.server, "no-such-repo", "y").err();
    assert!(forbidden.contains("FATAL: testing: no such repo, or dave may not read it"));
    assert_eq!(
        forbidden.replace("testing", "R"),
        missing.replace("no-such-repo", "R"),
        "a forbidden repo and a missing one must get the same answer"
    );
    // Even alice gets that answer for a repo that does not exist.
    w.alice
        .clone(&w.server, "nope", "z")
        .fails_with("FATAL: nope: no such repo, or alice may not read it");
}

#[test]
fn unknown_key_is_refused_by_sshd() {
    let w = world();
    let mallory = Client::new("mallory");
    let out = mallory.ssh(&w.server, "info");
    assert_eq!(out.status.code(), Some(255), "{}", out.err());
    assert!(
        out.err().contains("Permission denied (publickey)"),
        "{}",
        out.err()
    );
    mallory
        .clone(&w.server, "testing", "m")
        .fails_with("Permission denied");
    assert!(!w.server.log().contains("actor=mallory"));
}

#[test]
fn info_lists_readable_repos_with_access() {
    let w = world();
    let alice = w.alice.ssh(&w.server, "info").ok();
    assert!(
        alice.starts_with("hello alice, this is gitmirror "),
        "{alice}"
    );
    assert!(alice.contains(" on server1\n"), "{alice}");
    assert!(alice.contains(" RW+ testing\n"), "{alice}");
    assert!(alice.contains(" RW  team/tools\n"), "{alice}");
    let carol = w.carol.ssh(&w.server, "info").ok();
    assert!(carol.contains(" R   testing\n"), "{carol}");
    assert!(!carol.contains("team/tools"), "{carol}");
    let dave = w.dave.ssh(&w.server, "info").ok();
    assert!(!dave.contains("testing"), "{dave}");
    // Group membership: erin has RW through @devs but is not registered, bob is.
    let bob = w.bob.ssh(&w.server, "info").ok();
    assert!(bob.contains(" RW  testing\n"), "{bob}");
}

#[test]
fn nested_repo_names_work_over_ssh() {
    let w = world();
    w.alice.init_repo("tools");
    w.alice
        .git_in(
            "tools",
            &["push", "-q", &w.server.url("team/tools"), "main"],
        )
        .ok();
    assert!(
        w.server
            .repo_path("team/tools")
            .join("refs/heads/main")
            .exists()
    );
}

#[test]
fn every_access_decision_is_logged() {
    let w = world();
    seed(&w);
    w.carol.clone(&w.server, "testing", "c").ok();
    w.dave.clone(&w.server, "testing", "d").fails_with("FATAL");
    let log = w.server.log();
    assert!(
        log.contains(
            "access actor=carol verb=\"git-upload-pack\" repo=\"testing\" decision=\"allow\""
        ),
        "{log}"
    );
    assert!(
        log.contains("access actor=dave verb=\"git-upload-pack\" repo=\"testing\" decision=\"deny\" reason=testing: no such repo"),
        "{log}"
    );
}

#[test]
fn slave_refuses_user_push_naming_master() {
    let w = world();
    seed(&w);
    // Mark testing as mastered elsewhere, by hand, as an administrator may.
    w.server
        .git("testing", &["config", "gitolite.mirror.master", "server9"])
        .ok();
    let before = w.server.git("testing", &["for-each-ref"]).ok();
    w.alice.commit("seed", "more");
    w.alice
        .git_in("seed", &["push", &w.server.url("testing"), "main"])
        .fails_with(
            "FATAL: testing is mirrored from server9; server1 is a slave and accepts pushes only from its master.",
        );
    assert_eq!(w.server.git("testing", &["for-each-ref"]).ok(), before);
    // Reads from a slave still work.
    w.carol.clone(&w.server, "testing", "c").ok();
}

#[test]
fn compile_creates_repos_with_fsck_and_hooks() {
    let w = world();
    let path = w.server.repo_path("testing");
    assert_eq!(
        w.server
            .git("testing", &["config", "receive.fsckObjects"])
            .ok()
            .trim(),
        "true"
    );
    for hook in ["pre-receive", "post-receive"] {
        let text = fs::read_to_string(path.join("hooks").join(hook)).unwrap();
        assert!(
            text.contains(&format!("{} hook {hook}", sandbox().bin.display())),
            "{text}"
        );
    }
    // Compiling again changes nothing.
    let before = snapshot(w.server.home());
    w.server.gitmirror(&["compile"]).ok();
    assert_unchanged(&before, &snapshot(w.server.home()));
}

#[test]
fn rw_user_is_confined_to_branches_tags_and_notes() {
    let w = world();
    let first = seed(&w);
    w.bob.clone(&w.server, "testing", "b").ok();
    let before = w.server.git("testing", &["for-each-ref"]).ok();
    // refs/replace would change what every fetcher sees; other namespaces need RW+ too.
    w.bob
        .git_in(
            "b",
            &["push", "origin", &format!("{first}:refs/replace/{first}")],
        )
        .fails_with("updating refs/replace/");
    w.bob
        .git_in("b", &["push", "origin", "main:refs/custom/x"])
        .fails_with("outside refs/heads, refs/tags and refs/notes");
    // An atomic push with one allowed and one refused update changes nothing at all.
    w.bob.commit("b", "two");
    w.bob
        .git_in(
            "b",
            &["push", "--atomic", "origin", "main:newbranch", ":main"],
        )
        .fails_with("deleting refs/heads/main");
    assert_eq!(w.server.git("testing", &["for-each-ref"]).ok(), before);
    // alice (RW+) may.
    let url = w.server.url("testing");
    w.alice
        .git_in("seed", &["push", "-q", &url, "main:refs/custom/x"])
        .ok();
}

#[test]
fn checks_hold_for_a_repo_without_gitmirrors_hooks() {
    let w = world();
    let first = seed(&w);
    // As if the repo had been created by hand or migrated in: no hooks, no fsck setting.
    let repo = w.server.repo_path("testing");
    fs::remove_dir_all(repo.join("hooks")).unwrap();
    w.server
        .git("testing", &["config", "--unset", "receive.fsckObjects"])
        .ok();
    w.bob.clone(&w.server, "testing", "b").ok();
    w.bob.commit("b", "two");
    w.bob.git_in("b", &["push", "-q", "origin", "main"]).ok();
    w.bob.git_in("b", &["reset", "-q", "--hard", &first]).ok();
    w.bob
        .git_in("b", &["push", "-f", "origin", "main"])
        .fails_with("rewinding refs/heads/main");
}

#[test]
fn refs_gitmirror_is_the_servers_own_even_for_rw_plus() {
    let w = world();
    seed(&w);
    let url = w.server.url("testing");
    w.alice
        .git_in("seed", &["push", &url, "main:refs/gitmirror/diverged/x"])
        .fails_with("hidden ref");
    w.server
        .git(
            "testing",
            &["rev-parse", "--verify", "-q", "refs/gitmirror/diverged/x"],
        )
        .fails_with("");
    // Refs the server keeps there are not shown to users either.
    w.server
        .git(
            "testing",
            &["update-ref", "refs/gitmirror/diverged/t/heads/main", "main"],
        )
        .ok();
    let refs = w.alice.git_in("seed", &["ls-remote", &url]).ok();
    assert!(!refs.contains("refs/gitmirror"), "{refs}");
}
