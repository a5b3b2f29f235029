//! The daemon's socket protocol: one request line from the client, answered by reply lines.
//!
//! Both sides parse and print through these two types, so the server and the client cannot
//! disagree about a word. The lines:
//!
//! - `push REPO`: queue a push of REPO to its slaves; answered `ok` at once.
//! - `wait REPO`, `request REPO`, `request-for REPO SLAVE`, `all`: answered by `done REPO
//!   SLAVE` (the slave was asked and has the state), `unchanged REPO SLAVE SINCE` (nothing
//!   changed since it last confirmed, at SINCE seconds after the epoch or `-`; it was not
//!   asked) or `fail REPO SLAVE WORDS` per slave as each finishes, then `end`. With no slave
//!   to wait for, the first three are answered `ok` and `all` is answered `end`.
//! - `verify REPO`, `verify-all`, each optionally followed by `repair`: compare the slaves'
//!   copies with this server's (see `replicate::verify`), answered by `verified REPO SLAVE
//!   STATE WORDS` per repo and slave (STATE: `ok`, `drifted`, `missing`, `refused`,
//!   `unreachable`, `error`), then, with `repair`, `done`/`fail` per repair push, then `end`.
//! - `downstream REPO`: REPO's push mirrors were queued: push to them now; answered `ok`.
//! - `error WORDS` answers a request that cannot be served.
//!
//! `wait` pushes straight away (the caller's refs just changed); `request` compares with each
//! slave first; `all` compares each repo with what its slaves last confirmed and asks a slave
//! only when that differs.

use thiserror::Error;

use crate::names::{AccountName, NameError, RepoName};
use crate::text::one_line;

/// A line that is not a request or reply of this protocol.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ProtocolError {
    #[error("unknown {what} {line:?}")]
    Unknown { what: &'static str, line: String },
    /// The line has the right shape, but a repo or server name in it is not valid.
    #[error("{0}")]
    BadName(#[from] NameError),
}

/// What a hook or a command asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Queue pushes of a repo to its slaves; do not wait.
    Push(RepoName),
    /// Push a repo (refs just changed) and report each slave.
    Wait(RepoName),
    /// Compare a repo with its slaves, push what differs, report each slave.
    Compare(RepoName),
    /// The same for one slave (a slave's own request).
    CompareFor(RepoName, AccountName),
    /// Every repo this server masters.
    All,
    /// Store operations were queued: send them now.
    Ops,
    /// Fetch a pull mirror (or every one this server fetches) from its upstream now, and
    /// report each.
    Fetch(Option<RepoName>),
    /// A repo's push mirrors were queued: push to them now.
    Downstream(RepoName),
    /// Verify one repo (or every one) on its slaves, and repair what differs if asked.
    Verify {
        repo: Option<RepoName>,
        repair: bool,
    },
}

/// One line of the daemon's answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// A `push` was queued.
    Ok,
    /// The slave was asked and has the repo's state.
    Done(RepoName, AccountName),
    /// Nothing changed since the slave last confirmed the state (when, if known).
    Unchanged(RepoName, AccountName, Option<f64>),
    /// The push to the slave failed, in these words (one line).
    Fail(RepoName, AccountName, String),
    /// Every slave asked about has answered.
    End,
    /// The request cannot be served, and why.
    Error(String),
    /// What a fetch of a pull mirror did (`ok`), or why it failed.
    Fetched {
        repo: RepoName,
        ok: bool,
        words: String,
    },
    /// What verify found for a repo on a slave: its state word and details.
    Verified {
        repo: RepoName,
        slave: AccountName,
        state: String,
        words: String,
    },
}

/// The states a `verified` line may carry.
const VERIFIED_STATES: &[&str] = &[
    "ok",
    "drifted",
    "missing",
    "refused",
    "unreachable",
    "error",
];

impl Request {
    /// Parses one request line (with or without its newline).
    pub(crate) fn parse(line: &str) -> Result<Self, ProtocolError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let repo = |raw: &str| RepoName::parse(raw);
        match words.as_slice() {
            ["push", r] => Ok(Request::Push(repo(r)?)),
            ["wait", r] => Ok(Request::Wait(repo(r)?)),
            ["request", r] => Ok(Request::Compare(repo(r)?)),
            ["request-for", r, s] => Ok(Request::CompareFor(repo(r)?, AccountName::parse(s)?)),
            ["all"] => Ok(Request::All),
            ["ops"] => Ok(Request::Ops),
            ["fetch", r] => Ok(Request::Fetch(Some(repo(r)?))),
            ["fetch-all"] => Ok(Request::Fetch(None)),
            ["downstream", r] => Ok(Request::Downstream(repo(r)?)),
            ["verify", r] => Ok(Request::Verify {
                repo: Some(repo(r)?),
                repair: false,
            }),
            ["verify", r, "repair"] => Ok(Request::Verify {
                repo: Some(repo(r)?),
                repair: true,
            }),
            ["verify-all"] => Ok(Request::Verify {
                repo: None,
                repair: false,
            }),
            ["verify-all", "repair"] => Ok(Request::Verify {
                repo: None,
                repair: true,
            }),
            _ => Err(ProtocolError::Unknown {
                what: "request",
                line: line.trim_end().to_string(),
            }),
        }
    }

    /// The request as a line, newline included.
    pub(crate) fn line(&self) -> String {
        match self {
            Request::Push(r) => format!("push {r}\n"),
            Request::Wait(r) => format!("wait {r}\n"),
            Request::Compare(r) => format!("request {r}\n"),
            Request::CompareFor(r, s) => format!("request-for {r} {s}\n"),
            Request::All => "all\n".to_string(),
            Request::Ops => "ops\n".to_string(),
            Request::Fetch(Some(r)) => format!("fetch {r}\n"),
            Request::Fetch(None) => "fetch-all\n".to_string(),
            Request::Downstream(r) => format!("downstream {r}\n"),
            Request::Verify { repo, repair } => {
                let repair = if *repair { " repair" } else { "" };
                match repo {
                    Some(r) => format!("verify {r}{repair}\n"),
                    None => format!("verify-all{repair}\n"),
                }
            }
        }
    }
}

impl Reply {
    /// Parses one reply line (with or without its newline).
    pub(crate) fn parse(line: &str) -> Result<Self, ProtocolError> {
        let line = line.trim_end_matches(['\n', '\r']);
        let bad = || ProtocolError::Unknown {
            what: "reply",
            line: line.to_string(),
        };
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let names = |r: Option<&str>, s: Option<&str>| -> Result<_, ProtocolError> {
            Ok((
                RepoName::parse(r.ok_or_else(bad)?).map_err(|_| bad())?,
                AccountName::parse(s.ok_or_else(bad)?).map_err(|_| bad())?,
            ))
        };
        match verb {
            "ok" if rest.is_empty() => Ok(Reply::Ok),
            "end" if rest.is_empty() => Ok(Reply::End),
            "error" => Ok(Reply::Error(rest.to_string())),
            "done" => {
                let mut w = rest.split(' ');
                let (repo, slave) = names(w.next(), w.next())?;
                match w.next() {
                    None => Ok(Reply::Done(repo, slave)),
                    Some(_) => Err(bad()),
                }
            }
            "unchanged" => {
                let mut w = rest.split(' ');
                let (repo, slave) = names(w.next(), w.next())?;
                let since = match (w.next(), w.next()) {
                    (Some("-"), None) => None,
                    (Some(t), None) => Some(t.parse::<f64>().map_err(|_| bad())?),
                    _ => return Err(bad()),
                };
                Ok(Reply::Unchanged(repo, slave, since))
            }
            "fail" => {
                let mut w = rest.splitn(3, ' ');
                let (repo, slave) = names(w.next(), w.next())?;
                let words = w.next().filter(|w| !w.is_empty()).unwrap_or("failed");
                Ok(Reply::Fail(repo, slave, words.to_string()))
            }
            "fetched" => {
                let mut w = rest.splitn(3, ' ');
                let repo = RepoName::parse(w.next().ok_or_else(bad)?).map_err(|_| bad())?;
                let ok = match w.next() {
                    Some("ok") => true,
                    Some("failed") => false,
                    _ => return Err(bad()),
                };
                Ok(Reply::Fetched {
                    repo,
                    ok,
                    words: w.next().unwrap_or("").to_string(),
                })
            }
            "verified" => {
                let mut w = rest.splitn(4, ' ');
                let (repo, slave) = names(w.next(), w.next())?;
                let state = w
                    .next()
                    .filter(|s| VERIFIED_STATES.contains(s))
                    .ok_or_else(bad)?;
                Ok(Reply::Verified {
                    repo,
                    slave,
                    state: state.to_string(),
                    words: w.next().unwrap_or("").to_string(),
                })
            }
            _ => Err(bad()),
        }
    }

    /// The reply as a line, newline included. Words are folded onto the one line.
    pub(crate) fn line(&self) -> String {
        match self {
            Reply::Ok => "ok\n".to_string(),
            Reply::End => "end\n".to_string(),
            Reply::Done(r, s) => format!("done {r} {s}\n"),
            Reply::Unchanged(r, s, Some(t)) => format!("unchanged {r} {s} {t}\n"),
            Reply::Unchanged(r, s, None) => format!("unchanged {r} {s} -\n"),
            Reply::Fail(r, s, words) => format!("fail {r} {s} {}\n", one_line(words)),
            Reply::Error(words) => format!("error {}\n", one_line(words)),
            Reply::Verified {
                repo,
                slave,
                state,
                words,
            } => format!("verified {repo} {slave} {state} {}\n", one_line(words)),
            Reply::Fetched { repo, ok, words } => format!(
                "fetched {repo} {} {}\n",
                if *ok { "ok" } else { "failed" },
                one_line(words)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }
    fn server(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Push(repo("testing")),
            Request::Wait(repo("site-b/tools")),
            Request::Compare(repo("a/b/c")),
            Request::CompareFor(repo("testing"), server("server2")),
            Request::All,
            Request::Downstream(repo("team/app")),
            Request::Verify {
                repo: Some(repo("testing")),
                repair: false,
            },
            Request::Verify {
                repo: None,
                repair: true,
            },
        ] {
            let line = request.line();
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line:?}"
            );
            assert_eq!(Request::parse(&line), Ok(request));
        }
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Ok,
            Reply::End,
            Reply::Done(repo("site-b/tools"), server("server3")),
            Reply::Unchanged(repo("testing"), server("server2"), Some(1764643200.25)),
            Reply::Unchanged(repo("testing"), server("server2"), None),
            Reply::Fail(
                repo("testing"),
                server("server2"),
                "cannot connect to server2: Connection refused".into(),
            ),
            Reply::Error("testing: mastered by server2, not server1".into()),
            Reply::Verified {
                repo: repo("testing"),
                slave: server("server2"),
                state: "drifted".into(),
                words: "refs/heads/main master=1 server2=2; HEAD master=a server2=b".into(),
            },
        ] {
            let line = reply.line();
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line:?}"
            );
            assert_eq!(Reply::parse(&line), Ok(reply));
        }
    }

    #[test]
    fn a_failure_without_words_still_says_it_failed() {
        let reply = Reply::Fail(repo("r"), server("s2"), String::new());
        assert_eq!(
            Reply::parse(&reply.line()),
            Ok(Reply::Fail(repo("r"), server("s2"), "failed".into()))
        );
    }

    #[test]
    fn multi_line_words_travel_on_one_line() {
        let reply = Reply::Fail(repo("r"), server("s2"), "first\nsecond\n".into());
        assert_eq!(
            Reply::parse(&reply.line()),
            Ok(Reply::Fail(repo("r"), server("s2"), "first; second".into()))
        );
    }

    #[test]
    fn malformed_lines_are_refused_with_the_line() {
        for bad in [
            "",
            "push",
            "push a b",
            "request-for testing",
            "all now",
            "shutdown",
        ] {
            let err = Request::parse(bad).unwrap_err().to_string();
            assert_eq!(err, format!("unknown request {bad:?}"));
        }
        // A bad name is refused in the name's own words, as the shell would.
        for (bad, name) in [
            ("push ../etc", "../etc"),
            ("request-for testing bad;name", "bad;name"),
        ] {
            let err = Request::parse(bad).unwrap_err();
            assert!(matches!(err, ProtocolError::BadName(_)), "{bad:?}: {err}");
            assert!(err.to_string().contains(name), "{bad:?}: {err}");
        }
        for bad in [
            "okay",
            "done testing",
            "done testing s2 extra",
            "fail",
            "nope",
            "verified testing s2",
            "verified testing s2 fine",
        ] {
            assert!(Reply::parse(bad).is_err(), "{bad:?}");
        }
    }
}
