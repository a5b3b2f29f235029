//! A master daemon's mirror push of a repo this slave does not have yet: the forced command
//! answers git's receive-pack protocol itself, for a repo that is empty by definition, builds
//! the repo in a staging directory, and renames it into place only once the pack is checked
//! and stored and the refs and HEAD are set. The repo appears on this server complete, or not
//! at all.
//!
//! Why not receive-pack, as for a repo that exists ([`super::mirror_receive`]): for an empty
//! repo its work reduces to running the unpacker, and it costs three git processes more per
//! repo (itself, the connectivity walk, and the alternate refs listing), which is most of
//! what a slave spends when it first receives thousands of repos. What protects the repo is
//! what receive-pack would apply: git's own unpacker checks every object and every link
//! between them (`--strict`, with the `receive.fsck.*` settings, as `receive.fsckObjects`
//! asks), with `receive.maxInputSize` and `receive.unpackLimit` honoured; ref names are held
//! to receive-pack's rules; and with nothing else in the repo a ref may only name an object
//! of the pack, so a checked pack is a connected one.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tracing::info;

use super::hook::{PushedBy, RefUpdate, admin, slave};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::proto::{DIVERGED_NS, OWN_NS, SAFE_PATH};
use crate::replicate::pkt_line::{self, BAND_DATA, FLUSH, Packet, WireError};
use crate::repo::{Placed, Staged, StoreError};

/// Why the push could not be taken at all (nothing was created).
#[derive(Debug, Error)]
pub(crate) enum FreshReceiveError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("cannot answer the master: {0}")]
    Output(#[source] io::Error),
    #[error("bad ref update from the master: {0}")]
    Command(String),
    #[error("the master ended the session before its ref updates")]
    NoCommands,
    #[error("more than {MAX_COMMANDS} ref updates in one push")]
    TooMany,
    #[error("cannot open the new repo: {0}")]
    Repo(#[source] git2::Error),
    #[error("cannot create the repo: {0}")]
    Store(#[from] StoreError),
}

/// Why the pack was not stored, in receive-pack's words where it has them (the master shows
/// them after `unpack`).
#[derive(Debug, Error)]
enum UnpackError {
    #[error("cannot read the pack header: {0}")]
    Header(#[source] io::Error),
    #[error("protocol error (pack signature mismatch detected)")]
    Signature,
    #[error("protocol error (pack version {0} unsupported)")]
    Version(u32),
    #[error("cannot start git's unpacker: {0}")]
    Start(#[source] io::Error),
    #[error("{0}")]
    Refused(String),
}

/// What we offer: what a daemon's push needs, as receive-pack words it.
const CAPABILITIES: &str =
    "report-status delete-refs side-band-64k quiet ofs-delta object-format=sha1 agent=gitmirror";

/// The object name git uses for "no object".
const ZERO: &str = "0000000000000000000000000000000000000000";

/// receive-pack's default `receive.unpackLimit`: fewer objects than this are stored loose.
const UNPACK_LIMIT: i64 = 100;

/// The most ref updates taken in one push (a repo with a million refs is not a repo).
const MAX_COMMANDS: usize = 1_000_000;

/// The most of a reason kept for one line of the report.
const REASON_CAP: usize = 1024;

/// How often the master hears from us while the unpacker and the rest work (as receive-pack
/// under `mirror-receive-pack`): its inactivity rule must not mistake work for a dead peer.
const KEEPALIVE: Duration = Duration::from_secs(crate::proto::MIRROR_KEEPALIVE_SECS);

/// A mirror push into a repo staged for it.
#[derive(Debug)]
pub(crate) struct FreshReceive {
    staged: Staged,
    home: Home,
    pusher: PushedBy,
    head: Option<String>,
}

/// One ref update as the master sent it.
struct Update {
    old: String,
    new: String,
    name: String,
}

/// What the master asked for on its first command line.
#[derive(Default)]
struct Asked {
    report: bool,
    side_band: bool,
}

impl FreshReceive {
    /// A push from `peer` into `staged`, the new copy of `repo`.
    pub(crate) fn new(
        staged: Staged,
        home: &Home,
        peer: &AccountName,
        repo: &RepoName,
        head: Option<String>,
    ) -> Self {
        FreshReceive {
            staged,
            home: home.clone(),
            pusher: PushedBy {
                peer: Some(peer.to_string()),
                repo: repo.to_string(),
                ..PushedBy::default()
            },
            head,
        }
    }

    /// Speaks receive-pack's side of the exchange on this process's stdin and stdout. Returns
    /// whether every update was taken; an error means nothing was created.
    pub(crate) fn run(self) -> Result<bool, FreshReceiveError> {
        // Unbuffered: the pack after the commands is read by git's unpacker from the same
        // descriptor, so nothing past the commands may be read here.
        let mut input = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|e| FreshReceiveError::Wire(WireError::Input(e)))?;
        let output = Arc::new(Mutex::new(io::stdout()));
        let mut ad =
            pkt_line::encode(format!("{ZERO} capabilities^{{}}\0{CAPABILITIES}\n").as_bytes());
        ad.extend_from_slice(FLUSH);
        send(&output, &ad)?;
        let (updates, asked) = read_commands(&mut input)?;
        if updates.is_empty() {
            // Nothing to take: the master's copy is empty too.
            self.place()?;
            return Ok(true);
        }
        // From here on the master waits on us: keep it hearing from us until the report.
        let keepalive = asked
            .side_band
            .then(|| Keepalive::start(Arc::clone(&output)));
        let (unpacked, results, lines) = self.take(&mut input, &updates)?;
        drop(keepalive);
        let all_ok = unpacked.is_ok() && results.iter().all(|(_, r)| r.is_ok());
        if asked.report {
            send(&output, &report(&unpacked, &results, asked.side_band))?;
        }
        // What the slave's hook would say, after the report, as under mirror_receive.
        let mut err = io::stderr();
        for l in lines {
            let _ = writeln!(err, "{l}");
        }
        Ok(all_ok)
    }

    /// Unpacks, sets the refs and HEAD, places the repo, then does the divergence step.
    /// Returns the unpack outcome, each update's result, and the lines for the master.
    #[allow(clippy::type_complexity)]
    fn take(
        self,
        input: &mut impl Read,
        updates: &[Update],
    ) -> Result<
        (
            Result<(), UnpackError>,
            Vec<(String, Result<(), String>)>,
            Vec<String>,
        ),
        FreshReceiveError,
    > {
        let unpacked = if updates.iter().any(|u| u.new != ZERO) {
            unpack(input, self.staged.path(), self.home.root())
        } else {
            Ok(())
        };
        if unpacked.is_err() {
            let results = updates
                .iter()
                .map(|u| (u.name.clone(), Err("unpacker error".to_string())))
                .collect();
            return Ok((unpacked, results, Vec::new()));
        }
        let repo =
            git2::Repository::open_bare(self.staged.path()).map_err(FreshReceiveError::Repo)?;
        let mut results: Vec<(String, Result<(), String>)> = Vec::new();
        let mut seen = HashSet::new();
        let mut taken = Vec::new();
        for u in updates {
            let result = if seen.insert(u.name.as_str()) {
                set_ref(&repo, u)
            } else {
                Err("duplicate ref update".to_string())
            };
            if result.is_ok() && u.new != ZERO {
                taken.push(u);
            }
            results.push((shown_name(&u.name), result));
        }
        drop(repo);
        // A push that brought nothing it could keep leaves nothing behind.
        if taken.is_empty() && updates.iter().any(|u| u.new != ZERO) {
            return Ok((unpacked, results, Vec::new()));
        }
        // HEAD before the repo is visible, so that no clone meets a HEAD the master lacks.
        if let Some(head) = &self.head {
            slave::apply_head(self.staged.path(), head);
        }
        let ref_updates: Vec<RefUpdate> = taken
            .iter()
            .filter_map(|u| {
                Some(RefUpdate {
                    old: git2::Oid::ZERO_SHA1,
                    new: git2::Oid::from_str(&u.new).ok()?,
                    name: u.name.clone(),
                    utf8: true,
                })
            })
            .collect();
        let (home, pusher) = (self.home.clone(), self.pusher.clone());
        let placed = self.place();
        let refused = match &placed {
            Ok(Some(_)) => None,
            Ok(None) => Some("another copy of the repo appeared here meanwhile".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = refused {
            for (_, r) in results.iter_mut() {
                if r.is_ok() {
                    *r = Err(why.clone());
                }
            }
            return Ok((unpacked, results, Vec::new()));
        }
        let mut lines = Vec::new();
        if let Ok(Some(path)) = placed {
            let peer = pusher.peer.as_deref().unwrap_or("");
            for u in &ref_updates {
                info!(actor = %peer, repo = %pusher.repo, reference = %u.name, old = %u.old, new = %u.new, "ref updated");
            }
            // Only for the repo that now stands: what the master gave is what we remember.
            lines = slave::keep_diverged(&home, &pusher, &path, &ref_updates, &[]);
            lines.extend(admin::apply_mirrored(&home, &pusher, &path, &ref_updates));
        }
        Ok((unpacked, results, lines))
    }

    /// Renames the repo into place: its path, or `None` when another creator's copy got
    /// there first.
    fn place(self) -> Result<Option<std::path::PathBuf>, StoreError> {
        let repo = self.pusher.repo.clone();
        match self.staged.place()? {
            Placed::Ours(path) => {
                info!(repo = %repo, peer = ?self.pusher.peer, "created repo for its master");
                Ok(Some(path))
            }
            Placed::Theirs(_) => Ok(None),
        }
    }
}

/// Sends an empty data packet every [`KEEPALIVE`] until dropped.
struct Keepalive {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keepalive {
    fn start(output: Arc<Mutex<io::Stdout>>) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(KEEPALIVE) {
                // A master that went away is found out by the report, not here.
                if send(&output, &pkt_line::encode(&[BAND_DATA])).is_err() {
                    break;
                }
            }
        });
        Keepalive {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Keepalive {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread; joining it means no keepalive can follow.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The report-status answer, in side-band packets when asked.
fn report(
    unpacked: &Result<(), UnpackError>,
    results: &[(String, Result<(), String>)],
    side_band: bool,
) -> Vec<u8> {
    let mut report = pkt_line::encode(
        match unpacked {
            Ok(()) => "unpack ok\n".to_string(),
            Err(e) => format!("unpack {}\n", reason(&e.to_string())),
        }
        .as_bytes(),
    );
    for (name, r) in results {
        let line = match r {
            Ok(()) => format!("ok {name}\n"),
            Err(why) => format!("ng {name} {}\n", reason(why)),
        };
        report.extend_from_slice(&pkt_line::encode(line.as_bytes()));
    }
    report.extend_from_slice(FLUSH);
    if !side_band {
        return report;
    }
    let mut out = Vec::new();
    for chunk in report.chunks(pkt_line::MAX_PACKET - 5) {
        let mut band = vec![BAND_DATA];
        band.extend_from_slice(chunk);
        out.extend_from_slice(&pkt_line::encode(&band));
    }
    out.extend_from_slice(FLUSH);
    out
}

/// A reason on one line, short enough for a packet.
fn reason(text: &str) -> String {
    let mut one = crate::text::one_line(text);
    crate::text::truncate(&mut one, REASON_CAP);
    one
}

/// A ref name as it may appear in the report and the log: a valid one as it is, anything
/// else escaped onto one line and cut short.
fn shown_name(name: &str) -> String {
    if git2::Reference::is_valid_name(name) && name.len() <= REASON_CAP {
        return name.to_string();
    }
    let mut shown: String = name.escape_debug().collect();
    crate::text::truncate(&mut shown, REASON_CAP);
    shown
}

/// The master's ref updates, up to their flush.
fn read_commands(input: &mut impl Read) -> Result<(Vec<Update>, Asked), FreshReceiveError> {
    let mut updates = Vec::new();
    let mut asked = Asked::default();
    loop {
        let data = match pkt_line::read_blocking(input) {
            Ok(Packet::Flush) => break,
            Ok(Packet::Data(d)) => d,
            // Only an explicit flush says "nothing to push"; a session cut short says
            // nothing, and creates nothing.
            Err(WireError::Ended) if updates.is_empty() => {
                return Err(FreshReceiveError::NoCommands);
            }
            Err(e) => return Err(e.into()),
        };
        if updates.len() >= MAX_COMMANDS {
            return Err(FreshReceiveError::TooMany);
        }
        let data = pkt_line::text(&data);
        let (line, caps) = match data.iter().position(|b| *b == 0) {
            Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
            None => (data, None),
        };
        if let Some(caps) = caps.filter(|_| updates.is_empty()) {
            for cap in caps.split(|b| *b == b' ') {
                match cap {
                    b"report-status" => asked.report = true,
                    b"side-band-64k" => asked.side_band = true,
                    _ => {}
                }
            }
        }
        let shown = || {
            let text = String::from_utf8_lossy(line);
            let mut s: String = text.escape_debug().collect();
            crate::text::truncate(&mut s, 200);
            s
        };
        let line = std::str::from_utf8(line).map_err(|_| FreshReceiveError::Command(shown()))?;
        let mut parts = line.splitn(3, ' ');
        let (Some(old), Some(new), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(FreshReceiveError::Command(shown()));
        };
        let is_oid = |s: &str| s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_oid(old) || !is_oid(new) {
            return Err(FreshReceiveError::Command(shown()));
        }
        updates.push(Update {
            old: old.to_ascii_lowercase(),
            new: new.to_ascii_lowercase(),
            name: name.to_string(),
        });
    }
    Ok((updates, asked))
}

/// Takes one update into the new repo, or says why not, in receive-pack's words.
fn set_ref(repo: &git2::Repository, u: &Update) -> Result<(), String> {
    // receive-pack's rule: a valid name under refs/ with at least two levels below it.
    let below = u.name.strip_prefix("refs/").unwrap_or("");
    if !below.contains('/') || !git2::Reference::is_valid_name(&u.name) {
        return Err("funny refname".into());
    }
    // Hidden from peers (transfer.hideRefs) here, so never theirs to write.
    if u.name.starts_with(DIVERGED_NS) {
        return Err("deny updating a hidden ref".into());
    }
    if u.old != ZERO {
        // The master believes this copy has the ref; it has none.
        return Err("stale info".into());
    }
    if u.new == ZERO {
        // Deleting what is not there: nothing to do, as receive-pack answers it.
        return Ok(());
    }
    let oid = git2::Oid::from_str(&u.new).map_err(|e| e.to_string())?;
    // The object database's word, not a parse: what the unpacker let pass under the
    // server's fsck settings stands, even where libgit2 would not parse it.
    let Ok((_, kind)) = repo.odb().and_then(|odb| odb.read_header(oid)) else {
        return Err("missing necessary objects".into());
    };
    if u.name.starts_with("refs/heads/") && kind != git2::ObjectType::Commit {
        return Err(format!(
            "non-commit object {oid} should not be used to update {}",
            u.name
        ));
    }
    let message = if u.name.starts_with(OWN_NS) {
        "gitmirror: carried from the master"
    } else {
        "gitmirror: mirrored from the master"
    };
    repo.reference(&u.name, oid, false, message)
        .map(|_| ())
        .map_err(|e| e.message().to_string())
}

/// What the repo's config (with the server's global one: `HOME` is the server's home, as
/// for receive-pack) asks of a push's unpacker.
struct UnpackSettings {
    /// `--strict=...`: `receive.fsck.<msg>` levels and `receive.fsck.skipList`.
    strict: String,
    /// `receive.maxInputSize`, when set.
    max_input: Option<i64>,
    /// `receive.unpackLimit`, else `transfer.unpackLimit`, else git's 100.
    unpack_limit: i64,
}

impl UnpackSettings {
    fn read(git_dir: &Path) -> Self {
        let config = git2::Repository::open_bare(git_dir)
            .and_then(|r| r.config())
            .and_then(|mut c| c.snapshot());
        let mut levels = Vec::new();
        let (mut max_input, mut unpack_limit) = (None, None);
        let mut transfer_limit = None;
        if let Ok(config) = &config {
            if let Ok(mut entries) = config.entries(Some("receive\\.fsck\\..*")) {
                while let Some(Ok(e)) = entries.next() {
                    let (Ok(name), Ok(value)) = (e.name(), e.value()) else {
                        continue;
                    };
                    let msg = name["receive.fsck.".len().min(name.len())..].to_ascii_lowercase();
                    // Words only: they go on a command line as `msg=level`.
                    let word = |s: &str| {
                        !s.is_empty()
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                    };
                    if msg == "skiplist" {
                        if !value.contains([',', '=']) {
                            levels.push(format!("skiplist={value}"));
                        }
                    } else if word(&msg) && word(value) {
                        levels.push(format!("{msg}={}", value.to_ascii_lowercase()));
                    }
                }
            }
            max_input = config
                .get_i64("receive.maxInputSize")
                .ok()
                .filter(|n| *n > 0);
            unpack_limit = config.get_i64("receive.unpackLimit").ok();
            transfer_limit = config.get_i64("transfer.unpackLimit").ok();
        }
        UnpackSettings {
            strict: if levels.is_empty() {
                "--strict".into()
            } else {
                format!("--strict={}", levels.join(","))
            },
            max_input,
            unpack_limit: unpack_limit.or(transfer_limit).unwrap_or(UNPACK_LIMIT),
        }
    }
}

/// Stores the pack that follows on `input` in the repo at `git_dir` with git's own unpacker,
/// checking every object and link, as receive-pack runs it.
fn unpack(input: &mut impl Read, git_dir: &Path, home: &Path) -> Result<(), UnpackError> {
    let mut header = [0u8; 12];
    input.read_exact(&mut header).map_err(UnpackError::Header)?;
    if &header[..4] != b"PACK" {
        return Err(UnpackError::Signature);
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if version != 2 && version != 3 {
        return Err(UnpackError::Version(version));
    }
    let settings = UnpackSettings::read(git_dir);
    let pack_header = format!("--pack_header={version},{count}");
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .env("HOME", home)
        .arg("--git-dir")
        .arg(git_dir);
    if i64::from(count) < settings.unpack_limit {
        cmd.args(["unpack-objects", "-q", &settings.strict, &pack_header]);
    } else {
        cmd.args(["index-pack", "--stdin", &settings.strict, &pack_header]);
    }
    if let Some(max) = settings.max_input {
        cmd.arg(format!("--max-input-size={max}"));
    }
    // The rest of the pack is read by git straight from our stdin.
    let out = cmd
        .stdin(Stdio::inherit())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(UnpackError::Start)?;
    if out.status.success() {
        return Ok(());
    }
    let words = reason(&String::from_utf8_lossy(&out.stderr));
    Err(UnpackError::Refused(if words.is_empty() {
        format!("git's unpacker failed ({})", out.status)
    } else {
        words
    }))
}

/// Writes and flushes `bytes` to the master, whole (the keepalive thread shares the stream).
fn send(output: &Mutex<io::Stdout>, bytes: &[u8]) -> Result<(), FreshReceiveError> {
    let stdout = output.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = stdout.lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(FreshReceiveError::Output)
}
