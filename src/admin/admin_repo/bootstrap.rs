//! `gitmirror init --admin NAME KEYFILE`: the admin repo, created with a first commit that
//! holds the server's configuration as it is, and NAME registered with `RW+` on it.
//!
//! Safe to run again while the repo has no history (a run that stopped half-way is finished);
//! once it has any, it is refused: that history is the cluster's configuration.

use std::path::Path;

use tracing::{info, warn};

use super::snapshot::{Snapshot, default_branch};
use super::{ADMIN_REPO, AdminRepoError, name};
use crate::admin::compile;
use crate::admin::keys::{self, Role};
use crate::config::{Access, Rules, ServerConfig, Source};
use crate::daemon::client;
use crate::fs::{Context, write_if_changed};
use crate::home::Home;
use crate::invocation::Invocation;
use crate::names::AccountName;
use crate::replicate::queue::Queue;
use crate::repo::Store;

/// What `init --admin` did.
#[derive(Debug, Clone)]
pub(crate) struct Bootstrapped {
    /// The first commit.
    pub(crate) commit: String,
    /// The branch it is on.
    pub(crate) branch: String,
    /// Whether repos.toml got a `[repos.gitmirror-admin]` table.
    pub(crate) rule_added: bool,
    /// The slaves the first commit was queued for (when this server masters the repo).
    pub(crate) queued: Vec<AccountName>,
}

/// Creates the admin repo on the initialised home `home` (see the module doc).
pub(crate) fn bootstrap(
    home: &Home,
    admin: &str,
    key_file: &Path,
) -> Result<Bootstrapped, AdminRepoError> {
    let config = ServerConfig::of(home)?;
    let admin = AccountName::parse(admin).map_err(keys::KeyError::from)?;
    let store = Store::new(home.repositories());
    if let Some(path) = store.find(&name()) {
        let repo = git2::Repository::open_bare(&path)?;
        if let Some(r) = repo.references()?.flatten().next() {
            return Err(AdminRepoError::HasHistory {
                branch: r.name().unwrap_or("a ref").to_string(),
                commit: r.target().map(|o| o.to_string()).unwrap_or_default(),
            });
        }
    }

    // Everything that can be checked is, before the first change.
    let rules_path = home.rules_path();
    let text = std::fs::read_to_string(&rules_path).at("cannot read", &rules_path)?;
    let rules = Rules::from_source(&Source::from_text(&rules_path, text.clone()))?;
    let rule_added = !rules.named_repos().any(|r| r == &name());
    let text = if rule_added {
        let mut text = text;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!(
            "\n# The admin repo: its default branch is this configuration (see README).\n\
             [repos.{ADMIN_REPO}]\n\"RW+\" = [\"{admin}\"]\n"
        ));
        let added = Rules::from_source(&Source::from_text(&rules_path, text.clone()))?;
        if added.access(&admin, &name()) != Access::Rewind {
            return Err(AdminRepoError::NoRewind {
                user: admin.to_string(),
            });
        }
        text
    } else if rules.access(&admin, &name()) != Access::Rewind {
        return Err(AdminRepoError::NoRewind {
            user: admin.to_string(),
        });
    } else {
        text
    };

    let invocation = Invocation::current(home, config.program.as_deref())?;
    keys::add(home, Role::User, admin.as_str(), key_file, &invocation)?;
    write_if_changed(&rules_path, text.as_bytes(), 0o600)?;
    compile::compile(home, false)?;
    let Some(path) = store.find(&name()) else {
        return Err(AdminRepoError::Git(
            "compile did not create the repo; see the log".into(),
        ));
    };

    let snapshot = Snapshot::of_home(home, &config.hostname)?;
    let repo = git2::Repository::open_bare(&path)?;
    let tree = repo.find_tree(snapshot.write_tree(&repo)?)?;
    let branch = default_branch(&repo)?;
    let who = git2::Signature::now("gitmirror", &format!("gitmirror@{}", config.hostname))?;
    let message = format!(
        "The configuration of {} as it was when its admin repo was created\n\n\
         Created by `gitmirror init --admin {admin}`.\n",
        config.hostname
    );
    // With no parents, git2 refuses to move a branch that exists: a concurrent first commit
    // is not overwritten.
    let commit = repo.commit(Some(&branch), &who, &who, &message, &tree, &[])?;
    info!(%commit, %branch, admin = %admin, "admin repo created");

    // The commit did not come through a push, so no hook queued it for the slaves.
    let mut queued = Vec::new();
    if let Some(rule) = snapshot.rules.mirror(&name())
        && rule.is_master(&config.hostname)
        && !rule.slaves.is_empty()
    {
        match Queue::new(home.queue_dir()).enqueue_record(&name(), &rule.slaves) {
            Ok(_) => {
                queued = rule.slaves.clone();
                if let Err(e) = client::notify(home, &name()) {
                    warn!(error = %e, "cannot reach the daemon; the admin repo stays queued");
                }
            }
            Err(e) => warn!(error = %e, "cannot queue the admin repo for its slaves"),
        }
    }
    Ok(Bootstrapped {
        commit: commit.to_string(),
        branch,
        rule_added,
        queued,
    })
}
