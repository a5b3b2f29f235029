//! Reading a `gitolite.conf` the way gitolite 3 does (`Gitolite::Conf::Explode`, `Sugar`
//! and `parse`): includes expanded in place, comments and whitespace normalised, every line
//! sorted into a group definition, a `repo` line, a rule, an `option` or a `config`, each
//! with the file and line it came from. Meaning is the converter's business; this only
//! refuses what gitolite itself could not read.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Where a line of the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) file: String,
    pub(crate) line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A configuration gitolite itself would refuse (or one we cannot read at all).
#[derive(Debug, Error)]
pub(crate) enum ConfError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{loc}: {what}")]
    Syntax { loc: Loc, what: String },
}

/// One meaningful line, after gitolite's syntactic sugar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stmt {
    /// `@name = member ...` (members as written; `@group` members are expanded later).
    Group { name: String, members: Vec<String> },
    /// `repo item ...`: names, `@groups`, `@all`, regex patterns.
    Repo { items: Vec<String> },
    /// `PERM [REF ...] = USER ...`.
    Rule {
        perm: String,
        refs: Vec<String>,
        users: Vec<String>,
    },
    /// `option KEY = VALUE` (`mirror.slaves` already renamed `mirror.copies`, as gitolite's
    /// sugar does).
    Opt { key: String, value: String },
    /// `config KEY = VALUE`, including what `desc`, `owner` and `category` stand for.
    Config { key: String, value: String },
}

/// A line and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) loc: Loc,
    pub(crate) stmt: Stmt,
}

/// Something gitolite reads but the import does not carry over (a `subconf`, a missing
/// include), found while reading.
#[derive(Debug, Clone)]
pub(crate) struct Skipped {
    pub(crate) loc: Loc,
    pub(crate) what: String,
}

/// The whole configuration, includes expanded.
#[derive(Debug, Default)]
pub(crate) struct Conf {
    pub(crate) lines: Vec<Line>,
    pub(crate) skipped: Vec<Skipped>,
}

/// Reads `path` and everything it includes. Includes are resolved against the directory of
/// `path` (gitolite runs from its `conf/` directory, so includes inside included files are
/// relative to it too, not to the including file).
pub(crate) fn read(path: &Path) -> Result<Conf, ConfError> {
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut reader = Reader {
        base,
        seen: BTreeSet::new(),
        conf: Conf::default(),
    };
    if let Ok(real) = std::fs::canonicalize(path) {
        reader.seen.insert(real);
    }
    reader.explode(path)?;
    Ok(reader.conf)
}

/// Parses text as if it were the file `name` (for tests and for included text).
#[cfg(test)]
pub(crate) fn parse_text(name: &str, text: &str) -> Result<Conf, ConfError> {
    let mut reader = Reader {
        base: PathBuf::from("."),
        seen: BTreeSet::new(),
        conf: Conf::default(),
    };
    reader.explode_text(name, text)?;
    Ok(reader.conf)
}

struct Reader {
    base: PathBuf,
    seen: BTreeSet<PathBuf>,
    conf: Conf,
}

impl Reader {
    fn explode(&mut self, path: &Path) -> Result<(), ConfError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfError::Read {
            file: name.clone(),
            source,
        })?;
        self.explode_text(&name, &text)
    }

    fn explode_text(&mut self, name: &str, text: &str) -> Result<(), ConfError> {
        // `= begin testconf` ... `= end` (and template-data) blocks are gitolite's own test
        // and template material, skipped by its sugar.
        let mut skipping = false;
        for (i, raw) in text.lines().enumerate() {
            let loc = Loc {
                file: name.to_string(),
                line: i + 1,
            };
            let line = cleanup(raw);
            if line.is_empty() {
                continue;
            }
            if skipping {
                skipping = !is_block_end(&line);
                continue;
            }
            if line == "= begin testconf" || line == "= begin template-data" {
                skipping = true;
                continue;
            }
            if line.contains("%HOSTNAME") {
                self.conf.skipped.push(Skipped {
                    loc: loc.clone(),
                    what: "%HOSTNAME depends on each gitolite server's rc file; write the hostname out".into(),
                });
                continue;
            }
            if let Some(rest) = line
                .strip_prefix("include ")
                .or_else(|| line.strip_prefix("subconf "))
            {
                let is_subconf = line.starts_with("subconf ");
                self.include(&loc, rest, is_subconf)?;
                continue;
            }
            let stmt = classify(&loc, &line)?;
            self.conf.lines.push(Line { loc, stmt });
        }
        Ok(())
    }

    fn include(&mut self, loc: &Loc, rest: &str, is_subconf: bool) -> Result<(), ConfError> {
        // `subconf [NAME] "GLOB"`: the optional name comes first (the glob may hold spaces).
        let glob = match rest.split_once(' ') {
            Some((name, glob)) if is_subconf && !name.starts_with(['"', '\'']) => glob,
            _ => rest,
        };
        let unquoted = glob
            .strip_prefix('"')
            .and_then(|g| g.strip_suffix('"'))
            .or_else(|| glob.strip_prefix('\'').and_then(|g| g.strip_suffix('\'')));
        let Some(pattern) = unquoted.filter(|p| !p.is_empty()) else {
            return Err(ConfError::Syntax {
                loc: loc.clone(),
                what: format!(
                    "expected a quoted file name or glob, as include \"FILE.conf\", not {glob}"
                ),
            });
        };
        if is_subconf {
            self.conf.skipped.push(Skipped {
                loc: loc.clone(),
                what: format!(
                    "subconf {pattern}: delegated administration (subconf) has no equivalent; its rules were not imported"
                ),
            });
            return Ok(());
        }
        let files = glob_files(&self.base, pattern);
        if files.is_empty() {
            // gitolite warns and goes on; the import says so, since the rules in it are missing.
            self.conf.skipped.push(Skipped {
                loc: loc.clone(),
                what: format!("include \"{pattern}\": no such file"),
            });
        }
        for file in files {
            if !file.to_string_lossy().ends_with(".conf") {
                return Err(ConfError::Syntax {
                    loc: loc.clone(),
                    what: format!(
                        "included file {} does not end in .conf, as gitolite requires",
                        file.display()
                    ),
                });
            }
            // The same file twice is read once, as gitolite does (by device and inode).
            let real = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if !self.seen.insert(real) {
                tracing::debug!(file = %file.display(), "already included");
                continue;
            }
            self.explode(&file)?;
        }
        Ok(())
    }
}

fn is_block_end(line: &str) -> bool {
    line.strip_prefix('=').is_some_and(|r| r.trim() == "end")
}

/// gitolite's `cleanup_conf_line`: drop a comment (a `#` outside a simple double-quoted
/// string), space the first `=`, squeeze whitespace.
fn cleanup(raw: &str) -> String {
    let mut kept = String::new();
    let mut in_quote = false;
    for c in raw.chars() {
        match c {
            '"' => in_quote = !in_quote,
            '#' if !in_quote => break,
            _ => {}
        }
        kept.push(c);
    }
    let spaced = kept.replacen('=', " = ", 1);
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// gitolite's `$USERNAME_PATT`, which group names, users and (loosely) refs must match.
fn is_username(s: &str) -> bool {
    let s = s.strip_prefix('@').unwrap_or(s);
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._@+".contains(c))
}

/// gitolite's `$REPOPATT_PATT`: what a repo item, group member or refex may contain.
fn is_repo_pattern(s: &str) -> bool {
    let s = s.strip_prefix('@').unwrap_or(s);
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '[')
        && chars.all(|c| c.is_ascii_alphanumeric() || "-._@/+\\^$|()[]*?{},".contains(c))
}

/// Whether `perm` is one of gitolite's permissions
/// (`-|C|R|RW\+?(?:C?D?|D?C?)M?`).
pub(crate) fn is_perm(perm: &str) -> bool {
    if matches!(perm, "-" | "C" | "R") {
        return true;
    }
    let Some(rest) = perm.strip_prefix("RW") else {
        return false;
    };
    let rest = rest.strip_prefix('+').unwrap_or(rest);
    let rest = rest.strip_suffix('M').unwrap_or(rest);
    matches!(rest, "" | "C" | "D" | "CD" | "DC")
}

fn syntax(loc: &Loc, what: impl Into<String>) -> ConfError {
    ConfError::Syntax {
        loc: loc.clone(),
        what: what.into(),
    }
}

/// Sorts one cleaned line into what it is, as gitolite's `parse` does, with gitolite's sugar
/// applied first (`desc`/`owner`/`category` are configs, `option mirror.slaves` is
/// `mirror.copies`, `NAME/` refs are `VREF/NAME/`).
fn classify(loc: &Loc, line: &str) -> Result<Stmt, ConfError> {
    for (word, key) in [
        ("desc", "gitweb.description"),
        ("owner", "gitweb.owner"),
        ("category", "gitweb.category"),
    ] {
        if let Some(value) = line.strip_prefix(word).and_then(|r| r.strip_prefix(" = ")) {
            return Ok(Stmt::Config {
                key: key.into(),
                value: unquote(value).into(),
            });
        }
    }
    if line.starts_with('@') {
        let Some((name, members)) = line.split_once(" = ") else {
            return Err(syntax(
                loc,
                "expected a group definition, @name = member ...",
            ));
        };
        if name.contains(' ') || !is_repo_pattern(name) || name == "@all" {
            return Err(syntax(
                loc,
                format!("group name {name}: expected @ and a name, as @devs (not @all)"),
            ));
        }
        let members: Vec<String> = members.split(' ').map(str::to_string).collect();
        if let Some(bad) = members.iter().find(|m| !is_repo_pattern(m)) {
            return Err(syntax(
                loc,
                format!("member {bad} of {name}: expected a user, repo, pattern or @group"),
            ));
        }
        return Ok(Stmt::Group {
            name: name.to_string(),
            members,
        });
    }
    if let Some(items) = line.strip_prefix("repo ") {
        let items: Vec<String> = items.split(' ').map(str::to_string).collect();
        if let Some(bad) = items.iter().find(|i| !is_repo_pattern(i)) {
            return Err(syntax(
                loc,
                format!("repo {bad}: expected a repo name, @group, @all or pattern"),
            ));
        }
        return Ok(Stmt::Repo { items });
    }
    if line == "repo" {
        return Err(syntax(loc, "expected repo names after `repo`"));
    }
    if let Some(rest) = line.strip_prefix("option ") {
        return match rest.split_once(" = ") {
            Some((key, value)) if !key.contains(' ') && !value.is_empty() => {
                let key = match key.strip_prefix("mirror.slaves") {
                    Some(tail) => format!("mirror.copies{tail}"),
                    None => key.to_string(),
                };
                Ok(Stmt::Opt {
                    key,
                    value: value.to_string(),
                })
            }
            _ => Err(syntax(loc, "expected option NAME = VALUE")),
        };
    }
    if let Some(rest) = line.strip_prefix("config ") {
        return match rest.split_once(" =") {
            Some((key, value)) if !key.is_empty() && !key.contains(' ') => Ok(Stmt::Config {
                key: key.to_string(),
                value: unquote(value.trim_start()).to_string(),
            }),
            _ => Err(syntax(loc, "expected config KEY = VALUE")),
        };
    }
    let first = line.split(' ').next().unwrap_or("");
    if is_perm(first) {
        let rest = &line[first.len()..];
        // The first `=` was spaced by cleanup, so " = " separates refs from users.
        let Some((refs, users)) = rest.split_once(" = ") else {
            return Err(syntax(
                loc,
                format!("expected {first} [REF ...] = USER ..., with users after the ="),
            ));
        };
        let refs: Vec<String> = refs.split_whitespace().map(str::to_string).collect();
        let users: Vec<String> = users.split_whitespace().map(str::to_string).collect();
        if users.is_empty() {
            return Err(syntax(loc, format!("expected users after {first} ... =")));
        }
        if let Some(bad) = users.iter().find(|u| !is_username(u)) {
            return Err(syntax(
                loc,
                format!("user {bad}: expected a user name or @group"),
            ));
        }
        if let Some(bad) = refs.iter().find(|r| !is_repo_pattern(r)) {
            return Err(syntax(
                loc,
                format!("ref {bad}: expected a refex such as refs/heads/dev/"),
            ));
        }
        // gitolite's name_vref sugar: NAME/ in a ref list means VREF/NAME/.
        let refs = refs
            .into_iter()
            .map(|r| match r.strip_prefix("NAME/") {
                Some(tail) => format!("VREF/NAME/{tail}"),
                None => r,
            })
            .collect();
        return Ok(Stmt::Rule {
            perm: first.to_string(),
            refs,
            users,
        });
    }
    Err(syntax(
        loc,
        format!(
            "cannot read {line:?}: expected repo NAME ..., @group = ..., PERM [REF ...] = USER ..., option, config or include \"FILE\""
        ),
    ))
}

/// gitolite's `s/^['"](.*)["']$/$1/` on config values.
fn unquote(value: &str) -> &str {
    let bytes = value.as_bytes();
    if bytes.len() >= 2
        && matches!(bytes[0], b'"' | b'\'')
        && matches!(bytes[bytes.len() - 1], b'"' | b'\'')
    {
        &value[1..value.len() - 1]
    } else {
        value
    }
}

/// The files a gitolite include glob names, relative to `base`, sorted as Perl's `glob`
/// returns them: `*`, `?`, `[...]` within a path component and `{a,b}` alternatives; a
/// name without wildcards is returned when it is a file.
fn glob_files(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    // Perl's glob splits its argument at whitespace into several patterns.
    for word in pattern.split_whitespace() {
        for alt in expand_braces(word) {
            let start = if alt.starts_with('/') {
                PathBuf::from("/")
            } else {
                base.to_path_buf()
            };
            let parts: Vec<&str> = alt.split('/').filter(|p| !p.is_empty()).collect();
            let mut found = Vec::new();
            walk(&start, &parts, &mut found);
            found.sort();
            out.extend(found.into_iter().filter(|f| f.is_file()));
        }
    }
    out
}

fn walk(dir: &Path, parts: &[&str], out: &mut Vec<PathBuf>) {
    let Some((first, rest)) = parts.split_first() else {
        out.push(dir.to_path_buf());
        return;
    };
    if !first.contains(['*', '?', '[']) {
        let next = dir.join(first);
        if next.exists() {
            walk(&next, rest, out);
        }
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        // As the shell: a wildcard does not match a leading dot.
        .filter(|n| !n.starts_with('.') || first.starts_with('.'))
        .filter(|n| wildcard_match(first.as_bytes(), n.as_bytes()))
        .collect();
    names.sort();
    for name in names {
        walk(&dir.join(name), rest, out);
    }
}

fn expand_braces(word: &str) -> Vec<String> {
    let Some(open) = word.find('{') else {
        return vec![word.to_string()];
    };
    let Some(close) = word[open..].find('}').map(|c| open + c) else {
        return vec![word.to_string()];
    };
    let (head, body, tail) = (&word[..open], &word[open + 1..close], &word[close + 1..]);
    body.split(',')
        .flat_map(|alt| expand_braces(&format!("{head}{alt}{tail}")))
        .collect()
}

/// Shell wildcard match of one path component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`.
fn wildcard_match(pat: &[u8], name: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| wildcard_match(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && wildcard_match(rest, &name[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().skip(1).position(|&c| c == b']').map(|p| p + 1) else {
                return name.first() == Some(&b'[') && wildcard_match(rest, &name[1..]);
            };
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (negate, class) = match rest[..end].split_first() {
                Some((b'!' | b'^', class)) => (true, class),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && wildcard_match(&rest[end + 1..], name_rest)
        }
        Some((&p, rest)) => name.first() == Some(&p) && wildcard_match(rest, &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmts(text: &str) -> Vec<Stmt> {
        parse_text("g.conf", text)
            .unwrap()
            .lines
            .into_iter()
            .map(|l| l.stmt)
            .collect()
    }

    #[test]
    fn lines_are_sorted_as_gitolite_reads_them() {
        let got = stmts(
            "# a comment\n@devs=alice  bob # trailing\nrepo foo @webapps\n  RW+ master dev/ = @devs\n\
             - = bob\n  option mirror.slaves = s2 s3\nconfig gitolite.mirror.master = \"s1\"\n\
             desc = \"the foo\"\n= begin testconf\nnonsense here\n= end\nR = @all\n",
        );
        assert_eq!(
            got,
            vec![
                Stmt::Group {
                    name: "@devs".into(),
                    members: vec!["alice".into(), "bob".into()]
                },
                Stmt::Repo {
                    items: vec!["foo".into(), "@webapps".into()]
                },
                Stmt::Rule {
                    perm: "RW+".into(),
                    refs: vec!["master".into(), "dev/".into()],
                    users: vec!["@devs".into()]
                },
                Stmt::Rule {
                    perm: "-".into(),
                    refs: vec![],
                    users: vec!["bob".into()]
                },
                Stmt::Opt {
                    key: "mirror.copies".into(),
                    value: "s2 s3".into()
                },
                Stmt::Config {
                    key: "gitolite.mirror.master".into(),
                    value: "s1".into()
                },
                Stmt::Config {
                    key: "gitweb.description".into(),
                    value: "the foo".into()
                },
                Stmt::Rule {
                    perm: "R".into(),
                    refs: vec![],
                    users: vec!["@all".into()]
                },
            ]
        );
    }

    #[test]
    fn permissions_are_gitolites() {
        for p in [
            "-", "C", "R", "RW", "RW+", "RWC", "RW+C", "RWD", "RW+D", "RWCD", "RW+CD", "RW+DC",
            "RWM", "RW+CDM",
        ] {
            assert!(is_perm(p), "{p}");
        }
        for p in ["W", "RW++", "RWX", "R+", "CD", "rw"] {
            assert!(!is_perm(p), "{p}");
        }
    }

    #[test]
    fn name_refs_become_vrefs() {
        assert_eq!(
            stmts("repo x\n- NAME/secret = bob\n")[1],
            Stmt::Rule {
                perm: "-".into(),
                refs: vec!["VREF/NAME/secret".into()],
                users: vec!["bob".into()]
            }
        );
    }

    #[test]
    fn unreadable_lines_name_file_and_line() {
        for (text, line, needle) in [
            ("repo x\nRW+ = \n", 2, "expected RW+"),
            ("repo x\n\nfrobnicate\n", 3, "cannot read"),
            ("repo x\nRW = bad!user\n", 2, "user bad!user"),
            ("@all = a\n", 1, "not @all"),
            ("include foo.conf\n", 1, "quoted"),
            ("repo x\noption nothing\n", 2, "option NAME = VALUE"),
        ] {
            let err = parse_text("g.conf", text).unwrap_err().to_string();
            assert!(err.starts_with(&format!("g.conf:{line}: ")), "{err}");
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn includes_are_read_in_place_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(
            d.join("gitolite.conf"),
            "repo a\ninclude \"sub/*.conf\"\ninclude \"sub/b.conf\"\ninclude \"none.conf\"\nsubconf \"x.conf\"\nRW = z\n",
        )
        .unwrap();
        std::fs::write(d.join("sub/b.conf"), "RW = b\n").unwrap();
        // Relative to the main file's directory, as gitolite runs from conf/.
        std::fs::write(d.join("sub/c.conf"), "include \"sub/b.conf\"\nRW = c\n").unwrap();
        let conf = read(&d.join("gitolite.conf")).unwrap();
        let users: Vec<String> = conf
            .lines
            .iter()
            .filter_map(|l| match &l.stmt {
                Stmt::Rule { users, .. } => Some(format!("{}:{}", users[0], l.loc.line)),
                _ => None,
            })
            .collect();
        assert_eq!(users, vec!["b:1", "c:2", "z:6"]);
        let skipped: Vec<usize> = conf.skipped.iter().map(|s| s.loc.line).collect();
        assert_eq!(skipped, vec![4, 5]);
    }

    #[test]
    fn wildcards_and_braces() {
        assert!(wildcard_match(b"*.conf", b"a.conf"));
        assert!(!wildcard_match(b"*.conf", b"a.conf~"));
        assert!(wildcard_match(b"[a-c]?.conf", b"bx.conf"));
        assert!(!wildcard_match(b"[!a-c]?.conf", b"bx.conf"));
        assert_eq!(
            expand_braces("{a,b}/{c,d}"),
            vec!["a/c", "a/d", "b/c", "b/d"]
        );
    }
}
