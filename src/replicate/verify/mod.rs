//! Verify: asking each slave what its copies hold and comparing with this master's, to find
//! drift no push announced (a slave restored from a backup, a ref changed by hand, a repo
//! gone), which the recorded confirmations cannot see.
//!
//! One request per slave for all the repos it mirrors from here ([`wire`]); a digest per repo
//! ([`refs`]), and the full ref list only for the repos whose digest differs. What was found
//! and repaired last is kept for `status` ([`record`]).

pub(crate) mod record;
pub(crate) mod refs;
pub(crate) mod wire;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use super::mastered::{Mastered, NotMastered};
use super::push_error::remote_words;
use super::ref_state::RefState;
use crate::names::{AccountName, RepoName};
use crate::repo::mastership;
use crate::ssh::Pool;
use crate::text::{one_line, with_sources};
use wire::{SlaveAnswer, WireError};

/// One way a slave's copy differs from the master's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefDiff {
    Head {
        master: Option<String>,
        slave: Option<String>,
    },
    Changed {
        name: String,
        master: String,
        slave: String,
    },
    /// The master has it, the slave does not.
    Missing { name: String, master: String },
    /// The slave has it, the master does not.
    Extra { name: String, slave: String },
}

impl RefDiff {
    fn words(&self, slave: &AccountName) -> String {
        let head = |h: &Option<String>| h.clone().unwrap_or_else(|| "(none)".into());
        match self {
            RefDiff::Head { master, slave: s } => {
                format!("HEAD master={} {slave}={}", head(master), head(s))
            }
            RefDiff::Changed {
                name,
                master,
                slave: s,
            } => format!("{name} master={master} {slave}={s}"),
            RefDiff::Missing { name, master } => {
                format!("{name} missing on {slave} (master={master})")
            }
            RefDiff::Extra { name, slave: s } => format!("{name} extra on {slave} ({slave}={s})"),
        }
    }
}

/// What verify found for one repo on one slave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    Drifted(Vec<RefDiff>),
    Missing,
    /// The slave does not take this repo from this master, in its words.
    Refused(String),
    /// The slave could not be asked, or its answer was not one.
    Unreachable(String),
    /// This server could not read its own copy.
    Local(String),
}

impl Verdict {
    /// The one word for it, as printed and recorded.
    pub(crate) fn state(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Drifted(_) => "drifted",
            Verdict::Missing => "missing",
            Verdict::Refused(_) => "refused",
            Verdict::Unreachable(_) => "unreachable",
            Verdict::Local(_) => "error",
        }
    }

    /// The details, on one line (empty for `ok` and `missing`).
    pub(crate) fn words(&self, slave: &AccountName) -> String {
        match self {
            Verdict::Ok | Verdict::Missing => String::new(),
            Verdict::Drifted(diffs) => diffs
                .iter()
                .map(|d| d.words(slave))
                .collect::<Vec<_>>()
                .join("; "),
            Verdict::Refused(w) | Verdict::Unreachable(w) | Verdict::Local(w) => one_line(w),
        }
    }

    /// Whether a mirror push fixes it.
    pub(crate) fn repairable(&self) -> bool {
        matches!(self, Verdict::Drifted(_) | Verdict::Missing)
    }
}

/// One repo on one slave.
#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub(crate) repo: RepoName,
    pub(crate) slave: AccountName,
    pub(crate) verdict: Verdict,
}

/// This server's copy of one repo: where, its state and digest, or why it cannot be read.
struct Local {
    path: PathBuf,
    read: Result<(RefState, String), String>,
}

/// Verifies every repo this server masters (or `only`) on each of its slaves: one request per
/// slave, all slaves at once. Fails only when `only` is not mastered here.
pub(crate) async fn run(
    mastered: &Mastered,
    pool: &Pool,
    only: Option<&RepoName>,
) -> Result<Vec<Finding>, NotMastered> {
    let (mastered_c, only_c) = (mastered.clone(), only.cloned());
    // Listing repos, reading their settings and refs is disk work: off the async workers.
    let (repos, locals) = match tokio::task::spawn_blocking(move || {
        read_locals(&mastered_c, only_c.as_ref())
    })
    .await
    {
        Ok(listed) => listed?,
        Err(e) => {
            warn!(error = %e, "cannot list this server's repos to verify");
            return Ok(Vec::new());
        }
    };
    let mut findings = Vec::new();
    let mut per_slave: BTreeMap<AccountName, Vec<(RepoName, String)>> = BTreeMap::new();
    for (repo, slaves) in repos {
        let Some(local) = locals.get(&repo) else {
            continue;
        };
        for slave in slaves {
            match &local.read {
                Ok((_, digest)) => per_slave
                    .entry(slave)
                    .or_default()
                    .push((repo.clone(), digest.clone())),
                Err(why) => findings.push(Finding {
                    repo: repo.clone(),
                    slave,
                    verdict: Verdict::Local(why.clone()),
                }),
            }
        }
    }
    let locals = Arc::new(locals);
    let asked = per_slave.into_iter().map(|(slave, repos)| {
        let locals = locals.clone();
        let this = mastered.this().clone();
        async move { verify_slave(pool, &this, &slave, repos, locals).await }
    });
    for found in join_all(asked).await {
        findings.extend(found);
    }
    findings.sort_by(|a, b| (&a.repo, &a.slave).cmp(&(&b.repo, &b.slave)));
    Ok(findings)
}

/// The repos to verify with their slaves, and this server's copy of each.
type Listed = (Vec<(RepoName, Vec<AccountName>)>, HashMap<RepoName, Local>);

fn read_locals(mastered: &Mastered, only: Option<&RepoName>) -> Result<Listed, NotMastered> {
    let repos = match only {
        Some(repo) => {
            let (path, slaves) = mastered.slaves_of(repo)?;
            vec![(repo.clone(), path, slaves)]
        }
        None => mastered.mastered_repos(),
    };
    let mut names = Vec::with_capacity(repos.len());
    let mut locals = HashMap::with_capacity(repos.len());
    for (repo, path, slaves) in repos {
        let read = refs::read(&path)
            .map(|state| {
                let digest = refs::digest(&state);
                (state, digest)
            })
            .map_err(|e| format!("cannot read this server's refs of {repo}: {e}"));
        locals.insert(repo.clone(), Local { path, read });
        names.push((repo, slaves));
    }
    Ok((names, locals))
}

/// Asks one slave about `repos` and turns its answers into findings.
async fn verify_slave(
    pool: &Pool,
    this: &AccountName,
    slave: &AccountName,
    repos: Vec<(RepoName, String)>,
    locals: Arc<HashMap<RepoName, Local>>,
) -> Vec<Finding> {
    let names: Vec<RepoName> = repos.iter().map(|(r, _)| r.clone()).collect();
    let answers = match ask(pool, slave, &repos).await {
        Ok(a) => a,
        Err(why) => {
            warn!(%slave, error = %why, repos = names.len(), "cannot verify slave");
            return names
                .into_iter()
                .map(|repo| Finding {
                    repo,
                    slave: slave.clone(),
                    verdict: Verdict::Unreachable(why.clone()),
                })
                .collect();
        }
    };
    let mut findings = Vec::with_capacity(answers.len());
    for (repo, answer) in answers {
        let verdict = match answer {
            SlaveAnswer::Same => Verdict::Ok,
            // A master copy with no refs needs nothing on the slave yet: a mirror push
            // creates the slave's copy with its first ref, and repairing would push nothing.
            SlaveAnswer::Missing
                if locals
                    .get(&repo)
                    .is_some_and(|l| matches!(&l.read, Ok((ours, _)) if ours.refs.is_empty())) =>
            {
                Verdict::Ok
            }
            SlaveAnswer::Missing => Verdict::Missing,
            SlaveAnswer::Refused(words) => {
                // A slave that knows a later master: this server was replaced while away, and
                // the periodic verify is how it learns it when it has nothing to push.
                if let Some(local) = locals.get(&repo)
                    && mastership::step_down(&local.path, this, slave, &words).is_some()
                {
                    warn!(%repo, told_by = %slave, "another server was promoted to master this repo; this server is now its slave");
                }
                Verdict::Refused(words)
            }
            SlaveAnswer::Drifted(theirs) => {
                let Some(Local {
                    path,
                    read: Ok((ours, _)),
                }) = locals.get(&repo)
                else {
                    continue;
                };
                drift(path.clone(), ours, &theirs).await
            }
        };
        findings.push(Finding {
            repo,
            slave: slave.clone(),
            verdict,
        });
    }
    findings
}

/// The differences between this server's state and a slave's, leaving out the refs a mirror
/// push leaves alone (this server's refs it cannot mirror, as [`RefState::local`] finds them).
async fn drift(path: PathBuf, ours: &RefState, theirs: &RefState) -> Verdict {
    let mut diffs = compare(ours, theirs);
    if diffs.is_empty() {
        return Verdict::Ok;
    }
    let skipped = tokio::task::spawn_blocking(move || RefState::local(&path))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|s| s.skipped)
        .unwrap_or_default();
    diffs.retain(|d| match d {
        RefDiff::Head { .. } => true,
        RefDiff::Changed { name, .. }
        | RefDiff::Missing { name, .. }
        | RefDiff::Extra { name, .. } => !skipped.contains_key(name),
    });
    if diffs.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Drifted(diffs)
    }
}

/// Every difference between the master's state and a slave's, HEAD first, then by ref name.
pub(crate) fn compare(master: &RefState, slave: &RefState) -> Vec<RefDiff> {
    let mut diffs = Vec::new();
    if master.head != slave.head {
        diffs.push(RefDiff::Head {
            master: master.head.clone(),
            slave: slave.head.clone(),
        });
    }
    let names: std::collections::BTreeSet<&String> =
        master.refs.keys().chain(slave.refs.keys()).collect();
    for name in names {
        match (master.refs.get(name), slave.refs.get(name)) {
            (Some(m), Some(s)) if m != s => diffs.push(RefDiff::Changed {
                name: name.clone(),
                master: m.clone(),
                slave: s.clone(),
            }),
            (Some(m), None) => diffs.push(RefDiff::Missing {
                name: name.clone(),
                master: m.clone(),
            }),
            (None, Some(s)) => diffs.push(RefDiff::Extra {
                name: name.clone(),
                slave: s.clone(),
            }),
            _ => {}
        }
    }
    diffs
}

/// Most a slave's answer may hold: every ref of many big repos, but not without end.
const MAX_ANSWER: u64 = 512 << 20;

/// Runs `verify` on the slave over its connection, feeding it the request, and parses what
/// it answers. `Err` says, in one line, why there is no answer to trust.
async fn ask(
    pool: &Pool,
    slave: &AccountName,
    repos: &[(RepoName, String)],
) -> Result<BTreeMap<RepoName, SlaveAnswer>, String> {
    let conn = pool.get(slave).await.map_err(|e| e.to_string())?;
    let names: Vec<RepoName> = repos.iter().map(|(r, _)| r.clone()).collect();
    let input = wire::request(repos);
    let limit = conn.io_timeout();
    let _slot = conn.owned_slot().await;
    let session = conn.session();
    let exchange = async {
        let mut child = session
            .command(wire::VERB)
            .stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped())
            .spawn()
            .await
            .map_err(|e| format!("cannot ask {slave}: {}", one_line(&with_sources(&e))))?;
        let stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        let write = async move {
            if let Some(mut stdin) = stdin {
                // A slave that refuses stops reading: what it says on stderr tells why.
                let _ = stdin.write_all(input.as_bytes()).await;
                let _ = stdin.shutdown().await;
            }
        };
        let read_out = async move {
            let mut out = Vec::new();
            if let Some(s) = stdout {
                s.take(MAX_ANSWER).read_to_end(&mut out).await.map(|_| out)
            } else {
                Ok(out)
            }
        };
        let read_err = async move {
            let mut err = Vec::new();
            if let Some(s) = stderr {
                let _ = s.take(64 << 10).read_to_end(&mut err).await;
            }
            err
        };
        let ((), out, err) = tokio::join!(write, read_out, read_err);
        let out = out.map_err(|e| format!("lost {slave}'s answer to verify: {e}"))?;
        let status = child
            .wait()
            .await
            .map_err(|e| format!("lost {slave}'s answer to verify: {}", with_sources(&e)))?;
        if !status.success() {
            let words = remote_words(&String::from_utf8_lossy(&err));
            return Err(format!("{slave} refused verify: {words}"));
        }
        Ok(out)
    };
    let out = match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(format!(
                "{slave} did not answer verify within {}",
                humantime::format_duration(Duration::from_secs(limit.as_secs()))
            ));
        }
    };
    debug!(%slave, repos = names.len(), bytes = out.len(), "verify answered");
    wire::parse_answer(&out, &names)
        .map_err(|e: WireError| format!("{slave} answered garbage to verify: {e}"))
}

/// How a slave's peer session sees one repo it is asked about.
pub(crate) enum Here {
    /// It has the repo, and the asking peer masters it with this server as a slave.
    Repo(PathBuf),
    /// It has no such repo, and its rules say a push from the asking peer would create it.
    Missing,
    /// It does not take the repo from the asking peer, and why.
    Refused(String),
}

/// The slave's side: answers a master's request (`input`), deciding for each repo with
/// `decide` whether it may answer. The whole answer, `end` included.
pub(crate) fn answer(
    input: &[u8],
    decide: impl Fn(&RepoName) -> Here,
) -> Result<String, WireError> {
    let asked = wire::parse_request(input)?;
    let mut out = String::new();
    for (repo, digest) in asked {
        let answer = match decide(&repo) {
            Here::Missing => SlaveAnswer::Missing,
            Here::Refused(why) => SlaveAnswer::Refused(why),
            Here::Repo(path) => match refs::read(&path) {
                Ok(state) if refs::digest(&state) == digest => SlaveAnswer::Same,
                Ok(state) => SlaveAnswer::Drifted(state),
                Err(e) => SlaveAnswer::Refused(format!("cannot read its refs of {repo}: {e}")),
            },
        };
        out.push_str(&wire::answer_line(&repo, &answer));
    }
    out.push_str(wire::END);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(head: Option<&str>, refs: &[(&str, &str)]) -> RefState {
        RefState {
            head: head.map(str::to_string),
            refs: refs
                .iter()
                .map(|(n, o)| (n.to_string(), o.to_string()))
                .collect(),
            ..RefState::default()
        }
    }

    #[test]
    fn compare_names_every_difference() {
        let master = state(
            Some("refs/heads/main"),
            &[
                ("refs/heads/main", "a"),
                ("refs/heads/gone", "b"),
                ("refs/tags/t", "c"),
            ],
        );
        let slave = state(
            Some("refs/heads/old"),
            &[
                ("refs/heads/main", "z"),
                ("refs/heads/new", "y"),
                ("refs/tags/t", "c"),
            ],
        );
        let slave_name = AccountName::parse("server2").unwrap();
        let words: Vec<String> = compare(&master, &slave)
            .iter()
            .map(|d| d.words(&slave_name))
            .collect();
        assert_eq!(
            words,
            [
                "HEAD master=refs/heads/main server2=refs/heads/old",
                "refs/heads/gone missing on server2 (master=b)",
                "refs/heads/main master=a server2=z",
                "refs/heads/new extra on server2 (server2=y)",
            ]
        );
        assert!(compare(&master, &master).is_empty());
    }

    #[test]
    fn the_slave_answers_by_digest_and_by_what_it_decides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.git");
        let repo = git2::Repository::init_bare(&path).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = repo
            .find_tree(repo.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        repo.commit(Some("refs/heads/main"), &sig, &sig, "m", &tree, &[])
            .unwrap();
        repo.set_head("refs/heads/main").unwrap();
        let ours = refs::read(&path).unwrap();
        let digest = refs::digest(&ours);
        let other = "0".repeat(40);
        let input = format!("{digest} a\n{other} b\n{digest} c\n{digest} d\n");
        let text = answer(input.as_bytes(), |r| match r.as_str() {
            "a" | "b" => Here::Repo(path.clone()),
            "c" => Here::Missing,
            _ => Here::Refused("not mirrored here".into()),
        })
        .unwrap();
        let names: Vec<RepoName> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| RepoName::parse(n).unwrap())
            .collect();
        let parsed = wire::parse_answer(text.as_bytes(), &names).unwrap();
        assert_eq!(parsed[&names[0]], SlaveAnswer::Same);
        assert_eq!(parsed[&names[1]], SlaveAnswer::Drifted(ours));
        assert_eq!(parsed[&names[2]], SlaveAnswer::Missing);
        assert_eq!(
            parsed[&names[3]],
            SlaveAnswer::Refused("not mirrored here".into())
        );
        assert!(answer(b"garbage\n", |_| Here::Missing).is_err());
    }
}
