//! File-system plumbing shared by the modules that own files: atomic replacement, locks, and
//! errors that name the path they failed on.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// An I/O failure together with the path it happened on and what we were doing.
#[derive(Debug, Error)]
#[error("{action} {path}: {source}")]
pub(crate) struct FsError {
    /// What was being done, e.g. "cannot write".
    pub(crate) action: &'static str,
    /// The file or directory involved.
    pub(crate) path: PathBuf,
    /// The underlying error.
    #[source]
    pub(crate) source: io::Error,
}

/// Attaches a path and an action to an I/O result.
pub(crate) trait Context<T> {
    /// Wraps the error, if any, as an [`FsError`].
    fn at(self, action: &'static str, path: &Path) -> Result<T, FsError>;
}

impl<T> Context<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, FsError> {
        self.map_err(|source| FsError {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Makes everything this process and the git it starts create private to the server's
/// account (gitolite's `UMASK 0077`): repos, objects, state, the log. An administrator who
/// wants a backup group to read them grants it with default ACLs, which umask does not touch.
pub(crate) fn private_umask() {
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail, and every
    // thread of ours runs under the one mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Waits until everything written to the filesystem holding `path` is on disk (syncfs(2)):
/// one wait for a bulk operation instead of one per file.
pub(crate) fn sync_filesystem(path: &Path) -> Result<(), FsError> {
    use std::os::fd::AsRawFd;
    let dir = fs::File::open(path).at("cannot open", path)?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).at("cannot sync the filesystem of", path);
    }
    Ok(())
}

/// Replaces `path` with `contents` so that a reader sees either the old file or the new one,
/// never a mix, and a crash leaves one of the two on disk: write a temporary file in the same
/// directory, fsync it, rename it over, fsync the directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    write_replacing(path, contents, mode, true)
}

/// Like [`write_atomic`], but without waiting for the disk: for state whose loss after a
/// crash costs only extra work.
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), FsError> {
    write_replacing(path, contents, mode, false)
}

fn write_replacing(path: &Path, contents: &[u8], mode: u32, durable: bool) -> Result<(), FsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".gitmirror-tmp")
        .tempfile_in(dir)
        .at("cannot create a temporary file in", dir)?;
    tmp.write_all(contents).at("cannot write", tmp.path())?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .at("cannot set permissions on", tmp.path())?;
    if durable {
        tmp.as_file().sync_all().at("cannot sync", tmp.path())?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .at("cannot replace", path)?;
    if durable {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .at("cannot sync directory", dir)?;
    }
    Ok(())
}

/// Writes `path` only when its contents differ, so that re-running a command that produces
/// the same result touches nothing. Returns whether it wrote.
pub(crate) fn write_if_changed(path: &Path, contents: &[u8], mode: u32) -> Result<bool, FsError> {
    match fs::read(path) {
        Ok(old) if old == contents => {
            let current = fs::metadata(path).at("cannot stat", path)?.permissions();
            if current.mode() & 0o7777 == mode {
                return Ok(false);
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at("cannot read", path),
    }
    write_atomic(path, contents, mode)?;
    Ok(true)
}

/// Renames `from` to `to` only if nothing is at `to` (renameat2's `RENAME_NOREPLACE`), then
/// waits for both directories to reach the disk. A plain rename would replace an empty
/// directory at `to` without a word; moving repos around must never replace anything.
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> Result<(), FsError> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))
    };
    let (cf, ct) = (
        c(from).at("cannot move", from)?,
        c(to).at("cannot move to", to)?,
    );
    // SAFETY: both pointers are NUL-terminated strings that live through the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).at("cannot move it to", to);
    }
    for dir in [from.parent(), to.parent()].into_iter().flatten() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .at("cannot sync directory", dir)?;
    }
    Ok(())
}

/// Creates a directory (and its parents) with the given mode if it does not exist yet.
pub(crate) fn ensure_dir(path: &Path, mode: u32) -> Result<(), FsError> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(e).at("cannot create directory", path),
    }
}

/// Takes an exclusive lock on `path` (created empty if missing, never truncated), held until
/// the returned file is dropped. Serializes read-modify-write cycles between processes.
pub(crate) fn lock(path: &Path) -> Result<fs::File, FsError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .at("cannot open lock file", path)?;
    file.lock().at("cannot lock", path)?;
    Ok(file)
}
