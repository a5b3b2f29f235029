//! `gitmirror init --hostname NAME`: creates the home and says what to do next.

use super::{Outcome, print};
use std::path::Path;

use crate::admin::admin_repo::{ADMIN_REPO, bootstrap};
use crate::admin::init;
use crate::home::Home;
use crate::names::AccountName;

const SSHD_SNIPPET: &str = include_str!("../../conf/sshd_config.snippet");

pub(super) fn run(home: &Home, hostname: &str, admin: Option<&[String]>) -> Outcome {
    let hostname = AccountName::parse(hostname).map_err(|e| format!("--hostname: {e}"))?;
    let report = init::init(home, &hostname).map_err(|e| e.to_string())?;
    if let Some([name, keyfile]) = admin {
        print(&init_message(home, &hostname, &report, true))?;
        return admin_repo(home, name, Path::new(keyfile));
    }
    print(&init_message(home, &hostname, &report, false))
}

/// `--admin NAME KEYFILE`: the admin repo, and how to use it.
fn admin_repo(home: &Home, name: &str, keyfile: &Path) -> Outcome {
    let done = bootstrap::bootstrap(home, name, keyfile).map_err(|e| e.to_string())?;
    let mut out = String::new();
    if done.rule_added {
        out.push_str(&format!(
            "  added [repos.{ADMIN_REPO}] to repos.toml: {name} has RW+ on it
"
        ));
    }
    out.push_str(&format!(
        "gitmirror: created {ADMIN_REPO} ({} at {}) from this server's repos.toml and keys.
",
        done.branch,
        &done.commit[..12.min(done.commit.len())]
    ));
    if !done.queued.is_empty() {
        let slaves: Vec<String> = done.queued.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "  queued for {}
",
            slaves.join(", ")
        ));
    }
    out.push_str(&format!(
        "From now on, configure this server by pushing to it: git clone <this account>@<this host>:{ADMIN_REPO}, edit, commit, push.
"
    ));
    print(&out)
}

fn init_message(
    home: &Home,
    hostname: &AccountName,
    report: &init::InitReport,
    admin: bool,
) -> String {
    let account = std::env::var("USER").unwrap_or_else(|_| "git".into());
    let mut out = format!(
        "gitmirror: server home {} is ready for {hostname}.\n",
        home.root().display()
    );
    for path in &report.created {
        out.push_str(&format!("  created {}\n", path.display()));
    }
    for path in &report.made_private {
        out.push_str(&format!(
            "  made {} private to this account (was readable by others)\n",
            path.display()
        ));
    }
    let key = report.peer_key.display();
    let configure = if admin {
        format!("2. Configure it by pushing to {ADMIN_REPO} (below).\n")
    } else {
        format!(
            "2. Configure it, one of three ways:\n\
             \x20  - by hand: gitmirror add-user alice alice.pub (keys go into {}),\n\
             \x20    describe repos and access in {}, then run: gitmirror compile\n\
             \x20  - with an admin repo this server masters: gitmirror init --hostname {hostname} --admin alice alice.pub,\n\
             \x20    then: git clone {account}@THIS-HOST:{ADMIN_REPO}, edit, commit, push\n\
             \x20  - as a new server of a cluster that has an admin repo (README: Adding a server):\n\
             \x20    here: gitmirror add-mirroring-peer MASTER.pub (the admin repo master's key);\n\
             \x20    on the master: a [peers.{hostname}] table in gitmirror.toml, unless {hostname} is an ssh host alias;\n\
             \x20    in a clone of {ADMIN_REPO}: add {key} as keys/peers/{hostname}.pub and {hostname} to the\n\
             \x20    slaves in repos.toml, commit, push\n",
            home.authorized_keys().display(),
            home.rules_path().display(),
        )
    };
    out.push_str(&format!(
        "\nNext steps:\n\
         1. Let sshd serve the {account} account through gitmirror: add to /etc/ssh/sshd_config\n\n{}\n\
         {configure}\
         3. Hand {key} to the peer servers that will mirror with this one.\n",
        SSHD_SNIPPET.replace("Match User git", &format!("Match User {account}")),
    ));
    out
}
