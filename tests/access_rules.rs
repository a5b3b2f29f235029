//! The access language of docs/access.md, with real sshd and git, two servers: rules per ref
//! and deny rules decide each ref of a push, in the order written, as `gitmirror access`
//! answers the same question; user-created repos are created by a push (or `create`), their
//! creator hands out roles with `perms`, and the repo, its creator and its perms reach the
//! slave; mistakes in the language are refused at compile with their line.

use std::process::Output;
use std::time::Duration;

use gitmirror_testkit::*;

const RULES: &str = r#"
[groups]
devs = ["alice", "bob", "carol"]
leads = ["alice"]

[repo-groups]
web = ["web/site"]

[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2"]

[repos.testing]
"RW+" = ["@leads"]
rules = [
  "- master = bob",
  "- refs/tags/ = carol",
  "RW = @devs",
  "- refs/heads/never = carol",
]

[repos."@web"]
R = ["carol"]
rules = ["RW refs/heads/site/ = bob"]

[repos."users/CREATOR/*"]
C = ["@devs"]
RW = ["WRITERS"]
R = ["READERS"]
"#;

struct World {
    cluster: Cluster,
    alice: Client,
    bob: Client,
    carol: Client,
}

fn world() -> World {
    let cluster = Cluster::new(&["server1", "server2"]);
    let [alice, bob, carol] = ["alice", "bob", "carol"].map(Client::new);
    for c in [&alice, &bob, &carol] {
        cluster.add_user(c);
        c.init_repo("w");
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

    fn push(&self, who: &Client, repo: &str, args: &[&str]) -> Output {
        let url = self.s("server1").url(repo);
        let mut all = vec!["push", url.as_str()];
        all.extend_from_slice(args);
        who.git_in("w", &all)
    }

    fn access(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["access"];
        all.extend_from_slice(args);
        let out = self.s("server1").gitmirror(&all);
        (out.status.code().unwrap_or(-1), out.text() + &out.err())
    }
}

#[test]
fn each_ref_is_decided_by_the_first_rule_that_matches_as_access_says() {
    let w = world();
    // alice (a lead, RW+ first) creates master and a dev branch.
    w.push(
        &w.alice,
        "testing",
        &["HEAD:refs/heads/master", "HEAD:refs/heads/dev"],
    )
    .ok();
    // bob may write dev but not master: the deny rule before RW = @devs decides.
    w.bob
        .git_in(
            "w",
            &["fetch", "-q", &w.s("server1").url("testing"), "master"],
        )
        .ok();
    w.bob
        .git_in("w", &["reset", "-q", "--hard", "FETCH_HEAD"])
        .ok();
    w.bob.commit("w", "b1");
    w.push(&w.bob, "testing", &["HEAD:refs/heads/dev"]).ok();
    let refused = w
        .push(&w.bob, "testing", &["HEAD:refs/heads/master"])
        .fails_with("denied by repos.toml line");
    assert!(refused.contains("- refs/heads/master = bob"), "{refused}");
    // Fast-forward only: a rewind needs +, which RW does not give.
    w.bob.git_in("w", &["reset", "-q", "--hard", "HEAD~1"]).ok();
    w.bob.commit("w", "b2");
    w.push(&w.bob, "testing", &["+HEAD:refs/heads/dev"])
        .fails_with("needs RW+");
    // carol may push branches but no tag.
    w.carol.git_in("w", &["tag", "v1"]).ok();
    w.push(&w.carol, "testing", &["refs/tags/v1"])
        .fails_with("- refs/tags/ = carol");
    // A deny rule after the rule that allows decides nothing: order matters.
    let (code, text) = w.access(&["testing", "carol", "W", "refs/heads/never"]);
    assert_eq!(code, 0, "{text}");
    // A repo-level read check skips deny rules that name refs: bob reads testing.
    w.bob.clone(w.s("server1"), "testing", "t").ok();

    // The same answers from the command line, with the rule and its line.
    let (code, text) = w.access(&["testing", "bob", "W", "refs/heads/master"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("DENIED by repos.toml:"), "{text}");
    assert!(text.contains("- refs/heads/master = bob"), "{text}");
    let (code, text) = w.access(&["testing", "bob", "W", "refs/heads/dev"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("RW = @devs"), "{text}");
    assert_eq!(
        w.access(&["testing", "alice", "+", "refs/heads/master"]).0,
        0
    );
    assert_eq!(w.access(&["testing", "bob", "R"]).0, 0);
    // A short name is a branch, as gitolite's access takes it.
    assert_eq!(w.access(&["testing", "bob", "W", "master"]).0, 1);
    assert_eq!(w.access(&["testing", "mallory", "R"]).0, 1);
    // Repo groups bring their rules.
    assert_eq!(
        w.access(&["web/site", "bob", "W", "refs/heads/site/a"]).0,
        0
    );
    assert_eq!(w.access(&["web/site", "bob", "W", "refs/heads/main"]).0, 1);
    assert_eq!(w.access(&["web/site", "carol", "R"]).0, 0);
    assert!(w.s("server1").repo_path("web/site").exists());
    // A wrong question is an error of its own.
    for bad in [
        &["testing", "bob", "X"][..],
        &["../x", "bob", "R"],
        &["testing", "bob", "W", "refs/heads/a..b"],
    ] {
        let (code, text) = w.access(bad);
        assert_eq!(code, 2, "{bad:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}

#[test]
fn users_create_repos_and_share_them_and_the_slave_follows() {
    let w = world();
    let repo = "users/alice/proj";
    // Nobody else may create under alice's name: the answer any missing repo gets.
    let missing = w
        .push(&w.bob, repo, &["HEAD:refs/heads/main"])
        .fails_with("no such repo");
    assert!(!w.s("server1").repo_path(repo).exists(), "{missing}");
    // alice creates it by pushing.
    w.push(&w.alice, repo, &["HEAD:refs/heads/main"]).ok();
    let creator = w.s("server1").repo_path(repo).join("gl-creator");
    assert_eq!(std::fs::read_to_string(&creator).unwrap(), "alice\n");
    // The slave gets the repo, its creator and its content.
    w.cluster.wait_in_sync(repo, "server1", &["server2"]);
    let slave_copy = w.s("server2").repo_path(repo);
    assert_eq!(
        std::fs::read_to_string(slave_copy.join("gl-creator")).unwrap(),
        "alice\n"
    );
    // bob may not read it until alice says so.
    w.bob
        .clone(w.s("server1"), repo, "p1")
        .fails_with("no such repo");
    let perms = w
        .alice
        .ssh(w.s("server1"), &format!("perms {repo} + READERS bob"))
        .ok();
    assert_eq!(perms, "CREATOR alice\nREADERS bob\n");
    w.bob.clone(w.s("server1"), repo, "p2").ok();
    // The change reaches the slave: bob reads there too.
    wait_for("perms on the slave", Duration::from_secs(30), || {
        std::fs::read_to_string(slave_copy.join("gl-perms")).is_ok_and(|p| p == "READERS bob\n")
    });
    w.bob.clone(w.s("server2"), repo, "p3").ok();
    // Readers cannot push; only the creator changes perms.
    w.push(&w.bob, repo, &["HEAD:refs/heads/bob"])
        .fails_with("may read");
    w.bob
        .ssh(w.s("server1"), &format!("perms {repo} + WRITERS bob"))
        .fails_with("only alice");
    let listed = w.bob.ssh(w.s("server1"), &format!("perms {repo}")).ok();
    assert_eq!(listed, "CREATOR alice\nREADERS bob\n");
    // info lists where a user may create repos, and the repos they may read.
    let info = w.bob.ssh(w.s("server1"), "info").ok();
    assert!(info.contains(" C   users/CREATOR/*\n"), "{info}");
    assert!(info.contains(" R   users/alice/proj"), "{info}");
    // Whether a repo exists is nobody's business but its readers': mallory learns nothing.
    let mallory = Client::new("mallory");
    w.cluster.add_user(&mallory);
    mallory
        .ssh(w.s("server1"), &format!("create {repo}"))
        .fails_with("no such repo");
    let (code, text) = w.access(&[repo, "alice", "C"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("DENIED: it exists"), "{text}");
    // `create` without a push; twice is refused.
    w.carol.ssh(w.s("server1"), "create users/carol/empty").ok();
    w.carol
        .ssh(w.s("server1"), "create users/carol/empty")
        .fails_with("exists already");
    w.cluster
        .wait_in_sync("users/carol/empty", "server1", &["server2"]);
    // A slave never creates one for a user.
    w.alice
        .ssh(w.s("server2"), "create users/alice/other")
        .fails_with("master, server1");
}

#[test]
fn mistakes_in_the_language_are_refused_with_their_line() {
    let w = world();
    let before = w.s("server1").gitmirror(&["access", "testing", "bob", "R"]);
    for (text, needle) in [
        (
            "[repos.x]\nrules = [\"RWX = a\"]\n",
            "repos.toml:2: x: unknown permission",
        ),
        ("[repos.x]\nrules = [\"RW a(b = alice\"]\n", "repos.toml:2:"),
        ("[repos.x]\nRW = [\"CREATOR\"]\n", "repos.toml:2:"),
        ("[repos.\"u/../*\"]\nC = [\"alice\"]\n", "repos.toml:1:"),
        (
            "[repos.x]\n\"RW+\" = [\"@all\"]\nrules = [\"- = bob\"]\n",
            "repos.toml:3: x: deny rule",
        ),
    ] {
        std::fs::write(w.s("server1").home().join("repos.toml"), text).unwrap();
        let err = w.s("server1").gitmirror(&["compile"]).fails_with(needle);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // Nothing changed: the compiled rules still decide as before.
    let after = w.s("server1").gitmirror(&["access", "testing", "bob", "R"]);
    assert_eq!(before.text(), after.text());
}

#[test]
fn a_slave_without_a_matching_pattern_does_not_create_user_repos() {
    let w = world();
    let (head, _) = RULES.split_once("[repos.\"users/CREATOR/*\"]").unwrap();
    w.s("server2").set_rules(head);
    w.push(&w.alice, "users/alice/x", &["HEAD:refs/heads/main"])
        .ok();
    wait_for("the slave's refusal", Duration::from_secs(30), || {
        w.s("server1")
            .gitmirror(&["ops"])
            .text()
            .contains("no pattern for user-created repos")
    });
    assert!(!w.s("server2").repo_path("users/alice/x").exists());
}
