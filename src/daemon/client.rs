//! Talking to the daemon from a hook or a command, and starting one when none answers.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracing::debug;

use super::protocol::{Reply, Request};
use super::{DaemonError, socket_path};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::proto::SAFE_PATH;
use crate::replicate::{Delivered, SlaveResult};

/// How long a client waits for a daemon it started to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the daemon answered before the caller stopped listening.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// One result per slave that finished.
    pub(crate) results: Vec<SlaveResult>,
    /// Whether the caller stopped waiting (timeout or quorum) before every slave finished.
    pub(crate) cut_short: bool,
}

/// When a caller waiting for slaves has heard enough: `count` of them succeeded, with
/// `including` among them when named (the slave a user's push was carried from, whose user
/// will read from it next).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quorum<'a> {
    pub(crate) count: usize,
    pub(crate) including: Option<&'a AccountName>,
}

impl Quorum<'_> {
    /// Whether `results` make the quorum.
    pub(crate) fn met(&self, results: &[SlaveResult]) -> bool {
        let ok = || results.iter().filter(|r| r.outcome.is_ok());
        ok().count() >= self.count && self.including.is_none_or(|s| ok().any(|r| &r.slave == s))
    }
}

/// Sends `request` to the daemon (starting one if none answers) and collects its answers
/// until it is done, `deadline` passes, or `quorum` is met. `this` is the master named in
/// each result.
pub(crate) fn ask(
    home: &Home,
    this: &AccountName,
    request: &Request,
    deadline: Option<Instant>,
    quorum: Option<Quorum>,
) -> Result<Answer, DaemonError> {
    ask_seeing(home, this, request, deadline, quorum, &mut |_| {})
}

/// [`ask`], showing each result to `seen` as it arrives (for progress).
pub(crate) fn ask_seeing(
    home: &Home,
    this: &AccountName,
    request: &Request,
    deadline: Option<Instant>,
    quorum: Option<Quorum>,
    seen: &mut dyn FnMut(&SlaveResult),
) -> Result<Answer, DaemonError> {
    let mut stream = connect(home, true)?;
    stream
        .write_all(request.line().as_bytes())
        .map_err(|e| DaemonError::Unreachable(e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let mut answer = Answer::default();
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                answer.cut_short = true;
                return Ok(answer);
            }
            let _ = reader.get_ref().set_read_timeout(Some(left));
        }
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(DaemonError::Unreachable("connection closed".into())),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                answer.cut_short = true;
                return Ok(answer);
            }
            Err(e) => return Err(DaemonError::Unreachable(e.to_string())),
        }
        let (repo, slave, outcome) = match Reply::parse(&line) {
            Ok(Reply::Ok | Reply::End) => return Ok(answer),
            Ok(Reply::Error(words)) => return Err(DaemonError::Refused(words)),
            Ok(Reply::Done(repo, slave)) => (repo, slave, Ok(Delivered::Pushed)),
            Ok(Reply::Unchanged(repo, slave, since)) => {
                (repo, slave, Ok(Delivered::Unchanged { since }))
            }
            Ok(Reply::Fail(repo, slave, words)) => (repo, slave, Err(words)),
            Ok(Reply::Verified { .. } | Reply::Fetched { .. }) => continue,
            // A newer daemon may say more than this client knows; what it knows still counts.
            Err(e) => {
                debug!(error = %e, "ignoring a reply from the daemon");
                continue;
            }
        };
        let result = SlaveResult {
            master: this.clone(),
            repo,
            slave,
            outcome,
        };
        seen(&result);
        answer.results.push(result);
        if quorum.is_some_and(|q| q.met(&answer.results)) {
            answer.cut_short = true;
            return Ok(answer);
        }
    }
}

/// Sends `request` to the daemon (starting one if none answers) and returns every reply line
/// until `end`; an `error` reply is the daemon's refusal.
pub(crate) fn ask_replies(home: &Home, request: &Request) -> Result<Vec<Reply>, DaemonError> {
    ask_replies_seeing(home, request, &mut |_| {})
}

/// [`ask_replies`], showing each reply to `seen` as it arrives (for progress).
pub(crate) fn ask_replies_seeing(
    home: &Home,
    request: &Request,
    seen: &mut dyn FnMut(&Reply),
) -> Result<Vec<Reply>, DaemonError> {
    let mut stream = connect(home, true)?;
    stream
        .write_all(request.line().as_bytes())
        .map_err(|e| DaemonError::Unreachable(e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let mut replies = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(DaemonError::Unreachable("connection closed".into())),
            Ok(_) => {}
            Err(e) => return Err(DaemonError::Unreachable(e.to_string())),
        }
        match Reply::parse(&line) {
            Ok(Reply::Ok | Reply::End) => return Ok(replies),
            Ok(Reply::Error(words)) => return Err(DaemonError::Refused(words)),
            Ok(reply) => {
                seen(&reply);
                replies.push(reply);
            }
            Err(e) => debug!(error = %e, "ignoring a reply from the daemon"),
        }
    }
}

/// Hands a repo's freshly queued pushes to the daemon without waiting for them. When no
/// daemon answers, one is started and this returns at once: the daemon reads the queue when
/// it starts, so the work is not lost either way.
pub(crate) fn notify(home: &Home, repo: &RepoName) -> Result<(), DaemonError> {
    tell(home, &Request::Push(repo.clone()))
}

/// Tells the daemon that store operations were queued, as [`notify`] does for pushes.
pub(crate) fn notify_ops(home: &Home) -> Result<(), DaemonError> {
    tell(home, &Request::Ops)
}

/// Tells the daemon that a repo's push mirrors were queued, as [`notify`] does for pushes.
pub(crate) fn notify_downstream(home: &Home, repo: &RepoName) -> Result<(), DaemonError> {
    tell(home, &Request::Downstream(repo.clone()))
}

/// Sends a request that is answered `ok` at once; starts a daemon when none answers.
fn tell(home: &Home, request: &Request) -> Result<(), DaemonError> {
    let started = |e: io::Error| DaemonError::Unreachable(format!("cannot start it: {e}"));
    let Ok(mut stream) = connect(home, false) else {
        return spawn(home).map_err(started);
    };
    stream
        .write_all(request.line().as_bytes())
        .map_err(|e| DaemonError::Unreachable(e.to_string()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    match Reply::parse(&line) {
        Ok(Reply::Ok) => Ok(()),
        Ok(Reply::Error(words)) => Err(DaemonError::Refused(words)),
        // A daemon on its way out: make sure one runs; it reads the queue at start.
        _ => spawn(home).map_err(started),
    }
}

/// Hands several repos' freshly queued pushes to the daemon. When none answers, one daemon is
/// started (its start-up sweep reads the whole queue), not one per repo.
pub(crate) fn notify_many(home: &Home, repos: &[RepoName]) -> Result<(), DaemonError> {
    if connect(home, false).is_err() {
        return spawn(home).map_err(|e| DaemonError::Unreachable(format!("cannot start it: {e}")));
    }
    repos.iter().try_for_each(|repo| notify(home, repo))
}

/// Connects to the daemon; when none answers and `start` is set, starts one and waits for it.
fn connect(home: &Home, start: bool) -> Result<UnixStream, DaemonError> {
    let socket = socket_path(home)?;
    if let Ok(s) = UnixStream::connect(&socket) {
        return Ok(s);
    }
    if !start {
        return Err(DaemonError::Unreachable(format!(
            "nothing listens on {}",
            socket.display()
        )));
    }
    spawn(home).map_err(|e| DaemonError::Unreachable(format!("cannot start it: {e}")))?;
    let begun = Instant::now();
    loop {
        match UnixStream::connect(&socket) {
            Ok(s) => return Ok(s),
            Err(e) if begun.elapsed() > START_TIMEOUT => {
                return Err(DaemonError::Unreachable(format!(
                    "{}: {e}",
                    socket.display()
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Starts a daemon detached from the caller: its own process group, no stdio, so neither git
/// nor sshd waits for it. A second one exits at once (the lock), so racing starts are harmless.
fn spawn(home: &Home) -> io::Result<()> {
    let exe = std::env::current_exe()?;
    Command::new(exe)
        .arg("--home")
        .arg(home.root())
        .arg("daemon")
        .env_clear()
        .env("PATH", SAFE_PATH)
        .env("HOME", home.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(slave: &str, ok: bool) -> SlaveResult {
        SlaveResult {
            master: AccountName::parse("server1").unwrap(),
            repo: RepoName::parse("testing").unwrap(),
            slave: AccountName::parse(slave).unwrap(),
            outcome: if ok {
                Ok(Delivered::Pushed)
            } else {
                Err("down".into())
            },
        }
    }

    #[test]
    fn a_quorum_waits_for_the_slave_it_names() {
        let s3 = AccountName::parse("server3").unwrap();
        let any = Quorum {
            count: 1,
            including: None,
        };
        let with_s3 = Quorum {
            count: 1,
            including: Some(&s3),
        };
        let first = [result("server2", true)];
        assert!(any.met(&first));
        assert!(!with_s3.met(&first));
        assert!(!with_s3.met(&[result("server2", true), result("server3", false)]));
        assert!(with_s3.met(&[result("server2", true), result("server3", true)]));
        assert!(!any.met(&[result("server2", false)]));
    }
}
