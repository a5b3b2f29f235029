//! Ten thousand repositories (issue 10): one master, server1, holding N repos each mirrored to
//! two slaves, server2 and server3. Not a test: it asserts only that the slaves end in sync,
//! never a time; it prints a table and JSON (also target/bench/scale.json).
//!
//! Run: `scripts/bench scale -- [--quick] [--repos N] [--runs K] [--catch-up M]
//! [--scratch-runs R]` (as root).
//!
//! 1. Setup cost: compiling rules that name N repos; filling each with one small commit.
//! 2. From scratch (the repos missing on both slaves): `request-push --all` against a
//!    cron-style script run as server1's account with its own peer key: `git push --mirror`
//!    of every repo to each slave over one shared OpenSSH connection per slave, 8 at a time.
//! 3. `request-push --all` with nothing changed.
//! 4. The daemon's start-up sweep (its own `start-up sweep done elapsed_ms=` log line when
//!    the binary has one, else from starting it until a `request-push --all` answers).
//! 5. `gitmirror status` of all repos.
//! 6. A user's push overhead with N repos present: a push to a repo with 2 slaves (async)
//!    divided by the same push to a repo with none.
//! 7. Catch-up: M repos changed while server3 was down; time from its return until in sync.
//! 8. The daemon's peak RSS (VmHWM), the highest of every daemon process in the run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gitmirror_testkit::*;

struct Options {
    repos: usize,
    runs: usize,
    scratch_runs: usize,
    catch_up: usize,
}

fn options() -> Options {
    let quick = arg_flag("--quick");
    let value = arg_value;
    let repos = value("--repos", if quick { 1000 } else { 10000 });
    Options {
        repos,
        runs: value("--runs", if quick { 5 } else { 11 }).max(1),
        scratch_runs: value("--scratch-runs", 1).max(1),
        catch_up: value("--catch-up", if quick { 100 } else { 1000 }).min(repos),
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let out = f();
    (t.elapsed().as_secs_f64(), out)
}

fn bulk_name(i: usize) -> String {
    format!("bulk{i}")
}

fn rules_for_master(bulk: usize) -> String {
    let mut r = String::from(
        "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\", \"server3\"]\n\"RW+\" = [\"alice\"]\n\
         [repos.mirrored]\n\
         [repos.lonely]\nmirror.master = \"server1\"\nmirror.slaves = []\n",
    );
    for i in 0..bulk {
        r.push_str(&format!("[repos.{}]\n", bulk_name(i)));
    }
    r
}

/// The slaves know only that server1 masters everything: repos appear when first pushed.
const SLAVE_RULES: &str =
    "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\", \"server3\"]\n";

/// Gives the server's account what root wrote into its repos.
fn chown(server: &Server, paths: impl IntoIterator<Item = PathBuf>) {
    let mut cmd = Command::new("chown");
    cmd.arg("-R")
        .arg(format!("{}:{}", server.user.uid, server.user.gid))
        .args(paths);
    run(&mut cmd).ok();
}

/// Adds one small commit on `main` to each repo, written directly (not a measured push).
fn commit_directly(server: &Server, repos: &[String], what: &str) {
    let sig = git2::Signature::now("bench", "bench@example.com").unwrap();
    for name in repos {
        let repo = git2::Repository::open_bare(server.repo_path(name)).unwrap();
        let parent = repo
            .find_reference("refs/heads/main")
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let blob = repo.blob(format!("{name} {what}\n").as_bytes()).unwrap();
        let mut tb = repo.treebuilder(None).unwrap();
        tb.insert("README", blob, 0o100644).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("refs/heads/main"), &sig, &sig, what, &tree, &parents)
            .unwrap();
    }
    chown(server, repos.iter().map(|r| server.repo_path(r)));
}

/// `refs/heads/main` of a bare repo (loose, else packed) and its HEAD file.
fn main_ref(repo: &Path) -> Option<(String, String)> {
    let head = fs::read_to_string(repo.join("HEAD"))
        .ok()?
        .trim()
        .to_string();
    let main = match fs::read_to_string(repo.join("refs/heads/main")) {
        Ok(s) => s.trim().to_string(),
        Err(_) => fs::read_to_string(repo.join("packed-refs"))
            .ok()?
            .lines()
            .find(|l| l.ends_with(" refs/heads/main"))?
            .split(' ')
            .next()?
            .to_string(),
    };
    Some((main, head))
}

/// The repos of `repos` whose `main` and HEAD on `slave` differ from `master`'s.
fn out_of_sync<'a>(master: &Server, slave: &Server, repos: &'a [String]) -> Vec<&'a str> {
    repos
        .iter()
        .filter(|r| {
            let want = main_ref(&master.repo_path(r));
            want.is_none() || want != main_ref(&slave.repo_path(r))
        })
        .map(String::as_str)
        .collect()
}

fn assert_in_sync(what: &str, master: &Server, slaves: &[&Server], repos: &[String]) {
    for s in slaves {
        let bad = out_of_sync(master, s, repos);
        assert!(
            bad.is_empty(),
            "{what}: {} of {} repos not in sync on {}, e.g. {:?}",
            bad.len(),
            repos.len(),
            s.hostname,
            &bad[..bad.len().min(5)]
        );
    }
}

/// The highest VmHWM of every daemon process seen: each is read just before it is stopped,
/// and once more at the end.
#[derive(Default)]
struct PeakRss(u64);

impl PeakRss {
    fn note(&mut self, server: &Server) {
        if let Some(kib) = server.daemon_pid().and_then(peak_rss_kib) {
            self.0 = self.0.max(kib);
        }
    }

    /// Notes the daemon's peak, then stops it (SIGTERM, by pid) and waits until it is gone,
    /// together with every process it left behind: an ssh master it was still opening when
    /// stopped would otherwise log in later, in the middle of another case.
    fn stop_daemon(&mut self, server: &Server) {
        self.note(server);
        if let Some(pid) = server.daemon_pid() {
            signal(&[pid], "TERM");
            wait_for("the daemon to stop", Duration::from_secs(120), || {
                server.daemon_pid().is_none()
            });
        }
        signal(&processes_of(server.user.uid), "KILL");
        wait_for(
            "the daemon's processes gone",
            Duration::from_secs(30),
            || processes_of(server.user.uid).is_empty(),
        );
    }
}

/// Makes the next mirror of the bulk repos start from scratch: gone from both slaves (with
/// what each remembers of them), and nothing of them in server1's queue. The daemon must be
/// stopped.
fn forget_bulk(s1: &Server, slaves: &[&Server]) {
    assert!(
        s1.daemon_pid().is_none(),
        "server1's daemon must be stopped"
    );
    let remove_matching = |dir: PathBuf, suffixes: &[&str]| {
        let Ok(entries) = fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("bulk") || !suffixes.iter().any(|s| name.ends_with(s)) {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
    };
    for s in slaves {
        remove_matching(s.home().join("repositories"), &[".git"]);
        remove_matching(s.home().join("state/mirrored"), &[".json"]);
    }
    remove_matching(
        s1.home().join("state/queue"),
        &[".json", ".lock", ".corrupt"],
    );
}

/// The baseline: what an administrator's cron job would do. As server1's account, with its
/// own peer key, one OpenSSH master connection per slave shared by every push
/// (ControlMaster, ControlPersist, ControlPath), `git push --mirror` of every repo to each
/// slave, 8 at a time (`xargs -P 8`). Returns the script's output.
fn cron_script(s1: &Server, slaves: &[&Server], repos: &[String], known_hosts: &Path) -> Output {
    // One line per push: the slave's URL and the repo. The list is written where the account
    // can read it.
    let mut jobs = String::new();
    for r in repos {
        for s in slaves {
            jobs.push_str(&format!(
                "ssh://{}@{}:{}/{r}.git {r}\n",
                s.user.name, s.addr, s.port
            ));
        }
    }
    let list = s1.sshd_dir.path().join("bench-jobs");
    fs::write(&list, jobs).unwrap();
    // %d is the account's home: the control sockets live there.
    let ssh = format!(
        "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i {key} \
         -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes \
         -o ControlPath=%d/.bench-cm-%C -o ControlPersist=600",
        key = s1.home().join(".ssh/id_ed25519").display(),
        kh = known_hosts.display(),
    );
    let hosts: Vec<String> = slaves
        .iter()
        .map(|s| format!("-p {} {}@{}", s.port, s.user.name, s.addr))
        .collect();
    let mut script = format!("set -u\nssh_cmd='{ssh}'\ncleanup() {{\n");
    for h in &hosts {
        script.push_str(&format!("  $ssh_cmd -O exit {h} >/dev/null 2>&1\n"));
    }
    script.push_str("}\ntrap cleanup EXIT\n");
    for h in &hosts {
        // The shared connection, opened once per slave before the pushes, which join it. It
        // must not hold the script's output open once in the background.
        script.push_str(&format!(
            "$ssh_cmd -o ControlMaster=yes -f -N {h} </dev/null >/dev/null 2>&1 || exit 1\n"
        ));
    }
    script.push_str(&format!(
        "export GIT_SSH_COMMAND=\"$ssh_cmd -o ControlMaster=auto\"\n\
         xargs -P 8 -n 2 sh -c 'exec git --git-dir=\"$HOME/repositories/$1.git\" push -q --mirror \"$0\"' < {list}\n",
        list = list.display()
    ));
    run(s1.user.command("sh").arg("-c").arg(script))
}

/// How many ssh logins with `from`'s peer key `server`'s sshd has accepted (its log, at
/// LogLevel VERBOSE, names the key's fingerprint).
fn logins(server: &Server, from: &Server) -> usize {
    let fingerprint = run(Command::new("ssh-keygen")
        .arg("-lf")
        .arg(from.home().join(".ssh/id_ed25519.pub")))
    .ok();
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    fs::read_to_string(server.sshd_dir.path().join("sshd.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Accepted publickey for") && l.contains(&fingerprint))
        .count()
}

/// Whether the gitmirror binary under test logs the start-up sweep's duration.
fn logs_sweep_time() -> bool {
    let bin = fs::read(&sandbox().bin).unwrap_or_default();
    let needle = b"start-up sweep done";
    bin.windows(needle.len()).any(|w| w == needle)
}

/// `elapsed_ms=N` from the first `start-up sweep done` line in `log`.
fn sweep_ms(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("start-up sweep done"))?;
    let rest = &line[line.find("elapsed_ms=")? + "elapsed_ms=".len()..];
    let num: String = rest
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().ok()
}

fn main() {
    let o = options();
    let (cores, mem_kib) = machine();
    let mut rss = PeakRss::default();
    let bulk: Vec<String> = (0..o.repos).map(bulk_name).collect();

    // 1. Setup.
    eprintln!("setting up: 3 servers, {} repos", o.repos);
    let mut cluster = Cluster::new(&["server1", "server2", "server3"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    let (s1, s2, s3) = (
        cluster.server("server1"),
        cluster.server("server2"),
        cluster.server("server3"),
    );
    s2.set_rules(SLAVE_RULES);
    s3.set_rules(SLAVE_RULES);
    let (compile_s, ()) = timed(|| s1.set_rules(&rules_for_master(o.repos)));
    // The compile queued every new repo and started a daemon for them: stop it, the
    // from-scratch case starts its own.
    rss.stop_daemon(s1);
    let (populate_s, ()) = timed(|| commit_directly(s1, &bulk, "bulk"));
    eprintln!("compile {compile_s:.1} s, populate {populate_s:.1} s");
    // The peer key's connection as the baseline makes it checks host keys against the
    // sandbox's known_hosts, as `Server::ssh_as_peer` does; the file sits next to bin/.
    let known_hosts = sandbox()
        .bin
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("known_hosts");

    // 2. From scratch: the baseline script, then gitmirror, each on slaves without the repos.
    let (mut baseline, mut gitmirror) = (Vec::new(), Vec::new());
    for run_no in 0..o.scratch_runs {
        eprintln!(
            "case 2, run {}: from scratch, {} repos x 2 slaves",
            run_no + 1,
            o.repos
        );
        rss.stop_daemon(s1);
        forget_bulk(s1, &[s2, s3]);
        let logins_before = [logins(s2, s1), logins(s3, s1)];
        let (t, out) = timed(|| cron_script(s1, &[s2, s3], &bulk, &known_hosts));
        out.ok();
        assert_in_sync("baseline from scratch", s1, &[s2, s3], &bulk);
        assert_eq!(
            [
                logins(s2, s1) - logins_before[0],
                logins(s3, s1) - logins_before[1]
            ],
            [1, 1],
            "the baseline must share one ssh connection per slave"
        );
        baseline.push(t);
        eprintln!("  baseline script: {t:.1} s");

        forget_bulk(s1, &[s2, s3]);
        let (t, out) = timed(|| s1.gitmirror(&["request-push", "--all"]));
        out.ok();
        assert_in_sync("gitmirror from scratch", s1, &[s2, s3], &bulk);
        gitmirror.push(t);
        eprintln!("  request-push --all: {t:.1} s");
    }
    let (scratch_baseline, scratch_gitmirror) = (median(baseline), median(gitmirror));

    // 3. Nothing changed.
    eprintln!(
        "case 3: request-push --all, nothing changed, {} runs",
        o.runs
    );
    let unchanged = median(
        (0..o.runs)
            .map(|_| timed(|| s1.gitmirror(&["request-push", "--all"]).ok()).0)
            .collect(),
    );

    // 4. The start-up sweep.
    let sweep_logged = logs_sweep_time();
    eprintln!(
        "case 4: start-up sweep, {} runs ({})",
        o.runs,
        if sweep_logged {
            "its log line"
        } else {
            "no log line: start until request-push --all answers"
        }
    );
    let mut sweeps = Vec::new();
    for _ in 0..o.runs {
        rss.stop_daemon(s1);
        let log_before = s1.log().len();
        let (t, out) = timed(|| s1.gitmirror(&["request-push", "--all"]));
        out.ok();
        if sweep_logged {
            let mut ms = None;
            wait_for("the start-up sweep", Duration::from_secs(120), || {
                ms = sweep_ms(s1.log().get(log_before..).unwrap_or(""));
                ms.is_some()
            });
            sweeps.push(ms.unwrap() / 1000.0);
        } else {
            sweeps.push(t);
        }
    }
    let sweep = median(sweeps);

    // 5. status.
    eprintln!("case 5: status, {} runs", o.runs);
    let status = median(
        (0..o.runs)
            .map(|_| timed(|| s1.gitmirror(&["status"]).ok()).0)
            .collect(),
    );

    // 5b. verify --all with nothing drifted: one request per slave for every repo.
    eprintln!("case 5b: verify --all, {} runs", o.runs);
    let verify = median(
        (0..o.runs)
            .map(|_| timed(|| s1.gitmirror(&["verify", "--all"]).ok()).0)
            .collect(),
    );

    // 6. A user's push overhead with N repos present.
    eprintln!("case 6: push overhead, {} runs", o.runs);
    alice.init_repo("w");
    let push = |repo: &str| -> f64 {
        timed(|| {
            alice
                .git_in("w", &["push", "-q", &s1.url(repo), "main"])
                .ok()
        })
        .0
    };
    // Warm up both paths once.
    push("lonely");
    push("mirrored");
    cluster.wait_in_sync("mirrored", "server1", &["server2", "server3"]);
    let (mut lonely, mut asynced) = (Vec::new(), Vec::new());
    for i in 0..o.runs {
        alice.commit("w", &format!("c{i}"));
        lonely.push(push("lonely"));
        asynced.push(push("mirrored"));
        cluster.wait_in_sync("mirrored", "server1", &["server2", "server3"]);
    }
    let (push_lonely, push_async) = (median(lonely), median(asynced));

    // 7. Catch-up: M repos change while server3 is down.
    eprintln!(
        "case 7: catch-up, {} repos changed while server3 is down",
        o.catch_up
    );
    let changed: Vec<String> = bulk[..o.catch_up].to_vec();
    cluster.servers[2].crash_sshd();
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    commit_directly(s1, &changed, "catch-up");
    // server2 gets them; server3 cannot be reached, so they stay pending for it.
    let out = s1.gitmirror(&["request-push", "--all"]);
    assert!(
        !out.status.success(),
        "request-push --all cannot succeed with server3 down"
    );
    assert_in_sync("catch-up, server2", s1, &[s2], &changed);
    cluster.servers[2].start_sshd();
    let (s1, s2, s3) = (
        cluster.server("server1"),
        cluster.server("server2"),
        cluster.server("server3"),
    );
    let t = Instant::now();
    wait_for("catch-up on server3", Duration::from_secs(1800), || {
        out_of_sync(s1, s3, &changed).is_empty()
    });
    let catch_up = t.elapsed().as_secs_f64();
    assert_in_sync("after catch-up", s1, &[s2, s3], &bulk);

    // 8. Peak RSS, including the daemon still running.
    rss.note(s1);
    let rss_mib = rss.0 as f64 / 1024.0;

    let n = o.repos;
    let results = serde_json::json!({
        "machine": { "cores": cores, "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0 },
        "repos": n, "slaves": 2, "runs": o.runs, "scratch_runs": o.scratch_runs,
        "setup_seconds": { "compile": compile_s, "populate": populate_s },
        "scratch": {
            "gitmirror_seconds": scratch_gitmirror,
            "baseline_seconds": scratch_baseline,
            "baseline_over_gitmirror": scratch_baseline / scratch_gitmirror,
            "gitmirror_repos_per_second": n as f64 / scratch_gitmirror,
            "baseline_repos_per_second": n as f64 / scratch_baseline,
        },
        "unchanged_seconds": unchanged,
        "startup_sweep": {
            "seconds": sweep,
            "measured_as": if sweep_logged { "log elapsed_ms" } else { "daemon start until request-push --all answered" },
        },
        "status_seconds": status,
        "verify_seconds": verify,
        "push_seconds": { "no_slaves": push_lonely, "async_2_slaves": push_async },
        "push_overhead_async": push_async / push_lonely,
        "catch_up": { "repos": o.catch_up, "seconds": catch_up, "repos_per_second": o.catch_up as f64 / catch_up },
        "daemon_peak_rss_mib": rss_mib,
    });
    println!(
        "gitmirror at scale: {n} repos x 2 slaves ({cores} cores, {:.1} GiB; medians of {} runs, {} from scratch)",
        mem_kib as f64 / 1048576.0,
        o.runs,
        o.scratch_runs
    );
    println!("| case | measured | ratio | target |");
    println!("|---|---|---|---|");
    println!("| setup: compile rules naming {n} repos | {compile_s:.1} s | | |");
    println!("| setup: populate {n} repos (git2, one commit each) | {populate_s:.1} s | | |");
    println!(
        "| from scratch: cron script, `git push --mirror`, 1 ssh connection per slave, 8 at a time | {scratch_baseline:.1} s ({:.0} repos/s) | 1.00 | |",
        n as f64 / scratch_baseline
    );
    println!(
        "| from scratch: `request-push --all` | {scratch_gitmirror:.1} s ({:.0} repos/s) | baseline {:.2}x of it | >= 2x |",
        n as f64 / scratch_gitmirror,
        scratch_baseline / scratch_gitmirror
    );
    println!(
        "| `request-push --all`, nothing changed | {unchanged:.2} s ({:.0} repos/s) | | < 1 s for 10000 |",
        n as f64 / unchanged
    );
    println!(
        "| daemon start-up sweep{} | {sweep:.2} s | | < 1 s |",
        if sweep_logged {
            ""
        } else {
            " (no log line: start until `request-push --all` answers)"
        }
    );
    println!("| `status`, all repos | {status:.2} s | | < 1 s |");
    println!(
        "| `verify --all`, {} repos x 2 slaves, nothing drifted | {verify:.2} s | | < 5 s for 10000 |",
        o.repos
    );
    println!("| push, no slaves | {push_lonely:.3} s | | |");
    println!(
        "| push, 2 slaves, async | {push_async:.3} s | {:.2} of no slaves | <= 1.05, as with 10 repos |",
        push_async / push_lonely
    );
    println!(
        "| catch-up: {} repos changed while a slave was down | {catch_up:.1} s from its return ({:.0} repos/s) | | |",
        o.catch_up,
        o.catch_up as f64 / catch_up
    );
    println!("| daemon peak RSS (VmHWM), whole run | {rss_mib:.1} MiB | | < 48 MiB |");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    fs::create_dir_all(&out).unwrap();
    fs::write(
        out.join("scale.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    println!("{results}");
}
