//! Logging: every process writes through `tracing` to the home's `gitmirror.log` (one line per
//! event, appended, so concurrent processes interleave whole lines) and, when asked, to stderr.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where the logs of one process go.
pub(crate) struct LogTarget<'a> {
    /// The log file, appended to; `None` when there is no home to hold one yet.
    pub(crate) file: Option<&'a Path>,
    /// A `tracing` filter such as `info`.
    pub(crate) level: &'a str,
    /// Also write to stderr.
    pub(crate) stderr: bool,
    /// Say on stderr when the log file cannot be opened. Off for the forced commands unless
    /// asked: their stderr is the remote client.
    pub(crate) complain: bool,
}

/// Installs the global subscriber. A log file that cannot be opened is reported once on
/// stderr (when `complain` allows) and otherwise ignored: logging must never stop a push.
pub(crate) fn init(target: &LogTarget<'_>) {
    let filter = EnvFilter::try_new(target.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let file = target.file.and_then(|path| {
        // Private to the account: it names users, repos and refs.
        match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => Some(f),
            Err(e) => {
                if target.complain {
                    eprintln!("gitmirror: cannot open log file {}: {e}", path.display());
                }
                None
            }
        }
    });
    let file_layer = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Mutex::new(f))
    });
    let stderr_layer = target
        .stderr
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
}
