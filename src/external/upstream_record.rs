//! What this server knows of each pull mirror's fetches: one JSON record per repo
//! (`state/external/upstream/<repo>.json`: last attempt, last success, duration, the last
//! error in the upstream's words, what the last fetch found diverged or held back) and the
//! full log of the last run (`<repo>.log`, as pagure keeps `mirrored_from_last_log`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::upstream_fetch::Fetched;
use crate::fs::{FsError, ensure_dir, replace};
use crate::home::Home;
use crate::names::RepoName;
use crate::proto::flat_name;

/// One pull mirror's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct UpstreamRecord {
    /// The URL fetched last (a changed URL starts a fresh record's schedule).
    pub(crate) url: String,
    pub(crate) last_attempt: Option<f64>,
    pub(crate) last_success: Option<f64>,
    /// Failed attempts since the last success.
    pub(crate) failures: u32,
    /// The last failure, in the upstream's (or git's) own words.
    pub(crate) last_error: Option<String>,
    /// When the next scheduled fetch is due.
    pub(crate) next_attempt: Option<f64>,
    /// What the last successful fetch did.
    pub(crate) last: Option<Fetched>,
    /// How long the last attempt took, in milliseconds.
    pub(crate) millis: Option<u64>,
}

/// The records of one server.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamRecords {
    dir: PathBuf,
}

impl UpstreamRecords {
    pub(crate) fn of(home: &Home) -> Self {
        UpstreamRecords {
            dir: home.external_dir().join("upstream"),
        }
    }

    fn file(&self, repo: &RepoName, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", flat_name(repo)))
    }

    /// The record of `repo` (empty if none, or unreadable: it is state that rebuilds itself).
    pub(crate) fn load(&self, repo: &RepoName) -> UpstreamRecord {
        std::fs::read(self.file(repo, "json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(crate) fn save(&self, repo: &RepoName, record: &UpstreamRecord) -> Result<(), FsError> {
        ensure_dir(&self.dir, 0o700)?;
        let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
        replace(&self.file(repo, "json"), &bytes, 0o600)
    }

    /// The last run's log.
    pub(crate) fn log(&self, repo: &RepoName) -> Option<String> {
        std::fs::read_to_string(self.file(repo, "log")).ok()
    }

    pub(crate) fn save_log(&self, repo: &RepoName, lines: &[String]) -> Result<(), FsError> {
        ensure_dir(&self.dir, 0o700)?;
        let mut text = lines.join("\n");
        text.push('\n');
        replace(&self.file(repo, "log"), text.as_bytes(), 0o600)
    }
}
