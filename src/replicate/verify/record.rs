//! What the last verify of each slave found and what it repaired, kept for `status` in
//! `state/verified.json`: written whole and atomically after each run, under a lock, since a
//! periodic run and one an administrator asked for may finish together.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Finding;
use crate::fs::{FsError, lock, write_atomic};
use crate::home::Home;
use crate::names::RepoName;
use crate::replicate::queue::now;
use crate::replicate::status::format_time;

/// How many problems and repairs are kept per slave: enough to act on, bounded in size.
const KEPT: usize = 20;

/// Why the record cannot be read.
#[derive(Debug, Error)]
pub(crate) enum RecordError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} is not a verify record: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

/// The last verify of every slave.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Verified {
    pub(crate) slaves: BTreeMap<String, SlaveRecord>,
}

/// The last verify of one slave.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SlaveRecord {
    /// When it finished, in seconds since the epoch.
    pub(crate) at: f64,
    /// `all`, or the one repo verified.
    pub(crate) scope: String,
    /// How many repos were found in each state (`ok`, `drifted`, ...).
    pub(crate) counts: BTreeMap<String, usize>,
    /// The first repos not `ok`, as `REPO STATE`.
    pub(crate) problems: Vec<String>,
    /// The repos whose repair the last run that repaired anything queued, kept through the
    /// runs that found nothing to repair since...
    pub(crate) repaired: Vec<String>,
    /// ...and when that was.
    pub(crate) repaired_at: Option<f64>,
}

/// Reads the record; none yet is an empty one.
pub(crate) fn load(home: &Home) -> Result<Verified, RecordError> {
    let path = home.verified_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Verified::default()),
        Err(source) => {
            return Err(RecordError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    serde_json::from_str(&text).map_err(|source| RecordError::Parse {
        path: path.display().to_string(),
        source,
    })
}

/// Records a run over `scope` (a repo, or every one) that found `findings` and queued the
/// repair of `repaired`. Only the slaves it asked are rewritten.
pub(crate) fn save(
    home: &Home,
    scope: Option<&RepoName>,
    findings: &[Finding],
    repaired: &[Finding],
) -> Result<(), FsError> {
    let _lock = lock(&home.state_dir().join("verified.lock"))?;
    // A record that cannot be read is replaced: it only ever holds the last runs.
    let mut verified = load(home).unwrap_or_default();
    let at = now();
    let scope = scope.map_or("all".to_string(), ToString::to_string);
    for f in findings {
        let old = verified.slaves.get(f.slave.as_str());
        if old.is_some_and(|o| o.at == at) {
            continue;
        }
        let (repaired, repaired_at) = match old {
            Some(o) if !repaired.iter().any(|r| r.slave == f.slave) => {
                (o.repaired.clone(), o.repaired_at)
            }
            _ => (Vec::new(), None),
        };
        verified.slaves.insert(
            f.slave.to_string(),
            SlaveRecord {
                at,
                scope: scope.clone(),
                counts: BTreeMap::new(),
                problems: Vec::new(),
                repaired,
                repaired_at,
            },
        );
    }
    for f in findings {
        let Some(record) = verified.slaves.get_mut(f.slave.as_str()) else {
            continue;
        };
        *record
            .counts
            .entry(f.verdict.state().to_string())
            .or_default() += 1;
        if f.verdict != super::Verdict::Ok && record.problems.len() < KEPT {
            record
                .problems
                .push(format!("{} {}", f.repo, f.verdict.state()));
        }
    }
    for f in repaired {
        if let Some(record) = verified.slaves.get_mut(f.slave.as_str()) {
            record.repaired_at = Some(at);
            if record.repaired.len() < KEPT {
                record.repaired.push(f.repo.to_string());
            }
        }
    }
    let text = serde_json::to_string_pretty(&verified).unwrap_or_default();
    write_atomic(&home.verified_path(), text.as_bytes(), 0o600)
}

/// The record as a table for `status`, or nothing when no slave was ever verified.
pub(crate) fn table(verified: &Verified) -> String {
    if verified.slaves.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{:<12} {:<20} {:<12} {:<32} {:<20} {}\n",
        "SLAVE", "LAST VERIFIED", "SCOPE", "FOUND", "LAST REPAIR", "REPAIRED"
    );
    for (slave, r) in &verified.slaves {
        let found: Vec<String> = r.counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let repaired = if r.repaired.is_empty() {
            "-".to_string()
        } else {
            r.repaired.join(" ")
        };
        out.push_str(&format!(
            "{:<12} {:<20} {:<12} {:<32} {:<20} {}\n",
            slave,
            format_time(Some(r.at)),
            r.scope,
            found.join(", "),
            format_time(r.repaired_at),
            repaired
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::AccountName;
    use crate::replicate::verify::Verdict;

    fn finding(repo: &str, slave: &str, verdict: Verdict) -> Finding {
        Finding {
            repo: RepoName::parse(repo).unwrap(),
            slave: AccountName::parse(slave).unwrap(),
            verdict,
        }
    }

    #[test]
    fn a_run_replaces_the_slaves_it_asked_and_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(dir.path()), false).unwrap();
        crate::fs::ensure_dir(&home.state_dir(), 0o700).unwrap();
        assert_eq!(load(&home).unwrap(), Verified::default());
        let drifted = finding("b", "server2", Verdict::Drifted(Vec::new()));
        save(
            &home,
            None,
            &[
                finding("a", "server2", Verdict::Ok),
                drifted.clone(),
                finding("a", "server3", Verdict::Unreachable("down".into())),
            ],
            std::slice::from_ref(&drifted),
        )
        .unwrap();
        let v = load(&home).unwrap();
        let s2 = &v.slaves["server2"];
        assert_eq!(s2.counts["ok"], 1);
        assert_eq!(s2.counts["drifted"], 1);
        assert_eq!(s2.problems, ["b drifted"]);
        assert_eq!(s2.repaired, ["b"]);
        assert_eq!(v.slaves["server3"].problems, ["a unreachable"]);
        let table = table(&v);
        assert!(table.contains("server2"), "{table}");
        assert!(table.contains("1 drifted, 1 ok"), "{table}");

        save(
            &home,
            Some(&RepoName::parse("a").unwrap()),
            &[finding("a", "server3", Verdict::Ok)],
            &[],
        )
        .unwrap();
        let v = load(&home).unwrap();
        assert_eq!(v.slaves["server2"].repaired, ["b"]);
        assert_eq!(v.slaves["server3"].scope, "a");
        // A later run that repairs nothing keeps what the last repair did.
        save(&home, None, &[finding("b", "server2", Verdict::Ok)], &[]).unwrap();
        let v = load(&home).unwrap();
        assert_eq!(v.slaves["server2"].repaired, ["b"]);
        assert!(v.slaves["server2"].repaired_at.is_some());
        assert!(v.slaves["server2"].problems.is_empty());
        assert!(v.slaves["server3"].problems.is_empty());
    }
}
