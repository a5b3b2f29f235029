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
