//! `gitmirror man DIR` (hidden): writes the man pages, generated from the command line's own
//! definition (clap_mangen): `gitmirror.1` and one `gitmirror-SUBCOMMAND.1` per subcommand.
//! The package build runs it; nobody edits a page by hand.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_mangen::Man;
use thiserror::Error;

use super::{Cli, Outcome, print};

/// Why the man pages could not be written.
#[derive(Debug, Error)]
pub(super) enum ManError {
    #[error("cannot render the man page {name}: {source}")]
    Render { name: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Every page: (file name, roff text), the main command's first.
pub(super) fn pages() -> Result<Vec<(String, Vec<u8>)>, ManError> {
    fn add(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), ManError> {
        let man = Man::new(cmd.clone());
        let name = man.get_filename();
        let mut text = Vec::new();
        man.render(&mut text).map_err(|source| ManError::Render {
            name: name.clone(),
            source,
        })?;
        out.push((name, text));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            add(sub, out)?;
        }
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    add(&cmd, &mut out)?;
    Ok(out)
}

/// Writes every page into `dir` (created if missing), readable by all, and returns their paths.
pub(super) fn write(dir: &Path) -> Result<Vec<PathBuf>, ManError> {
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(failed(dir))?;
    let mut written = Vec::new();
    for (name, text) in pages()? {
        let path = dir.join(name);
        fs::write(&path, text).map_err(failed(&path))?;
        written.push(path);
    }
    Ok(written)
}

pub(super) fn run(dir: &Path) -> Outcome {
    let written = write(dir).map_err(|e| e.to_string())?;
    let list: String = written
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    print(&list)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_the_command_and_each_subcommand_people_use() {
        let pages = pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "gitmirror.1");
        for page in [
            "gitmirror-init.1",
            "gitmirror-add-user.1",
            "gitmirror-compile.1",
            "gitmirror-completions.1",
            "gitmirror-hook-post-receive.1",
        ] {
            assert!(names.contains(&page), "{page} missing from {names:?}");
        }
        // Hidden: generated for the package, not a command people run.
        assert!(!names.contains(&"gitmirror-man.1"), "{names:?}");
        assert!(!names.contains(&"gitmirror-help.1"), "{names:?}");
        let main = String::from_utf8(pages[0].1.clone()).unwrap();
        assert!(main.starts_with(".ie"), "{main}");
        assert!(main.contains(".TH gitmirror 1"), "{main}");
        assert!(main.contains("add\\-user"), "{main}");
        let init = &pages
            .iter()
            .find(|(n, _)| n == "gitmirror-init.1")
            .unwrap()
            .1;
        assert!(String::from_utf8_lossy(init).contains("\\-\\-hostname"));
    }
}
