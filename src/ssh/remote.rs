//! A command run on a peer over a session of its open connection, with its stdin and stdout
//! as streams: what a mirror push speaks the git protocol over.
//!
//! A mirror push used to run `git push`, which runs OpenSSH's client and `git pack-objects`:
//! three processes on the master for every repo and slave, and in bulk pushes process
//! creation was most of the machine's time (measured: 55% system time). Here the daemon
//! speaks the protocol itself on a session of the peer's multiplexed connection; only a big
//! repo's pack is built by a process (see `replicate::pack`).
//!
//! Every wait on the peer is bounded by the inactivity rule of [`Meter`]; the remote's stderr
//! is read alongside, capped, so a flood can neither block it nor grow our memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openssh::{ChildStdin, ChildStdout, Session, Stdio};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::pool::Connection;
use crate::text::{one_line, with_sources};

/// Over any stretch of the inactivity limit (`mirror.io_timeout_secs`: how long the peer may
/// stay silent, and the remote's exit may take) spent waiting on the peer, at least this many
/// bytes must move, or the exchange fails: a peer that trickles a byte a minute does not hold
/// a session for ever, while one that sends git's keepalives (5 bytes every 5 s, 600 a
/// stretch) while it indexes a big pack does. A transfer that keeps moving has no limit: a
/// first push of many gigabytes over a slow link must finish. A peer that dies is noticed
/// sooner, by ssh's keepalives.
const MIN_BYTES_PER_WINDOW: u64 = 512;

/// The most kept of what a remote writes to stderr: a peer that floods cannot grow the
/// daemon's memory.
pub(crate) const MESSAGES_CAP: usize = 64 * 1024;

/// The most read of what a remote sends after the exchange is done, before giving up on it.
const DRAIN_CAP: usize = 1024 * 1024;

/// Why talking to a remote command failed.
#[derive(Debug, Error)]
pub(crate) enum RemoteError {
    /// The session could not be opened (the connection is broken).
    #[error("cannot start {command:?} on the peer: {message}")]
    Spawn { command: String, message: String },
    /// Reading or writing the session failed.
    #[error("the session broke: {0}")]
    Io(#[source] std::io::Error),
    /// The peer moved too little for too long.
    #[error("the peer moved {moved} bytes in {secs}s")]
    Stalled { moved: u64, secs: u64 },
}

/// How a remote command ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// What it wrote to stderr (gitmirror's own refusals), at most [`MESSAGES_CAP`].
    pub(crate) stderr: String,
    /// `Some(success)` when its exit status arrived; `None` when the session broke.
    pub(crate) exited: Option<bool>,
}

/// A command running on a peer.
pub(crate) struct Remote {
    child: openssh::Child<Arc<Session>>,
    stderr: JoinHandle<String>,
    limit: Duration,
}

/// The remote's stdout, read under the inactivity rule.
pub(crate) struct RemoteOut {
    stream: ChildStdout,
    meter: Meter,
    /// Set while we are the ones sending (a pack): a git remote says nothing until it has
    /// read all of it, so silence is no stall then; the sending side's own meter watches
    /// the peer meanwhile.
    patient: Arc<AtomicBool>,
}

/// The remote's stdin, written under the inactivity rule.
pub(crate) struct RemoteIn {
    stream: ChildStdin,
    meter: Meter,
}

impl Remote {
    /// Starts `command` on the peer of `conn` (the caller holds one of its session slots).
    pub(crate) async fn spawn(
        conn: &Connection,
        command: &str,
    ) -> Result<(Remote, RemoteIn, RemoteOut), RemoteError> {
        let limit = conn.io_timeout();
        // sshd refuses a session while the connection's earlier ones are still closing
        // (MaxSessions); that clears within moments.
        let mut pause = Duration::from_millis(5);
        let mut child = loop {
            let spawned = conn
                .session()
                .arc_raw_command(command)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .await;
            match spawned {
                Err(e) if refused(&e) && pause < Duration::from_secs(1) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    return Err(RemoteError::Spawn {
                        command: command.to_string(),
                        message: one_line(&with_sources(&e)),
                    });
                }
                Ok(child) => break child,
            }
        };
        let missing = || RemoteError::Spawn {
            command: command.to_string(),
            message: "no stdio".into(),
        };
        let stdin = child.stdin().take().ok_or_else(missing)?;
        let stdout = child.stdout().take().ok_or_else(missing)?;
        let stderr = tokio::spawn(read_capped(child.stderr().take()));
        Ok((
            Remote {
                child,
                stderr,
                limit,
            },
            RemoteIn {
                stream: stdin,
                meter: Meter::new(limit),
            },
            RemoteOut {
                stream: stdout,
                meter: Meter::new(limit),
                patient: Arc::new(AtomicBool::new(false)),
            },
        ))
    }

    /// After the exchange: reads what the remote still sends (its last messages) to the end,
    /// then waits for its exit. More than an honest remote says after an exchange (over
    /// [`DRAIN_CAP`] bytes, or still coming after the limit) is cut off.
    pub(crate) async fn finish(self, out: Option<RemoteOut>) -> (Vec<u8>, Finished) {
        let Remote {
            child,
            stderr,
            limit,
        } = self;
        let rest = match out {
            Some(mut out) => out.drain(limit).await,
            None => Vec::new(),
        };
        let waited = tokio::time::timeout(limit, async {
            let status = child.wait().await;
            let stderr = stderr.await.unwrap_or_default();
            (stderr, status)
        })
        .await;
        let finished = match waited {
            Ok((stderr, Ok(status))) => Finished {
                stderr,
                exited: Some(status.success()),
            },
            Ok((stderr, Err(e))) => Finished {
                stderr: format!("{stderr}{}", one_line(&with_sources(&e))),
                exited: None,
            },
            Err(_) => Finished {
                stderr: "no exit status within the timeout".into(),
                exited: None,
            },
        };
        (rest, finished)
    }
}

impl RemoteOut {
    /// A switch that, while on, suspends the inactivity rule for reads (see `patient`).
    pub(crate) fn patience(&self) -> Arc<AtomicBool> {
        self.patient.clone()
    }

    /// Reads exactly `buf.len()` bytes. `Ok(false)` when the stream ended before the first.
    pub(crate) async fn read_exact(&mut self, buf: &mut [u8]) -> Result<bool, RemoteError> {
        let mut got = 0;
        while got < buf.len() {
            let began = Instant::now();
            let n = match tokio::time::timeout(self.meter.limit, self.stream.read(&mut buf[got..]))
                .await
            {
                Ok(read) => read.map_err(RemoteError::Io)?,
                Err(_) if self.patient.load(Ordering::SeqCst) => {
                    self.meter.restart();
                    continue;
                }
                Err(_) => return Err(self.meter.stalled()),
            };
            if self.patient.load(Ordering::SeqCst) {
                self.meter.restart();
            } else {
                self.meter.count(n, began)?;
            }
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                return Err(RemoteError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            got += n;
        }
        Ok(true)
    }

    async fn drain(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut rest = Vec::new();
        let mut buf = vec![0u8; 8192];
        while rest.len() <= DRAIN_CAP {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => rest.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        rest.truncate(DRAIN_CAP);
        rest
    }
}

impl RemoteIn {
    /// Writes all of `data`.
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> Result<(), RemoteError> {
        let mut sent = 0;
        while sent < data.len() {
            let began = Instant::now();
            let n = match tokio::time::timeout(self.meter.limit, self.stream.write(&data[sent..]))
                .await
            {
                Ok(written) => written.map_err(RemoteError::Io)?,
                Err(_) => return Err(self.meter.stalled()),
            };
            if n == 0 {
                return Err(RemoteError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            self.meter.count(n, began)?;
            sent += n;
        }
        Ok(())
    }

    /// Ends the remote's stdin.
    pub(crate) async fn close(mut self) -> Result<(), RemoteError> {
        self.stream.flush().await.map_err(RemoteError::Io)?;
        self.stream.shutdown().await.map_err(RemoteError::Io)
    }
}

/// The inactivity rule: over any stretch of `limit` spent waiting on the peer, at least
/// [`MIN_BYTES_PER_WINDOW`] bytes must move. Only waiting counts: our own work (building a
/// big pack) takes as long as it takes.
struct Meter {
    limit: Duration,
    waited: Duration,
    moved: u64,
}

impl Meter {
    fn new(limit: Duration) -> Self {
        Meter {
            limit,
            waited: Duration::ZERO,
            moved: 0,
        }
    }

    /// Starts a fresh window.
    fn restart(&mut self) {
        self.waited = Duration::ZERO;
        self.moved = 0;
    }

    fn stalled(&self) -> RemoteError {
        RemoteError::Stalled {
            moved: self.moved,
            secs: self.limit.as_secs(),
        }
    }

    fn count(&mut self, n: usize, began: Instant) -> Result<(), RemoteError> {
        self.moved += n as u64;
        self.waited += began.elapsed();
        if self.waited >= self.limit {
            if self.moved < MIN_BYTES_PER_WINDOW {
                return Err(self.stalled());
            }
            self.waited = Duration::ZERO;
            self.moved = 0;
        }
        Ok(())
    }
}

/// Reads a remote's stderr to its end, keeping at most [`MESSAGES_CAP`] bytes of it.
async fn read_capped(stderr: Option<openssh::ChildStderr>) -> String {
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

/// Whether sshd refused to open a session (too many open on the connection).
fn refused(e: &openssh::Error) -> bool {
    with_sources(e).contains("Session open refused")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_fails_a_window_and_a_flow_does_not() {
        let mut meter = Meter::new(Duration::from_millis(10));
        let long_ago = Instant::now() - Duration::from_millis(20);
        assert!(matches!(
            meter.count(1, long_ago),
            Err(RemoteError::Stalled { moved: 1, .. })
        ));
        let mut meter = Meter::new(Duration::from_millis(10));
        assert!(meter.count(4096, long_ago).is_ok());
        // The window starts again after a good one.
        assert_eq!((meter.moved, meter.waited), (0, Duration::ZERO));
    }
}
