//! The client side of git's protocol with a slave, spoken by the daemon on a session of the
//! peer's connection: listing a copy's refs (upload-pack's advertisement) and pushing to it
//! (receive-pack: commands, push options, the pack, then the slave's report).
//!
//! The slave's answers are read alongside the pack being sent, so that neither side can
//! block on a full pipe, and the session is drained and its exit collected before it counts
//! as done: the slave's hook (HEAD, divergence) runs after the report.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::advertisement::{self, Advertisement};
use super::pack::{PackError, PackRequest, Packer, Sent};
use super::pkt_line::{self, BAND_DATA, BAND_ERROR, FLUSH, Packet, WireError};
use super::push_error::PushError;
use crate::names::RepoName;
use crate::proto;
use crate::ssh::Connection;
use crate::ssh::remote::{MESSAGES_CAP, Remote, RemoteIn, RemoteOut};

/// The most kept of a slave's report of ref updates (a line per ref).
const REPORT_CAP: usize = 16 * 1024 * 1024;

/// The object name git uses for "no object" (creation, deletion).
const ZERO: &str = "0000000000000000000000000000000000000000";

/// One ref update sent to a slave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    pub(crate) name: String,
    /// What the slave advertised for it, if anything.
    pub(crate) old: Option<String>,
    /// What it is to become; `None` deletes it.
    pub(crate) new: Option<String>,
}

/// What a slave answered to a push.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// Refs it rejected, with its reason.
    pub(crate) rejected: Vec<String>,
    /// Its messages (hook output), at most [`MESSAGES_CAP`].
    pub(crate) messages: String,
    /// The refs it reported a status for (`ok` or `ng`).
    pub(crate) reported: std::collections::HashSet<String>,
    /// Why it could not unpack the pack, if it could not.
    pub(crate) unpack_error: Option<String>,
    /// The pack sent, if one was.
    pub(crate) pack: Option<Sent>,
}

/// Lists the slave's copy of `repo`: its refs and HEAD, as its upload-pack advertises them.
pub(crate) async fn list(conn: &Connection, repo: &RepoName) -> Result<Advertisement, PushError> {
    let command = format!("git-upload-pack '{}'", repo.relative_dir());
    let (remote, input, mut out) = Remote::spawn(conn, &command)
        .await
        .map_err(|e| PushError::Transport(e.to_string()))?;
    let listed = advertisement::read(&mut out).await;
    // A flush ends the exchange before any negotiation.
    let ended = end_input(input, listed.is_ok()).await;
    let (_, finished) = remote.finish(Some(out)).await;
    let ad = listed.map_err(|e| failed("listing the slave's refs", e, &finished, ""))?;
    ended.map_err(|e| failed("listing the slave's refs", e, &finished, ""))?;
    Ok(ad)
}

/// Writes a flush (when the exchange got that far) and closes the remote's stdin.
async fn end_input(mut input: RemoteIn, flush: bool) -> Result<(), WireError> {
    if flush {
        input.write_all(FLUSH).await?;
    }
    input.close().await?;
    Ok(())
}

/// How the slave is asked to take a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Receiver {
    /// `mirror-receive-pack`: the slave's forced command does its hook work itself, and
    /// HEAD rides on the command line (see [`proto::MIRROR_RECEIVE_VERB`]).
    Daemon,
    /// `git-receive-pack`, as any git client pushes: for a slave that predates the daemon's
    /// verb, or a HEAD the command line cannot carry. HEAD rides as a push option.
    Git,
}

impl Receiver {
    /// The command line for `repo`, naming the epoch this server masters it at.
    fn command(self, repo: &RepoName, epoch: u64, head: Option<&str>) -> String {
        let dir = repo.relative_dir();
        match (self, head) {
            (Receiver::Daemon, Some(head)) => {
                format!("{} {epoch} '{dir}' '{head}'", proto::MIRROR_RECEIVE_VERB)
            }
            (Receiver::Daemon, None) => format!("{} {epoch} '{dir}'", proto::MIRROR_RECEIVE_VERB),
            (Receiver::Git, _) => format!("git-receive-pack '{dir}'"),
        }
    }

    /// The first choice for a push of `repo` with `head`: the slave's forced command takes a
    /// HEAD that is a valid ref name under `refs/`, in single quotes, on a command line of at
    /// most [`MAX_COMMAND_LINE`] bytes. Any other HEAD (git allows a quote in a ref name, for
    /// one) goes as a push option, which the slave's hook checks and ignores if it must.
    fn first(repo: &RepoName, head: Option<&str>) -> Self {
        let fits = |h: &str| {
            h.starts_with("refs/")
                && !h.contains('\'')
                && git2::Reference::is_valid_name(h)
                && Receiver::Daemon.command(repo, u64::MAX, Some(h)).len() <= MAX_COMMAND_LINE
        };
        match head {
            Some(h) if !fits(h) => Receiver::Git,
            _ => Receiver::Daemon,
        }
    }
}

/// The longest command line a slave's forced command takes (its own limit is 1024 bytes).
const MAX_COMMAND_LINE: usize = 1000;

/// A receive-pack session on the slave, up to its advertisement.
struct Opened {
    remote: Remote,
    input: RemoteIn,
    out: RemoteOut,
    ad: Advertisement,
    receiver: Receiver,
}

/// Starts the slave's receive-pack and reads its advertisement; falls back to plain
/// `git-receive-pack` once when the slave does not know the daemon's verb.
async fn open_receive(
    conn: &Connection,
    repo: &RepoName,
    epoch: u64,
    head: Option<&str>,
) -> Result<Opened, PushError> {
    let mut receiver = Receiver::first(repo, head);
    loop {
        let (remote, input, mut out) = Remote::spawn(conn, &receiver.command(repo, epoch, head))
            .await
            .map_err(|e| PushError::Transport(e.to_string()))?;
        match advertisement::read(&mut out).await {
            Ok(ad) => {
                return Ok(Opened {
                    remote,
                    input,
                    out,
                    ad,
                    receiver,
                });
            }
            Err(e) => {
                let _ = input.close().await;
                let (_, finished) = remote.finish(Some(out)).await;
                if receiver == Receiver::Daemon && unknown_verb(&finished.stderr) {
                    receiver = Receiver::Git;
                    continue;
                }
                return Err(failed("the slave's receive-pack", e, &finished, ""));
            }
        }
    }
}

/// Whether a slave's refusal says it does not know [`proto::MIRROR_RECEIVE_VERB`].
fn unknown_verb(stderr: &str) -> bool {
    stderr.contains("unknown command") && stderr.contains(proto::MIRROR_RECEIVE_VERB)
}

/// Pushes to the slave's copy of `repo`: `plan` decides the commands from what the slave
/// advertises (`None`: nothing to do, and the session is ended with no change). `head` is the
/// master's HEAD, for the slave to take, and `epoch` the epoch this server masters the repo
/// at (a slave that knows a later master refuses it, naming that master). Returns what was
/// sent and the slave's answer, or `None` when nothing was.
pub(crate) async fn push<F>(
    conn: &Connection,
    repo: &RepoName,
    path: &Path,
    epoch: u64,
    head: Option<&str>,
    plan: F,
) -> Result<Option<(Vec<Command>, Answer)>, PushError>
where
    F: FnOnce(&Advertisement) -> Result<Vec<Command>, PushError>,
{
    let packer = Packer::for_repo(path).await?;
    let Opened {
        remote,
        mut input,
        mut out,
        ad,
        receiver,
    } = open_receive(conn, repo, epoch, head).await?;
    let commands = match plan(&ad) {
        Ok(commands) => commands,
        Err(e) => {
            let _ = end_input(input, true).await;
            let _ = remote.finish(Some(out)).await;
            return Err(e);
        }
    };
    if commands.is_empty() {
        let ended = end_input(input, true).await;
        let (_, finished) = remote.finish(Some(out)).await;
        ended.map_err(|e| failed("ending the session", e, &finished, ""))?;
        return Ok(None);
    }
    let option_head = if receiver == Receiver::Git {
        head
    } else {
        None
    };
    let request = request(&ad, &commands, option_head)?;
    let wants: Vec<git2::Oid> = commands
        .iter()
        .filter_map(|c| c.new.as_deref())
        .filter_map(|n| git2::Oid::from_str(n).ok())
        .collect();
    let needs_pack = commands.iter().any(|c| c.new.is_some());
    let haves: Vec<git2::Oid> = ad
        .haves()
        .filter_map(|h| git2::Oid::from_str(h).ok())
        .collect();
    // While we send, the slave says nothing until it has the whole pack: our reads wait on
    // it without the inactivity rule, which our writes keep applying to the peer.
    let patience = out.patience();
    let send = async {
        patience.store(true, Ordering::SeqCst);
        let sent = async {
            input.write_all(&request).await?;
            let sent = if needs_pack {
                let request = PackRequest {
                    path: path.to_path_buf(),
                    wants,
                    haves,
                };
                Some(
                    packer
                        .send(request, &mut input)
                        .await
                        .map_err(|e| match e {
                            PackError::Local(e) => SendError::Pack(e),
                            PackError::Write(e) => SendError::Wire(WireError::Remote(e)),
                        })?,
                )
            } else {
                None
            };
            input.close().await?;
            Ok::<Option<Sent>, SendError>(sent)
        }
        .await;
        patience.store(false, Ordering::SeqCst);
        sent
    };
    let (sent, answer) = tokio::join!(send, read_answer(&mut out));
    let (_, finished) = remote.finish(Some(out)).await;
    let what = "pushing to the slave";
    let mut answer = match (sent, answer) {
        // A pack that could not be built here is our failure, whatever the slave said of the
        // cut.
        (Err(SendError::Pack(e)), _) => return Err(e),
        (_, Err(e)) => return Err(failed(what, e, &finished, "")),
        // The slave stopped reading because it refused the pack (a full disk, a size limit,
        // fsck): its answer says so, and it is its refusal, not a broken connection.
        (Err(SendError::Wire(_)), Ok(a)) if a.unpack_error.is_some() => a,
        (Err(SendError::Wire(e)), Ok(a)) => return Err(failed(what, e, &finished, &a.messages)),
        (Ok(sent), Ok(mut a)) => {
            a.pack = sent;
            a
        }
    };
    // Under the daemon's verb, the slave's hook lines come on stderr after the report.
    if receiver == Receiver::Daemon && !finished.stderr.is_empty() {
        answer.messages.push_str(&finished.stderr);
    }
    crate::text::truncate(&mut answer.messages, MESSAGES_CAP);
    if let Some(unpack) = &answer.unpack_error {
        return Err(PushError::Refused(format!(
            "the slave could not unpack: {unpack}"
        )));
    }
    // Every command must have its status, as git's send-pack demands.
    let unreported: Vec<&str> = commands
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| !answer.reported.contains(*n))
        .collect();
    if !unreported.is_empty() {
        return Err(PushError::Refused(format!(
            "the slave did not report the status of {}",
            unreported.join(", ")
        )));
    }
    // The report came, but the slave's hook (HEAD, divergence) must have run to the end.
    if finished.exited != Some(true) && answer.rejected.is_empty() {
        return Err(PushError::from_exchange(
            "the slave's receive-pack did not finish",
            Some(&finished),
            &answer.messages,
        ));
    }
    Ok(Some((commands, answer)))
}

/// Why sending failed: our pack, or the session.
enum SendError {
    Pack(PushError),
    Wire(WireError),
}

impl From<crate::ssh::remote::RemoteError> for SendError {
    fn from(e: crate::ssh::remote::RemoteError) -> Self {
        SendError::Wire(WireError::Remote(e))
    }
}

/// A failed exchange as a [`PushError`], classified by how the remote command ended.
fn failed(
    what: &str,
    e: WireError,
    finished: &crate::ssh::remote::Finished,
    messages: &str,
) -> PushError {
    match e {
        // The slave spoke, but not git's protocol: its fault, in its words.
        WireError::Malformed(m) => PushError::Refused(m),
        e => PushError::from_exchange(&format!("{what}: {e}"), Some(finished), messages),
    }
}

/// The command list (with our capabilities on the first), then the push options.
fn request(
    ad: &Advertisement,
    commands: &[Command],
    head: Option<&str>,
) -> Result<Vec<u8>, PushError> {
    // Both of our packers write offset deltas, as every git since 1.4 reads them.
    for needed in ["report-status", "side-band-64k", "ofs-delta"] {
        if !ad.offers(needed) {
            return Err(PushError::Refused(format!(
                "the slave's receive-pack does not offer {needed}"
            )));
        }
    }
    let options = head.is_some() && ad.offers("push-options");
    if head.is_some() && !options {
        return Err(PushError::Refused(
            "the slave's receive-pack does not take push options (is it compiled?)".into(),
        ));
    }
    let mut caps = vec!["report-status", "side-band-64k"];
    caps.push("ofs-delta");
    for optional in ["quiet", "delete-refs"] {
        if ad.offers(optional) {
            caps.push(optional);
        }
    }
    if options {
        caps.push("push-options");
    }
    let mut out = Vec::new();
    for (i, c) in commands.iter().enumerate() {
        let mut line = format!(
            "{} {} {}",
            c.old.as_deref().unwrap_or(ZERO),
            c.new.as_deref().unwrap_or(ZERO),
            c.name
        )
        .into_bytes();
        if i == 0 {
            line.push(0);
            line.extend_from_slice(caps.join(" ").as_bytes());
        }
        line.push(b'\n');
        if line.len() + 4 > pkt_line::MAX_PACKET {
            return Err(PushError::Refused(format!(
                "a ref name too long: {}",
                c.name
            )));
        }
        out.extend_from_slice(&pkt_line::encode(&line));
    }
    out.extend_from_slice(FLUSH);
    if let (true, Some(head)) = (options, head) {
        out.extend_from_slice(&pkt_line::encode(
            format!("{}{head}\n", crate::proto::HEAD_OPTION).as_bytes(),
        ));
        out.extend_from_slice(FLUSH);
    }
    Ok(out)
}

/// The slave's side-band stream up to its final flush: the report, its messages, and a fatal
/// error if it sent one.
async fn read_answer(out: &mut RemoteOut) -> Result<Answer, WireError> {
    let mut report = Vec::new();
    let mut messages = Vec::new();
    loop {
        let data = match pkt_line::read(out).await {
            Ok(Packet::Flush) => break,
            Ok(Packet::Data(data)) => data,
            // The stream ended without the final flush: what came is all there is.
            Err(WireError::Ended) if !report.is_empty() => break,
            Err(e) => return Err(e),
        };
        let (band, payload) = pkt_line::band(&data)?;
        match band {
            BAND_DATA => {
                if report.len() + payload.len() > REPORT_CAP {
                    return Err(WireError::Malformed("a report too long".into()));
                }
                report.extend_from_slice(payload);
            }
            BAND_ERROR => {
                return Err(WireError::Malformed(format!(
                    "an error: {}",
                    String::from_utf8_lossy(payload).trim()
                )));
            }
            _ => {
                let room = MESSAGES_CAP.saturating_sub(messages.len());
                messages.extend_from_slice(&payload[..payload.len().min(room)]);
            }
        }
    }
    let mut answer = Answer {
        messages: String::from_utf8_lossy(&messages).into_owned(),
        ..Answer::default()
    };
    parse_report(&report, &mut answer)?;
    Ok(answer)
}

/// The report-status lines: `unpack ok`, then `ok REF` or `ng REF WHY` per command.
fn parse_report(report: &[u8], answer: &mut Answer) -> Result<(), WireError> {
    let packets = pkt_line::split(report)?;
    let mut lines = packets.iter().filter_map(|p| match p {
        Packet::Data(d) => Some(String::from_utf8_lossy(pkt_line::text(d)).into_owned()),
        Packet::Flush => None,
    });
    match lines.next() {
        Some(l) if l == "unpack ok" => {}
        Some(l) if l.starts_with("unpack ") => {
            answer.unpack_error = Some(l["unpack ".len()..].to_string());
        }
        other => {
            return Err(WireError::Malformed(format!(
                "{:?} where its report was due",
                other.unwrap_or_default()
            )));
        }
    }
    for line in lines {
        if let Some(name) = line.strip_prefix("ok ") {
            answer.reported.insert(name.to_string());
            continue;
        }
        match line.strip_prefix("ng ").and_then(|r| r.split_once(' ')) {
            Some((name, why)) => {
                answer.reported.insert(name.to_string());
                answer.rejected.push(format!("{name}: {why}"));
            }
            None => return Err(WireError::Malformed(format!("{line:?} in its report"))),
        }
    }
    Ok(())
}

/// The commands that make the slave's refs equal to `local`: changed refs (forced: the old
/// value is what it advertised), and deletions of `deleted`.
pub(crate) fn commands(
    local: &BTreeMap<String, String>,
    advertised: &BTreeMap<String, String>,
    deleted: &[&String],
) -> Vec<Command> {
    let mut out: Vec<Command> = local
        .iter()
        .filter(|(n, oid)| advertised.get(*n) != Some(*oid))
        .map(|(n, oid)| Command {
            name: n.clone(),
            old: advertised.get(n).cloned(),
            new: Some(oid.clone()),
        })
        .collect();
    out.extend(deleted.iter().map(|n| Command {
        name: (*n).clone(),
        old: advertised.get(*n).cloned(),
        new: None,
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: &[&str]) -> Vec<u8> {
        let mut raw = Vec::new();
        for l in lines {
            raw.extend_from_slice(&pkt_line::encode(format!("{l}\n").as_bytes()));
        }
        raw.extend_from_slice(FLUSH);
        raw
    }

    #[test]
    fn a_report_names_what_was_rejected() {
        let mut a = Answer::default();
        parse_report(
            &report(&[
                "unpack ok",
                "ok refs/heads/a",
                "ng refs/heads/b pre-receive hook declined",
            ]),
            &mut a,
        )
        .unwrap();
        assert_eq!(a.rejected, ["refs/heads/b: pre-receive hook declined"]);
        assert!(a.reported.contains("refs/heads/a") && a.reported.contains("refs/heads/b"));
        let mut a = Answer::default();
        parse_report(&report(&["unpack index-pack abnormal exit"]), &mut a).unwrap();
        assert_eq!(a.unpack_error.as_deref(), Some("index-pack abnormal exit"));
    }

    #[test]
    fn a_garbled_report_is_refused() {
        for bad in [
            report(&[]),
            report(&["hello"]),
            report(&["unpack ok", "maybe refs/heads/a"]),
        ] {
            assert!(
                matches!(
                    parse_report(&bad, &mut Answer::default()),
                    Err(WireError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn commands_carry_the_advertised_old_values() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let local = map(&[("refs/heads/a", "1"), ("refs/heads/b", "2")]);
        let remote = map(&[
            ("refs/heads/a", "1"),
            ("refs/heads/b", "3"),
            ("refs/x", "4"),
        ]);
        let gone = "refs/x".to_string();
        let cmds = commands(&local, &remote, &[&gone]);
        assert_eq!(
            cmds,
            [
                Command {
                    name: "refs/heads/b".into(),
                    old: Some("3".into()),
                    new: Some("2".into())
                },
                Command {
                    name: "refs/x".into(),
                    old: Some("4".into()),
                    new: None
                }
            ]
        );
    }

    #[test]
    fn the_request_asks_only_for_what_was_offered() {
        let mut ad = Advertisement::default();
        let cmd = [Command {
            name: "refs/heads/a".into(),
            old: None,
            new: Some("1".repeat(40)),
        }];
        assert!(request(&ad, &cmd, None).is_err());
        ad = test_ad("report-status side-band-64k push-options delete-refs");
        assert!(request(&ad, &cmd, None).is_err(), "no ofs-delta offered");
        ad = test_ad("report-status side-band-64k ofs-delta push-options delete-refs");
        let req = String::from_utf8(request(&ad, &cmd, Some("refs/heads/a")).unwrap()).unwrap();
        assert!(req.contains("\0report-status side-band-64k ofs-delta delete-refs push-options\n"));
        let option = format!("{}refs/heads/a\n", crate::proto::HEAD_OPTION);
        assert!(req.ends_with(&format!("{:04x}{option}0000", option.len() + 4)));
    }

    fn test_ad(caps: &str) -> Advertisement {
        let mut ad = Advertisement::default();
        ad.take(format!("{ZERO} capabilities^{{}}\0{caps}").as_bytes(), true)
            .unwrap();
        ad
    }
}
