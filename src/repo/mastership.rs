//! Who masters a repo, and since which epoch: the mirror settings plus [`EPOCH_KEY`], read
//! and written together.
//!
//! The epoch is a number per repo that only grows: `repos.toml` gives epoch 0, and each
//! promotion raises it by one. When two servers claim a repo, the claim with the higher epoch
//! wins; at equal epochs (two promoted while cut off from each other), the server whose name
//! sorts first wins. Every server applies the same rule, so they all end with one master.
//!
//! A change is written as one replacement of the repo's config file: a promotion killed
//! halfway leaves the old mastership or the new one, never a mix.

use std::fs;
use std::path::Path;

use super::mirror_settings::mirror_config;
use super::{StoreError, git_err};
use crate::fs::{Context, write_atomic};
use crate::names::AccountName;
use crate::proto::{EPOCH_KEY, MASTER_KEY, SLAVES_KEY};

/// A repo's master, slaves and epoch, as this server knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mastership {
    pub(crate) master: AccountName,
    pub(crate) slaves: Vec<AccountName>,
    pub(crate) epoch: u64,
}

#[allow(dead_code)] // failover is landing in steps: promote and the receive side use these next
impl Mastership {
    /// The same set of servers with `new` as master at `epoch`: the old master becomes a
    /// slave, the others stay slaves.
    pub(crate) fn handed_to(&self, new: &AccountName, epoch: u64) -> Mastership {
        let mut slaves: Vec<AccountName> = std::iter::once(&self.master)
            .chain(&self.slaves)
            .filter(|s| *s != new)
            .cloned()
            .collect();
        slaves.dedup();
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

/// Whether the claim `(epoch, master)` beats `other`: a higher epoch, or at the same epoch a
/// name that sorts first. A claim never beats itself.
#[allow(dead_code)] // failover is landing in steps: promote and the receive side use it next
pub(crate) fn beats(claim: (u64, &AccountName), other: (u64, &AccountName)) -> bool {
    claim.0 > other.0 || (claim.0 == other.0 && claim.1.as_str() < other.1.as_str())
}

/// The repo's epoch (0 when it has none).
pub(crate) fn epoch(repo: &Path) -> Result<u64, StoreError> {
    let config = git2::Config::open(&repo.join("config")).map_err(git_err(repo))?;
    match config.get_i64(EPOCH_KEY) {
        Ok(n) => Ok(u64::try_from(n).unwrap_or(0)),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(0),
        Err(e) => Err(git_err(repo)(e)),
    }
}

/// The repo's mastership; `None` when it is local to this server.
pub(crate) fn mastership(repo: &Path) -> Result<Option<Mastership>, StoreError> {
    let Some(rule) = mirror_config(repo)? else {
        return Ok(None);
    };
    Ok(Some(Mastership {
        master: rule.master,
        slaves: rule.slaves,
        epoch: epoch(repo)?,
    }))
}

/// Writes `m` into the repo's config in one replacement of the file (other settings kept).
#[allow(dead_code)] // failover is landing in steps: promote and the receive side use it next
pub(crate) fn set_mastership(repo: &Path, m: &Mastership) -> Result<(), StoreError> {
    let path = repo.join("config");
    // Edit a copy, then put it in place whole.
    let staged = repo.join("config.gitmirror-mastership");
    let original = fs::read(&path).at("cannot read", &path)?;
    write_atomic(&staged, &original, 0o600)?;
    let edited = (|| {
        let mut config = git2::Config::open(&staged)?;
        let slaves: Vec<&str> = m.slaves.iter().map(AccountName::as_str).collect();
        config.set_str(SLAVES_KEY, &slaves.join(" "))?;
        config.set_str(MASTER_KEY, m.master.as_str())?;
        config.set_i64(EPOCH_KEY, i64::try_from(m.epoch).unwrap_or(i64::MAX))
    })();
    let result = edited.map_err(git_err(repo)).and_then(|()| {
        let text = fs::read(&staged).at("cannot read", &staged)?;
        Ok(write_atomic(&path, &text, 0o600)?)
    });
    let _ = fs::remove_file(&staged);
    result
}

#[cfg(test)]
mod tests {
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
        assert!(!dir.path().join("config.gitmirror-mastership").exists());
    }
}
