//! The contract: every word one gitmirror process writes and another reads, in one place.
//!
//! A master and its slaves run gitmirror builds that may differ by a version, and the forced
//! commands, the hooks and the daemon on one server are separate processes: what they say to
//! each other (push options, reserved refs, hook messages, verbs, environment variables,
//! git-config keys, how a repo name becomes a file name) must not drift apart by a typo in one
//! of them. Changing any value here changes the wire or disk format; keep old values readable
//! when you do. (Where files live in a home is the `home` module's business.)

use crate::names::{AccountName, RepoName};

// ---- Master to slave, inside a mirror push -------------------------------------------------

/// The admin repo: every server applies its default branch when a push moves it, and a
/// master's daemon retries a slave's refused pushes at once when the slave has just taken it.
pub(crate) const ADMIN_REPO: &str = "gitmirror-admin";

/// The push option that carries the master's HEAD to a slave (`gitmirror.head=refs/heads/x`).
pub(crate) const HEAD_OPTION: &str = "gitmirror.head=";

/// Each server's own ref namespace: never shown to users, never sent to peers, never pruned
/// by a mirror push. Leaving it out also means a promoted former slave cannot push its kept
/// refs.
pub(crate) const OWN_NS: &str = "refs/gitmirror/";

/// [`OWN_NS`] as `transfer.hideRefs` takes it.
pub(crate) const OWN_NS_HIDDEN: &str = "refs/gitmirror";

/// The throwaway ref that carries a HEAD-only change (a push option needs a ref update to ride
/// on); the slave's hook deletes it on arrival.
pub(crate) const SET_HEAD_REF: &str = "refs/gitmirror/set-head";

/// Where a slave keeps refs that a mirror push overwrote after they had changed behind the
/// master's back: `refs/gitmirror/diverged/<time>/<ref without refs/>`.
pub(crate) const DIVERGED_NS: &str = "refs/gitmirror/diverged/";

/// [`DIVERGED_NS`] as `transfer.hideRefs` takes it.
pub(crate) const DIVERGED_NS_HIDDEN: &str = "refs/gitmirror/diverged";

/// Where a server keeps refs that a mirror push overwrote after a change of master, when
/// the new value does not contain the old one: `refs/gitmirror/orphaned/<epoch>/<ref without
/// refs/>`. Kept until an administrator resolves them, never pruned, hidden from everyone.
pub(crate) const ORPHANED_NS: &str = "refs/gitmirror/orphaned/";

/// [`ORPHANED_NS`] as `transfer.hideRefs` takes it.
pub(crate) const ORPHANED_NS_HIDDEN: &str = "refs/gitmirror/orphaned";

/// How a slave's hook starts each line about a diverged ref; the master collects these lines
/// from the push's messages and records them.
pub(crate) const DIVERGED_PREFIX: &str = "DIVERGED: ";

/// How a server starts each line about a ref it kept as orphaned; the master collects these
/// lines like [`DIVERGED_PREFIX`]'s.
pub(crate) const ORPHANED_PREFIX: &str = "ORPHANED: ";

/// How a forced command starts its one-line refusal; a master reads the slave's words after it.
pub(crate) const FATAL_PREFIX: &str = "FATAL: ";

/// How a peer's refusal ends when it does not have the repo at all: the one refusal a master
/// may take for "the slave is empty" (a mirror push then creates the repo there).
pub(crate) const NO_SUCH_REPO: &str = "no such repo here";

/// The verb a slave sends its master to ask for a push now (users may send it too).
pub(crate) const REQUEST_PUSH_VERB: &str = "request-push";

/// The verb a master's daemon pushes with (`mirror-receive-pack EPOCH 'REPO' ['HEAD-REF']`,
/// peers only; EPOCH is the one it masters the repo at): git's receive-pack protocol, with the slave's post-receive work done by the forced
/// command itself after receive-pack ends instead of by hook processes, and HEAD named on the
/// command line instead of in a push option. `git-receive-pack` keeps working for peers.
pub(crate) const MIRROR_RECEIVE_VERB: &str = "mirror-receive-pack";

/// The verb a slave carries a user's push to the repo's master with
/// (`redirect-receive-pack USER 'REPO'`, peers only; see [`redirect_command`]): git's
/// receive-pack protocol, decided and run on the master as a push by USER made there.
pub(crate) const REDIRECT_RECEIVE_VERB: &str = "redirect-receive-pack";

/// The command line of [`REDIRECT_RECEIVE_VERB`] for `user`'s push to `repo`. Both names are
/// validated, so neither holds a quote or a space.
pub(crate) fn redirect_command(user: &AccountName, repo: &RepoName) -> String {
    format!("{REDIRECT_RECEIVE_VERB} {user} '{repo}'")
}

/// How often a slave taking a mirror push sends the master a keepalive while it works on the
/// pack (git's own `receive.keepAlive` is 5 s): well under the shortest inactivity limit
/// (`io_timeout_secs`) a master may reasonably set, even on a loaded machine.
pub(crate) const MIRROR_KEEPALIVE_SECS: u64 = 2;

/// The verb a master's daemon sends a store operation with (`store-op EPOCH OP ARGS...`,
/// peers only; see `repo::store_op`): delete into the trash, restore, rename, purge, applied
/// by the slave only where it agrees the sender masters the repo at EPOCH.
pub(crate) const STORE_OP_VERB: &str = "store-op";

/// The verb an administrator deletes a repo with over ssh (`delete REPO`): into the trash, on
/// the repo's master and every slave.
pub(crate) const DELETE_VERB: &str = "delete";

/// The verb a user has a pull mirror fetched from its upstream now with (`fetch REPO`).
pub(crate) const FETCH_VERB: &str = "fetch";

/// The verb a user creates a repo with where a pattern's `C` allows it (`create REPO`).
pub(crate) const CREATE_VERB: &str = "create";

/// The verb that shows a user-created repo's creator and roles, and lets its creator change
/// them (`perms REPO`, `perms REPO + READERS bob`, `perms REPO - WRITERS bob`).
pub(crate) const PERMS_VERB: &str = "perms";

/// The verb a master sends its slave to compare their copies (peers only; see
/// `replicate::verify::wire`).
pub(crate) const VERIFY_VERB: &str = "verify";

/// How a refusal names the master and epoch a server knows for a repo: a peer that claimed
/// mastership with less learns the winner from it (see [`master_claim`]).
pub(crate) fn claim_words(master: &AccountName, epoch: u64) -> String {
    format!("its master here is {master} at epoch {epoch}")
}

/// The master and epoch named by [`claim_words`] in a refusal's text, if any.
pub(crate) fn master_claim(text: &str) -> Option<(AccountName, u64)> {
    const LEAD: &str = "its master here is ";
    let rest = &text[text.find(LEAD)? + LEAD.len()..];
    let mut words = rest.split_whitespace();
    let master = AccountName::parse(words.next()?).ok()?;
    if words.next()? != "at" || words.next()? != "epoch" {
        return None;
    }
    let digits: String = words
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((master, digits.parse().ok()?))
}

// ---- Forced command to hook, in git's environment -------------------------------------------

/// The user behind a push (empty for a peer's or a local push). The pre-receive script in
/// `hooks/` reads it too, by this name.
pub(crate) const ENV_USER: &str = "GITMIRROR_USER";
/// The peer behind a mirror push.
pub(crate) const ENV_PEER: &str = "GITMIRROR_PEER";
/// The slave that carried a user's push here (a redirected push); the user is in [`ENV_USER`].
pub(crate) const ENV_VIA: &str = "GITMIRROR_VIA";
/// The repo name as the client asked for it.
pub(crate) const ENV_REPO: &str = "GITMIRROR_REPO";
/// The user's access as the shell decided it (`RW`, `RW+`); the pre-receive script reads it.
pub(crate) const ENV_ACCESS: &str = "GITMIRROR_ACCESS";

/// The server home, for the administrator's commands (the forced commands never read it: their
/// environment comes partly from sshd).
pub(crate) const ENV_HOME: &str = "GITMIRROR_HOME";

/// The `PATH` git, its hooks and a spawned daemon run with: never the caller's.
pub(crate) const SAFE_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

// ---- A repo's own git config ------------------------------------------------------------------

/// The git config key naming a repo's master, as gitolite spelled it.
pub(crate) const MASTER_KEY: &str = "gitolite.mirror.master";
/// The git config key listing a repo's slaves (space separated), as gitolite spelled it.
pub(crate) const SLAVES_KEY: &str = "gitolite.mirror.slaves";
/// The git config key saying whether pushes to this repo wait for its slaves (gitmirror's own;
/// gitolite had no such setting).
pub(crate) const SYNC_KEY: &str = "gitmirror.sync";
/// The git config key saying whether a user's push to a slave of this repo is carried to its
/// master (read on the slave) and taken from a slave (read on the master); gitolite's
/// `redirectOK`, as a boolean.
pub(crate) const REDIRECT_KEY: &str = "gitmirror.redirect";
/// The git config key holding a repo's mastership epoch: a number that only grows, raised by
/// each promotion. Absent means 0, the epoch `repos.toml` first gave.
pub(crate) const EPOCH_KEY: &str = "gitmirror.epoch";
/// The git config key holding the epoch of the last mirror push a server took for a repo:
/// a push from a later epoch (a change of master) keeps what it overwrites as orphaned.
pub(crate) const RECEIVED_EPOCH_KEY: &str = "gitmirror.receivedEpoch";
/// Set (true) when `compile` wrote the keys above from `repos.toml`, so that it may remove
/// them again when the rules drop them; keys without it were set by hand and are kept.
pub(crate) const FROM_RULES_KEY: &str = "gitmirror.fromRules";

// ---- Files ------------------------------------------------------------------------------------

/// Replaced, in the hook scripts of `hooks/`, by how gitmirror invokes itself.
pub(crate) const HOOK_PLACEHOLDER: &str = "@GITMIRROR@";

/// A repo's name as one file name (`site/tools` -> `site~tools`), for per-repo state files.
/// `~` cannot occur in a repo name, so the flattened name is unique.
pub(crate) fn flat_name(repo: &RepoName) -> String {
    repo.as_str().replace('/', "~")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattening_is_unique_because_names_never_hold_a_tilde() {
        let repo = RepoName::parse("site/tools").unwrap();
        assert_eq!(flat_name(&repo), "site~tools");
        assert!(RepoName::parse("site~tools").is_err());
    }

    #[test]
    fn a_claim_reads_back_from_any_refusal() {
        let m = AccountName::parse("server2").unwrap();
        let text = format!(
            "FATAL: server3 refuses r from server1: {}; ask it",
            claim_words(&m, 7)
        );
        assert_eq!(master_claim(&text), Some((m, 7)));
        assert_eq!(master_claim("its master here is server1"), None);
        assert_eq!(master_claim("its master here is ../x at epoch 3"), None);
    }

    #[test]
    fn hidden_forms_match_their_namespaces() {
        assert_eq!(format!("{OWN_NS_HIDDEN}/"), OWN_NS);
        assert_eq!(format!("{DIVERGED_NS_HIDDEN}/"), DIVERGED_NS);
        assert_eq!(format!("{ORPHANED_NS_HIDDEN}/"), ORPHANED_NS);
        assert!(SET_HEAD_REF.starts_with(OWN_NS) && DIVERGED_NS.starts_with(OWN_NS));
        assert!(ORPHANED_NS.starts_with(OWN_NS));
    }
}
