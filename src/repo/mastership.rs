//! Who masters a repo, and since which epoch: the mirror settings plus [`EPOCH_KEY`], read
//! and written together.
//!
//! The epoch is a number per repo that only grows: `repos.toml` gives epoch 0, and each
//! promotion raises it by one. When two servers claim a repo, the claim with the higher epoch
//! wins; at equal epochs (two promoted while cut off from each other), the server whose name
//! sorts first wins (never at epoch 0, which is `repos.toml`'s word). Every server applies the same rule, so they all end with one master.
//!
//! `repos.toml` carries no epoch, so once a repo has one above 0, `compile` ([`apply_rules`])
//! changes its master only when told to, and then at a new epoch: otherwise a stale
//! `repos.toml` would quietly undo a promotion on one server while the others kept it.
//!
//! A change is written as one replacement of the repo's config file: a promotion killed
//! halfway leaves the old mastership or the new one, never a mix.

use std::fs;
use std::path::Path;

use super::mirror_settings::{
    from_rules, has_mirror_keys, open, read_rule, remove_rule, write_rule,
};
use super::{StoreError, git_err};
use crate::config::MirrorRule;
use crate::fs::{Context, replace};
use crate::names::AccountName;
use crate::proto::{EPOCH_KEY, MASTER_KEY, RECEIVED_EPOCH_KEY, SLAVES_KEY};

/// A repo's master, slaves and epoch, as this server knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mastership {
    pub(crate) master: AccountName,
    pub(crate) slaves: Vec<AccountName>,
    pub(crate) epoch: u64,
}

impl Mastership {
    /// The same set of servers with `new` as master at `epoch`: the old master becomes a
    /// slave, the others stay slaves.
    pub(crate) fn handed_to(&self, new: &AccountName, epoch: u64) -> Mastership {
        let mut slaves: Vec<AccountName> = Vec::new();
        for s in std::iter::once(&self.master).chain(&self.slaves) {
            if s != new && !slaves.contains(s) {
                slaves.push(s.clone());
            }
        }
        Mastership {
            master: new.clone(),
            slaves,
            epoch,
        }
    }

    /// Whether `server` holds a copy (as master or slave).
    pub(crate) fn holds(&self, server: &AccountName) -> bool {
        &self.master == server || self.slaves.contains(server)
    }
}

/// What a server makes of a mirror push from `claimant` claiming the repo at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The claimant is the master here; `raised` when its epoch is newer than the one known
    /// here (recorded before the push lands).
    Master { raised: bool },
    /// The claimant's claim beats the master known here: it is the master from now on, this
    /// server one of its slaves (it may have been the master itself).
    Handover(Mastership),
    /// Refused; the words name the master and epoch known here.
    Refused(String),
}

impl Mastership {
    /// Decides on a mirror push from `claimant` at `epoch` to `this` server, which knows the
    /// repo as `self`.
    pub(crate) fn admit(
        &self,
        claimant: &AccountName,
        this: &AccountName,
        epoch: u64,
    ) -> Admission {
        let known = || Admission::Refused(crate::proto::claim_words(&self.master, self.epoch));
        if !self.holds(this) || !self.holds(claimant) || claimant == this {
            return known();
        }
        if &self.master == claimant {
            return if epoch >= self.epoch {
                Admission::Master {
                    raised: epoch > self.epoch,
                }
            } else {
                known()
            };
        }
        if beats((epoch, claimant), (self.epoch, &self.master)) {
            Admission::Handover(self.handed_to(claimant, epoch))
        } else {
            known()
        }
    }
}

/// When `words` (a peer's refusal) name a master and epoch that beat this server's claim on
/// the repo at `path` (it masters the repo here), records that master, this server now one of
/// its slaves: a master replaced by a promotion while it was away steps down by itself.
/// Returns the new mastership when it stepped down.
pub(crate) fn step_down(
    path: &Path,
    this: &AccountName,
    told_by: &AccountName,
    words: &str,
) -> Option<Mastership> {
    let (winner, epoch) = crate::proto::master_claim(words)?;
    let mut outcome = None;
    // Decided under the config's lock, on the mastership as it is then.
    let written = update_mastership(path, |now| {
        let here = now?;
        // Only a holder of the repo is listened to; the winner it names may be a server this
        // one has not heard of yet (added as a standby while it was away).
        if here.master != *this || !here.holds(told_by) {
            return None;
        }
        if winner == *this {
            // Its own claim, known elsewhere at a later epoch (compile --accept-config
            // there): take that epoch, so that its pushes are admitted.
            return (epoch > here.epoch).then(|| Mastership {
                epoch,
                ..here.clone()
            });
        }
        if !beats((epoch, &winner), (here.epoch, this)) {
            return None;
        }
        let new = here.handed_to(&winner, epoch);
        outcome = Some(new.clone());
        Some(new)
    });
    match written {
        Ok(_) if outcome.is_some() => {
            tracing::warn!(path = %path.display(), master = %winner, epoch, "stepped down: another server masters this repo at a later epoch");
            outcome
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the repo's new master");
            None
        }
    }
}

/// Whether the claim `(epoch, master)` beats `other`: a higher epoch, or at the same epoch
/// above 0 (two promotions) a name that sorts first. A claim never beats itself.
pub(crate) fn beats(claim: (u64, &AccountName), other: (u64, &AccountName)) -> bool {
    // At epoch 0 nobody was promoted: the master repos.toml names is the only one, and a
    // name's order must not unseat it.
    claim.0 > other.0 || (claim.0 == other.0 && claim.0 > 0 && claim.1.as_str() < other.1.as_str())
}

/// The repo's epoch (0 when it has none).
pub(crate) fn epoch(repo: &Path) -> Result<u64, StoreError> {
    epoch_in(&open(repo)?, repo)
}

/// The epoch of the last mirror push this server took for the repo (0 when none).
pub(crate) fn received_epoch(repo: &Path) -> Result<u64, StoreError> {
    number_in(&open(repo)?, repo, RECEIVED_EPOCH_KEY)
}

/// Records that this server took a mirror push from a master at `epoch`.
pub(crate) fn set_received_epoch(repo: &Path, epoch: u64) -> Result<(), StoreError> {
    rewrite(repo, Durability::Later, |config| {
        config.set_i64(RECEIVED_EPOCH_KEY, as_config_int(epoch))
    })
}

/// [`epoch`] from the repo's config already open.
fn epoch_in(config: &git2::Config, repo: &Path) -> Result<u64, StoreError> {
    number_in(config, repo, EPOCH_KEY)
}

fn number_in(config: &git2::Config, repo: &Path, key: &str) -> Result<u64, StoreError> {
    match config.get_i64(key) {
        Ok(n) => Ok(u64::try_from(n).unwrap_or(0)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(0),
        Err(e) => Err(git_err(repo)(e)),
    }
}

/// The repo's mastership; `None` when it is local to this server. Master, slaves and epoch
/// come from one snapshot of the file: a handover written meanwhile is seen whole or not at
/// all, never as the old master with the new epoch.
pub(crate) fn mastership(repo: &Path) -> Result<Option<Mastership>, StoreError> {
    let config = open(repo)?.snapshot().map_err(git_err(repo))?;
    mastership_in(&config, repo)
}

fn mastership_in(config: &git2::Config, repo: &Path) -> Result<Option<Mastership>, StoreError> {
    let Some(rule) = read_rule(config, repo)? else {
        return Ok(None);
    };
    Ok(Some(Mastership {
        master: rule.master,
        slaves: rule.slaves,
        epoch: epoch_in(config, repo)?,
    }))
}

/// Writes `m` into the repo's config in one replacement of the file (other settings kept).
pub(crate) fn set_mastership(repo: &Path, m: &Mastership) -> Result<(), StoreError> {
    update_mastership(repo, |_| Some(m.clone())).map(|_| ())
}

/// Decides and writes in one step, under git's own lock on the config: `decide` sees the
/// mastership as it is now (nobody can change it until the write) and returns the one to
/// write, or `None` to leave it. Returns what is in place afterwards. A promotion or a
/// handover decided on an older read could otherwise undo one made meanwhile.
pub(crate) fn update_mastership(
    repo: &Path,
    decide: impl FnOnce(Option<&Mastership>) -> Option<Mastership>,
) -> Result<Option<Mastership>, StoreError> {
    let mut result = None;
    rewrite_if(repo, Durability::Now, |config, current| {
        let now = mastership_in(current, repo)?;
        let Some(new) = decide(now.as_ref()) else {
            result = now;
            return Ok(false);
        };
        let slaves: Vec<&str> = new.slaves.iter().map(AccountName::as_str).collect();
        config
            .set_str(SLAVES_KEY, &slaves.join(" "))
            .and_then(|()| config.set_str(MASTER_KEY, new.master.as_str()))
            .and_then(|()| config.set_i64(EPOCH_KEY, as_config_int(new.epoch)))
            .map_err(git_err(repo))?;
        result = Some(new);
        Ok(true)
    })?;
    Ok(result)
}

/// What [`apply_rules`] did to a repo's mirror settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// They were already as `repos.toml` gives them (or absent, and it gives none).
    Unchanged,
    /// Written as `repos.toml` gives them.
    Written,
    /// Removed: `repos.toml` gives none and compile had written them; the repo is local now.
    Removed,
    /// `repos.toml` gives none; those set by hand in the repo's config are kept.
    KeptByHand,
    /// Not touched: `repos.toml` would change or remove the master of this mastership, whose
    /// epoch is above 0 (a promotion happened).
    Disagrees(Mastership),
    /// `repos.toml` replaced the mastership `was`, at epoch `epoch` (`was.epoch + 1`).
    Accepted { was: Mastership, epoch: u64 },
}

/// Makes the repo's mirror settings what `repos.toml` gives them (`rule`; `None`: local),
/// unless that would undo a promotion: see [`undoes_promotion`]. Such a repo is left as it
/// is, or with `accept`, given `rule` at the next epoch so that every server's comparison of
/// claims lets it win.
///
/// Reads the config file once. Does not wait for the disk: the caller syncs the filesystem
/// once afterwards (compile does, over thousands of repos).
pub(crate) fn apply_rules(
    repo: &Path,
    rule: Option<&MirrorRule>,
    accept: bool,
) -> Result<Applied, StoreError> {
    let mut config = open(repo)?;
    let compiled = from_rules(&config);
    let current = if rule.is_none() && !(compiled && has_mirror_keys(&config)) {
        // Settings compile leaves alone are not parsed: a mistake in some set by hand must
        // not stop the compile of every other repo.
        None
    } else {
        read_rule(&config, repo)?
    };
    if let Some(now) = &current
        && rule.is_none_or(|r| r.master != now.master)
    {
        // The epoch only matters where the masters differ: read it only then.
        let now = Mastership {
            master: now.master.clone(),
            slaves: now.slaves.clone(),
            epoch: epoch_in(&config, repo)?,
        };
        if undoes_promotion(&now, rule, compiled) {
            if !accept {
                return Ok(Applied::Disagrees(now));
            }
            let epoch = now.epoch.saturating_add(1);
            rewrite(repo, Durability::Later, |config| {
                match rule {
                    Some(rule) => write_rule(config, rule)?,
                    None => remove_rule(config)?,
                }
                config.set_i64(EPOCH_KEY, as_config_int(epoch))
            })?;
            return Ok(Applied::Accepted { was: now, epoch });
        }
    }
    match rule {
        Some(rule) if current.as_ref() == Some(rule) && compiled => Ok(Applied::Unchanged),
        Some(rule) => {
            write_rule(&mut config, rule).map_err(git_err(repo))?;
            Ok(Applied::Written)
        }
        None if !has_mirror_keys(&config) => Ok(Applied::Unchanged),
        None if !compiled => Ok(Applied::KeptByHand),
        None => {
            remove_rule(&mut config).map_err(git_err(repo))?;
            Ok(Applied::Removed)
        }
    }
}

/// Whether giving the repo `rule` (`None`: no mirror settings) would undo a promotion: its
/// epoch is above 0 and `rule` names another master, or none while the settings are
/// compile's to remove (`compiled`; those set by hand are never removed).
fn undoes_promotion(now: &Mastership, rule: Option<&MirrorRule>, compiled: bool) -> bool {
    now.epoch > 0
        && match rule {
            Some(rule) => rule.master != now.master,
            None => compiled,
        }
}

/// Whether a rewrite waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// Before returning: a promotion must survive a crash right after it.
    Now,
    /// No: the caller syncs the filesystem once after many (compile).
    Later,
}

/// Edits the repo's config as `edit` says, in one replacement of the file.
fn rewrite(
    repo: &Path,
    durability: Durability,
    edit: impl FnOnce(&mut git2::Config) -> Result<(), git2::Error>,
) -> Result<(), StoreError> {
    rewrite_if(repo, durability, |config, _| {
        edit(config).map_err(git_err(repo))?;
        Ok(true)
    })
}

/// How long a writer waits for another's lock on a repo's config before giving up.
const CONFIG_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Edits the repo's config in one replacement of the file, holding git's own lock on it
/// (`config.lock`, created exclusively, as git and libgit2 take it), so that no other writer
/// (git, libgit2, another gitmirror) can change it between the read `edit` sees (`current`)
/// and the write. `edit` returns whether to write.
fn rewrite_if(
    repo: &Path,
    durability: Durability,
    edit: impl FnOnce(&mut git2::Config, &git2::Config) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let path = repo.join("config");
    let lock_path = repo.join("config.lock");
    let started = std::time::Instant::now();
    let mut lock_file = loop {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock_path)
        {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if started.elapsed() > CONFIG_LOCK_WAIT {
                    return Err(Err::<(), _>(e)
                        .at("cannot lock", &lock_path)
                        .unwrap_err()
                        .into());
                }
                // Another writer holds it for a moment (a config write takes milliseconds).
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => {
                return Err(Err::<(), _>(e)
                    .at("cannot lock", &lock_path)
                    .unwrap_err()
                    .into());
            }
        }
    };
    let released = |r: Result<(), StoreError>| {
        let _ = fs::remove_file(&lock_path);
        r
    };
    // Edit a copy, then put it in place whole through the lock file. The copy is scratch,
    // read back at once; ours alone while the lock is held.
    let staged = repo.join("config.gitmirror-edit");
    let result = (|| {
        let original = fs::read(&path).at("cannot read", &path)?;
        replace(&staged, &original, 0o600)?;
        let current = git2::Config::open(&staged)
            .and_then(|mut c| c.snapshot())
            .map_err(git_err(repo))?;
        let mut config = git2::Config::open(&staged).map_err(git_err(repo))?;
        if !edit(&mut config, &current)? {
            return Ok(false);
        }
        let text = fs::read(&staged).at("cannot read", &staged)?;
        use std::io::Write as _;
        lock_file.write_all(&text).at("cannot write", &lock_path)?;
        if durability == Durability::Now {
            lock_file.sync_all().at("cannot sync", &lock_path)?;
        }
        Ok(true)
    })();
    let _ = fs::remove_file(&staged);
    match result {
        Ok(true) => {
            let renamed = fs::rename(&lock_path, &path).at("cannot replace", &path);
            if renamed.is_err() {
                return released(renamed.map_err(Into::into));
            }
            if durability == Durability::Now
                && let Ok(dir) = fs::File::open(repo)
            {
                let _ = dir.sync_all();
            }
            Ok(())
        }
        Ok(false) => released(Ok(())),
        Err(e) => released(Err(e)),
    }
}

/// An epoch as git config stores it (a signed 64-bit number).
fn as_config_int(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::mirror_settings::mirror_config;
    use super::*;

    fn name(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    #[test]
    fn higher_epochs_win_and_ties_go_to_the_first_name() {
        let (a, b) = (name("server1"), name("server2"));
        assert!(beats((2, &b), (1, &a)));
        assert!(!beats((1, &a), (2, &b)));
        assert!(beats((3, &a), (3, &b)));
        assert!(!beats((3, &b), (3, &a)));
        assert!(!beats((3, &a), (3, &a)));
        // Epoch 0 is repos.toml's word: no tie-break against its master.
        assert!(!beats((0, &a), (0, &b)));
    }

    #[test]
    fn a_handover_keeps_every_server() {
        let m = Mastership {
            master: name("server1"),
            slaves: vec![name("server2"), name("server3")],
            epoch: 4,
        };
        let n = m.handed_to(&name("server2"), 5);
        assert_eq!(n.master, name("server2"));
        assert_eq!(n.slaves, vec![name("server1"), name("server3")]);
        assert_eq!(n.epoch, 5);
        assert!(n.holds(&name("server1")) && n.holds(&name("server3")));
    }

    #[test]
    fn a_push_is_admitted_by_epoch() {
        let (s1, s2, s3, s9) = (
            name("server1"),
            name("server2"),
            name("server3"),
            name("server9"),
        );
        let here = Mastership {
            master: s1.clone(),
            slaves: vec![s2.clone(), s3.clone()],
            epoch: 2,
        };
        assert_eq!(here.admit(&s1, &s2, 2), Admission::Master { raised: false });
        assert_eq!(here.admit(&s1, &s2, 3), Admission::Master { raised: true });
        // The master with an epoch older than known here, another slave without a newer
        // claim, and a stranger are refused, with the master and epoch known here.
        let refused = Admission::Refused("its master here is server1 at epoch 2".into());
        assert_eq!(here.admit(&s1, &s2, 1), refused);
        assert_eq!(here.admit(&s3, &s2, 2), refused);
        assert_eq!(here.admit(&s9, &s2, 9), refused);
        // A newer claim from another holder hands the repo over, here on a slave and on the
        // old master itself.
        let handed = here.handed_to(&s3, 3);
        assert_eq!(here.admit(&s3, &s2, 3), Admission::Handover(handed.clone()));
        assert_eq!(here.admit(&s3, &s1, 3), Admission::Handover(handed));
    }

    #[test]
    fn written_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        repo.config().unwrap().set_str("user.keep", "yes").unwrap();
        assert_eq!(epoch(dir.path()).unwrap(), 0);
        assert_eq!(mastership(dir.path()).unwrap(), None);
        let m = Mastership {
            master: name("server2"),
            slaves: vec![name("server1")],
            epoch: 3,
        };
        set_mastership(dir.path(), &m).unwrap();
        assert_eq!(mastership(dir.path()).unwrap(), Some(m));
        let config = git2::Config::open(&dir.path().join("config")).unwrap();
        assert_eq!(config.get_string("user.keep").unwrap(), "yes");
        for left in ["config.gitmirror-edit", "config.lock"] {
            assert!(!dir.path().join(left).exists(), "{left} left behind");
        }
        // A write decided on the mastership as it is then: a stale expectation writes nothing.
        let other = Mastership {
            master: name("server1"),
            slaves: vec![name("server2")],
            epoch: 4,
        };
        let before = epoch(dir.path()).unwrap();
        let stale = Mastership {
            epoch: before + 100,
            ..other.clone()
        };
        let now = update_mastership(dir.path(), |now| {
            (now == Some(&stale)).then(|| other.clone())
        })
        .unwrap();
        assert_eq!(now.map(|m| m.epoch), Some(before));
        assert_eq!(epoch(dir.path()).unwrap(), before);
    }

    fn rule(master: &str, slaves: &[&str], sync: Option<bool>) -> MirrorRule {
        MirrorRule {
            master: name(master),
            slaves: slaves.iter().map(|s| name(s)).collect(),
            sync,
            redirect: None,
        }
    }

    /// A bare repo whose settings compile wrote from `server1 -> server2`, then promoted to
    /// server2 at epoch 1 (as `promote` writes it).
    fn promoted() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(dir.path()).unwrap();
        let r = rule("server1", &["server2"], Some(true));
        assert_eq!(
            apply_rules(dir.path(), Some(&r), false).unwrap(),
            Applied::Written
        );
        let m = Mastership {
            master: name("server1"),
            slaves: vec![name("server2")],
            epoch: 0,
        };
        set_mastership(dir.path(), &m.handed_to(&name("server2"), 1)).unwrap();
        dir
    }

    fn config_text(repo: &Path) -> String {
        fs::read_to_string(repo.join("config")).unwrap()
    }

    fn now(master: &str, slaves: &[&str], epoch: u64) -> Mastership {
        Mastership {
            master: name(master),
            slaves: slaves.iter().map(|s| name(s)).collect(),
            epoch,
        }
    }

    #[test]
    fn only_a_promoted_master_outranks_the_rules() {
        let m = now("server2", &["server1"], 1);
        assert!(undoes_promotion(
            &m,
            Some(&rule("server1", &["server2"], None)),
            true
        ));
        assert!(!undoes_promotion(
            &m,
            Some(&rule("server2", &["server3"], None)),
            true
        ));
        assert!(undoes_promotion(&m, None, true));
        assert!(
            !undoes_promotion(&m, None, false),
            "settings by hand are never removed"
        );
        let m = now("server2", &["server1"], 0);
        assert!(!undoes_promotion(
            &m,
            Some(&rule("server1", &[], None)),
            true
        ));
        assert!(!undoes_promotion(&m, None, true));
    }

    #[test]
    fn without_a_promotion_the_rules_win_as_always() {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(dir.path()).unwrap();
        let (a, b) = (
            rule("server1", &["server2"], None),
            rule("server2", &["server1"], None),
        );
        assert_eq!(
            apply_rules(dir.path(), Some(&a), false).unwrap(),
            Applied::Written
        );
        assert_eq!(
            apply_rules(dir.path(), Some(&a), false).unwrap(),
            Applied::Unchanged
        );
        assert_eq!(
            apply_rules(dir.path(), Some(&b), false).unwrap(),
            Applied::Written
        );
        assert_eq!(mirror_config(dir.path()).unwrap(), Some(b));
        assert_eq!(
            apply_rules(dir.path(), None, false).unwrap(),
            Applied::Removed
        );
        assert_eq!(mirror_config(dir.path()).unwrap(), None);
        assert_eq!(
            apply_rules(dir.path(), None, false).unwrap(),
            Applied::Unchanged
        );
        assert_eq!(epoch(dir.path()).unwrap(), 0);
    }

    #[test]
    fn redirect_is_written_read_back_and_removed_with_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(dir.path()).unwrap();
        let on = MirrorRule {
            redirect: Some(true),
            ..rule("server1", &["server2"], None)
        };
        assert_eq!(
            apply_rules(dir.path(), Some(&on), false).unwrap(),
            Applied::Written
        );
        assert_eq!(mirror_config(dir.path()).unwrap(), Some(on.clone()));
        assert!(config_text(dir.path()).contains("redirect = true"));
        // Dropping it from the rules is a change, and the key goes.
        let off = MirrorRule {
            redirect: None,
            ..on.clone()
        };
        assert_eq!(
            apply_rules(dir.path(), Some(&off), false).unwrap(),
            Applied::Written
        );
        assert!(!config_text(dir.path()).contains("redirect"));
        apply_rules(dir.path(), Some(&on), false).unwrap();
        assert_eq!(
            apply_rules(dir.path(), None, false).unwrap(),
            Applied::Removed
        );
        assert!(!config_text(dir.path()).contains("redirect"));
        // A promotion rewrites the mastership and keeps the setting.
        apply_rules(dir.path(), Some(&on), false).unwrap();
        let m = mastership(dir.path()).unwrap().unwrap();
        set_mastership(dir.path(), &m.handed_to(&name("server2"), 1)).unwrap();
        assert_eq!(
            mirror_config(dir.path()).unwrap().unwrap().redirect,
            Some(true)
        );
    }

    #[test]
    fn rules_naming_another_master_leave_a_promoted_repo_untouched() {
        let dir = promoted();
        let before = config_text(dir.path());
        let stale = rule("server1", &["server2"], Some(true));
        assert_eq!(
            apply_rules(dir.path(), Some(&stale), false).unwrap(),
            Applied::Disagrees(now("server2", &["server1"], 1))
        );
        assert_eq!(
            apply_rules(dir.path(), None, false).unwrap(),
            Applied::Disagrees(now("server2", &["server1"], 1))
        );
        assert_eq!(config_text(dir.path()), before);
    }

    #[test]
    fn rules_naming_the_promoted_master_are_applied_and_the_epoch_kept() {
        let dir = promoted();
        let agreed = rule("server2", &["server1", "server3"], Some(false));
        assert_eq!(
            apply_rules(dir.path(), Some(&agreed), false).unwrap(),
            Applied::Written
        );
        assert_eq!(mirror_config(dir.path()).unwrap(), Some(agreed.clone()));
        assert_eq!(epoch(dir.path()).unwrap(), 1);
        assert_eq!(
            apply_rules(dir.path(), Some(&agreed), false).unwrap(),
            Applied::Unchanged
        );
    }

    #[test]
    fn accepting_the_rules_demotes_at_the_next_epoch() {
        let dir = promoted();
        let mut config = open(dir.path()).unwrap();
        config.set_str("user.keep", "yes").unwrap();
        let configured = rule("server1", &["server2", "server3"], None);
        assert_eq!(
            apply_rules(dir.path(), Some(&configured), true).unwrap(),
            Applied::Accepted {
                was: now("server2", &["server1"], 1),
                epoch: 2
            }
        );
        assert_eq!(mirror_config(dir.path()).unwrap(), Some(configured.clone()));
        assert_eq!(epoch(dir.path()).unwrap(), 2);
        let config = open(dir.path()).unwrap();
        assert!(from_rules(&config));
        assert_eq!(config.get_string("user.keep").unwrap(), "yes");
        for left in ["config.gitmirror-edit", "config.lock"] {
            assert!(!dir.path().join(left).exists(), "{left} left behind");
        }
        // Done: the next compile, accepting or not, finds nothing to settle.
        assert_eq!(
            apply_rules(dir.path(), Some(&configured), true).unwrap(),
            Applied::Unchanged
        );
        assert_eq!(epoch(dir.path()).unwrap(), 2);
    }

    #[test]
    fn accepting_rules_that_drop_the_settings_makes_the_repo_local_at_the_next_epoch() {
        let dir = promoted();
        assert_eq!(
            apply_rules(dir.path(), None, true).unwrap(),
            Applied::Accepted {
                was: now("server2", &["server1"], 1),
                epoch: 2
            }
        );
        let config = open(dir.path()).unwrap();
        assert!(!has_mirror_keys(&config) && !from_rules(&config));
        assert_eq!(epoch(dir.path()).unwrap(), 2);
        assert_eq!(
            apply_rules(dir.path(), None, false).unwrap(),
            Applied::Unchanged
        );
    }

    #[test]
    fn promoted_settings_set_by_hand_stay_when_the_rules_give_none() {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(dir.path()).unwrap();
        set_mastership(dir.path(), &now("server2", &["server1"], 3)).unwrap();
        assert_eq!(
            apply_rules(dir.path(), None, true).unwrap(),
            Applied::KeptByHand
        );
        assert_eq!(
            mastership(dir.path()).unwrap(),
            Some(now("server2", &["server1"], 3))
        );
    }
}
