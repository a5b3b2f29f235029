//! Promotion: this server, a slave of a repo, becomes its master with the next epoch.
//!
//! Before it takes over, it looks at every copy it can reach. When the old master answers, it
//! is the authority: what it has that this copy lacks is fetched; without it, the copy that
//! has the most this one lacks is fetched from. Refs a fetch rewinds here are kept as
//! orphaned. If a copy is still ahead after that (the fetch failed, or it went its own way),
//! promotion refuses and names it, so that nothing any reachable copy has is lost silently;
//! forced, it takes over anyway, and its first push keeps on that copy whatever it
//! overwrites, as orphaned refs.
//!
//! Taking over is one write of the repo's config (master, slaves, epoch); the slaves (the old
//! master among them) are then queued for a push, which carries the epoch: each records its
//! new master when it arrives, now or when it comes back. Running promote again on a repo
//! this server already masters queues those pushes again, so an interrupted promotion is
//! finished by rerunning it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use thiserror::Error;
use tracing::{info, warn};

use super::queue::{Queue, QueueError};
use super::ref_state::RefState;
use super::send_pack;
use crate::config::ServerConfig;
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::proto::{OWN_NS, SAFE_PATH};
use crate::repo::mastership::{self, Mastership};
use crate::repo::orphaning::{self, Overwrite};
use crate::repo::{Store, StoreError};
use crate::ssh::{Connection, Pool};

/// Why a repo was not promoted here.
#[derive(Debug, Error)]
pub(crate) enum PromoteError {
    #[error("{0}: no such repo here")]
    NoRepo(RepoName),
    #[error("{0}: not mirrored, so there is no master to take over from")]
    NotMirrored(RepoName),
    #[error("{repo}: this server holds no copy of it by its mirror settings")]
    NotHeld { repo: RepoName },
    #[error(
        "{repo}: {server} has commits this server lacks ({why}); promote again when it is fixed, or with --force to keep what it has as orphaned refs there"
    )]
    Ahead {
        repo: RepoName,
        server: AccountName,
        why: String,
    },
    #[error(
        "{repo}: its mastership changed while this server caught up ({now}); nothing was taken over"
    )]
    Changed { repo: RepoName, now: String },
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{repo}: cannot queue the pushes to its slaves: {source}")]
    Queue {
        repo: RepoName,
        #[source]
        source: QueueError,
    },
}

/// What promote did for a repo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Promoted {
    pub(crate) repo: RepoName,
    /// The new mastership (this server as master).
    pub(crate) mastership: Mastership,
    /// This server was already the master (an earlier promote, maybe interrupted).
    pub(crate) already: bool,
    /// The copy fetched from first, if one was ahead.
    pub(crate) caught_up_from: Option<AccountName>,
    /// Copies that could not be asked, with why.
    pub(crate) unreachable: Vec<(AccountName, String)>,
    /// Copies still ahead that `--force` went past.
    pub(crate) forced_past: Vec<AccountName>,
    /// Refs this server kept as orphaned while catching up.
    pub(crate) orphaned: Vec<String>,
}

/// How long asking one copy may take before it counts as unreachable.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);

/// A reachable copy and how many of its ref values this server lacks.
struct Copy {
    server: AccountName,
    conn: std::sync::Arc<Connection>,
    head: Option<String>,
    lacking: usize,
}

/// Promotes `repo` on this server (see the module doc).
pub(crate) async fn promote(
    home: &Home,
    config: &ServerConfig,
    pool: &Pool,
    repo: &RepoName,
    force: bool,
) -> Result<Promoted, PromoteError> {
    let this = &config.hostname;
    let path = Store::new(home.repositories())
        .find(repo)
        .ok_or_else(|| PromoteError::NoRepo(repo.clone()))?;
    let here =
        mastership::mastership(&path)?.ok_or_else(|| PromoteError::NotMirrored(repo.clone()))?;
    if !here.holds(this) {
        return Err(PromoteError::NotHeld { repo: repo.clone() });
    }
    let mut done = Promoted {
        repo: repo.clone(),
        mastership: here.clone(),
        already: here.master == *this,
        caught_up_from: None,
        unreachable: Vec::new(),
        forced_past: Vec::new(),
        orphaned: Vec::new(),
    };
    let new = if done.already {
        here
    } else {
        let epoch = here.epoch + 1;
        catch_up(
            home, &path, repo, &here, this, pool, epoch, force, &mut done,
        )
        .await?;
        let new = here.handed_to(this, epoch);
        // Written only if nobody changed the mastership while this server caught up (a
        // handover from a later promotion elsewhere must not be undone).
        let now =
            mastership::update_mastership(&path, |now| (now == Some(&here)).then(|| new.clone()))?;
        if now.as_ref() != Some(&new) {
            return Err(PromoteError::Changed {
                repo: repo.clone(),
                now: now.map_or_else(
                    || "not mirrored".to_string(),
                    |m| format!("{} masters it at epoch {}", m.master, m.epoch),
                ),
            });
        }
        info!(%repo, epoch, was = %here.master, "promoted: this server masters the repo now");
        new
    };
    // Durable before anyone is told: every slave, the old master among them, gets a push.
    Queue::new(home.queue_dir())
        .enqueue_record(repo, &new.slaves)
        .map_err(|source| PromoteError::Queue {
            repo: repo.clone(),
            source,
        })?;
    done.mastership = new;
    Ok(done)
}

/// Brings this copy up to date from the reachable copies ahead of it, or refuses.
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    home: &Home,
    path: &Path,
    repo: &RepoName,
    here: &Mastership,
    this: &AccountName,
    pool: &Pool,
    epoch: u64,
    force: bool,
    done: &mut Promoted,
) -> Result<(), PromoteError> {
    let others: Vec<AccountName> = std::iter::once(&here.master)
        .chain(&here.slaves)
        .filter(|s| *s != this)
        .cloned()
        .collect();
    let mut copies = Vec::new();
    for server in others {
        match ask(pool, &server, repo, path).await {
            Ok(copy) => copies.push(copy),
            Err(why) => {
                warn!(%repo, %server, why, "copy unreachable while promoting");
                done.unreachable.push((server, why));
            }
        }
    }
    // The old master, when it answers, is the authority: what it has is taken, and any other
    // copy still ahead after that went its own way. Without it, the copy with the most this
    // one lacks is taken.
    copies.sort_by_key(|c| (c.server != here.master, std::cmp::Reverse(c.lacking)));
    let Some(first) = copies
        .first()
        .filter(|c| c.server == here.master || c.lacking > 0)
    else {
        return Ok(());
    };
    if first.lacking == 0 {
        return settle(path, repo, pool, &copies, force, done).await;
    }
    match fetch(home, path, repo, first, epoch).await {
        Ok(orphaned) => {
            info!(%repo, from = %first.server, "caught up before taking over");
            done.caught_up_from = Some(first.server.clone());
            done.orphaned = orphaned;
        }
        Err(why) if !force => {
            return Err(PromoteError::Ahead {
                repo: repo.clone(),
                server: first.server.clone(),
                why,
            });
        }
        Err(why) => {
            warn!(%repo, server = %first.server, why, "could not catch up; promoting anyway (--force)");
            done.forced_past.push(first.server.clone());
        }
    }
    settle(path, repo, pool, &copies, force, done).await
}

/// After catching up: any copy still ahead is refused on, or with `force` gone past.
async fn settle(
    path: &Path,
    repo: &RepoName,
    pool: &Pool,
    copies: &[Copy],
    force: bool,
    done: &mut Promoted,
) -> Result<(), PromoteError> {
    for c in copies {
        let lacking = lacking(path, &c.server, pool, repo).await;
        // One that no longer answers is as unreachable as those that never did.
        if matches!(lacking, Some(0) | None) || done.forced_past.contains(&c.server) {
            continue;
        }
        if !force {
            return Err(PromoteError::Ahead {
                repo: repo.clone(),
                server: c.server.clone(),
                why: "its refs went another way than those caught up from".into(),
            });
        }
        done.forced_past.push(c.server.clone());
    }
    Ok(())
}

/// Lists `server`'s copy and counts the ref values this server lacks.
async fn ask(
    pool: &Pool,
    server: &AccountName,
    repo: &RepoName,
    path: &Path,
) -> Result<Copy, String> {
    let asked = async {
        let conn = pool.get(server).await.map_err(|e| e.to_string())?;
        let ad = send_pack::list(&conn, repo)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((conn, ad))
    };
    let (conn, ad) = tokio::time::timeout(ASK_TIMEOUT, asked)
        .await
        .map_err(|_| "no answer in time".to_string())??;
    Ok(Copy {
        server: server.clone(),
        conn,
        head: ad.head,
        lacking: count_lacking(path, ad.refs.values()),
    })
}

/// How many of `server`'s ref values this server lacks now (`None`: could not ask).
async fn lacking(path: &Path, server: &AccountName, pool: &Pool, repo: &RepoName) -> Option<usize> {
    ask(pool, server, repo, path).await.ok().map(|c| c.lacking)
}

/// How many of `values` (object ids) are not in the repo at `path`.
fn count_lacking<'a>(path: &Path, values: impl Iterator<Item = &'a String>) -> usize {
    let Ok(git) = git2::Repository::open_bare(path) else {
        return usize::MAX;
    };
    let Ok(odb) = git.odb() else {
        return usize::MAX;
    };
    values
        .filter(|v| git2::Oid::from_str(v).map_or(true, |oid| !odb.exists(oid)))
        .count()
}

/// Fetches every ref of `copy` into this repo over the peer's connection (git's own fetch,
/// through the connection's control socket), keeping as orphaned what it rewinds here, and
/// takes its HEAD. Returns the refs kept.
async fn fetch(
    home: &Home,
    path: &Path,
    repo: &RepoName,
    copy: &Copy,
    epoch: u64,
) -> Result<Vec<String>, String> {
    let before = RefState::local(path).map_err(|e| e.to_string())?;
    // Only over the daemon's connection: with its control socket gone, ssh must fail rather
    // than log in afresh with none of the peer's settings (ProxyCommand=false).
    let socket = copy.conn.session().control_socket().display().to_string();
    let ssh = format!(
        "ssh -F /dev/null -o BatchMode=yes -o ControlMaster=no -o ProxyCommand=false -o ControlPath='{}'",
        socket.replace('\'', "'\\''")
    );
    let out = tokio::process::Command::new("git")
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("HOME", home.root())
        .env("GIT_SSH_COMMAND", ssh)
        .arg("--git-dir")
        .arg(path)
        // All refs or none: a fetch cut halfway must not leave some rewound unkept.
        .args(["fetch", "--quiet", "--atomic", "--no-write-fetch-head"])
        .arg(format!("ssh://{}/{}", copy.server, repo.relative_dir()))
        .arg("+refs/*:refs/*")
        .arg(format!("^{OWN_NS}*"))
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot start git fetch: {e}"))?;
    // Whatever the fetch did, what it rewound here is kept before anything else is said.
    let after = RefState::local(path).map_err(|e| e.to_string())?;
    let zero = git2::Oid::ZERO_SHA1;
    let oid = |v: Option<&String>| v.and_then(|v| git2::Oid::from_str(v).ok()).unwrap_or(zero);
    let overwrites: Vec<Overwrite> = before
        .refs()
        .iter()
        .filter(|(name, old)| after.refs().get(*name) != Some(*old))
        .map(|(name, old)| Overwrite {
            name: name.clone(),
            old: oid(Some(old)),
            new: oid(after.refs().get(name)),
        })
        .collect();
    let kept = orphaning::keep_orphaned(path, epoch, &overwrites).kept;
    if !out.status.success() {
        return Err(crate::text::one_line(&String::from_utf8_lossy(&out.stderr)));
    }
    if let Some(head) = &copy.head
        && let Ok(git) = git2::Repository::open_bare(path)
        && git.find_reference(head).is_ok()
        && let Err(e) = git.set_head(head)
    {
        warn!(%repo, error = %e, "cannot take the caught-up copy's HEAD");
    }
    Ok(kept)
}
