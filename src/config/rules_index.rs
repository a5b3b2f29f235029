//! The compiled rules as the shells read them: a header line with what concerns every repo
//! (groups, `@all`), then one line per named repo, sorted by name.
//!
//! Every ssh connection runs a shell that needs the rules of one repo. Parsing all of
//! `repos.toml` cost 13 ms per connection with ten thousand repos, paid by every user's
//! fetch and by every mirror push on the slave, where it was most of a bulk push's cost.
//! Here a connection reads the file, finds its repo's line by binary search, and parses two
//! lines. `compile` writes it from rules it has just validated; a reader still checks every
//! name it parses, so a damaged file is refused, never half-believed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::rules::{RepoPattern, RepoRule, Rules};
use crate::names::{AccountName, RepoName};

/// The first line: what this file is, and its format's version.
const MAGIC: &str = "gitmirror-rules 1";

/// The last line's word, before the count of repo lines.
const END: &str = "end";

/// Why an index cannot be read.
#[derive(Debug, Error)]
pub(crate) enum IndexError {
    #[error("not a compiled rules file (run gitmirror compile)")]
    NotAnIndex,
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

/// What concerns every repo: user groups and `@all`, and the tables that apply to repos by
/// group or pattern (absent from an index compiled before they existed: read as none).
#[derive(Serialize, Deserialize)]
struct Header {
    groups: BTreeMap<String, BTreeSet<AccountName>>,
    all: RepoRule,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    repo_groups: BTreeMap<String, BTreeSet<RepoName>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    group_tables: BTreeMap<String, RepoRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    patterns: Vec<(RepoPattern, RepoRule)>,
}

/// The index of `rules`.
pub(crate) fn write(rules: &Rules) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = format!("{MAGIC}\n").into_bytes();
    let header = Header {
        groups: rules.groups.clone(),
        all: rules.all.clone(),
        repo_groups: rules.repo_groups.clone(),
        group_tables: rules.group_tables.clone(),
        patterns: rules.patterns.clone(),
    };
    serde_json::to_writer(&mut out, &header)?;
    out.push(b'\n');
    // A BTreeMap of names iterates in byte order, the order the reader searches in.
    for (name, rule) in &rules.repos {
        out.extend_from_slice(name.as_str().as_bytes());
        out.push(b'\t');
        serde_json::to_writer(&mut out, rule)?;
        out.push(b'\n');
    }
    // A file cut short (at a line's end, too) is told from a whole one by this count.
    out.extend_from_slice(format!("{END} {}\n", rules.repos.len()).as_bytes());
    Ok(out)
}

/// Every rule in the index.
pub(crate) fn read_all(bytes: &[u8]) -> Result<Rules, IndexError> {
    let lines = Lines::of(bytes)?;
    let mut rules = lines.header()?;
    for i in 0..lines.repos.len() {
        let (name, rule) = lines.repo(i)?;
        rules.repos.insert(name, rule);
    }
    Ok(rules)
}

/// The rules that concern `repo`: the header's, and its own line if it has one.
pub(crate) fn read_for(bytes: &[u8], repo: &RepoName) -> Result<Rules, IndexError> {
    let lines = Lines::of(bytes)?;
    let mut rules = lines.header()?;
    let want = repo.as_str().as_bytes();
    let found = lines.repos.binary_search_by(|line| name_of(line).cmp(want));
    if let Ok(i) = found {
        let (name, rule) = lines.repo(i)?;
        rules.repos.insert(name, rule);
    }
    Ok(rules)
}

/// The index split into lines (none of them parsed yet).
struct Lines<'a> {
    header: &'a [u8],
    repos: Vec<&'a [u8]>,
}

impl<'a> Lines<'a> {
    fn of(bytes: &'a [u8]) -> Result<Self, IndexError> {
        let mut lines = bytes.split(|&b| b == b'\n');
        if lines.next() != Some(MAGIC.as_bytes()) {
            return Err(IndexError::NotAnIndex);
        }
        let header = lines.next().ok_or(IndexError::NotAnIndex)?;
        let mut repos: Vec<&[u8]> = lines.filter(|l| !l.is_empty()).collect();
        let whole = repos
            .pop()
            .and_then(|last| std::str::from_utf8(last).ok())
            .and_then(|last| last.strip_prefix(END))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .is_some_and(|n| n == repos.len());
        if !whole {
            return Err(IndexError::Line {
                line: repos.len() + 3,
                message: "the file is cut short (run gitmirror compile)".into(),
            });
        }
        // Out of order, the search would miss repos: refuse rather than deny silently.
        if let Some(i) = repos
            .windows(2)
            .position(|w| name_of(w[0]) >= name_of(w[1]))
        {
            return Err(IndexError::Line {
                line: i + 4,
                message: "repos out of order".into(),
            });
        }
        Ok(Lines { header, repos })
    }

    fn header(&self) -> Result<Rules, IndexError> {
        let header: Header = serde_json::from_slice(self.header).map_err(|e| IndexError::Line {
            line: 2,
            message: e.to_string(),
        })?;
        Ok(Rules {
            groups: header.groups,
            all: header.all,
            repo_groups: header.repo_groups,
            group_tables: header.group_tables,
            patterns: header.patterns,
            repos: BTreeMap::new(),
        })
    }

    fn repo(&self, i: usize) -> Result<(RepoName, RepoRule), IndexError> {
        let line = self.repos[i];
        let bad = |message: String| IndexError::Line {
            line: i + 3,
            message,
        };
        let name = std::str::from_utf8(name_of(line))
            .map_err(|_| bad("a repo name that is not UTF-8".into()))
            .and_then(|n| RepoName::parse(n).map_err(|e| bad(format!("repo {e}"))))?;
        let json = line
            .get(name_of(line).len() + 1..)
            .ok_or_else(|| bad("no rule after the repo name".into()))?;
        let rule = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        Ok((name, rule))
    }
}

/// The repo name a line starts with (up to its tab).
fn name_of(line: &[u8]) -> &[u8] {
    let end = line.iter().position(|&b| b == b'\t').unwrap_or(line.len());
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;

    fn rules(text: &str) -> Rules {
        Rules::from_source(&Source::from_text("repos.toml", text)).unwrap()
    }

    const TEXT: &str = r#"
[groups]
devs = ["alice", "bob"]

[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2"]
R = ["auditor"]

[repos.testing]
"RW+" = ["alice"]
RW = ["@devs"]

[repos."site-b/tools"]
R = ["@all"]
mirror.master = "server2"
mirror.slaves = ["server1"]
mirror.sync = true

[repos.site]
RW = ["carol"]
"#;

    #[test]
    fn every_repo_reads_back_as_compiled() {
        let full = rules(TEXT);
        let index = write(&full).unwrap();
        assert_eq!(read_all(&index).unwrap(), full);
        for name in ["testing", "site-b/tools", "site", "not-named"] {
            let repo = RepoName::parse(name).unwrap();
            let one = read_for(&index, &repo).unwrap();
            let alice = AccountName::parse("alice").unwrap();
            assert_eq!(
                one.access(&alice, &repo),
                full.access(&alice, &repo),
                "{name}"
            );
            assert_eq!(one.mirror(&repo), full.mirror(&repo), "{name}");
            assert!(one.named_repos().count() <= 1);
        }
    }

    #[test]
    fn an_index_compiled_before_redirect_existed_reads_it_as_unset() {
        let full = rules(TEXT);
        let index = String::from_utf8(write(&full).unwrap()).unwrap();
        assert!(index.contains(",\"redirect\":null"), "{index}");
        let old = index.replace(",\"redirect\":null", "");
        assert_eq!(read_all(old.as_bytes()).unwrap(), full);
    }

    #[test]
    fn a_damaged_index_is_refused() {
        let index = String::from_utf8(write(&rules(TEXT)).unwrap()).unwrap();
        let repo = RepoName::parse("testing").unwrap();
        let swapped = {
            let mut lines: Vec<&str> = index.lines().collect();
            lines.swap(3, 4);
            lines.join("\n")
        };
        let cut = index
            .lines()
            .filter(|l| !l.starts_with("testing\t"))
            .collect::<Vec<_>>()
            .join("\n");
        for bad in [
            String::new(),
            cut,
            index.lines().take(3).collect::<Vec<_>>().join("\n"),
            "gitmirror-rules 0\n{}\n".to_string(),
            index.replace("\"alice\"", "\"../x\""),
            index.replace("testing\t{", "testing\t{{"),
            swapped,
        ] {
            assert!(read_for(bad.as_bytes(), &repo).is_err(), "{bad}");
            assert!(read_all(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
