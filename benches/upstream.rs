//! Pull mirrors (issue 13), on a local cluster of two servers (real sshd on 127.0.0.x): N
//! repos follow N upstreams (local bare repos, a few commits each), and server2 is their slave.
//! Not a test: it asserts only that the copies agree, never a time; it prints medians as a
//! table and JSON (also target/bench/upstream.json).
//!
//! Run: `scripts/bench upstream -- [--repos N] [--runs K] [--quick]` (as root).
//!
//! Each case brings every upstream's state to server1 and server2, measured against what an
//! administrator's cron job would do (pagure's mirror-in, gitlab-mirrors): as server1's
//! account, for each repo `git fetch --prune UPSTREAM +refs/heads/*:refs/heads/*
//! +refs/tags/*:refs/tags/*` into its own copy, then `git push --mirror` to the slave over one
//! shared ssh connection, 8 repos at a time.
//!
//! 1. From scratch: empty mirrors.
//! 2. Nothing changed upstream.
//! 3. One new commit in every upstream.
//!
//! gitmirror: `gitmirror fetch --all` (the daemon fetches 4 at a time and queues the slaves)
//! then `gitmirror request-push --all`, which returns once server2 has everything.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use gitmirror_testkit::*;

fn main() {
    let quick = arg_flag("--quick");
    let n = arg_value("--repos", if quick { 50 } else { 200 }).max(1);
    let runs = arg_value("--runs", if quick { 1 } else { 3 }).max(1);
    let (cores, mem_kib) = machine();
    eprintln!("setting up: 2 servers, {n} upstreams");
    let cluster = Cluster::new(&["server1", "server2"]);
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    let ups = s1.outside_dir("ups");
    let work = s1.outside_dir("ups-work");
    as_account(
        s1,
        &format!(
            "set -e\nmkdir -p {ups} {work}\ngit init -q -b main {work}/w\ncd {work}/w\n\
         for i in 1 2 3; do echo $i > f; git add f; git -c user.name=u -c user.email=u@x commit -q -m c$i; done\n\
         for i in $(seq 1 {n}); do git init -q --bare {ups}/up-$i.git; git push -q {ups}/up-$i.git main; done\n",
            ups = ups.display(),
            work = work.display()
        ),
    );
    // gitmirror's mirrors, and the baseline's copies (plain repos mastered by server1, so that
    // server2 takes the script's pushes as it takes any master's).
    let mut rules = String::from(
        "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n",
    );
    for i in 1..=n {
        rules.push_str(&format!(
            "[repos.\"m/{i}\"]\nupstream.url = \"{}/up-{i}.git\"\nupstream.interval = \"24h\"\n[repos.\"cron/{i}\"]\n",
            ups.display()
        ));
    }
    cluster.set_rules(&rules);
    let known_hosts = s1.home().join(".ssh/bench_known_hosts");
    let key = fs::read_to_string(s2.sshd_dir.path().join("host_ed25519.pub")).unwrap();
    let key: Vec<&str> = key.split_whitespace().take(2).collect();
    fs::write(
        &known_hosts,
        format!("[{}]:{} {}\n", s2.addr, s2.port, key.join(" ")),
    )
    .unwrap();
    let mirrors: Vec<String> = (1..=n).map(|i| format!("m/{i}")).collect();
    let crons: Vec<String> = (1..=n).map(|i| format!("cron/{i}")).collect();

    let mut table: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    for (case, prepare) in [
        ("from scratch", Prepare::Empty),
        ("nothing changed upstream", Prepare::Nothing),
        ("one new commit in every upstream", Prepare::Commit),
    ] {
        let (mut base, mut ours) = (Vec::new(), Vec::new());
        for run in 0..runs {
            match prepare {
                Prepare::Empty => {
                    // Fresh, empty copies on both sides (and a daemon that forgets them).
                    s1.stop_daemon();
                    for s in [s1, s2] {
                        for r in mirrors.iter().chain(&crons) {
                            let _ = fs::remove_dir_all(s.repo_path(r));
                        }
                        let _ = fs::remove_dir_all(s.home().join("state/queue"));
                        let _ = fs::remove_dir_all(s.home().join("state/external"));
                    }
                    s1.gitmirror(&["compile"]).ok();
                    s2.gitmirror(&["compile"]).ok();
                }
                Prepare::Nothing => {}
                Prepare::Commit => {
                    as_account(
                        s1,
                        &format!(
                            "set -e\ncd {work}/w\necho {run} >> f\ngit -c user.name=u -c user.email=u@x commit -q -am r{run}\n\
                         for i in $(seq 1 {n}); do git push -q {ups}/up-$i.git main; done\n",
                            ups = ups.display(),
                            work = work.display()
                        ),
                    );
                }
            }
            let t = Instant::now();
            cron_script(s1, s2, &ups, &known_hosts, n).ok();
            base.push(t.elapsed().as_secs_f64());
            assert_same(s1, s2, &crons, &ups);

            let t = Instant::now();
            s1.gitmirror(&["fetch", "--all"]).ok();
            s1.gitmirror(&["request-push", "--all"]).ok();
            ours.push(t.elapsed().as_secs_f64());
            assert_same(s1, s2, &mirrors, &ups);
            eprintln!(
                "  {case}, run {}: cron script {:.2} s, gitmirror {:.2} s",
                run + 1,
                base.last().unwrap(),
                ours.last().unwrap()
            );
        }
        table.push((case, base, ours));
    }
    let rss = s1.daemon_pid().and_then(peak_rss_kib).unwrap_or(0);
    println!(
        "gitmirror pull mirrors: {n} upstreams, 1 slave ({cores} cores, {:.1} GiB; medians of {runs} runs)",
        mem_kib as f64 / 1048576.0
    );
    println!(
        "| case | cron script (fetch, then push --mirror) | gitmirror (fetch --all, slave in sync) | ratio |"
    );
    println!("|---|---|---|---|");
    let mut json = Vec::new();
    for (case, base, ours) in table {
        let (b, o) = (median(base), median(ours));
        println!("| {case} | {b:.2} s | {o:.2} s | {:.2} |", o / b);
        json.push(format!(
            "{{\"case\":\"{case}\",\"cron_seconds\":{b},\"gitmirror_seconds\":{o}}}"
        ));
    }
    println!("| daemon peak RSS | | {:.1} MiB | |", rss as f64 / 1024.0);
    let json = format!(
        "{{\"repos\":{n},\"runs\":{runs},\"daemon_peak_rss_kib\":{rss},\"cases\":[{}]}}",
        json.join(",")
    );
    println!("{json}");
    let _ = fs::create_dir_all("target/bench");
    let _ = fs::write("target/bench/upstream.json", json);
}

#[derive(Clone, Copy)]
enum Prepare {
    Empty,
    Nothing,
    Commit,
}

fn as_account(s: &Server, script: &str) {
    run(s.user.command("sh").arg("-c").arg(script)).ok();
}

/// The baseline, as server1's account: fetch each upstream into `cron/N`, then push it to
/// server2 with `git push --mirror` over one shared ssh connection, 8 repos at a time.
fn cron_script(s1: &Server, s2: &Server, ups: &Path, known_hosts: &Path, n: usize) -> Output {
    let ssh = format!(
        "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -i {key} \
         -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes \
         -o ControlPath=%d/.bench-cm-%C -o ControlPersist=600",
        key = s1.home().join(".ssh/id_ed25519").display(),
        kh = known_hosts.display(),
    );
    let host = format!("-p {} {}@{}", s2.port, s2.user.name, s2.addr);
    let url = format!("ssh://{}@{}:{}", s2.user.name, s2.addr, s2.port);
    let script = format!(
        "set -u\nssh_cmd='{ssh}'\ntrap '$ssh_cmd -O exit {host} >/dev/null 2>&1' EXIT\n\
         $ssh_cmd -o ControlMaster=yes -f -N {host} </dev/null >/dev/null 2>&1 || exit 1\n\
         export GIT_SSH_COMMAND=\"$ssh_cmd -o ControlMaster=auto\"\n\
         seq 1 {n} | xargs -P 8 -I% sh -c 'git --git-dir=$HOME/repositories/cron/%.git fetch -q --prune {ups}/up-%.git \"+refs/heads/*:refs/heads/*\" \"+refs/tags/*:refs/tags/*\" && git --git-dir=$HOME/repositories/cron/%.git push -q --mirror {url}/cron/%.git'\n",
        ups = ups.display()
    );
    run(s1.user.command("sh").arg("-c").arg(script))
}

fn refs(path: &Path) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(path)
        .args([
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/heads",
            "refs/tags",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every repo in `repos` has its upstream's branches and tags on both servers.
fn assert_same(s1: &Server, s2: &Server, repos: &[String], ups: &Path) {
    let deadline = Instant::now() + Duration::from_secs(600);
    for (i, r) in repos.iter().enumerate() {
        let up: PathBuf = ups.join(format!("up-{}.git", i + 1));
        let want = refs(&up);
        for s in [s1, s2] {
            loop {
                let got = refs(&s.repo_path(r));
                if got == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{r} on {}: {got} != {want}",
                    s.hostname
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
