//! The main job, shown end to end on one machine: a gitmirror server behind a real sshd, set
//! up with gitmirror's own commands, taking a push from the real git client.
//!
//! Run it with `scripts/demo` (as root). It uses the same harness as the integration tests,
//! and everything it starts is stopped and removed when it ends.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::process::ExitCode;

use support::{Client, OutputExt, Server};

fn step(text: &str) {
    println!("\n==> {text}");
}

fn indent(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

fn main() -> ExitCode {
    step("server1: a unix account, `gitmirror init --hostname server1`, and sshd in front");
    let server = Server::start("server1");
    println!(
        "    account {} (home {}), sshd on {}:{}",
        server.user.name,
        server.home().display(),
        server.addr,
        server.port
    );

    step("alice's key: `gitmirror add-user alice alice.pub`");
    let alice = Client::new("alice");
    server.add_user("alice", &alice.key);
    indent(&fs::read_to_string(server.home().join(".ssh/authorized_keys")).unwrap_or_default());

    step("repos.toml gives alice RW+ on `testing`; `gitmirror compile` creates it");
    let rules = "[repos.testing]\n\"RW+\" = [\"alice\"]\n";
    indent(rules);
    server.set_rules(rules);

    step("alice: `ssh git@server1 info`");
    indent(&alice.ssh(&server, "info").ok());

    step("alice commits and runs `git push` to server1");
    let head = alice.init_repo("work");
    let push = alice.git_in("work", &["push", &server.url("testing"), "main"]);
    indent(&push.err());
    if !push.status.success() {
        eprintln!("demo: the push failed");
        return ExitCode::FAILURE;
    }

    step("on server1's disk: `git log` of repositories/testing.git");
    let log = server
        .git("testing", &["log", "--oneline", "-1", "main"])
        .ok();
    indent(&log);
    let on_server = server.git("testing", &["rev-parse", "main"]).ok();

    step("server1's log (gitmirror.log)");
    indent(&server.log());

    if on_server.trim() == head {
        println!("\ndemo: OK, server1 has alice's commit {}", &head[..12]);
        ExitCode::SUCCESS
    } else {
        eprintln!("demo: server1 has {on_server}, expected {head}");
        ExitCode::FAILURE
    }
}
