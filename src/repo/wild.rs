//! A user-created repo's creator and the roles its creator handed out (`perms`), kept in the
//! repo's directory as gitolite keeps them (`gl-creator`, `gl-perms`), so repos moved over
//! from a gitolite server keep both.
//!
//! A repo without `gl-creator` was not created by a user: its rules come from the tables
//! that name it, and `CREATOR`, `READERS` and `WRITERS` stand for nobody.

use std::path::Path;

use crate::config::rules::{ROLES, RepoRoles};
use crate::fs::{self, FsError};
use crate::names::AccountName;

/// The file holding the creator's name.
pub(crate) const CREATOR_FILE: &str = "gl-creator";
/// The file holding the roles, one line each: `READERS alice bob`.
pub(crate) const PERMS_FILE: &str = "gl-perms";

/// Why a repo's creator or perms cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WildError {
    #[error("{file}: {what}")]
    Bad { file: String, what: String },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<Option<String>, WildError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(WildError::Io {
            file: path.display().to_string(),
            source,
        }),
    }
}

/// The repo's creator and roles; empty for a repo no user created.
pub(crate) fn roles(repo_dir: &Path) -> Result<RepoRoles, WildError> {
    let creator_path = repo_dir.join(CREATOR_FILE);
    let Some(text) = read(&creator_path)? else {
        return Ok(RepoRoles::default());
    };
    let creator = AccountName::parse(text.trim()).map_err(|e| WildError::Bad {
        file: creator_path.display().to_string(),
        what: e.to_string(),
    })?;
    // Roles never cost the creator: a gl-perms that cannot be read (or that holds what
    // gitolite accepts and gitmirror does not) gives no one a role, and is logged.
    let perms_path = repo_dir.join(PERMS_FILE);
    let roles = match read(&perms_path) {
        Ok(Some(text)) => {
            let (roles, skipped) = parse_perms(&text);
            for what in skipped {
                tracing::warn!(file = %perms_path.display(), what, "gl-perms: skipped");
            }
            roles
        }
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "gl-perms unreadable: no roles");
            Vec::new()
        }
    };
    Ok(RepoRoles {
        creator: Some(creator),
        roles,
    })
}

/// Parses `gl-perms` text: lines `ROLE user...` (gitolite also writes `ROLE = user...`);
/// blank lines and `#` comments skipped. What gitmirror does not take (roles other than
/// `READERS` and `WRITERS`, `@group` members) is skipped and returned, one line each.
pub(crate) fn parse_perms(text: &str) -> (Vec<(String, Vec<AccountName>)>, Vec<String>) {
    let mut roles: Vec<(String, Vec<AccountName>)> = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace().filter(|w| *w != "=");
        let role = words.next().unwrap_or_default();
        if !ROLES.contains(&role) {
            skipped.push(format!(
                "line {}: role {role:?} (gitmirror knows {})",
                i + 1,
                ROLES.join(" and ")
            ));
            continue;
        }
        let mut users = Vec::new();
        for w in words {
            match AccountName::parse(w) {
                Ok(u) => users.push(u),
                Err(_) => skipped.push(format!("line {}: member {w:?} (users only)", i + 1)),
            }
        }
        match roles.iter_mut().find(|(r, _)| r == role) {
            Some((_, have)) => have.extend(users),
            None => roles.push((role.to_string(), users)),
        }
    }
    for (_, users) in &mut roles {
        users.sort();
        users.dedup();
    }
    roles.retain(|(_, users)| !users.is_empty());
    (roles, skipped)
}

/// The `gl-perms` text of `roles`.
pub(crate) fn perms_text(roles: &[(String, Vec<AccountName>)]) -> String {
    let mut out = String::new();
    for (role, users) in roles {
        if users.is_empty() {
            continue;
        }
        out.push_str(role);
        for u in users {
            out.push(' ');
            out.push_str(u.as_str());
        }
        out.push('\n');
    }
    out
}

/// Records `creator` and `roles` in the repo's directory (each file replaced atomically).
pub(crate) fn save(repo_dir: &Path, roles: &RepoRoles) -> Result<(), WildError> {
    if let Some(c) = &roles.creator {
        fs::write_if_changed(
            &repo_dir.join(CREATOR_FILE),
            format!("{c}\n").as_bytes(),
            0o644,
        )?;
    }
    fs::write_if_changed(
        &repo_dir.join(PERMS_FILE),
        perms_text(&roles.roles).as_bytes(),
        0o644,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_read_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(roles(dir.path()).unwrap(), RepoRoles::default());
        let r = RepoRoles {
            creator: Some(AccountName::parse("alice").unwrap()),
            roles: parse_perms("WRITERS bob\nREADERS carol dave\nREADERS = carol\n").0,
        };
        save(dir.path(), &r).unwrap();
        assert_eq!(roles(dir.path()).unwrap(), r);
        assert_eq!(r.roles.len(), 2);
        // What gitolite takes and gitmirror does not is skipped, never fatal.
        let (kept, skipped) = parse_perms("OWNERS bob\nREADERS @devs ../x alice\n");
        assert_eq!(
            kept,
            vec![("READERS".into(), vec![AccountName::parse("alice").unwrap()])]
        );
        assert_eq!(skipped.len(), 3);
        std::fs::write(dir.path().join(PERMS_FILE), "garbage line\n").unwrap();
        assert_eq!(roles(dir.path()).unwrap().creator, r.creator);
    }
}
