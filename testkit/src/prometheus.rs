//! A real Prometheus (Debian's `prometheus` package, `/usr/bin/prometheus`) scraping what a
//! test points it at every second, asked through its HTTP query API; and the plain HTTP/1.0
//! requests that asking (and a test poking a metrics endpoint) needs, over a bare socket, so
//! the harness needs no HTTP client of its own.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::wait_for;
use crate::sandbox::Scratch;

pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// An answer to [`http`]: status code, headers (lowercased names), body.
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 request to `addr` (the connection closes after the answer); `None` when
/// nothing answers.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> Option<HttpReply> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(HttpReply {
        status,
        headers,
        body: body.to_string(),
    })
}

/// A port free on `ip` a moment ago.
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server of the test's own: its own directory and port, scraping `targets`
/// every second; stopped by pid on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: Scratch,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `gitmirror`) and waits until it is ready.
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: run scripts/setup (apt-get install -y prometheus)"
        );
        let dir = Scratch::new("prometheus");
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: gitmirror\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
            .parse()
            .unwrap();
        let log = fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut p = Prometheus { child, addr, dir };
        let mut exited = false;
        wait_for("prometheus ready", Duration::from_secs(30), || {
            exited = matches!(p.child.try_wait(), Ok(Some(_)));
            exited || http(p.addr, "GET", "/-/ready").is_some_and(|r| r.status == 200)
        });
        assert!(!exited, "prometheus exited:\n{}", p.log());
        p
    }

    /// What Prometheus said on stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query: each series' labels and value. Panics if Prometheus refuses it.
    pub fn query(&mut self, expr: &str) -> Vec<(serde_json::Value, f64)> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let reply = http(self.addr, "GET", &path)
            .unwrap_or_else(|| panic!("prometheus does not answer:\n{}", self.log()));
        let v: serde_json::Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("query {expr}: {e}: {}", reply.body));
        assert_eq!(v["status"], "success", "query {expr}: {v}");
        v["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// The value of the one series `expr` selects, if it selects one.
    pub fn value(&mut self, expr: &str) -> Option<f64> {
        let found = self.query(expr);
        match found.as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s` as a URL query value: everything but unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
