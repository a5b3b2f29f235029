//! `gitmirror shell USER`: the forced command every user's key runs.
//!
//! It turns `SSH_ORIGINAL_COMMAND` into a [`Request`], decides whether this user may have it,
//! logs the decision, and answers with text (`info`), a git service to exec, or, for a push to
//! a slave whose settings say so, an ssh login to the repo's master to exec, which carries
//! the push there. The decision is made here, before git starts: a refused client never
//! reaches git. The master decides a carried push with this same code, for the same user.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tracing::warn;

use super::access::{Reply, answer};
use super::command::{CommandError, GitService, PermsChange, Request};
use super::git::{self, Launch};
use crate::admin::keys;
use crate::admin::store_ops::{self, StoreOpsError};
use crate::admin::user_repos::{self, UserRepoError};
use crate::config::{Access, MirrorRule, RepoRoles, Rules, ServerConfig};
use crate::daemon::request::{self, RequestError};
use crate::external::upstream_record::UpstreamRecords;
use crate::home::Home;
use crate::names::{AccountName, NameError, RepoName};
use crate::proto;
use crate::repo::{self, Store, wild};
use crate::ssh::Login;

/// Why a user's request was refused. Each message is one line, safe to show the user.
#[derive(Debug, Error)]
pub(crate) enum ShellError {
    #[error("{0}")]
    Command(#[from] CommandError),
    #[error("bad user name in authorized_keys: {0}")]
    User(NameError),
    #[error("{0} is not a registered user here")]
    NotRegistered(AccountName),
    #[error("{repo}: no such repo, or {user} may not read it")]
    NoAccess { user: AccountName, repo: RepoName },
    #[error("{user} may read {repo} but not push to it")]
    ReadOnly { user: AccountName, repo: RepoName },
    #[error(
        "{repo} is mirrored from {master}; {this} is a slave and accepts pushes only from its master."
    )]
    Slave {
        repo: RepoName,
        master: AccountName,
        this: AccountName,
    },
    #[error("{repo}: the repo's mirror settings cannot be read; ask the administrator")]
    RepoConfig { repo: RepoName },
    #[error(
        "this server's hooks are not installed; ask its administrator to run gitmirror compile"
    )]
    NotCompiled,
    #[error("{0}")]
    Request(#[from] RequestError),
    #[error(
        "{0} may not delete repos: only users with RW+ on gitmirror-admin (administrators) may"
    )]
    NotAdmin(AccountName),
    #[error("cannot read this server's rules: {0}")]
    Rules(String),
    #[error("{0}")]
    StoreOp(#[from] StoreOpsError),
    #[error("{repo} is a mirror of {url}; push there instead")]
    PullMirror { repo: RepoName, url: String },
    #[error("{0} is not a pull mirror (it has no upstream)")]
    NotPullMirror(RepoName),
    #[error("{repo} was fetched {ago:.0}s ago; try again in {wait:.0}s")]
    TooSoon { repo: RepoName, ago: f64, wait: f64 },
    #[error("{0}")]
    Fetch(String),
    #[error("{0}")]
    UserRepo(#[from] UserRepoError),
}

/// How often a user may have a pull mirror fetched (`ssh ... fetch REPO`): a webhook storm
/// must not become a fetch storm against the upstream.
const FETCH_EVERY: f64 = 10.0;

/// Whether a user's push to a slave may be carried to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redirects {
    /// Yes, where the repo's settings say so: the user is connected here.
    Carried,
    /// No: the push was carried here already, and goes no further.
    Refused,
}

/// Where a user's push goes.
#[derive(Debug)]
enum Push {
    /// Into this server's copy, with the user's access to it.
    Here { path: PathBuf, access: Access },
    /// To the repo's master, which decides it.
    ToMaster(AccountName),
}

/// One user's session: the server as this user sees it.
pub(crate) struct UserShell<'a> {
    home: &'a Home,
    config: Arc<ServerConfig>,
    rules: &'a Rules,
    user: AccountName,
}

impl<'a> UserShell<'a> {
    /// A session for `user`, as named by the authorized_keys line that let them in.
    pub(crate) fn new(
        home: &'a Home,
        config: Arc<ServerConfig>,
        rules: &'a Rules,
        user: &str,
    ) -> Result<Self, ShellError> {
        let user = AccountName::parse(user).map_err(ShellError::User)?;
        if !keys::is_registered(home, keys::Role::User, &user) {
            return Err(ShellError::NotRegistered(user));
        }
        Ok(UserShell {
            home,
            config,
            rules,
            user,
        })
    }

    /// Answers `original` (the client's command) and logs one line with the decision.
    pub(crate) fn serve(
        &self,
        original: Option<&str>,
        protocol: Option<&OsStr>,
    ) -> Result<Reply, ShellError> {
        answer(
            keys::Role::User,
            &self.user,
            original,
            |request| match &request {
                Request::Info => Ok(Reply::text(self.info(), true)),
                Request::Git {
                    service: GitService::UploadPack,
                    repo,
                } => {
                    let (path, access) = self.admit(repo, false)?;
                    Ok(Reply::Git(self.launch(
                        GitService::UploadPack,
                        repo,
                        &path,
                        access,
                        protocol,
                    )))
                }
                Request::Git {
                    service: GitService::ReceivePack,
                    repo,
                } => Ok(match self.push(repo, Redirects::Carried)? {
                    Push::Here { path, access } => Reply::Git(self.launch(
                        GitService::ReceivePack,
                        repo,
                        &path,
                        access,
                        protocol,
                    )),
                    Push::ToMaster(master) => Reply::Redirect {
                        login: Login::to(self.home, &self.config, &master),
                        command: proto::redirect_command(&self.user, repo),
                        protocol: git::sanitize_protocol(protocol),
                    },
                }),
                Request::Mirror(repo) => self.request_push(repo),
                // Peers only: a user gets the refusal any unknown command gets.
                Request::Verify => {
                    Err(CommandError::Unknown(proto::VERIFY_VERB.to_string()).into())
                }
                Request::MirrorReceive { .. } => {
                    Err(CommandError::Unknown(proto::MIRROR_RECEIVE_VERB.to_string()).into())
                }
                Request::RedirectReceive { .. } => {
                    Err(CommandError::Unknown(proto::REDIRECT_RECEIVE_VERB.to_string()).into())
                }
                Request::StoreOp { .. } => {
                    Err(CommandError::Unknown(proto::STORE_OP_VERB.to_string()).into())
                }
                Request::Delete(repo) => self.delete(repo),
                Request::Fetch(repo) => self.fetch(repo),
                Request::Create(repo) => {
                    user_repos::create(self.home, &self.config, self.rules, &self.user, repo)?;
                    Ok(Reply::text(format!("created {repo}\n"), true))
                }
                Request::Perms { repo, change } => self.perms(repo, change.as_ref()),
            },
        )
    }

    /// `delete REPO`: an administrator's (RW+ on the admin repo) delete, into the trash here
    /// and on the repo's slaves, as `gitmirror delete` without `--force`.
    fn delete(&self, repo: &RepoName) -> Result<Reply, ShellError> {
        let admin = RepoName::parse(proto::ADMIN_REPO).map_err(CommandError::from)?;
        let rules =
            Rules::compiled_for(self.home, &admin).map_err(|e| ShellError::Rules(e.to_string()))?;
        if rules.access(&self.user, &admin) < Access::Rewind {
            return Err(ShellError::NotAdmin(self.user.clone()));
        }
        let done = store_ops::delete(self.home, &self.config, repo, false)?;
        Ok(Reply::text(format!("{}\n", done.line), true))
    }

    /// Before a push to a repo that does not exist yet: one a pattern's `C` lets this user
    /// create is created, on its master; on a slave that carries pushes, the push goes to
    /// the master, which creates it. Anything else is answered as any missing repo is.
    fn create_for_push(
        &self,
        repo: &RepoName,
        redirects: Redirects,
    ) -> Result<Option<Push>, ShellError> {
        let store = Store::new(self.home.repositories());
        if store.find(repo).is_some() || self.rules.pattern_for(repo).is_none() {
            return Ok(None);
        }
        if let Some(m) = self.rules.mirror(repo)
            && m.master != self.config.hostname
        {
            return Ok((redirects == Redirects::Carried && self.carries(&m))
                .then(|| Push::ToMaster(m.master.clone())));
        }
        match user_repos::create(self.home, &self.config, self.rules, &self.user, repo) {
            // Created meanwhile by another, or not this user's to create: decided as usual.
            Ok(_) | Err(UserRepoError::Exists { .. } | UserRepoError::NoAccess { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `perms REPO [+|- ROLE USER]`: a user-created repo's creator and roles, shown to users
    /// who may read it; changed by its creator only.
    fn perms(&self, repo: &RepoName, change: Option<&PermsChange>) -> Result<Reply, ShellError> {
        let (path, _) = self.admit(repo, false)?;
        let roles = match change {
            None => wild::roles(&path).map_err(UserRepoError::from)?,
            Some(c) => {
                match repo::mirror_config(&path) {
                    Ok(Some(m)) if m.master != self.config.hostname => {
                        return Err(UserRepoError::NotMaster {
                            repo: repo.clone(),
                            master: m.master,
                            this: self.config.hostname.clone(),
                        }
                        .into());
                    }
                    Ok(_) => {}
                    // Unknown settings: this may be a slave; change nothing.
                    Err(e) => {
                        warn!(repo = %repo, error = %e, "cannot read mirror settings; refusing perms");
                        return Err(ShellError::RepoConfig { repo: repo.clone() });
                    }
                }
                user_repos::change(self.home, &self.user, repo, &path, c.add, &c.role, &c.user)?
            }
        };
        if roles.creator.is_none() {
            return Err(UserRepoError::NotWild { repo: repo.clone() }.into());
        }
        Ok(Reply::text(user_repos::list(&roles), true))
    }

    /// A push of `repo` that a slave (`via`) carried here for this user: decided as the
    /// user's own push here would be, by this server's rules, and never carried on again.
    /// The caller has checked that `via` is one of the repo's slaves.
    pub(crate) fn redirected_push(
        &self,
        repo: &RepoName,
        via: &AccountName,
        protocol: Option<&OsStr>,
    ) -> Result<Launch, ShellError> {
        match self.push(repo, Redirects::Refused)? {
            Push::Here { path, access } => Ok(self
                .launch(GitService::ReceivePack, repo, &path, access, protocol)
                .with_env(proto::ENV_VIA, via.as_str())),
            // `push` carries nothing when told not to; answered as a slave's refusal anyway.
            Push::ToMaster(master) => Err(ShellError::Slave {
                repo: repo.clone(),
                master,
                this: self.config.hostname.clone(),
            }),
        }
    }

    /// Where this user's push of `repo` goes: here, with the repo's path and the user's
    /// access; or, on a slave whose settings say so, to the repo's master, which decides it
    /// by its own rules (here the user need only read the repo). Every push a user makes, to
    /// this server or carried here from a slave, is decided by this one function.
    fn push(&self, repo: &RepoName, redirects: Redirects) -> Result<Push, ShellError> {
        if let Some(to_master) = self.create_for_push(repo, redirects)? {
            return Ok(to_master);
        }
        let (path, access) = self.admit(repo, false)?;
        // A pull mirror's refs are its upstream's: a push here would be overwritten, or make
        // it diverge. Refused on every server, naming where pushes belong.
        if let Some(u) = self.rules.upstream(repo) {
            return Err(ShellError::PullMirror {
                repo: repo.clone(),
                url: u.url.url.clone(),
            });
        }
        let mirror = repo::mirror_config(&path);
        if redirects == Redirects::Carried
            && let Ok(Some(m)) = &mirror
            && self.carries(m)
        {
            return Ok(Push::ToMaster(m.master.clone()));
        }
        if access < Access::Write {
            return Err(ShellError::ReadOnly {
                user: self.user.clone(),
                repo: repo.clone(),
            });
        }
        if !repo::user_hooks_installed(&self.home.hooks_dir()) {
            return Err(ShellError::NotCompiled);
        }
        match mirror {
            Ok(Some(m)) if m.master != self.config.hostname => Err(ShellError::Slave {
                repo: repo.clone(),
                master: m.master,
                this: self.config.hostname.clone(),
            }),
            Ok(_) => Ok(Push::Here { path, access }),
            Err(e) => {
                warn!(repo = %repo, error = %e, "cannot read mirror settings; refusing the push");
                Err(ShellError::RepoConfig { repo: repo.clone() })
            }
        }
    }

    /// Whether this server carries users' pushes of a repo mirrored as `m` to its master: it
    /// is one of the repo's slaves, and its settings for the repo turn redirects on.
    fn carries(&self, m: &MirrorRule) -> bool {
        let this = &self.config.hostname;
        !m.is_master(this) && m.is_slave(this) && m.redirect.unwrap_or(self.config.mirror.redirect)
    }

    /// The repo's path and the user's access, if the repo exists and the user may read it
    /// (and write it, with `write`). A missing repo and a forbidden one get the same answer.
    fn admit(&self, repo: &RepoName, write: bool) -> Result<(PathBuf, Access), ShellError> {
        let no_access = || ShellError::NoAccess {
            user: self.user.clone(),
            repo: repo.clone(),
        };
        let path = Store::new(self.home.repositories())
            .find(repo)
            .ok_or_else(no_access)?;
        let access = self.access_to(repo, &path);
        if access < Access::Read {
            return Err(no_access());
        }
        if write && access < Access::Write {
            return Err(ShellError::ReadOnly {
                user: self.user.clone(),
                repo: repo.clone(),
            });
        }
        Ok((path, access))
    }

    /// The user's access to the repo at `path`, with its creator and roles if a user
    /// created it. Roles that cannot be read grant nothing (and are logged).
    fn access_to(&self, repo: &RepoName, path: &std::path::Path) -> Access {
        let roles = wild::roles(path).unwrap_or_else(|e| {
            warn!(repo = %repo, error = %e, "cannot read the repo's creator and perms");
            RepoRoles::default()
        });
        self.rules.access_with(&self.user, repo, &roles)
    }

    /// `fetch REPO`: a pull mirror fetched from its upstream now (a CI job's or a webhook
    /// relay's call), for users who may write it, at most once per [`FETCH_EVERY`].
    fn fetch(&self, repo: &RepoName) -> Result<Reply, ShellError> {
        self.admit(repo, true)?;
        if self.rules.upstream(repo).is_none() {
            return Err(ShellError::NotPullMirror(repo.clone()));
        }
        let record = UpstreamRecords::of(self.home).load(repo);
        if let Some(t) = record.last_attempt {
            let ago = crate::replicate::queue::now() - t;
            if ago < FETCH_EVERY {
                return Err(ShellError::TooSoon {
                    repo: repo.clone(),
                    ago,
                    wait: FETCH_EVERY - ago,
                });
            }
        }
        let replies = crate::daemon::client::ask_replies(
            self.home,
            &crate::daemon::protocol::Request::Fetch(Some(repo.clone())),
        )
        .map_err(|e| ShellError::Fetch(e.to_string()))?;
        for reply in replies {
            if let crate::daemon::protocol::Reply::Fetched { repo, ok, words } = reply {
                return if ok {
                    Ok(Reply::text(format!("{repo}: fetched: {words}\n"), true))
                } else {
                    Err(ShellError::Fetch(format!("{repo}: fetch failed: {words}")))
                };
            }
        }
        Err(ShellError::Fetch(format!(
            "{repo}: the daemon did not fetch it"
        )))
    }

    /// `request-push REPO`, for users who may write the repo: on its master, push to every
    /// slave now; on a slave, ask the master to push here.
    fn request_push(&self, repo: &RepoName) -> Result<Reply, ShellError> {
        self.admit(repo, true)?;
        let report = request::request(self.home, &self.config, repo)?;
        Ok(Reply::text(report.text(), report.ok))
    }

    fn launch(
        &self,
        service: GitService,
        repo: &RepoName,
        path: &std::path::Path,
        access: Access,
        protocol: Option<&OsStr>,
    ) -> Launch {
        let identity = vec![
            (proto::ENV_USER.to_string(), self.user.to_string()),
            (proto::ENV_REPO.to_string(), repo.to_string()),
            (proto::ENV_ACCESS.to_string(), access.label().to_string()),
        ];
        // refs/gitmirror/ is each server's own (kept divergences, the HEAD carrier): users
        // neither see it nor push to it.
        Launch::new(
            service,
            path,
            self.home,
            git::sanitize_protocol(protocol),
            identity,
        )
        .with_config("transfer.hideRefs", proto::OWN_NS_HIDDEN)
    }

    /// The `info` text: who you are, where you are, and every repo you may read, with the
    /// server that masters it when it is mirrored: the one to push to, which after a
    /// promotion may not be the one `repos.toml` names.
    fn info(&self) -> String {
        let mut out = format!(
            "hello {}, this is gitmirror {} on {}\n\n",
            self.user,
            env!("CARGO_PKG_VERSION"),
            self.config.hostname
        );
        let store = Store::new(self.home.repositories());
        let repos = store.list().unwrap_or_else(|e| {
            warn!(error = %e, "cannot list repositories");
            Vec::new()
        });
        for repo in repos {
            let Some(path) = store.find(&repo) else {
                continue;
            };
            let access = self.access_to(&repo, &path);
            if access < Access::Read {
                continue;
            }
            let role = match Some(&path).map(|p| repo::mirror_config(p)) {
                Some(Ok(Some(m))) if m.master == self.config.hostname => {
                    format!("  master: {} (here)", m.master)
                }
                Some(Ok(Some(m))) if self.carries(&m) => {
                    format!("  master: {} (pushes here are carried there)", m.master)
                }
                Some(Ok(Some(m))) => format!("  master: {}", m.master),
                Some(Err(e)) => {
                    warn!(repo = %repo, error = %e, "cannot read mirror settings");
                    "  master: unknown (ask the administrator)".to_string()
                }
                Some(Ok(None)) | None => String::new(),
            };
            out.push_str(&format!(" {:<4}{repo}{role}\n", access.label()));
        }
        // Where the user may create repos, as gitolite lists its wild patterns.
        for pattern in self.rules.creatable(&self.user) {
            out.push_str(&format!(" C   {pattern}\n"));
        }
        out
    }
}
