//! `gitmirror compile`: make the repositories match `repos.toml`.
//!
//! Both config files are validated whole first; only then are missing repos created, hooks
//! installed and mirror settings written, and finally the validated rules become the ones the
//! shell reads. A mistake anywhere stops it before the first change.
//!
//! A repo whose epoch is above 0 (a promotion happened) keeps its master when `repos.toml`
//! names another, or none: the compile reports it ([`CompileReport::disagreements`]) and
//! applies the rest. With `accept`, `repos.toml` wins there at the next epoch instead
//! (`repo::apply_rules`).

use thiserror::Error;
use tracing::{info, warn};

use crate::admin::keys::{self, KeyError};
use crate::config::{ConfigError, Rules, ServerConfig, Source};
use crate::daemon::client;
use crate::external::downstream_sender::queue_new_downstreams;
use crate::fs::{FsError, ensure_dir, lock, sync_filesystem, write_if_changed};
use crate::home::Home;
use crate::invocation::{Invocation, InvocationError};
use crate::names::{AccountName, RepoName};
use crate::progress::Progress;
use crate::replicate::queue::Queue;
use crate::repo::gone::{Gone, GoneRecord};
use crate::repo::{self, Applied, Mastership, Store, StoreError};

/// What can stop a compile.
#[derive(Debug, Error)]
pub(crate) enum CompileError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Invocation(#[from] InvocationError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("cannot write the compiled rules: {0}")]
    Index(#[from] serde_json::Error),
}

/// What a compile changed.
#[derive(Debug, Default, Clone)]
pub(crate) struct CompileReport {
    /// Repos created because `repos.toml` names them and they were missing.
    pub(crate) created: Vec<RepoName>,
    /// Repos whose hooks were (re)written.
    pub(crate) hooks_updated: usize,
    /// The command authorized_keys lines now start with, when they were rewritten (gitmirror
    /// moved, or `program` changed).
    pub(crate) keys_rewritten: Option<String>,
    /// Repos whose mirror settings were (re)written.
    pub(crate) mirror_updated: Vec<RepoName>,
    /// Repos whose mirror settings were removed: the rules no longer give them any.
    pub(crate) mirror_removed: Vec<RepoName>,
    /// Repos the rules give no mirror settings, keeping those set by hand in their config.
    pub(crate) mirror_by_hand: Vec<RepoName>,
    /// Slaves this server masters a repo for that had never been queued (a new slave, a
    /// newly mirrored repo): queued now, so they get the repo without waiting for a push.
    pub(crate) queued: Vec<(RepoName, Vec<AccountName>)>,
    /// Repos in the store after the compile.
    pub(crate) repos: usize,
    /// Repos left as they were because `repos.toml` would undo a promotion. Non-empty means
    /// the compile is not done.
    pub(crate) disagreements: Vec<Disagreement>,
    /// Repos `--accept-config` gave `repos.toml`'s mastership at a new epoch.
    pub(crate) accepted: Vec<Accepted>,
    /// Repos `repos.toml` names that were deleted or renamed here: not recreated, and what
    /// to edit, one line each.
    pub(crate) gone: Vec<String>,
}

/// A repo whose master, since a promotion, is not the one `repos.toml` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Disagreement {
    pub(crate) repo: RepoName,
    /// The mastership the repo keeps.
    pub(crate) current: Mastership,
    /// The master `repos.toml` names; `None`: it gives the repo no mirror settings.
    pub(crate) configured: Option<AccountName>,
}

/// A repo to which `--accept-config` gave `repos.toml`'s mastership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) repo: RepoName,
    /// The mastership it replaced.
    pub(crate) was: Mastership,
    /// The master now; `None`: the repo is local now.
    pub(crate) master: Option<AccountName>,
    /// The epoch now.
    pub(crate) epoch: u64,
}

/// The lock one compile at a time holds, and with it the store operations (delete, rename),
/// so that a compile never reads the record of gone names before a move and recreates what
/// moved.
pub(crate) struct CompileLock(#[allow(dead_code)] std::fs::File);

/// Takes [`CompileLock`], waiting for whoever holds it.
pub(crate) fn lock_compile(home: &Home) -> Result<CompileLock, CompileError> {
    ensure_dir(&home.state_dir(), 0o700)?;
    Ok(CompileLock(lock(&home.compile_lock())?))
}

/// Applies `repos.toml` to the store; with `accept`, also where it would undo a promotion.
/// See the module doc for the order of steps.
pub(crate) fn compile(home: &Home, accept: bool) -> Result<CompileReport, CompileError> {
    // Validated before waiting for the lock: a broken file is told at once.
    Rules::from_source(&Source::read(&home.rules_path())?)?;
    let held = lock_compile(home)?;
    compile_locked(home, accept, &held)
}

/// [`compile`], counting each repo it creates on `progress` (an import of thousands).
pub(crate) fn compile_showing(
    home: &Home,
    progress: &mut Progress,
) -> Result<CompileReport, CompileError> {
    Rules::from_source(&Source::read(&home.rules_path())?)?;
    let held = lock_compile(home)?;
    compile_inner(home, false, &held, Some(progress))
}

/// [`compile`], for a caller holding [`CompileLock`].
pub(crate) fn compile_locked(
    home: &Home,
    accept: bool,
    held: &CompileLock,
) -> Result<CompileReport, CompileError> {
    compile_inner(home, accept, held, None)
}

fn compile_inner(
    home: &Home,
    accept: bool,
    _held: &CompileLock,
    mut progress: Option<&mut Progress>,
) -> Result<CompileReport, CompileError> {
    let config = ServerConfig::of(home)?;
    let source = Source::read(&home.rules_path())?;
    let mut rules = Rules::from_source(&source)?;
    let invocation = Invocation::current(home, config.program.as_deref())?;
    let mut report = CompileReport {
        gone: follow_gone(home, &mut rules)?,
        ..CompileReport::default()
    };

    // Thousands of repos and queue records: one wait for the disk at the end, not one each.
    let store = Store::new(home.repositories()).deferring_sync();
    ensure_dir(&home.repositories(), 0o700)?;
    repo::write_hooks(&home.hooks_dir(), &invocation)?;
    repo::write_peer_hooks(&home.peer_hooks_dir(), &invocation)?;
    store.sweep_abandoned();
    let queue = Queue::new(home.queue_dir()).deferring_sync();
    // The forced commands name gitmirror as the hooks do: both follow it when it moves.
    if keys::rewrite(home, &invocation)? {
        report.keys_rewritten = Some(invocation.as_str().to_string());
    }
    for name in rules.named_repos() {
        if store.find(name).is_none() {
            store.create(name, &invocation, rules.mirror(name).as_ref())?;
            info!(repo = %name, "created repo");
            report.created.push(name.clone());
            if let Some(p) = progress.as_deref_mut() {
                p.tick(true);
            }
        }
    }
    let all = store.list()?;
    for name in &all {
        let Some(path) = store.find(name) else {
            continue;
        };
        if repo::install_hooks(&path, &invocation)? > 0 {
            report.hooks_updated += 1;
        }
        let rule = rules.mirror(name);
        match repo::apply_rules(&path, rule.as_ref(), accept)? {
            Applied::Unchanged => {}
            Applied::Written => {
                let master = rule.as_ref().map_or("", |r| r.master.as_str());
                info!(repo = %name, master, "mirror settings written");
                report.mirror_updated.push(name.clone());
            }
            Applied::Removed => {
                info!(repo = %name, "mirror settings removed");
                report.mirror_removed.push(name.clone());
            }
            Applied::KeptByHand => report.mirror_by_hand.push(name.clone()),
            Applied::Disagrees(current) => {
                let configured = rule.map(|r| r.master);
                warn!(
                    repo = %name, master = %current.master, epoch = current.epoch,
                    configured = ?configured.as_ref().map(AccountName::as_str),
                    "repos.toml would undo a promotion; mirror settings kept"
                );
                report.disagreements.push(Disagreement {
                    repo: name.clone(),
                    current,
                    configured,
                });
                // Not applied, so not queued for the slaves repos.toml names either.
                continue;
            }
            Applied::Accepted { was, epoch } => {
                let master = rule.as_ref().map(|r| r.master.clone());
                info!(
                    repo = %name, was = %was.master, was_epoch = was.epoch, epoch,
                    master = ?master.as_ref().map(AccountName::as_str),
                    "repos.toml accepted over a promotion"
                );
                report.accepted.push(Accepted {
                    repo: name.clone(),
                    was,
                    master,
                    epoch,
                });
            }
        }
        if let Some(rule) = &rule
            && rule.is_master(&config.hostname)
        {
            let new = queue_new_slaves(&queue, name, &rule.slaves);
            if !new.is_empty() {
                // A user-created repo's creator and roles go to them too: a push carries
                // only refs.
                if let Err(e) = super::user_repos::queue_perms(home, &path, name, Some(&new)) {
                    warn!(repo = %name, error = %e, "cannot queue the repo's perms for its new slaves");
                }
                report.queued.push((name.clone(), new));
            }
        }
    }
    report.repos = all.len();
    write_if_changed(&home.compiled_rules_path(), &rules.to_index()?, 0o600)?;
    // What an earlier version compiled to; the index replaces it.
    let _ = std::fs::remove_file(home.state_dir().join("repos.compiled.toml"));
    sync_filesystem(home.root())?;
    // The queue is durable now; telling the daemon (or starting one) only makes it now.
    let queued: Vec<RepoName> = report.queued.iter().map(|(r, _)| r.clone()).collect();
    if !queued.is_empty()
        && let Err(e) = client::notify_many(home, &queued)
    {
        warn!(error = %e, "cannot reach the daemon; the pushes stay queued");
    }
    // A downstream just added (or of a repo just become ours) gets its first push now, not at
    // the next push to the repo.
    for repo in queue_new_downstreams(home, &config.hostname, &rules) {
        if let Err(e) = client::notify_downstream(home, &repo) {
            warn!(%repo, error = %e, "cannot reach the daemon; the downstream pushes stay queued");
            break;
        }
    }
    Ok(report)
}

/// Applies the record of deleted and renamed repos to `rules`: a deleted repo's table is
/// dropped (so it is not recreated), a renamed repo's table moves to its new name. Entries for
/// names `repos.toml` no longer names (or that are back in the store) have done their work and
/// are forgotten. Returns a line per name `repos.toml` should stop naming.
fn follow_gone(home: &Home, rules: &mut Rules) -> Result<Vec<String>, CompileError> {
    let record = GoneRecord::in_state(&home.state_dir());
    let gone = record.load();
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let store = Store::new(home.repositories());
    let live = |g: &Gone| rules.names(g.repo()) && store.find(g.repo()).is_none();
    let keep: Vec<Gone> = gone.iter().filter(|g| live(g)).cloned().collect();
    if keep.len() != gone.len() {
        record.update(|all| all.retain(|g| keep.contains(g)))?;
    }
    let mut lines = Vec::new();
    for g in &keep {
        match g {
            Gone::Trashed { repo, entry } => {
                rules.forget_repo(repo);
                lines.push(format!(
                    "{repo}: deleted (in the trash as {entry}), not recreated; repos.toml still names it: remove its table, or run `gitmirror trash restore {entry}`"
                ));
            }
            Gone::Renamed { repo, to } => {
                if rules.follow_rename(repo, to) {
                    lines.push(format!(
                        "{repo}: renamed to {to}; its rules in repos.toml apply to {to}: rename it there (its table to [repos.\"{to}\"], or in its repo group)"
                    ));
                } else {
                    lines.push(format!(
                        "{repo}: renamed to {to}, which repos.toml names too; the table of {repo} applies to nothing: remove it"
                    ));
                }
            }
        }
    }
    Ok(lines)
}

/// Queues `repo` for each of `slaves` that the queue has never seen, and returns them. A
/// queue record that cannot be read is left to the daemon, which reports it.
fn queue_new_slaves(queue: &Queue, repo: &RepoName, slaves: &[AccountName]) -> Vec<AccountName> {
    let known = match queue.load(repo) {
        Ok(record) => record.slaves,
        Err(e) => {
            warn!(%repo, error = %e, "cannot read the queue; new slaves not queued");
            return Vec::new();
        }
    };
    let new: Vec<AccountName> = slaves
        .iter()
        .filter(|s| !known.contains_key(s.as_str()))
        .cloned()
        .collect();
    if !new.is_empty()
        && let Err(e) = queue.enqueue_record(repo, &new)
    {
        warn!(%repo, error = %e, "cannot queue the new slaves");
        return Vec::new();
    }
    new
}

impl CompileReport {
    /// One line per change, then the summary: what `compile` prints, and what an admin push
    /// shows its pusher.
    pub(crate) fn lines(&self) -> Vec<String> {
        let r = self;
        let mut out = String::new();
        if let Some(command) = &r.keys_rewritten {
            out.push_str(&format!(
                "authorized_keys rewritten: forced commands run {command}\n"
            ));
        }
        for repo in &r.created {
            out.push_str(&format!("created {repo}\n"));
        }
        for repo in &r.mirror_updated {
            out.push_str(&format!("mirror settings written for {repo}\n"));
        }
        for a in &r.accepted {
            let now = match &a.master {
                Some(m) => format!("master {m}"),
                None => "local".to_string(),
            };
            out.push_str(&format!(
            "{repo}: {now} at epoch {epoch} as repos.toml says (was master {was} at epoch {was_epoch})\n",
            repo = a.repo,
            epoch = a.epoch,
            was = a.was.master,
            was_epoch = a.was.epoch,
        ));
        }
        for (repo, slaves) in &r.queued {
            let slaves: Vec<String> = slaves.iter().map(ToString::to_string).collect();
            out.push_str(&format!("queued {repo} for {}\n", slaves.join(", ")));
        }
        for repo in &r.mirror_removed {
            out.push_str(&format!(
                "mirror settings removed from {repo}: it is local now\n"
            ));
        }
        for repo in &r.mirror_by_hand {
            out.push_str(&format!(
            "{repo}: repos.toml gives no mirror settings; those set by hand in its git config are kept\n"
        ));
        }
        for d in &r.disagreements {
            out.push_str(&disagreement(d));
        }
        for line in &r.gone {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&format!(
            "gitmirror: compiled {} repos ({} created, hooks updated in {})\n",
            r.repos,
            r.created.len(),
            r.hooks_updated
        ));
        out.lines().map(str::to_string).collect()
    }
}

/// One line: the repo, the mastership it keeps, what repos.toml says, and the two ways out.
fn disagreement(d: &Disagreement) -> String {
    let (repo, master, epoch) = (&d.repo, &d.current.master, d.current.epoch);
    let next = epoch.saturating_add(1);
    let (says, fix, accepted) = match &d.configured {
        Some(c) => (
            format!("repos.toml names {c}"),
            format!("name {master} as its master in repos.toml"),
            format!("make {c} master at epoch {next}"),
        ),
        None => (
            "repos.toml gives it no mirror settings".to_string(),
            format!("give it mirror.master = \"{master}\" in repos.toml"),
            format!("make it local at epoch {next}"),
        ),
    };
    format!(
        "{repo}: kept master {master} (epoch {epoch}, since a promotion), but {says}: \
         {fix}, or run `gitmirror compile --accept-config` to {accepted}\n"
    )
}
