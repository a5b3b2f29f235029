//! The pack a mirror push sends: the objects of the new ref values that the slave lacks.
//!
//! A small repo's pack is built in the daemon with libgit2: no process to start, which is
//! what bulk pushes of thousands of small repos spend their time on. libgit2's builder keeps
//! every object it packs in memory and recomputes deltas (measured: 634 MiB of daemon memory
//! for a 90 MB repo), so a big repo's pack comes from git's own `pack-objects`, which reuses
//! the deltas on disk, in memory that does not grow with the repo; its output is streamed into
//! the session as it comes.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::push_error::PushError;
use crate::proto::SAFE_PATH;
use crate::ssh::remote::{RemoteError, RemoteIn};

/// Repos whose packs on disk add up to less than this build in the daemon (bounded: the
/// builder's memory is a small multiple of the objects it packs).
const IN_PROCESS_LIMIT: u64 = 4 * 1024 * 1024;

/// `pack-objects` processes at once, daemon-wide: each takes a core and, for a big repo, tens
/// of megabytes; a bulk push of many big repos must not start one per session.
static PACKERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// What a pack must carry: everything reachable from `wants` and not from `haves`.
pub(crate) struct PackRequest {
    pub(crate) path: PathBuf,
    pub(crate) wants: Vec<git2::Oid>,
    /// Objects the slave advertised; those we lack here are left out.
    pub(crate) haves: Vec<git2::Oid>,
}

/// How big a pack was and how it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Sent {
    pub(crate) bytes: u64,
    /// Whether `git pack-objects` built it (else libgit2, in the daemon).
    pub(crate) by_process: bool,
}

/// Whether a repo is big enough for `pack-objects`: its packs and loose objects add up to
/// [`IN_PROCESS_LIMIT`] or more. (A user's push of a few huge files stays loose.)
fn big(path: &Path) -> bool {
    let objects = path.join("objects");
    let mut total = 0u64;
    let mut add = |dir: &Path, only_packs: bool| -> bool {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        for e in entries.flatten() {
            if only_packs && !e.file_name().to_string_lossy().ends_with(".pack") {
                continue;
            }
            total += e.metadata().map_or(0, |m| m.len());
            if total >= IN_PROCESS_LIMIT {
                return true;
            }
        }
        false
    };
    if add(&objects.join("pack"), true) {
        return true;
    }
    let Ok(fanout) = std::fs::read_dir(&objects) else {
        return false;
    };
    fanout.flatten().any(|d| {
        let name = d.file_name();
        name.len() == 2 && add(&d.path(), false)
    })
}

/// How a push's pack will be built, decided before the push starts: a big repo waits here
/// for its turn at `pack-objects`, before its session opens, so that no session sits
/// silent while it waits (the peer would count it as stalled).
pub(crate) struct Packer {
    turn: Option<tokio::sync::SemaphorePermit<'static>>,
}

impl Packer {
    /// The packer for the repo at `path`.
    pub(crate) async fn for_repo(path: &Path) -> Result<Self, PushError> {
        let turn = if big(path) {
            let permit = PACKERS
                .acquire()
                .await
                .map_err(|_| PushError::Pack("the daemon is stopping".into()))?;
            Some(permit)
        } else {
            None
        };
        Ok(Packer { turn })
    }

    /// Builds the pack and writes it to `to`.
    pub(crate) async fn send(
        &self,
        request: PackRequest,
        to: &mut RemoteIn,
    ) -> Result<Sent, PackError> {
        if self.turn.is_some() {
            let bytes = by_process(&request, to).await?;
            return Ok(Sent {
                bytes,
                by_process: true,
            });
        }
        let pack = tokio::task::spawn_blocking(move || in_process(&request))
            .await
            .map_err(PushError::Worker)??;
        to.write_all(&pack).await?;
        Ok(Sent {
            bytes: pack.len() as u64,
            by_process: false,
        })
    }
}

/// Why a pack was not sent: it could not be built here, or the session would not take it
/// (the slave may have stopped reading on purpose: its answer says).
#[derive(Debug)]
pub(crate) enum PackError {
    Local(PushError),
    Write(RemoteError),
}

impl From<PushError> for PackError {
    fn from(e: PushError) -> Self {
        PackError::Local(e)
    }
}

impl From<RemoteError> for PackError {
    fn from(e: RemoteError) -> Self {
        PackError::Write(e)
    }
}

/// The haves this repo has (a have we lack cannot bound the walk).
fn known_haves(git: &git2::Repository, haves: &[git2::Oid]) -> Result<Vec<git2::Oid>, PushError> {
    let odb = git.odb().map_err(PushError::LocalRepo)?;
    Ok(haves.iter().copied().filter(|h| odb.exists(*h)).collect())
}

/// The pack built by libgit2, in memory (the repo is small).
fn in_process(request: &PackRequest) -> Result<Vec<u8>, PushError> {
    let local = PushError::LocalRepo;
    let git = git2::Repository::open_bare(&request.path).map_err(local)?;
    let mut builder = git.packbuilder().map_err(local)?;
    let mut walk = git.revwalk().map_err(local)?;
    for have in known_haves(&git, &request.haves)? {
        if let Some(commit) = peeled_commit(&git, have) {
            walk.hide(commit).map_err(local)?;
        }
    }
    for want in &request.wants {
        // An annotated tag travels itself, as do the tags it points through.
        let mut oid = *want;
        loop {
            let object = git.find_object(oid, None).map_err(local)?;
            match object.kind() {
                Some(git2::ObjectType::Tag) => {
                    builder.insert_object(oid, None).map_err(local)?;
                    match object.as_tag() {
                        Some(tag) => oid = tag.target_id(),
                        None => break,
                    }
                }
                Some(git2::ObjectType::Commit) => {
                    walk.push(oid).map_err(local)?;
                    break;
                }
                _ => {
                    builder.insert_recursive(oid, None).map_err(local)?;
                    break;
                }
            }
        }
    }
    builder.insert_walk(&mut walk).map_err(local)?;
    let mut buf = git2::Buf::new();
    builder.write_buf(&mut buf).map_err(local)?;
    Ok(buf.to_vec())
}

fn peeled_commit(git: &git2::Repository, oid: git2::Oid) -> Option<git2::Oid> {
    let object = git.find_object(oid, None).ok()?;
    object.peel(git2::ObjectType::Commit).ok().map(|c| c.id())
}

/// The pack built by `git pack-objects` (as `git push` runs it), streamed to `to`.
async fn by_process(request: &PackRequest, to: &mut RemoteIn) -> Result<u64, PackError> {
    let path = request.path.clone();
    let haves = request.haves.clone();
    let haves = tokio::task::spawn_blocking(move || {
        let git = git2::Repository::open_bare(&path).map_err(PushError::LocalRepo)?;
        known_haves(&git, &haves)
    })
    .await
    .map_err(PushError::Worker)??;
    let mut revs = String::new();
    for want in &request.wants {
        revs.push_str(&format!("{want}\n"));
    }
    for have in &haves {
        revs.push_str(&format!("^{have}\n"));
    }
    let failed = |what: &str, e: std::io::Error| PushError::Pack(format!("{what}: {e}"));
    let mut child = tokio::process::Command::new("git")
        .env_clear()
        .env("PATH", SAFE_PATH)
        .arg("--git-dir")
        .arg(&request.path)
        .args([
            "pack-objects",
            "--stdout",
            "--revs",
            "--thin",
            "--delta-base-offset",
            "-q",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed("cannot start git pack-objects", e))?;
    let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(PushError::Pack("git pack-objects has no stdio".into()).into());
    };
    let feed = async move {
        let written = stdin.write_all(revs.as_bytes()).await;
        drop(stdin);
        written
    };
    let stream = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = stdout
                .read(&mut buf)
                .await
                .map_err(|e| failed("reading git pack-objects", e))?;
            if n == 0 {
                return Ok::<u64, PackError>(bytes);
            }
            to.write_all(&buf[..n]).await?;
            bytes += n as u64;
        }
    };
    // Read alongside, so that pack-objects never blocks on it.
    let said = tokio::spawn(capped(stderr));
    let (fed, streamed) = tokio::join!(feed, stream);
    if streamed.is_err() {
        // The slave went away: nobody reads what pack-objects still writes.
        let _ = child.start_kill();
    }
    let status = child.wait().await;
    let said = said.await.unwrap_or_default();
    let bytes: u64 = streamed?;
    fed.map_err(|e| failed("feeding git pack-objects", e))?;
    let status = status.map_err(|e| failed("waiting for git pack-objects", e))?;
    if !status.success() {
        return Err(PackError::Local(PushError::Pack(format!(
            "git pack-objects failed ({status}): {}",
            crate::text::one_line(said.trim())
        ))));
    }
    Ok(bytes)
}

/// A child's stderr, at most 16 KiB of it.
async fn capped(mut stderr: tokio::process::ChildStderr) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = (16 * 1024usize).saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}
