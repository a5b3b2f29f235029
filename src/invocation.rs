//! How gitmirror invokes itself from the lines it writes for others to run: the
//! `command="..."` of each authorized_keys line and the hook scripts in every repo.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::fs::{Context, FsError};
use crate::home::Home;

/// Why gitmirror cannot write a command line that invokes itself.
#[derive(Debug, Error)]
pub(crate) enum InvocationError {
    #[error(
        "{path} holds characters that cannot go into an authorized_keys command or a hook (use an absolute path of letters, digits and /._+@-)"
    )]
    UnsafePath { path: PathBuf },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// How gitmirror invokes itself from authorized_keys lines and repo hooks: its absolute
/// path, plus `--home` when the server home is not the account's `$HOME`.
///
/// Built only from paths that need no quoting inside `command="..."` and no escaping for the
/// login shell that runs it, so the string can be pasted into both as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation(String);

impl Invocation {
    /// Checks both paths and joins them.
    pub(crate) fn new(exe: &Path, home: Option<&Path>) -> Result<Self, InvocationError> {
        let plain = |p: &Path| -> Result<String, InvocationError> {
            let s = p.to_str().unwrap_or("");
            let ok = s.starts_with('/')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._+@-".contains(c));
            if ok {
                Ok(s.to_string())
            } else {
                Err(InvocationError::UnsafePath {
                    path: p.to_path_buf(),
                })
            }
        };
        let mut prefix = plain(exe)?;
        if let Some(home) = home {
            prefix.push_str(" --home ");
            prefix.push_str(&plain(home)?);
        }
        Ok(Invocation(prefix))
    }

    /// The running binary, with `--home` unless `home` is the account's `$HOME`.
    pub(crate) fn current(home: &Home) -> Result<Self, InvocationError> {
        let exe = std::env::current_exe().at("cannot locate", Path::new("the gitmirror binary"))?;
        Self::new(&exe, (!home.is_default()).then(|| home.root()))
    }

    /// The command prefix, e.g. `/usr/bin/gitmirror --home /srv/git`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_paths_must_be_plain() {
        let exe = Path::new("/usr/bin/gitmirror");
        let cmd = Invocation::new(exe, Some(Path::new("/srv/git"))).unwrap();
        assert_eq!(cmd.as_str(), "/usr/bin/gitmirror --home /srv/git");
        for bad in [
            "/opt/my dir/gitmirror",
            "/x/\"y",
            "/x/$(id)",
            "/x/a'b",
            "/x/\\",
            "rel/x",
        ] {
            assert!(Invocation::new(Path::new(bad), None).is_err(), "{bad}");
            assert!(Invocation::new(exe, Some(Path::new(bad))).is_err(), "{bad}");
        }
    }
}
