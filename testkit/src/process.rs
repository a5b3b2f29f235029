//! Processes: running a command and reading what it said ([`run`], [`OutputExt`]), polling
//! until something holds ([`wait_for`]), and finding and signalling processes through /proc
//! ([`process_tree`], [`signal`]).
//!
//! Tests stop only what they started, by pid: never by name, which could hit processes of
//! another test run on the same machine.

use std::fs;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a command and returns its output; panics only if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub trait OutputExt {
    fn text(&self) -> String;
    fn err(&self) -> String;
    /// Asserts success and returns stdout.
    fn ok(&self) -> String;
    /// Asserts failure with `needle` in stderr and returns stderr.
    fn fails_with(&self, needle: &str) -> String;
}

impl OutputExt for Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    fn ok(&self) -> String {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.text(),
            self.err()
        );
        self.text()
    }
    fn fails_with(&self, needle: &str) -> String {
        assert!(
            !self.status.success(),
            "command unexpectedly succeeded:\nstdout: {}\nstderr: {}",
            self.text(),
            self.err()
        );
        let err = self.err();
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
        err
    }
}

/// Waits for `cond` to hold, polling, up to `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(5);
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Sends `signal` (e.g. "KILL", "STOP", "CONT") to each pid.
pub fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// `pid` and every process descended from it, found through /proc.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces.
            if let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
                && let Some(ppid) = rest.split_whitespace().nth(1).and_then(|x| x.parse().ok())
            {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}
