//! Orphaned refs with real servers: refs a server kept under `refs/gitmirror/orphaned/` (made
//! here by hand with `git update-ref`, as a change of master leaves them) show in `status`
//! (text and JSON, with exit 2), are listed by `gitmirror orphans`, can be re-pushed to the
//! master the way the README says, and go with `orphans --drop`, which takes nothing else.
//! And `info` tells users which server masters each repo.

use std::time::Duration;

use gitmirror_testkit::*;

const RULES: &str = r#"
[repos.testing]
"RW+" = ["alice"]
mirror.master = "server1"
mirror.slaves = ["server2"]

[repos.solo]
"RW+" = ["alice"]
"#;

const KEPT: &str = "refs/gitmirror/orphaned/2/heads/main";

struct World {
    cluster: Cluster,
    alice: Client,
}

/// server1 masters testing, mirrored to server2; solo is local on each; testing is in sync.
fn world() -> World {
    let cluster = Cluster::new(&["server1", "server2"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    cluster.set_rules(RULES);
    alice.init_repo("w");
    let w = World { cluster, alice };
    let url = w.s1().url("testing");
    w.alice.git_in("w", &["push", "-q", &url, "main"]).ok();
    w.cluster.wait_in_sync("testing", "server1", &["server2"]);
    w
}

impl World {
    fn s1(&self) -> &Server {
        self.cluster.server("server1")
    }
    fn s2(&self) -> &Server {
        self.cluster.server("server2")
    }
}

/// `status` on `server` as text, with its exit code.
fn status_text(server: &Server) -> (String, String, Option<i32>) {
    let out = server.gitmirror(&["status"]);
    (out.text(), out.err(), out.status.code())
}

/// The `repos` entry of `repo` in `status --json`.
fn repo_status(json: &serde_json::Value, repo: &str) -> serde_json::Value {
    json["repos"]
        .as_array()
        .unwrap_or_else(|| panic!("no repos in {json}"))
        .iter()
        .find(|r| r["repo"] == repo)
        .cloned()
        .unwrap_or_else(|| panic!("no repos entry for {repo}: {json}"))
}

#[test]
fn orphaned_refs_show_until_rescued_and_dropped() {
    let w = world();
    let s2 = w.s2();
    let main = s2
        .git("testing", &["rev-parse", "main"])
        .ok()
        .trim()
        .to_string();
    // Work only server2 holds, kept as a change of master would have kept it.
    let lost = s2
        .git(
            "testing",
            &[
                "-c",
                "user.name=Bob Example",
                "-c",
                "user.email=bob@example.com",
                "commit-tree",
                "main^{tree}",
                "-p",
                "main",
                "-m",
                "lost work",
            ],
        )
        .ok()
        .trim()
        .to_string();
    s2.git("testing", &["update-ref", KEPT, &lost]).ok();

    // status --json: a row per repo, the kept ref in it, and exit 2.
    let (json, ok) = s2.status();
    assert!(!ok, "orphaned refs must make status exit non-zero: {json}");
    let testing = repo_status(&json, "testing");
    assert_eq!(testing["role"], "slave", "{testing}");
    assert_eq!(testing["master"], "server1", "{testing}");
    assert_eq!(testing["epoch"], 0, "{testing}");
    assert_eq!(
        testing["orphaned"],
        serde_json::json!([{ "ref": KEPT, "commit": lost }])
    );
    let solo = repo_status(&json, "solo");
    assert_eq!(solo["role"], "local", "{solo}");
    assert!(
        solo["master"].is_null() && solo["epoch"].is_null(),
        "{solo}"
    );
    assert_eq!(solo["orphaned"], serde_json::json!([]));
    // The keys monitoring already reads are still there.
    assert!(
        json["slaves"].is_array() && json["now"].is_number(),
        "{json}"
    );

    // The text: the repo's row, and a line nobody can miss with the command to run.
    let (text, err, code) = status_text(s2);
    assert_eq!(code, Some(2), "{text}{err}");
    assert!(err.contains("orphaned refs"), "{err}");
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("testing ") && l.contains(" slave "))
        .unwrap_or_else(|| panic!("no repo row for testing:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["testing", "slave", "server1", "0", "1"], "{text}");
    assert!(
        text.contains("ORPHANED: testing: 1 ref kept under refs/gitmirror/orphaned/")
            && text.contains("list with: gitmirror orphans testing\n"),
        "{text}"
    );

    // orphans: one line, the ref, the object, the commit's author and subject; exit 2.
    for args in [&["orphans"][..], &["orphans", "testing"]] {
        let out = s2.gitmirror(args);
        assert_eq!(out.status.code(), Some(2), "{}{}", out.text(), out.err());
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let words: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(words[..3], ["testing", KEPT, lost.as_str()], "{text}");
        assert!(
            lines[0].ends_with(" Bob Example <bob@example.com>: lost work"),
            "{text}"
        );
    }
    let out = s2.gitmirror(&["orphans", "solo"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.err());
    assert_eq!(out.text(), "");
    s2.gitmirror(&["orphans", "nope"])
        .fails_with("gitmirror: nope: no such repo here");
    // A mistyped home is an error, not a server with nothing orphaned.
    s2.gitmirror(&["--home", "/nonexistent", "orphans"])
        .fails_with("gitmirror.toml");

    // --drop takes orphaned refs only, one line of refusal, nothing touched.
    for (bad, why) in [
        (
            "refs/heads/main",
            "\"refs/heads/main\" is not an orphaned ref",
        ),
        (
            "refs/gitmirror/orphaned/../../heads/main",
            "is not an orphaned ref",
        ),
        ("refs/gitmirror/orphaned/9/heads/main", "no orphaned ref"),
    ] {
        let out = s2.gitmirror(&["orphans", "--drop", "testing", bad]);
        let err = out.fails_with(why);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    // A ref without --drop is a usage error, not a drop.
    let out = s2.gitmirror(&["orphans", "testing", KEPT]);
    assert!(!out.status.success(), "{}", out.text());
    assert_eq!(
        s2.git("testing", &["rev-parse", "main", KEPT]).ok(),
        format!("{main}\n{lost}\n")
    );

    // The README's rescue: from server2's disk, with a user's key, to the master under a
    // new name; the master's push brings it back to server2 as an ordinary branch.
    let git_dir = s2.repo_path("testing");
    w.alice
        .git(&[
            "--git-dir",
            git_dir.to_str().unwrap(),
            "push",
            "-q",
            &w.s1().url("testing"),
            &format!("{KEPT}:refs/heads/rescued/main"),
        ])
        .ok();
    assert_eq!(
        w.s1()
            .git("testing", &["rev-parse", "rescued/main"])
            .ok()
            .trim(),
        lost
    );
    w.cluster.wait_in_sync("testing", "server1", &["server2"]);

    let out = s2.gitmirror(&["orphans", "--drop", "testing", KEPT]).ok();
    assert_eq!(
        out,
        format!("dropped {KEPT} from testing; it held {lost}\n")
    );
    let out = s2.gitmirror(&["orphans"]);
    assert_eq!(out.status.code(), Some(0), "{}", out.err());
    assert_eq!(out.text(), "");
    let (json, ok) = s2.status();
    assert!(ok, "nothing left to alert about: {json}");
    assert_eq!(
        repo_status(&json, "testing")["orphaned"],
        serde_json::json!([])
    );
    let (text, err, code) = status_text(s2);
    assert_eq!(code, Some(0), "{text}{err}");
    assert!(!text.contains("ORPHANED: "), "{text}");
}

#[test]
fn the_master_sees_its_role_and_users_see_each_repos_master() {
    let w = world();
    // The master's row, once server2's confirmation is recorded (status exits 0 then).
    wait_for("status in sync", Duration::from_secs(30), || {
        w.s1().status().1
    });
    let (json, _) = w.s1().status();
    let testing = repo_status(&json, "testing");
    assert_eq!(
        (&testing["role"], &testing["master"], &testing["epoch"]),
        (&"master".into(), &"server1".into(), &0.into()),
        "{testing}"
    );
    assert_eq!(testing["orphaned"], serde_json::json!([]));
    assert_eq!(repo_status(&json, "solo")["role"], "local");

    let on_master = w.alice.ssh(w.s1(), "info").ok();
    assert!(
        on_master.contains(" RW+ testing  master: server1 (here)\n"),
        "{on_master}"
    );
    assert!(on_master.contains(" RW+ solo\n"), "{on_master}");
    let on_slave = w.alice.ssh(w.s2(), "info").ok();
    assert!(
        on_slave.contains(" RW+ testing  master: server1\n"),
        "{on_slave}"
    );
    assert!(on_slave.contains(" RW+ solo\n"), "{on_slave}");
    // A master changed by hand (as a promotion changes it) is what users are told.
    w.s2()
        .git("testing", &["config", "gitolite.mirror.master", "server3"])
        .ok();
    let on_slave = w.alice.ssh(w.s2(), "info").ok();
    assert!(
        on_slave.contains(" RW+ testing  master: server3\n"),
        "{on_slave}"
    );
}
