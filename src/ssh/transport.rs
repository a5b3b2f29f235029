//! A libgit2 transport over the daemon's peer connections: `gitmirror://TOKEN/REPO.git`.
//!
//! A mirror push used to run `git push`, which runs OpenSSH's client and `git pack-objects`:
//! three processes on the master for every repo and slave, and in bulk pushes process
//! creation was most of the machine's time (measured: 55% system time). Here libgit2 speaks
//! the git protocol in the daemon itself, over a socket pair whose other end a session on the
//! peer's open ssh connection (native mux) uses as the remote command's stdin and stdout.
//!
//! The remote's exit is collected only after libgit2 has read everything it needs, and the
//! socket is drained to its end first, so the master never tears a session down early.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::Duration;

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use openssh::{Session, Stdio};
use tokio::runtime::Handle;

use crate::text::with_sources;

/// The URL scheme registered with libgit2.
const SCHEME: &str = "gitmirror";

/// What one operation (a push or a listing of one repo on one peer) needs from the daemon.
pub(crate) struct Operation {
    session: Arc<Session>,
    runtime: Handle,
    /// The inactivity limit of this operation's exchanges.
    io_timeout: Duration,
    /// The remote command, once started.
    remote: Mutex<Option<Remote>>,
}

/// A remote command started for an operation.
struct Remote {
    child: openssh::Child<Arc<Session>>,
    /// Our end of the socket, kept to drain what libgit2 leaves unread.
    ours: UnixStream,
}

type Registry = Mutex<HashMap<String, Arc<Operation>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Registers the transport with libgit2, once per process.
pub(crate) fn register() -> Result<(), git2::Error> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: called once, before any remote with this scheme is used; the factory is
        // Send + Sync and keeps no reference to the remote.
        result = unsafe {
            git2::transport::register(SCHEME, |remote| {
                Transport::smart(remote, false, Subtransport)
            })
        };
    });
    result
}

/// Over any stretch of the inactivity limit (`mirror.io_timeout_secs`: how long the socket
/// may stay silent, and the remote's exit may take) spent waiting on the peer, at least this
/// many bytes must move, or the exchange fails: a peer that trickles a byte a minute does not
/// hold a session for ever, while one that sends git's keepalives (5 bytes every 5 s, 600 a
/// stretch) while it indexes a big pack does. A transfer that keeps moving has no limit: a
/// first push of many gigabytes over a slow link must finish. A peer that dies is noticed
/// sooner, by ssh's keepalives.
const MIN_BYTES_PER_WINDOW: u64 = 512;

/// The most kept of what a remote sends besides the protocol (stderr), and of what it sends
/// after libgit2 is done: a peer that floods cannot grow the daemon's memory.
pub(crate) const MESSAGES_CAP: usize = 64 * 1024;
const DRAIN_CAP: usize = 1024 * 1024;

/// How a remote command ended.
pub(crate) struct Finished {
    /// Protocol bytes libgit2 left unread (the remote's last sideband messages).
    pub(crate) rest: Vec<u8>,
    /// What it wrote to stderr (gitmirror's own refusals).
    pub(crate) stderr: String,
    /// `Some(success)` when its exit status arrived; `None` when the session broke.
    pub(crate) exited: Option<bool>,
}

/// A registered operation; dropping it unregisters it.
pub(crate) struct Registered {
    token: String,
    op: Arc<Operation>,
}

impl Registered {
    /// Registers an operation on `session`, run from blocking code with `runtime`, whose
    /// exchanges fail after `io_timeout` of silence.
    pub(crate) fn new(session: Arc<Session>, runtime: Handle, io_timeout: Duration) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let token = format!(
            "op{}",
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let op = Arc::new(Operation {
            session,
            runtime,
            io_timeout,
            remote: Mutex::new(None),
        });
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.clone(), op.clone());
        Registered { token, op }
    }

    /// The URL libgit2 uses for `repo` in this operation.
    pub(crate) fn url(&self, repo: &str) -> String {
        format!("{SCHEME}://{}/{repo}", self.token)
    }

    /// After libgit2 is done: drains what it left unread (the remote's last protocol bytes),
    /// then waits for the remote command. `None` when no remote command was started (the
    /// connection failed before); else what it left, its stderr, and whether it exited 0.
    pub(crate) fn finish(&self) -> Option<Finished> {
        let remote = self
            .op
            .remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let Remote { mut child, ours } = remote;
        let _ = ours.shutdown(std::net::Shutdown::Write);
        let rest = drain(&ours, self.op.io_timeout);
        let stderr = child.stderr().take();
        let output = self.op.runtime.block_on(async {
            tokio::time::timeout(self.op.io_timeout, async {
                let (stderr, status) = tokio::join!(read_capped(stderr), child.wait());
                (stderr, status)
            })
            .await
        });
        let (stderr, exited) = match output {
            Ok((stderr, Ok(status))) => (stderr, Some(status.success())),
            Ok((_, Err(e))) => (with_sources(&e), None),
            Err(_) => ("no exit status within the timeout".to_string(), None),
        };
        Some(Finished {
            rest,
            stderr,
            exited,
        })
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.token);
    }
}

struct Subtransport;

impl SmartSubtransport for Subtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let rest = url
            .strip_prefix(&format!("{SCHEME}://"))
            .ok_or_else(|| git2::Error::from_str("not a gitmirror URL"))?;
        let (token, repo) = rest
            .split_once('/')
            .ok_or_else(|| git2::Error::from_str("no repo in the URL"))?;
        let op = registry()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
            .ok_or_else(|| git2::Error::from_str("no such operation"))?;
        let verb = match action {
            Service::UploadPackLs | Service::UploadPack => "git-upload-pack",
            Service::ReceivePackLs | Service::ReceivePack => "git-receive-pack",
        };
        let (ours, theirs) = UnixStream::pair().map_err(io_err)?;
        // On the socket, so for every copy of it: a remote that stalls cannot hang us.
        ours.set_read_timeout(Some(op.io_timeout)).map_err(io_err)?;
        ours.set_write_timeout(Some(op.io_timeout))
            .map_err(io_err)?;
        let theirs_in: OwnedFd = theirs.try_clone().map_err(io_err)?.into();
        let theirs_out: OwnedFd = theirs.into();
        let command = format!("{verb} '{repo}'");
        let child = op
            .runtime
            .block_on(async {
                // sshd refuses a session while the connection's earlier ones are still
                // closing (MaxSessions); that clears within moments.
                let mut pause = std::time::Duration::from_millis(5);
                loop {
                    let (fd_in, fd_out) = (
                        theirs_in.try_clone().map_err(|e| e.to_string())?,
                        theirs_out.try_clone().map_err(|e| e.to_string())?,
                    );
                    let spawned = op
                        .session
                        .clone()
                        .arc_raw_command(&command)
                        .stdin(Stdio::from(fd_in))
                        .stdout(Stdio::from(fd_out))
                        .stderr(Stdio::piped())
                        .spawn()
                        .await;
                    match spawned {
                        Err(e) if refused(&e) && pause < std::time::Duration::from_secs(1) => {
                            tokio::time::sleep(pause).await;
                            pause *= 2;
                        }
                        Err(e) => return Err(with_sources(&e)),
                        Ok(child) => return Ok(child),
                    }
                }
            })
            .map_err(|e: String| git2::Error::from_str(&e))?;
        drop((theirs_in, theirs_out));
        let stream = Metered::new(ours.try_clone().map_err(io_err)?, op.io_timeout);
        *op.remote.lock().unwrap_or_else(|p| p.into_inner()) = Some(Remote { child, ours });
        Ok(Box::new(stream))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

/// Reads what libgit2 left unread on `ours` (the remote's last protocol messages) up to its
/// end. More than any honest remote says after an exchange (over [`DRAIN_CAP`] bytes, or
/// still coming after `limit`) is cut off: the socket is shut, so the remote's writes fail
/// and it stops, instead of holding the session.
fn drain(ours: &UnixStream, limit: Duration) -> Vec<u8> {
    let deadline = std::time::Instant::now() + limit;
    let mut rest = Vec::new();
    let mut buf = [0u8; 8192];
    let mut reader = ours;
    loop {
        if rest.len() > DRAIN_CAP || std::time::Instant::now() >= deadline {
            rest.truncate(DRAIN_CAP);
            let _ = ours.shutdown(std::net::Shutdown::Both);
            return rest;
        }
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return rest,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads a remote's stderr to its end, keeping at most [`MESSAGES_CAP`] bytes of it.
async fn read_capped(stderr: Option<openssh::ChildStderr>) -> String {
    use tokio::io::AsyncReadExt;
    let Some(mut stderr) = stderr else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MESSAGES_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Our end of the socket as libgit2 reads and writes it, failing the exchange when a whole
/// inactivity limit of waiting on the peer passes with fewer than [`MIN_BYTES_PER_WINDOW`]
/// bytes moved.
struct Metered {
    inner: UnixStream,
    limit: Duration,
    /// Time spent blocked on the socket since the last check, and bytes moved meanwhile.
    /// Only waiting on the peer counts: libgit2's own work (walking objects, building a
    /// pack of a big repo) takes as long as it takes.
    waited: Duration,
    moved: u64,
}

impl Metered {
    fn new(inner: UnixStream, limit: Duration) -> Self {
        Metered {
            inner,
            limit,
            waited: Duration::ZERO,
            moved: 0,
        }
    }

    fn count(&mut self, n: usize, began: std::time::Instant) -> std::io::Result<usize> {
        self.moved += n as u64;
        self.waited += began.elapsed();
        if self.waited >= self.limit {
            if self.moved < MIN_BYTES_PER_WINDOW {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the peer moved {} bytes in {}s",
                        self.moved,
                        self.limit.as_secs()
                    ),
                ));
            }
            self.waited = Duration::ZERO;
            self.moved = 0;
        }
        Ok(n)
    }
}

impl Read for Metered {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let began = std::time::Instant::now();
        let n = self.inner.read(buf)?;
        self.count(n, began)
    }
}

impl std::io::Write for Metered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let began = std::time::Instant::now();
        let n = self.inner.write(buf)?;
        self.count(n, began)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Whether sshd refused to open a session (too many open on the connection).
fn refused(e: &openssh::Error) -> bool {
    with_sources(e).contains("Session open refused")
}

fn io_err(e: std::io::Error) -> git2::Error {
    git2::Error::from_str(&e.to_string())
}
