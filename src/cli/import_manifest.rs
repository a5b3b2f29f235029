//! `gitmirror import-manifest MANIFEST.xml|URL`: a `repo` manifest made pull mirrors, one per
//! project (named as `repo init --mirror` lays them out, under `--prefix`), plus the manifest
//! repository itself; then the compile that creates them. Prints one line per repo added,
//! kept or gone from the manifest. With `--print`, only the tables, for an admin to commit to
//! the admin repo (which is required where the admin repo is in charge).

use std::path::Path;

use super::{Config, Outcome, print};
use crate::admin::compile;
use crate::config::Rules;
use crate::config::external::{Credentials, ManifestFollow, parse_url};
use crate::external::manifest::import::{self, ManifestRepo, Options};
use crate::external::manifest::{DEFAULT_FILE, Files, parse, source, split_groups};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::progress::Progress;

/// The command line's arguments.
pub(super) struct Args<'a> {
    pub(super) source: &'a str,
    pub(super) groups: Option<&'a str>,
    pub(super) prefix: Option<&'a str>,
    pub(super) like: Option<&'a str>,
    pub(super) follow: bool,
    pub(super) print: bool,
    pub(super) branch: Option<&'a str>,
    pub(super) file: Option<&'a str>,
    pub(super) quiet: bool,
}

pub(super) fn run(home: &Home, config: Config, a: &Args) -> Outcome {
    let config = config.map_err(|e| e.to_string())?;
    let groups = a.groups.map(split_groups).unwrap_or_default();
    if let Some(p) = a.prefix
        && (RepoName::parse(p).is_err() || p.ends_with(".git"))
    {
        return Err(format!(
            "--prefix {p:?}: expected a repo name such as \"aosp\" or \"mirrors/aosp\""
        ));
    }
    let like = a
        .like
        .map(RepoName::parse)
        .transpose()
        .map_err(|e| format!("--like: {e}"))?;
    let options = Options {
        groups: groups.clone(),
        prefix: a.prefix.map(str::to_string),
        like: like.clone(),
    };
    let as_file = Path::new(a.source);
    let plan = if as_file.is_file() {
        if a.follow {
            return Err(format!(
                "--follow: {} is a file; follow the manifest's repository by its URL instead",
                a.source
            ));
        }
        if a.branch.is_some() || a.file.is_some() {
            return Err(
                "--manifest-branch and --manifest-file are for a manifest repository's URL, not a file"
                    .to_string(),
            );
        }
        // Absolute, so that imports of the same file are recorded as one manifest.
        let file = std::fs::canonicalize(as_file).map_err(|e| format!("{}: {e}", a.source))?;
        let (manifest, label) = import::read_file(&file).map_err(|e| e.to_string())?;
        import::plan(home, &manifest, &label, None, &options).map_err(|e| e.to_string())?
    } else if let Some(repo) = followed(home, a.source) {
        if a.groups.is_some()
            || a.prefix.is_some()
            || a.like.is_some()
            || a.follow
            || a.print
            || a.branch.is_some()
            || a.file.is_some()
        {
            return Err(format!(
                "{repo} follows a manifest: importing it again takes the settings of its upstream.manifest and no options"
            ));
        }
        let report = import::reimport(home, &repo).map_err(|e| e.to_string())?;
        return finish(home, &config.hostname, &report, a.quiet);
    } else {
        let url = parse_url(a.source).map_err(|why| {
            format!(
                "{}: neither a manifest file nor a repository URL: {why}",
                a.source
            )
        })?;
        let file = a.file.unwrap_or(DEFAULT_FILE);
        let credentials = credentials_for(home, &url.url);
        let files = source::fetch(home, &url, &credentials, a.branch).map_err(|e| e.to_string())?;
        let manifest = parse(&files, file, Some(&url.url)).map_err(|e| e.to_string())?;
        let follow = a.follow.then(|| ManifestFollow {
            file: file.to_string(),
            branch: a.branch.map(str::to_string),
            groups: groups.clone(),
            prefix: a.prefix.map(str::to_string),
            like: like.as_ref().map(|l| l.as_str().to_string()),
        });
        let repo = ManifestRepo {
            url: url.url.clone(),
            follow,
        };
        import::plan(home, &manifest, &files.label(file), Some(&repo), &options)
            .map_err(|e| e.to_string())?
    };
    if a.print {
        let text = import::tables_text(home, &plan).map_err(|e| e.to_string())?;
        let mut out = String::new();
        for line in plan.report.lines() {
            out.push_str(&format!("# {line}\n"));
        }
        out.push_str(&text);
        return print(&out);
    }
    let mut plan = plan;
    import::write(home, &mut plan).map_err(|e| e.to_string())?;
    finish(home, &config.hostname, &plan.report, a.quiet)
}

/// The repo named `source` when it is a manifest's mirror that follows it: importing it
/// again reads the manifest from the mirror, as after a fetch.
fn followed(home: &Home, source: &str) -> Option<RepoName> {
    let repo = RepoName::parse(source).ok()?;
    let rules = Rules::load(&home.rules_path()).ok()?;
    rules
        .upstream(&repo)
        .is_some_and(|u| u.manifest.is_some())
        .then_some(repo)
}

/// The credentials of a table whose upstream is `url` already (an identity, a pinned host
/// key, a token file), else none: the server's own key, the known hosts gitmirror keeps.
fn credentials_for(home: &Home, url: &str) -> Credentials {
    let Ok(rules) = Rules::load(&home.rules_path()) else {
        return Credentials::default();
    };
    rules
        .named_repos()
        .filter_map(|r| rules.upstream(r))
        .find(|u| u.url.url == url)
        .map(|u| u.credentials.clone())
        .unwrap_or_default()
}

/// Prints the import's lines and, when tables were written, compiles.
fn finish(home: &Home, hostname: &AccountName, report: &import::Report, quiet: bool) -> Outcome {
    let mut out: String = report.lines().iter().map(|l| format!("{l}\n")).collect();
    if report.written {
        // Creating thousands of repos takes a while: a count of those created so far.
        let mut progress = Progress::new("import", quiet);
        let report = compile::compile_showing(home, &mut progress)
            .map_err(|e| format!("repos.toml has the new tables, but the compile failed: {e}"))?;
        let summary = progress.finish();
        for line in report.lines() {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&summary.replace("succeeded", "repos created"));
        out.push_str(&format!(
            "the new mirrors are empty until their first fetch (the daemon's schedule on {hostname}, or `gitmirror fetch REPO`)\n"
        ));
    }
    print(&out)
}
