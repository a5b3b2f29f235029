//! gitolite's `keydir/` as the admin repo's `keys/`: gitolite's ssh-authkeys trigger takes
//! every `*.pub` file under `keydir/`, at any depth, and names its user after the file:
//! `alice.pub` and `alice@laptop.pub` are both alice (an `@` part without a dot is a key's
//! label; `alice@example.com.pub` is the user alice@example.com). `server-NAME.pub` is how
//! gitolite's mirroring names the server NAME; here that is the peer NAME.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::ImportError;
use super::conf::Loc;
use super::convert::Problem;
use crate::admin::keys::{PublicKey, Role};
use crate::names::AccountName;

/// The keys to write and what was made of them.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    /// `keys/users/NAME.pub` or `keys/peers/NAME.pub`, and the line to write there.
    pub(crate) files: Vec<(PathBuf, String)>,
    /// One line per user or peer imported.
    pub(crate) lines: Vec<String>,
    pub(crate) problems: Vec<Problem>,
}

/// The account a key file belongs to, as gitolite's `optionise` derives it.
pub(crate) fn user_of(file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(".pub")?;
    // `(@[^.]+)?\.pub$`: a trailing @label without dots is dropped.
    let user = match stem.rfind('@') {
        Some(at) if !stem[at + 1..].contains('.') && !stem[at + 1..].is_empty() => &stem[..at],
        _ => stem,
    };
    Some(user.to_string())
}

/// Reads every key under `keydir`.
pub(crate) fn read(keydir: &Path) -> Result<Keys, ImportError> {
    let mut files = Vec::new();
    collect(keydir, &mut files)?;
    files.sort();
    let mut keys = Keys::default();
    let mut by_account: BTreeMap<(Role, String), Vec<(PathBuf, PublicKey)>> = BTreeMap::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for file in files {
        let shown = file.display().to_string();
        let at = Loc {
            file: shown.clone(),
            line: 1,
        };
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(user) = user_of(&name) else {
            continue;
        };
        let (role, account) = match user.strip_prefix("server-") {
            Some(peer) => (Role::Peer, peer.to_string()),
            None => (Role::User, user.clone()),
        };
        if let Err(e) = AccountName::parse(&account) {
            keys.problems.push(Problem {
                loc: at,
                what: format!("{role} name {account:?}: {e}"),
            });
            continue;
        }
        let text = std::fs::read_to_string(&file).map_err(|source| ImportError::Read {
            path: file.clone(),
            source,
        })?;
        if text.lines().filter(|l| !l.trim().is_empty()).count() != 1 {
            // gitolite ignores such a file too ("does not contain exactly 1 line").
            keys.problems.push(Problem {
                loc: at,
                what: "not exactly one key line; gitolite ignores this file too".into(),
            });
            continue;
        }
        let key = match PublicKey::parse(text.trim()) {
            Ok(k) => k,
            Err(why) => {
                keys.problems.push(Problem { loc: at, what: why });
                continue;
            }
        };
        if let Some(first) = seen.get(&key.to_line()) {
            keys.problems.push(Problem {
                loc: at,
                what: format!(
                    "the same key as {}; sshd uses only the first, so this one is left out",
                    first.display()
                ),
            });
            continue;
        }
        seen.insert(key.to_line(), file.clone());
        by_account
            .entry((role, account))
            .or_default()
            .push((file, key));
    }
    let users: BTreeSet<&String> = by_account
        .keys()
        .filter(|(r, _)| *r == Role::User)
        .map(|(_, n)| n)
        .collect();
    for ((role, account), list) in &by_account {
        if *role == Role::Peer && users.contains(account) {
            keys.problems.push(Problem {
                loc: Loc {
                    file: list[0].0.display().to_string(),
                    line: 1,
                },
                what: format!("{account} is both a user and a server; a name is one or the other"),
            });
            continue;
        }
        // gitmirror holds one key per user: the plain NAME.pub if there is one, else the
        // first; the rest are listed.
        let chosen = list
            .iter()
            .position(|(f, _)| {
                f.file_name().is_some_and(|n| {
                    n.to_string_lossy() == format!("{}{account}.pub", prefix(*role))
                })
            })
            .unwrap_or(0);
        for (i, (file, _)) in list.iter().enumerate() {
            if i != chosen {
                keys.problems.push(Problem {
                    loc: Loc {
                        file: file.display().to_string(),
                        line: 1,
                    },
                    what: format!(
                        "{role} {account} has {} keys; gitmirror holds one key per {role} and takes {}",
                        list.len(),
                        list[chosen].0.display()
                    ),
                });
            }
        }
        let (_, key) = &list[chosen];
        keys.files.push((
            Path::new("keys")
                .join(role.dir())
                .join(format!("{account}.pub")),
            format!("{}\n", key.to_line()),
        ));
        keys.lines.push(match role {
            Role::User => format!("user {account}: {}", plural(list.len())),
            Role::Peer => format!("peer {account}"),
        });
    }
    Ok(keys)
}

fn prefix(role: Role) -> &'static str {
    match role {
        Role::User => "",
        Role::Peer => "server-",
    }
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 key".into()
    } else {
        format!("{n} keys (1 imported)")
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImportError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ImportError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ImportError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "pub") && path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBy1AchJKTcnEcCG3dbMNataNAk1jY/JeTL69i8dn4Dv";
    const KEY2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMgf/o5wq00qW5bQN8j5hEOPG98+wgNU1Lk38gMRABJn";
    const KEY3: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKcMoDCYf30G1gb7qCcUPMVlvM+16af7jUKiP9KWV2FN";

    #[test]
    fn user_names_as_gitolite_derives_them() {
        assert_eq!(user_of("alice.pub").as_deref(), Some("alice"));
        assert_eq!(user_of("alice@laptop.pub").as_deref(), Some("alice"));
        assert_eq!(
            user_of("alice@example.com.pub").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(user_of("alice.key"), None);
    }

    #[test]
    fn keydir_at_any_depth_users_and_peers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("team/a")).unwrap();
        std::fs::write(d.join("team/a/alice.pub"), format!("{KEY} alice@x\n")).unwrap();
        std::fs::write(d.join("alice@laptop.pub"), format!("{KEY2}\n")).unwrap();
        std::fs::write(d.join("server-s2.pub"), format!("{KEY3}\n")).unwrap();
        std::fs::write(d.join("junk.pub"), "not a key\n").unwrap();
        let keys = read(d).unwrap();
        let files: Vec<String> = keys
            .files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        assert_eq!(files, vec!["keys/users/alice.pub", "keys/peers/s2.pub"]);
        assert_eq!(keys.files[0].1, format!("{KEY}\n"));
        assert_eq!(
            keys.lines,
            vec!["user alice: 2 keys (1 imported)", "peer s2"]
        );
        assert_eq!(keys.problems.len(), 2, "{:?}", keys.problems);
        assert!(
            keys.problems
                .iter()
                .any(|p| p.loc.file.ends_with("junk.pub"))
        );
        assert!(
            keys.problems
                .iter()
                .any(|p| p.what.contains("one key per user"))
        );
    }
}
