//! Failover (issue 11), on a local cluster of three servers (real sshd on 127.0.0.x), sync
//! mode, one repo. Not a test: it asserts only that the servers end in agreement, never a
//! time; it prints medians as a table and JSON (also target/bench/failover.json).
//!
//! Run: `scripts/bench failover -- [--runs K]` (as root).
//!
//! Each run: the current master is cut off from the other two, both ways (their forced
//! commands refuse each other's logins, as a partition would; users still reach everyone).
//! 1. Failover time: from `gitmirror promote` on a slave until a user's push to it has
//!    succeeded, which in sync mode means the remaining slave has the commit too.
//! 2. Convergence: the partition heals; from the new master's daemon starting again until
//!    the old master is identical to it and names it as its master, with no command on the
//!    old master. (The partition is made with forced commands, which bind at login, so the
//!    daemons' connections from during it are dropped first: that restart is the only act.)
//!
//! The next run cuts off the new master and promotes the next server, round the three.
//! A plain push to the master is measured alongside, for scale.

use std::time::{Duration, Instant};

use gitmirror_testkit::*;

const RULES: &str = "[repos.\"@all\"]\nmirror.master = \"server1\"\n\
                     mirror.slaves = [\"server2\", \"server3\"]\n\
                     [repos.testing]\n\"RW+\" = [\"alice\"]\n";

fn main() {
    let runs = arg_value("--runs", 5).max(1);
    let (cores, mem_kib) = machine();
    eprintln!("setting up: 3 servers");
    let cluster = Cluster::new(&["server1", "server2", "server3"]);
    for s in &cluster.servers {
        s.set_sync(true);
    }
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    cluster.set_rules(RULES);
    alice.init_repo("w");
    let names = ["server1", "server2", "server3"];
    let push = |server: &str, file: &str| {
        alice.commit("w", file);
        let url = cluster.server(server).url("testing");
        let t = Instant::now();
        alice.git_in("w", &["push", "-q", &url, "main"]).ok();
        t.elapsed().as_secs_f64()
    };
    push("server1", "warm-up");
    cluster.wait_in_sync("testing", "server1", &["server2", "server3"]);
    let mut plain = Vec::new();
    for i in 0..runs {
        plain.push(push("server1", &format!("plain-{i}")));
    }
    let (mut failover, mut converge) = (Vec::new(), Vec::new());
    for run_no in 0..runs {
        let (old, new) = (names[run_no % 3], names[(run_no + 1) % 3]);
        let other = names[(run_no + 2) % 3];
        eprintln!("run {}: {old} cut off, {new} promoted", run_no + 1);
        cluster.server(old).cut_off_from(&[new, other]);
        cluster.server(new).cut_off_from(&[old]);
        cluster.server(other).cut_off_from(&[old]);
        for s in &cluster.servers {
            s.stop_daemon();
        }
        let t = Instant::now();
        cluster.server(new).gitmirror(&["promote", "testing"]);
        push(new, &format!("after-{run_no}"));
        failover.push(t.elapsed().as_secs_f64());
        cluster.wait_in_sync("testing", new, &[other]);

        for s in &cluster.servers {
            s.heal();
            s.stop_daemon();
        }
        let t = Instant::now();
        let _daemon = cluster.server(new).start_daemon();
        wait_for(
            "the old master to converge",
            Duration::from_secs(120),
            || {
                let old_s = cluster.server(old);
                old_s.refs("testing") == cluster.server(new).refs("testing")
                    && old_s
                        .git("testing", &["config", "gitolite.mirror.master"])
                        .text()
                        .trim()
                        == new
            },
        );
        converge.push(t.elapsed().as_secs_f64());
        drop(_daemon);
    }
    let (plain_m, failover_m, converge_m) = (median(plain), median(failover), median(converge));
    println!(
        "gitmirror failover: 3 servers ({cores} cores, {:.1} GiB; medians of {runs} runs)",
        mem_kib as f64 / 1048576.0
    );
    println!("| case | measured | target |");
    println!("|---|---|---|");
    println!("| a user's push to the master, sync, 2 slaves (for scale) | {plain_m:.3} s | |");
    println!(
        "| failover: `promote` on a slave until a user's push to it has reached the other slave | {failover_m:.3} s | < 2 s |"
    );
    println!(
        "| convergence: the new master's daemon back until the old master is identical and names it | {converge_m:.3} s | |"
    );
    let json = format!(
        "{{\"runs\":{runs},\"plain_push_seconds\":{plain_m},\"failover_seconds\":{failover_m},\"converge_seconds\":{converge_m}}}"
    );
    println!("{json}");
    let _ = std::fs::create_dir_all("target/bench");
    let _ = std::fs::write("target/bench/failover.json", json);
}
