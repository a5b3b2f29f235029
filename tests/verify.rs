//! `gitmirror verify`, with real servers: drift no push announced (a slave's repo restored
//! from an old backup, a ref deleted by hand on the slave, a repo gone from the slave) is
//! found, named, and repaired by `verify --repair` and by the daemon's own periodic run;
//! a slave answering garbage is refused and nothing is changed. The master is never
//! changed by any of it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gitmirror_testkit::*;

const RULES: &str = r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2"]
"RW+" = ["alice"]

[repos.rewound]
[repos.deleted]
[repos.gone]
[repos.fine]
"#;

const REPOS: &[&str] = &["rewound", "deleted", "gone", "fine"];

struct World {
    cluster: Cluster,
    alice: Client,
}

/// server1 masters four repos mirrored to server2, all in sync and confirmed, with `mirror`
/// lines added to server1's `[mirror]` settings.
fn world(mirror: &str) -> World {
    let cluster = Cluster::new(&["server1", "server2"]);
    cluster.server("server1").mirror_settings(&format!(
        "retry_initial_secs = 0.1\nretry_max_secs = 0.5\n{mirror}"
    ));
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    cluster.set_rules(RULES);
    // compile started a daemon with the old settings: the next command starts one afresh.
    cluster.server("server1").stop_daemon();
    alice.init_repo("w");
    let w = World { cluster, alice };
    for repo in REPOS {
        w.push(repo, &["main"]);
    }
    w.alice.git_in("w", &["branch", "topic"]).ok();
    w.push("deleted", &["topic"]);
    w.all_in_sync();
    w
}

impl World {
    fn s1(&self) -> &Server {
        self.cluster.server("server1")
    }
    fn s2(&self) -> &Server {
        self.cluster.server("server2")
    }

    fn push(&self, repo: &str, refs: &[&str]) {
        let url = self.s1().url(repo);
        let mut args = vec!["push", "-q", url.as_str()];
        args.extend_from_slice(refs);
        self.alice.git_in("w", &args).ok();
    }

    /// Every repo identical on server2, and server1 has recorded it (so that only verify
    /// can see what is done to server2 next).
    fn all_in_sync(&self) {
        for repo in REPOS {
            self.cluster.wait_in_sync(repo, "server1", &["server2"]);
            wait_for("status in sync", Duration::from_secs(30), || {
                self.s1().slave_status(repo, "server2")["state"] == "in sync"
            });
        }
    }

    /// Drift behind gitmirror's back on server2: `rewound` restored from a backup taken one
    /// push ago, `topic` deleted by hand from `deleted`, `gone` removed entirely.
    fn break_slave(&self) -> String {
        let backup = self.s2().sshd_dir.path().join("rewound-backup.git");
        let live = self.s2().repo_path("rewound");
        copy_dir(&live, &backup);
        self.alice.commit("w", "later");
        self.push("rewound", &["main"]);
        self.cluster
            .wait_in_sync("rewound", "server1", &["server2"]);
        wait_for("the later push recorded", Duration::from_secs(30), || {
            self.s1().slave_status("rewound", "server2")["state"] == "in sync"
        });
        // No daemon runs while the slave is damaged, so one verify run sees all of it: with
        // a daemon verifying every second, the damage could fall across runs, and status
        // keeps only the last run's repairs.
        self.s1().stop_daemon();
        std::fs::remove_dir_all(&live).unwrap();
        copy_dir(&backup, &live);
        self.s2()
            .git("deleted", &["update-ref", "-d", "refs/heads/topic"])
            .ok();
        std::fs::remove_dir_all(self.s2().repo_path("gone")).unwrap();
        self.s1()
            .git("rewound", &["rev-parse", "main"])
            .ok()
            .trim()
            .to_string()
    }

    /// server1's refs of every repo, and its repositories on disk.
    fn master_state(&self) -> (Vec<String>, BTreeMap<PathBuf, Vec<u8>>) {
        let refs = REPOS.iter().map(|r| self.s1().refs(r)).collect();
        (refs, snapshot(&self.s1().home().join("repositories")))
    }

    fn verify(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["verify"];
        all.extend_from_slice(args);
        self.s1().gitmirror(&all)
    }
}

/// `cp -a`, as the server's account would restore a backup.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// What `verify` says about the three faults, checked word for word.
fn assert_finds_the_drift(out: &std::process::Output, new_main: &str) {
    let text = out.text();
    assert!(!out.status.success(), "verify must fail on drift:\n{text}");
    assert!(text.contains("fine server2 ok\n"), "{text}");
    assert!(text.contains("rewound server2 drifted\n"), "{text}");
    assert!(
        text.contains(&format!("    refs/heads/main master={new_main} server2=")),
        "{text}"
    );
    assert!(text.contains("deleted server2 drifted\n"), "{text}");
    assert!(
        text.contains("    refs/heads/topic missing on server2 (master="),
        "{text}"
    );
    assert!(text.contains("gone server2 missing\n"), "{text}");
}

#[test]
fn verify_finds_drift_and_repair_fixes_it_without_touching_the_master() {
    let w = world("");
    let new_main = w.break_slave();
    let before = w.master_state();

    // The recorded confirmations still say all is well: only asking the slave tells.
    let unchanged = w.s1().gitmirror(&["request-push", "--all"]);
    assert!(
        unchanged.text().contains("unchanged since"),
        "{}",
        unchanged.text()
    );

    let out = w.verify(&["--all"]);
    assert_finds_the_drift(&out, &new_main);
    // The summary counts what was ok and what not; stderr, not a terminal here, had plain
    // progress lines (the first one at once).
    assert!(
        out.text().ends_with("verify: 1 succeeded, 3 failed\n"),
        "{}",
        out.text()
    );
    let err = out.err();
    assert!(
        err.contains("verify: 1 succeeded, 0 failed so far\n")
            || err.contains("verify: 0 succeeded, 1 failed so far\n"),
        "{err}"
    );
    // Looking repairs nothing.
    assert!(!w.s2().repo_path("gone").exists());
    let (v, _) = w.s1().status();
    assert_eq!(v["verified"]["server2"]["counts"]["drifted"], 2, "{v}");
    assert_eq!(v["verified"]["server2"]["counts"]["missing"], 1, "{v}");

    // One repo at a time works too.
    let one = w.verify(&["fine"]);
    assert_eq!(one.ok(), "fine server2 ok\nverified: 1 ok\n");

    let repair = w.verify(&["--all", "--repair"]);
    assert_finds_the_drift(&repair, &new_main);
    let text = repair.text();
    for repo in ["rewound", "deleted", "gone"] {
        assert!(
            text.contains(&format!("repaired {repo} on server2\n")),
            "{text}"
        );
    }
    assert!(!text.contains("repaired fine"), "{text}");
    w.all_in_sync();
    let again = w.verify(&["--all", "--quiet"]);
    assert!(again.ok().contains("verified: 4 ok\n"), "{}", again.text());
    assert!(again.text().ends_with("verify: 4 succeeded, 0 failed\n"));
    assert_eq!(again.err(), "", "--quiet shows no progress");
    let (v, _) = w.s1().status();
    let s2 = &v["verified"]["server2"];
    assert_eq!(s2["counts"]["ok"], 4, "{v}");
    // The last run found nothing; the repairs of the run before are kept.
    assert_eq!(
        s2["repaired"].to_string(),
        r#"["deleted","gone","rewound"]"#,
        "{v}"
    );
    assert_eq!(w.master_state(), before, "the master changed");
}

#[test]
fn the_daemon_verifies_and_repairs_by_itself() {
    let w = world("verify_interval = 1");
    w.break_slave();
    let before = w.master_state();
    let _daemon = w.s1().start_daemon();
    for repo in REPOS {
        w.cluster.wait_in_sync(repo, "server1", &["server2"]);
    }
    // Logged with the refs involved, and recorded for status.
    wait_for("drift logged", Duration::from_secs(30), || {
        let log = w.s1().log();
        log.contains("slave has drifted from this master")
            && log.contains("refs/heads/topic missing on server2")
    });
    // Recorded for status: the run that found the damage repaired all of it, and a later
    // run found everything ok.
    wait_for("repairs recorded", Duration::from_secs(30), || {
        let (v, _) = w.s1().status();
        let s2 = &v["verified"]["server2"];
        s2["counts"]["ok"] == 4 && s2["repaired"].as_array().is_some_and(|r| !r.is_empty())
    });
    let (v, _) = w.s1().status();
    assert_eq!(
        v["verified"]["server2"]["repaired"].to_string(),
        r#"["deleted","gone","rewound"]"#,
        "{v}"
    );
    let log = w.s1().log();
    for repo in ["rewound", "deleted"] {
        assert!(
            log.contains(&format!(
                "slave has drifted from this master repo={repo} slave=server2 refs="
            )),
            "{log}"
        );
    }
    assert!(
        log.contains("slave is missing the repo repo=gone slave=server2"),
        "{log}"
    );
    let table = w.s1().gitmirror(&["status"]).ok();
    assert!(table.contains("LAST VERIFIED"), "{table}");
    assert_eq!(w.master_state(), before, "the master changed");
}

#[test]
fn a_slave_answering_garbage_is_refused_and_nothing_changes() {
    let w = world("");
    // Drift a repair would fix, if the answer were believed.
    w.s2()
        .git("deleted", &["update-ref", "-d", "refs/heads/topic"])
        .ok();
    w.s1().stop_daemon();
    w.s2()
        .answer_peer_with("server1", "verify", "ok fine\nthis is not gitmirror\nend\n");
    let master = w.master_state();
    let slave = snapshot(&w.s2().home().join("repositories"));
    let pushes = w.s2().mirror_pushes_from("server1");

    let out = w.verify(&["--all", "--repair"]);
    let text = out.text();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(
            "fine server2 unreachable: server2 answered garbage to verify: line 2: unknown answer"
        ),
        "{text}"
    );
    assert!(!text.contains("repaired"), "{text}");
    assert!(!text.contains(" ok\n"), "{text}");

    // A truncated answer is no better.
    w.s1().stop_daemon();
    w.s2()
        .answer_peer_with("server1", "verify", "ok fine\nok rewound\n");
    let out = w.verify(&["--all"]);
    assert!(
        out.text()
            .contains("server2 answered garbage to verify: the answer stops before its end"),
        "{}",
        out.text()
    );
    assert_eq!(w.master_state(), master, "the master changed");
    assert_unchanged(&slave, &snapshot(&w.s2().home().join("repositories")));
    assert_eq!(w.s2().mirror_pushes_from("server1"), pushes);
}

#[test]
fn users_get_the_usual_refusal_for_verify() {
    let cluster = Cluster::new(&["server1"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    cluster.set_rules(RULES);
    alice
        .ssh(cluster.server("server1"), "verify")
        .fails_with("unknown command \"verify\"; accepted: git-upload-pack");
}

#[test]
fn an_empty_repo_the_slave_lacks_is_not_drift() {
    let w = world("");
    // A repo with no refs yet, and no copy on server2: a mirror push would send nothing, so
    // there is nothing to repair.
    w.cluster.set_rules(&format!("{RULES}[repos.empty]\n"));
    w.s1().stop_daemon();
    std::fs::remove_dir_all(w.s2().repo_path("empty")).unwrap();
    let out = w.verify(&["--all"]);
    assert!(out.ok().contains("empty server2 ok\n"), "{}", out.text());
}
