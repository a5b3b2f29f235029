//! A master daemon's mirror push on this slave (`mirror-receive-pack`): git's receive-pack
//! with no hooks and no automatic gc, then the slave's post-receive work (the master's HEAD,
//! refs that diverged) done here, in the forced command that started it.
//!
//! Why not the hooks that a plain `git-receive-pack` from a peer runs: each hook costs a shell
//! and a gitmirror process, and receive-pack's automatic gc one or two more git processes, on
//! every push of every repo. Measured over a thousand repos pushed to two slaves, that was four
//! of the nine processes a slave started per push, and process start-up is what a slave spends
//! its time on when many repos arrive at once. receive-pack itself is untouched: the same
//! checks (`receive.fsckObjects`, connectivity), the same protocol and report to the master.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use thiserror::Error;
use tracing::{info, warn};

use super::git::Launch;
use super::hook::{PushedBy, RefUpdate, admin, slave};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::proto::SET_HEAD_REF;
use crate::replicate::ref_state::RefState;
use crate::repo::mastership;
use crate::repo::orphaning::{self, Overwrite};

/// Why the push could not be received at all.
#[derive(Debug, Error)]
pub(crate) enum MirrorReceiveError {
    #[error("cannot start git receive-pack: {0}")]
    Start(#[source] io::Error),
}

/// git's default `gc.auto`: loose objects before an automatic gc.
const GC_AUTO_LOOSE: usize = 6700;
/// git's default `gc.autoPackLimit`: packs before an automatic gc.
const GC_AUTO_PACKS: usize = 50;

/// A mirror push ready to be received.
#[derive(Debug)]
pub(crate) struct MirrorReceive {
    launch: Launch,
    home: Home,
    path: PathBuf,
    pusher: PushedBy,
    head: Option<String>,
    /// The epoch the master claims the repo at.
    epoch: u64,
    /// Set for the first push from a new epoch: what it overwrites with something that does
    /// not contain it is kept under `refs/gitmirror/orphaned/<epoch>/`.
    orphaning: Option<u64>,
}

impl MirrorReceive {
    /// `launch` is receive-pack on the repo at `path`, as a peer's push runs it; it loses its
    /// hooks and automatic gc here, which [`MirrorReceive::run`] stands in for.
    pub(crate) fn new(
        launch: Launch,
        home: &Home,
        path: &Path,
        peer: &AccountName,
        repo: &RepoName,
        head: Option<String>,
    ) -> Self {
        MirrorReceive {
            launch: launch
                // No directory holds hooks under /dev/null: git runs none.
                .with_config("core.hooksPath", "/dev/null")
                .with_config("receive.autogc", "false")
                .with_config(
                    "receive.keepAlive",
                    &crate::proto::MIRROR_KEEPALIVE_SECS.to_string(),
                )
                // receive-pack checks connectivity in a quarantine whose only alternate is the
                // repo itself, so the alternate's refs are the `--all` it already excludes;
                // listing them again cost a git for-each-ref per push. (git runs the command
                // with the alternate's path as its argument, without a shell.)
                .with_config("core.alternateRefsCommand", "true"),
            home: home.clone(),
            path: path.to_path_buf(),
            pusher: PushedBy {
                peer: Some(peer.to_string()),
                repo: repo.to_string(),
                ..PushedBy::default()
            },
            head,
            epoch: 0,
            orphaning: None,
        }
    }

    /// The push comes from a master at `epoch`; `orphaning` when it is the first from that
    /// epoch here.
    pub(crate) fn claimed_at(mut self, epoch: u64, orphaning: Option<u64>) -> Self {
        self.epoch = epoch;
        self.orphaning = orphaning;
        self
    }

    /// Runs receive-pack on this process's stdin and stdout (the master's session), then does
    /// what the slave's post-receive hook does; its lines (`DIVERGED: ...`) go to stderr, which
    /// the master reads once receive-pack has reported. Returns whether receive-pack succeeded.
    pub(crate) fn run(self) -> Result<bool, MirrorReceiveError> {
        let before = Snapshot::take(&self.path, false);
        let status = self
            .launch
            .command()
            .status()
            .map_err(MirrorReceiveError::Start)?;
        // Both snapshots from the same reader: the files reader and libgit2 disagree on refs
        // that name trees or blobs, which would otherwise look moved.
        let after = Snapshot::take(&self.path, before.as_ref().is_some_and(|b| b.full));
        let before = match (&before, &after) {
            (Some(b), Some(a)) if a.full && !b.full => Snapshot::take(&self.path, true),
            _ => before,
        };
        let updates = match (&before, &after) {
            (Some(before), Some(after)) => Some(changes(&before.refs, &after.refs)),
            _ => None,
        };
        let peer = self.pusher.peer.as_deref().unwrap_or("");
        for u in updates.iter().flatten() {
            info!(actor = %peer, repo = %self.pusher.repo, reference = %u.name, old = %u.old, new = %u.new, "ref updated");
        }
        // The hook's work is due when receive-pack updated something: a ref, or the carrier
        // of a HEAD-only change (a ref of ours, which the snapshots leave out). Its exit
        // status says nothing of that: it is 0 after refused refs and failed unpacks too.
        let moved = updates.as_ref().is_some_and(|u| !u.is_empty());
        let carried = self.head.is_some() && carries_head(&self.path);
        let mut lines = Vec::new();
        let mut orphaned = Vec::new();
        let mut missed = false;
        if let (Some(epoch), Some(updates)) = (self.orphaning, &updates) {
            let overwrites: Vec<Overwrite> = updates
                .iter()
                .map(|u| Overwrite {
                    name: u.name.clone(),
                    old: u.old,
                    new: u.new,
                })
                .collect();
            let kept = orphaning::keep_orphaned(&self.path, epoch, &overwrites);
            // What a change of master overwrote is judged by containment alone: a ref it
            // moved forward lost nothing, whatever this server last took from its old master.
            // A ref that should have been kept and was not goes to the divergence check,
            // which keeps it if it can.
            orphaned = updates
                .iter()
                .map(|u| u.name.clone())
                .filter(|n| !kept.missed.contains(n))
                .collect();
            missed = !kept.missed.is_empty();
            lines = kept.lines;
        }
        if moved || carried || updates.is_none() {
            lines.extend(match &updates {
                Some(updates) => {
                    if let Some(head) = &self.head {
                        slave::apply_head(&self.path, head);
                    }
                    let mut lines = slave::keep_diverged(
                        &self.home,
                        &self.pusher,
                        &self.path,
                        updates,
                        &orphaned,
                    );
                    lines.extend(admin::apply_mirrored(
                        &self.home,
                        &self.pusher,
                        &self.path,
                        updates,
                    ));
                    lines
                }
                None => {
                    // Without both snapshots nothing can be said about divergence; the refs
                    // themselves are as the master sent them.
                    warn!(repo = %self.pusher.repo, "cannot read the refs around a mirror push; divergence not checked");
                    slave::received(
                        &self.home,
                        &self.pusher,
                        &self.path,
                        self.head.as_deref(),
                        &[],
                    )
                }
            });
        }
        // A master that went away has the report already, or retries.
        let mut err = std::io::stderr();
        for l in &lines {
            let _ = writeln!(err, "{l}");
        }
        // Recorded only once everything this first push from a new epoch overwrote was kept
        // (or judged): until then, later pushes keep checking.
        if status.success()
            && self.orphaning.is_some()
            && updates.is_some()
            && !missed
            && let Err(e) = mastership::set_received_epoch(&self.path, self.epoch)
        {
            warn!(repo = %self.pusher.repo, error = %e, "cannot record the epoch of the push");
        }
        if moved {
            housekeeping(&self.path, self.home.root());
        }
        Ok(status.success())
    }
}

/// The refs of a repo (without gitmirror's own) at one moment.
struct Snapshot {
    refs: BTreeMap<String, String>,
    /// Read through libgit2 (the files reader could not vouch for them).
    full: bool,
}

impl Snapshot {
    /// Reads them from the files, or through libgit2 when `full` or when the files cannot be
    /// vouched for; `None` when neither can read them.
    fn take(path: &Path, full: bool) -> Option<Snapshot> {
        if !full && let Ok(state) = RefState::on_disk(path) {
            return Some(Snapshot {
                refs: state.refs().clone(),
                full: false,
            });
        }
        RefState::local(path).ok().map(|state| Snapshot {
            refs: state.refs().clone(),
            full: true,
        })
    }
}

/// Whether the ref that carries a HEAD-only change is there (the push brought it).
fn carries_head(path: &Path) -> bool {
    git2::Repository::open_bare(path)
        .map(|r| r.find_reference(SET_HEAD_REF).is_ok())
        .unwrap_or(false)
}

/// What changed between two snapshots, as git reports updates to a post-receive hook.
fn changes(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<RefUpdate> {
    let oid = |v: Option<&String>| {
        v.and_then(|v| git2::Oid::from_str(v).ok())
            .unwrap_or(git2::Oid::ZERO_SHA1)
    };
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| RefUpdate {
            old: oid(before.get(n)),
            new: oid(after.get(n)),
            name: n.clone(),
            utf8: true,
        })
        .collect()
}

/// Starts `git maintenance run --auto` (what receive-pack runs after a push) when git's
/// default gc thresholds say it would act, estimated as git does (loose objects in one of the
/// 256 fan-out directories, local packs without a `.keep`), so that the common push costs no
/// process for it. git then decides with the repo's and the server's config (`HOME` is the
/// server's home, as for receive-pack) and detaches, as after any push.
fn housekeeping(path: &Path, home: &Path) {
    if !needs_gc(path) {
        return;
    }
    let started = std::process::Command::new("git")
        .env_clear()
        .env("PATH", crate::proto::SAFE_PATH)
        .env("HOME", home)
        .arg("--git-dir")
        .arg(path)
        .args(["maintenance", "run", "--auto", "--quiet"])
        // Never the master's session: a detached gc must not hold it open.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Err(e) = started {
        warn!(path = %path.display(), error = %e, "cannot start git maintenance --auto");
    }
}

/// Whether git's `gc --auto` would find work with its default thresholds.
fn needs_gc(path: &Path) -> bool {
    let objects = path.join("objects");
    let loose = std::fs::read_dir(objects.join("17"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.len() == 38 && n.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .count()
        })
        .unwrap_or(0);
    if loose > GC_AUTO_LOOSE.div_ceil(256) {
        return true;
    }
    let pack_dir = objects.join("pack");
    let packs = std::fs::read_dir(&pack_dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_suffix(".pack").map(str::to_string)
                })
                .filter(|stem| !pack_dir.join(format!("{stem}.keep")).exists())
                .count()
        })
        .unwrap_or(0);
    packs > GC_AUTO_PACKS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_what_moved() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let before: BTreeMap<String, String> = [
            ("refs/heads/kept".to_string(), a.clone()),
            ("refs/heads/moved".to_string(), a.clone()),
            ("refs/heads/gone".to_string(), a.clone()),
        ]
        .into();
        let after: BTreeMap<String, String> = [
            ("refs/heads/kept".to_string(), a.clone()),
            ("refs/heads/moved".to_string(), b.clone()),
            ("refs/tags/new".to_string(), b.clone()),
        ]
        .into();
        let got: Vec<(String, String, String)> = changes(&before, &after)
            .into_iter()
            .map(|u| (u.name, u.old.to_string(), u.new.to_string()))
            .collect();
        let zero = "0".repeat(40);
        assert_eq!(
            got,
            [
                ("refs/heads/gone".to_string(), a.clone(), zero.clone()),
                ("refs/heads/moved".to_string(), a, b.clone()),
                ("refs/tags/new".to_string(), zero, b),
            ]
        );
    }

    #[test]
    fn gc_is_asked_only_past_gits_thresholds() {
        let dir = tempfile::tempdir().unwrap();
        let fan = dir.path().join("objects/17");
        std::fs::create_dir_all(&fan).unwrap();
        std::fs::create_dir_all(dir.path().join("objects/pack")).unwrap();
        for i in 0..GC_AUTO_LOOSE.div_ceil(256) {
            std::fs::write(fan.join(format!("{i:038x}")), b"").unwrap();
        }
        assert!(!needs_gc(dir.path()), "at the threshold");
        std::fs::write(fan.join(format!("{:038x}", 999)), b"").unwrap();
        assert!(needs_gc(dir.path()), "past it");
        std::fs::remove_dir_all(&fan).unwrap();
        // Packs: those kept by a .keep do not count.
        let packs = dir.path().join("objects/pack");
        for i in 0..GC_AUTO_PACKS {
            std::fs::write(packs.join(format!("pack-{i}.pack")), b"").unwrap();
        }
        std::fs::write(packs.join("pack-x.pack"), b"").unwrap();
        std::fs::write(packs.join("pack-x.keep"), b"").unwrap();
        assert!(
            !needs_gc(dir.path()),
            "{GC_AUTO_PACKS} packs and a kept one"
        );
        std::fs::write(packs.join("pack-y.pack"), b"").unwrap();
        assert!(needs_gc(dir.path()), "one pack more");
    }
}
