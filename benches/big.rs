//! Big-repository benchmark (issue 10, "Big repositories"): replicating one big repo to two
//! slaves from scratch, against one `git push --mirror` of the same repo to a plain bare repo
//! over ssh, measured in the same run. Not a test: it asserts nothing about time; it prints a
//! table and JSON (also target/bench/big.json).
//!
//! Run: `scripts/bench big` (as root), or `cargo bench --bench big -- [options]`:
//! - `--quick`: only the 90 MB case.
//! - `--size-mb N`: the big case's packed size, roughly (default 600; at least 500 is the
//!   target's).
//! - `--big-only`: only the big case.
//! - `--runs N`: runs of each case (default 1); medians are reported.
//! - `--generate-only`: make (or find) the repos, print their sizes, and stop.
//!
//! The repos are synthetic, made by this program: a generator feeds `git fast-import` (source-
//! like text files whose edits delta well, random binaries that do not, annotated tags, release
//! branches), then `git repack -a -d -f` packs them with deltas as `git gc` would. They are
//! cached under target/bench/repos/, keyed by the generator's parameters, and reused.
//!
//! Per case and run:
//! 1. The repo is put on server1, master of a 3-server cluster, mirrored to server2 and
//!    server3, which lack it: `compile` makes it (hooks, mirror settings), its objects and
//!    refs are then replaced by the generated ones. server1's daemon is stopped, so the one
//!    `request-push` starts has seen nothing but this case (its peak RSS is this case's).
//! 2. Timed: `gitmirror request-push REPO`, which returns once both slaves have it; then both
//!    slaves' refs and HEAD must equal the master's.
//! 3. Baseline, timed: `git push --mirror` of the same repo to a fresh empty bare repo behind a
//!    plain sshd.
//! 4. Memory, sampled every 20 ms from a thread: the daemon's peak RSS (VmHWM), and separately
//!    the peak RSS of any `git pack-objects` it spawns; for the baseline, `git push`'s own and
//!    its pack-objects'. A process's VmHWM is read while it lives, so growth in its last
//!    20 ms can be missed.
//!
//! server1's log of each run is kept in target/bench/logs/.

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gitmirror_testkit::*;

/// Part of every cache key: bump it when the generator's output changes.
const GENERATOR_VERSION: u32 = 2;

struct Options {
    quick: bool,
    big_only: bool,
    generate_only: bool,
    size_mb: usize,
    runs: usize,
}

fn options() -> Options {
    // cargo bench passes `--bench`; unknown arguments are ignored.
    let flag = arg_flag;
    let value = arg_value;
    Options {
        quick: flag("--quick"),
        big_only: flag("--big-only"),
        generate_only: flag("--generate-only"),
        size_mb: value("--size-mb", 600),
        runs: value("--runs", 1).max(1),
    }
}

/// What the generator makes; every field is part of the cache key.
#[derive(Clone, Debug)]
struct Shape {
    /// The case's name in the table, and the repo's name on the servers.
    name: String,
    /// Text files at the end (about 95% exist from the first commit, the rest are added).
    files: usize,
    commits: usize,
    /// Mean lines per text file at creation (about 40 bytes a line).
    mean_lines: usize,
    /// Each commit edits 1 to this many text files (a few hunks each).
    max_edits: usize,
    /// Random binaries added along the history (versions of at most 4 paths).
    binaries: usize,
    binary_mib: usize,
    seed: u64,
}

impl Shape {
    /// The "90 MB case": about 6,000 commits over 5,000 text files, plus two 20 MB binaries.
    fn ninety() -> Shape {
        Shape {
            name: "big90".into(),
            files: 5000,
            commits: 6000,
            mean_lines: 500,
            max_edits: 4,
            binaries: 2,
            binary_mib: 20,
            seed: 90,
        }
    }

    /// The big case: more files and history, and random binaries filling it up to about
    /// `size_mb` packed.
    fn big(size_mb: usize) -> Shape {
        // What the text history below packs to, measured; binaries make up the rest.
        const TEXT_MB: usize = 50;
        const BINARY_MIB: usize = 48;
        let binaries = size_mb.saturating_sub(TEXT_MB).div_ceil(BINARY_MIB);
        Shape {
            name: format!("big{size_mb}"),
            files: 8000,
            commits: 15_000,
            mean_lines: 300,
            max_edits: 4,
            binaries,
            binary_mib: BINARY_MIB,
            seed: 500,
        }
    }

    fn key(&self) -> String {
        format!(
            "v{GENERATOR_VERSION}-f{}-c{}-l{}-e{}-b{}x{}-s{}",
            self.files,
            self.commits,
            self.mean_lines,
            self.max_edits,
            self.binaries,
            self.binary_mib,
            self.seed
        )
    }
}

/// A generated repo in the cache, and how it was made.
struct Generated {
    path: PathBuf,
    cached: bool,
    fast_import_seconds: f64,
    repack_seconds: f64,
    packed_bytes: u64,
    objects: u64,
}

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench")
}

fn git_quiet(dir: &Path, args: &[&str]) {
    let out = run(Command::new("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .arg("--git-dir")
        .arg(dir)
        .args(args));
    out.ok();
}

/// The generated repo for `shape`, from the cache or made now. A repo is complete once its
/// `bench-generated.json` exists; anything else under its name is a leftover and is redone.
fn generated(shape: &Shape) -> Generated {
    let path = bench_dir()
        .join("repos")
        .join(format!("{}.git", shape.key()));
    let marker = path.join("bench-generated.json");
    if let Some(v) = fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    {
        return Generated {
            path,
            cached: true,
            fast_import_seconds: v["fast_import_seconds"].as_f64().unwrap_or(0.0),
            repack_seconds: v["repack_seconds"].as_f64().unwrap_or(0.0),
            packed_bytes: v["packed_bytes"].as_u64().unwrap_or(0),
            objects: v["objects"].as_u64().unwrap_or(0),
        };
    }
    eprintln!("generating {} ({})", shape.name, shape.key());
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    run(Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&path))
    .ok();
    let t = Instant::now();
    fast_import(shape, &path);
    let fast_import_seconds = t.elapsed().as_secs_f64();
    eprintln!("  fast-import: {fast_import_seconds:.1} s");
    // Random binaries do not delta: repack must not spend its time trying. A bare repo reads
    // attributes from info/attributes (the tree's .gitattributes says the same).
    fs::create_dir_all(path.join("info")).unwrap();
    fs::write(path.join("info/attributes"), "*.bin -delta binary\n").unwrap();
    let t = Instant::now();
    git_quiet(&path, &["pack-refs", "--all"]);
    // As `git gc --aggressive` would not, but `git gc` on a server does: a fresh delta search
    // (fast-import's deltas are only against the previous version of the same path).
    git_quiet(
        &path,
        &[
            "repack",
            "-a",
            "-d",
            "-f",
            "-q",
            "--window=10",
            "--depth=50",
        ],
    );
    let repack_seconds = t.elapsed().as_secs_f64();
    eprintln!("  repack: {repack_seconds:.1} s");
    let packed_bytes = pack_bytes(&path);
    let objects = count_objects(&path);
    let info = serde_json::json!({
        "shape": format!("{shape:?}"),
        "fast_import_seconds": fast_import_seconds,
        "repack_seconds": repack_seconds,
        "packed_bytes": packed_bytes,
        "objects": objects,
    });
    fs::write(&marker, serde_json::to_string_pretty(&info).unwrap()).unwrap();
    Generated {
        path,
        cached: false,
        fast_import_seconds,
        repack_seconds,
        packed_bytes,
        objects,
    }
}

fn pack_bytes(repo: &Path) -> u64 {
    fs::read_dir(repo.join("objects/pack"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

fn count_objects(repo: &Path) -> u64 {
    let out = run(Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["count-objects", "-v"]))
    .ok();
    out.lines()
        .find_map(|l| l.strip_prefix("in-pack: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Source-like text: lines built from a fixed vocabulary, so files compress and edits delta
/// as real code does.
struct Text {
    words: Vec<String>,
}

impl Text {
    fn new(rng: &mut fastrand::Rng) -> Text {
        const SYLLABLES: &[&str] = &[
            "ab", "ac", "al", "an", "ar", "be", "co", "de", "di", "el", "en", "er", "ex", "fi",
            "ge", "in", "io", "is", "la", "le", "li", "lo", "ma", "me", "mi", "mo", "na", "ne",
            "no", "on", "or", "pa", "pe", "po", "pro", "qu", "ra", "re", "ri", "ro", "sa", "se",
            "si", "so", "st", "ta", "te", "ti", "to", "tr", "un", "ur", "va", "ve", "vi",
        ];
        let words = (0..3000)
            .map(|_| {
                (0..rng.usize(1..=4))
                    .map(|_| SYLLABLES[rng.usize(..SYLLABLES.len())])
                    .collect()
            })
            .collect();
        Text { words }
    }

    fn word(&self, rng: &mut fastrand::Rng) -> &str {
        // Some words are far more common than others, as in code.
        let u = rng.f64();
        &self.words[(u * u * self.words.len() as f64) as usize]
    }

    fn line(&self, rng: &mut fastrand::Rng) -> String {
        let indent = "    ".repeat(rng.usize(0..4));
        let (a, b, c) = (self.word(rng), self.word(rng), self.word(rng));
        let body = match rng.u8(0..10) {
            0 => format!(
                "let {a}_{b} = {c}({}, {});",
                self.word(rng),
                rng.u16(..1000)
            ),
            1 => format!("if {a}.{b}() > {} {{", rng.u16(..100)),
            2 => "}".to_string(),
            3 => format!("// {a} {b} {c} {}", self.word(rng)),
            4 => format!(
                "fn {a}_{b}({c}: &{}) -> Result<(), Error> {{",
                self.word(rng)
            ),
            5 => format!("return {a}.{b}({c});"),
            6 => format!("{a}.{b}.push({c}_{});", self.word(rng)),
            7 => format!("match {a} {{ {b} => {c}, _ => {} }}", rng.u32(..100_000)),
            8 => String::new(),
            _ => format!("self.{a} = {b}::{c}(&self.{});", self.word(rng)),
        };
        format!("{indent}{body}")
    }

    fn file(&self, rng: &mut fastrand::Rng, mean_lines: usize) -> Vec<String> {
        (0..rng.usize(mean_lines / 5..=mean_lines * 9 / 5))
            .map(|_| self.line(rng))
            .collect()
    }
}

fn text_path(i: usize, word: &str) -> String {
    let dir = i / 40;
    format!("src/m{}/d{dir}/{word}_{i}.rs", dir / 12)
}

fn data(w: &mut impl Write, bytes: &[u8]) {
    writeln!(w, "data {}", bytes.len()).unwrap();
    w.write_all(bytes).unwrap();
    w.write_all(b"\n").unwrap();
}

fn render(lines: &[String]) -> Vec<u8> {
    let mut out = lines.join("\n").into_bytes();
    out.push(b'\n');
    out
}

/// Feeds `git fast-import` the history `shape` describes.
fn fast_import(shape: &Shape, repo: &Path) {
    let mut child = Command::new("git")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .arg("--git-dir")
        .arg(repo)
        .args(["fast-import", "--quiet", "--done"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = BufWriter::with_capacity(1 << 20, child.stdin.take().unwrap());
    let mut rng = fastrand::Rng::with_seed(shape.seed);
    let text = Text::new(&mut rng);
    let initial = shape.files * 95 / 100;
    let mut paths: Vec<String> = Vec::new();
    let mut files: Vec<Vec<String>> = Vec::new();
    let mut binary = vec![0u8; shape.binary_mib << 20];
    let mut next_binary = 0;
    let binary_at = |j: usize| (j + 1) * shape.commits / (shape.binaries + 1);
    let t0: u64 = 1_600_000_000;
    for c in 0..shape.commits {
        let ts = t0 + c as u64 * 1800;
        let author = rng.usize(..40);
        writeln!(
            w,
            "commit refs/heads/main\nmark :{}\nauthor Dev {author} <dev{author}@example.com> {ts} +0000\ncommitter Dev {author} <dev{author}@example.com> {ts} +0000",
            c + 1
        )
        .unwrap();
        let subject: Vec<&str> = (0..rng.usize(3..9)).map(|_| text.word(&mut rng)).collect();
        let mut message = format!("{}: {}\n", text.word(&mut rng), subject.join(" "));
        if rng.bool() {
            message.push('\n');
            for _ in 0..rng.usize(1..5) {
                let line: Vec<&str> = (0..rng.usize(6..12)).map(|_| text.word(&mut rng)).collect();
                message.push_str(&line.join(" "));
                message.push('\n');
            }
        }
        data(&mut w, message.as_bytes());
        let mut changed: Vec<usize> = Vec::new();
        if c == 0 {
            w.write_all(b"M 100644 inline .gitattributes\n").unwrap();
            data(&mut w, b"*.bin -delta binary\n");
            for i in 0..initial {
                paths.push(text_path(i, text.word(&mut rng)));
                files.push(text.file(&mut rng, shape.mean_lines));
                changed.push(i);
            }
        } else {
            // New files arrive steadily until there are `files`.
            let due = initial + (shape.files - initial) * c / shape.commits;
            while paths.len() < due {
                let i = paths.len();
                paths.push(text_path(i, text.word(&mut rng)));
                files.push(text.file(&mut rng, shape.mean_lines));
                changed.push(i);
            }
            for _ in 0..rng.usize(1..=shape.max_edits) {
                // A few files are edited far more often than the rest, as in real repos.
                let u = rng.f64();
                let f = ((u * u * files.len() as f64) as usize * 7919) % files.len();
                let lines = &mut files[f];
                for _ in 0..rng.usize(1..=5) {
                    let at = rng.usize(..=lines.len());
                    let n = rng.usize(1..=10);
                    match rng.u8(0..3) {
                        0 if lines.len() > at + n => {
                            lines.drain(at..at + n);
                        }
                        1 if lines.len() > at + n => {
                            for l in &mut lines[at..at + n] {
                                *l = text.line(&mut rng);
                            }
                        }
                        _ => {
                            let new: Vec<String> = (0..n).map(|_| text.line(&mut rng)).collect();
                            lines.splice(at..at, new);
                        }
                    }
                }
                changed.push(f);
            }
        }
        changed.sort_unstable();
        changed.dedup();
        for f in changed {
            writeln!(w, "M 100644 inline {}", paths[f]).unwrap();
            data(&mut w, &render(&files[f]));
        }
        while next_binary < shape.binaries && binary_at(next_binary) == c {
            rng.fill(&mut binary);
            writeln!(w, "M 100644 inline assets/blob-{}.bin", next_binary % 4).unwrap();
            data(&mut w, &binary);
            next_binary += 1;
        }
        w.write_all(b"\n").unwrap();
        if c % 300 == 299 {
            writeln!(
                w,
                "tag v{}.{}\nfrom :{}\ntagger Release <release@example.com> {ts} +0000",
                c / 3000,
                c / 300 % 10,
                c + 1
            )
            .unwrap();
            data(&mut w, format!("release {}\n", c / 300).as_bytes());
        }
        if c % 1500 == 1499 {
            writeln!(
                w,
                "reset refs/heads/release-{}\nfrom :{}\n",
                c / 1500,
                c + 1
            )
            .unwrap();
        }
    }
    w.write_all(b"done\n").unwrap();
    drop(w);
    assert!(child.wait().unwrap().success(), "git fast-import failed");
}

/// Puts the generated repo in place of the (empty) one `compile` made on `server`: its packs,
/// refs, HEAD and attributes; compile's hooks and config stay.
fn place(generated: &Path, server: &Server, repo: &str) {
    let dst = server.repo_path(repo);
    assert!(dst.join("hooks").is_dir(), "compile did not make {repo}");
    let pack = dst.join("objects/pack");
    let _ = fs::remove_dir_all(&pack);
    fs::create_dir_all(&pack).unwrap();
    for e in fs::read_dir(generated.join("objects/pack"))
        .unwrap()
        .flatten()
    {
        fs::copy(e.path(), pack.join(e.file_name())).unwrap();
    }
    let _ = fs::remove_dir_all(dst.join("refs/heads"));
    let _ = fs::remove_dir_all(dst.join("refs/tags"));
    fs::create_dir_all(dst.join("refs/heads")).unwrap();
    fs::create_dir_all(dst.join("refs/tags")).unwrap();
    fs::create_dir_all(dst.join("info")).unwrap();
    for f in ["packed-refs", "HEAD", "info/attributes"] {
        fs::copy(generated.join(f), dst.join(f)).unwrap();
    }
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", server.user.uid, server.user.gid))
        .arg(&dst))
    .ok();
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn is_pack_objects(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.windows(12).any(|w| w == b"pack-objects"))
}

/// Peak RSS seen while sampling: of the root process, and of the `pack-objects` processes
/// among its descendants (per process; the largest is reported).
#[derive(Debug, Default)]
struct Peaks {
    root_kib: u64,
    pack_objects: HashMap<u32, u64>,
}

impl Peaks {
    fn pack_objects_kib(&self) -> u64 {
        self.pack_objects.values().copied().max().unwrap_or(0)
    }
}

struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Peaks>,
}

impl Sampler {
    /// Samples every 20 ms the process `root` names (it may not exist yet) and its
    /// descendants, until [`Sampler::finish`].
    fn start(root: impl Fn() -> Option<u32> + Send + 'static) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peaks = Peaks::default();
            loop {
                let last = stopped.load(Ordering::SeqCst);
                if let Some(pid) = root() {
                    if let Some(kib) = status_kib(pid, "VmHWM:") {
                        peaks.root_kib = peaks.root_kib.max(kib);
                    }
                    for p in process_tree(pid).into_iter().skip(1) {
                        if is_pack_objects(p)
                            && let Some(kib) = status_kib(p, "VmHWM:")
                        {
                            let e = peaks.pack_objects.entry(p).or_default();
                            *e = (*e).max(kib);
                        }
                    }
                }
                if last {
                    return peaks;
                }
                // A sampling interval, not a wait for anything.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Sampler { stop, thread }
    }

    /// Takes one last sample and returns the peaks.
    fn finish(self) -> Peaks {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn daemon_pid_at(pid_file: &Path) -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn fresh_plain(plain: &Server, repo: &Path) {
    let _ = fs::remove_dir_all(repo);
    run(plain
        .user
        .command("git")
        .args(["init", "-q", "--bare"])
        .arg(repo))
    .ok();
}

fn for_each_ref(cmd: &mut Command, repo: &Path) -> String {
    run(cmd
        .arg("--git-dir")
        .arg(repo)
        .args(["for-each-ref", "--format=%(objectname) %(refname)"]))
    .ok()
}

/// One run of one case.
#[derive(Debug)]
struct Run {
    gitmirror_seconds: Option<f64>,
    failure: Option<String>,
    daemon: Peaks,
    baseline_seconds: f64,
    baseline: Peaks,
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    Some(xs[xs.len() / 2])
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

fn main() {
    let o = options();
    let (cores, mem_kib) = machine();
    let mut shapes = Vec::new();
    if !o.big_only {
        shapes.push(Shape::ninety());
    }
    if !o.quick {
        shapes.push(Shape::big(o.size_mb));
    }
    let repos: Vec<Generated> = shapes.iter().map(generated).collect();
    if o.generate_only {
        for (shape, g) in shapes.iter().zip(&repos) {
            println!(
                "{}: {} ({:.0} MiB packed, {} objects; fast-import {:.1} s, repack {:.1} s{})",
                shape.name,
                g.path.display(),
                g.packed_bytes as f64 / 1048576.0,
                g.objects,
                g.fast_import_seconds,
                g.repack_seconds,
                if g.cached { ", cached" } else { "" }
            );
        }
        return;
    }
    let repo_name = |shape: &Shape, run: usize| format!("{}-r{run}", shape.name);

    eprintln!("setting up: 3 servers and a plain target");
    let cluster = Cluster::new(&["server1", "server2", "server3"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    let (s1, s2, s3) = (
        cluster.server("server1"),
        cluster.server("server2"),
        cluster.server("server3"),
    );
    let mut rules = String::from(
        "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\", \"server3\"]\n\"RW+\" = [\"alice\"]\n",
    );
    for shape in &shapes {
        for r in 0..o.runs {
            rules.push_str(&format!("[repos.\"{}\"]\n", repo_name(shape, r)));
        }
    }
    // The slaves know only that server1 masters everything: repos appear when first pushed.
    let slave_rules = "[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\", \"server3\"]\n";
    s2.set_rules(slave_rules);
    s3.set_rules(slave_rules);
    s1.set_rules(&rules);
    let (plain, plain_repo, plain_url) = plain_target(&alice);
    let pid_file = s1.home().join("state/daemon.pid");

    let mut results: Vec<Vec<Run>> = Vec::new();
    for (shape, generated) in shapes.iter().zip(&repos) {
        let mut runs = Vec::new();
        for r in 0..o.runs {
            let name = repo_name(shape, r);
            eprintln!("{name}: baseline git push --mirror");
            fresh_plain(&plain, &plain_repo);
            let mut push = Command::new("git");
            push.env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("HOME", alice.dir.path())
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_SSH_COMMAND", alice.ssh_command())
                .arg("--git-dir")
                .arg(&generated.path)
                .args(["push", "-q", "--mirror", &plain_url])
                .stdin(Stdio::null());
            let t = Instant::now();
            let child = push.spawn().unwrap();
            let child_pid = child.id();
            let sampler = Sampler::start(move || Some(child_pid));
            let out = child.wait_with_output().unwrap();
            let baseline_seconds = t.elapsed().as_secs_f64();
            let baseline = sampler.finish();
            out.ok();
            assert_eq!(
                for_each_ref(&mut plain.user.command("git"), &plain_repo),
                for_each_ref(&mut Command::new("git"), &generated.path),
                "the baseline's target lacks refs"
            );

            eprintln!("{name}: gitmirror request-push to 2 slaves");
            s1.stop_daemon();
            place(&generated.path, s1, &name);
            let daemon_pid = {
                let pid_file = pid_file.clone();
                move || daemon_pid_at(&pid_file)
            };
            let sampler = Sampler::start(daemon_pid);
            let t = Instant::now();
            let out = s1.gitmirror(&["request-push", &name]);
            let seconds = t.elapsed().as_secs_f64();
            let daemon = sampler.finish();
            // The master's log of this run, to see what a slow or failed push did.
            let logs = bench_dir().join("logs");
            fs::create_dir_all(&logs).unwrap();
            fs::write(logs.join(format!("{name}-server1.log")), s1.log()).unwrap();
            let (gitmirror_seconds, failure) = if out.status.success() {
                cluster.wait_in_sync(&name, "server1", &["server2", "server3"]);
                assert_eq!(s1.refs(&name), s2.refs(&name));
                assert_eq!(s1.refs(&name), s3.refs(&name));
                (Some(seconds), None)
            } else {
                let why = format!("{}{}", out.text(), out.err());
                eprintln!("{name}: request-push failed after {seconds:.1} s:\n{why}");
                (None, Some(why))
            };
            let run = Run {
                gitmirror_seconds,
                failure,
                daemon,
                baseline_seconds,
                baseline,
            };
            eprintln!("{name}: {run:?}");
            runs.push(run);
        }
        results.push(runs);
    }

    let mut cases = Vec::new();
    println!(
        "gitmirror big-repository benchmark ({cores} cores, {:.1} GiB; medians of {} runs)",
        mem_kib as f64 / 1048576.0,
        o.runs
    );
    println!(
        "| case | packed | objects | generated in | gitmirror, 2 slaves | git push --mirror | ratio (target <= 1.5) | daemon peak RSS (target < 64 MiB) | its pack-objects peak RSS | git push peak RSS (its pack-objects) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for ((shape, generated), runs) in shapes.iter().zip(&repos).zip(&results) {
        let gm = median(runs.iter().filter_map(|r| r.gitmirror_seconds).collect());
        let base = median(runs.iter().map(|r| r.baseline_seconds).collect()).unwrap();
        let ratio = gm.map(|g| g / base);
        let daemon_kib = runs.iter().map(|r| r.daemon.root_kib).max().unwrap();
        let pack_kib = runs
            .iter()
            .map(|r| r.daemon.pack_objects_kib())
            .max()
            .unwrap();
        let pack_count = runs
            .iter()
            .map(|r| r.daemon.pack_objects.len())
            .max()
            .unwrap();
        let push_kib = runs.iter().map(|r| r.baseline.root_kib).max().unwrap();
        let push_pack_kib = runs
            .iter()
            .map(|r| r.baseline.pack_objects_kib())
            .max()
            .unwrap();
        let failures: Vec<&String> = runs.iter().filter_map(|r| r.failure.as_ref()).collect();
        failed |= !failures.is_empty();
        let generation = if generated.cached {
            format!(
                "cached ({:.0} + {:.0} s)",
                generated.fast_import_seconds, generated.repack_seconds
            )
        } else {
            format!(
                "{:.0} + {:.0} s",
                generated.fast_import_seconds, generated.repack_seconds
            )
        };
        println!(
            "| {} | {:.0} MiB | {} | {generation} | {} | {base:.2} s | {} | {} MiB | {} | {} + {} MiB |",
            shape.name,
            generated.packed_bytes as f64 / 1048576.0,
            generated.objects,
            gm.map_or(
                format!("FAILED ({} of {})", failures.len(), runs.len()),
                |g| { format!("{g:.2} s") }
            ),
            ratio.map_or("-".to_string(), |r| format!("{r:.2}")),
            mib(daemon_kib),
            if pack_count == 0 {
                "none spawned".to_string()
            } else {
                format!("{} MiB", mib(pack_kib))
            },
            mib(push_kib),
            mib(push_pack_kib),
        );
        cases.push(serde_json::json!({
            "case": shape.name,
            "shape": {
                "files": shape.files, "commits": shape.commits, "mean_lines": shape.mean_lines,
                "max_edits": shape.max_edits, "binaries": shape.binaries,
                "binary_mib": shape.binary_mib, "seed": shape.seed, "key": shape.key(),
            },
            "packed_mib": generated.packed_bytes as f64 / 1048576.0,
            "objects": generated.objects,
            "generation": {
                "cached": generated.cached,
                "fast_import_seconds": generated.fast_import_seconds,
                "repack_seconds": generated.repack_seconds,
            },
            "runs": runs.len(),
            "gitmirror_seconds": gm,
            "baseline_seconds": base,
            "ratio": ratio,
            "failures": failures,
            "daemon_peak_rss_mib": mib(daemon_kib),
            "daemon_pack_objects_processes": pack_count,
            "daemon_pack_objects_peak_rss_mib": mib(pack_kib),
            "baseline_git_push_peak_rss_mib": mib(push_kib),
            "baseline_pack_objects_peak_rss_mib": mib(push_pack_kib),
            "all_runs": runs.iter().map(|r| serde_json::json!({
                "gitmirror_seconds": r.gitmirror_seconds,
                "baseline_seconds": r.baseline_seconds,
                "daemon_peak_rss_mib": mib(r.daemon.root_kib),
                "daemon_pack_objects_peak_rss_mib": mib(r.daemon.pack_objects_kib()),
                "baseline_pack_objects_peak_rss_mib": mib(r.baseline.pack_objects_kib()),
            })).collect::<Vec<_>>(),
        }));
    }
    let results = serde_json::json!({
        "machine": { "cores": cores, "memory_gib": (mem_kib as f64 / 1048576.0 * 10.0).round() / 10.0 },
        "cases": cases,
    });
    let out = bench_dir();
    fs::create_dir_all(&out).unwrap();
    fs::write(
        out.join("big.json"),
        serde_json::to_string_pretty(&results).unwrap(),
    )
    .unwrap();
    println!("{results}");
    drop(plain);
    drop(alice);
    drop(cluster);
    if failed {
        eprintln!("some mirror pushes failed (see above)");
        std::process::exit(1);
    }
}
