//! Which repos this server masters, and to which slaves: read from each repo's own mirror
//! settings every time, so a `compile` or a hand edit takes effect without a restart.

use std::path::PathBuf;

use thiserror::Error;

use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::repo::gone::GoneRecord;
use crate::repo::{self, Store, StoreError};

/// Why this server does not master a repo it was asked about.
#[derive(Debug, Error)]
pub(crate) enum NotMastered {
    #[error("{0}: no such repo here")]
    NoRepo(RepoName),
    #[error("{repo}: mastered by {master}, not {this}")]
    Elsewhere {
        repo: RepoName,
        master: AccountName,
        this: AccountName,
    },
    #[error("{0}: not mirrored")]
    NotMirrored(RepoName),
    #[error(transparent)]
    Settings(#[from] StoreError),
}

/// The repos of one server, as their master.
#[derive(Debug, Clone)]
pub(crate) struct Mastered {
    store: Store,
    this: AccountName,
    gone: GoneRecord,
}

impl Mastered {
    /// The repos in `home`, seen by the server named `this`.
    pub(crate) fn new(home: &Home, this: &AccountName) -> Self {
        Mastered {
            store: Store::new(home.repositories()),
            this: this.clone(),
            gone: GoneRecord::in_state(&home.state_dir()),
        }
    }

    /// This server's name.
    pub(crate) fn this(&self) -> &AccountName {
        &self.this
    }

    /// The repo's path and slaves, if this server masters it.
    pub(crate) fn slaves_of(
        &self,
        repo: &RepoName,
    ) -> Result<(PathBuf, Vec<AccountName>), NotMastered> {
        let path = self
            .store
            .find(repo)
            .ok_or_else(|| NotMastered::NoRepo(repo.clone()))?;
        match repo::mirror_config(&path)? {
            Some(rule) if rule.is_master(&self.this) => Ok((path, rule.slaves)),
            Some(rule) => Err(NotMastered::Elsewhere {
                repo: repo.clone(),
                master: rule.master,
                this: self.this.clone(),
            }),
            None => Err(NotMastered::NotMirrored(repo.clone())),
        }
    }

    /// Whether `repo`, missing here, was deleted (it is in the trash) or renamed here: the
    /// work for it ends. A repo merely away for a moment is neither.
    pub(crate) fn moved_away(&self, repo: &RepoName) -> bool {
        self.store.find(repo).is_none()
            && (self
                .store
                .trash_list()
                .is_ok_and(|all| all.iter().any(|e| e.repo() == repo))
                || self.gone.load().iter().any(|g| g.repo() == repo))
    }

    /// Every repo in the store, mastered here or not (a cheap directory walk).
    pub(crate) fn repos(&self) -> Vec<RepoName> {
        self.store.list().unwrap_or_default()
    }

    /// Every repo this server masters, with its path and slaves: one read of each repo's
    /// settings, for a pass over all of them.
    pub(crate) fn mastered_repos(&self) -> Vec<(RepoName, PathBuf, Vec<AccountName>)> {
        let mut repos = Vec::new();
        for repo in self.store.list().unwrap_or_default() {
            if let Ok((path, slaves)) = self.slaves_of(&repo) {
                repos.push((repo, path, slaves));
            }
        }
        repos
    }
}
