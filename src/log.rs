//! Logging: every process writes through `tracing` to the home's `gitmirror.log` (one line per
//! event, appended, so concurrent processes interleave whole lines) and, when asked, to stderr.
//! Each line is either text for people or, with `[log] format = "json"`, one JSON object (from
//! tracing's own JSON layer) for a log pipeline; both carry the same fields.

use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use thiserror::Error;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How each log line is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// tracing's human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A `[log] format` that is neither `text` nor `json`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("log.format {0:?}: expected \"text\" or \"json\"")]
pub(crate) struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(UnknownLogFormat(other.to_string())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Where the logs of one process go.
pub(crate) struct LogTarget<'a> {
    /// The log file, appended to; `None` when there is no home to hold one yet.
    pub(crate) file: Option<&'a Path>,
    /// A `tracing` filter such as `info`.
    pub(crate) level: &'a str,
    /// How each line is written, in the file and on stderr alike.
    pub(crate) format: LogFormat,
    /// Also write to stderr.
    pub(crate) stderr: bool,
    /// Say on stderr when the log file cannot be opened. Off for the forced commands unless
    /// asked: their stderr is the remote client.
    pub(crate) complain: bool,
}

/// One output's layer in the given format. `ansi` only matters to text.
fn layer<S, W>(format: LogFormat, writer: W, ansi: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer)
            .boxed(),
    }
}

/// Installs the global subscriber. A log file that cannot be opened is reported once on
/// Whether stderr is systemd's journal: systemd names the stream it connects in
/// `JOURNAL_STREAM` (`DEVICE:INODE`), and only a process whose stderr is that very stream
/// counts (a forced command under an sshd that systemd started inherits the variable, but
/// its stderr is the ssh client). Under systemd the daemon's log then reaches the journal too.
pub(crate) fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat only writes into the zeroed struct we own; fd 2 may be closed, which it
    // reports as an error.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

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
    let mut layers = Vec::new();
    if let Some(f) = file {
        layers.push(layer(target.format, Mutex::new(f), false));
    }
    if target.stderr {
        layers.push(layer(target.format, std::io::stderr, true));
    }
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init();
}

#[cfg(test)]
mod journal_tests {
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn only_the_stream_systemd_named_is_the_journal() {
        // fd 2 of the test process, whatever it is, stands in for the journal's stream.
        let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
            return;
        };
        // SAFETY: tests in this module are the only ones touching JOURNAL_STREAM.
        unsafe { std::env::set_var("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())) };
        assert!(super::stderr_is_journal());
        unsafe {
            std::env::set_var(
                "JOURNAL_STREAM",
                format!("{}:{}", meta.dev(), meta.ino() + 1),
            )
        };
        assert!(!super::stderr_is_journal());
        unsafe { std::env::set_var("JOURNAL_STREAM", "garbage") };
        assert!(!super::stderr_is_journal());
        unsafe { std::env::remove_var("JOURNAL_STREAM") };
        assert!(!super::stderr_is_journal());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'w self) -> Buffer {
            self.clone()
        }
    }

    fn logged(format: LogFormat) -> String {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::registry().with(layer(format, buf.clone(), false));
        tracing::subscriber::with_default(subscriber, || {
            let _span = tracing::info_span!("gitmirror", pid = 42).entered();
            tracing::warn!(repo = "r1", error = "boom", "cannot push");
            tracing::info!("second");
        });
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(LogFormat::default(), LogFormat::Text);
        let err = "JSON".parse::<LogFormat>().unwrap_err().to_string();
        assert_eq!(err, "log.format \"JSON\": expected \"text\" or \"json\"");
        assert_eq!(LogFormat::Json.to_string(), "json");
    }

    #[test]
    fn json_is_one_object_a_line_with_the_text_fields() {
        let text = logged(LogFormat::Text);
        assert_eq!(text.lines().count(), 2, "{text}");
        let first = text.lines().next().unwrap();
        for part in [
            "WARN",
            "gitmirror{pid=42}",
            "cannot push",
            "repo=\"r1\"",
            "error=\"boom\"",
        ] {
            assert!(first.contains(part), "{part} not in {first}");
        }

        let json = logged(LogFormat::Json);
        let lines: Vec<serde_json::Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{json}");
        let v = &lines[0];
        assert!(v["timestamp"].is_string(), "{v}");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "gitmirror::log::tests");
        assert_eq!(v["fields"]["message"], "cannot push");
        assert_eq!(v["fields"]["repo"], "r1");
        assert_eq!(v["fields"]["error"], "boom");
        assert_eq!(v["span"]["name"], "gitmirror");
        assert_eq!(v["span"]["pid"], 42);
        assert_eq!(lines[1]["fields"]["message"], "second");
    }
}
