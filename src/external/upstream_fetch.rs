//! One fetch of a pull mirror from its upstream.
//!
//! git fetches over whatever transport the URL names into a namespace of this server's own
//! (`refs/gitmirror/upstream/`), which mirrors the upstream exactly and is never served or
//! sent to peers. Then the repo's refs are brought to it one decision per ref:
//!
//! - a new upstream ref is created, a fast-forward is taken;
//! - a ref the upstream rewound (or that moved here) has diverged: kept and reported, or with
//!   `divergence = "overwrite"` taken, the old value kept under `refs/gitmirror/diverged/`;
//! - a ref gone upstream is deleted only with `prune = true`, and never when the upstream
//!   suddenly advertises none of the refs it mirrors, or loses most of them at once: a
//!   truncated or wrong upstream is reported instead;
//! - HEAD follows the upstream's default branch.
//!
//! All updates land in one transaction, each checked against the value it was decided on.
//! The upstream's HEAD is asked for (one more round trip) only when something moved.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use thiserror::Error;

use super::remote::{RemoteError, RemoteGit};
use crate::config::external::{Divergence, Transport, Upstream, pattern_matches};
use crate::home::Home;
use crate::proto::{DIVERGED_NS, OWN_NS};
use crate::text::one_line;

/// Where the upstream's refs are fetched to first.
pub(crate) const STAGING_NS: &str = "refs/gitmirror/upstream/";

/// Refs deleted upstream at once beyond this share (and more than [`GUARD_MIN`]) are not
/// pruned here: a wrong or truncated upstream looks like that.
const GUARD_SHARE: f64 = 0.5;
/// Up to this many deletions at once are never suspicious.
const GUARD_MIN: usize = 3;

/// Why a fetch failed; the upstream's (or git's) own words where there are any.
#[derive(Debug, Error)]
pub(crate) enum FetchError {
    #[error("{0}")]
    Remote(#[from] RemoteError),
    #[error("cannot run git: {0}")]
    Spawn(std::io::Error),
    #[error("{0}")]
    Git(String),
    #[error("this repo: {0}")]
    Local(String),
}

/// One ref that went a different way here and upstream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DivergedRef {
    pub(crate) name: String,
    pub(crate) ours: String,
    pub(crate) theirs: String,
    /// Taken anyway (`overwrite`), ours kept under this ref.
    pub(crate) kept_as: Option<String>,
}

/// What a fetch did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Fetched {
    /// Refs created, moved or deleted here.
    pub(crate) updated: Vec<String>,
    /// Refs that diverged (kept, or overwritten and kept aside).
    pub(crate) diverged: Vec<DivergedRef>,
    /// Deletions held back by the guard, and why.
    pub(crate) guarded: Option<String>,
    /// Refs gone upstream and kept here because `prune` is off.
    pub(crate) not_pruned: usize,
    /// HEAD was set to this branch.
    pub(crate) head: Option<String>,
    /// How long it took, in milliseconds.
    pub(crate) millis: u64,
}

impl Fetched {
    /// Whether refs changed here (the slaves must be told).
    pub(crate) fn changed(&self) -> bool {
        !self.updated.is_empty() || self.head.is_some()
    }
}

/// Fetches `upstream` into the repo at `path`; `log` collects what happened, line by line, for
/// `status --log`.
pub(crate) async fn fetch(
    home: &Home,
    path: &Path,
    upstream: &Upstream,
    timeout: std::time::Duration,
    log: &mut Vec<String>,
) -> Result<Fetched, FetchError> {
    let started = Instant::now();
    let git = RemoteGit::new(home, &upstream.url, &upstream.credentials);
    let local = |e: git2::Error| FetchError::Local(e.message().into());
    let staged_before = {
        let repo = git2::Repository::open_bare(path).map_err(local)?;
        // Staging refs the patterns no longer take (they were narrowed) go first: git's
        // --prune only looks at this fetch's own destinations.
        for (name, _) in refs_under(&repo, STAGING_NS).map_err(local)? {
            let theirs = format!("refs/{}", &name[STAGING_NS.len()..]);
            if !upstream.refs.iter().any(|p| pattern_matches(p, &theirs))
                && let Ok(mut r) = repo.find_reference(&name)
            {
                r.delete().map_err(local)?;
            }
        }
        refs_under(&repo, STAGING_NS).map_err(local)?
    };
    // 1. The upstream's refs, into the staging namespace (pruned there, so it mirrors them).
    let mut cmd = git.command(path)?;
    cmd.args([
        "fetch",
        "--no-tags",
        "--no-write-fetch-head",
        "--prune",
        "--no-auto-gc",
        "--no-recurse-submodules",
        "--progress",
    ])
    .arg(&upstream.url.url);
    for p in &upstream.refs {
        cmd.arg(format!("+{p}:{STAGING_NS}{}", &p["refs/".len()..]));
    }
    log.push(format!(
        "$ git fetch {} ({})",
        upstream.url.url,
        upstream.refs.join(" ")
    ));
    // Never into this server's own namespace, whatever a wide pattern (refs/*) would take.
    cmd.arg(format!("^{OWN_NS}*"));
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| {
            FetchError::Git(format!(
                "no end in {} s; the fetch was stopped",
                timeout.as_secs()
            ))
        })?
        .map_err(FetchError::Spawn)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    log.extend(
        stderr
            .lines()
            .map(|l| l.rsplit('\r').next().unwrap_or(l).to_string()),
    );
    if !out.status.success() {
        return Err(FetchError::Git(git_words(&stderr)));
    }
    // 2. Its default branch, for HEAD: asked only when something moved upstream, or HEAD
    // here names no branch yet (one round trip less for the common fetch that finds nothing).
    let repo = git2::Repository::open_bare(path).map_err(local)?;
    let moved = refs_under(&repo, STAGING_NS).map_err(local)? != staged_before;
    let head_here = repo
        .find_reference("HEAD")
        .ok()
        .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_string));
    let head_ok = head_here.is_some_and(|h| repo.find_reference(&h).is_ok());
    let head = if !moved && head_ok {
        None
    } else if upstream.url.transport == Transport::Local {
        // A path on this machine: its HEAD file says it, without another git process.
        git2::Repository::open_bare(&upstream.url.url)
            .ok()
            .and_then(|r| {
                r.find_reference("HEAD")
                    .ok()
                    .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
            })
    } else {
        let mut cmd = git.command(path)?;
        cmd.args(["ls-remote", "--symref", &upstream.url.url, "HEAD"]);
        match tokio::time::timeout(timeout, cmd.output())
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
        {
            Ok(o) if o.status.success() => {
                String::from_utf8_lossy(&o.stdout).lines().find_map(|l| {
                    l.strip_prefix("ref: ")
                        .and_then(|r| r.split_whitespace().next())
                        .map(str::to_string)
                })
            }
            _ => None,
        }
    };
    // 3. Decide, ref by ref, and apply in one transaction.
    let plan = decide(&repo, upstream, log).map_err(local)?;
    apply(&repo, &plan)?;
    let mut fetched = plan.fetched;
    if let Some(head) = head.filter(|h| upstream.refs.iter().any(|p| pattern_matches(p, h))) {
        let current = repo
            .find_reference("HEAD")
            .ok()
            .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_string));
        if current.as_deref() != Some(head.as_str()) && repo.find_reference(&head).is_ok() {
            repo.set_head(&head)
                .map_err(|e| FetchError::Local(e.message().into()))?;
            log.push(format!("HEAD -> {head}"));
            fetched.head = Some(head);
        }
    }
    fetched.millis = started.elapsed().as_millis() as u64;
    Ok(fetched)
}

/// One ref update: to `new` (`None`: deleted), if it is still `old` (`None`: absent).
struct Update {
    name: String,
    old: Option<git2::Oid>,
    new: Option<git2::Oid>,
}

/// The updates one fetch makes.
struct Plan {
    updates: Vec<Update>,
    fetched: Fetched,
}

fn decide(
    repo: &git2::Repository,
    upstream: &Upstream,
    log: &mut Vec<String>,
) -> Result<Plan, git2::Error> {
    // Only what the patterns take now (a staging ref left by wider patterns is not theirs any
    // more), and never this server's own namespace, whatever the upstream holds.
    let theirs = refs_under(repo, STAGING_NS)?
        .into_iter()
        .map(|(n, o)| (format!("refs/{}", &n[STAGING_NS.len()..]), o))
        .filter(|(n, _)| !n.starts_with(OWN_NS))
        .filter(|(n, _)| upstream.refs.iter().any(|p| pattern_matches(p, n)))
        .collect::<BTreeMap<_, _>>();
    let ours: BTreeMap<String, git2::Oid> = refs_under(repo, "refs/")?
        .into_iter()
        .filter(|(n, _)| !n.starts_with(OWN_NS))
        .filter(|(n, _)| upstream.refs.iter().any(|p| pattern_matches(p, n)))
        .collect();
    let stamp = crate::replicate::queue::now() as u64;
    let mut lines: Vec<Update> = Vec::new();
    let up = |name: &str, old: Option<git2::Oid>, new: Option<git2::Oid>| Update {
        name: name.to_string(),
        old,
        new,
    };
    let mut fetched = Fetched::default();
    for (name, &new) in &theirs {
        match ours.get(name) {
            None => {
                lines.push(up(name, None, Some(new)));
                log.push(format!("new {name} {new}"));
                fetched.updated.push(name.clone());
            }
            Some(&old) if old == new => {}
            Some(&old) => {
                // A tag or a non-commit can only be "the same" or "different".
                let ff = repo.graph_descendant_of(new, old).unwrap_or(false);
                if ff {
                    lines.push(up(name, Some(old), Some(new)));
                    log.push(format!("fast-forward {name} {old}..{new}"));
                    fetched.updated.push(name.clone());
                    continue;
                }
                let mut d = DivergedRef {
                    name: name.clone(),
                    ours: old.to_string(),
                    theirs: new.to_string(),
                    kept_as: None,
                };
                if upstream.divergence == Divergence::Overwrite {
                    let kept = format!("{DIVERGED_NS}{stamp}/{}", &name["refs/".len()..]);
                    lines.push(up(&kept, None, Some(old)));
                    lines.push(up(name, Some(old), Some(new)));
                    log.push(format!(
                        "overwrote {name} {old} -> {new} (ours kept as {kept})"
                    ));
                    fetched.updated.push(name.clone());
                    d.kept_as = Some(kept);
                } else {
                    log.push(format!(
                        "diverged {name}: ours {old}, upstream {new}; kept ours"
                    ));
                }
                fetched.diverged.push(d);
            }
        }
    }
    let gone: Vec<(&String, &git2::Oid)> = ours
        .iter()
        .filter(|(n, _)| !theirs.contains_key(*n))
        .collect();
    if !gone.is_empty() {
        let suspicious = theirs.is_empty()
            || (gone.len() > GUARD_MIN && gone.len() as f64 > ours.len() as f64 * GUARD_SHARE);
        if !upstream.prune {
            fetched.not_pruned = gone.len();
            log.push(format!(
                "{} refs gone upstream, kept here (prune is off)",
                gone.len()
            ));
        } else if suspicious {
            let why = format!(
                "the upstream no longer has {} of the {} refs mirrored here; none were deleted (a truncated or wrong upstream looks like this; delete them by hand if it is right)",
                gone.len(),
                ours.len()
            );
            log.push(why.clone());
            fetched.guarded = Some(why);
        } else {
            for (name, old) in gone {
                lines.push(up(name, Some(*old), None));
                log.push(format!("pruned {name} (was {old})"));
                fetched.updated.push(name.clone());
            }
        }
    }
    Ok(Plan {
        updates: lines,
        fetched,
    })
}

fn refs_under(
    repo: &git2::Repository,
    prefix: &str,
) -> Result<Vec<(String, git2::Oid)>, git2::Error> {
    let mut out = Vec::new();
    for r in repo.references_glob(&format!("{prefix}*"))? {
        let r = r?;
        if let (Ok(name), Some(oid)) = (r.name(), r.target()) {
            out.push((name.to_string(), oid));
        }
    }
    Ok(out)
}

/// Applies the plan in one transaction (libgit2's, in this process): every ref locked, each
/// checked against the value it was decided on (a user's push or a promotion may have moved
/// it meanwhile), then all written, or none.
fn apply(repo: &git2::Repository, plan: &Plan) -> Result<(), FetchError> {
    if plan.updates.is_empty() {
        return Ok(());
    }
    let local =
        |e: git2::Error| FetchError::Local(format!("updating refs failed: {}", e.message()));
    let sig = git2::Signature::now("gitmirror", "gitmirror@localhost").map_err(local)?;
    let mut tx = repo.transaction().map_err(local)?;
    for u in &plan.updates {
        tx.lock_ref(&u.name).map_err(local)?;
    }
    for u in &plan.updates {
        let now = repo.refname_to_id(&u.name).ok();
        if now != u.old {
            return Err(FetchError::Local(format!(
                "updating refs failed: {} moved during the fetch; the next fetch decides again",
                u.name
            )));
        }
        match u.new {
            Some(oid) => tx
                .set_target(&u.name, oid, Some(&sig), "gitmirror: upstream fetch")
                .map_err(local)?,
            None => tx.remove(&u.name).map_err(local)?,
        }
    }
    tx.commit().map_err(local)
}

/// git's error lines (`fatal:`, `error:`), and what ssh or the remote said before them (a
/// host key refused, a login denied, a server's `FATAL:` line), on one line; else the last
/// line git wrote.
pub(crate) fn git_words(stderr: &str) -> String {
    let said: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("remote: ").trim())
        .filter(|l| {
            l.starts_with("fatal:")
                || l.starts_with("error:")
                || l.starts_with("ERROR")
                || l.starts_with("FATAL")
                || l.contains("ost key")
                || l.contains("IDENTIFICATION HAS CHANGED")
                || l.contains("Permission denied")
                || l.starts_with("ssh:")
        })
        .collect();
    if said.is_empty() {
        one_line(
            stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("git failed"),
        )
    } else {
        one_line(&said.join("; "))
    }
}
