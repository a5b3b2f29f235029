//! `add-user`, `add-mirroring-peer`, `remove-user`, `remove-mirroring-peer`: the four key
//! commands, one file since they differ only in role and direction.

use std::path::Path;

use super::{Config, Outcome, print};
use crate::admin::admin_repo::{self, ADMIN_REPO};
use crate::admin::keys::{self, Role};
use crate::home::Home;
use crate::invocation::Invocation;
use crate::repo::Store;

/// `add-user NAME KEYFILE`.
pub(super) fn add_user(home: &Home, config: Config, name: &str, keyfile: &Path) -> Outcome {
    add_key(home, config, Role::User, name, keyfile)
}

/// `remove-user NAME`.
pub(super) fn remove_user(home: &Home, config: Config, name: &str) -> Outcome {
    remove_key(home, config, Role::User, name)
}

/// `remove-mirroring-peer NAME`.
pub(super) fn remove_peer(home: &Home, config: Config, name: &str) -> Outcome {
    remove_key(home, config, Role::Peer, name)
}

/// How the rewritten authorized_keys lines run gitmirror: `program` from gitmirror.toml, or
/// the path this command was run as. A gitmirror.toml that cannot be read stops the command
/// (its `program` might name another path).
fn invocation(home: &Home, config: Config) -> Result<Invocation, String> {
    let config = config.map_err(|e| e.to_string())?;
    Invocation::current(home, config.program.as_deref()).map_err(|e| e.to_string())
}

/// A warning when the server has an admin repo: its next push or compile makes the keys
/// those it holds, so a key changed here by hand would silently not last.
fn admin_repo_note(home: &Home) -> String {
    let has_admin_repo = Store::new(home.repositories())
        .find(&admin_repo::name())
        .is_some();
    if has_admin_repo {
        format!(
            "gitmirror: note: this server has {ADMIN_REPO}; its next push (or compile) makes the keys those it holds: commit this change there too\n"
        )
    } else {
        String::new()
    }
}

fn add_key(home: &Home, config: Config, role: Role, name: &str, keyfile: &Path) -> Outcome {
    let invocation = invocation(home, config)?;
    let outcome = keys::add(home, role, name, keyfile, &invocation).map_err(|e| e.to_string())?;
    let what = match outcome {
        keys::Added::New => "added",
        keys::Added::Replaced => "key replaced for",
        keys::Added::Unchanged => "unchanged:",
    };
    print(&format!(
        "gitmirror: {what} {role} {name} ({})\n{}",
        home.authorized_keys().display(),
        admin_repo_note(home)
    ))
}

fn remove_key(home: &Home, config: Config, role: Role, name: &str) -> Outcome {
    let invocation = invocation(home, config)?;
    keys::remove(home, role, name, &invocation).map_err(|e| e.to_string())?;
    print(&format!(
        "gitmirror: removed {role} {name} ({})\n{}",
        home.authorized_keys().display(),
        admin_repo_note(home)
    ))
}

/// `add-mirroring-peer NAME.pub`: the peer's name is the key file's stem, as with gitolite's
/// `add-mirroring-peer`.
pub(super) fn add_peer(home: &Home, config: Config, keyfile: &Path) -> Outcome {
    let stem = keyfile
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".pub"))
        .ok_or_else(|| format!("{}: expected a file named PEER.pub", keyfile.display()))?;
    add_key(home, config, Role::Peer, stem, keyfile)
}
