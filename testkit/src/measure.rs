//! What the benchmarks and tests share for measuring and for making data: command-line
//! options after `cargo bench --`, medians, a process's peak memory, and bytes that no
//! compression shrinks.

use std::fs;
use std::path::PathBuf;

use crate::client::Client;
use crate::server::Server;

/// Whether the flag `name` (e.g. `--quick`) was given. Unknown arguments (cargo bench passes
/// `--bench`) are ignored.
pub fn arg_flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// The number after the option `name` (e.g. `--repos 1000`), or `default`.
pub fn arg_value(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `xs` (the upper one of an even count); 0 for none.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The peak resident memory (VmHWM) of process `pid`, in KiB, while it runs.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `len` bytes that no compression or delta shrinks, the same for the same `seed`
/// (xorshift64).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// This machine's cores and memory (KiB), as the benchmarks report them.
pub fn machine() -> (usize, u64) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next()?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    (cores, mem_kib)
}

/// The baseline's target: a server with no gitmirror at all, whose sshd runs `client`'s
/// git itself (a plain key line, through the login shell), and the path and ssh URL of a
/// bare repo there (not created: the caller makes it, or makes it afresh each run).
pub fn plain_target(client: &Client) -> (Server, PathBuf, String) {
    let plain = Server::start("plain");
    let repo = plain.home().join("plain.git");
    let key = fs::read_to_string(&client.key.public).unwrap();
    fs::write(plain.home().join(".ssh/authorized_keys"), key).unwrap();
    let url = format!(
        "ssh://{}@{}:{}{}",
        plain.user.name,
        plain.addr,
        plain.port,
        repo.display()
    );
    (plain, repo, url)
}
