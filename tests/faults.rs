//! Faults, with real processes and real sshd: slaves that go down, freeze or refuse, a daemon
//! killed mid-push or restarted with work queued, many pushers at once, and a slave changed
//! behind its master's back. Each test checks that no accepted push is lost and that master
//! and slaves end identical in refs and HEAD.

use std::time::Duration;

use gitmirror_testkit::*;

const RULES: &str = r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2"]

[repos.testing]
"RW+" = ["alice"]

[repos.synced]
"RW+" = ["alice"]
mirror.sync = true
"#;

/// Retries come quickly in tests; sync pushes give up after two seconds.
const FAST: &str = "retry_initial_secs = 0.1\nretry_max_secs = 0.5\nsync_timeout_secs = 2";

struct World {
    cluster: Cluster,
    alice: Client,
}

fn world() -> World {
    let cluster = Cluster::new(&["server1", "server2"]);
    cluster.server("server1").mirror_settings(FAST);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    cluster.set_rules(RULES);
    alice.init_repo("w");
    World { cluster, alice }
}

impl World {
    fn s1(&self) -> &Server {
        self.cluster.server("server1")
    }
    fn s2(&self) -> &Server {
        self.cluster.server("server2")
    }
    fn s2_mut(&mut self) -> &mut Server {
        &mut self.cluster.servers[1]
    }

    /// alice commits `file` and pushes main to server1's `repo`; returns the push's stderr.
    fn commit_and_push(&self, repo: &str, file: &str) -> String {
        self.alice.commit("w", file);
        let out = self
            .alice
            .git_in("w", &["push", &self.s1().url(repo), "main"]);
        out.ok();
        out.err()
    }

    fn in_sync(&self, repo: &str) {
        self.cluster.wait_in_sync(repo, "server1", &["server2"]);
    }
}

#[test]
fn slave_down_during_pushes_catches_up_by_itself() {
    let mut w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    w.s2_mut().crash_sshd();
    for f in ["b", "c", "d", "e"] {
        w.commit_and_push("testing", f);
    }
    // The failure is visible, in ssh's own words, and counted.
    wait_for(
        "a failed attempt in status",
        Duration::from_secs(30),
        || {
            w.s1().slave_status("testing", "server2")["attempts"]
                .as_u64()
                .is_some_and(|a| a >= 2)
        },
    );
    let row = w.s1().slave_status("testing", "server2");
    assert_eq!(row["state"], "failing", "{row}");
    assert!(
        row["last_error"].as_str().unwrap().contains("server2"),
        "{row}"
    );
    // A user pushing meanwhile is warned.
    let err = w.commit_and_push("testing", "f");
    assert!(
        err.contains("WARNING: server1 ==== (testing) =X=> server2 has been failing"),
        "{err}"
    );
    w.s2_mut().start_sshd();
    w.in_sync("testing");
    wait_for("status in sync", Duration::from_secs(30), || {
        w.s1().slave_status("testing", "server2")["state"] == "in sync"
    });
    assert!(w.s1().status().1, "status must exit 0 once in sync");
}

#[test]
fn daemon_killed_mid_push_resumes_at_next_start() {
    let w = world();
    // The daemon says at debug level when a mirror push starts.
    let config = w.s1().home().join("gitmirror.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("level = \"info\"", "level = \"debug\""),
    )
    .unwrap();
    // compile started a daemon with the old level; the first push starts one that reads it.
    w.s1().stop_daemon();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    // The refs land on the slave a moment before that mirror push ends (the slave's hook, its
    // exit status): wait until the master has recorded it, or the freeze below would catch
    // that push instead of the next one.
    wait_for(
        "the first mirror push recorded",
        Duration::from_secs(30),
        || w.s1().slave_status("testing", "server2")["state"] == "in sync",
    );
    // Freeze the slave so the next mirror push hangs in flight, then kill the daemon and
    // everything it started.
    w.s2().freeze(true);
    let started = |s: &Server| {
        s.log()
            .matches("mirror push started repo=testing slave=server2")
            .count()
    };
    let before = started(w.s1());
    w.commit_and_push("testing", "b");
    let t = std::time::Instant::now();
    while started(w.s1()) <= before {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no mirror push started:\n{}",
            w.s1().log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemon = w.s1().daemon_pid().expect("a daemon runs");
    signal(&process_tree(daemon), "KILL");
    wait_for("the daemon gone", Duration::from_secs(10), || {
        w.s1().daemon_pid().is_none()
    });
    w.s2().freeze(false);
    // The queue still holds the push.
    let row = w.s1().slave_status("testing", "server2");
    assert_ne!(row["state"], "in sync", "{row}");
    // The next start resumes it, with no push and no human asking.
    let _daemon = w.s1().start_daemon();
    w.in_sync("testing");
    wait_for("status in sync", Duration::from_secs(30), || {
        w.s1().slave_status("testing", "server2")["state"] == "in sync"
    });
}

#[test]
fn frozen_slave_holds_up_no_async_push_and_sync_times_out_cleanly() {
    let w = world();
    w.commit_and_push("testing", "a");
    w.commit_and_push("synced", "a2");
    w.in_sync("testing");
    w.in_sync("synced");
    w.s2().freeze(true);
    // Async: the push returns although the slave does not answer.
    let err = w.commit_and_push("testing", "b");
    assert!(err.contains("===> server2 (async)"), "{err}");
    // Sync: the push returns after the sync timeout, saying the slave is pending.
    let err = w.commit_and_push("synced", "b2");
    assert!(
        err.contains("server1 ==== (synced) ...> server2: pending, will be retried"),
        "{err}"
    );
    w.s2().freeze(false);
    w.in_sync("testing");
    w.in_sync("synced");
}

#[test]
fn twenty_concurrent_pushers_and_request_push_converge() {
    let w = world();
    w.commit_and_push("testing", "a");
    let url = w.s1().url("testing");
    for i in 0..20 {
        w.alice.git(&["clone", "-q", &url, &format!("p{i}")]).ok();
    }
    let errors: Vec<String> = std::thread::scope(|scope| {
        let pushers: Vec<_> = (0..20)
            .map(|i| {
                let (alice, url) = (&w.alice, &url);
                scope.spawn(move || {
                    let dir = format!("p{i}");
                    alice.commit(&dir, &format!("f{i}"));
                    let out = alice.git_in(&dir, &["push", url, &format!("main:branch{i}")]);
                    (out.status.success(), out.err())
                })
            })
            .collect();
        let requests: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| w.s1().gitmirror(&["request-push", "testing"])))
            .collect();
        for r in requests {
            r.join().unwrap().ok();
        }
        pushers
            .into_iter()
            .map(|p| p.join().unwrap())
            .filter(|(ok, err)| !ok || err.to_lowercase().contains("lock"))
            .map(|(_, err)| err)
            .collect()
    });
    assert!(errors.is_empty(), "pushers saw errors: {errors:#?}");
    let refs = w.s1().refs("testing");
    assert_eq!(refs.matches("refs/heads/branch").count(), 20, "{refs}");
    w.in_sync("testing");
}

#[test]
fn diverged_slave_is_detected_reported_and_preserved() {
    let w = world();
    w.commit_and_push("synced", "a");
    w.in_sync("synced");
    // Someone writes to the slave directly: moves main, adds a branch of its own.
    let s2 = w.s2();
    let tree = s2.git("synced", &["rev-parse", "main^{tree}"]).ok();
    let rogue = s2
        .git(
            "synced",
            &[
                "-c",
                "user.name=admin",
                "-c",
                "user.email=admin@example.com",
                "commit-tree",
                "-m",
                "rogue",
                "-p",
                "main",
                tree.trim(),
            ],
        )
        .ok();
    let rogue = rogue.trim();
    s2.git("synced", &["update-ref", "refs/heads/main", rogue])
        .ok();
    s2.git("synced", &["update-ref", "refs/heads/local-only", rogue])
        .ok();
    // The next push detects it and says so; the master's state wins.
    let err = w.commit_and_push("synced", "b");
    assert!(
        err.contains("WARNING: server2 had diverged from server1"),
        "{err}"
    );
    assert!(err.contains("refs/heads/main was"), "{err}");
    w.in_sync("synced");
    // The slave kept what it had, under refs/gitmirror/diverged/<time>/.
    let kept = s2
        .git(
            "synced",
            &[
                "for-each-ref",
                "--format=%(objectname) %(refname)",
                "refs/gitmirror/diverged/",
            ],
        )
        .ok();
    assert!(
        kept.contains(&format!("{rogue} refs/gitmirror/diverged/")),
        "{kept}"
    );
    assert!(kept.contains("/heads/main\n"), "{kept}");
    assert!(kept.contains("/heads/local-only\n"), "{kept}");
    let row = w.s1().slave_status("synced", "server2");
    assert!(
        row["last_diverged"]
            .as_str()
            .unwrap()
            .contains("refs/heads/local-only"),
        "{row}"
    );
    // Later pushes neither prune the kept refs nor report them again.
    let err = w.commit_and_push("synced", "c");
    assert!(!err.contains("diverged"), "{err}");
    assert_eq!(
        s2.git("synced", &["for-each-ref", "refs/gitmirror/diverged/"])
            .ok()
            .lines()
            .count(),
        2
    );
}

#[test]
fn daemon_restarted_with_work_queued_loses_nothing_and_pushes_once() {
    let mut w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    w.s2_mut().crash_sshd();
    for f in ["b", "c", "d"] {
        w.commit_and_push("testing", f);
    }
    wait_for("a failed attempt", Duration::from_secs(30), || {
        w.s1().slave_status("testing", "server2")["attempts"]
            .as_u64()
            .is_some_and(|a| a >= 1)
    });
    // Stop the daemon cleanly, bring the slave back, start the daemon again.
    let daemon = w.s1().daemon_pid().expect("a daemon runs");
    signal(&[daemon], "TERM");
    wait_for("the daemon gone", Duration::from_secs(10), || {
        w.s1().daemon_pid().is_none()
    });
    w.s2_mut().start_sshd();
    let before = w.s2().mirror_pushes_from("server1");
    let _daemon = w.s1().start_daemon();
    w.in_sync("testing");
    wait_for("status in sync", Duration::from_secs(30), || {
        w.s1().slave_status("testing", "server2")["state"] == "in sync"
    });
    // Three pushes while away collapse into one mirror push.
    assert_eq!(w.s2().mirror_pushes_from("server1") - before, 1);
}

#[test]
fn peer_key_removed_then_restored() {
    let w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    w.s2().gitmirror(&["remove-mirroring-peer", "server1"]).ok();
    w.commit_and_push("testing", "b");
    // Refused by server2's forced command over the open connection, then, once the daemon
    // reconnects, by server2's sshd: either way in server2's own words.
    wait_for("the refusal in status", Duration::from_secs(30), || {
        w.s1().slave_status("testing", "server2")["last_error"]
            .as_str()
            .is_some_and(|e| {
                e.contains("server1 is not a registered peer of server2")
                    || e.contains("Permission denied (publickey)")
            })
    });
    let daemon = w.s1().daemon_pid().expect("the daemon survives");
    w.s2().add_peer(w.s1());
    w.in_sync("testing");
    assert_eq!(w.s1().daemon_pid(), Some(daemon));
}

#[test]
fn status_reports_and_alerts() {
    let mut w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    // The slave has the refs a moment before the daemon records its confirmation.
    wait_for("status in sync", Duration::from_secs(30), || {
        w.s1().gitmirror(&["status"]).status.success()
            && w.s1().slave_status("testing", "server2")["state"] == "in sync"
    });
    let out = w.s1().gitmirror(&["status"]).ok();
    assert!(out.contains("testing"), "{out}");
    assert!(!out.contains("failing"), "{out}");
    // Behind longer than the alert threshold: status exits non-zero.
    w.s1().mirror_settings("alert_after_secs = 0");
    w.s2_mut().crash_sshd();
    w.commit_and_push("testing", "b");
    wait_for("an alert", Duration::from_secs(30), || !w.s1().status().1);
    let out = w.s1().gitmirror(&["status", "testing"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.err());
    assert!(
        out.text().contains("failing") || out.text().contains("pending"),
        "{}",
        out.text()
    );
    w.s1()
        .gitmirror(&["status", "nope"])
        .fails_with("nope: no such repo here");
}

#[test]
fn a_ref_update_no_hook_announced_reaches_the_slave_by_the_next_sweep() {
    let w = world();
    w.s1().mirror_settings("rescan_secs = 0.5");
    // compile started a daemon with the default; the first push starts one that reads it.
    w.s1().stop_daemon();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    // A ref moves on the master with no hook to queue it: an administrator's update-ref, or
    // a post-receive that failed before it wrote the queue.
    let head = w.s1().git("testing", &["rev-parse", "main"]).ok();
    w.s1()
        .git("testing", &["update-ref", "refs/heads/copy", head.trim()])
        .ok();
    w.in_sync("testing");
}

#[test]
fn a_master_with_no_refs_does_not_take_a_refusal_for_an_empty_slave() {
    let w = world();
    // server2 believes another server masters testing; server1's copy has no refs yet.
    w.s2()
        .git("testing", &["config", "gitolite.mirror.master", "server3"])
        .ok();
    let out = w.s1().gitmirror(&["request-push", "testing"]);
    let text = out.text();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("server1 ==== (testing) =X=> server2: server2 refuses testing from server1"),
        "{text}"
    );
    let row = w.s1().slave_status("testing", "server2");
    assert_ne!(row["state"], "in sync", "{row}");
}

#[test]
fn a_slave_added_by_compile_gets_the_repo_without_another_push() {
    let w = world();
    // No periodic sweep in this test's lifetime: what compile queues (and the daemon it
    // starts) must do it.
    w.s1().mirror_settings("rescan_secs = 3600");
    w.s1().stop_daemon();
    let solo = "[repos.solo]\n\"RW+\" = [\"alice\"]\nmirror.master = \"server1\"\n";
    w.cluster
        .set_rules(&format!("{RULES}{solo}mirror.slaves = []\n"));
    w.commit_and_push("solo", "a");
    // server2 becomes a slave of solo: its own rules first, then the master's.
    let rules = format!("{RULES}{solo}mirror.slaves = [\"server2\"]\n");
    w.s2().set_rules(&rules);
    std::fs::write(w.s1().home().join("repos.toml"), &rules).unwrap();
    let out = w.s1().gitmirror(&["compile"]).ok();
    assert!(out.contains("queued solo for server2"), "{out}");
    let record = std::fs::read_to_string(w.s1().home().join("state/queue/solo.json")).unwrap();
    assert!(record.contains("\"server2\""), "{record}");
    w.cluster.wait_in_sync("solo", "server1", &["server2"]);
}

/// The daemon's resident memory, from /proc.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Makes server2 hostile: whatever server1 asks of it, `command` answers, as the forced
/// command of server1's key. The daemon that the next push starts reads `settings`.
fn hostile_slave(w: &World, command: &str, settings: &str) {
    let keys = w.s2().home().join(".ssh/authorized_keys");
    let text = std::fs::read_to_string(&keys).unwrap();
    let hostile: String = text
        .lines()
        .map(|l| {
            if l.contains(" peer server1\"") {
                let key = &l[l.find("ssh-").unwrap()..];
                format!("restrict,command=\"{command}\" {key}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&keys, hostile).unwrap();
    w.s1().mirror_settings(settings);
    w.s1().stop_daemon();
}

/// Pushes to server1 and waits until its mirror push to the hostile server2 has failed at
/// least twice; returns the daemon's resident memory then, and the last error.
fn push_to_hostile_slave(w: &World) -> (u64, String) {
    w.commit_and_push("testing", "b");
    wait_for(
        "the daemon the push starts",
        Duration::from_secs(10),
        || w.s1().daemon_pid().is_some(),
    );
    let daemon = w.s1().daemon_pid().expect("the push started a daemon");
    wait_for("the failure in status", Duration::from_secs(60), || {
        w.s1().slave_status("testing", "server2")["attempts"]
            .as_u64()
            .is_some_and(|a| a >= 2)
    });
    let row = w.s1().slave_status("testing", "server2");
    (
        rss_mib(daemon),
        row["last_error"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn a_slave_that_floods_its_master_costs_it_bounded_memory_and_fails_cleanly() {
    let w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    hostile_slave(&w, "yes 0000flood", "");
    let (rss, _) = push_to_hostile_slave(&w);
    assert!(rss < 64, "the daemon grew to {rss} MiB");
}

#[test]
fn a_slave_that_floods_its_stderr_costs_bounded_memory_and_fails_cleanly() {
    let w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    hostile_slave(&w, "yes >&2", "io_timeout_secs = 2");
    let (rss, _) = push_to_hostile_slave(&w);
    assert!(rss < 64, "the daemon grew to {rss} MiB");
}

#[test]
fn a_slave_that_trickles_does_not_hold_its_session() {
    let w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    // A packet announced 64 KiB long (the most git allows) whose bytes come one a second:
    // never silent for long.
    hostile_slave(
        &w,
        "printf fff0; while :; do printf a; sleep 1; done",
        "io_timeout_secs = 2",
    );
    let (_, error) = push_to_hostile_slave(&w);
    assert!(error.contains("the peer moved"), "{error}");
}

#[test]
fn a_repo_whose_refs_never_finish_reading_stalls_no_other_repo() {
    let w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    // Repos mastered here whose refs cannot be read to the end: packed-refs is a FIFO that
    // nobody writes, so listing their refs blocks for ever (a huge repo, to the extreme).
    let stuck: Vec<String> = (0..3).map(|i| format!("stuck{i}")).collect();
    let mut rules = RULES.to_string();
    for name in &stuck {
        rules.push_str(&format!("[repos.{name}]\n"));
    }
    w.s1().set_rules(&rules);
    for name in &stuck {
        let fifo = w.s1().repo_path(name).join("packed-refs");
        run(w.s1().user.command("mkfifo").arg(&fifo)).ok();
    }
    // A fresh daemon sweeps every repo at start, the stuck ones included.
    w.s1().stop_daemon();
    w.commit_and_push("testing", "b");
    w.in_sync("testing");
    // Its socket still answers and other pushes still go.
    w.commit_and_push("testing", "c");
    w.in_sync("testing");
    let out = w.s1().gitmirror(&["request-push", "testing"]).ok();
    assert!(out.contains("===> server2"), "{out}");
}

#[test]
fn a_push_that_outlasts_the_inactivity_limit_while_bytes_flow_succeeds() {
    let w = world();
    w.commit_and_push("testing", "a");
    w.in_sync("testing");
    // 48 MiB that do not compress, over a link that takes them at 2 MiB/s: about 24 s, twice
    // the limit, and never silent for long. (After the master's last write the slave drains
    // what ssh and the sockets buffer, at the link's rate, and stores a 48 MiB object without
    // a byte back: git's unpack-objects, which a one-object push gets, sends no keepalive.
    // About 3 s here; more than 8 s once, with the machine's load at 6 on its two cores,
    // hence a limit of 12 s. A slower link makes that silence longer, not shorter.)
    w.s2().throttle_pushes_from("server1", 2048);
    w.s1().mirror_settings("io_timeout_secs = 12");
    w.s1().stop_daemon();
    let noise = noise(48 << 20, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(w.alice.dir.path().join("w/blob.bin"), noise).unwrap();
    w.alice.git_in("w", &["add", "blob.bin"]).ok();
    let started = std::time::Instant::now();
    w.commit_and_push("testing", "b");
    // Longer than wait_in_sync's 30 s: the transfer alone takes about 24.
    wait_for("the slave in sync", Duration::from_secs(90), || {
        w.s2().refs("testing") == w.s1().refs("testing")
    });
    assert!(
        started.elapsed() > Duration::from_secs(12),
        "the throttle did not hold the push past the limit"
    );
    // In one go: no attempt failed on the way.
    let log = w.s1().log();
    assert!(!log.contains("mirror push failed"), "{log}");
}
