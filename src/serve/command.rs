//! The command a client asks for, parsed from `SSH_ORIGINAL_COMMAND`.
//!
//! sshd hands the forced command whatever string the client typed. Nothing of it reaches a
//! shell: it is split into words here, quoting is understood only in the one form git clients
//! produce (`git-upload-pack 'name.git'`), and anything else (extra arguments, control
//! characters, shell syntax) is refused with a one-line reason.

use std::fmt;

use thiserror::Error;

use crate::names::{AccountName, NameError, RepoName};
use crate::proto::{
    CREATE_VERB, DELETE_VERB, FETCH_VERB, MIRROR_RECEIVE_VERB, PERMS_VERB, REDIRECT_RECEIVE_VERB,
    REQUEST_PUSH_VERB, STORE_OP_VERB, VERIFY_VERB,
};
use crate::repo::store_op::{BadOp, StoreOp};

/// The two git services a client may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GitService {
    /// Fetch and clone.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl GitService {
    /// The `git` subcommand that serves it.
    pub(crate) fn subcommand(self) -> &'static str {
        match self {
            GitService::UploadPack => "upload-pack",
            GitService::ReceivePack => "receive-pack",
        }
    }
}

impl fmt::Display for GitService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "git-{}", self.subcommand())
    }
}

/// A parsed, validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Run a git service on a repo.
    Git { service: GitService, repo: RepoName },
    /// Describe the server and what the caller may do on it.
    Info,
    /// Push a repo to its slaves now (from a user or a slave's peer session).
    Mirror(RepoName),
    /// Compare this server's copies with a master's digests, read from stdin (peers only).
    Verify,
    /// A master daemon's mirror push, with the epoch it masters the repo at and its HEAD
    /// when it has one (peers only).
    MirrorReceive {
        repo: RepoName,
        epoch: u64,
        head: Option<String>,
    },
    /// A user's push to a slave, carried here by that slave (peers only).
    RedirectReceive { user: AccountName, repo: RepoName },
    /// A store operation (delete, restore, rename, purge) from the master that made it at
    /// `epoch` (peers only).
    StoreOp { epoch: u64, op: StoreOp },
    /// Delete a repo into the trash, here and on its slaves (administrators only).
    Delete(RepoName),
    /// Fetch a pull mirror from its upstream now (users who may write it).
    Fetch(RepoName),
    /// Create a repo a pattern's `C` lets the user create.
    Create(RepoName),
    /// Show a user-created repo's creator and roles, or (its creator) change one.
    Perms {
        repo: RepoName,
        change: Option<PermsChange>,
    },
}

/// One change `perms` makes: add (`+`) or remove (`-`) a user from a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PermsChange {
    pub(crate) add: bool,
    pub(crate) role: String,
    pub(crate) user: AccountName,
}

impl Request {
    /// The verb and repo (empty for none), for log lines.
    pub(crate) fn describe(&self) -> (String, String) {
        match self {
            Request::Info => ("info".to_string(), String::new()),
            Request::Git { service, repo } => (service.to_string(), repo.to_string()),
            Request::Mirror(repo) => (REQUEST_PUSH_VERB.to_string(), repo.to_string()),
            Request::Verify => (VERIFY_VERB.to_string(), String::new()),
            Request::MirrorReceive { repo, .. } => {
                (MIRROR_RECEIVE_VERB.to_string(), repo.to_string())
            }
            Request::RedirectReceive { repo, .. } => {
                (REDIRECT_RECEIVE_VERB.to_string(), repo.to_string())
            }
            Request::StoreOp { op, .. } => (STORE_OP_VERB.to_string(), op.describe()),
            Request::Delete(repo) => (DELETE_VERB.to_string(), repo.to_string()),
            Request::Fetch(repo) => (FETCH_VERB.to_string(), repo.to_string()),
            Request::Create(repo) => (CREATE_VERB.to_string(), repo.to_string()),
            Request::Perms { repo, .. } => (PERMS_VERB.to_string(), repo.to_string()),
        }
    }

    /// The repo the request is about, if any: the one whose rules a shell must read.
    pub(crate) fn repo(&self) -> Option<&RepoName> {
        match self {
            Request::Info | Request::Verify | Request::StoreOp { .. } => None,
            Request::Git { repo, .. }
            | Request::Mirror(repo)
            | Request::MirrorReceive { repo, .. }
            | Request::RedirectReceive { repo, .. }
            | Request::Delete(repo)
            | Request::Fetch(repo)
            | Request::Create(repo)
            | Request::Perms { repo, .. } => Some(repo),
        }
    }

    /// The user a peer acts for (a redirected push), for log lines.
    pub(crate) fn on_behalf_of(&self) -> Option<&AccountName> {
        match self {
            Request::RedirectReceive { user, .. } => Some(user),
            _ => None,
        }
    }
}

/// Why a command was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum CommandError {
    #[error("no interactive shell here; try 'ssh <this server> info'")]
    Empty,
    #[error("control characters (newline, NUL, ...) are not allowed in a command")]
    ControlCharacter,
    #[error("command is {0} bytes long; that is not a git command")]
    TooLong(usize),
    #[error("shell syntax is not allowed: {0:?} is not a plain word")]
    ShellSyntax(String),
    #[error("unbalanced or embedded quote in {0:?}")]
    Quoting(String),
    #[error(
        "unknown command {0:?}; accepted: git-upload-pack, git-receive-pack, info, request-push, fetch, create, perms, delete"
    )]
    Unknown(String),
    #[error("{verb} takes {expected}, got {got} argument(s)")]
    Arity {
        verb: String,
        expected: &'static str,
        got: usize,
    },
    #[error("bad repo name: {0}")]
    RepoName(#[from] NameError),
    #[error("bad user name: {0}")]
    UserName(NameError),
    #[error("bad HEAD ref {0:?}: not a valid ref name under refs/")]
    HeadRef(String),
    #[error("bad epoch {0:?}: not a number")]
    Epoch(String),
    #[error("bad store operation: {0}")]
    StoreOp(#[from] BadOp),
}

/// Longest command line considered; git sends far less.
const MAX_COMMAND: usize = 1024;

/// Splits a command line into words: plain words of safe characters, or single-quoted words
/// with no quote inside (which is all git ever sends for a valid repo name).
fn words(line: &str) -> Result<Vec<&str>, CommandError> {
    if line.len() > MAX_COMMAND {
        return Err(CommandError::TooLong(line.len()));
    }
    if line.chars().any(char::is_control) {
        return Err(CommandError::ControlCharacter);
    }
    let mut out = Vec::new();
    for word in line.split(' ').filter(|w| !w.is_empty()) {
        if let Some(rest) = word.strip_prefix('\'') {
            match rest.strip_suffix('\'') {
                Some(inner) if !inner.contains('\'') => out.push(inner),
                _ => return Err(CommandError::Quoting(word.chars().take(40).collect())),
            }
        } else if word.contains('\'') {
            return Err(CommandError::Quoting(word.chars().take(40).collect()));
        } else if word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-/~:=,".contains(c))
        {
            out.push(word);
        } else {
            return Err(CommandError::ShellSyntax(word.chars().take(40).collect()));
        }
    }
    Ok(out)
}

/// Takes the repo argument of a git service. Clients using `ssh://host/name.git` URLs send a
/// leading `/`; one is dropped, and the rest must be a valid repo name.
fn repo_arg(raw: &str) -> Result<RepoName, CommandError> {
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    Ok(RepoName::parse(raw)?)
}

/// Takes the epoch a master names: a plain decimal number.
fn epoch_arg(raw: &str) -> Result<u64, CommandError> {
    // git config keeps it as a signed 64-bit number: anything above cannot be stored.
    raw.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| raw.parse::<u64>().ok())
        .flatten()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| CommandError::Epoch(raw.chars().take(40).collect()))
}

/// Takes the HEAD ref a master names: a valid ref name under `refs/`.
fn head_arg(raw: &str) -> Result<String, CommandError> {
    if raw.starts_with("refs/") && git2::Reference::is_valid_name(raw) {
        Ok(raw.to_string())
    } else {
        Err(CommandError::HeadRef(raw.chars().take(80).collect()))
    }
}

fn arity(verb: &str, expected: &'static str, got: usize) -> CommandError {
    CommandError::Arity {
        verb: verb.to_string(),
        expected,
        got,
    }
}

/// Parses `SSH_ORIGINAL_COMMAND` (absent or empty means an interactive login).
pub(crate) fn parse(line: Option<&str>) -> Result<Request, CommandError> {
    let line = line.unwrap_or("");
    let words = words(line)?;
    let Some((&verb, args)) = words.split_first() else {
        return Err(CommandError::Empty);
    };
    let service = match verb {
        "git-upload-pack" => Some(GitService::UploadPack),
        "git-receive-pack" => Some(GitService::ReceivePack),
        _ => None,
    };
    match (verb, service, args) {
        (_, Some(service), [repo]) => Ok(Request::Git {
            service,
            repo: repo_arg(repo)?,
        }),
        (_, Some(_), _) => Err(arity(verb, "exactly one repo", args.len())),
        ("info", None, []) => Ok(Request::Info),
        ("info", None, _) => Err(arity(verb, "no", args.len())),
        (REQUEST_PUSH_VERB, None, [repo]) => Ok(Request::Mirror(repo_arg(repo)?)),
        (REQUEST_PUSH_VERB, None, _) => Err(arity(verb, "exactly one repo", args.len())),
        (VERIFY_VERB, None, []) => Ok(Request::Verify),
        (VERIFY_VERB, None, _) => Err(arity(verb, "no", args.len())),
        (MIRROR_RECEIVE_VERB, None, [epoch, repo, head @ ..]) if head.len() <= 1 => {
            Ok(Request::MirrorReceive {
                repo: repo_arg(repo)?,
                epoch: epoch_arg(epoch)?,
                head: head.first().map(|h| head_arg(h)).transpose()?,
            })
        }
        (MIRROR_RECEIVE_VERB, None, _) => Err(arity(
            verb,
            "an epoch, one repo and an optional HEAD ref",
            args.len(),
        )),
        (REDIRECT_RECEIVE_VERB, None, [user, repo]) => Ok(Request::RedirectReceive {
            user: AccountName::parse(user).map_err(CommandError::UserName)?,
            repo: repo_arg(repo)?,
        }),
        (REDIRECT_RECEIVE_VERB, None, _) => Err(arity(verb, "a user and one repo", args.len())),
        (STORE_OP_VERB, None, [epoch, op @ ..]) if !op.is_empty() => Ok(Request::StoreOp {
            epoch: epoch_arg(epoch)?,
            op: StoreOp::parse(op)?,
        }),
        (STORE_OP_VERB, None, _) => Err(arity(verb, "an epoch and an operation", args.len())),
        (DELETE_VERB, None, [repo]) => Ok(Request::Delete(repo_arg(repo)?)),
        (DELETE_VERB, None, _) => Err(arity(verb, "exactly one repo", args.len())),
        (FETCH_VERB, None, [repo]) => Ok(Request::Fetch(repo_arg(repo)?)),
        (FETCH_VERB, None, _) => Err(arity(verb, "exactly one repo", args.len())),
        (CREATE_VERB, None, [repo]) => Ok(Request::Create(repo_arg(repo)?)),
        (CREATE_VERB, None, _) => Err(arity(verb, "exactly one repo", args.len())),
        // `perms -l REPO` is gitolite's spelling of the listing.
        (PERMS_VERB, None, [repo] | ["-l", repo]) => Ok(Request::Perms {
            repo: repo_arg(repo)?,
            change: None,
        }),
        (PERMS_VERB, None, [repo, sign @ ("+" | "-"), role, user]) => Ok(Request::Perms {
            repo: repo_arg(repo)?,
            change: Some(PermsChange {
                add: *sign == "+",
                role: role.to_string(),
                user: AccountName::parse(user).map_err(CommandError::UserName)?,
            }),
        }),
        (PERMS_VERB, None, _) => Err(arity(
            verb,
            "a repo, optionally followed by + or -, a role and a user",
            args.len(),
        )),
        _ => Err(CommandError::Unknown(verb.chars().take(40).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(service: GitService, repo: &str) -> Request {
        Request::Git {
            service,
            repo: RepoName::parse(repo).unwrap(),
        }
    }

    #[test]
    fn parses_what_git_clients_send() {
        use GitService::*;
        for (line, want) in [
            ("git-upload-pack 'testing.git'", git(UploadPack, "testing")),
            ("git-upload-pack '/testing.git'", git(UploadPack, "testing")),
            (
                "git-receive-pack 'site-b/tools'",
                git(ReceivePack, "site-b/tools"),
            ),
            ("git-receive-pack testing", git(ReceivePack, "testing")),
            ("info", Request::Info),
            ("verify", Request::Verify),
            (
                "mirror-receive-pack 3 'a/b.git' 'refs/heads/my_main'",
                Request::MirrorReceive {
                    repo: RepoName::parse("a/b").unwrap(),
                    epoch: 3,
                    head: Some("refs/heads/my_main".into()),
                },
            ),
            (
                "mirror-receive-pack 0 'a'",
                Request::MirrorReceive {
                    repo: RepoName::parse("a").unwrap(),
                    epoch: 0,
                    head: None,
                },
            ),
            (
                "request-push 'testing'",
                Request::Mirror(RepoName::parse("testing").unwrap()),
            ),
            (
                "redirect-receive-pack alice 'site-b/tools.git'",
                Request::RedirectReceive {
                    user: AccountName::parse("alice").unwrap(),
                    repo: RepoName::parse("site-b/tools").unwrap(),
                },
            ),
        ] {
            assert_eq!(parse(Some(line)), Ok(want), "{line}");
        }
    }

    #[test]
    fn the_redirect_command_parses_back() {
        let (user, repo) = (
            AccountName::parse("bob").unwrap(),
            RepoName::parse("a/b").unwrap(),
        );
        let line = crate::proto::redirect_command(&user, &repo);
        assert_eq!(
            parse(Some(&line)),
            Ok(Request::RedirectReceive { user, repo })
        );
    }

    #[test]
    fn refuses_interactive_login() {
        assert_eq!(parse(None), Err(CommandError::Empty));
        assert_eq!(parse(Some("  ")), Err(CommandError::Empty));
    }

    #[test]
    fn refuses_hostile_commands() {
        let long = format!("git-upload-pack '{}'", "a".repeat(5000));
        for line in [
            "sh",
            "bash -i",
            "scp -t x",
            "git-upload-archive 'r'",
            "git-receive-pack 'r' 'x'",
            "git-upload-pack",
            "git-upload-pack '--upload-pack=touch /tmp/x'",
            "git-upload-pack 'r'\nid",
            "git-upload-pack 'r'\r",
            "git-upload-pack 'r\0'",
            "git-upload-pack 'r';id",
            "git-upload-pack r;id",
            "git-upload-pack '$(id)'",
            "git-upload-pack $(id)",
            "git-upload-pack `id`",
            "git-upload-pack 'r'\\''x'",
            "git-upload-pack \"r\"",
            "git-upload-pack 'r",
            "git-upload-pack r|id",
            "git-upload-pack r&&id",
            "git-upload-pack '../x'",
            "git-upload-pack 'a/../../x'",
            "git-upload-pack '//etc'",
            "git-upload-pack '-x'",
            "git-upload-pack 'a//b'",
            "git-upload-pack 'r.git/config'",
            "git-upload-pack '~root/x'",
            "info extra",
            "request-push",
            "request-push a b",
            "request-push '../x'",
            "verify testing",
            "mirror-receive-pack",
            "mirror-receive-pack 'r'",
            "mirror-receive-pack 'r' 1",
            "mirror-receive-pack 1 'r' 'refs/heads/a' 'x'",
            "mirror-receive-pack 1 'r' 'HEAD'",
            "mirror-receive-pack 1 'r' 'refs/heads/a..b'",
            "mirror-receive-pack -1 'r'",
            "mirror-receive-pack 99999999999999999999999 'r'",
            "mirror-receive-pack 9223372036854775808 'r'",
            "mirror-receive-pack 1 'r' '--upload-pack=x'",
            "redirect-receive-pack",
            "redirect-receive-pack 'r'",
            "redirect-receive-pack alice",
            "redirect-receive-pack alice 'r' 'x'",
            "redirect-receive-pack -alice 'r'",
            "redirect-receive-pack '../x' 'r'",
            "redirect-receive-pack alice '../r'",
            "redirect-receive-pack alice;id 'r'",
            "git upload-pack 'r'",
            long.as_str(),
        ] {
            assert!(parse(Some(line)).is_err(), "accepted {line:?}");
        }
    }

    #[test]
    fn errors_are_one_line() {
        for line in ["a\nb", "git-upload-pack '$(id)'", "scp -t x"] {
            let msg = parse(Some(line)).unwrap_err().to_string();
            assert!(!msg.contains('\n'), "{msg:?}");
        }
    }
}
