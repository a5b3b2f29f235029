//! The `verify` exchange between a master and one slave, printed and parsed in one place.
//!
//! The master runs the peer verb `verify` on the slave and writes one line per repo it
//! masters there, `DIGEST REPO`, then closes stdin. The slave answers one line per repo, in
//! any order, then `end`:
//!
//! - `ok REPO`: its digest of the repo's refs and HEAD is the master's.
//! - `drifted REPO HEAD OID:NAME...`: it differs; the slave's HEAD target (`-` for none) and
//!   every ref with its value, so the master can say which refs differ without asking again.
//!   Ref names never hold a space or a colon (git refuses them), so the line is unambiguous.
//! - `missing REPO`: the slave has no such repo, and its own rules make the asking peer its
//!   master (so a push would create it).
//! - `refused REPO WORDS`: the slave does not take this repo from the asking peer.
//!
//! The master accepts an answer only whole: every line well formed and ending in a newline,
//! every repo it asked about answered once and nothing else, `end` last. Anything else is
//! garbage, and nothing is concluded from it.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::refs::{is_oid, valid_name};
use crate::names::RepoName;
use crate::replicate::ref_state::RefState;
use crate::text::one_line;

/// Longest request a slave reads: far more than 10,000 repos' lines.
pub(crate) const MAX_REQUEST: usize = 64 << 20;

/// The verb, as the peer shell knows it.
pub(crate) const VERB: &str = crate::proto::VERIFY_VERB;

/// What a slave says about one repo.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SlaveAnswer {
    Same,
    /// Its refs and HEAD (a [`RefState`] with nothing skipped).
    Drifted(RefState),
    Missing,
    Refused(String),
}

/// A request or an answer that is not this protocol, and where.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum WireError {
    #[error("the answer is not UTF-8")]
    NotUtf8,
    #[error("the answer stops before its end (last line: {0:?})")]
    Truncated(String),
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    #[error("no answer for {count} repo(s), {first} the first")]
    Unanswered { count: usize, first: RepoName },
    #[error("the request is larger than {MAX_REQUEST} bytes")]
    TooLarge,
}

fn at(line: usize, why: impl Into<String>) -> WireError {
    WireError::Line {
        line,
        why: why.into(),
    }
}

/// The master's request: one line per repo with its digest.
pub(crate) fn request(repos: &[(RepoName, String)]) -> String {
    repos.iter().map(|(r, d)| format!("{d} {r}\n")).collect()
}

/// Parses a master's request on the slave: each line `DIGEST REPO`, each repo once.
pub(crate) fn parse_request(input: &[u8]) -> Result<Vec<(RepoName, String)>, WireError> {
    if input.len() > MAX_REQUEST {
        return Err(WireError::TooLarge);
    }
    let text = std::str::from_utf8(input).map_err(|_| WireError::NotUtf8)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let (digest, repo) = line
            .split_once(' ')
            .ok_or_else(|| at(n, "expected DIGEST REPO"))?;
        if !is_oid(digest) {
            return Err(at(n, format!("{:?} is not a digest", short(digest))));
        }
        let repo = RepoName::parse(repo).map_err(|e| at(n, e.to_string()))?;
        if !seen.insert(repo.clone()) {
            return Err(at(n, format!("{repo} asked twice")));
        }
        out.push((repo, digest.to_string()));
    }
    Ok(out)
}

/// One line of the slave's answer, newline included.
pub(crate) fn answer_line(repo: &RepoName, answer: &SlaveAnswer) -> String {
    match answer {
        SlaveAnswer::Same => format!("ok {repo}\n"),
        SlaveAnswer::Missing => format!("missing {repo}\n"),
        SlaveAnswer::Refused(words) => format!("refused {repo} {}\n", one_line(words)),
        SlaveAnswer::Drifted(state) => {
            let mut line = format!("drifted {repo} {}", state.head.as_deref().unwrap_or("-"));
            for (name, oid) in &state.refs {
                line.push_str(&format!(" {oid}:{name}"));
            }
            line.push('\n');
            line
        }
    }
}

/// The line that ends a whole answer.
pub(crate) const END: &str = "end\n";

/// Parses a slave's whole answer to a request about `asked`, strictly (see the module).
pub(crate) fn parse_answer(
    output: &[u8],
    asked: &[RepoName],
) -> Result<BTreeMap<RepoName, SlaveAnswer>, WireError> {
    let text = std::str::from_utf8(output).map_err(|_| WireError::NotUtf8)?;
    let asked: BTreeSet<&RepoName> = asked.iter().collect();
    let mut answers = BTreeMap::new();
    let mut lines = text.split_inclusive('\n').enumerate();
    let mut ended = false;
    for (i, line) in lines.by_ref() {
        let n = i + 1;
        let Some(line) = line.strip_suffix('\n') else {
            return Err(WireError::Truncated(short(line)));
        };
        if line == END.trim_end() {
            ended = true;
            break;
        }
        let (repo, answer) = parse_line(line).map_err(|why| at(n, why))?;
        if !asked.contains(&repo) {
            return Err(at(n, format!("{repo} was not asked about")));
        }
        if answers.insert(repo.clone(), answer).is_some() {
            return Err(at(n, format!("{repo} answered twice")));
        }
    }
    if !ended {
        return Err(WireError::Truncated(
            text.lines().last().map(short).unwrap_or_default(),
        ));
    }
    if let Some((i, extra)) = lines.next() {
        return Err(at(
            i + 1,
            format!("{:?} after the end", short(extra.trim_end())),
        ));
    }
    let unanswered: Vec<&&RepoName> = asked
        .iter()
        .filter(|r| !answers.contains_key(**r))
        .collect();
    if let Some(first) = unanswered.first() {
        return Err(WireError::Unanswered {
            count: unanswered.len(),
            first: (**first).clone(),
        });
    }
    Ok(answers)
}

/// One answer line (without its newline), or why it is not one.
fn parse_line(line: &str) -> Result<(RepoName, SlaveAnswer), String> {
    let mut words = line.split(' ');
    let verb = words.next().unwrap_or("");
    let repo = match words.next() {
        Some(r) => RepoName::parse(r).map_err(|e| e.to_string())?,
        None => return Err(format!("unknown answer {:?}", short(line))),
    };
    let answer = match verb {
        "ok" | "missing" if words.next().is_some() => {
            return Err(format!("{verb} takes only a repo: {:?}", short(line)));
        }
        "ok" => SlaveAnswer::Same,
        "missing" => SlaveAnswer::Missing,
        "refused" => {
            let words: Vec<&str> = words.collect();
            SlaveAnswer::Refused(if words.is_empty() {
                "refused".to_string()
            } else {
                words.join(" ")
            })
        }
        "drifted" => {
            let head = match words.next() {
                Some("-") => None,
                Some(h) if valid_name(h) => Some(h.to_string()),
                Some(h) => return Err(format!("{:?} is not a HEAD target", short(h))),
                None => return Err(format!("drifted {repo} without its HEAD")),
            };
            let mut state = RefState {
                head,
                ..RefState::default()
            };
            for pair in words {
                let (oid, name) = pair
                    .split_once(':')
                    .filter(|(o, n)| is_oid(o) && valid_name(n))
                    .ok_or_else(|| format!("{:?} is not OID:REF", short(pair)))?;
                if state
                    .refs
                    .insert(name.to_string(), oid.to_string())
                    .is_some()
                {
                    return Err(format!("{name} listed twice"));
                }
            }
            SlaveAnswer::Drifted(state)
        }
        _ => return Err(format!("unknown answer {:?}", short(line))),
    };
    Ok((repo, answer))
}

/// The start of what a peer sent, enough to recognise it in an error.
fn short(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn drifted() -> SlaveAnswer {
        let mut state = RefState {
            head: Some("refs/heads/main".into()),
            ..RefState::default()
        };
        state.refs.insert("refs/heads/main".into(), A.into());
        state.refs.insert("refs/tags/v1".into(), B.into());
        SlaveAnswer::Drifted(state)
    }

    #[test]
    fn answers_round_trip() {
        let asked = [repo("a"), repo("b/c"), repo("d"), repo("e")];
        let answers = [
            SlaveAnswer::Same,
            drifted(),
            SlaveAnswer::Missing,
            SlaveAnswer::Refused(
                "server2 refuses e from server1: its master here is server3".into(),
            ),
        ];
        let mut text = String::new();
        for (r, a) in asked.iter().zip(&answers) {
            text.push_str(&answer_line(r, a));
        }
        text.push_str(END);
        let parsed = parse_answer(text.as_bytes(), &asked).unwrap();
        for (r, a) in asked.iter().zip(answers) {
            assert_eq!(parsed[r], a, "{r}");
        }
        // A drifted repo with no refs and no HEAD.
        let empty = SlaveAnswer::Drifted(RefState::default());
        let text = format!("{}{END}", answer_line(&repo("a"), &empty));
        assert_eq!(
            parse_answer(text.as_bytes(), &[repo("a")]).unwrap()[&repo("a")],
            empty
        );
    }

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let repos = vec![(repo("a"), A.to_string()), (repo("x/y"), B.to_string())];
        assert_eq!(parse_request(request(&repos).as_bytes()).unwrap(), repos);
        assert_eq!(parse_request(b"").unwrap(), vec![]);
        for bad in [
            "nodigest\n",
            "xyz a\n",
            &format!("{A} ../etc\n"),
            &format!("{A} a\n{B} a\n"),
            &format!("{A}  a\n"),
            &format!("{} a\n", "ABCDEF0123".repeat(4)),
        ] {
            assert!(parse_request(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse_request(b"\xff\n"), Err(WireError::NotUtf8));
    }

    /// Whatever a peer prints that is not a whole, well-formed answer to what was asked is
    /// refused, with an error that says where.
    #[test]
    fn garbage_is_refused() {
        let asked = [repo("a"), repo("b")];
        for (bad, expect) in [
            ("", "stops before its end"),
            ("hello\n", "line 1: unknown answer"),
            ("ok a\nok b\n", "stops before its end"),
            ("ok a\nok b\nend", "stops before its end"),
            ("ok a\nok b", "stops before its end"),
            ("ok a\nok b\nend\nok a\n", "line 4: \"ok a\" after the end"),
            ("ok a\nok a\nend\n", "line 2: a answered twice"),
            ("ok a\nok c\nend\n", "line 2: c was not asked about"),
            ("ok a\nend\n", "no answer for 1 repo(s), b the first"),
            ("ok a extra\nok b\nend\n", "line 1: ok takes only a repo"),
            ("ok ../x\nok b\nend\n", "line 1: "),
            ("ok\nend\n", "line 1: unknown answer"),
            (
                "ok a\ndrifted b\nend\n",
                "line 2: drifted b without its HEAD",
            ),
            (
                "ok a\ndrifted b HEAD\nend\n",
                "line 2: \"HEAD\" is not a HEAD target",
            ),
            (
                "ok a\ndrifted b - 1234:refs/heads/x\nend\n",
                "is not OID:REF",
            ),
            (
                &format!("ok a\ndrifted b - {A}:refs/heads/a..b\nend\n"),
                "is not OID:REF",
            ),
            (
                &format!("ok a\ndrifted b - {A}:refs/x {B}:refs/x\nend\n"),
                "refs/x listed twice",
            ),
            ("OK a\nok b\nend\n", "line 1: unknown answer"),
            ("ok a\r\nok b\nend\n", "line 1: "),
        ] {
            let err = parse_answer(bad.as_bytes(), &asked)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{bad:?}: {err}");
            assert!(!err.contains('\n'), "{err:?}");
        }
        assert_eq!(parse_answer(b"ok a\xff\n", &asked), Err(WireError::NotUtf8));
    }
}
