//! Metrics, with real servers and a real Prometheus (Debian's `prometheus`): the master's
//! daemon serves `[metrics] listen`, Prometheus scrapes it every second, a slave goes down
//! and comes back, and Prometheus' own query API must show the lag and the failures, then
//! the lag back at 0. And the bad input: an address that cannot be bound is one line in the
//! log while replication goes on; anything but `GET /metrics` is a bare 404.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use gitmirror_testkit::*;

const RULES: &str = r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2"]

[repos.testing]
"RW+" = ["alice"]
"#;

struct World {
    cluster: Cluster,
    alice: Client,
}

/// server1 masters `testing`, mirrored to server2; from its next daemon on it serves metrics
/// at `listen(server1's address)`, which the test returns too.
fn world(listen: impl FnOnce(&Server) -> SocketAddr) -> (World, SocketAddr) {
    let cluster = Cluster::new(&["server1", "server2"]);
    let s1 = cluster.server("server1");
    // Retries come quickly in tests.
    s1.mirror_settings("retry_initial_secs = 0.1\nretry_max_secs = 0.5");
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    cluster.set_rules(RULES);
    // compile started a daemon with the old settings: the next one reads these.
    s1.stop_daemon();
    let addr = listen(s1);
    s1.metrics_listen(addr);
    alice.init_repo("w");
    (World { cluster, alice }, addr)
}

/// A free port on the server's own 127.x address.
fn free_on(s: &Server) -> SocketAddr {
    let ip = s.addr.to_string();
    SocketAddr::new(s.addr.into(), free_port(&ip))
}

impl World {
    fn s1(&self) -> &Server {
        self.cluster.server("server1")
    }

    fn s2_mut(&mut self) -> &mut Server {
        &mut self.cluster.servers[1]
    }

    fn push(&self, file: &str) {
        self.alice.commit("w", file);
        self.alice
            .git_in("w", &["push", &self.s1().url("testing"), "main"])
            .ok();
    }

    fn in_sync(&self) {
        self.cluster
            .wait_in_sync("testing", "server1", &["server2"]);
    }
}

/// Waits until the one series `expr` selects in Prometheus has a value `cond` accepts, and
/// returns it.
fn wait_value(p: &mut Prometheus, expr: &str, what: &str, cond: impl Fn(f64) -> bool) -> f64 {
    let mut last = None;
    wait_for(what, Duration::from_secs(30), || {
        last = p.value(expr);
        last.is_some_and(&cond)
    });
    last.unwrap_or_default()
}

#[test]
fn prometheus_sees_a_slave_fall_behind_fail_and_recover() {
    let (mut w, metrics) = world(free_on);
    let _daemon = w.s1().start_daemon();
    wait_for("the metrics endpoint", Duration::from_secs(20), || {
        http(metrics, "GET", "/metrics").is_some_and(|r| r.status == 200)
    });
    w.push("a");
    w.in_sync();

    // Only GET /metrics is answered; anything else is a 404 and nothing more.
    let ok = http(metrics, "GET", "/metrics").unwrap();
    assert!(
        ok.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text")),
        "{:?}",
        ok.headers
    );
    assert!(ok.body.ends_with("# EOF\n"), "{}", ok.body);
    for (method, path) in [("POST", "/metrics"), ("GET", "/other"), ("GET", "/")] {
        let r = http(metrics, method, path).unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, ""), "{method} {path}");
    }

    let mut prom = Prometheus::start(&[metrics]);
    let up = "up{job=\"gitmirror\"}";
    wait_value(&mut prom, up, "prometheus scraping the daemon", |v| {
        v == 1.0
    });
    let lag = "gitmirror_slave_lag_seconds{slave=\"server2\"}";
    wait_value(&mut prom, lag, "no lag while in sync", |v| v == 0.0);

    // The slave goes down; a push to the master cannot reach it.
    w.s2_mut().crash_sshd();
    w.push("b");
    let failures = "sum(gitmirror_slave_push_failures_total{slave=\"server2\"})";
    wait_value(&mut prom, failures, "failures counted", |v| v >= 1.0);
    let pending = "gitmirror_slave_repos_pending{slave=\"server2\"}";
    wait_value(&mut prom, pending, "the repo pending", |v| v == 1.0);
    let failing = "gitmirror_slave_repos_failing{slave=\"server2\"}";
    wait_value(&mut prom, failing, "the repo failing", |v| v == 1.0);
    // The lag grows while the slave is away.
    let first = wait_value(&mut prom, lag, "a lag", |v| v > 0.0);
    wait_value(&mut prom, lag, "a growing lag", |v| v >= first + 1.0);
    // The failures say why, by class, never in the slave's own words.
    let reasons = prom.query("gitmirror_slave_push_failures_total{slave=\"server2\"}");
    for (labels, _) in &reasons {
        let reason = labels["reason"].as_str().unwrap_or_default();
        assert!(["unreachable", "transport"].contains(&reason), "{labels}");
    }
    // `gitmirror metrics` prints the same gauges, read from the same records.
    let text = w.s1().gitmirror(&["metrics"]).ok();
    assert!(
        text.lines()
            .any(|l| l == "gitmirror_slave_repos_pending{slave=\"server2\"} 1"),
        "{text}"
    );
    assert!(!text.contains("slave_pushes_total"), "{text}");
    // ...in a form node_exporter's textfile collector reads (the older text format), as
    // promtool's parser and linter for it say.
    let mut check = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/setup installs it)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    checked.ok();

    // Back: the slave catches up, and the lag returns to 0.
    w.s2_mut().start_sshd();
    w.in_sync();
    wait_value(&mut prom, lag, "the lag back at 0", |v| v == 0.0);
    wait_value(&mut prom, pending, "nothing pending", |v| v == 0.0);
    let pushes = "gitmirror_slave_pushes_total{slave=\"server2\"}";
    wait_value(&mut prom, pushes, "pushes counted", |v| v >= 2.0);
    let bytes = "gitmirror_slave_sent_bytes_total{slave=\"server2\"}";
    wait_value(&mut prom, bytes, "pack bytes counted", |v| v > 0.0);
    let conn = "gitmirror_peer_connection_up{peer=\"server2\"}";
    wait_value(&mut prom, conn, "the connection up again", |v| v == 1.0);

    // Every query of the shipped dashboard is one Prometheus accepts, and the slave panels
    // have data.
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/grafana-dashboard.json"),
    )
    .unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$instance", ".*")
                .replace("$__rate_interval", "1m");
            let found = prom.query(&expr);
            if expr.contains("gitmirror_slave_") && !expr.contains("verify") {
                assert!(!found.is_empty(), "no data for {expr}");
            }
            queries += 1;
        }
    }
    assert!(queries >= 15, "{queries} queries");
    w.s1().stop_daemon();
}

#[test]
fn an_address_that_cannot_be_bound_is_one_log_line_and_replication_goes_on() {
    // Someone else holds the port.
    let mut taken = None;
    let (w, addr) = world(|s| {
        let l = TcpListener::bind((s.addr, 0)).unwrap();
        let addr = l.local_addr().unwrap();
        taken = Some(l);
        addr
    });
    w.push("a");
    w.in_sync();
    let log = w.s1().log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot serve metrics"))
        .collect();
    // One line, from the one daemon started since, naming the address.
    assert_eq!(lines.len(), 1, "{log}");
    let pid = w.s1().daemon_pid().expect("the daemon runs");
    assert!(lines[0].contains(&format!("pid={pid}")), "{}", lines[0]);
    assert!(lines[0].contains(&format!("listen={addr}")), "{}", lines[0]);
    assert!(lines[0].contains("ERROR"), "{}", lines[0]);
    // Still replicating: another push gets there too.
    w.push("b");
    w.in_sync();
    assert!(w.s1().daemon_pid().is_some(), "the daemon must still run");
    w.s1().stop_daemon();
    drop(taken);
}
