//! Logging: every process writes through `tracing` to `gitmirror.log` in the server home (one
//! line per event, appended, so concurrent processes interleave whole lines) and, when asked,
//! to stderr.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogConfig;
use crate::home::Home;

/// Installs the global subscriber. A log file that cannot be opened is reported once on
/// stderr and otherwise ignored: logging must never stop a push.
pub fn init(home: &Home, config: &LogConfig, stderr: bool) {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let path = home.log_path();
    let file = if home.root().is_dir() {
        match OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => Some(f),
            Err(e) => {
                // For the forced commands stderr is the remote client: say it only when asked.
                if stderr {
                    eprintln!("gitmirror: cannot open log file {}: {e}", path.display());
                }
                None
            }
        }
    } else {
        None
    };
    let file_layer = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Mutex::new(f))
    });
    let stderr_layer = (stderr || config.stderr)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file_layer)
        .with(stderr_layer)
        .try_init();
}
