//! A remote's `fetch` resolved against the manifest's own URL, exactly as `repo` does it
//! (`_XmlRemote._resolveFetchUrl` and `normalize_url` in git-repo's `manifest_xml.py`):
//! trailing slashes dropped, an scp-like `user@host:path` read as `ssh://user@host/path`, then
//! an RFC 3986 join (`urllib.parse.urljoin`), with a URL that has no scheme (a path, or a
//! `host:path`) joined as if it had one. A project's URL is then the resolved fetch, its
//! trailing slashes dropped, `/`, and the project's name.

/// `url` as `repo`'s `normalize_url` leaves it.
pub(crate) fn normalize(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if !has_scheme(url) && is_scp_like(url) {
        return format!("ssh://{}", url.replacen(':', "/", 1));
    }
    url.to_string()
}

/// `user@host:path` (git's scp-like syntax), as `repo` recognises it.
fn is_scp_like(url: &str) -> bool {
    let Some((user, rest)) = url.split_once('@') else {
        return false;
    };
    let Some((host, path)) = rest.split_once(':') else {
        return false;
    };
    !user.is_empty()
        && !user.contains([':', '/'])
        && !host.is_empty()
        && !host.contains('/')
        && path.chars().next().is_some_and(|c| c != '/')
}

/// Whether `url` starts with `scheme:` (letters, digits, `+-.`, led by a letter).
fn has_scheme(url: &str) -> bool {
    match url.split_once(':') {
        Some((scheme, _)) => {
            scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

/// Whether `fetch` needs a base to mean anything: not a URL with a scheme, not scp-like, not
/// an absolute path.
pub(crate) fn is_relative(fetch: &str) -> bool {
    let n = normalize(fetch);
    !(has_scheme(&n) || n.starts_with('/'))
}

/// `fetch` resolved against `manifest_url`.
pub(crate) fn resolve(manifest_url: &str, fetch: &str) -> String {
    let fetch = normalize(fetch);
    let base = normalize(manifest_url);
    // A scheme of its own (urljoin keeps such a URL whole: `https://`, but also `ext::`,
    // which parse_url refuses later).
    if has_scheme(&fetch) {
        return fetch;
    }
    // The part before the path ("https://host", "ssh://git@host:29418", "host:x" read as
    // "gopher://host:x" as repo does, or nothing for a path) and the path.
    let (prefix, path) = match base.find("://") {
        Some(i) => {
            let after = i + 3;
            match base[after..].find('/') {
                Some(j) => base.split_at(after + j),
                None => (base.as_str(), ""),
            }
        }
        None => {
            let colon = base.find(':');
            let slash = base.find('/');
            let plain_path = match (colon, slash) {
                (None, _) => true,
                (Some(c), Some(s)) => c + 1 == s,
                (Some(_), None) => false,
            };
            if plain_path {
                ("", base.as_str())
            } else {
                match base.find('/') {
                    Some(j) => base.split_at(j),
                    None => (base.as_str(), ""),
                }
            }
        }
    };
    if fetch.is_empty() {
        return base.clone();
    }
    let merged = if fetch.starts_with('/') {
        fetch.clone()
    } else if !prefix.is_empty() && path.is_empty() {
        format!("/{fetch}")
    } else {
        let dir = match path.rfind('/') {
            Some(i) => &path[..=i],
            None => "",
        };
        format!("{dir}{fetch}")
    };
    format!("{prefix}{}", remove_dot_segments(&merged))
}

/// RFC 3986 section 5.2.4, as Python's `urljoin` applies it: `.` and `..` segments removed,
/// never above the root, a trailing slash kept where the last segment was one of them.
fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let segments: Vec<&str> = path.split('/').collect();
    let mut out: Vec<&str> = Vec::new();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing = i == last,
            ".." => {
                if out.len() > usize::from(absolute) {
                    out.pop();
                }
                trailing = i == last;
            }
            s => {
                if !(s.is_empty() && i == 0 && absolute) || out.is_empty() {
                    out.push(s);
                }
                trailing = false;
            }
        }
    }
    let mut joined = out.join("/");
    if absolute && !joined.starts_with('/') {
        joined.insert(0, '/');
    }
    if trailing && !joined.ends_with('/') {
        joined.push('/');
    }
    joined
}

/// The URL `repo` fetches a project from: the resolved fetch without trailing slashes, `/`,
/// the name.
pub(crate) fn project_url(resolved_fetch: &str, name: &str) -> String {
    format!("{}/{name}", resolved_fetch.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every expectation below is what git-repo v2.64's own `_resolveFetchUrl` and
    /// `ToRemoteSpec` print for the same pair.
    #[test]
    fn resolved_as_repo_resolves_them() {
        for (manifest, fetch, want) in [
            (
                "https://android.googlesource.com/platform/manifest",
                "..",
                "https://android.googlesource.com/p/x",
            ),
            ("https://h/platform/manifest", ".", "https://h/platform/p/x"),
            ("https://h/platform/manifest/", "..", "https://h/p/x"),
            ("/srv/up/platform/manifest.git", "..", "/srv/up/p/x"),
            ("/srv/up/manifest.git", ".", "/srv/up/p/x"),
            ("git@host:plat/manifest", "..", "ssh://git@host/p/x"),
            (
                "ssh://git@host:29418/plat/manifest",
                "../..",
                "ssh://git@host:29418/p/x",
            ),
            ("/srv/m.git", "https://x/y", "https://x/y/p/x"),
            (
                "https://h/a/b/manifest",
                "../other",
                "https://h/a/other/p/x",
            ),
            ("https://h/manifest", "..", "https://h/p/x"),
            ("/srv/m.git", "../../..", "/p/x"),
            ("https://h/a/manifest", "/abs", "https://h/abs/p/x"),
        ] {
            assert_eq!(
                project_url(&resolve(manifest, fetch), "p/x"),
                want,
                "{manifest} + {fetch}"
            );
        }
    }

    #[test]
    fn relative_or_not() {
        assert!(is_relative(".."));
        assert!(is_relative("."));
        assert!(is_relative("../mirror"));
        assert!(!is_relative("https://h/"));
        assert!(!is_relative("git@host:x"));
        assert!(!is_relative("/srv/git"));
        assert!(!is_relative("ext::sh -c x"));
        assert_eq!(resolve("https://h/m", "ext::sh"), "ext::sh");
    }
}
