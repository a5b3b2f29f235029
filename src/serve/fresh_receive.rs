//! A master daemon's mirror push of a repo this slave does not have yet: the forced command
//! answers git's receive-pack protocol itself, for a repo that is empty by definition, builds
//! the repo in a staging directory, and renames it into place only once the pack is checked
//! and stored and the refs are set. The repo appears on this server complete, or not at all.
//!
//! Why not receive-pack, as for a repo that exists ([`super::mirror_receive`]): for an empty
//! repo its work reduces to running the unpacker, and it costs three git processes more per
//! repo (itself, the connectivity walk, and the alternate refs listing), which is most of
//! what a slave spends when it first receives thousands of repos. What protects the repo is
//! unchanged: git's own unpacker checks every object and every link between them (`--strict`,
//! which is what `receive.fsckObjects` asks of it), and with nothing else in the repo a ref
//! may only name an object of the pack, so a checked pack is a connected one.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use thiserror::Error;
use tracing::info;

use super::hook::{PushedBy, RefUpdate, slave};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::proto::{OWN_NS, SAFE_PATH};
use crate::replicate::pkt_line::{self, FLUSH, Packet, WireError};
use crate::repo::{Placed, Staged, StoreError};

/// Why the push could not be taken at all (the repo was not created).
#[derive(Debug, Error)]
pub(crate) enum FreshReceiveError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("cannot answer the master: {0}")]
    Output(#[source] io::Error),
    #[error("bad ref update from the master: {0}")]
    Command(String),
    #[error("more than {MAX_COMMANDS} ref updates in one push")]
    TooMany,
    #[error("cannot create the repo: {0}")]
    Store(#[from] StoreError),
}

/// What we offer: what a daemon's push needs, as receive-pack words it.
const CAPABILITIES: &str =
    "report-status delete-refs side-band-64k quiet ofs-delta object-format=sha1 agent=gitmirror";

/// The object name git uses for "no object".
const ZERO: &str = "0000000000000000000000000000000000000000";

/// receive-pack's default `receive.unpackLimit`: fewer objects than this are stored loose.
const UNPACK_LIMIT: u32 = 100;

/// The most ref updates taken in one push (a repo with a million refs is not a repo).
const MAX_COMMANDS: usize = 1_000_000;

/// The most of the unpacker's complaint kept for the report.
const ERROR_CAP: usize = 4096;

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
        let mut output = io::stdout().lock();
        let mut ad =
            pkt_line::encode(format!("{ZERO} capabilities^{{}}\0{CAPABILITIES}\n").as_bytes());
        ad.extend_from_slice(FLUSH);
        send(&mut output, &ad)?;
        let (updates, asked) = read_commands(&mut input)?;
        if updates.is_empty() {
            // Nothing to take: the master's copy is empty too.
            self.place()?;
            return Ok(true);
        }
        let unpacked = if updates.iter().any(|u| u.new != ZERO) {
            unpack(&mut input, self.staged.path())
        } else {
            Ok(())
        };
        let mut results: Vec<(String, Result<(), String>)> = Vec::new();
        let mut taken = Vec::new();
        match &unpacked {
            Err(_) => {
                for u in &updates {
                    results.push((u.name.clone(), Err("unpacker error".into())));
                }
            }
            Ok(()) => {
                let repo = git2::Repository::open_bare(self.staged.path())
                    .map_err(|e| FreshReceiveError::Command(e.to_string()))?;
                for u in &updates {
                    let result = set_ref(&repo, u, &results);
                    if result.is_ok() && u.new != ZERO {
                        taken.push(u);
                    }
                    results.push((u.name.clone(), result));
                }
            }
        }
        let mut lines = Vec::new();
        if unpacked.is_ok() {
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
            let peer = self.pusher.peer.as_deref().unwrap_or("");
            for u in &ref_updates {
                info!(actor = %peer, repo = %self.pusher.repo, reference = %u.name, old = %u.old, new = %u.new, "ref updated");
            }
            lines = slave::received(
                &self.home,
                &self.pusher,
                self.staged.path(),
                self.head.as_deref(),
                &ref_updates,
            );
            // Only now does the repo exist for anyone else; a push that brought nothing it
            // could keep leaves nothing behind.
            let kept_nothing = taken.is_empty() && updates.iter().any(|u| u.new != ZERO);
            let placed = if kept_nothing {
                Ok(false)
            } else {
                self.place()
            };
            let refused = match placed {
                Ok(false) if kept_nothing => None,
                Ok(true) => None,
                Ok(false) => Some("another copy of the repo appeared here meanwhile".to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = refused {
                for (_, r) in results.iter_mut() {
                    if r.is_ok() {
                        *r = Err(why.clone());
                    }
                }
            }
        }
        let all_ok = unpacked.is_ok() && results.iter().all(|(_, r)| r.is_ok());
        if asked.report {
            let mut report = pkt_line::encode(
                match &unpacked {
                    Ok(()) => "unpack ok\n".to_string(),
                    Err(e) => format!("unpack {e}\n"),
                }
                .as_bytes(),
            );
            for (name, r) in &results {
                let line = match r {
                    Ok(()) => format!("ok {name}\n"),
                    Err(why) => format!("ng {name} {why}\n"),
                };
                report.extend_from_slice(&pkt_line::encode(line.as_bytes()));
            }
            report.extend_from_slice(FLUSH);
            let mut out = Vec::new();
            if asked.side_band {
                for chunk in report.chunks(pkt_line::MAX_PACKET - 5) {
                    let mut band = vec![pkt_line::BAND_DATA];
                    band.extend_from_slice(chunk);
                    out.extend_from_slice(&pkt_line::encode(&band));
                }
                out.extend_from_slice(FLUSH);
            } else {
                out = report;
            }
            send(&mut output, &out)?;
        }
        // What the slave's hook would say, after the report, as under mirror_receive.
        for l in lines {
            eprintln!("{l}");
        }
        Ok(all_ok)
    }

    /// Renames the repo into place; `false` when another creator's copy got there first.
    fn place(self) -> Result<bool, StoreError> {
        let repo = self.pusher.repo.clone();
        match self.staged.place()? {
            Placed::Ours(_) => {
                info!(repo = %repo, peer = ?self.pusher.peer, "created repo for its master");
                Ok(true)
            }
            Placed::Theirs(_) => Ok(false),
        }
    }
}

/// What the master asked for on its first command line.
#[derive(Default)]
struct Asked {
    report: bool,
    side_band: bool,
}

/// The master's ref updates, up to their flush (none when it ends the stream at once).
fn read_commands(input: &mut impl Read) -> Result<(Vec<Update>, Asked), FreshReceiveError> {
    let mut updates = Vec::new();
    let mut asked = Asked::default();
    loop {
        let data = match pkt_line::read_blocking(input) {
            Ok(Packet::Flush) => break,
            Ok(Packet::Data(d)) => d,
            Err(WireError::Ended) if updates.is_empty() => break,
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
            String::from_utf8_lossy(line)
                .chars()
                .take(200)
                .collect::<String>()
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

/// Takes one update into the new repo, or says why not (receive-pack's words where it has
/// them). `done` holds the results so far, to refuse a second update of the same ref.
fn set_ref(
    repo: &git2::Repository,
    u: &Update,
    done: &[(String, Result<(), String>)],
) -> Result<(), String> {
    if !u.name.starts_with("refs/") || !git2::Reference::is_valid_name(&u.name) {
        return Err("funny refname".into());
    }
    if done.iter().any(|(n, _)| *n == u.name) {
        return Err("duplicate ref update".into());
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
    if repo.find_object(oid, None).is_err() {
        return Err("missing necessary objects".into());
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

/// Stores the pack that follows on `input` in the repo at `git_dir` with git's own unpacker,
/// checking every object and link; on failure, why, in the unpacker's words.
fn unpack(input: &mut impl Read, git_dir: &std::path::Path) -> Result<(), String> {
    let mut header = [0u8; 12];
    input
        .read_exact(&mut header)
        .map_err(|e| format!("cannot read the pack header: {e}"))?;
    if &header[..4] != b"PACK" {
        return Err("protocol error (pack signature mismatch detected)".into());
    }
    let version = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if version != 2 && version != 3 {
        return Err(format!(
            "protocol error (pack version {version} unsupported)"
        ));
    }
    let pack_header = format!("--pack_header={version},{count}");
    let mut cmd = Command::new("git");
    cmd.env_clear()
        .env("PATH", SAFE_PATH)
        .arg("--git-dir")
        .arg(git_dir);
    if count < UNPACK_LIMIT {
        cmd.args(["unpack-objects", "-q", "--strict", &pack_header]);
    } else {
        cmd.args(["index-pack", "--stdin", "--strict", &pack_header]);
    }
    // The rest of the pack is read by git straight from our stdin.
    let out = cmd
        .stdin(Stdio::inherit())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start git's unpacker: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut words = crate::text::one_line(&String::from_utf8_lossy(&out.stderr));
    crate::text::truncate(&mut words, ERROR_CAP);
    Err(if words.is_empty() {
        format!("git's unpacker failed ({})", out.status)
    } else {
        words
    })
}

/// Writes and flushes `bytes` to the master.
fn send(output: &mut impl Write, bytes: &[u8]) -> Result<(), FreshReceiveError> {
    output
        .write_all(bytes)
        .and_then(|()| output.flush())
        .map_err(FreshReceiveError::Output)
}
