//! How the results of mirror pushes read, for pushers and administrators: one line per slave,
//! in gitolite's style (`server1 ==== (testing) ===> server2`).

use super::status::format_time;
use crate::names::{AccountName, RepoName};

/// How a slave came to have the master's state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Delivered {
    /// The slave was asked (and pushed to, if it differed): it has the state now.
    Pushed,
    /// Nothing had changed since the slave last confirmed the state, at `since`; it was not
    /// asked.
    Unchanged { since: Option<f64> },
}

/// One slave's outcome for one repo.
#[derive(Debug, Clone)]
pub(crate) struct SlaveResult {
    /// The master (this server, or the one asked).
    pub(crate) master: AccountName,
    /// The repo.
    pub(crate) repo: RepoName,
    /// The slave.
    pub(crate) slave: AccountName,
    /// `Err` holds the slave's (or ssh's) own words, on one line.
    pub(crate) outcome: Result<Delivered, String>,
}

impl SlaveResult {
    /// The line users and administrators see, in gitolite's style.
    pub(crate) fn line(&self) -> String {
        match &self.outcome {
            Ok(Delivered::Pushed) => {
                format!("{} ==== ({}) ===> {}", self.master, self.repo, self.slave)
            }
            Ok(Delivered::Unchanged { since }) => format!(
                "{} ==== ({}) ---> {}: unchanged since {}",
                self.master,
                self.repo,
                self.slave,
                format_time(*since)
            ),
            Err(e) => format!(
                "{} ==== ({}) =X=> {}: {e}",
                self.master, self.repo, self.slave
            ),
        }
    }
}

/// A printable report of a request: lines, and whether everything succeeded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// One line per slave (or the master's reply, when asked from a slave).
    pub(crate) lines: Vec<String>,
    /// False when any slave failed or did not answer in time.
    pub(crate) ok: bool,
}

impl Report {
    /// A report of the slaves that answered; `expected` slaves that did not are pending.
    pub(crate) fn new(
        master: &AccountName,
        repo: Option<&RepoName>,
        expected: &[AccountName],
        results: &[SlaveResult],
    ) -> Self {
        let mut lines: Vec<String> = results.iter().map(SlaveResult::line).collect();
        let mut ok = results.iter().all(|r| r.outcome.is_ok());
        if let Some(repo) = repo {
            for slave in expected {
                if !results.iter().any(|r| &r.slave == slave) {
                    lines.push(format!(
                        "{master} ==== ({repo}) ...> {slave}: pending, will be retried"
                    ));
                    ok = false;
                }
            }
        }
        Report { lines, ok }
    }

    /// The lines joined, each ending in a newline.
    pub(crate) fn text(&self) -> String {
        self.lines.iter().map(|l| format!("{l}\n")).collect()
    }
}
