//! `gitmirror peer NAME`: the forced command of another gitmirror server's key.
//!
//! A peer is never a user: it has no entry in the access rules and gets write access only to
//! the repos this server's own config says it masters, with this server among their slaves.
//! The master's word alone never creates a repo here; this server's `repos.toml` must agree.
//! One exception, so that a new server can join a cluster: a server that has no admin repo yet
//! takes it from a peer it registered (see `adopts_admin_repo`), and the configuration it
//! brings decides from then on.

use std::ffi::OsStr;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;
use tracing::info;

use super::access::{Reply, answer};
use super::command::{CommandError, GitService, Request};
use super::fresh_receive::FreshReceive;
use super::git::{self, Launch};
use super::mirror_receive::MirrorReceive;
use super::peer_store_op::{self, StoreOpRefused};
use super::user_shell::{ShellError, UserShell};
use crate::admin::{admin_repo, keys};
use crate::config::{MirrorRule, Rules, ServerConfig};
use crate::daemon::request::{self, RequestError};
use crate::home::Home;
use crate::invocation::{Invocation, InvocationError};
use crate::names::{AccountName, NameError, RepoName};
use crate::proto;
use crate::replicate::verify::{self, Here, wire::MAX_REQUEST, wire::WireError};
use crate::repo::gone::GoneRecord;
use crate::repo::mastership::{self, Admission, Mastership};
use crate::repo::store_op::StoreOp;
use crate::repo::{self, Placed, Staged, Store, StoreError};

/// Why a peer's request was refused; one line, safe to send back.
#[derive(Debug, Error)]
pub(crate) enum PeerShellError {
    #[error("{0}")]
    Command(#[from] CommandError),
    #[error("bad peer name in authorized_keys: {0}")]
    Name(NameError),
    #[error("{peer} is not a registered peer of {this}")]
    NotRegistered {
        peer: AccountName,
        this: AccountName,
    },
    #[error("{this} refuses {repo} from {peer}: {why}")]
    NotYours {
        this: AccountName,
        repo: RepoName,
        peer: AccountName,
        why: String,
    },
    #[error(
        "{this} has no repo {repo}, and its repos.toml does not make {peer} its master with {this} among its slaves"
    )]
    NoRule {
        this: AccountName,
        repo: RepoName,
        peer: AccountName,
    },
    #[error(
        "{this} cannot take mirror pushes: its hooks are not installed; its administrator must run gitmirror compile"
    )]
    NotCompiled { this: AccountName },
    #[error("cannot create {repo}: {message}")]
    Create { repo: RepoName, message: String },
    #[error(transparent)]
    Settings(#[from] StoreError),
    #[error("{0}")]
    Request(#[from] RequestError),
    #[error("{0}")]
    User(#[from] ShellError),
    #[error("cannot read the verify request: {0}")]
    VerifyInput(std::io::Error),
    #[error("bad verify request: {0}")]
    Verify(#[from] WireError),
    #[error("{0}")]
    StoreOp(#[from] StoreOpRefused),
}

/// One peer's session on this server.
pub(crate) struct PeerShell<'a> {
    home: &'a Home,
    config: Arc<ServerConfig>,
    rules: &'a Rules,
    peer: AccountName,
}

impl<'a> PeerShell<'a> {
    /// A session for the peer named by the authorized_keys line that let it in.
    pub(crate) fn new(
        home: &'a Home,
        config: Arc<ServerConfig>,
        rules: &'a Rules,
        peer: &str,
    ) -> Result<Self, PeerShellError> {
        let peer = AccountName::parse(peer).map_err(PeerShellError::Name)?;
        if !keys::is_registered(home, keys::Role::Peer, &peer) {
            return Err(PeerShellError::NotRegistered {
                peer,
                this: config.hostname.clone(),
            });
        }
        Ok(PeerShell {
            home,
            config,
            rules,
            peer,
        })
    }

    fn this(&self) -> &AccountName {
        &self.config.hostname
    }

    /// Answers the peer's command and logs one line with the decision.
    pub(crate) fn serve(
        &self,
        original: Option<&str>,
        protocol: Option<&OsStr>,
    ) -> Result<Reply, PeerShellError> {
        answer(
            keys::Role::Peer,
            &self.peer,
            original,
            |request| match request {
                Request::Info => Ok(Reply::text(
                    format!("Hello {}, I am {}\n", self.peer, self.this()),
                    true,
                )),
                Request::Git {
                    service: GitService::ReceivePack,
                    repo,
                } => self.receive(&repo, protocol),
                Request::Git {
                    service: GitService::UploadPack,
                    repo,
                } => self.upload(&repo, protocol),
                Request::Mirror(repo) => self.request_push(&repo),
                Request::Verify => self.verify(&mut std::io::stdin().lock()),
                Request::MirrorReceive { repo, epoch, head } => {
                    self.mirror_receive(&repo, epoch, head, protocol)
                }
                Request::RedirectReceive { user, repo } => {
                    self.redirect_receive(&user, &repo, protocol)
                }
                Request::StoreOp { epoch, op } => {
                    // A user-created repo's record arrives before its first push: the repo
                    // is created here, as that push would create it, where this server's
                    // own rules have a pattern naming the sender its master.
                    // Only for names a pattern here covers: a repo repos.toml names is
                    // never a user's, whatever a peer says.
                    if let StoreOp::Perms { repo, .. } = &op {
                        if self.rules.pattern_for(repo).is_none() || self.rules.names(repo) {
                            return Err(self.create_err(
                                repo,
                                "this server's rules have no pattern for user-created repos that matches it".into(),
                            ));
                        }
                        let store = Store::new(self.home.repositories());
                        if store.find(repo).is_none() {
                            // A user may create again a name its master deleted: the master's
                            // word for a pattern's name brings it back.
                            if self
                                .mirror_rule(repo)
                                .is_some_and(|r| r.is_master(&self.peer) && r.is_slave(self.this()))
                            {
                                GoneRecord::in_state(&self.home.state_dir()).back(repo)?;
                            }
                            self.create(&store, repo)?;
                        }
                    }
                    Ok(Reply::text(
                        peer_store_op::apply(self.home, self.this(), &self.peer, epoch, &op)?,
                        true,
                    ))
                }
                // A user's command; a peer gets the refusal any unknown command gets.
                Request::Delete(_) => {
                    Err(CommandError::Unknown(proto::DELETE_VERB.to_string()).into())
                }
                Request::Fetch(_) => {
                    Err(CommandError::Unknown(proto::FETCH_VERB.to_string()).into())
                }
                Request::Create(_) => {
                    Err(CommandError::Unknown(proto::CREATE_VERB.to_string()).into())
                }
                Request::Perms { .. } => {
                    Err(CommandError::Unknown(proto::PERMS_VERB.to_string()).into())
                }
            },
        )
    }

    fn refuse(&self, repo: &RepoName, why: String) -> PeerShellError {
        PeerShellError::NotYours {
            this: self.this().clone(),
            repo: repo.clone(),
            peer: self.peer.clone(),
            why,
        }
    }

    /// Whether `rule` makes the peer this repo's master with this server as a slave.
    fn peer_masters(
        &self,
        repo: &RepoName,
        rule: Option<&MirrorRule>,
    ) -> Result<(), PeerShellError> {
        self.peer_masters_at(repo, rule, 0)
    }

    /// [`Self::peer_masters`] for a repo this server knows at `epoch`: a refusal names the
    /// master and epoch, so that a master replaced by a promotion learns it from the words.
    fn peer_masters_at(
        &self,
        repo: &RepoName,
        rule: Option<&MirrorRule>,
        epoch: u64,
    ) -> Result<(), PeerShellError> {
        match rule {
            None => Err(self.refuse(repo, "it is not mirrored here".into())),
            Some(m) if !m.is_master(&self.peer) => {
                Err(self.refuse(repo, proto::claim_words(&m.master, epoch)))
            }
            Some(_) if !rule.is_some_and(|m| m.is_slave(self.this())) => Err(self.refuse(
                repo,
                format!("{} is not among its slaves here", self.this()),
            )),
            Some(_) => Ok(()),
        }
    }

    /// The mirror settings this server's rules give `repo`, or, for the admin repo on a
    /// server that has none yet (see [`Self::adopts_admin_repo`]), the peer as its master and
    /// this server as its slave, until the configuration it brings is applied.
    fn mirror_rule(&self, repo: &RepoName) -> Option<MirrorRule> {
        let rule = self.rules.mirror(repo);
        if rule.is_none() && self.adopts_admin_repo(repo, None) {
            return Some(MirrorRule {
                master: self.peer.clone(),
                slaves: vec![self.this().clone()],
                sync: None,
                redirect: None,
            });
        }
        rule
    }

    /// Whether this server takes `repo` from the peer because it is the admin repo and this
    /// server has no configuration from it yet: no copy with any history (`path`, when there
    /// is a copy), and no mirror settings for it in its own rules. Registering the peer
    /// (`add-mirroring-peer`) was the administrator's act of trust; from the first commit on,
    /// the applied configuration decides, as for any repo.
    fn adopts_admin_repo(&self, repo: &RepoName, path: Option<&std::path::Path>) -> bool {
        if !admin_repo::is_admin_repo(repo) || self.rules.mirror(repo).is_some() {
            return false;
        }
        let Some(path) = path else {
            return true;
        };
        match repo::mirror_config(path) {
            Ok(None) => {}
            _ => return false,
        }
        git2::Repository::open_bare(path)
            .and_then(|r| Ok(r.references()?.flatten().next().is_none()))
            .unwrap_or(false)
    }

    /// An admin repo that exists here without history or mirror settings (see
    /// [`Self::adopts_admin_repo`]): records the peer as its master at `epoch`, so that the
    /// push is taken as any master's.
    fn adopt_existing(
        &self,
        repo: &RepoName,
        path: &std::path::Path,
        epoch: u64,
    ) -> Result<(), PeerShellError> {
        if self.adopts_admin_repo(repo, Some(path)) {
            let adopted = Mastership {
                master: self.peer.clone(),
                slaves: vec![self.this().clone()],
                epoch,
            };
            mastership::set_mastership(path, &adopted)?;
            info!(repo = %repo, peer = %self.peer, epoch, "no admin repo here yet: taking it from a registered peer");
        }
        Ok(())
    }

    /// A user's push that the peer, a slave of the repo here, carried to this server, its
    /// master: decided by this server's rules for that user, as their own push here would
    /// be, and run as one (the same hooks, queueing, sync wait and lines). Taken only where
    /// this server's settings for the repo allow redirected pushes, so that its administrator
    /// decides which repos a slave may push to on users' behalf.
    fn redirect_receive(
        &self,
        user: &AccountName,
        repo: &RepoName,
        protocol: Option<&OsStr>,
    ) -> Result<Reply, PeerShellError> {
        let store = Store::new(self.home.repositories());
        let path = store
            .find(repo)
            .ok_or_else(|| self.refuse(repo, proto::NO_SUCH_REPO.into()))?;
        let Some(rule) = repo::mirror_config(&path)? else {
            return Err(self.refuse(repo, "it is not mirrored here".into()));
        };
        if !rule.is_master(self.this()) {
            // The slave's settings are behind a change of master: the words name the one known
            // here, for the user to push to.
            let epoch = mastership::epoch(&path)?;
            return Err(self.refuse(repo, proto::claim_words(&rule.master, epoch)));
        }
        if !rule.is_slave(&self.peer) {
            return Err(self.refuse(repo, format!("{} is not among its slaves here", self.peer)));
        }
        if !rule.redirect.unwrap_or(self.config.mirror.redirect) {
            return Err(self.refuse(
                repo,
                "it takes no redirected pushes here (mirror.redirect is off)".into(),
            ));
        }
        let shell = UserShell::new(self.home, self.config.clone(), self.rules, user.as_str())?;
        Ok(Reply::Git(
            shell.redirected_push(repo, &self.peer, protocol)?,
        ))
    }

    /// A mirror push from the repo's master. A missing repo is created when this server's
    /// own rules say the peer masters it.
    fn receive(&self, repo: &RepoName, protocol: Option<&OsStr>) -> Result<Reply, PeerShellError> {
        // Without its hooks the push would land without the master's HEAD and without keeping
        // refs that diverged here: refuse it, and the master retries until someone compiles.
        if !repo::peer_hooks_installed(&self.home.peer_hooks_dir()) {
            return Err(PeerShellError::NotCompiled {
                this: self.this().clone(),
            });
        }
        let path = self.mirror_target(repo)?;
        Ok(Reply::Git(self.receive_launch(repo, &path, protocol)))
    }

    /// A mirror push from the master's daemon, which claims the repo at `epoch`: taken from
    /// the master known here, or from another holder of the repo whose claim beats it (a
    /// promotion this server learns of now); refused otherwise, naming the master and epoch
    /// known here. receive-pack runs under [`MirrorReceive`] (which needs no hooks
    /// installed); a repo missing here is built and filled by [`FreshReceive`] before it
    /// appears. The first push from a new epoch keeps what it overwrites as orphaned.
    fn mirror_receive(
        &self,
        repo: &RepoName,
        epoch: u64,
        head: Option<String>,
        protocol: Option<&OsStr>,
    ) -> Result<Reply, PeerShellError> {
        let store = Store::new(self.home.repositories());
        let Some(path) = store.find(repo) else {
            let staged = self.stage_claimed(&store, repo, epoch)?;
            return Ok(Reply::FreshReceive(FreshReceive::new(
                staged, self.home, &self.peer, repo, head,
            )));
        };
        self.adopt_existing(repo, &path, epoch)?;
        // The common case (the master known here, at the epoch known here) needs no write and
        // no lock. Anything to record is decided again under the config's lock: two claims
        // arriving together, or a promotion here meanwhile, must not be decided on a read
        // the other has made stale.
        let Some(here) = mastership::mastership(&path)? else {
            return Err(self.refuse(repo, "it is not mirrored here".into()));
        };
        match here.admit(&self.peer, self.this(), epoch) {
            Admission::Master { raised: false } => {
                let orphaning = (epoch > mastership::received_epoch(&path)?).then_some(epoch);
                let launch = self.receive_launch(repo, &path, protocol);
                return Ok(Reply::MirrorReceive(
                    MirrorReceive::new(launch, self.home, &path, &self.peer, repo, head)
                        .claimed_at(epoch, orphaning),
                ));
            }
            Admission::Refused(words) => return Err(self.refuse(repo, words)),
            _ => {}
        }
        let mut admission = None;
        let now = mastership::update_mastership(&path, |now| {
            let here = now?;
            let decided = here.admit(&self.peer, self.this(), epoch);
            let write = match &decided {
                Admission::Master { raised: true } => Some(Mastership {
                    epoch,
                    ..here.clone()
                }),
                Admission::Handover(new) => Some(new.clone()),
                _ => None,
            };
            admission = Some((here.clone(), decided));
            write
        })?;
        let Some((was, admission)) = admission else {
            return Err(self.refuse(repo, "it is not mirrored here".into()));
        };
        let handed_over = match admission {
            Admission::Master { .. } => false,
            Admission::Handover(_) => {
                let master = now
                    .as_ref()
                    .map(|m| m.master.to_string())
                    .unwrap_or_default();
                info!(repo = %repo, %master, epoch, was = %was.master, "a new master took over this repo");
                true
            }
            Admission::Refused(words) => return Err(self.refuse(repo, words)),
        };
        // The first push from a new master, or from a new epoch, keeps what it overwrites.
        let orphaning =
            (handed_over || epoch > mastership::received_epoch(&path)?).then_some(epoch);
        let launch = self.receive_launch(repo, &path, protocol);
        Ok(Reply::MirrorReceive(
            MirrorReceive::new(launch, self.home, &path, &self.peer, repo, head)
                .claimed_at(epoch, orphaning),
        ))
    }

    /// Stages a repo missing here for a push from the peer at `epoch`: as [`Self::stage`],
    /// with the epoch recorded; a peer this server's rules do not name as master may create
    /// it only with a later epoch (it was promoted) when the rules hold both servers.
    fn stage_claimed(
        &self,
        store: &Store,
        repo: &RepoName,
        epoch: u64,
    ) -> Result<Staged, PeerShellError> {
        self.not_gone(repo)?;
        let rule = self.mirror_rule(repo);
        let promoted = rule.as_ref().is_some_and(|r| {
            epoch > 0
                && !r.is_master(&self.peer)
                && (r.is_slave(&self.peer) && (r.is_master(self.this()) || r.is_slave(self.this())))
        });
        let staged = if promoted {
            let invocation = Invocation::current(self.home, self.config.program.as_deref())
                .map_err(|e: InvocationError| self.create_err(repo, e.to_string()))?;
            store
                .stage(repo, &invocation, rule.as_ref())
                .map_err(|e| self.create_err(repo, e.to_string()))?
        } else {
            self.stage(store, repo)?
        };
        // At epoch 0 the staged repo already has repos.toml's settings, which name the peer;
        // only a promoted master's claim is written (a config write the common case skips).
        if let Some(r) = rule.as_ref().filter(|_| epoch > 0) {
            let set = Mastership {
                master: r.master.clone(),
                slaves: r.slaves.clone(),
                epoch: 0,
            };
            mastership::set_mastership(staged.path(), &set.handed_to(&self.peer, epoch))?;
            mastership::set_received_epoch(staged.path(), epoch)?;
        }
        Ok(staged)
    }

    /// The repo a mirror push from the peer may write: this server's copy, when the peer
    /// masters it here, or a new one, when this server's rules say it would.
    fn mirror_target(&self, repo: &RepoName) -> Result<PathBuf, PeerShellError> {
        let store = Store::new(self.home.repositories());
        match store.find(repo) {
            Some(path) => {
                self.adopt_existing(repo, &path, 0)?;
                let epoch = mastership::epoch(&path)?;
                self.peer_masters_at(repo, repo::mirror_config(&path)?.as_ref(), epoch)?;
                Ok(path)
            }
            None => self.create(&store, repo),
        }
    }

    /// receive-pack as a mirror push runs it on a slave.
    fn receive_launch(
        &self,
        repo: &RepoName,
        path: &std::path::Path,
        protocol: Option<&OsStr>,
    ) -> Launch {
        self.launch(GitService::ReceivePack, repo, path, protocol)
            // The master's state wins on a slave: it must take rewinds and deletions (the
            // branch HEAD names included, as the master's HEAD then names a missing branch
            // too), and the master's HEAD arrives as a push option.
            .with_config("receive.advertisePushOptions", "true")
            .with_config("receive.denyNonFastForwards", "false")
            .with_config("receive.denyDeletes", "false")
            .with_config("receive.denyDeleteCurrent", "ignore")
    }

    /// Creates a repo the peer masters by this server's own rules.
    fn create(&self, store: &Store, repo: &RepoName) -> Result<PathBuf, PeerShellError> {
        let path = self
            .stage(store, repo)?
            .place()
            .map_err(|e| self.create_err(repo, e.to_string()))?;
        Ok(match path {
            Placed::Ours(path) => {
                info!(repo = %repo, peer = %self.peer, "created repo for its master");
                path
            }
            Placed::Theirs(path) => path,
        })
    }

    /// Builds, unplaced, a repo the peer masters by this server's own rules.
    fn stage(&self, store: &Store, repo: &RepoName) -> Result<Staged, PeerShellError> {
        self.not_gone(repo)?;
        let rule = self.mirror_rule(repo);
        if self.peer_masters(repo, rule.as_ref()).is_err() {
            return Err(PeerShellError::NoRule {
                this: self.this().clone(),
                repo: repo.clone(),
                peer: self.peer.clone(),
            });
        }
        let invocation = Invocation::current(self.home, self.config.program.as_deref())
            .map_err(|e: InvocationError| self.create_err(repo, e.to_string()))?;
        store
            .stage(repo, &invocation, rule.as_ref())
            .map_err(|e| self.create_err(repo, e.to_string()))
    }

    /// A repo its master deleted or renamed here is not brought back by a push (one already
    /// under way when the operation came): only a restore, or a new table in repos.toml once
    /// the old one is gone, makes the name usable again.
    fn not_gone(&self, repo: &RepoName) -> Result<(), PeerShellError> {
        let gone = GoneRecord::in_state(&self.home.state_dir()).load();
        if gone.iter().any(|g| g.repo() == repo) {
            return Err(self.create_err(
                repo,
                "its master deleted or renamed it here; a push does not bring it back".into(),
            ));
        }
        Ok(())
    }

    fn create_err(&self, repo: &RepoName, message: String) -> PeerShellError {
        PeerShellError::Create {
            repo: repo.clone(),
            message,
        }
    }

    /// Reads are allowed for repos both servers hold copies of.
    fn upload(&self, repo: &RepoName, protocol: Option<&OsStr>) -> Result<Reply, PeerShellError> {
        let store = Store::new(self.home.repositories());
        let path = store
            .find(repo)
            .ok_or_else(|| self.refuse(repo, proto::NO_SUCH_REPO.into()))?;
        let rule = repo::mirror_config(&path)?;
        // Any two servers holding copies may read each other's: a slave being promoted
        // compares itself with the other slaves too.
        let holds = |m: &MirrorRule, s: &AccountName| m.is_master(s) || m.is_slave(s);
        let shared = rule.as_ref().is_some_and(|m| {
            holds(m, &self.peer) && holds(m, self.this()) && self.peer != *self.this()
        });
        // An admin repo this server would take from the peer is empty: a master compares
        // with it before its first push.
        if !shared && !self.adopts_admin_repo(repo, Some(&path)) {
            return Err(self.refuse(repo, "it is not mirrored between us".into()));
        }
        Ok(Reply::Git(self.launch(
            GitService::UploadPack,
            repo,
            &path,
            protocol,
        )))
    }

    /// A slave asks this master to push `repo` to it now.
    fn request_push(&self, repo: &RepoName) -> Result<Reply, PeerShellError> {
        let store = Store::new(self.home.repositories());
        let path = store
            .find(repo)
            .ok_or_else(|| self.refuse(repo, proto::NO_SUCH_REPO.into()))?;
        match repo::mirror_config(&path)? {
            Some(m) if m.is_master(self.this()) && m.is_slave(&self.peer) => {}
            _ => {
                return Err(self.refuse(
                    repo,
                    format!(
                        "{} does not master it with {} as a slave",
                        self.this(),
                        self.peer
                    ),
                ));
            }
        }
        let report = request::request_for(self.home, &self.config, repo, &self.peer)?;
        Ok(Reply::text(report.text(), report.ok))
    }

    /// A master compares its copies with this server's: digests on `input`, one answer line
    /// per repo. Only repos the peer masters with this server among the slaves are answered
    /// for, as a mirror push from it would be taken; a missing one counts as missing only
    /// when this server's rules would let that push create it.
    fn verify(&self, input: &mut impl Read) -> Result<Reply, PeerShellError> {
        let mut buf = Vec::new();
        input
            .take(MAX_REQUEST as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(PeerShellError::VerifyInput)?;
        let store = Store::new(self.home.repositories());
        let text = verify::answer(&buf, |repo| match store.find(repo) {
            Some(path) => match repo::mirror_config(&path) {
                Ok(rule) => match self.peer_masters_at(
                    repo,
                    rule.as_ref(),
                    mastership::epoch(&path).unwrap_or(0),
                ) {
                    Ok(()) => Here::Repo(path),
                    Err(e) => Here::Refused(e.to_string()),
                },
                Err(e) => Here::Refused(e.to_string()),
            },
            None if self
                .peer_masters(repo, self.mirror_rule(repo).as_ref())
                .is_ok() =>
            {
                Here::Missing
            }
            None => Here::Refused(
                PeerShellError::NoRule {
                    this: self.this().clone(),
                    repo: repo.clone(),
                    peer: self.peer.clone(),
                }
                .to_string(),
            ),
        })?;
        Ok(Reply::text(text, true))
    }

    /// A git service for the peer. Refs this server keeps from a divergence or a change of
    /// master are hidden from peers, so the master neither compares against them nor prunes
    /// them.
    fn launch(
        &self,
        service: GitService,
        repo: &RepoName,
        path: &std::path::Path,
        protocol: Option<&OsStr>,
    ) -> Launch {
        let identity = vec![
            (proto::ENV_PEER.to_string(), self.peer.to_string()),
            (proto::ENV_REPO.to_string(), repo.to_string()),
        ];
        Launch::new(
            service,
            path,
            self.home,
            git::sanitize_protocol(protocol),
            identity,
        )
        .with_config("transfer.hideRefs", proto::DIVERGED_NS_HIDDEN)
        .with_config_added("transfer.hideRefs", proto::ORPHANED_NS_HIDDEN)
        // Peers run only the post-receive hook.
        .with_config(
            "core.hooksPath",
            &self.home.peer_hooks_dir().display().to_string(),
        )
    }
}
