//! A configuration as the admin repo holds it: `repos.toml` and the keys, read from a commit
//! (validated whole, as `compile` and `add-user` would) or from a server home (for the first
//! commit), and written as a tree.

use git2::{ObjectType, Oid, Repository, Tree};

use super::{AdminRepoError, KEYS_DIR, RULES_FILE};
use crate::admin::keys::{self, Entry, PublicKey, Role};
use crate::config::{Rules, Source};
use crate::fs::Context;
use crate::home::Home;
use crate::names::AccountName;

/// A whole configuration, validated.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// `repos.toml`, as committed.
    pub(crate) rules_text: String,
    /// The same, parsed.
    pub(crate) rules: Rules,
    /// Every key, users and peers.
    pub(crate) keys: Vec<Entry>,
    /// Whether the tree has `keys/peers/`: without it, the server's peers are left alone
    /// rather than all removed.
    pub(crate) has_peers: bool,
}

impl Snapshot {
    /// Reads and validates the configuration in `commit` of `repo`. Errors name the file in
    /// the tree (`repos.toml:3: ...`, `keys/users/bob.pub:1: ...`).
    pub(crate) fn of_commit(repo: &Repository, commit: Oid) -> Result<Self, AdminRepoError> {
        let tree = repo.find_commit(commit)?.tree()?;
        let rules_text = match tree.get_name(RULES_FILE) {
            Some(entry) => text_of(repo, &entry, RULES_FILE)?,
            None => return Err(AdminRepoError::MissingRules(RULES_FILE.into())),
        };
        let rules = Rules::from_source(&Source::from_text(RULES_FILE, rules_text.clone()))?;
        let mut keys = Vec::new();
        let mut has_peers = false;
        if let Some(entry) = tree.get_name(KEYS_DIR) {
            let dir = subtree(repo, &entry, KEYS_DIR)?;
            for entry in dir.iter() {
                let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
                let path = format!("{KEYS_DIR}/{name}");
                let role = match name.as_str() {
                    "users" => Role::User,
                    "peers" => Role::Peer,
                    _ => return Err(AdminRepoError::Stray { path }),
                };
                has_peers |= role == Role::Peer;
                let files = subtree(repo, &entry, &path)?;
                for file in files.iter() {
                    let name = String::from_utf8_lossy(file.name_bytes()).into_owned();
                    let path = format!("{path}/{name}");
                    let Some(stem) = name.strip_suffix(".pub") else {
                        return Err(AdminRepoError::Stray { path });
                    };
                    let account =
                        AccountName::parse(stem).map_err(|source| AdminRepoError::KeyName {
                            path: path.clone(),
                            source,
                        })?;
                    let text = text_of(repo, &file, &path)?;
                    let key = PublicKey::parse(&text)
                        .map_err(|problem| AdminRepoError::BadKey { path, problem })?;
                    keys.push(Entry {
                        role,
                        name: account,
                        key,
                    });
                }
            }
        }
        keys::check_set(&keys).map_err(AdminRepoError::KeySet)?;
        Ok(Snapshot {
            rules_text,
            rules,
            keys,
            has_peers,
        })
    }

    /// The configuration a server has now: its `repos.toml` and registered keys, plus its own
    /// key as the peer `hostname`, so that the servers this commit reaches learn it too.
    pub(crate) fn of_home(home: &Home, hostname: &AccountName) -> Result<Self, AdminRepoError> {
        let source = Source::read(&home.rules_path())?;
        let rules = Rules::from_source(&source)?;
        let rules_text =
            std::fs::read_to_string(home.rules_path()).at("cannot read", &home.rules_path())?;
        let mut keys = keys::registered(home)?;
        let own = home.public_key();
        let text = std::fs::read_to_string(&own).at("cannot read", &own)?;
        let key = PublicKey::parse(&text).map_err(|problem| AdminRepoError::BadKey {
            path: own.display().to_string(),
            problem,
        })?;
        keys.retain(|e| &e.name != hostname);
        keys.push(Entry {
            role: Role::Peer,
            name: hostname.clone(),
            key,
        });
        Ok(Snapshot {
            rules_text,
            rules,
            keys,
            has_peers: true,
        })
    }

    /// Writes the snapshot as a tree in `repo`: `repos.toml`, `keys/users/`, `keys/peers/`.
    pub(crate) fn write_tree(&self, repo: &Repository) -> Result<Oid, AdminRepoError> {
        let mut top = repo.treebuilder(None)?;
        top.insert(RULES_FILE, repo.blob(self.rules_text.as_bytes())?, 0o100644)?;
        let mut keys_dir = repo.treebuilder(None)?;
        for role in [Role::User, Role::Peer] {
            let mut dir = repo.treebuilder(None)?;
            for e in self.keys.iter().filter(|e| e.role == role) {
                let blob = repo.blob(format!("{}\n", e.key.to_line()).as_bytes())?;
                dir.insert(format!("{}.pub", e.name), blob, 0o100644)?;
            }
            if !dir.is_empty() {
                keys_dir.insert(role.dir(), dir.write()?, 0o040000)?;
            }
        }
        if !keys_dir.is_empty() {
            top.insert(KEYS_DIR, keys_dir.write()?, 0o040000)?;
        }
        Ok(top.write()?)
    }
}

fn kind(entry: &git2::TreeEntry<'_>) -> String {
    entry.kind().map_or("non-file", |k| k.str()).to_string()
}

fn text_of(
    repo: &Repository,
    entry: &git2::TreeEntry<'_>,
    path: &str,
) -> Result<String, AdminRepoError> {
    if entry.kind() != Some(ObjectType::Blob) {
        return Err(AdminRepoError::NotAFile {
            path: path.into(),
            found: kind(entry),
        });
    }
    let blob = repo.find_blob(entry.id())?;
    String::from_utf8(blob.content().to_vec())
        .map_err(|_| AdminRepoError::NotText { path: path.into() })
}

fn subtree<'r>(
    repo: &'r Repository,
    entry: &git2::TreeEntry<'_>,
    path: &str,
) -> Result<Tree<'r>, AdminRepoError> {
    if entry.kind() != Some(ObjectType::Tree) {
        return Err(AdminRepoError::NotADirectory {
            path: path.into(),
            found: kind(entry),
        });
    }
    Ok(repo.find_tree(entry.id())?)
}

/// The branch HEAD names in the repo at `path` (e.g. `refs/heads/main`): the only one of the
/// admin repo that carries the configuration.
pub(crate) fn default_branch(repo: &Repository) -> Result<String, AdminRepoError> {
    let head = repo.find_reference("HEAD")?;
    head.symbolic_target()?
        .map(str::to_string)
        .ok_or_else(|| AdminRepoError::Git("HEAD is detached; it must name a branch".into()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMhhDJ/vW9nfxvqGDUSK5Y1vd8bUy3Me7kD3Tq/cIu8S";

    /// A bare repo with one commit whose tree holds `files` (path, content).
    fn commit_of(files: &[(&str, &str)]) -> (tempfile::TempDir, Repository, Oid) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let mut index = git2::Index::new().unwrap();
        for (path, text) in files {
            let blob = repo.blob(text.as_bytes()).unwrap();
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: text.len() as u32,
                id: blob,
                flags: path.len() as u16,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        }
        let tree = index.write_tree_to(&repo).unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let who = git2::Signature::now("t", "t@t").unwrap();
        let commit = repo
            .commit(Some("refs/heads/main"), &who, &who, "m", &tree, &[])
            .unwrap();
        drop(tree);
        (dir, repo, commit)
    }

    fn error(files: &[(&str, &str)]) -> String {
        let (_d, repo, commit) = commit_of(files);
        Snapshot::of_commit(&repo, commit).unwrap_err().to_string()
    }

    #[test]
    fn reads_rules_and_keys_of_both_roles() {
        let (_d, repo, commit) = commit_of(&[
            ("repos.toml", "[repos.x]\nR = [\"bob\"]\n"),
            ("keys/users/bob.pub", &format!("{ED} bob@laptop\n")),
            ("README", "anything else at the top is allowed\n"),
        ]);
        let s = Snapshot::of_commit(&repo, commit).unwrap();
        assert_eq!(s.keys.len(), 1);
        assert_eq!(s.keys[0].role, Role::User);
        assert_eq!(s.keys[0].name.as_str(), "bob");
        assert!(!s.has_peers);
        // Written back as a tree, it reads the same.
        let tree = s.write_tree(&repo).unwrap();
        let tree = repo.find_tree(tree).unwrap();
        assert!(tree.get_path(Path::new("keys/users/bob.pub")).is_ok());
    }

    #[test]
    fn every_mistake_names_its_file() {
        assert!(error(&[("README", "x")]).starts_with("repos.toml: missing"));
        assert!(error(&[("repos.toml", "[repos.x]\nR = 3\n")]).starts_with("repos.toml:2: "));
        let e = error(&[("repos.toml", ""), ("keys/users/bob.pub", "ssh-ed25519 !!")]);
        assert!(e.starts_with("keys/users/bob.pub:1: "), "{e}");
        let e = error(&[("repos.toml", ""), ("keys/users/bob.txt", ED)]);
        assert!(e.starts_with("keys/users/bob.txt: expected"), "{e}");
        let e = error(&[("repos.toml", ""), ("keys/admins/bob.pub", ED)]);
        assert!(e.starts_with("keys/admins: expected"), "{e}");
        let e = error(&[("repos.toml", ""), ("keys/users/-x.pub", ED)]);
        assert!(e.starts_with("keys/users/-x.pub: the file name"), "{e}");
        // One key, one name; one name, one role.
        let e = error(&[
            ("repos.toml", ""),
            ("keys/users/bob.pub", ED),
            ("keys/users/carol.pub", ED),
        ]);
        assert!(e.contains("already belongs to"), "{e}");
    }

    #[test]
    fn the_gate_lets_only_the_default_branch_through() {
        let rules = "[repos.gitmirror-admin]\n\"RW+\" = [\"alice\"]\n";
        let alice = ("keys/users/alice.pub", ED);
        let (_d, repo, commit) = commit_of(&[("repos.toml", rules), alice]);
        repo.set_head("refs/heads/main").unwrap();
        let gate = |updates: &[(&str, Oid)]| super::super::gate::check_push(&repo, updates);
        assert!(gate(&[("refs/heads/main", commit)]).is_ok());
        let e = gate(&[("refs/heads/draft", commit)])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("only refs/heads/main carries"), "{e}");
        let e = gate(&[("refs/heads/main", Oid::ZERO_SHA1)])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("deleting refs/heads/main"), "{e}");
        // A configuration that leaves nobody able to push to the admin repo again.
        for files in [
            vec![("repos.toml", rules)],
            vec![
                ("repos.toml", "[repos.gitmirror-admin]\nRW = [\"alice\"]\n"),
                alice,
            ],
        ] {
            let (_d, other, commit) = commit_of(&files);
            other.set_head("refs/heads/main").unwrap();
            let e = super::super::gate::check_push(&other, &[("refs/heads/main", commit)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("nobody could push to it again"), "{e}");
        }
    }

    #[test]
    fn the_gate_refuses_a_mirrored_server_without_its_key_when_peers_are_listed() {
        const ED2: &str =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFuguHekk9jdkl8HbBnCDZVM6wtvHAj51oLO4m8R0eCT";
        const ED3: &str =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINMNgL2OpD0aN86HB5xoXhpcdxg/RLyUnDgYOPa0DkLz";
        let admin = "[repos.gitmirror-admin]\n\"RW+\" = [\"alice\"]\n";
        let mirrored = format!(
            "{admin}[repos.\"@all\"]\nmirror.master = \"server1\"\nmirror.slaves = [\"server2\"]\n"
        );
        let gate = |files: &[(&str, &str)]| {
            let (_d, repo, commit) = commit_of(files);
            repo.set_head("refs/heads/main").unwrap();
            super::super::gate::check_push(&repo, &[("refs/heads/main", commit)])
                .map_err(|e| e.to_string())
        };
        let alice = ("keys/users/alice.pub", ED);
        let s1 = ("keys/peers/server1.pub", ED2);
        let s2 = ("keys/peers/server2.pub", ED3);
        assert!(gate(&[("repos.toml", &mirrored), alice, s1, s2]).is_ok());
        // Without keys/peers/ the peers are left alone: nothing to check.
        assert!(gate(&[("repos.toml", &mirrored), alice]).is_ok());
        // The admin repo's slave, then its master, without a key.
        let e = gate(&[("repos.toml", &mirrored), alice, s1]).unwrap_err();
        assert!(
            e.starts_with(
                "repos.toml names server2 as slave of gitmirror-admin, but keys/peers/server2.pub is missing"
            ),
            "{e}"
        );
        let e = gate(&[("repos.toml", &mirrored), alice, s2]).unwrap_err();
        assert!(
            e.contains("names server1 as master of gitmirror-admin"),
            "{e}"
        );
        // Any other repo's servers too: here a slave named in one repo's table only.
        let other = format!(
            "{mirrored}[repos.tools]\nmirror.master = \"server1\"\nmirror.slaves = [\"server3\"]\n"
        );
        let e = gate(&[("repos.toml", &other), alice, s1, s2]).unwrap_err();
        assert!(e.contains("names server3 as slave of tools"), "{e}");
    }
}
