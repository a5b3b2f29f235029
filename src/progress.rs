//! Progress of long commands (`request-push --all`, `verify --all`, `fetch --all`): a spinner
//! with the counts on a terminal, a plain line now and then otherwise (for logs and cron
//! mail), nothing with `--quiet`. All of it on stderr; the summary is the command's output.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(10);

/// How progress is shown.
enum Shown {
    Nothing,
    Bar(ProgressBar),
    /// Plain lines, the last one written at this instant (none yet: `None`).
    Lines(Option<Instant>),
}

/// Counts what a long command has done so far and shows it.
pub(crate) struct Progress {
    what: &'static str,
    succeeded: usize,
    failed: usize,
    shown: Shown,
}

impl Progress {
    /// Progress of the command named `what`: a bar on a terminal, plain lines otherwise,
    /// nothing when `quiet`.
    pub(crate) fn new(what: &'static str, quiet: bool) -> Progress {
        let shown = if quiet {
            Shown::Nothing
        } else if std::io::stderr().is_terminal() {
            // Hidden until set up, so that the first frame is already the right one.
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
                .with_prefix(what)
                .with_message("starting");
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg} [{elapsed}]")
            {
                bar.set_style(style);
            }
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.enable_steady_tick(Duration::from_millis(200));
            Shown::Bar(bar)
        } else {
            Shown::Lines(None)
        };
        Progress {
            what,
            succeeded: 0,
            failed: 0,
            shown,
        }
    }

    /// One more item done, well or not.
    pub(crate) fn tick(&mut self, ok: bool) {
        if ok {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        let counts = self.counts();
        match &mut self.shown {
            Shown::Nothing => {}
            Shown::Bar(bar) => bar.set_message(counts),
            Shown::Lines(last) => {
                // The first item at once (the command is alive), then now and then.
                if last.is_none_or(|t| t.elapsed() >= LINE_EVERY) {
                    *last = Some(Instant::now());
                    // Progress is a courtesy: a closed stderr must not stop the command.
                    let _ = writeln!(std::io::stderr(), "{}: {counts} so far", self.what);
                }
            }
        }
    }

    /// `N succeeded, M failed`.
    fn counts(&self) -> String {
        format!("{} succeeded, {} failed", self.succeeded, self.failed)
    }

    /// Clears the bar and returns the summary line, `WHAT: N succeeded, M failed`.
    pub(crate) fn finish(self) -> String {
        if let Shown::Bar(bar) = &self.shown {
            bar.finish_and_clear();
        }
        format!("{}: {}\n", self.what, self.counts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_succeeded_and_failed() {
        let mut p = Progress::new("verify", true);
        p.tick(true);
        p.tick(false);
        p.tick(true);
        assert_eq!(p.finish(), "verify: 2 succeeded, 1 failed\n");
        assert_eq!(
            Progress::new("fetch", true).finish(),
            "fetch: 0 succeeded, 0 failed\n"
        );
    }
}
