//! `gitmirror mux SOCKET HOST COMMAND`: the transport git uses to reach a peer over the
//! daemon's open ssh connection (`GIT_SSH_COMMAND`, with `GIT_SSH_VARIANT=simple`).
//!
//! It does what `ssh -S SOCKET HOST COMMAND` does, and only that: it hands its own stdin,
//! stdout and stderr to the OpenSSH master through its control socket, asks for a session
//! running COMMAND, and exits with the remote status. A mirror push runs one per git
//! command, and OpenSSH's full client cost a quarter of all CPU in bulk pushes (measured;
//! loading its libraries and config); this costs a fraction of that. It also cannot fall back
//! to a fresh login: a dead control socket is an error, which makes the daemon reconnect.

use std::borrow::Cow;
use std::path::Path;
use std::process::ExitCode;

use openssh_mux_client::{Connection, NonZeroByteSlice, Session, SessionStatus};

/// The exit status OpenSSH's client uses for its own failures.
const SSH_FAILURE: u8 = 255;

/// Runs `command` on the peer behind `socket`, with this process's stdio.
pub fn run(socket: &Path, command: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    match runtime.block_on(session(socket, command)) {
        Ok(status) => ExitCode::from(status),
        Err(e) => fail(&e),
    }
}

async fn session(socket: &Path, command: &str) -> Result<u8, String> {
    let cmd = NonZeroByteSlice::new(command.as_bytes()).ok_or("the command holds a NUL byte")?;
    let conn = Connection::connect(socket)
        .await
        .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
    let request = Session::builder().cmd(Cow::Borrowed(cmd)).build();
    let established = conn
        .open_new_session(&request, &[0, 1, 2])
        .await
        .map_err(|e| format!("cannot open a session: {e}"))?;
    match established.wait().await {
        Ok(SessionStatus::Exited { exit_value }) => {
            Ok(exit_value.map_or(SSH_FAILURE, |v| u8::try_from(v).unwrap_or(SSH_FAILURE)))
        }
        Ok(SessionStatus::TtyAllocFail(_)) => Err("unexpected tty request".into()),
        Err((e, _)) => Err(format!("session failed: {e}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("gitmirror mux: {message}");
    ExitCode::from(SSH_FAILURE)
}
