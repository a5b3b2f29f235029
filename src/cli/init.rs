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
        print(&init_message(home, &hostname, &report))?;
        return admin_repo(home, name, Path::new(keyfile));
    }
    print(&init_message(home, &hostname, &report))
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

fn init_message(home: &Home, hostname: &AccountName, report: &init::InitReport) -> String {
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
    out.push_str(&format!(
        "\nNext steps:\n\
         1. Let sshd serve the {account} account through gitmirror: add to /etc/ssh/sshd_config\n\n{}\n\
         2. Add users: gitmirror add-user alice alice.pub\n   (their keys go into {}; gitmirror owns its own block there)\n\
         3. Describe repos and access in {}, then run: gitmirror compile\n\
         4. Hand {} to the peer servers that will mirror with this one.\n",
        SSHD_SNIPPET.replace("Match User git", &format!("Match User {account}")),
        home.authorized_keys().display(),
        home.rules_path().display(),
        report.peer_key.display(),
    ));
    out
}
