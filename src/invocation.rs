//! How gitmirror invokes itself from the lines it writes for others to run: the
//! `command="..."` of each authorized_keys line and the hook scripts in every repo.
//!
//! The path written there must outlive the binary it was written by: a package upgrade
//! replaces `/usr/bin/gitmirror`, and a binary reached through a symlink (`/usr/local/bin/
//! gitmirror -> /opt/gitmirror-1.2/gitmirror`) may have its target swapped. So the path is
//! `program` from `gitmirror.toml` when set, else the path this process was started as, as
//! the shell or sshd found it, symlinks kept ([`started_as`]); never `/proc/self/exe`, which
//! resolves them.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

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
    #[error(
        "program = \"{path}\" in gitmirror.toml is not an executable file: set it to where gitmirror is installed"
    )]
    NotAProgram { path: PathBuf },
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

    /// How this server's lines run gitmirror: `program` (from `gitmirror.toml`) when given,
    /// else the path this process was started as ([`started_as`]); with `--home` unless
    /// `home` is the account's `$HOME`.
    pub(crate) fn current(home: &Home, program: Option<&Path>) -> Result<Self, InvocationError> {
        let exe = match program {
            Some(p) => {
                let runnable = std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
                if !runnable {
                    return Err(InvocationError::NotAProgram {
                        path: p.to_path_buf(),
                    });
                }
                p.to_path_buf()
            }
            None => started_as()?,
        };
        Self::new(&exe, (!home.is_default()).then(|| home.root()))
    }

    /// The command prefix, e.g. `/usr/bin/gitmirror --home /srv/git`.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The path this process was started as, without resolving symlinks: `argv[0]` when it names
/// this very binary (made absolute against the working directory, or looked up in `PATH` as
/// the shell did when it holds no `/`), else the resolved path of the running binary.
pub(crate) fn started_as() -> Result<PathBuf, InvocationError> {
    let exe = std::env::current_exe().at("cannot locate", Path::new("the gitmirror binary"))?;
    let cwd = std::env::current_dir().ok();
    let path = std::env::var_os("PATH");
    let named = std::env::args_os()
        .next()
        .and_then(|argv0| argv0_path(&argv0, path.as_deref(), cwd.as_deref()))
        .filter(|p| same_file(p, &exe));
    Ok(named.unwrap_or(exe))
}

/// Where `argv0` points, as the kernel found it: absolute as it is; relative to `cwd` when it
/// holds a `/`; else the first executable file of that name in `PATH`'s absolute entries.
fn argv0_path(argv0: &OsStr, path_var: Option<&OsStr>, cwd: Option<&Path>) -> Option<PathBuf> {
    let argv0 = Path::new(argv0);
    if argv0.as_os_str().is_empty() {
        return None;
    }
    let found = if argv0.is_absolute() {
        argv0.to_path_buf()
    } else if argv0.components().count() > 1 || argv0.starts_with(".") {
        cwd?.join(argv0)
    } else {
        std::env::split_paths(path_var?)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(argv0))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })?
    };
    // `/usr/./bin/gitmirror` reads `/usr/bin/gitmirror`; `..` stays, as it may cross a symlink.
    Some(
        found
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect(),
    )
}

/// Whether both paths reach the same file (symlinks followed).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv0_is_found_as_the_shell_found_it() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let real = bin.join("gitmirror");
        std::fs::write(&real, "").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = bin.join("gm");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let path_var =
            std::env::join_paths(["relative", "/nonexistent", bin.to_str().unwrap()]).unwrap();
        let found = |argv0: &str| argv0_path(OsStr::new(argv0), Some(&path_var), Some(dir.path()));
        // A name alone: PATH's first match, the symlink kept.
        assert_eq!(found("gm"), Some(link.clone()));
        assert_eq!(found("gitmirror"), Some(real.clone()));
        assert_eq!(found("absent"), None);
        assert_eq!(found(""), None);
        // With a slash: against the working directory, `.` dropped.
        assert_eq!(found("./bin/gm"), Some(link.clone()));
        assert_eq!(found("bin/./gm"), Some(link.clone()));
        assert_eq!(found(link.to_str().unwrap()), Some(link.clone()));
        assert!(same_file(&link, &real));
        assert!(!same_file(&link, dir.path()));
        assert!(!same_file(&bin.join("absent"), &real));
    }

    #[test]
    fn a_configured_program_must_be_runnable() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(dir.path()), false).unwrap();
        let prog = dir.path().join("gitmirror");
        for (made, mode) in [(false, 0), (true, 0o644)] {
            if made {
                std::fs::write(&prog, "").unwrap();
                std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            let err = Invocation::current(&home, Some(&prog)).unwrap_err();
            assert!(
                err.to_string().contains("is not an executable file"),
                "{err}"
            );
        }
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cmd = Invocation::current(&home, Some(&prog)).unwrap();
        assert_eq!(
            cmd.as_str(),
            format!("{} --home {}", prog.display(), dir.path().display())
        );
    }

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
