//! Replication benchmarks, against the plainest alternative measured in the same run: a direct
//! `git push` over ssh to a bare repo. Not a test: it asserts nothing about time; it prints
//! medians and ratios (a table, and JSON in target/bench/replication.json).
//!
//! Run: `scripts/bench` (as root), or `cargo bench --bench replication -- [--quick]`.
//!
//! 1. Push overhead: a user's push to a master with 2 slaves (async, and sync) divided by the
//!    same push to a repo with no slaves.
//! 2. Replication lag: from the start of the user's push until both slaves have the commit on
//!    disk, divided by a plain `git push` of the same commit to one bare repo over ssh.
//! 3. Bulk: `request-push --all` of N small repos to 2 slaves, from scratch (missing on the
//!    slaves) and again with nothing changed.
//! 4. Catch-up: repos pushed while a slave is down; time from its return until it is in sync.
//! 5. Memory: the daemon's peak RSS during case 3.
//! 6. Verify: `verify --all` of the same N repos on 2 slaves, nothing drifted.
//! 7. Redirect: a user's push to a slave that carries it to the master (`mirror.redirect`),
//!    divided by the same push made to the master directly (both async, 2 slaves).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gitmirror_testkit::*;

struct Options {
    runs: usize,
    repos: usize,
    catch_up: usize,
}

fn options() -> Options {
    let quick = arg_flag("--quick");
    let value = arg_value;
    Options {
        runs: value("--runs", if quick { 5 } else { 11 }),
        repos: value("--repos", if quick { 100 } else { 1000 }),
        catch_up: value("--catch-up", if quick { 40 } else { 200 }),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Waits until every `path` holds `oid` (a loose ref file, as a mirror push writes it).
fn wait_refs(paths: &[PathBuf], oid: &str, timeout: Duration) -> Instant {
    let start = Instant::now();
    loop {
        if paths
            .iter()
            .all(|p| fs::read_to_string(p).is_ok_and(|s| s.trim() == oid))
        {
            return Instant::now();
        }
        assert!(start.elapsed() < timeout, "refs never arrived: {paths:?}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn rules_for_master(bulk: usize) -> String {
    let mut r = String::from(
        "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\", \"server3\"]\n\"RW+\" = [\"alice\"]\n\
         [repos.mirrored]\n\
         [repos.redirected]\nmirror.redirect = true\n\
         [repos.synced]\nmirror.sync = true\n\
         [repos.lag]\n\
         [repos.lonely]\nmirror.master = \"server1\"\nmirror.slaves = []\n",
    );
    for i in 0..bulk {
        r.push_str(&format!("[repos.bulk{i}]\n"));
    }
    r
}

/// The slaves know only that server1 masters everything (repos appear when first pushed), and
/// that alice may read the repo they carry her pushes of to the master.
const SLAVE_RULES: &str = "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\", \"server3\"]\n\
     [repos.redirected]\nmirror.redirect = true\nR = [\"alice\"]\n";

/// Fills each bulk repo with one small commit, written directly (not a measured push).
fn populate(server: &Server, n: usize) {
    let sig = git2::Signature::now("bench", "bench@example.com").unwrap();
    for i in 0..n {
        let repo = git2::Repository::open_bare(server.repo_path(&format!("bulk{i}"))).unwrap();
        let blob = repo.blob(format!("repo {i}\n").as_bytes()).unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("README", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "bulk", &tree, &[])
            .unwrap();
    }
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", server.user.uid, server.user.gid))
        .arg(server.home().join("repositories")))
    .ok();
}

fn all_in_sync(master: &Server, slave: &Server, repos: &[String]) -> bool {
    repos.iter().all(|r| {
        let want = fs::read_to_string(master.repo_path(r).join("refs/heads/main"));
        let have = fs::read_to_string(slave.repo_path(r).join("refs/heads/main"));
        matches!((want, have), (Ok(a), Ok(b)) if a == b)
    })
}

fn main() {
    let o = options();
    let (cores, mem_kib) = machine();
    eprintln!("setting up: 3 servers, {} bulk repos", o.repos);
    let mut cluster = Cluster::new(&["server1", "server2", "server3"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    let (s1, s2, s3) = (
        cluster.server("server1"),
        cluster.server("server2"),
        cluster.server("server3"),
    );
    s1.set_rules(&rules_for_master(o.repos));
    s2.set_rules(SLAVE_RULES);
    s3.set_rules(SLAVE_RULES);
    let (plain_server, plain_repo, plain_url) = plain_target(&alice);
    run(plain_server
        .user
        .command("git")
        .args(["init", "-q", "--bare"])
        .arg(&plain_repo))
    .ok();
    alice.init_repo("w");

    // Warm up: every path once (starts the daemon, opens its connections, fills caches).
    let push = |url: &str, refspec: &str| -> Duration {
        let t = Instant::now();
        alice.git_in("w", &["push", "-q", url, refspec]).ok();
        t.elapsed()
    };
    for repo in ["lonely", "mirrored", "redirected", "synced", "lag"] {
        push(&s1.url(repo), "main");
    }
    push(&plain_url, "main");
    for repo in ["mirrored", "redirected", "synced", "lag"] {
        cluster.wait_in_sync(repo, "server1", &["server2", "server3"]);
    }
    // The first carried push opens server2's login to server1, which later ones share.
    alice.commit("w", "warm");
    push(&s2.url("redirected"), "main");
    cluster.wait_in_sync("redirected", "server1", &["server2", "server3"]);

    // Cases 1 and 2, interleaved so that drift in the machine's load hits all alike.
    eprintln!("cases 1-2: {} runs", o.runs);
    let (mut lonely, mut asynced, mut synced, mut plain, mut lag) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut redirected = Vec::new();
    let slave_refs = |repo: &str| {
        vec![
            s2.repo_path(repo).join("refs/heads/main"),
            s3.repo_path(repo).join("refs/heads/main"),
        ]
    };
    for i in 0..o.runs {
        let head = alice.commit("w", &format!("c{i}"));
        plain.push(secs(push(&plain_url, "main")));
        lonely.push(secs(push(&s1.url("lonely"), "main")));
        asynced.push(secs(push(&s1.url("mirrored"), "main")));
        wait_refs(&slave_refs("mirrored"), &head, Duration::from_secs(60));
        // The same push made to server2, which carries it to server1.
        redirected.push(secs(push(&s2.url("redirected"), "main")));
        wait_refs(&slave_refs("redirected"), &head, Duration::from_secs(60));
        synced.push(secs(push(&s1.url("synced"), "main")));
        // Lag: from the start of the push until both slaves have the commit on disk.
        let start = Instant::now();
        let mut child = Command::new("git");
        child
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", alice.dir.path())
            .env("GIT_SSH_COMMAND", alice.ssh_command())
            .current_dir(alice.dir.path().join("w"))
            .args(["push", "-q", &s1.url("lag"), "main"]);
        let mut child = child.spawn().unwrap();
        let arrived = wait_refs(&slave_refs("lag"), &head, Duration::from_secs(60));
        lag.push(secs(arrived - start));
        assert!(child.wait().unwrap().success());
    }
    let (m_plain, m_lonely, m_async, m_sync, m_lag) = (
        median(plain),
        median(lonely),
        median(asynced),
        median(synced),
        median(lag),
    );
    let m_redirected = median(redirected);

    // Case 3: bulk request-push --all, from scratch, then with nothing changed.
    eprintln!(
        "case 3: request-push --all of {} repos to 2 slaves",
        o.repos
    );
    populate(s1, o.repos);
    let daemon = s1.daemon_pid();
    if let Some(pid) = daemon {
        // From scratch means a daemon that has not seen these repos yet.
        signal(&[pid], "TERM");
        wait_for("the daemon to stop", Duration::from_secs(20), || {
            s1.daemon_pid().is_none()
        });
    }
    let t = Instant::now();
    s1.gitmirror(&["request-push", "--all"]).ok();
    let bulk_scratch = secs(t.elapsed());
    let bulk: Vec<String> = (0..o.repos).map(|i| format!("bulk{i}")).collect();
    assert!(
        all_in_sync(s1, s2, &bulk) && all_in_sync(s1, s3, &bulk),
        "bulk not in sync"
    );
    let mut nothing = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        s1.gitmirror(&["request-push", "--all"]).ok();
        nothing.push(secs(t.elapsed()));
    }
    let bulk_nothing = median(nothing);
    let rss = s1.daemon_pid().and_then(peak_rss_kib).unwrap_or(0);

    // Case 6: verify every repo on both slaves, nothing drifted (so it must exit 0).
    eprintln!("case 6: verify --all of {} repos on 2 slaves", o.repos);
    let mut verified = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        s1.gitmirror(&["verify", "--all"]).ok();
        verified.push(secs(t.elapsed()));
    }
    let verify_nothing = median(verified);

    // Case 4: catch-up after a slave was down while repos were pushed.
    eprintln!("case 4: {} repos pushed while server3 is down", o.catch_up);
    let caught: Vec<String> = (0..o.catch_up).map(|i| format!("bulk{i}")).collect();
    cluster.servers[2].crash_sshd();
    let s1 = cluster.server("server1");
    for (i, repo) in caught.iter().enumerate() {
        let dir = format!("b{i}");
        alice.git(&["clone", "-q", &s1.url(repo), &dir]).ok();
        alice.commit(&dir, "more");
        alice.git_in(&dir, &["push", "-q", "origin", "main"]).ok();
    }
    cluster.servers[2].start_sshd();
    let (s1, s3) = (cluster.server("server1"), cluster.server("server3"));
    let t = Instant::now();
    wait_for("catch-up", Duration::from_secs(600), || {
        all_in_sync(s1, s3, &caught)
    });
    let catch_up = secs(t.elapsed());
    let _ = s3;

    let results = serde_json::json!({
        "machine": { "cores": cores, "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0 },
        "runs": o.runs,
        "push_seconds": { "plain_ssh": m_plain, "no_slaves": m_lonely, "async_2_slaves": m_async, "sync_2_slaves": m_sync },
        "push_overhead": { "async": m_async / m_lonely, "sync": m_sync / m_lonely },
        "redirect": { "carried_seconds": m_redirected, "direct_seconds": m_async, "ratio": m_redirected / m_async },
        "lag_seconds": m_lag,
        "lag_ratio": m_lag / m_plain,
        "bulk": {
            "repos": o.repos, "slaves": 2,
            "scratch_seconds": bulk_scratch, "scratch_repos_per_second": o.repos as f64 / bulk_scratch,
            "unchanged_seconds": bulk_nothing, "unchanged_repos_per_second": o.repos as f64 / bulk_nothing,
        },
        "verify": { "repos": o.repos, "slaves": 2, "nothing_drifted_seconds": verify_nothing },
        "catch_up": { "repos": o.catch_up, "seconds": catch_up },
        "daemon_peak_rss_mib": rss as f64 / 1024.0,
    });
    println!(
        "gitmirror benchmarks ({cores} cores, {:.1} GiB; medians of {} runs)",
        mem_kib as f64 / 1048576.0,
        o.runs
    );
    println!("| case | measured | ratio | target |");
    println!("|---|---|---|---|");
    println!("| plain git push over ssh | {:.3} s | 1.00 | |", m_plain);
    println!("| push, no slaves | {:.3} s | | |", m_lonely);
    println!(
        "| push, 2 slaves, async | {:.3} s | {:.2} of no slaves | <= 1.05 |",
        m_async,
        m_async / m_lonely
    );
    println!(
        "| push, 2 slaves, sync | {:.3} s | {:.2} of no slaves | <= 1.3 |",
        m_sync,
        m_sync / m_lonely
    );
    println!(
        "| push to a slave, carried to the master (async, 2 slaves) | {:.3} s | {:.2} of the push to the master | <= 1.3 |",
        m_redirected,
        m_redirected / m_async
    );
    println!(
        "| replication lag, 2 slaves | {:.3} s | {:.2} of plain push | <= 1.2 |",
        m_lag,
        m_lag / m_plain
    );
    println!(
        "| request-push --all, {} repos x 2, from scratch | {:.1} s ({:.0} repos/s) | | < 30 s for 1000 |",
        o.repos,
        bulk_scratch,
        o.repos as f64 / bulk_scratch
    );
    println!(
        "| request-push --all, nothing changed | {:.2} s ({:.0} repos/s) | | < 3 s for 1000 |",
        bulk_nothing,
        o.repos as f64 / bulk_nothing
    );
    println!(
        "| verify --all, {} repos x 2, nothing drifted | {:.2} s ({:.0} repos/s) | | < 5 s for 10000 |",
        o.repos,
        verify_nothing,
        o.repos as f64 / verify_nothing
    );
    println!(
        "| catch-up, {} repos, one slave back | {:.1} s | | |",
        o.catch_up, catch_up
    );
    println!(
        "| daemon peak RSS during bulk | {:.1} MiB | | |",
        rss as f64 / 1024.0
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    fs::create_dir_all(&out).unwrap();
    fs::write(
        out.join("replication.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    println!("{results}");
}
