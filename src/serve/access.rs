//! The access decision both forced commands share: parse what the client sent, let the shell
//! decide, and log one line saying who asked for what and whether it was allowed.
//!
//! Logging here rather than in each shell means no path through either shell can answer a
//! client without leaving a line in `gitmirror.log`.

use tracing::info;

use super::command::{self, CommandError, Request};
use super::fresh_receive::FreshReceive;
use super::git::Launch;
use super::mirror_receive::MirrorReceive;
use crate::admin::keys;
use crate::names::AccountName;
use crate::ssh::Login;

/// What a forced command answers with.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Text for the client's stdout, and whether the command succeeded (its exit status).
    Text { text: String, ok: bool },
    /// A git service to replace this process with.
    Git(Launch),
    /// A master daemon's mirror push, received under this process.
    MirrorReceive(MirrorReceive),
    /// A master daemon's mirror push of a repo this server does not have yet.
    FreshReceive(FreshReceive),
    /// A user's push carried to the repo's master: this process becomes `ssh` to it, running
    /// `command` there with the client's validated `protocol`.
    Redirect {
        login: Login,
        command: String,
        protocol: Option<String>,
    },
}

impl Reply {
    /// Text output with the given success.
    pub(crate) fn text(text: String, ok: bool) -> Self {
        Reply::Text { text, ok }
    }
}

/// Parses a forced command's `original` command line, has `handle` answer it, and logs one
/// line with the decision: who (`actor`, `role`), what, which repo, allowed or why not. Both
/// forced commands (users' and peers') answer through here.
pub(crate) fn answer<E>(
    role: keys::Role,
    actor: &AccountName,
    original: Option<&str>,
    handle: impl FnOnce(Request) -> Result<Reply, E>,
) -> Result<Reply, E>
where
    E: std::fmt::Display + From<CommandError>,
{
    let request = match command::parse(original) {
        Ok(r) => r,
        Err(e) => {
            let shown: String = original.unwrap_or("").chars().take(80).collect();
            info!(actor = %actor, command = ?shown, decision = "deny", reason = %e, %role, "access");
            return Err(e.into());
        }
    };
    let (verb, repo) = request.describe();
    // A peer acting for a user (a redirected push) is logged with that user.
    let user = request.on_behalf_of().map(|u| u.to_string());
    let user = user.as_deref();
    let result = handle(request);
    match &result {
        Ok(Reply::Redirect { login, .. }) => {
            let master = login.peer().as_str();
            info!(actor = %actor, verb, repo, decision = "redirect", master, %role, "access")
        }
        Ok(_) => info!(actor = %actor, verb, repo, user, decision = "allow", %role, "access"),
        Err(e) => {
            info!(actor = %actor, verb, repo, user, decision = "deny", reason = %e, %role, "access")
        }
    }
    result
}
