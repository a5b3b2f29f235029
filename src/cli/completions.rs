//! `gitmirror completions SHELL`: prints the shell's completion script, generated from the
//! command line's own definition (clap_complete), so it never lags behind it.

use std::str::FromStr;

use clap::CommandFactory;
use clap_complete::Generator;
use thiserror::Error;

use super::{Cli, Outcome, print};

/// The shells a completion script is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// A shell gitmirror makes no completion script for.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("completions: unknown shell {0:?}; expected bash, zsh or fish")]
pub(super) struct UnknownShell(String);

impl FromStr for Shell {
    type Err = UnknownShell;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bash" => Ok(Shell::Bash),
            "zsh" => Ok(Shell::Zsh),
            "fish" => Ok(Shell::Fish),
            _ => Err(UnknownShell(s.to_string())),
        }
    }
}

impl Shell {
    /// The completion script, for a binary called `gitmirror`.
    pub(super) fn script(self) -> Vec<u8> {
        fn make(generator: impl Generator) -> Vec<u8> {
            let mut cmd = Cli::command();
            let mut out = Vec::new();
            clap_complete::generate(generator, &mut cmd, "gitmirror", &mut out);
            out
        }
        match self {
            Shell::Bash => make(clap_complete::Shell::Bash),
            Shell::Zsh => make(clap_complete::Shell::Zsh),
            Shell::Fish => make(clap_complete::Shell::Fish),
        }
    }
}

pub(super) fn run(shell: &str) -> Outcome {
    let shell = Shell::from_str(shell).map_err(|e| e.to_string())?;
    print(&String::from_utf8_lossy(&shell.script()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shell_gets_a_script_naming_every_subcommand() {
        for (name, marker) in [
            ("bash", "complete -F _gitmirror"),
            ("zsh", "#compdef gitmirror"),
            ("fish", "complete -c gitmirror"),
        ] {
            let script = String::from_utf8(Shell::from_str(name).unwrap().script()).unwrap();
            assert!(script.contains(marker), "{name}: {script}");
            for sub in ["init", "add-user", "compile", "request-push", "completions"] {
                assert!(script.contains(sub), "{name} lacks {sub}");
            }
        }
    }

    #[test]
    fn an_unknown_shell_is_one_line_naming_the_known_ones() {
        let err = Shell::from_str("tcsh").unwrap_err().to_string();
        assert_eq!(
            err,
            "completions: unknown shell \"tcsh\"; expected bash, zsh or fish"
        );
    }
}
