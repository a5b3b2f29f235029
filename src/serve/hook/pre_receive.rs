//! The pre-receive hook: what no pusher may push, and what the rules allow each ref.
//!
//! Every user's push and every push made on the server's disk runs it (peers' mirror pushes
//! run only the post-receive hook): a ref that cannot be mirrored, once accepted, would stop
//! replication of the whole repo, so it is refused for everyone, `RW+` included.

use tracing::info;

use super::{HookError, PushedBy, RefUpdate};
use crate::admin::admin_repo::{self, gate};
use crate::config::rules::Decision;
use crate::config::{Ask, Rules};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::repo::{Store, wild};

/// Namespaces in which `RW` may create refs and fast-forward them. Anything else (say
/// `refs/replace/`, which changes what every fetcher sees) needs `RW+`.
const RW_NAMESPACES: &[&str] = &["refs/heads/", "refs/tags/", "refs/notes/"];

/// What `u` asks of the rules, as gitolite classes an update: a deletion `D` (a rewind where
/// no rule uses `D`), a creation `C` (a write where no rule uses `C`), a moved tag or a
/// non-fast-forward `+`, anything else `W`. Outside `refs/heads`, `refs/tags` and
/// `refs/notes` (say `refs/replace/`, which changes what every fetcher sees) an update is a
/// rewind. Returns the ask and the words for a refusal.
fn ask_of(repo: &git2::Repository, u: &RefUpdate) -> (Ask, String) {
    if u.new.is_zero() {
        return (Ask::DeleteRef, format!("deleting {}", u.name));
    }
    if !RW_NAMESPACES.iter().any(|ns| u.name.starts_with(ns)) {
        return (
            Ask::Rewind,
            format!(
                "updating {} (outside refs/heads, refs/tags and refs/notes)",
                u.name
            ),
        );
    }
    if u.old.is_zero() {
        return (Ask::CreateRef, format!("creating {}", u.name));
    }
    if u.old == u.new {
        return (Ask::Write, format!("updating {}", u.name));
    }
    if u.name.starts_with("refs/tags/") {
        return (Ask::Rewind, format!("moving tag {}", u.name));
    }
    let commit = |oid| {
        repo.find_object(oid, None)
            .and_then(|o| o.peel_to_commit())
            .map(|c| c.id())
    };
    match (commit(u.old), commit(u.new)) {
        (Ok(old), Ok(new)) if repo.graph_descendant_of(new, old).unwrap_or(false) => {
            (Ask::Write, format!("updating {}", u.name))
        }
        _ => (
            Ask::Rewind,
            format!("rewinding {} (a non-fast-forward update)", u.name),
        ),
    }
}

/// Why the rules refuse `what`: the deny rule that decided, or the permission it needs.
fn refusal(what: &str, ask: Ask, decision: &Decision) -> String {
    match &decision.by {
        Some(g) => format!(
            "{what}: denied by repos.toml line {} ({})",
            g.line,
            g.text()
        ),
        None => {
            let needs = match ask {
                Ask::Rewind => "RW+",
                Ask::CreateRef => "RWC or RW+C",
                Ask::DeleteRef => "RWD or RW+D",
                _ => "RW",
            };
            format!("{what} needs {needs}")
        }
    }
}

/// Why `u` cannot be mirrored, if it cannot: a name that is not UTF-8, or a ref that points
/// at something other than history (libgit2 would send a tree or blob without its contents).
fn unmirrorable(repo: &git2::Repository, u: &RefUpdate) -> Option<String> {
    if !u.utf8 {
        return Some(format!("ref name {:?} is not UTF-8", u.name));
    }
    if u.new.is_zero() {
        return None;
    }
    let object = match repo.find_object(u.new, None) {
        Ok(o) => o,
        Err(e) => return Some(format!("{} points at {}: {}", u.name, u.new, e.message())),
    };
    match object.kind() {
        Some(git2::ObjectType::Commit) => None,
        Some(git2::ObjectType::Tag) if object.peel(git2::ObjectType::Commit).is_ok() => None,
        Some(git2::ObjectType::Tag) => Some(format!("{} is a tag of a tree or blob", u.name)),
        kind => Some(format!(
            "{} points at a {}",
            u.name,
            kind.map_or("non-commit", |k| k.str())
        )),
    }
}

/// The pre-receive check. Every update must be one that can be mirrored, and, for users with
/// plain `RW`, one `RW` allows. The whole push is refused on the first that is not, so an
/// `--atomic` push and a plain one end the same way. Runs inside git's quarantine, so the
/// repository is opened from git's environment.
pub(crate) fn pre_receive(
    home: &Home,
    pusher: &PushedBy,
    updates: &[RefUpdate],
) -> Result<(), HookError> {
    let refuse = |refused: String| {
        info!(actor = %pusher.actor, repo = %pusher.repo, decision = "deny", reason = %refused, "ref update");
        HookError::Refused {
            user: pusher.actor.clone(),
            repo: pusher.repo.clone(),
            refused,
        }
    };
    let repo = git2::Repository::open_from_env().map_err(HookError::Repo)?;
    for u in updates {
        if let Some(why) = unmirrorable(&repo, u) {
            info!(actor = %pusher.actor, repo = %pusher.repo, decision = "deny", reason = %why, "ref update");
            return Err(HookError::Unmirrorable { why });
        }
    }
    // Checked for RW+ as well: a broken configuration refused here changes nothing anywhere.
    let name = RepoName::parse(&pusher.repo).ok().or_else(|| {
        let here = std::env::current_dir().ok()?;
        Store::new(home.repositories()).name_of(&here)
    });
    if name.as_ref().is_some_and(admin_repo::is_admin_repo) {
        let pushed: Vec<(&str, git2::Oid)> =
            updates.iter().map(|u| (u.name.as_str(), u.new)).collect();
        if let Err(e) = gate::check_push(&repo, &pushed) {
            info!(actor = %pusher.actor, repo = %pusher.repo, decision = "deny", reason = %e, "admin push");
            return Err(HookError::AdminRefused(gate::refusal(&e)));
        }
    }
    match pusher.access.as_str() {
        "RW" | "RW+" => {}
        // A push made on the server's own disk: its administrator's.
        "" if pusher.actor.is_empty() => return Ok(()),
        other => return Err(refuse(format!("pushing with access {other:?}"))),
    }
    // Each ref is decided by the rules, as `gitmirror access` decides it.
    let (Some(name), Ok(user)) = (name, AccountName::parse(&pusher.actor)) else {
        return Err(refuse("pushing to a repo it cannot name".to_string()));
    };
    let rules =
        Rules::compiled_for(home, &name).map_err(|e| refuse(format!("reading the rules: {e}")))?;
    let roles = wild::roles(repo.path()).map_err(|e| refuse(e.to_string()))?;
    // Gathered once for the whole push, then asked per ref.
    let applicable = rules.applicable(&name, roles.creator.as_ref().map(|c| c.as_str()));
    for u in updates {
        let (ask, what) = ask_of(&repo, u);
        let decision = applicable.decide(&user, ask, Some(&u.name), &roles);
        if !decision.allowed {
            return Err(refuse(refusal(&what, ask, &decision)));
        }
    }
    Ok(())
}
