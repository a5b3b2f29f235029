//! External remotes in `repos.toml`: a repo's `upstream` (a git URL its master pulls from on a
//! schedule) and its `downstream`s (URLs its master pushes every accepted push to).
//!
//! ```toml
//! [repos."mirrors/linux"]
//! R = ["@all"]
//! upstream.url = "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
//! upstream.interval = "30m"            # default 1h
//! upstream.refs = ["refs/heads/*", "refs/tags/*"]   # the default
//! upstream.divergence = "keep"         # or "overwrite"
//! upstream.prune = false
//!
//! [[repos."team/app".downstream]]
//! url = "ssh://git@backup.example.com/app.git"
//! identity = "/srv/git/.ssh/backup_ed25519"
//! host_key = "ssh-ed25519 AAAAC3Nza..."
//! ```
//!
//! Credentials never live here: an ssh remote names an identity file (or uses the server's
//! key) and its host key is pinned; an https remote names a file holding its token. A URL
//! that carries a password, or that would run a program (`ext::`), is refused.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::file::{ConfigError, Source};

/// The refs a pull mirror takes when `upstream.refs` is not set: branches and tags.
pub(crate) const DEFAULT_REFS: &[&str] = &["refs/heads/*", "refs/tags/*"];

/// How often an upstream is fetched when `upstream.interval` is not set.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// How a remote is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    Ssh,
    Git,
    Http,
    Https,
    Local,
}

/// A validated remote URL, as git takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteUrl {
    pub(crate) url: String,
    pub(crate) transport: Transport,
    /// The host (ssh, git, http, https), for host-key pinning and messages.
    pub(crate) host: Option<String>,
    /// The port, when the URL names one.
    pub(crate) port: Option<u16>,
}

/// What to do with a ref that went a different way on the two sides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Divergence {
    /// Leave ours, report it (the default).
    #[default]
    Keep,
    /// Take theirs; ours is kept under `refs/gitmirror/diverged/`.
    Overwrite,
}

/// How to log in to a remote; never the secret itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Credentials {
    /// ssh: the private key to use instead of the server's own.
    pub(crate) identity: Option<PathBuf>,
    /// ssh: the remote's host key, pinned (`TYPE BASE64`).
    pub(crate) host_key: Option<String>,
    /// https: a file holding the token.
    pub(crate) token_file: Option<PathBuf>,
    /// https: the certificate authority to trust for the remote's certificate (a private
    /// CA), instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_file: Option<PathBuf>,
}

/// A repo's pull mirror settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Upstream {
    pub(crate) url: RemoteUrl,
    pub(crate) interval_secs: u64,
    /// Ref patterns (`refs/heads/*`, `refs/tags/v1.0`), at most one `*` each.
    pub(crate) refs: Vec<String>,
    pub(crate) divergence: Divergence,
    pub(crate) prune: bool,
    pub(crate) credentials: Credentials,
    /// Set on a `repo` manifest's repository imported with `--follow`: the import runs again
    /// whenever a fetch moves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) manifest: Option<ManifestFollow>,
}

/// How a followed manifest is imported again (`upstream.manifest` of the manifest's
/// repository), as `gitmirror import-manifest --follow` first imported it.
///
/// ```toml
/// upstream.manifest = { file = "default.xml", branch = "main", groups = ["default"], prefix = "aosp" }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestFollow {
    /// The manifest file in the repository (`default.xml`).
    pub(crate) file: String,
    /// The branch read; the repository's HEAD when not set.
    pub(crate) branch: Option<String>,
    /// The groups imported (`repo init -g`); `default` when empty.
    pub(crate) groups: Vec<String>,
    /// Prepended (with `/`) to every project's name.
    pub(crate) prefix: Option<String>,
    /// The repo whose access and mirror settings new projects' tables copy.
    pub(crate) like: Option<String>,
}

/// One push mirror of a repo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Downstream {
    pub(crate) url: RemoteUrl,
    pub(crate) refs: Vec<String>,
    pub(crate) divergence: Divergence,
    pub(crate) credentials: Credentials,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    url: Spanned<String>,
    interval: Option<Spanned<String>>,
    refs: Option<Vec<Spanned<String>>>,
    divergence: Option<Spanned<String>>,
    prune: Option<bool>,
    identity: Option<Spanned<String>>,
    host_key: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    manifest: Option<Spanned<RawManifestFollow>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifestFollow {
    file: Option<String>,
    branch: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    prefix: Option<String>,
    like: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDownstream {
    url: Spanned<String>,
    refs: Option<Vec<Spanned<String>>>,
    divergence: Option<Spanned<String>>,
    identity: Option<Spanned<String>>,
    host_key: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

/// Validates a repo's `upstream` table.
pub(super) fn upstream(
    src: &Source,
    repo: &str,
    raw: &Spanned<RawUpstream>,
) -> Result<Upstream, ConfigError> {
    let u = raw.get_ref();
    let what = format!("upstream of repo {repo}");
    let url = remote_url(src, &what, &u.url)?;
    let interval_secs = match &u.interval {
        None => DEFAULT_INTERVAL.as_secs(),
        Some(i) => {
            let d = humantime::parse_duration(i.get_ref()).map_err(|e| {
                src.error(
                    i.span(),
                    format!("upstream.interval of repo {repo}: {e}; expected a duration such as \"30m\" or \"6h\""),
                )
            })?;
            if d < Duration::from_secs(1) {
                return Err(src.error(
                    i.span(),
                    format!("upstream.interval of repo {repo}: expected at least 1s"),
                ));
            }
            d.as_secs()
        }
    };
    Ok(Upstream {
        interval_secs,
        refs: ref_patterns(src, &what, u.refs.as_deref())?,
        divergence: divergence(src, &what, u.divergence.as_ref())?,
        prune: u.prune.unwrap_or(false),
        credentials: credentials(
            src,
            &what,
            &url,
            u.identity.as_ref(),
            u.host_key.as_ref(),
            u.token_file.as_ref(),
            u.ca_file.as_ref(),
        )?,
        manifest: u
            .manifest
            .as_ref()
            .map(|m| manifest_follow(src, repo, m))
            .transpose()?,
        url,
    })
}

/// Validates `upstream.manifest`: a relative file path, a branch name, repo names.
fn manifest_follow(
    src: &Source,
    repo: &str,
    raw: &Spanned<RawManifestFollow>,
) -> Result<ManifestFollow, ConfigError> {
    let m = raw.get_ref();
    let bad = |what: String| {
        src.error(
            raw.span(),
            format!("upstream.manifest of repo {repo}: {what}"),
        )
    };
    let file = m.file.clone().unwrap_or_else(|| "default.xml".to_string());
    if file.is_empty()
        || file.starts_with('/')
        || file
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        || file.chars().any(char::is_control)
    {
        return Err(bad(format!(
            "file {file:?}: expected a path in the manifest repository such as \"default.xml\""
        )));
    }
    if let Some(b) = &m.branch
        && !git2::Reference::is_valid_name(&format!("refs/heads/{b}"))
    {
        return Err(bad(format!("branch {b:?}: expected a branch name")));
    }
    if let Some(g) = m
        .groups
        .iter()
        .find(|g| g.is_empty() || g.contains([',', ' ']) || g.chars().any(char::is_control))
    {
        return Err(bad(format!("groups: {g:?}: expected one group per string")));
    }
    for (key, name) in [("prefix", &m.prefix), ("like", &m.like)] {
        if let Some(n) = name
            && (crate::names::RepoName::parse(n).is_err() || n.ends_with(".git"))
        {
            return Err(bad(format!(
                "{key} {n:?}: expected a repo name such as \"aosp\""
            )));
        }
    }
    Ok(ManifestFollow {
        file,
        branch: m.branch.clone(),
        groups: m.groups.clone(),
        prefix: m.prefix.clone(),
        like: m.like.clone(),
    })
}

/// Validates a repo's `downstream` tables.
pub(super) fn downstreams(
    src: &Source,
    repo: &str,
    raw: &[Spanned<RawDownstream>],
) -> Result<Vec<Downstream>, ConfigError> {
    let mut out: Vec<Downstream> = Vec::new();
    for d in raw {
        let r = d.get_ref();
        let what = format!("downstream of repo {repo}");
        let url = remote_url(src, &what, &r.url)?;
        if out.iter().any(|o| o.url.url == url.url) {
            return Err(src.error(r.url.span(), format!("{what}: {} is listed twice", url.url)));
        }
        out.push(Downstream {
            refs: ref_patterns(src, &what, r.refs.as_deref())?,
            divergence: divergence(src, &what, r.divergence.as_ref())?,
            credentials: credentials(
                src,
                &what,
                &url,
                r.identity.as_ref(),
                r.host_key.as_ref(),
                r.token_file.as_ref(),
                r.ca_file.as_ref(),
            )?,
            url,
        });
    }
    Ok(out)
}

fn divergence(
    src: &Source,
    what: &str,
    raw: Option<&Spanned<String>>,
) -> Result<Divergence, ConfigError> {
    match raw.map(|r| (r, r.get_ref().as_str())) {
        None => Ok(Divergence::Keep),
        Some((_, "keep")) => Ok(Divergence::Keep),
        Some((_, "overwrite")) => Ok(Divergence::Overwrite),
        Some((r, other)) => Err(src.error(
            r.span(),
            format!("{what}: divergence = {other:?}; expected \"keep\" or \"overwrite\""),
        )),
    }
}

fn ref_patterns(
    src: &Source,
    what: &str,
    raw: Option<&[Spanned<String>]>,
) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_REFS.iter().map(|s| s.to_string()).collect());
    };
    if raw.is_empty() {
        return Err(src.error(
            0..0,
            format!("{what}: refs is empty; expected patterns such as \"refs/heads/*\""),
        ));
    }
    let mut out = Vec::new();
    for p in raw {
        let text = p.get_ref();
        check_pattern(text).map_err(|why| {
            src.error(
                p.span(),
                format!("{what}: ref pattern {text:?}: {why}; expected e.g. \"refs/heads/*\" or \"refs/tags/v1.0\""),
            )
        })?;
        out.push(text.clone());
    }
    Ok(out)
}

/// A ref pattern: a full ref name under `refs/`, with at most one `*`, never in gitmirror's
/// own namespace.
pub(crate) fn check_pattern(p: &str) -> Result<(), &'static str> {
    if !p.starts_with("refs/") {
        return Err("it must start with refs/");
    }
    if p.starts_with(crate::proto::OWN_NS) {
        return Err("refs/gitmirror/ is this server's own namespace");
    }
    if p.matches('*').count() > 1 {
        return Err("at most one * is allowed");
    }
    if !git2::Reference::is_valid_name(&p.replace('*', "x")) {
        return Err("it is not a valid ref name");
    }
    Ok(())
}

// Used by the fetch engine, which is being built on another branch.
#[allow(dead_code)]
/// Whether `name` matches `pattern` (one `*` matching any run of characters, `/` included,
/// as git's refspecs do).
pub(crate) fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
    }
}

fn credentials(
    src: &Source,
    what: &str,
    url: &RemoteUrl,
    identity: Option<&Spanned<String>>,
    host_key: Option<&Spanned<String>>,
    token_file: Option<&Spanned<String>>,
    ca_file: Option<&Spanned<String>>,
) -> Result<Credentials, ConfigError> {
    let path = |raw: &Spanned<String>, key: &str| {
        let p = PathBuf::from(raw.get_ref());
        if !p.is_absolute() || raw.get_ref().chars().any(char::is_control) {
            return Err(src.error(
                raw.span(),
                format!(
                    "{what}: {key} {:?}: expected an absolute path",
                    raw.get_ref()
                ),
            ));
        }
        Ok(p)
    };
    let only = |raw: Option<&Spanned<String>>, key: &str, allowed: Transport, needs: &str| match raw
    {
        Some(r) if url.transport != allowed => Err(src.error(
            r.span(),
            format!(
                "{what}: {key} is for {needs} URLs only, and {} is not one",
                url.url
            ),
        )),
        _ => Ok(()),
    };
    only(identity, "identity", Transport::Ssh, "ssh://")?;
    only(host_key, "host_key", Transport::Ssh, "ssh://")?;
    // A token over plain http would cross the network in clear.
    only(token_file, "token_file", Transport::Https, "https://")?;
    only(ca_file, "ca_file", Transport::Https, "https://")?;
    let host_key = match host_key {
        None => None,
        Some(k) => {
            let text = k.get_ref().trim();
            let mut parts = text.split_whitespace();
            let ok = matches!(
                (parts.next(), parts.next(), parts.next()),
                (Some(kind), Some(body), None)
                    if (kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
                    && !body.is_empty()
            ) && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=-@. ".contains(c));
            if !ok {
                return Err(src.error(
                    k.span(),
                    format!("{what}: host_key: expected \"TYPE BASE64\" as in a known_hosts line, e.g. \"ssh-ed25519 AAAAC3...\""),
                ));
            }
            Some(text.to_string())
        }
    };
    Ok(Credentials {
        identity: identity.map(|i| path(i, "identity")).transpose()?,
        host_key,
        token_file: token_file.map(|t| path(t, "token_file")).transpose()?,
        ca_file: ca_file.map(|c| path(c, "ca_file")).transpose()?,
    })
}

fn remote_url(src: &Source, what: &str, raw: &Spanned<String>) -> Result<RemoteUrl, ConfigError> {
    parse_url(raw.get_ref()).map_err(|why| {
        src.error(
            raw.span(),
            format!(
                "{what}: url {:?}: {why}; expected ssh://, git://, https:// (or http://), or an absolute path",
                redacted(raw.get_ref()).chars().take(80).collect::<String>()
            ),
        )
    })
}

/// `url` with whatever stands before an `@` in its host part (a user, and a password if
/// someone wrote one) replaced by `***`: what an error may show of a refused URL.
fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let host_part = &rest[..rest.find('/').unwrap_or(rest.len())];
    match host_part.rfind('@') {
        Some(at) => format!("{scheme}***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Validates a remote URL as git would take it, refusing what could run a program, carry a
/// password, or pass an option to ssh.
pub(crate) fn parse_url(text: &str) -> Result<RemoteUrl, &'static str> {
    if text.is_empty() || text.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("empty, or holds spaces or control characters");
    }
    let local = |path: &str| -> Result<RemoteUrl, &'static str> {
        if !path.starts_with('/') {
            return Err("a local path must be absolute");
        }
        Ok(RemoteUrl {
            url: path.to_string(),
            transport: Transport::Local,
            host: None,
            port: None,
        })
    };
    if text.starts_with('/') {
        return local(text);
    }
    if let Some(path) = text.strip_prefix("file://") {
        return local(path);
    }
    let (transport, rest) = if let Some(r) = text.strip_prefix("ssh://") {
        (Transport::Ssh, r)
    } else if let Some(r) = text.strip_prefix("git://") {
        (Transport::Git, r)
    } else if let Some(r) = text.strip_prefix("https://") {
        (Transport::Https, r)
    } else if let Some(r) = text.strip_prefix("http://") {
        (Transport::Http, r)
    } else if text.contains("::") || text.contains("://") {
        // ext::, fd:: and other remote helpers run programs; other schemes we do not know.
        return Err("not a transport gitmirror fetches over");
    } else {
        // scp-like: [user@]host:path.
        let (authority, path) = text.split_once(':').ok_or("not a URL")?;
        if path.is_empty() || authority.is_empty() {
            return Err("not a URL");
        }
        let host = check_authority(authority, false)?;
        return Ok(RemoteUrl {
            url: text.to_string(),
            transport: Transport::Ssh,
            host: Some(host.0),
            port: None,
        });
    };
    let (authority, path) = rest.split_once('/').ok_or("no path after the host")?;
    if path.is_empty() {
        return Err("no path after the host");
    }
    let web = matches!(transport, Transport::Http | Transport::Https);
    let (host, port) = check_authority(authority, true)?;
    if web && authority.contains('@') {
        return Err("credentials in the URL; use token_file");
    }
    if transport == Transport::Git && authority.contains('@') {
        return Err("git:// URLs take no user");
    }
    Ok(RemoteUrl {
        url: text.to_string(),
        transport,
        host: Some(host),
        port,
    })
}

/// `[user@]host[:port]`: no part may start with `-` (ssh would read an option), no password.
fn check_authority(
    authority: &str,
    port_allowed: bool,
) -> Result<(String, Option<u16>), &'static str> {
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if let Some(u) = user {
        if u.contains(':') {
            return Err("a password in the URL; credentials never live in repos.toml");
        }
        if u.is_empty()
            || u.starts_with('-')
            || !u
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err("a bad user name");
        }
    }
    let bad_port = |p: &str| p.parse::<u16>().map_err(|_| "a bad port");
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        // [IPv6]:port
        let (h, after) = rest.split_once(']').ok_or("a bad host")?;
        let port = match after.strip_prefix(':') {
            Some(p) if port_allowed => Some(bad_port(p)?),
            None if after.is_empty() => None,
            _ => return Err("a bad host"),
        };
        (h, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) if port_allowed => (h, Some(bad_port(p)?)),
            Some(_) => return Err("a bad host"),
            None => (hostport, None),
        }
    };
    if host.is_empty()
        || host.starts_with('-')
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
    {
        return Err("a bad host");
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_could_run_code_or_carry_secrets_are_refused() {
        for good in [
            "ssh://git@example.com/a/b.git",
            "ssh://example.com:2222/a.git",
            "git@example.com:a/b.git",
            "git://example.com/a.git",
            "https://example.com/a.git",
            "http://127.0.0.1:8080/a.git",
            "/srv/git/a.git",
            "file:///srv/git/a.git",
        ] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
        for bad in [
            "ext::sh -c touch% /tmp/pwned",
            "ext::ssh",
            "fd::3",
            "ssh://-oProxyCommand=touch/a",
            "-oProxyCommand=x:a",
            "https://user:secret@example.com/a.git",
            "https://user@example.com/a.git",
            "ssh://git:pw@example.com/a.git",
            "relative/path",
            "ftp://example.com/a.git",
            "ssh://example.com",
            "https://exa mple.com/a",
            "git://user@example.com/a.git",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        let u = parse_url("ssh://git@example.com:2222/a.git").unwrap();
        assert_eq!(
            (u.host.as_deref(), u.port),
            (Some("example.com"), Some(2222))
        );
    }

    #[test]
    fn refused_urls_never_show_a_password() {
        assert_eq!(
            redacted("https://bob:secret@example.com/a.git"),
            "https://***@example.com/a.git"
        );
        assert_eq!(redacted("bob:pw@host:path/x"), "***@host:path/x");
        assert_eq!(redacted("/srv/a@b.git"), "/srv/a@b.git");
    }

    #[test]
    fn a_followed_manifest_is_validated() {
        use crate::config::Rules;
        let rules = |m: &str| {
            Rules::from_source(&Source::from_text(
                "repos.toml",
                format!("[repos.m]\nupstream.url = \"https://h/m\"\nupstream.manifest = {m}\n"),
            ))
        };
        let r = rules("{ branch = \"main\", groups = [\"default\", \"-x\"], prefix = \"aosp\" }")
            .unwrap();
        let m = r
            .upstream(&crate::names::RepoName::parse("m").unwrap())
            .and_then(|u| u.manifest.clone())
            .unwrap();
        assert_eq!(m.file, "default.xml");
        assert_eq!(m.groups, vec!["default", "-x"]);
        for (bad, needle) in [
            ("{ file = \"../x.xml\" }", "file \"../x.xml\""),
            ("{ branch = \"a..b\" }", "branch"),
            ("{ prefix = \"../x\" }", "prefix"),
            ("{ groups = [\"a,b\"] }", "groups"),
            ("{ nope = 1 }", "unknown field"),
        ] {
            let err = rules(bad).unwrap_err().to_string();
            assert!(err.starts_with("repos.toml:3: "), "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn patterns() {
        assert!(check_pattern("refs/heads/*").is_ok());
        assert!(check_pattern("refs/tags/v1.0").is_ok());
        assert!(check_pattern("heads/*").is_err());
        assert!(check_pattern("refs/*/*").is_err());
        assert!(check_pattern("refs/gitmirror/x").is_err());
        assert!(check_pattern("refs/heads/a..b").is_err());
        assert!(pattern_matches("refs/heads/*", "refs/heads/a/b"));
        assert!(pattern_matches("refs/tags/v1.0", "refs/tags/v1.0"));
        assert!(!pattern_matches("refs/heads/*", "refs/tags/a"));
        assert!(!pattern_matches("refs/heads/*", "refs/pull/1/head"));
    }
}
