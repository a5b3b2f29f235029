//! `gitmirror import-gitolite`: a gitolite server's `gitolite.conf` and `keydir/` as an
//! admin repo's tree (`repos.toml`, `keys/users/`, `keys/peers/`), deciding the same as
//! gitolite did.
//!
//! - `conf`: reading the configuration as gitolite 3 does (includes, comments, sugar).
//! - `pattern`: wild repo regexes as globs, where that is exact.
//! - `convert`: the walk over the configuration's blocks, each rule as a gitmirror rule, in
//!   gitolite's order; `tables`: where each block's rules go so that order is kept;
//!   `settings`: options and configs resolved per repo as gitolite does (the last wins);
//!   `output`: the `repos.toml` text.
//! - `keys`: `keydir/` as `keys/`.
//!
//! Everything is read and converted before anything is written: what cannot be carried over
//! is listed with its file and line, and then nothing is written unless the caller accepts a
//! partial import.

mod conf;
mod convert;
mod keys;
mod output;
mod pattern;
mod settings;
mod tables;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub(crate) use convert::Problem;

/// Why an import could not be made at all.
#[derive(Debug, Error)]
pub(crate) enum ImportError {
    #[error(transparent)]
    Conf(#[from] conf::ConfError),
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] crate::fs::FsError),
}

/// A finished conversion, not written yet.
#[derive(Debug)]
pub(crate) struct Import {
    rules_text: String,
    key_files: Vec<(PathBuf, String)>,
    /// What was made: the repos.toml summary comes first when written, then users and peers.
    pub(crate) repos: usize,
    pub(crate) patterns: usize,
    pub(crate) groups: usize,
    pub(crate) key_lines: Vec<String>,
    /// What cannot be carried over, in file order.
    pub(crate) problems: Vec<Problem>,
    /// What was left out without changing a decision.
    pub(crate) notes: Vec<Problem>,
}

/// Reads and converts `conf` and `keydir`. An error means a configuration gitolite could
/// not read either (or a file that cannot be read).
pub(crate) fn prepare(conf_path: &Path, keydir: &Path) -> Result<Import, ImportError> {
    let conf = conf::read(conf_path)?;
    let converted = convert::convert(&conf)?;
    let keys = keys::read(keydir)?;
    let mut problems = converted.problems;
    problems.extend(keys.problems);
    Ok(Import {
        rules_text: converted.text,
        key_files: keys.files,
        repos: converted.repos,
        patterns: converted.patterns,
        groups: converted.groups,
        key_lines: keys.lines,
        problems,
        notes: converted.notes,
    })
}

impl Import {
    /// Writes `repos.toml` and the keys under `out` (created if missing; files already
    /// there are replaced, as in a checkout of the admin repo being re-imported).
    pub(crate) fn write(&self, out: &Path) -> Result<(), ImportError> {
        crate::fs::ensure_dir(out, 0o755)?;
        for (rel, text) in &self.key_files {
            let path = out.join(rel);
            if let Some(dir) = path.parent() {
                crate::fs::ensure_dir(dir, 0o755)?;
            }
            crate::fs::write_atomic(&path, text.as_bytes(), 0o644)?;
        }
        crate::fs::write_atomic(&out.join("repos.toml"), self.rules_text.as_bytes(), 0o644)?;
        tracing::info!(out = %out.display(), keys = self.key_files.len(), "gitolite configuration imported");
        Ok(())
    }

    /// The text of `repos.toml`.
    #[cfg(test)]
    pub(crate) fn rules_text(&self) -> &str {
        &self.rules_text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_reads_conf_and_keys_and_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("conf")).unwrap();
        std::fs::create_dir_all(d.join("keydir")).unwrap();
        std::fs::write(
            d.join("conf/gitolite.conf"),
            "repo gitolite-admin\n  RW+ = admin\nrepo foo\n  RW = alice\n  - VREF/COUNT/3 = alice\n",
        )
        .unwrap();
        std::fs::write(
            d.join("keydir/admin.pub"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBy1AchJKTcnEcCG3dbMNataNAk1jY/JeTL69i8dn4Dv\n",
        )
        .unwrap();
        let import = prepare(&d.join("conf/gitolite.conf"), &d.join("keydir")).unwrap();
        assert_eq!(import.repos, 2);
        assert_eq!(import.key_lines, vec!["user admin: 1 key"]);
        assert_eq!(import.problems.len(), 1);
        assert_eq!(import.problems[0].loc.line, 5);
        assert!(import.rules_text().contains("[repos.\"foo\"]"));
        import.write(&d.join("out")).unwrap();
        assert!(d.join("out/repos.toml").is_file());
        assert!(d.join("out/keys/users/admin.pub").is_file());
        // A conf gitolite cannot read either: one line, with file and line.
        std::fs::write(d.join("conf/gitolite.conf"), "repo foo\n  RW = \n").unwrap();
        let err = prepare(&d.join("conf/gitolite.conf"), &d.join("keydir"))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "conf/gitolite.conf:2: expected RW [REF ...] = USER ..., with users after the ="
            ),
            "{err}"
        );
    }
}
