//! The main job, shown end to end on one machine: three gitmirror servers, each behind its
//! own real sshd on its own 127.0.0.x address, set up with gitmirror's own commands; a user
//! pushes to the master and the commit appears on both slaves.
//!
//! Run it with `scripts/demo` (as root). It uses the same harness as the integration tests,
//! and everything it starts is stopped and removed when it ends.

use std::process::ExitCode;

use gitmirror_testkit::{Client, Cluster, OutputExt};

fn step(text: &str) {
    println!("\n==> {text}");
}

fn indent(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

const RULES: &str = r#"[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2", "server3"]

[repos.testing]
"RW+" = ["alice"]
"#;

fn main() -> ExitCode {
    step("three servers: a unix account each, `gitmirror init --hostname NAME`, sshd in front");
    step(
        "peers: [peers.NAME] in each gitmirror.toml, `gitmirror add-mirroring-peer NAME.pub` both ways",
    );
    let cluster = Cluster::new(&["server1", "server2", "server3"]);
    for s in &cluster.servers {
        println!(
            "    {}: account {}, home {}, sshd on {}:{}",
            s.hostname,
            s.user.name,
            s.home().display(),
            s.addr,
            s.port
        );
    }
    let (s1, s2, s3) = (
        cluster.server("server1"),
        cluster.server("server2"),
        cluster.server("server3"),
    );
    let greeting = s1.ssh_as_peer(s2, "info");
    println!("    server1 -> server2 info: {}", greeting.text().trim());

    step("alice's key on every server: `gitmirror add-user alice alice.pub`");
    let alice = Client::new("alice");
    cluster.add_user(&alice);

    step("the same repos.toml on every server, then `gitmirror compile`");
    indent(RULES);
    cluster.set_rules(RULES);

    step("alice commits and pushes to the master, server1 (sync mode there, to see each slave)");
    s1.set_sync(true);
    let head = alice.init_repo("work");
    let push = alice.git_in("work", &["push", &s1.url("testing"), "main"]);
    indent(&push.err());
    if !push.status.success() {
        eprintln!("demo: the push failed");
        return ExitCode::FAILURE;
    }

    let mut ok = true;
    for slave in [s2, s3] {
        step(&format!(
            "on {}'s disk: `git log` of repositories/testing.git",
            slave.hostname
        ));
        let log = slave.git("testing", &["log", "--oneline", "-1", "main"]);
        indent(&log.text());
        let there = slave.git("testing", &["rev-parse", "main"]).text();
        ok &= there.trim() == head;
    }

    step("a user's push to a slave is refused, naming the master");
    alice.commit("work", "more");
    let refused = alice.git_in("work", &["push", &s2.url("testing"), "main"]);
    indent(&refused.err());

    step("server1's log (gitmirror.log)");
    indent(&s1.log());

    if ok && !refused.status.success() {
        println!(
            "\ndemo: OK, server2 and server3 have alice's commit {}",
            &head[..12]
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("demo: a slave does not have {head}");
        ExitCode::FAILURE
    }
}
