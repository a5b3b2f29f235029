//! Connections to peers: one OpenSSH master connection per peer, opened on first use with the
//! `openssh` crate and shared by every push and command that goes to that peer.
//!
//! A fresh ssh login costs about 190 ms, a command over an open multiplexed connection about
//! 4 ms, so the connection, not git, is what to reuse. Mirror pushes ride it as sessions opened
//! through its control socket (see [`super::remote`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use thiserror::Error;
use tokio::sync::{OnceCell, Semaphore};
use tracing::{debug, info, warn};

use crate::config::ServerConfig;
use crate::fs::FsError;
use crate::home::Home;
use crate::names::AccountName;
use crate::text::{one_line, with_sources};

/// Sessions used at once on one connection. sshd allows ten per connection by default
/// (`MaxSessions`). A session's channel closes a moment after its command's exit status
/// arrives, so this leaves room for sessions still closing.
const SESSIONS_PER_PEER: usize = 6;

/// Why a peer could not be reached.
#[derive(Debug, Error, Clone)]
pub(crate) enum PeerError {
    /// ssh failed; the message is ssh's (and so the peer's sshd's) own words.
    #[error("cannot connect to {peer}: {message}")]
    Connect { peer: AccountName, message: String },
    /// The local control directory could not be prepared.
    #[error(transparent)]
    Local(Arc<FsError>),
}

impl From<FsError> for PeerError {
    fn from(e: FsError) -> Self {
        PeerError::Local(Arc::new(e))
    }
}

/// An open connection to one peer.
pub(crate) struct Connection {
    peer: AccountName,
    session: Arc<Session>,
    slots: Arc<Semaphore>,
    last_used: Mutex<std::time::Instant>,
    io_timeout: Duration,
}

impl Connection {
    /// How long an exchange on this connection may stay silent (`mirror.io_timeout_secs`).
    pub(crate) fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    /// The ssh session, for commands that outlive a borrow (see [`super::remote`]).
    pub(crate) fn session(&self) -> Arc<Session> {
        self.session.clone()
    }

    /// Waits for one of the connection's session slots; hold it while a command runs (it may
    /// move to a blocking thread).
    pub(crate) async fn owned_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("semaphore closed"));
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        permit
    }

    fn idle(&self) -> Duration {
        self.last_used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// Runs one of gitmirror's verbs on the peer (its forced command sees it as
    /// `SSH_ORIGINAL_COMMAND`) and returns its output.
    pub(crate) async fn run(&self, args: &[&str]) -> Result<std::process::Output, PeerError> {
        let _slot = self.owned_slot().await;
        let (verb, rest) = args.split_first().unwrap_or((&"info", &[]));
        self.session
            .command(*verb)
            .args(rest.iter().copied())
            .output()
            .await
            .map_err(|e| PeerError::Connect {
                peer: self.peer.clone(),
                message: one_line(&with_sources(&e)),
            })
    }
}

/// How long a connection attempt may take before the peer counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A peer's connection, opened once by whichever task needs it first; a failure is kept too,
/// for [`FAILURE_TTL`], so many repos waiting on a down peer cause one attempt, not many.
#[derive(Clone, Default)]
struct Slot {
    cell: Arc<OnceCell<Result<Arc<Connection>, PeerError>>>,
    opened: Option<std::time::Instant>,
}

/// A connection idle longer than this is checked before use.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// How long a failed connection attempt is remembered before the next one.
const FAILURE_TTL: Duration = Duration::from_secs(1);

/// Every connection this process has opened, at most one per peer.
pub(crate) struct Pool {
    home: Home,
    config: Arc<ServerConfig>,
    conns: Mutex<HashMap<AccountName, Slot>>,
}

impl Pool {
    /// An empty pool; connections open on first use.
    pub(crate) fn new(home: Home, config: Arc<ServerConfig>) -> Self {
        Pool {
            home,
            config,
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// How long an exchange with a peer may wait without progress (`mirror.io_timeout_secs`).
    pub(crate) fn io_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.config.mirror.io_timeout_secs)
    }

    /// The connection to `peer`, opening it if this is the first use. A failure is kept, so
    /// a run over many repos tries a down peer once, not once per repo.
    pub(crate) async fn get(&self, peer: &AccountName) -> Result<Arc<Connection>, PeerError> {
        let cell = {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            let slot = conns.entry(peer.clone()).or_default();
            let stale_failure = matches!(slot.cell.get(), Some(Err(_)))
                && slot.opened.is_some_and(|t| t.elapsed() > FAILURE_TTL);
            if stale_failure {
                *slot = Slot::default();
            }
            slot.opened.get_or_insert_with(std::time::Instant::now);
            slot.cell.clone()
        };
        let conn = cell.get_or_init(|| self.connect(peer)).await.clone()?;
        // A connection unused for a while may have died quietly (the peer rebooted, the master
        // idled out): check it with one mux round trip rather than fail a push on it.
        if conn.idle() > IDLE_CHECK && conn.session.check().await.is_err() {
            drop(conn);
            self.invalidate(peer);
            return Box::pin(self.get(peer)).await;
        }
        Ok(conn)
    }

    /// Each peer this pool has tried to reach, and whether its connection is open (false
    /// while it fails, or is still being opened). For metrics: read at each scrape, never
    /// waiting on a connection being opened.
    pub(crate) fn connections(&self) -> Vec<(AccountName, bool)> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns
            .iter()
            .map(|(peer, slot)| (peer.clone(), matches!(slot.cell.get(), Some(Ok(_)))))
            .collect()
    }

    /// Forgets a failed connection attempt to `peer`, so the next use tries again at once.
    pub(crate) fn forget_failure(&self, peer: &AccountName) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(conns.get(peer).and_then(|s| s.cell.get()), Some(Err(_))) {
            conns.remove(peer);
        }
    }

    /// Forgets the connection to `peer` after a failure on it, so the next use reconnects
    /// instead of trying a dead control socket again. The old master ssh is told to exit.
    pub(crate) fn invalidate(&self, peer: &AccountName) {
        let old = {
            let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
            match conns.get(peer).and_then(|s| s.cell.get()) {
                Some(Ok(_)) => conns.remove(peer),
                _ => None,
            }
        };
        if let Some(Ok(conn)) = old
            .and_then(|s| Arc::try_unwrap(s.cell).ok())
            .and_then(|c| c.into_inner())
            && let Ok(conn) = Arc::try_unwrap(conn)
        {
            tokio::spawn(async move {
                if let Ok(session) = Arc::try_unwrap(conn.session) {
                    let _ = session.close().await;
                }
            });
        }
    }

    async fn connect(&self, peer: &AccountName) -> Result<Arc<Connection>, PeerError> {
        // How to reach a peer is read afresh at each connection, not only at the daemon's
        // start: a `[peers.NAME]` table added for a new server is used without a restart.
        let settings = match ServerConfig::of(&self.home) {
            Ok(now) => now.peers.get(peer).cloned(),
            Err(e) => {
                warn!(%peer, error = %e, "cannot read gitmirror.toml; using the settings read at start");
                self.config.peers.get(peer).cloned()
            }
        }
        .unwrap_or_default();
        let mut builder = SessionBuilder::default();
        builder
            .keyfile(self.home.private_key())
            .user_known_hosts_file(self.home.ssh_dir().join("known_hosts"))
            // Trust a peer's host key on first contact, refuse it if it ever changes.
            .known_hosts_check(KnownHosts::Add)
            .connect_timeout(CONNECT_TIMEOUT)
            // A peer that stops answering is noticed within three intervals.
            .server_alive_interval(Duration::from_secs(5))
            .control_directory(control_dir(&self.home)?)
            // A master left behind by a killed daemon exits by itself once idle.
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(600).unwrap_or(std::num::NonZeroUsize::MIN),
            ));
        if let Some(user) = &settings.user {
            builder.user(user.clone());
        }
        if let Some(port) = settings.port {
            builder.port(port);
        }
        let host = settings.host.unwrap_or_else(|| peer.to_string());
        debug!(%peer, %host, "connecting");
        let session = builder
            .connect_mux(&host)
            .await
            .map_err(|e| PeerError::Connect {
                peer: peer.clone(),
                message: one_line(&with_sources(&e)),
            })?;
        info!(%peer, %host, "connected");
        Ok(Arc::new(Connection {
            peer: peer.clone(),
            session: Arc::new(session),
            slots: Arc::new(Semaphore::new(SESSIONS_PER_PEER)),
            last_used: Mutex::new(std::time::Instant::now()),
            io_timeout: Duration::from_secs_f64(self.config.mirror.io_timeout_secs),
        }))
    }

    /// Closes every connection (the master ssh processes exit).
    pub(crate) async fn close(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, slot) in conns {
            let Ok(cell) = Arc::try_unwrap(slot.cell) else {
                continue;
            };
            if let Some(Ok(conn)) = cell.into_inner()
                && let Ok(conn) = Arc::try_unwrap(conn)
                && let Ok(session) = Arc::try_unwrap(conn.session)
            {
                let _ = session.close().await;
            }
        }
    }
}

/// Where control sockets live: `state/ssh` in the home when its path is short enough, else
/// a private directory under /tmp.
fn control_dir(home: &Home) -> Result<PathBuf, PeerError> {
    // The crate adds "/.ssh-connectionXXXXXX/master" (30 bytes), and OpenSSH first binds
    // that name plus ".XXXXXXXXXXXXXXXX" (17 more) before renaming it.
    Ok(home.socket_dir(&home.ssh_control_dir(), 50)?)
}
