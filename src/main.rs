//! The `gitmirror` binary: parses the command line and hands it to the library (see
//! `gitmirror::cli`). Everything that decides anything lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    gitmirror::cli::Cli::parse().run()
}
