//! gitolite's wild repo patterns (Perl regexes matched whole against a repo name, with
//! `CREATOR` standing for the creator's name) as gitmirror's globs (`*`: one or more
//! characters inside one path component; `**`: one or more characters, `/` included).
//! Only what converts exactly is converted; the rest is refused with the reason.

/// One piece of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Lit(char),
    /// `..*`, `.+`: one or more of anything.
    AnyPlus,
    /// `.*`: zero or more of anything.
    AnyStar,
    /// `[^/]+`: one or more inside a component.
    CompPlus,
    /// `[^/]*`: zero or more inside a component.
    CompStar,
}

/// Whether a `repo` item is a plain name to gitolite (its `$REPONAME_PATT`), not a pattern.
pub(crate) fn is_plain_name(item: &str) -> bool {
    let mut chars = item.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._@/+".contains(c))
}

/// The glob that matches exactly the valid repo names `regex` matches, or why there is none.
pub(crate) fn to_glob(regex: &str) -> Result<String, String> {
    let body = regex.strip_prefix('^').unwrap_or(regex);
    let body = body.strip_suffix('$').unwrap_or(body);
    let pieces = lex(body)?;
    // Two wildcards side by side would read as another one (`*` `*` is `**`).
    if pieces
        .windows(2)
        .any(|w| !matches!(w[0], Piece::Lit(_)) && !matches!(w[1], Piece::Lit(_)))
    {
        return Err(format!("{regex}: adjacent wildcards have no exact glob"));
    }
    let mut out = String::new();
    for (i, piece) in pieces.iter().enumerate() {
        // A zero-or-more wildcard is exact only as a whole component: an empty component is
        // not a valid name, so there "zero or more" and "one or more" agree.
        let whole_component = (i == 0 || pieces[i - 1] == Piece::Lit('/'))
            && pieces.get(i + 1).is_none_or(|p| *p == Piece::Lit('/'));
        match piece {
            Piece::Lit(c) => out.push(*c),
            Piece::AnyPlus => out.push_str("**"),
            Piece::CompPlus => out.push('*'),
            Piece::AnyStar if whole_component => out.push_str("**"),
            Piece::CompStar if whole_component => out.push('*'),
            Piece::AnyStar | Piece::CompStar => {
                return Err(format!(
                    "{regex}: a wildcard that may match nothing in the middle of a name (.* or [^/]*) has no glob; write ..* (one or more) if that is meant"
                ));
            }
        }
    }
    // gitolite finds the creator's name anywhere in a repo name; gitmirror only as a whole
    // path component.
    if out
        .split('/')
        .any(|c| c.contains("CREATOR") && c != "CREATOR")
    {
        return Err(format!(
            "{regex}: CREATOR inside a path component; gitmirror has it only as a whole component (users/CREATOR/*)"
        ));
    }
    Ok(out)
}

fn lex(body: &str) -> Result<Vec<Piece>, String> {
    let chars: Vec<char> = body.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let unsupported = |what: &str| {
        Err(format!(
            "{body}: {what} has no glob equivalent (globs have * within a component and ** across)"
        ))
    };
    while i < chars.len() {
        let rest: String = chars[i..].iter().collect();
        if rest.starts_with("[^/]+") {
            out.push(Piece::CompPlus);
            i += 5;
        } else if rest.starts_with("[^/][^/]*") {
            out.push(Piece::CompPlus);
            i += 9;
        } else if rest.starts_with("[^/]*") {
            out.push(Piece::CompStar);
            i += 5;
        } else if rest.starts_with("..*") || rest.starts_with(".+") {
            out.push(Piece::AnyPlus);
            i += if rest.starts_with(".+") { 2 } else { 3 };
        } else if rest.starts_with(".*") {
            out.push(Piece::AnyStar);
            i += 2;
        } else {
            let c = chars[i];
            match c {
                '\\' => match chars.get(i + 1) {
                    Some(&e) if ".-+@_/".contains(e) => {
                        out.push(Piece::Lit(e));
                        i += 2;
                    }
                    _ => return unsupported("this escape"),
                },
                '.' => return unsupported("a single . (any one character)"),
                c if c.is_ascii_alphanumeric() || "-_/@".contains(c) => {
                    out.push(Piece::Lit(c));
                    i += 1;
                }
                '[' => return unsupported("a character class"),
                '?' | '+' | '*' | '{' => return unsupported("this repetition"),
                '|' | '(' | ')' => return unsupported("an alternative or group"),
                _ => return unsupported(&format!("{c:?}")),
            }
        }
        // A repetition right after what we read is something else than we thought.
        if matches!(chars.get(i), Some('*' | '+' | '?' | '{')) {
            return unsupported("this repetition");
        }
    }
    Ok(out)
}

/// Whether `name` matches the glob `glob` (`CREATOR` matching any one component's worth of
/// characters): to tell which tables can apply to the same repo.
pub(crate) fn glob_matches(glob: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        if let Some(rest) = p.strip_prefix(b"**") {
            return (1..=n.len()).any(|k| go(rest, &n[k..]));
        }
        if let Some(rest) = p.strip_prefix(b"CREATOR").or_else(|| p.strip_prefix(b"*")) {
            return (1..=n.len())
                .take_while(|&k| n[k - 1] != b'/')
                .any(|k| go(rest, &n[k..]));
        }
        match (p.split_first(), n.split_first()) {
            (None, None) => true,
            (Some((a, pr)), Some((b, nr))) if a == b => go(pr, nr),
            _ => false,
        }
    }
    go(glob.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_conversions() {
        for (regex, glob) in [
            ("users/CREATOR/..*", "users/CREATOR/**"),
            ("CREATOR/..*", "CREATOR/**"),
            ("foo/.*", "foo/**"),
            ("^pub/[^/]+/x$", "pub/*/x"),
            ("a/[^/][^/]*", "a/*"),
            ("a/.+/b", "a/**/b"),
            ("team\\.x/..*", "team.x/**"),
            ("a/[^/]+-mirror", "a/*-mirror"),
        ] {
            assert_eq!(to_glob(regex).as_deref(), Ok(glob), "{regex}");
        }
    }

    #[test]
    fn refused_conversions() {
        for regex in [
            "foo.*",
            "foo/[a-z].*",
            "foo/(a|b)",
            "foo/x?",
            "a.b/..*",
            "foo/ab+",
            "x/.*y",
            "users/CREATOR-..*",
        ] {
            assert!(to_glob(regex).is_err(), "{regex}");
        }
    }

    #[test]
    fn plain_names_are_not_patterns() {
        assert!(is_plain_name("foo/bar-1.2"));
        assert!(!is_plain_name("foo/..*"));
        assert!(!is_plain_name("@g"));
    }

    #[test]
    fn globs_match() {
        assert!(glob_matches("users/CREATOR/**", "users/alice/a/b"));
        assert!(!glob_matches("users/CREATOR/**", "users/alice"));
        assert!(glob_matches("pub/*/x", "pub/a/x"));
        assert!(!glob_matches("pub/*/x", "pub/a/b/x"));
        assert!(glob_matches("a/**", "a/b/c"));
    }
}
