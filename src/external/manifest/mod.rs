//! `repo` manifests (Android's `repo` tool): the XML that lists a tree's projects, read as
//! `repo` reads it, to mirror every project as a pull mirror.
//!
//! - this file: the parser: `<remote>`, `<default>`, `<project>` (nested ones too), `<include>`
//!   (its `groups` and `revision` passed to what it includes), `<remove-project>` (with
//!   `optional`), groups filtering as `repo init -g` does; other elements (`copyfile`,
//!   `annotation`, `repo-hooks`, ...) mean nothing to a mirror and are skipped.
//! - [`fetch_url`]: a remote's `fetch` resolved against the manifest's own URL.
//! - [`source`]: where a manifest's files are read from: a directory, or a commit of the
//!   manifest repository.
//! - [`import`]: the pull-mirror tables written into `repos.toml`, and [`import::reimport`],
//!   which runs again when the manifest repository moved.
//!
//! Every mistake is one line naming the file (and line) and what was wrong.

pub(crate) mod fetch_url;
pub(crate) mod import;
pub(crate) mod source;

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::names::RepoName;

/// The file `repo init` reads when no `-m` is given.
pub(crate) const DEFAULT_FILE: &str = "default.xml";

/// How deep includes may nest (repo itself has no limit but loops; this only bounds work).
const MAX_INCLUDE_DEPTH: usize = 16;

/// What is wrong with a manifest, or what stopped reading it.
#[derive(Debug, Error)]
pub(crate) enum ManifestError {
    /// Something in a file, located.
    #[error("{file}:{line}: {what}")]
    Invalid {
        file: String,
        line: u32,
        what: String,
    },
    /// A file could not be read, or is not XML.
    #[error("{file}: {what}")]
    File { file: String, what: String },
    /// Reading the manifest repository failed.
    #[error("{0}")]
    Source(String),
    /// Writing the tables failed, or would be undone.
    #[error("{0}")]
    Import(String),
}

/// The files a manifest and its includes are read from.
pub(crate) trait Files {
    /// The text of `path` (relative to the manifest's directory or repository top).
    fn read(&self, path: &str) -> Result<String, ManifestError>;
    /// How errors name `path`.
    fn label(&self, path: &str) -> String;
}

/// One `<remote>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Remote {
    pub(crate) name: String,
    /// As written (maybe relative).
    pub(crate) fetch: String,
    pub(crate) revision: Option<String>,
}

/// One project, as `repo` would sync it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Project {
    /// The name on the remote (`platform/build`), which `repo init --mirror` lays out as
    /// `NAME.git`.
    pub(crate) name: String,
    /// The checkout path (`build/make`); the name when not given.
    pub(crate) path: String,
    pub(crate) remote: String,
    pub(crate) revision: String,
    /// The project's groups with those `repo` adds: `all`, `name:N`, `path:P`, and
    /// `default` unless it is `notdefault`.
    pub(crate) groups: BTreeSet<String>,
    /// Where `repo` fetches it from (`None`: the remote's fetch is relative and the manifest
    /// has no URL).
    pub(crate) url: Option<String>,
}

/// A parsed manifest: its remotes and its projects, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub(crate) remotes: BTreeMap<String, Remote>,
    pub(crate) projects: Vec<Project>,
}

/// An element from some file, with where it came from and what its include adds.
#[derive(Debug, Clone)]
struct Node {
    file: String,
    line: u32,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Remote(Remote),
    Default {
        remote: Option<String>,
        revision: Option<String>,
    },
    Project {
        name: String,
        path: Option<String>,
        remote: Option<String>,
        revision: Option<String>,
        groups: BTreeSet<String>,
    },
    RemoveProject {
        name: Option<String>,
        path: Option<String>,
        optional: bool,
    },
}

/// Splits a groups attribute as repo's `_ParseSet`: commas and whitespace.
pub(crate) fn split_groups(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether a project with `groups` (as [`Project::groups`]) is synced for the groups asked
/// (`repo init -g`): each in order, `-g` unmatching, the last that applies wins; none asked
/// means `default`.
pub(crate) fn matches_groups(project: &BTreeSet<String>, asked: &[String]) -> bool {
    let default = ["default".to_string()];
    let asked = if asked.is_empty() {
        &default[..]
    } else {
        asked
    };
    let mut matched = false;
    for g in asked {
        if let Some(not) = g.strip_prefix('-') {
            if project.contains(not) {
                matched = false;
            }
        } else if project.contains(g) {
            matched = true;
        }
    }
    matched
}

/// Reads `file` from `files`, its includes with it, as repo does. `manifest_url` is the
/// manifest repository's URL, which relative `fetch`es are resolved against.
pub(crate) fn parse(
    files: &dyn Files,
    file: &str,
    manifest_url: Option<&str>,
) -> Result<Manifest, ManifestError> {
    let mut nodes = Vec::new();
    let mut chain = Vec::new();
    read_nodes(files, file, &Inherited::default(), &mut chain, &mut nodes)?;
    resolve(nodes, manifest_url)
}

/// What an `<include>` passes to the projects it brings.
#[derive(Debug, Clone, Default)]
struct Inherited {
    groups: BTreeSet<String>,
    revision: Option<String>,
}

fn read_nodes(
    files: &dyn Files,
    file: &str,
    inherited: &Inherited,
    chain: &mut Vec<String>,
    out: &mut Vec<Node>,
) -> Result<(), ManifestError> {
    let label = files.label(file);
    if chain.iter().any(|f| f == file) {
        chain.push(file.to_string());
        return Err(ManifestError::File {
            file: label,
            what: format!("include loop: {}", chain.join(" -> ")),
        });
    }
    if chain.len() >= MAX_INCLUDE_DEPTH {
        return Err(ManifestError::File {
            file: label,
            what: format!("includes nest deeper than {MAX_INCLUDE_DEPTH}"),
        });
    }
    chain.push(file.to_string());
    let text = files.read(file)?;
    let doc = roxmltree::Document::parse(&text).map_err(|e| ManifestError::File {
        file: label.clone(),
        what: format!("not XML: {e}"),
    })?;
    let root = doc.root_element();
    if root.tag_name().name() != "manifest" {
        return Err(ManifestError::File {
            file: label,
            what: format!(
                "not a repo manifest: the top element is <{}>, expected <manifest>",
                root.tag_name().name()
            ),
        });
    }
    let line_of = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row;
    let invalid = |n: roxmltree::Node, what: String| ManifestError::Invalid {
        file: label.clone(),
        line: line_of(n),
        what,
    };
    for n in root.children().filter(roxmltree::Node::is_element) {
        let attr = |a: &str| n.attribute(a).filter(|v| !v.is_empty()).map(str::to_string);
        let required = |a: &str| {
            attr(a)
                .ok_or_else(|| invalid(n, format!("<{}> needs a {a}=\"...\"", n.tag_name().name())))
        };
        let node = |kind| Node {
            file: label.clone(),
            line: line_of(n),
            kind,
        };
        match n.tag_name().name() {
            "remote" => out.push(node(Kind::Remote(Remote {
                name: required("name")?,
                fetch: required("fetch")?,
                revision: attr("revision"),
            }))),
            "default" => out.push(node(Kind::Default {
                remote: attr("remote"),
                revision: attr("revision"),
            })),
            "project" => project_nodes(n, None, inherited, &label, &line_of, out)?,
            "remove-project" => {
                let (name, path) = (attr("name"), attr("path"));
                if name.is_none() && path.is_none() {
                    return Err(invalid(
                        n,
                        "<remove-project> needs a name=\"...\" or a path=\"...\"".to_string(),
                    ));
                }
                out.push(node(Kind::RemoveProject {
                    name,
                    path,
                    optional: bool_attr(n, "optional").map_err(|w| invalid(n, w))?,
                }));
            }
            "include" => {
                let name = required("name")?;
                check_local_path(&name)
                    .map_err(|w| invalid(n, format!("<include name=\"{name}\">: {w}")))?;
                let mut inner = inherited.clone();
                inner
                    .groups
                    .extend(split_groups(n.attribute("groups").unwrap_or("")));
                if let Some(r) = attr("revision") {
                    inner.revision = Some(r);
                }
                // Relative to the directory of the including file, as repo's include_root.
                let path = match file.rfind('/') {
                    Some(i) => format!("{}{name}", &file[..=i]),
                    None => name,
                };
                read_nodes(files, &path, &inner, chain, out)?;
            }
            other => {
                tracing::debug!(file = %label, element = other, "manifest element skipped");
            }
        }
    }
    chain.pop();
    Ok(())
}

/// A `<project>` and the projects nested in it (named under it, as repo joins them).
fn project_nodes(
    n: roxmltree::Node,
    parent: Option<&str>,
    inherited: &Inherited,
    label: &str,
    line_of: &dyn Fn(roxmltree::Node) -> u32,
    out: &mut Vec<Node>,
) -> Result<(), ManifestError> {
    let attr = |a: &str| n.attribute(a).filter(|v| !v.is_empty()).map(str::to_string);
    let invalid = |what: String| ManifestError::Invalid {
        file: label.to_string(),
        line: line_of(n),
        what,
    };
    let Some(name) = attr("name") else {
        return Err(invalid("<project> needs a name=\"...\"".to_string()));
    };
    let name = match parent {
        Some(p) => format!("{p}/{name}"),
        None => name,
    };
    let path = attr("path");
    if let Some(p) = &path {
        check_local_path(p).map_err(|w| invalid(format!("project {name}: path \"{p}\": {w}")))?;
    }
    let mut groups: BTreeSet<String> = split_groups(n.attribute("groups").unwrap_or(""))
        .into_iter()
        .collect();
    groups.extend(inherited.groups.iter().cloned());
    out.push(Node {
        file: label.to_string(),
        line: line_of(n),
        kind: Kind::Project {
            name: name.clone(),
            path,
            remote: attr("remote"),
            revision: attr("revision").or_else(|| inherited.revision.clone()),
            groups,
        },
    });
    for child in n
        .children()
        .filter(|c| c.is_element() && c.tag_name().name() == "project")
    {
        project_nodes(child, Some(&name), inherited, label, line_of, out)?;
    }
    Ok(())
}

/// `true`/`false` (and repo's other spellings); absent is false.
fn bool_attr(n: roxmltree::Node, a: &str) -> Result<bool, String> {
    match n.attribute(a).map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => Ok(false),
        Some("true" | "yes" | "1") => Ok(true),
        Some("false" | "no" | "0") => Ok(false),
        Some(v) => Err(format!("{a}=\"{v}\": expected true or false")),
    }
}

/// A path in a checkout or the manifest repository: relative, no `..`, `.git` or empty
/// component, no control characters.
fn check_local_path(p: &str) -> Result<(), &'static str> {
    if p.starts_with('/') || p.starts_with('~') {
        return Err("must be relative");
    }
    if p.chars().any(char::is_control) {
        return Err("holds control characters");
    }
    for part in p.split('/') {
        match part {
            "" => return Err("has an empty component"),
            ".." => return Err("has a .. component"),
            "." => return Err("has a . component"),
            ".git" | ".repo" => return Err("names .git or .repo"),
            _ => {}
        }
    }
    Ok(())
}

/// Applies the nodes in order, as repo's `_ParseManifest`: remotes and the default first,
/// then projects and remove-projects as they come.
fn resolve(nodes: Vec<Node>, manifest_url: Option<&str>) -> Result<Manifest, ManifestError> {
    let at = |n: &Node, what: String| ManifestError::Invalid {
        file: n.file.clone(),
        line: n.line,
        what,
    };
    let mut remotes: BTreeMap<String, Remote> = BTreeMap::new();
    let mut default: Option<(Option<String>, Option<String>)> = None;
    for n in &nodes {
        match &n.kind {
            Kind::Remote(r) => {
                if let Some(old) = remotes.get(&r.name)
                    && old != r
                {
                    return Err(at(
                        n,
                        format!("remote {} is defined twice, differently", r.name),
                    ));
                }
                remotes.insert(r.name.clone(), r.clone());
            }
            Kind::Default { remote, revision } => {
                let this = (remote.clone(), revision.clone());
                if let Some(d) = &default
                    && *d != this
                {
                    return Err(at(n, "a second, different <default>".to_string()));
                }
                default = Some(this);
            }
            _ => {}
        }
    }
    let (default_remote, default_revision) = default.unwrap_or_default();
    if let Some(r) = &default_remote
        && !remotes.contains_key(r)
        && let Some(n) = nodes
            .iter()
            .find(|n| matches!(n.kind, Kind::Default { .. }))
    {
        return Err(at(n, format!("<default remote=\"{r}\">: no such remote")));
    }
    let mut projects: Vec<Project> = Vec::new();
    for n in &nodes {
        match &n.kind {
            Kind::Project {
                name,
                path,
                remote,
                revision,
                groups,
            } => {
                let Some(remote_name) = remote.clone().or_else(|| default_remote.clone()) else {
                    return Err(at(
                        n,
                        format!("project {name}: no remote=\"...\" and no <default remote>"),
                    ));
                };
                let Some(remote) = remotes.get(&remote_name) else {
                    return Err(at(
                        n,
                        format!("project {name}: unknown remote {remote_name}"),
                    ));
                };
                let Some(revision) = revision
                    .clone()
                    .or_else(|| remote.revision.clone())
                    .or_else(|| default_revision.clone())
                else {
                    return Err(at(
                        n,
                        format!("project {name}: no revision, and no <default revision>"),
                    ));
                };
                RepoName::parse(name).map_err(|e| {
                    at(
                        n,
                        format!("project {name}: {e}; gitmirror cannot mirror it"),
                    )
                })?;
                let path = path.clone().unwrap_or_else(|| name.clone());
                if projects.iter().any(|p| p.path == path) {
                    return Err(at(n, format!("project {name}: path {path} is used twice")));
                }
                let mut groups = groups.clone();
                groups.insert("all".to_string());
                groups.insert(format!("name:{name}"));
                groups.insert(format!("path:{path}"));
                if !groups.contains("notdefault") {
                    groups.insert("default".to_string());
                }
                let url = match manifest_url {
                    Some(base) => Some(fetch_url::resolve(base, &remote.fetch)),
                    None if !fetch_url::is_relative(&remote.fetch) => {
                        Some(fetch_url::normalize(&remote.fetch))
                    }
                    None => None,
                }
                .map(|f| fetch_url::project_url(&f, name));
                projects.push(Project {
                    name: name.clone(),
                    path,
                    remote: remote_name,
                    revision,
                    groups,
                    url,
                });
            }
            Kind::RemoveProject {
                name,
                path,
                optional,
            } => {
                let before = projects.len();
                projects.retain(|p| match (name, path) {
                    (Some(name), None) => &p.name != name,
                    (name, Some(path)) => {
                        !(&p.path == path && name.as_ref().is_none_or(|n| &p.name == n))
                    }
                    (None, None) => true,
                });
                if projects.len() == before && !optional {
                    let what = name.as_deref().or(path.as_deref()).unwrap_or("");
                    return Err(at(
                        n,
                        format!(
                            "<remove-project> {what}: no such project (add optional=\"true\" if that is fine)"
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(Manifest { remotes, projects })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files held in memory, as a test's manifest repository.
    pub(crate) struct MemFiles(pub(crate) BTreeMap<String, String>);

    impl Files for MemFiles {
        fn read(&self, path: &str) -> Result<String, ManifestError> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| ManifestError::File {
                    file: path.to_string(),
                    what: "no such file".to_string(),
                })
        }
        fn label(&self, path: &str) -> String {
            path.to_string()
        }
    }

    fn files(list: &[(&str, &str)]) -> MemFiles {
        MemFiles(
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    const MANIFEST_URL: &str = "https://android.googlesource.com/platform/manifest";

    /// Modelled on AOSP's default.xml: remote aosp at "..", a default revision and sync-j,
    /// projects with paths and groups, and a notdefault one; linkfile and copyfile children
    /// and a superproject element that mean nothing to a mirror.
    const AOSP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<manifest>
  <remote  name="aosp"
           fetch=".."
           review="https://android-review.googlesource.com/" />
  <default revision="refs/tags/android-14.0.0_r1"
           remote="aosp"
           sync-j="4" />
  <superproject name="platform/superproject" remote="aosp"/>
  <contactinfo bugurl="go/repo-bug" />
  <project path="build/make" name="platform/build" groups="pdk" >
    <linkfile src="CleanSpec.mk" dest="build/CleanSpec.mk" />
    <copyfile src="core/root.mk" dest="Makefile" />
  </project>
  <project path="art" name="platform/art" groups="pdk" />
  <project path="device/google/cuttlefish" name="device/google/cuttlefish" groups="device" />
  <project path="prebuilts/clang/host/darwin-x86" name="platform/prebuilts/clang/host/darwin-x86" groups="pdk,darwin,notdefault" clone-depth="1" />
  <project path="external/zlib" name="platform/external/zlib" revision="main" groups="pdk" />
  <include name="extra.xml" groups="extra" />
  <remove-project name="platform/art" />
  <remove-project name="platform/never-there" optional="true" />
</manifest>
"#;

    const EXTRA: &str = r#"<manifest>
  <remote name="github" fetch="https://github.com/" revision="master" />
  <project path="external/foo" name="acme/foo" remote="github" />
  <project path="tools/repo" name="tools/repo" groups="tools" />
</manifest>
"#;

    fn aosp() -> Manifest {
        parse(
            &files(&[("default.xml", AOSP), ("extra.xml", EXTRA)]),
            "default.xml",
            Some(MANIFEST_URL),
        )
        .unwrap()
    }

    fn names(m: &Manifest, groups: &[&str]) -> Vec<String> {
        let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        m.projects
            .iter()
            .filter(|p| matches_groups(&p.groups, &groups))
            .map(|p| p.name.clone())
            .collect()
    }

    #[test]
    fn an_aosp_manifest_with_an_include_and_a_removal() {
        let m = aosp();
        let build = &m.projects[0];
        assert_eq!(build.name, "platform/build");
        assert_eq!(build.path, "build/make");
        assert_eq!(build.revision, "refs/tags/android-14.0.0_r1");
        assert_eq!(
            build.url.as_deref(),
            Some("https://android.googlesource.com/platform/build")
        );
        let zlib = m
            .projects
            .iter()
            .find(|p| p.path == "external/zlib")
            .unwrap();
        assert_eq!(zlib.revision, "main");
        // The included remote's revision beats the default; its fetch is absolute.
        let foo = m.projects.iter().find(|p| p.name == "acme/foo").unwrap();
        assert_eq!(foo.revision, "master");
        assert_eq!(foo.url.as_deref(), Some("https://github.com/acme/foo"));
        assert!(foo.groups.contains("extra"), "{:?}", foo.groups);
        // The included project without a remote takes the default's.
        let repo = m.projects.iter().find(|p| p.name == "tools/repo").unwrap();
        assert_eq!(
            repo.url.as_deref(),
            Some("https://android.googlesource.com/tools/repo")
        );
        assert!(!m.projects.iter().any(|p| p.name == "platform/art"));
        assert_eq!(m.projects.len(), 6);
    }

    #[test]
    fn groups_filter_as_repo_init_g() {
        let m = aosp();
        let default = names(&m, &[]);
        assert!(!default.contains(&"platform/prebuilts/clang/host/darwin-x86".to_string()));
        assert_eq!(default.len(), 5, "{default:?}");
        assert_eq!(names(&m, &["all"]).len(), 6);
        assert_eq!(
            names(&m, &["pdk"]),
            vec![
                "platform/build",
                "platform/prebuilts/clang/host/darwin-x86",
                "platform/external/zlib"
            ]
        );
        assert_eq!(
            names(&m, &["default", "-pdk"]),
            vec!["device/google/cuttlefish", "acme/foo", "tools/repo"]
        );
        assert_eq!(names(&m, &["extra"]), vec!["acme/foo", "tools/repo"]);
        assert_eq!(names(&m, &["name:tools/repo"]), vec!["tools/repo"]);
        assert_eq!(names(&m, &["path:art"]), Vec::<String>::new());
        assert_eq!(split_groups("a, b\tc,,d"), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn relative_fetch_needs_the_manifest_url() {
        let m = parse(
            &files(&[("default.xml", AOSP), ("extra.xml", EXTRA)]),
            "default.xml",
            None,
        )
        .unwrap();
        assert_eq!(m.projects[0].url, None);
        let foo = m.projects.iter().find(|p| p.name == "acme/foo").unwrap();
        assert_eq!(foo.url.as_deref(), Some("https://github.com/acme/foo"));
    }

    #[test]
    fn includes_nest_in_subdirectories_and_loops_are_named() {
        let m = parse(
            &files(&[
                ("default.xml", r#"<manifest><remote name="o" fetch="." /><default remote="o" revision="main"/><include name="sub/a.xml"/></manifest>"#),
                ("sub/a.xml", r#"<manifest><include name="b.xml" revision="stable"/></manifest>"#),
                ("sub/b.xml", r#"<manifest><project name="x"/></manifest>"#),
            ]),
            "default.xml",
            Some("/srv/up/manifest.git"),
        )
        .unwrap();
        assert_eq!(m.projects[0].revision, "stable");
        assert_eq!(m.projects[0].url.as_deref(), Some("/srv/up/x"));
        let err = parse(
            &files(&[
                (
                    "default.xml",
                    r#"<manifest><include name="a.xml"/></manifest>"#,
                ),
                (
                    "a.xml",
                    r#"<manifest><include name="default.xml"/></manifest>"#,
                ),
            ]),
            "default.xml",
            None,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "default.xml: include loop: default.xml -> a.xml -> default.xml"
        );
    }

    #[test]
    fn bad_manifests_are_one_line_naming_the_file_and_the_fault() {
        let head = r#"<manifest><remote name="o" fetch="https://h/"/><default remote="o" revision="main"/>"#;
        for (body, want) in [
            ("not xml at all", "default.xml: not XML"),
            ("<other/>", "default.xml: not a repo manifest"),
            (
                &format!("{head}\n<project name=\"a\" remote=\"nope\"/></manifest>"),
                "default.xml:2: project a: unknown remote nope",
            ),
            (
                &format!("{head}\n<project name=\"../etc\"/></manifest>"),
                "default.xml:2: project ../etc: ",
            ),
            (
                &format!("{head}\n<project name=\"-rf\"/></manifest>"),
                "default.xml:2: project -rf: ",
            ),
            (
                &format!("{head}\n<project name=\"a\" path=\"../../x\"/></manifest>"),
                "default.xml:2: project a: path \"../../x\": has a .. component",
            ),
            (
                &format!("{head}\n<remove-project name=\"zz\"/></manifest>"),
                "default.xml:2: <remove-project> zz: no such project",
            ),
            (
                &format!("{head}\n<include name=\"../x.xml\"/></manifest>"),
                "default.xml:2: <include name=\"../x.xml\">: has a .. component",
            ),
            (
                &format!("{head}\n<include name=\"missing.xml\"/></manifest>"),
                "missing.xml: no such file",
            ),
            (
                r#"<manifest><remote name="o" fetch="x"/><project name="a" remote="o"/></manifest>"#,
                "default.xml:1: project a: no revision",
            ),
            (
                r#"<manifest><project name="a"/></manifest>"#,
                "default.xml:1: project a: no remote",
            ),
            (
                &format!(
                    "{head}<project name=\"a\"/>\n<project name=\"b\" path=\"a\"/></manifest>"
                ),
                "default.xml:2: project b: path a is used twice",
            ),
        ] {
            let err = parse(&files(&[("default.xml", body)]), "default.xml", None)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{err:?} for {body}");
            assert!(!err.contains('\n'), "{err:?}");
        }
    }

    #[test]
    fn remove_project_by_path_and_nested_projects() {
        let m = parse(
            &files(&[(
                "default.xml",
                r#"<manifest><remote name="o" fetch="https://h"/><default remote="o" revision="main"/>
                <project name="a" path="one"><project name="sub" path="one/sub"/></project>
                <project name="a" path="two"/>
                <remove-project path="two"/>
                <remove-project name="gone" optional="true"/>
                </manifest>"#,
            )]),
            "default.xml",
            None,
        )
        .unwrap();
        let got: Vec<(&str, &str)> = m
            .projects
            .iter()
            .map(|p| (p.name.as_str(), p.path.as_str()))
            .collect();
        assert_eq!(got, vec![("a", "one"), ("a/sub", "one/sub")]);
        assert_eq!(m.projects[1].url.as_deref(), Some("https://h/a/sub"));
    }
}
