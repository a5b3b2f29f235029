//! A manifest made pull mirrors: one `[repos."PREFIX/NAME"]` table per project the groups
//! select, `upstream.url` the URL `repo` would fetch it from, added to `repos.toml` with its
//! text and comments kept (`toml_edit`), plus a table for the manifest repository itself (with
//! `upstream.manifest` when it is followed).
//!
//! - A project whose name `repos.toml` already has a table for, or that exists here, is left
//!   alone and reported; nothing is ever removed. Projects a previous import of the same
//!   manifest brought that left it are reported, each time, until they come back.
//! - New tables copy `RW+`, `RW`, `R`, `mirror` and the `upstream` settings other than `url`
//!   and `manifest` (interval, refs, credentials, ...) from the table of `like` when given;
//!   otherwise they hold only `upstream.url` and `@all`'s rules apply, as to any repo.
//! - The file is validated whole before it is written; the caller compiles afterwards (compile
//!   lives above this folder).
//! - On a server whose configuration comes from the admin repo, repos.toml is never written
//!   here (the next admin push would undo it): the tables are for the admin to commit.
//!
//! Which projects earlier imports brought is kept in `state/external/manifests.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml_edit::{DocumentMut, InlineTable, Item, Table, Value, value};
use tracing::info;

use super::source::TreeFiles;
use super::{Files, Manifest, ManifestError, matches_groups, parse};
use crate::config::external::{ManifestFollow, Transport, parse_url};
use crate::config::{Rules, Source};
use crate::fs::{ensure_dir, lock, write_atomic};
use crate::home::Home;
use crate::names::RepoName;
use crate::proto::ADMIN_REPO;
use crate::repo::Store;

/// What an import selects and how it names what it adds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// `repo init -g` groups; `default` when empty.
    pub(crate) groups: Vec<String>,
    /// Prepended, with `/`, to every name.
    pub(crate) prefix: Option<String>,
    /// The repo whose access and mirror settings new tables copy.
    pub(crate) like: Option<RepoName>,
}

/// The manifest's repository: where it was read from, and whether it is followed.
#[derive(Debug, Clone)]
pub(crate) struct ManifestRepo {
    /// Its URL, which relative `fetch`es resolve against and its mirror pulls from.
    pub(crate) url: String,
    /// Set with `--follow`.
    pub(crate) follow: Option<ManifestFollow>,
}

/// One table to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewTable {
    pub(crate) repo: RepoName,
    pub(crate) url: String,
    pub(crate) follow: Option<ManifestFollow>,
}

/// What an import found and did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// The manifest as errors and reports name it.
    pub(crate) manifest: String,
    /// Tables added (or, when not written, to add).
    pub(crate) added: Vec<NewTable>,
    /// In the manifest, and already named in repos.toml or present here: left alone.
    pub(crate) kept: Vec<RepoName>,
    /// Brought by an earlier import of this manifest, and no longer in it: kept, never
    /// deleted.
    pub(crate) left: Vec<RepoName>,
    /// Projects the groups did not select.
    pub(crate) not_selected: usize,
    /// Whether repos.toml was written.
    pub(crate) written: bool,
}

impl Report {
    /// One line per repo, then a summary.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for t in &self.added {
            let verb = if self.written { "added" } else { "to add" };
            out.push(format!("{verb} {} <- {}", t.repo, t.url));
        }
        for r in &self.kept {
            out.push(format!(
                "kept {r}: already in repos.toml or here, left as it is"
            ));
        }
        for r in &self.left {
            out.push(format!(
                "left the manifest: {r} (kept; remove its table from repos.toml to stop mirroring it)"
            ));
        }
        out.push(format!(
            "manifest {}: {} added, {} kept, {} left the manifest, {} not in the groups",
            self.manifest,
            self.added.len(),
            self.kept.len(),
            self.left.len(),
            self.not_selected
        ));
        out
    }
}

/// The tables a manifest asks for, and the report, before anything is written.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) report: Report,
    /// The key under which this manifest's imports are recorded.
    key: String,
    /// Every project mirror the manifest selects now (added or kept).
    selected: Vec<RepoName>,
    like: Option<RepoName>,
}

/// Which repos each manifest's imports brought (`state/external/manifests.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    manifests: BTreeMap<String, Imported>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Imported {
    projects: BTreeSet<RepoName>,
    left: BTreeSet<RepoName>,
}

fn record_path(home: &Home) -> std::path::PathBuf {
    home.external_dir().join("manifests.json")
}

fn load_record(home: &Home) -> Result<Record, ManifestError> {
    let path = record_path(home);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| ManifestError::Import(format!("{}: cannot read: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(ManifestError::Import(format!(
            "{}: cannot read: {e}",
            path.display()
        ))),
    }
}

/// The name of the manifest repository's mirror: its URL's path below the remote it shares
/// a base with (so `fetch=".."` from a `repo init -u` of the mirror reaches the projects'
/// mirrors, as it reaches the projects upstream), else its last component; `.git` dropped.
pub(crate) fn manifest_repo_name(
    manifest: &Manifest,
    url: &str,
    prefix: Option<&str>,
) -> Result<RepoName, ManifestError> {
    let normal = super::fetch_url::normalize(url);
    let rest = manifest
        .remotes
        .values()
        .filter_map(|r| {
            let base = super::fetch_url::resolve(url, &r.fetch);
            let base = base.trim_end_matches('/');
            normal
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('/'))
                .map(str::to_string)
        })
        .filter(|rest| !rest.is_empty())
        .min_by_key(String::len)
        .unwrap_or_else(|| normal.rsplit('/').next().unwrap_or("manifest").to_string());
    let name = with_prefix(prefix, &rest);
    RepoName::parse(&name).map_err(|e| {
        ManifestError::Import(format!(
            "the manifest repository {url} would be mirrored as {name:?}: {e}"
        ))
    })
}

fn with_prefix(prefix: Option<&str>, name: &str) -> String {
    match prefix {
        Some(p) => format!("{}/{name}", p.trim_end_matches('/')),
        None => name.to_string(),
    }
}

/// What importing `manifest` (read as `label`) would add to this home's `repos.toml`.
pub(crate) fn plan(
    home: &Home,
    manifest: &Manifest,
    label: &str,
    repo: Option<&ManifestRepo>,
    options: &Options,
) -> Result<Plan, ManifestError> {
    let rules =
        Rules::load(&home.rules_path()).map_err(|e| ManifestError::Import(e.to_string()))?;
    if let Some(like) = &options.like
        && !rules.names(like)
    {
        return Err(ManifestError::Import(format!(
            "--like {like}: repos.toml has no table [repos.\"{like}\"] to copy"
        )));
    }
    let store = Store::new(home.repositories());
    let present = |r: &RepoName| rules.names(r) || store.find(r).is_some();
    let mut report = Report {
        manifest: label.to_string(),
        ..Report::default()
    };
    let mut selected: Vec<RepoName> = Vec::new();
    let prefix = options.prefix.as_deref();
    for p in &manifest.projects {
        if !matches_groups(&p.groups, &options.groups) {
            report.not_selected += 1;
            continue;
        }
        let name = with_prefix(prefix, &p.name);
        let repo_name = RepoName::parse(&name)
            .map_err(|e| ManifestError::Import(format!("{label}: project {}: {e}", p.name)))?;
        if selected.contains(&repo_name) {
            // The same project checked out at two paths: one mirror.
            continue;
        }
        let Some(url) = &p.url else {
            let fetch = manifest
                .remotes
                .get(&p.remote)
                .map_or("", |r| r.fetch.as_str());
            return Err(ManifestError::Import(format!(
                "{label}: project {}: remote {}'s fetch {fetch:?} is relative, and a manifest read from a file has no URL to resolve it against; import it from its repository's URL",
                p.name, p.remote
            )));
        };
        let parsed = parse_url(url).map_err(|why| {
            ManifestError::Import(format!("{label}: project {}: url {url:?}: {why}", p.name))
        })?;
        // A manifest from elsewhere names hosts, never paths on this machine: it could
        // otherwise have this server mirror (and serve) whatever its account can read.
        let from_elsewhere =
            repo.is_some_and(|r| parse_url(&r.url).is_ok_and(|u| u.transport != Transport::Local));
        if from_elsewhere && parsed.transport == Transport::Local {
            return Err(ManifestError::Import(format!(
                "{label}: project {}: url {url:?} is a path on this machine, and the manifest came from elsewhere; refused",
                p.name
            )));
        }
        selected.push(repo_name.clone());
        if present(&repo_name) {
            report.kept.push(repo_name);
        } else {
            report.added.push(NewTable {
                repo: repo_name,
                url: url.clone(),
                follow: None,
            });
        }
    }
    let key = match repo {
        Some(r) => {
            let name = manifest_repo_name(manifest, &r.url, prefix)?;
            if selected.contains(&name) {
                return Err(ManifestError::Import(format!(
                    "{label}: a project and the manifest repository itself would both be mirrored as {name}"
                )));
            }
            if present(&name) {
                report.kept.push(name.clone());
            } else {
                report.added.push(NewTable {
                    repo: name.clone(),
                    url: r.url.clone(),
                    follow: r.follow.clone(),
                });
            }
            name.as_str().to_string()
        }
        None => format!("file:{label}"),
    };
    let record = load_record(home)?;
    let before = record.manifests.get(&key).cloned().unwrap_or_default();
    report.left = before
        .projects
        .union(&before.left)
        .filter(|r| !selected.contains(r))
        .cloned()
        .collect();
    Ok(Plan {
        report,
        key,
        selected,
        like: options.like.clone(),
    })
}

/// Whether this server's configuration comes from the admin repo (it has a commit).
pub(crate) fn admin_repo_in_charge(home: &Home) -> bool {
    let Ok(name) = RepoName::parse(ADMIN_REPO) else {
        return false;
    };
    Store::new(home.repositories())
        .find(&name)
        .and_then(|path| git2::Repository::open_bare(path).ok())
        .is_some_and(|repo| repo.head().and_then(|h| h.peel_to_commit()).is_ok())
}

/// The tables of `plan` alone, as `--print` shows them for an admin to commit.
pub(crate) fn tables_text(home: &Home, plan: &Plan) -> Result<String, ManifestError> {
    let current = read_rules_doc(home)?;
    let mut doc = DocumentMut::new();
    add_tables(
        &mut doc,
        &plan.report.added,
        like_table(&current, plan)?.as_ref(),
    )?;
    Ok(doc.to_string())
}

fn read_rules_doc(home: &Home) -> Result<DocumentMut, ManifestError> {
    let path = home.rules_path();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ManifestError::Import(format!("{}: cannot read: {e}", path.display())))?;
    text.parse::<DocumentMut>().map_err(|e| {
        ManifestError::Import(format!("{}: {}", path.display(), one_line(&e.to_string())))
    })
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn like_table(doc: &DocumentMut, plan: &Plan) -> Result<Option<Table>, ManifestError> {
    let Some(like) = &plan.like else {
        return Ok(None);
    };
    let table = doc
        .get("repos")
        .and_then(|r| r.get(like.as_str()))
        .and_then(Item::as_table_like);
    let Some(table) = table else {
        return Err(ManifestError::Import(format!(
            "--like {like}: its table in repos.toml is not a plain table"
        )));
    };
    let mut out = Table::new();
    for key in ["RW+", "RW", "R", "mirror"] {
        if let Some(item) = table.get(key) {
            let mut item = item.clone();
            if let Item::Table(t) = &mut item {
                // [repos.X.mirror] written as a section: carried as a dotted key.
                t.set_dotted(true);
            }
            out.insert(key, item);
        }
    }
    // The upstream settings other than where it is: interval, refs, divergence, prune, and
    // the credentials (identity, host_key, token_file), which compile checks against each
    // new URL's transport.
    if let Some(up) = table.get("upstream").and_then(Item::as_table_like) {
        let mut copy = Table::new();
        copy.set_dotted(true);
        for (key, item) in up.iter() {
            // The url stays for add_tables to compare origins; it is never copied.
            if key != "manifest" {
                copy.insert(key, item.clone());
            }
        }
        if !copy.is_empty() {
            out.insert("upstream", Item::Table(copy));
        }
    }
    Ok(Some(out))
}

fn add_tables(
    doc: &mut DocumentMut,
    tables: &[NewTable],
    like: Option<&Table>,
) -> Result<(), ManifestError> {
    let repos = doc.entry("repos").or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(true);
        Item::Table(t)
    });
    let Some(repos) = repos.as_table_mut() else {
        return Err(ManifestError::Import(
            "repos.toml: repos is not written as [repos.NAME] tables; add the tables by hand"
                .to_string(),
        ));
    };
    for t in tables {
        let mut table = like.cloned().unwrap_or_default();
        table.set_implicit(false);
        let copied = table.remove("upstream");
        let mut up = Table::new();
        up.set_dotted(true);
        up.insert("url", value(t.url.clone()));
        if let Some(copied) = copied.as_ref().and_then(Item::as_table_like) {
            // Credentials go only where the template's own upstream goes (same transport,
            // host and port): a manifest names its projects' hosts, and a token or key must
            // never follow it somewhere else.
            let origin = |u: &str| {
                crate::config::external::parse_url(u)
                    .ok()
                    .map(|r| (r.transport, r.host, r.port))
            };
            let like_origin = copied.get("url").and_then(Item::as_str).and_then(origin);
            let same_origin = like_origin.is_some() && like_origin == origin(&t.url);
            for (key, item) in copied.iter() {
                let credential = matches!(key, "identity" | "host_key" | "token_file" | "ca_file");
                if key == "url" || (credential && !same_origin) {
                    continue;
                }
                up.insert(key, item.clone());
            }
        }
        if let Some(f) = &t.follow {
            let mut m = InlineTable::new();
            m.insert("file", Value::from(f.file.clone()));
            if let Some(b) = &f.branch {
                m.insert("branch", Value::from(b.clone()));
            }
            if !f.groups.is_empty() {
                m.insert("groups", Value::Array(f.groups.iter().collect()));
            }
            if let Some(p) = &f.prefix {
                m.insert("prefix", Value::from(p.clone()));
            }
            if let Some(l) = &f.like {
                m.insert("like", Value::from(l.clone()));
            }
            up.insert("manifest", value(m));
        }
        table.insert("upstream", Item::Table(up));
        repos.insert(t.repo.as_str(), Item::Table(table));
    }
    Ok(())
}

/// Writes `plan`'s tables into repos.toml (validated whole first) and records what this
/// manifest brought. Refused, with nothing written, where the admin repo is in charge.
pub(crate) fn write(home: &Home, plan: &mut Plan) -> Result<(), ManifestError> {
    if admin_repo_in_charge(home) {
        return Err(ManifestError::Import(format!(
            "this server's repos.toml comes from {ADMIN_REPO}, and a table written here would be undone by its next push: run again with --print and commit the tables it prints to {ADMIN_REPO}; nothing was changed"
        )));
    }
    ensure_dir(&home.external_dir(), 0o700).map_err(|e| ManifestError::Import(e.to_string()))?;
    let _lock = lock(&home.external_dir().join("manifests.lock"))
        .map_err(|e| ManifestError::Import(e.to_string()))?;
    // A table the administrator added since the plan was made is theirs: left alone.
    let doc = read_rules_doc(home)?;
    let named = |r: &RepoName| doc.get("repos").and_then(|t| t.get(r.as_str())).is_some();
    let (late, added): (Vec<NewTable>, Vec<NewTable>) = std::mem::take(&mut plan.report.added)
        .into_iter()
        .partition(|t| named(&t.repo));
    plan.report.added = added;
    plan.report.kept.extend(late.into_iter().map(|t| t.repo));
    if !plan.report.added.is_empty() {
        let mut doc = doc;
        let like = like_table(&doc, plan)?;
        add_tables(&mut doc, &plan.report.added, like.as_ref())?;
        let text = doc.to_string();
        let path = home.rules_path();
        Rules::from_source(&Source::from_text(&path, text.clone())).map_err(|e| {
            ManifestError::Import(format!(
                "the tables would make repos.toml invalid ({e}); nothing was changed"
            ))
        })?;
        write_atomic(&path, text.as_bytes(), 0o600)
            .map_err(|e| ManifestError::Import(e.to_string()))?;
        plan.report.written = true;
    }
    let mut record = load_record(home)?;
    let entry = record.manifests.entry(plan.key.clone()).or_default();
    let selected: BTreeSet<RepoName> = plan.selected.iter().cloned().collect();
    entry.left = plan.report.left.iter().cloned().collect();
    entry.projects = selected;
    let bytes = serde_json::to_vec_pretty(&record)
        .map_err(|e| ManifestError::Import(format!("cannot record the import: {e}")))?;
    write_atomic(&record_path(home), &bytes, 0o600)
        .map_err(|e| ManifestError::Import(e.to_string()))?;
    info!(
        manifest = %plan.report.manifest,
        added = plan.report.added.len(),
        kept = plan.report.kept.len(),
        left = plan.report.left.len(),
        "manifest imported"
    );
    Ok(())
}

/// Imports again the manifest `repo` follows (its `upstream.manifest`), reading it from the
/// pull mirror here as the last fetch left it: new projects get their tables, projects that
/// left are reported and kept. The fetch engine calls it after a fetch that moved the
/// manifest's branch; the caller then compiles (which creates the new mirrors) and has them
/// fetched. Nothing is written where the admin repo is in charge (an error says so).
pub(crate) fn reimport(home: &Home, repo: &RepoName) -> Result<Report, ManifestError> {
    let rules =
        Rules::load(&home.rules_path()).map_err(|e| ManifestError::Import(e.to_string()))?;
    let Some(upstream) = rules.upstream(repo) else {
        return Err(ManifestError::Import(format!(
            "{repo}: not a pull mirror (no upstream.url in repos.toml)"
        )));
    };
    let Some(follow) = upstream.manifest.clone() else {
        return Err(ManifestError::Import(format!(
            "{repo}: follows no manifest (no upstream.manifest in repos.toml)"
        )));
    };
    let Some(path) = Store::new(home.repositories()).find(repo) else {
        return Err(ManifestError::Import(format!(
            "{repo}: not here yet; compile and fetch it first"
        )));
    };
    let rev = match &follow.branch {
        Some(b) => format!("refs/heads/{b}"),
        None => "HEAD".to_string(),
    };
    let files = TreeFiles::open(&path, &rev, repo.as_str())?;
    let manifest = parse(&files, &follow.file, Some(&upstream.url.url))?;
    let like = follow
        .like
        .as_deref()
        .map(RepoName::parse)
        .transpose()
        .map_err(|e| ManifestError::Import(format!("{repo}: upstream.manifest.like: {e}")))?;
    let options = Options {
        groups: follow.groups.clone(),
        prefix: follow.prefix.clone(),
        like,
    };
    let source = ManifestRepo {
        url: upstream.url.url.clone(),
        follow: Some(follow.clone()),
    };
    let label = files.label(&follow.file);
    let mut plan = plan(home, &manifest, &label, Some(&source), &options)?;
    write(home, &mut plan)?;
    info!(%repo, commit = %files.commit(), "manifest re-imported");
    Ok(plan.report)
}

/// Reads the manifest at `file`, with its includes beside it.
pub(crate) fn read_file(file: &Path) -> Result<(Manifest, String), ManifestError> {
    let label = file.display().to_string();
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(".").to_path_buf());
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ManifestError::File {
            file: label.clone(),
            what: "not a file name".to_string(),
        })?;
    let files = super::source::DirFiles { dir };
    Ok((parse(&files, name, None)?, label))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(ok.status.success(), "git {args:?}: {ok:?}");
    }

    fn manifest_xml(projects: &[&str]) -> String {
        let mut s = String::from(
            "<manifest>\n  <remote name=\"up\" fetch=\"..\"/>\n  <default remote=\"up\" revision=\"main\"/>\n",
        );
        for p in projects {
            s.push_str(&format!("  <project name=\"{p}\"/>\n"));
        }
        s.push_str("</manifest>\n");
        s
    }

    /// Commits default.xml with `projects` to the work tree `work` and fetches it into the
    /// mirror, as the fetch engine would.
    fn publish(work: &Path, mirror: &Path, projects: &[&str]) {
        std::fs::write(work.join("default.xml"), manifest_xml(projects)).unwrap();
        git(work, &["add", "default.xml"]);
        git(work, &["commit", "-q", "-m", "manifest"]);
        git(
            mirror,
            &[
                "fetch",
                "-q",
                work.to_str().unwrap(),
                "+refs/heads/main:refs/heads/main",
            ],
        );
    }

    #[test]
    fn the_manifest_repository_is_named_by_its_path_below_the_remotes_base() {
        let m = |fetch: &str| Manifest {
            remotes: [(
                "o".to_string(),
                super::super::Remote {
                    name: "o".to_string(),
                    fetch: fetch.to_string(),
                    revision: None,
                },
            )]
            .into(),
            projects: Vec::new(),
        };
        let name = |fetch: &str, url: &str, prefix: Option<&str>| {
            manifest_repo_name(&m(fetch), url, prefix)
                .unwrap()
                .as_str()
                .to_string()
        };
        assert_eq!(
            name(
                "..",
                "https://android.googlesource.com/platform/manifest",
                Some("aosp")
            ),
            "aosp/platform/manifest"
        );
        assert_eq!(name(".", "/srv/up/manifest.git", None), "manifest");
        assert_eq!(
            name("..", "git@host:vendor/manifest.git/", None),
            "vendor/manifest"
        );
        // An absolute fetch elsewhere: the last component.
        assert_eq!(
            name(
                "https://github.com/",
                "https://example.com/x/manifests.git",
                Some("p")
            ),
            "p/manifests"
        );
    }

    #[test]
    fn reimport_adds_new_projects_and_reports_those_that_left() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::locate(Some(&dir.path().join("home")), false).unwrap();
        let up = dir.path().join("up");
        let work = dir.path().join("work");
        std::fs::create_dir_all(home.repositories().join("m/platform")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        let mirror = home.repositories().join("m/platform/manifest.git");
        git(
            dir.path(),
            &["init", "-q", "--bare", mirror.to_str().unwrap()],
        );
        git(&mirror, &["symbolic-ref", "HEAD", "refs/heads/main"]);
        let manifest_url = up.join("platform/manifest.git");
        let rules = format!(
            "# the admin's own comment\n[repos.\"m/platform/manifest\"]\nupstream.url = \"{}\"\nupstream.manifest = {{ file = \"default.xml\", prefix = \"m\" }}\n",
            manifest_url.display()
        );
        std::fs::write(home.rules_path(), &rules).unwrap();
        publish(&work, &mirror, &["a", "b"]);
        let first = reimport(&home, &RepoName::parse("m/platform/manifest").unwrap()).unwrap();
        let added: Vec<&str> = first.added.iter().map(|t| t.repo.as_str()).collect();
        assert_eq!(added, vec!["m/a", "m/b"]);
        assert_eq!(first.added[0].url, format!("{}/a", up.display()));
        assert_eq!(
            first.kept,
            vec![RepoName::parse("m/platform/manifest").unwrap()]
        );
        let text = std::fs::read_to_string(home.rules_path()).unwrap();
        assert!(text.starts_with(&rules), "{text}");
        assert!(text.contains("[repos.\"m/a\"]\nupstream.url = "), "{text}");

        // b leaves, c comes.
        publish(&work, &mirror, &["a", "c"]);
        let second = reimport(&home, &RepoName::parse("m/platform/manifest").unwrap()).unwrap();
        let added: Vec<&str> = second.added.iter().map(|t| t.repo.as_str()).collect();
        assert_eq!(added, vec!["m/c"]);
        assert_eq!(second.left, vec![RepoName::parse("m/b").unwrap()]);
        let text = std::fs::read_to_string(home.rules_path()).unwrap();
        assert!(
            text.contains("[repos.\"m/b\"]"),
            "b's table is kept: {text}"
        );
        assert!(text.contains("[repos.\"m/c\"]"), "{text}");
        // Nothing new: nothing written, and b is still reported.
        let third = reimport(&home, &RepoName::parse("m/platform/manifest").unwrap()).unwrap();
        assert!(third.added.is_empty());
        assert!(!third.written);
        assert_eq!(third.left, vec![RepoName::parse("m/b").unwrap()]);
        assert_eq!(std::fs::read_to_string(home.rules_path()).unwrap(), text);
        // A repo that follows nothing is refused.
        let err = reimport(&home, &RepoName::parse("m/a").unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "m/a: follows no manifest (no upstream.manifest in repos.toml)"
        );
    }
}
