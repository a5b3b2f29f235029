//! `gitmirror.toml`: this server's own settings (its hostname among peers, how to reach each
//! peer, replication defaults, logging).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::file::{ConfigError, Source};
use crate::home::Home;
use crate::invocation::Invocation;
use crate::log::LogFormat;
use crate::names::AccountName;

/// How to reach one peer over ssh. Every field is optional: by default the peer's name is used
/// as an ssh host alias, so `~/.ssh/config` can say the rest, as with gitolite.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PeerConfig {
    /// Host name or address; default: the peer's name.
    pub(crate) host: Option<String>,
    /// ssh port; default: ssh's own default (or the alias's).
    pub(crate) port: Option<u16>,
    /// Account on the peer; default: ssh's own default (or the alias's).
    pub(crate) user: Option<String>,
}

/// Replication defaults for every repo this server masters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MirrorConfig {
    /// Whether a user's push waits for the slaves. Async (false) is the default.
    pub(crate) sync: bool,
    /// Whether a user's push to a slave is carried to the master (on a slave), and taken from
    /// a slave (on a master), for repos whose `repos.toml` does not say. Off by default.
    pub(crate) redirect: bool,
    /// In sync mode, how many slaves must have the push before it returns (default: all).
    pub(crate) sync_quorum: Option<usize>,
    /// In sync mode, how long a push waits for the slaves before it returns anyway; the rest
    /// stay pending and are retried.
    pub(crate) sync_timeout_secs: f64,
    /// First delay before retrying a failed mirror push.
    pub(crate) retry_initial_secs: f64,
    /// Longest delay between retries; retries never stop.
    pub(crate) retry_max_secs: f64,
    /// Each failure multiplies the delay by this (with jitter), up to the maximum.
    pub(crate) retry_factor: f64,
    /// `gitmirror status` exits non-zero when a slave has been failing longer than this.
    pub(crate) alert_after_secs: f64,
    /// How long a mirror push may go without a byte moving (and at least 4 KiB must move in
    /// each such stretch) before it counts as failed. No limit on a transfer that moves.
    pub(crate) io_timeout_secs: f64,
    /// How often the daemon compares every repo it masters with what its slaves last
    /// confirmed (no network when nothing changed), catching ref updates no hook announced.
    pub(crate) rescan_secs: f64,
    /// How often the daemon asks every slave what its copies hold and repairs what drifted
    /// behind its back, in seconds (each time give or take a tenth).
    pub(crate) verify_interval: f64,
    /// The shortest interval a pull mirror is fetched at, whatever its `upstream.interval`
    /// says (a guard for the upstreams' sake).
    pub(crate) upstream_min_interval_secs: f64,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            sync: false,
            redirect: false,
            sync_quorum: None,
            sync_timeout_secs: 30.0,
            retry_initial_secs: 1.0,
            retry_max_secs: 300.0,
            retry_factor: 2.0,
            alert_after_secs: 600.0,
            io_timeout_secs: 600.0,
            rescan_secs: 30.0,
            verify_interval: 3600.0,
            upstream_min_interval_secs: 60.0,
        }
    }
}

/// Where logs go, how much is written and in what form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogConfig {
    /// A `tracing` filter such as `info` or `gitmirror=debug`.
    pub(crate) level: String,
    /// Text for people (the default) or one JSON object per line for a log pipeline.
    pub(crate) format: LogFormat,
    /// Also write logs to stderr. Off by default: for the forced commands, stderr is the
    /// remote user's terminal.
    pub(crate) stderr: bool,
}

fn default_level() -> String {
    "info".to_string()
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: LogFormat::default(),
            stderr: false,
        }
    }
}

/// The daemon's Prometheus metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MetricsConfig {
    /// Where the daemon serves `GET /metrics` over HTTP; none (the default) serves nothing.
    /// Plain HTTP without authentication: bind it to localhost, or to an interface only the
    /// Prometheus server reaches.
    pub(crate) listen: Option<SocketAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerConfig {
    hostname: Spanned<String>,
    program: Option<Spanned<String>>,
    #[serde(default)]
    peers: BTreeMap<Spanned<String>, PeerConfig>,
    #[serde(default)]
    mirror: MirrorConfig,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    #[serde(default)]
    stderr: bool,
}

/// Whether a host or user name can go on ssh's command line as it is: no leading `-`
/// (it would read as an option), no whitespace or control characters.
fn plain_ssh_word(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('-') && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A validated `gitmirror.toml`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerConfig {
    /// This server's name among its peers (not its DNS name).
    pub(crate) hostname: AccountName,
    /// The path authorized_keys lines and hooks run gitmirror by; default: the path the
    /// running gitmirror was started as (see `invocation`).
    pub(crate) program: Option<PathBuf>,
    /// How to reach each peer, by the peer's name.
    pub(crate) peers: BTreeMap<AccountName, PeerConfig>,
    /// Replication defaults.
    pub(crate) mirror: MirrorConfig,
    /// Logging.
    pub(crate) log: LogConfig,
    /// Prometheus metrics.
    pub(crate) metrics: MetricsConfig,
}

impl ServerConfig {
    /// Reads and validates the home's `gitmirror.toml`.
    pub(crate) fn of(home: &Home) -> Result<Self, ConfigError> {
        Self::load(&home.config_path())
    }

    /// Reads and validates the file at `path`.
    pub(crate) fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_source(&Source::read(path)?)
    }

    /// Validates already-read text.
    pub(crate) fn from_source(src: &Source) -> Result<Self, ConfigError> {
        let raw: RawServerConfig = src.parse()?;
        let name = |s: &Spanned<String>, what: &str| {
            AccountName::parse(s.get_ref()).map_err(|e| {
                src.error(
                    s.span(),
                    format!("{what}: {e}; expected a name like \"server1\""),
                )
            })
        };
        let hostname = name(&raw.hostname, "hostname")?;
        let program = match &raw.program {
            None => None,
            Some(p) => {
                let path = PathBuf::from(p.get_ref());
                if let Err(e) = Invocation::new(&path, None) {
                    return Err(src.error(p.span(), format!("program: {e}")));
                }
                Some(path)
            }
        };
        let mut peers = BTreeMap::new();
        for (key, peer) in raw.peers {
            let peer_name = name(&key, "peer name")?;
            if peer_name == hostname {
                return Err(src.error(
                    key.span(),
                    format!("peer {peer_name} is this server's own hostname"),
                ));
            }
            for (what, value) in [("host", &peer.host), ("user", &peer.user)] {
                if let Some(v) = value
                    && !plain_ssh_word(v)
                {
                    return Err(src.error(
                        key.span(),
                        format!(
                            "peers.{peer_name}.{what} {v:?}: expected a plain name (no spaces, not starting with -)"
                        ),
                    ));
                }
            }
            peers.insert(peer_name, peer);
        }
        let m = &raw.mirror;
        const DAY: f64 = 86_400.0;
        for (key, value, min, max) in [
            ("sync_timeout_secs", m.sync_timeout_secs, 0.0, DAY),
            ("retry_initial_secs", m.retry_initial_secs, 0.001, DAY),
            (
                "retry_max_secs",
                m.retry_max_secs,
                m.retry_initial_secs,
                DAY,
            ),
            ("retry_factor", m.retry_factor, 1.0, 100.0),
            ("alert_after_secs", m.alert_after_secs, 0.0, 365.0 * DAY),
            ("rescan_secs", m.rescan_secs, 0.1, DAY),
            ("verify_interval", m.verify_interval, 0.1, 30.0 * DAY),
            ("io_timeout_secs", m.io_timeout_secs, 1.0, DAY),
            (
                "upstream_min_interval_secs",
                m.upstream_min_interval_secs,
                0.1,
                DAY,
            ),
        ] {
            if !(value.is_finite() && value >= min && value <= max) {
                return Err(src.error_at_key(
                    key,
                    format!("mirror.{key} = {value}: expected a number from {min} to {max}"),
                ));
            }
        }
        let mut log = LogConfig {
            stderr: raw.log.stderr,
            ..LogConfig::default()
        };
        if let Some(level) = raw.log.level {
            if let Err(e) = tracing_subscriber::EnvFilter::try_new(level.get_ref()) {
                return Err(src.error(
                    level.span(),
                    format!(
                        "log.level {:?}: {e}; expected e.g. \"info\"",
                        level.get_ref()
                    ),
                ));
            }
            log.level = level.into_inner();
        }
        if let Some(format) = raw.log.format {
            log.format = format
                .get_ref()
                .parse()
                .map_err(|e: crate::log::UnknownLogFormat| {
                    src.error(format.span(), e.to_string())
                })?;
        }
        let mut metrics = MetricsConfig::default();
        if let Some(listen) = raw.metrics.listen {
            // An IP address and a port, not a host name: what the daemon binds must not
            // depend on a resolver at start, and the log names exactly what it tried.
            let addr = listen.get_ref().parse::<SocketAddr>().map_err(|_| {
                src.error(
                    listen.span(),
                    format!(
                        "metrics.listen {:?}: expected an IP address and port like \"127.0.0.1:9464\"",
                        listen.get_ref()
                    ),
                )
            })?;
            metrics.listen = Some(addr);
        }
        Ok(ServerConfig {
            hostname,
            program,
            peers,
            mirror: raw.mirror,
            log,
            metrics,
        })
    }

    /// The text `gitmirror init` writes for a new server.
    pub(crate) fn template(hostname: &AccountName) -> String {
        format!(
            r#"# gitmirror.toml: this server's own settings.
# hostname is this server's name among its peers (not its DNS name).
hostname = "{hostname}"

# The path authorized_keys lines and repo hooks run gitmirror by (rewritten by
# `gitmirror compile`); default: the path gitmirror was run as, symlinks kept.
# program = "/usr/bin/gitmirror"

# How to reach each peer over ssh. All fields are optional: by default the peer's
# name is used as an ssh host alias (see ~/.ssh/config).
# [peers.server2]
# host = "10.0.0.2"
# port = 22
# user = "git"

[mirror]
sync = false          # a user's push does not wait for the slaves
# redirect = false      # a user's push to a slave is refused, naming the master
# sync_quorum = 1       # in sync mode, return once this many slaves have the push
# sync_timeout_secs = 30
# retry_initial_secs = 1  # failed mirror pushes are retried forever, backing off
# retry_max_secs = 300
# retry_factor = 2
# alert_after_secs = 600  # `gitmirror status` fails when a slave lags longer
# rescan_secs = 30        # how often the daemon looks for changes no hook announced
# io_timeout_secs = 600   # a mirror push fails after this long without progress
# verify_interval = 3600  # how often the daemon verifies every slave and repairs drift
# upstream_min_interval_secs = 60  # pull mirrors are fetched at most this often

[log]
level = "info"        # written to gitmirror.log in this server's home
# format = "text"       # or "json": one JSON object per line, for a log pipeline
stderr = false

# Prometheus metrics, served by the daemon over plain HTTP at GET /metrics (off
# unless set; keep it on localhost or a network only Prometheus reaches).
# [metrics]
# listen = "127.0.0.1:9464"
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ServerConfig, ConfigError> {
        ServerConfig::from_source(&Source::from_text("gitmirror.toml", text))
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let cfg = load(include_str!("../../conf/gitmirror.toml.example")).unwrap();
        assert_eq!(cfg.mirror.rescan_secs, 30.0);
        assert_eq!(cfg.mirror.verify_interval, 3600.0);
        assert!(!cfg.mirror.redirect);
        assert_eq!(cfg.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn template_round_trips() {
        let host = AccountName::parse("server1").unwrap();
        let cfg = load(&ServerConfig::template(&host)).unwrap();
        assert_eq!(cfg.hostname, host);
        assert!(!cfg.mirror.sync);
        assert!(!cfg.mirror.redirect);
        assert_eq!(cfg.metrics.listen, None);
    }

    #[test]
    fn peers_and_defaults() {
        let cfg = load(
            "hostname = \"server1\"\n[peers.server2]\nhost = \"10.0.0.2\"\nport = 2222\n[peers.server3]\n",
        )
        .unwrap();
        let s2 = &cfg.peers[&AccountName::parse("server2").unwrap()];
        assert_eq!(s2.port, Some(2222));
        assert_eq!(
            cfg.peers[&AccountName::parse("server3").unwrap()],
            PeerConfig::default()
        );
    }

    #[test]
    fn log_format_defaults_to_text_and_takes_json() {
        let cfg = load("hostname = \"s1\"\n").unwrap();
        assert_eq!(cfg.log.format, LogFormat::Text);
        let cfg = load("hostname = \"s1\"\n[log]\nformat = \"json\"\nstderr = true\n").unwrap();
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert!(cfg.log.stderr);
        assert_eq!(cfg.log.level, "info");
        let err = load("hostname = \"s1\"\n[log]\nformat = \"xml\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "gitmirror.toml:3: log.format \"xml\": expected \"text\" or \"json\""
        );
    }

    #[test]
    fn metrics_are_off_by_default_and_listen_where_told() {
        let cfg = load("hostname = \"s1\"\n").unwrap();
        assert_eq!(cfg.metrics.listen, None);
        let cfg = load("hostname = \"s1\"\n[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(cfg.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
        let cfg = load("hostname = \"s1\"\n[metrics]\nlisten = \"[::1]:9464\"\n").unwrap();
        assert_eq!(cfg.metrics.listen, Some("[::1]:9464".parse().unwrap()));
        let err = load("hostname = \"s1\"\n[metrics]\nlisten = \"localhost:9464\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "gitmirror.toml:3: metrics.listen \"localhost:9464\": expected an IP address and port like \"127.0.0.1:9464\""
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        for (text, line) in [
            ("hostname = \"server1\"\n\n[mirror]\nsink = true\n", 4),
            ("hostname = \"bad name\"\n", 1),
            ("hostname = \"s1\"\n[peers.\"a;b\"]\n", 2),
            ("hostname = \"s1\"\n[peers.s1]\n", 2),
            ("hostname = \"s1\"\nport = \n", 2),
            ("hostname = \"s1\"\n\n[log]\nlevel = \"[\"\n", 4),
            ("hostname = \"s1\"\n[log]\nformat = \"xml\"\n", 3),
            ("hostname = \"s1\"\n[log]\nformat = true\n", 3),
            (
                "hostname = \"s1\"\n[mirror]\nsync = true\nretry_factor = 0.5\n",
                4,
            ),
            (
                "hostname = \"s1\"\n[peers.s2]\nhost = \"-oProxyCommand=x\"\n",
                2,
            ),
            ("hostname = \"s1\"\nprogram = \"bin/gitmirror\"\n", 2),
            (
                "hostname = \"s1\"\n[metrics]\nlisten = \"localhost:9464\"\n",
                3,
            ),
            ("hostname = \"s1\"\n[metrics]\nlisten = \"127.0.0.1\"\n", 3),
            ("hostname = \"s1\"\n[metrics]\nlisten = 9464\n", 3),
            ("hostname = \"s1\"\n[metrics]\nport = 9464\n", 3),
            (
                "hostname = \"s1\"\nprogram = \"/opt/my dir/gitmirror\"\n",
                2,
            ),
        ] {
            let err = load(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("gitmirror.toml:{line}: ")),
                "{err}"
            );
            assert!(!err.contains('\n'), "{err:?}");
        }
    }
}
