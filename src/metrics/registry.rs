//! The series and their exposition: the daemon's live counters ([`Live`], told by the
//! scheduler), and [`render`], which puts them and a [`Snapshot`]'s gauges into one
//! registry and lets prometheus-client write the OpenMetrics text.
//!
//! The registry is built afresh at each scrape: the gauges are read from disk each time,
//! and a series for a slave or remote that went away simply stops being written. The live
//! families are shared handles (clones count into the same series), so registering them
//! in each new registry costs nothing.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::MetricsError;
use super::collect::Snapshot;
use crate::names::AccountName;
use crate::replicate::observer::{Observed, PushObserver};
use crate::ssh::Pool;

/// Every series' name starts with this (and `_`).
const PREFIX: &str = "gitmirror";

/// The content type of what [`render`] writes.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlaveLabel {
    slave: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    slave: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemoteLabels {
    repo: String,
    url: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerifyLabels {
    slave: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Mirror push durations, in seconds: a push of nothing new over an open connection takes
/// milliseconds, a big repo's first push minutes, a hung one up to `io_timeout_secs`.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// What only a running daemon knows: its pushes, as the scheduler tells them, and its peer
/// connections. Counters start at zero with the daemon, as Prometheus expects of counters.
pub(crate) struct Live {
    pushes: Family<SlaveLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    durations: Family<SlaveLabel, Histogram, fn() -> Histogram>,
    sent: Family<SlaveLabel, Counter>,
    pool: Arc<Pool>,
}

impl Live {
    /// Counters at zero, and the daemon's peer connections to report on.
    pub(crate) fn new(pool: Arc<Pool>) -> Arc<Self> {
        Arc::new(Live {
            pushes: Family::default(),
            failures: Family::default(),
            durations: Family::new_with_constructor(duration_histogram),
            sent: Family::default(),
            pool,
        })
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "slave_pushes",
            "Mirror pushes that reached the slave, failed or not (since the daemon started)",
            self.pushes.clone(),
        );
        registry.register(
            "slave_push_failures",
            "Failed mirror pushes, by reason: unreachable, transport, refused, missing, held, local",
            self.failures.clone(),
        );
        registry.register(
            "slave_push_duration_seconds",
            "How long each mirror push took, failed ones included",
            self.durations.clone(),
        );
        registry.register(
            "slave_sent_bytes",
            "Bytes of pack sent to the slave (git's protocol lines around them not counted)",
            self.sent.clone(),
        );
        let up = Family::<PeerLabel, Gauge>::default();
        for (peer, open) in self.pool.connections() {
            up.get_or_create(&PeerLabel {
                peer: peer.to_string(),
            })
            .set(i64::from(open));
        }
        registry.register(
            "peer_connection_up",
            "1 while the daemon's multiplexed ssh connection to the peer is open, 0 while it fails",
            up,
        );
    }
}

impl PushObserver for Live {
    fn finished(&self, slave: &AccountName, took: Duration, observed: Observed) {
        let label = SlaveLabel {
            slave: slave.to_string(),
        };
        self.pushes.get_or_create(&label).inc();
        self.durations
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        match observed {
            Observed::Pushed { bytes } => {
                self.sent.get_or_create(&label).inc_by(bytes);
            }
            Observed::Failed { reason } => {
                self.failures
                    .get_or_create(&FailureLabels {
                        slave: label.slave,
                        reason: reason.to_string(),
                    })
                    .inc();
            }
        }
    }
}

/// The exposition of `snap`'s gauges, and of `live`'s series when a daemon serves it.
pub(crate) fn render(snap: &Snapshot, live: Option<&Live>) -> Result<String, MetricsError> {
    let mut registry = Registry::with_prefix(PREFIX);
    // A gauge at 1 rather than OpenMetrics' `info` type: node_exporter's textfile collector
    // reads the older text format, which has no such type and would refuse the whole file.
    let build = Family::<VersionLabel, Gauge>::default();
    build
        .get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .set(1);
    registry.register("build_info", "The gitmirror version, as a label", build);
    let pending = Family::<SlaveLabel, Gauge>::default();
    let failing = Family::<SlaveLabel, Gauge>::default();
    let lag = Family::<SlaveLabel, FloatGauge>::default();
    for (slave, g) in &snap.slaves {
        let label = SlaveLabel {
            slave: slave.clone(),
        };
        pending.get_or_create(&label).set(count(g.pending));
        failing.get_or_create(&label).set(count(g.failing));
        lag.get_or_create(&label).set(g.lag(snap.now));
    }
    registry.register(
        "slave_repos_pending",
        "Repos whose latest state the slave has not confirmed",
        pending,
    );
    registry.register(
        "slave_repos_failing",
        "Repos pending on the slave whose last mirror push failed",
        failing,
    );
    registry.register(
        "slave_lag_seconds",
        "Age of the oldest push the slave has not confirmed (0 when in sync)",
        lag,
    );
    let depth: Gauge = Gauge::default();
    depth.set(count(snap.queue_depth));
    registry.register(
        "queue_depth",
        "Mirror pushes owed, over every repo and slave",
        depth,
    );
    for (kind, remotes, what) in [
        (
            "upstream",
            &snap.upstreams,
            "fetch from the pull mirror's upstream",
        ),
        ("downstream", &snap.downstreams, "push to the push mirror"),
    ] {
        let success = Family::<RemoteLabels, FloatGauge>::default();
        let failures = Family::<RemoteLabels, Gauge>::default();
        for r in remotes {
            let labels = RemoteLabels {
                repo: r.repo.clone(),
                url: r.url.clone(),
            };
            if let Some(t) = r.last_success {
                success.get_or_create(&labels).set(t);
            }
            failures.get_or_create(&labels).set(count(r.failures));
        }
        registry.register(
            format!("{kind}_last_success_timestamp_seconds"),
            format!("When the last {what} succeeded (absent if none has)"),
            success,
        );
        registry.register(
            format!("{kind}_failures"),
            format!("Failed attempts to {what} since its last success"),
            failures,
        );
    }
    let verified = Family::<VerifyLabels, Gauge>::default();
    let verified_at = Family::<SlaveLabel, FloatGauge>::default();
    for (slave, v) in &snap.verified {
        verified_at
            .get_or_create(&SlaveLabel {
                slave: slave.clone(),
            })
            .set(v.at);
        for (state, n) in &v.counts {
            verified
                .get_or_create(&VerifyLabels {
                    slave: slave.clone(),
                    state: state.clone(),
                })
                .set(count(*n as u64));
        }
    }
    registry.register(
        "verify_repos",
        "Repos the slave's last verify found in each state (ok, drifted, missing, unreachable, refused, local)",
        verified,
    );
    registry.register(
        "verify_last_run_timestamp_seconds",
        "When the slave was last verified",
        verified_at,
    );
    if let Some(live) = live {
        live.register(&mut registry);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

/// A count as a gauge's value (they never come near `i64::MAX`).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collect::{RemoteGauges, SlaveGauges, VerifyGauges};

    #[test]
    fn the_exposition_names_every_series_with_its_prefix() {
        let mut snap = Snapshot {
            now: 1000.0,
            queue_depth: 3,
            ..Snapshot::default()
        };
        snap.slaves.insert(
            "server2".into(),
            SlaveGauges {
                pending: 3,
                failing: 2,
                oldest: Some(900.0),
            },
        );
        snap.slaves.insert("server3".into(), SlaveGauges::default());
        snap.upstreams.push(RemoteGauges {
            repo: "linux".into(),
            url: "https://example.com/linux.git".into(),
            last_success: Some(990.5),
            failures: 0,
        });
        snap.downstreams.push(RemoteGauges {
            repo: "tools".into(),
            url: "git@example.com:tools.git".into(),
            last_success: None,
            failures: 4,
        });
        snap.verified.insert(
            "server2".into(),
            VerifyGauges {
                at: 950.0,
                counts: [("ok".to_string(), 7), ("drifted".to_string(), 1)].into(),
            },
        );
        let text = render(&snap, None).unwrap();
        for line in [
            "gitmirror_slave_repos_pending{slave=\"server2\"} 3",
            "gitmirror_slave_repos_failing{slave=\"server2\"} 2",
            "gitmirror_slave_lag_seconds{slave=\"server2\"} 100.0",
            "gitmirror_slave_lag_seconds{slave=\"server3\"} 0.0",
            "gitmirror_queue_depth 3",
            "gitmirror_upstream_last_success_timestamp_seconds{repo=\"linux\",url=\"https://example.com/linux.git\"} 990.5",
            "gitmirror_upstream_failures{repo=\"linux\",url=\"https://example.com/linux.git\"} 0",
            "gitmirror_downstream_failures{repo=\"tools\",url=\"git@example.com:tools.git\"} 4",
            "gitmirror_verify_repos{slave=\"server2\",state=\"drifted\"} 1",
            "gitmirror_verify_last_run_timestamp_seconds{slave=\"server2\"} 950.0",
            "# TYPE gitmirror_slave_lag_seconds gauge",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        // Never succeeded: no timestamp at all, rather than a 1970 one.
        assert!(!text.contains("gitmirror_downstream_last_success_timestamp_seconds{"));
        // The daemon's own series are not made up when there is no daemon.
        assert!(!text.contains("slave_pushes"), "{text}");
        assert!(text.starts_with("# HELP gitmirror_"), "{text}");
    }

    /// The daemon's live series for a server1 in a fresh home (kept while the guard lives).
    fn live_series() -> (tempfile::TempDir, Arc<Live>) {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::home::Home::locate(Some(dir.path()), false).unwrap();
        let config = crate::config::ServerConfig::from_source(&crate::config::Source::from_text(
            "gitmirror.toml",
            "hostname = \"server1\"\n",
        ))
        .unwrap();
        (dir, Live::new(Arc::new(Pool::new(home, Arc::new(config)))))
    }

    #[tokio::test]
    async fn pushes_are_counted_by_slave_and_failures_by_reason() {
        let (_dir, live) = live_series();
        let s2 = AccountName::parse("server2").unwrap();
        live.finished(
            &s2,
            Duration::from_millis(30),
            Observed::Pushed { bytes: 1234 },
        );
        live.finished(&s2, Duration::from_secs(2), Observed::Pushed { bytes: 0 });
        live.finished(
            &s2,
            Duration::from_millis(1),
            Observed::Failed {
                reason: "unreachable",
            },
        );
        let text = render(&Snapshot::default(), Some(&live)).unwrap();
        for line in [
            "gitmirror_slave_pushes_total{slave=\"server2\"} 3",
            "gitmirror_slave_push_failures_total{slave=\"server2\",reason=\"unreachable\"} 1",
            "gitmirror_slave_sent_bytes_total{slave=\"server2\"} 1234",
            "gitmirror_slave_push_duration_seconds_count{slave=\"server2\"} 3",
            "gitmirror_slave_push_duration_seconds_bucket{le=\"0.05\",slave=\"server2\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
        // No peer was ever tried: no connection series at all.
        assert!(!text.contains("peer_connection_up{"), "{text}");
    }

    /// The names of the series a full exposition writes: every gauge with a value, and the
    /// daemon's series after a push and a failure.
    fn every_series() -> std::collections::BTreeSet<String> {
        let (_dir, live) = live_series();
        let s2 = AccountName::parse("server2").unwrap();
        live.finished(&s2, Duration::from_millis(1), Observed::Pushed { bytes: 1 });
        live.finished(
            &s2,
            Duration::from_millis(1),
            Observed::Failed { reason: "held" },
        );
        let remote = RemoteGauges {
            repo: "r".into(),
            url: "u".into(),
            last_success: Some(1.0),
            failures: 1,
        };
        let mut snap = Snapshot {
            upstreams: vec![remote.clone()],
            downstreams: vec![remote],
            ..Snapshot::default()
        };
        snap.slaves.insert("server2".into(), SlaveGauges::default());
        snap.verified.insert(
            "server2".into(),
            VerifyGauges {
                at: 1.0,
                counts: [("ok".to_string(), 1)].into(),
            },
        );
        let mut names: std::collections::BTreeSet<String> = render(&snap, Some(&live))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect();
        // Written only once the daemon has tried to reach a peer, which no unit test does.
        names.insert("gitmirror_peer_connection_up".into());
        names
    }

    /// Every `gitmirror_...` name in `text`.
    fn named_in(text: &str) -> std::collections::BTreeSet<String> {
        text.match_indices("gitmirror_")
            .map(|(i, _)| {
                text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect::<String>()
            })
            .collect()
    }

    #[test]
    fn the_dashboard_and_alerts_use_series_that_exist_and_the_readme_lists_them_all() {
        let series = every_series();
        let dashboard = include_str!("../../conf/grafana-dashboard.json");
        serde_json::from_str::<serde_json::Value>(dashboard).expect("the dashboard is JSON");
        let alerts = include_str!("../../conf/prometheus-alerts.yml");
        for (file, text) in [
            ("grafana-dashboard.json", dashboard),
            ("prometheus-alerts.yml", alerts),
        ] {
            for name in named_in(text) {
                assert!(
                    series.contains(&name),
                    "{file} names {name}, which is not a series"
                );
            }
        }
        let readme = include_str!("../../README.md");
        for name in &series {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                readme.contains(&format!("| `{family}` |")),
                "README's Metrics table lacks {family}"
            );
        }
    }
}
