//! `gitmirror shell USER` and `gitmirror peer NAME`: the forced commands sshd runs for a
//! user's key and a peer's. Their error policy lives here: a broken server configuration is
//! logged in full and shown to the remote client as one line that gives nothing away.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use super::{Cmd, Config, fail, print};
use crate::config::Rules;
use crate::home::Home;
use crate::serve::access::Reply;
use crate::serve::command::{self, Request};
use crate::serve::peer_shell::PeerShell;
use crate::serve::user_shell::UserShell;

/// Which forced command is running.
#[derive(Clone, Copy)]
pub(super) enum Side {
    User,
    Peer,
}

/// Runs a forced command (`shell USER` or `peer NAME`): answer with text, or exec git.
pub(super) fn run(cmd: &Cmd, home: &Home, config: Config, name: &str, side: Side) -> ExitCode {
    let config = match config {
        Ok(c) => Arc::new(c),
        Err(e) => {
            tracing::error!(error = %e, "server configuration is broken");
            return fail(
                cmd,
                "the server's configuration is broken; ask its administrator",
            );
        }
    };
    let original = std::env::var("SSH_ORIGINAL_COMMAND").ok();
    // A command about one repo reads that repo's rules only (thousands of repos must not
    // slow every fetch and mirror push); anything else, or a command that does not parse
    // (the shell refuses it below), reads them all.
    let request = command::parse(original.as_deref());
    let rules = match request.as_ref().ok().and_then(Request::repo) {
        Some(repo) => Rules::compiled_for(home, repo),
        None => Rules::compiled(home),
    };
    let rules = match rules {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "compiled rules are unreadable");
            return fail(
                cmd,
                "the server's rules are unreadable; ask its administrator",
            );
        }
    };
    let protocol: Option<OsString> = std::env::var_os("GIT_PROTOCOL");
    let reply = match side {
        Side::User => UserShell::new(home, config, &rules, name)
            .and_then(|s| s.serve(original.as_deref(), protocol.as_deref()))
            .map_err(|e| e.to_string()),
        Side::Peer => PeerShell::new(home, config, &rules, name)
            .and_then(|s| s.serve(original.as_deref(), protocol.as_deref()))
            .map_err(|e| e.to_string()),
    };
    match reply {
        Ok(Reply::Text { text, ok }) => match print(&text) {
            Ok(()) if ok => ExitCode::SUCCESS,
            Ok(()) => ExitCode::FAILURE,
            Err(e) => fail(cmd, &e),
        },
        Ok(Reply::Git(launch)) => {
            let err = launch.exec();
            tracing::error!(error = %err, "cannot start git");
            fail(cmd, &format!("cannot start git: {err}"))
        }
        Ok(Reply::Redirect {
            login,
            command,
            protocol,
        }) => {
            let err = login.exec(&command, protocol.as_deref());
            tracing::error!(error = %err, master = %login.peer(), "cannot start ssh");
            fail(
                cmd,
                &format!("cannot reach {}: cannot start ssh: {err}", login.peer()),
            )
        }
        Ok(Reply::MirrorReceive(receive)) => received(cmd, receive.run()),
        Ok(Reply::FreshReceive(receive)) => received(cmd, receive.run()),
        Err(e) => fail(cmd, &e),
    }
}

/// The exit of a mirror push taken under this process: whether every update was taken, or
/// why none could be.
fn received<E: std::fmt::Display>(cmd: &Cmd, outcome: Result<bool, E>) -> ExitCode {
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!(error = %e, "cannot receive a mirror push");
            fail(cmd, &e.to_string())
        }
    }
}
