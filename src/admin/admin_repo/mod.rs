//! The admin repo, `gitmirror-admin`: one repo whose default branch is the configuration of
//! every server it reaches (`repos.toml`, `keys/users/NAME.pub`, `keys/peers/NAME.pub`).
//!
//! - [`snapshot`]: a configuration read from a commit (and validated whole), or from a home.
//! - [`bootstrap`]: `init --admin`, the repo and its first commit.
//! - [`gate`]: which pushes to it are accepted (pre-receive).
//! - [`apply`]: an accepted commit made this server's configuration, and the record of it.
//!
//! It is a repo like any other (mirrored per `repos.toml`, access per its rules); what makes
//! it special is only that the hooks check and apply what its default branch holds.

pub(crate) mod apply;
pub(crate) mod bootstrap;
pub(crate) mod gate;
pub(crate) mod snapshot;

use thiserror::Error;

use crate::config::ConfigError;
use crate::fs::FsError;
use crate::invocation::InvocationError;
use crate::names::{NameError, RepoName};

use super::compile::CompileError;
use super::init::InitError;
use super::keys::KeyError;

pub(crate) use crate::proto::ADMIN_REPO;

/// The file of the rules in the admin repo's tree.
pub(crate) const RULES_FILE: &str = "repos.toml";

/// The directory of the keys in the admin repo's tree (`users/` and `peers/` under it).
pub(crate) const KEYS_DIR: &str = "keys";

/// The admin repo's name, as a repo name.
pub(crate) fn name() -> RepoName {
    #[allow(clippy::expect_used)]
    RepoName::parse(ADMIN_REPO).expect("the admin repo's name is a valid repo name")
}

/// Whether `repo` is the admin repo.
pub(crate) fn is_admin_repo(repo: &RepoName) -> bool {
    repo.as_str() == ADMIN_REPO
}

/// What is wrong with an admin repo's content, or what stopped its use.
#[derive(Debug, Error)]
pub(crate) enum AdminRepoError {
    #[error(transparent)]
    Rules(#[from] ConfigError),
    #[error("{0}: missing; the admin repo's default branch must hold repos.toml at its top")]
    MissingRules(String),
    #[error("{path}: expected a file, found a {found}")]
    NotAFile { path: String, found: String },
    #[error("{path}: expected a directory of NAME.pub files, found a {found}")]
    NotADirectory { path: String, found: String },
    #[error("{path}: expected UTF-8 text")]
    NotText { path: String },
    #[error("{path}: expected keys/users/NAME.pub or keys/peers/NAME.pub")]
    Stray { path: String },
    #[error("{path}: the file name must be a user or peer name followed by .pub: {source}")]
    KeyName {
        path: String,
        #[source]
        source: NameError,
    },
    #[error("{path}:1: {problem}")]
    BadKey { path: String, problem: String },
    #[error("keys/: {0}")]
    KeySet(#[source] KeyError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("{ADMIN_REPO}: {0}")]
    Git(String),
    #[error(
        "{ADMIN_REPO} already has history ({branch} at {commit}); init --admin refuses to overwrite it, nothing was changed"
    )]
    HasHistory { branch: String, commit: String },
    #[error(
        "repos.toml already has [repos.{ADMIN_REPO}] without giving {user} RW+; add \"{user}\" to its RW+ list and run init again"
    )]
    NoRewind { user: String },
    #[error("only {branch} carries the configuration; push there, not to {refname}")]
    OtherRef { refname: String, branch: String },
    #[error(
        "repos.toml: no user with a key in keys/users/ would keep RW+ on {ADMIN_REPO}; nobody could push to it again"
    )]
    NoAdministrator,
    #[error(
        "repos.toml names {server} as {role} of {repo}, but keys/peers/{server}.pub is missing: every server applying this commit would stop accepting {server} as a peer"
    )]
    NoPeerKey {
        server: String,
        role: &'static str,
        repo: String,
    },
    #[error("deleting {branch} would leave the servers without a configuration")]
    DeleteDefault { branch: String },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error(transparent)]
    Invocation(#[from] InvocationError),
    #[error(transparent)]
    Fs(#[from] FsError),
}

impl From<git2::Error> for AdminRepoError {
    fn from(e: git2::Error) -> Self {
        AdminRepoError::Git(e.message().to_string())
    }
}
