//! Public keys and the `authorized_keys` file that turns them into forced commands.
//!
//! Each user and each peer has one key, kept as `keys/users/NAME.pub` or `keys/peers/NAME.pub`
//! in the server home. Those files are the truth; gitmirror's block in `.ssh/authorized_keys`
//! is rendered from them, so a key can never carry options of its own and lines written by
//! anyone else are left exactly as they were.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use thiserror::Error;
use tracing::info;

use crate::fs::{self as files, Context, FsError};
use crate::home::Home;
use crate::invocation::Invocation;
use crate::names::{AccountName, NameError};

/// Key types sshd accepts that we let through.
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Largest encoded key accepted (an RSA-16384 key is about 2.8 KB).
const MAX_KEY_TEXT: usize = 16 * 1024;

/// The first and last line of gitmirror's block in authorized_keys.
const BLOCK_START: &str =
    "# gitmirror start: lines up to '# gitmirror end' are rewritten by gitmirror";
const BLOCK_END: &str = "# gitmirror end";

/// What went wrong with a key or the key files.
#[derive(Debug, Error)]
pub(crate) enum KeyError {
    #[error("bad name: {0}")]
    Name(#[from] NameError),
    #[error("{file}: {problem}")]
    BadKey { file: PathBuf, problem: String },
    #[error("{name} is already a {other}; a name is either a user or a peer, never both")]
    NameTaken { name: AccountName, other: Role },
    #[error("{name} is not a registered {role}")]
    NotRegistered { name: AccountName, role: Role },
    #[error("this key already belongs to {other} {name}; one key, one name")]
    KeyTaken { name: AccountName, other: Role },
    #[error(
        "this key already appears on line {line} of {file}, outside gitmirror's block; sshd would use that line instead"
    )]
    ForeignKey { file: PathBuf, line: usize },
    #[error(
        "{file}: gitmirror's block markers are unbalanced or repeated (line {line}); fix the file by hand, nothing was changed"
    )]
    Markers { file: PathBuf, line: usize },
    #[error("{file}: a stored key is not valid ({problem}); fix or remove it, nothing was changed")]
    StoredKey { file: PathBuf, problem: String },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// A validated public key: its type and base64 body. Comments and options are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicKey {
    kind: String,
    body: String,
}

impl PublicKey {
    /// Validates the text of a `.pub` file: exactly one line, a known key type, a body that
    /// decodes and names the same type, and no options in front.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let line = text.trim_end_matches(['\n', '\r', ' ', '\t']);
        if line.is_empty() {
            return Err("no key in the file".into());
        }
        if line.contains("PRIVATE KEY") {
            return Err("this is a private key; give the .pub file".into());
        }
        if line.len() > MAX_KEY_TEXT {
            return Err(format!("key is {} bytes; too long", line.len()));
        }
        if line.contains(['\n', '\r']) {
            return Err("the file must hold exactly one line: one public key".into());
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err("control characters in the key line".into());
        }
        let mut fields = line.split_ascii_whitespace();
        let kind = fields.next().unwrap_or_default();
        if !KEY_TYPES.contains(&kind) {
            if kind.contains(['=', ',', '"']) || KEY_TYPES.iter().any(|t| line.contains(t)) {
                return Err(
                    "key options in front of the key are not allowed; give the bare public key"
                        .into(),
                );
            }
            return Err(format!(
                "unknown key type {:?}; expected one of {}",
                kind.chars().take(40).collect::<String>(),
                KEY_TYPES.join(", ")
            ));
        }
        let body = fields.next().ok_or("key type without a key body")?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| "the key body is not valid base64".to_string())?;
        if blob_kind(&blob) != Some(kind.as_bytes()) {
            return Err(format!("the key body does not hold a {kind} key"));
        }
        Ok(PublicKey {
            kind: kind.to_string(),
            body: body.to_string(),
        })
    }

    /// `TYPE BODY`, as written into authorized_keys and the key store.
    pub(crate) fn to_line(&self) -> String {
        format!("{} {}", self.kind, self.body)
    }
}

/// The key type named inside an ssh public key blob (a length-prefixed string).
fn blob_kind(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    blob.get(4..4 + len)
}

/// Who a key lets in, and so which forced command its line runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    /// A person; enters through `gitmirror shell NAME`.
    User,
    /// Another gitmirror server; enters through `gitmirror peer NAME`.
    Peer,
}

impl Role {
    /// The directory under `keys/` (in the home and in the admin repo) holding its keys.
    pub(crate) fn dir(self) -> &'static str {
        match self {
            Role::User => "users",
            Role::Peer => "peers",
        }
    }

    /// The gitmirror subcommand its forced command runs.
    fn forced_verb(self) -> &'static str {
        match self {
            Role::User => "shell",
            Role::Peer => "peer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::User => "user",
            Role::Peer => "peer",
        })
    }
}

/// One registered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) role: Role,
    pub(crate) name: AccountName,
    pub(crate) key: PublicKey,
}

/// One change [`replace_all`] made to the registered keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyChange {
    Added(Role, AccountName),
    Replaced(Role, AccountName),
    Removed(Role, AccountName),
}

impl std::fmt::Display for KeyChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyChange::Added(role, name) => write!(f, "{role} {name} added"),
            KeyChange::Replaced(role, name) => write!(f, "{role} {name}: key replaced"),
            KeyChange::Removed(role, name) => write!(f, "{role} {name} removed"),
        }
    }
}

/// Every registered key, users first, each role by name.
pub(crate) fn registered(home: &Home) -> Result<Vec<Entry>, KeyError> {
    load_entries(home)
}

/// Refuses a set of keys in which a name is both a user and a peer, or one key has two names:
/// the same rules [`add`] keeps one key at a time.
pub(crate) fn check_set(entries: &[Entry]) -> Result<(), KeyError> {
    for (i, a) in entries.iter().enumerate() {
        for b in &entries[i + 1..] {
            if a.name == b.name {
                return Err(KeyError::NameTaken {
                    name: b.name.clone(),
                    other: a.role,
                });
            }
            if a.key == b.key {
                return Err(KeyError::KeyTaken {
                    name: a.name.clone(),
                    other: a.role,
                });
            }
        }
    }
    Ok(())
}

/// Makes the registered keys of `roles` exactly `wanted` (keys of other roles are kept), and
/// rewrites authorized_keys once. Everything is checked before anything is written. Returns
/// what changed, in order.
pub(crate) fn replace_all(
    home: &Home,
    roles: &[Role],
    wanted: &[Entry],
    command: &Invocation,
) -> Result<Vec<KeyChange>, KeyError> {
    files::ensure_dir(&home.state_dir(), 0o700)?;
    let _lock = files::lock(&home.keys_lock())?;
    let before = load_entries(home)?;
    let mut after: Vec<Entry> = before
        .iter()
        .filter(|e| !roles.contains(&e.role))
        .cloned()
        .collect();
    after.extend(wanted.iter().filter(|e| roles.contains(&e.role)).cloned());
    check_set(&after)?;
    let existing = read_authorized_keys(home)?;
    if let Some(line) = unbalanced_markers(&existing) {
        return Err(KeyError::Markers {
            file: home.authorized_keys(),
            line,
        });
    }
    for e in &after {
        if let Some(line) = foreign_line_with(&existing, &e.key) {
            return Err(KeyError::ForeignKey {
                file: home.authorized_keys(),
                line,
            });
        }
    }
    let mut changes = Vec::new();
    for e in &after {
        match before.iter().find(|b| b.role == e.role && b.name == e.name) {
            Some(b) if b.key == e.key => continue,
            Some(_) => changes.push(KeyChange::Replaced(e.role, e.name.clone())),
            None => changes.push(KeyChange::Added(e.role, e.name.clone())),
        }
        let dir = home.keys_dir().join(e.role.dir());
        files::ensure_dir(&dir, 0o700)?;
        let stored = dir.join(format!("{}.pub", e.name));
        files::write_if_changed(&stored, format!("{}\n", e.key.to_line()).as_bytes(), 0o600)?;
    }
    // authorized_keys before the removals: a key file removed first would already shut its
    // owner out (forced commands check it), while authorized_keys still listed it.
    let rendered = render(&existing, &after, command);
    files::write_if_changed(&home.authorized_keys(), rendered.as_bytes(), 0o600)?;
    for b in &before {
        if after.iter().any(|e| e.role == b.role && e.name == b.name) {
            continue;
        }
        let stored = home
            .keys_dir()
            .join(b.role.dir())
            .join(format!("{}.pub", b.name));
        std::fs::remove_file(&stored).at("cannot remove", &stored)?;
        changes.push(KeyChange::Removed(b.role, b.name.clone()));
    }
    for c in &changes {
        info!(change = %c, "key store changed");
    }
    Ok(changes)
}

/// The result of registering a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Added {
    /// A new name.
    New,
    /// The name existed; its key was replaced.
    Replaced,
    /// The same name with the same key: nothing changed.
    Unchanged,
}

/// Whether `name` is still registered as a `role`. The forced commands ask this on every
/// command: sshd checks keys only at login, and a removed peer's multiplexed connection would
/// otherwise keep working.
pub(crate) fn is_registered(home: &Home, role: Role, name: &AccountName) -> bool {
    home.keys_dir()
        .join(role.dir())
        .join(format!("{name}.pub"))
        .is_file()
}

/// Rewrites gitmirror's block of authorized_keys with `command` for the registered keys, as
/// `compile` does after gitmirror moved (a package upgrade, another `program`). Returns
/// whether the file changed. A file without the block and no registered key is left alone.
pub(crate) fn rewrite(home: &Home, command: &Invocation) -> Result<bool, KeyError> {
    files::ensure_dir(&home.state_dir(), 0o700)?;
    let _lock = files::lock(&home.keys_lock())?;
    let entries = load_entries(home)?;
    let existing = read_authorized_keys(home)?;
    if entries.is_empty() && !existing.lines().any(|l| l == BLOCK_START) {
        return Ok(false);
    }
    if let Some(line) = unbalanced_markers(&existing) {
        return Err(KeyError::Markers {
            file: home.authorized_keys(),
            line,
        });
    }
    let rendered = render(&existing, &entries, command);
    let changed = files::write_if_changed(&home.authorized_keys(), rendered.as_bytes(), 0o600)?;
    if changed {
        info!(command = command.as_str(), "authorized_keys rewritten");
    }
    Ok(changed)
}

/// Removes `name`'s key and rewrites authorized_keys without it.
pub(crate) fn remove(
    home: &Home,
    role: Role,
    name: &str,
    command: &Invocation,
) -> Result<(), KeyError> {
    let name = AccountName::parse(name)?;
    files::ensure_dir(&home.state_dir(), 0o700)?;
    let _lock = files::lock(&home.keys_lock())?;
    let mut entries = load_entries(home)?;
    let before = entries.len();
    entries.retain(|e| !(e.name == name && e.role == role));
    if entries.len() == before {
        return Err(KeyError::NotRegistered { name, role });
    }
    let existing = read_authorized_keys(home)?;
    if let Some(line) = unbalanced_markers(&existing) {
        return Err(KeyError::Markers {
            file: home.authorized_keys(),
            line,
        });
    }
    let rendered = render(&existing, &entries, command);
    files::write_if_changed(&home.authorized_keys(), rendered.as_bytes(), 0o600)?;
    let stored = home.keys_dir().join(role.dir()).join(format!("{name}.pub"));
    std::fs::remove_file(&stored).at("cannot remove", &stored)?;
    info!(%role, %name, "key removed");
    Ok(())
}

/// Registers `name` with the key in `key_file` as a `role`, and rewrites authorized_keys.
///
/// `command` is the forced-command prefix each line of gitmirror's block starts with.
pub(crate) fn add(
    home: &Home,
    role: Role,
    name: &str,
    key_file: &Path,
    command: &Invocation,
) -> Result<Added, KeyError> {
    let name = AccountName::parse(name)?;
    let text = fs::read_to_string(key_file).at("cannot read", key_file)?;
    let key = PublicKey::parse(&text).map_err(|problem| KeyError::BadKey {
        file: key_file.to_path_buf(),
        problem,
    })?;

    files::ensure_dir(&home.state_dir(), 0o700)?;
    let _lock = files::lock(&home.keys_lock())?;

    let mut entries = load_entries(home)?;
    if let Some(e) = entries.iter().find(|e| e.name == name && e.role != role) {
        return Err(KeyError::NameTaken {
            name,
            other: e.role,
        });
    }
    if let Some(e) = entries.iter().find(|e| e.key == key && e.name != name) {
        return Err(KeyError::KeyTaken {
            name: e.name.clone(),
            other: e.role,
        });
    }
    let existing = read_authorized_keys(home)?;
    if let Some(line) = unbalanced_markers(&existing) {
        return Err(KeyError::Markers {
            file: home.authorized_keys(),
            line,
        });
    }
    if let Some(line) = foreign_line_with(&existing, &key) {
        return Err(KeyError::ForeignKey {
            file: home.authorized_keys(),
            line,
        });
    }
    let outcome = match entries.iter_mut().find(|e| e.name == name) {
        Some(e) if e.key == key => Added::Unchanged,
        Some(e) => {
            e.key = key.clone();
            Added::Replaced
        }
        None => {
            entries.push(Entry {
                role,
                name: name.clone(),
                key: key.clone(),
            });
            Added::New
        }
    };

    let dir = home.keys_dir().join(role.dir());
    files::ensure_dir(&dir, 0o700)?;
    let stored = dir.join(format!("{name}.pub"));
    files::write_if_changed(&stored, format!("{}\n", key.to_line()).as_bytes(), 0o600)?;
    let rendered = render(&existing, &entries, command);
    files::write_if_changed(&home.authorized_keys(), rendered.as_bytes(), 0o600)?;
    info!(%role, %name, ?outcome, "key registered");
    Ok(outcome)
}

fn load_entries(home: &Home) -> Result<Vec<Entry>, KeyError> {
    let mut entries = Vec::new();
    for role in [Role::User, Role::Peer] {
        let dir = home.keys_dir().join(role.dir());
        let listing = match fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).at("cannot list", &dir)?,
        };
        let mut names: Vec<PathBuf> = listing
            .filter_map(|d| d.ok().map(|d| d.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        names.sort();
        for path in names {
            let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let text = fs::read_to_string(&path).at("cannot read", &path)?;
            let stored = |problem: String| KeyError::StoredKey {
                file: path.clone(),
                problem,
            };
            let name = AccountName::parse(stem).map_err(|e| stored(e.to_string()))?;
            let key = PublicKey::parse(&text).map_err(stored)?;
            entries.push(Entry { role, name, key });
        }
    }
    Ok(entries)
}

fn read_authorized_keys(home: &Home) -> Result<String, KeyError> {
    let path = home.authorized_keys();
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).at("cannot read", &path)?,
    }
}

/// Numbered lines of authorized_keys (1-based).
type Lines<'a> = Vec<(usize, &'a str)>;

/// Splits authorized_keys into the lines before gitmirror's block and those after it.
fn foreign_lines(text: &str) -> (Lines<'_>, Lines<'_>) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut state = 0; // 0: before the block, 1: inside, 2: after
    for (i, line) in text.lines().enumerate() {
        match (state, line) {
            (0, BLOCK_START) => state = 1,
            (1, BLOCK_END) => state = 2,
            (1, _) => {}
            (0, _) => before.push((i + 1, line)),
            _ => after.push((i + 1, line)),
        }
    }
    (before, after)
}

/// The line of the first marker out of place (a second block, a start without an end, an
/// end without a start), if any. Rewriting such a file could drop lines that are not ours.
fn unbalanced_markers(text: &str) -> Option<usize> {
    let mut state = 0; // 0: before, 1: inside, 2: after the block
    let mut last_start = 0;
    for (i, line) in text.lines().enumerate() {
        match (state, line) {
            (0, BLOCK_START) => {
                state = 1;
                last_start = i + 1;
            }
            (1, BLOCK_END) => state = 2,
            (_, BLOCK_START) | (_, BLOCK_END) => return Some(i + 1),
            _ => {}
        }
    }
    (state == 1).then_some(last_start)
}

/// The line number of a foreign authorized_keys line that holds `key`, if any.
fn foreign_line_with(text: &str, key: &PublicKey) -> Option<usize> {
    let (before, after) = foreign_lines(text);
    before.into_iter().chain(after).find_map(|(n, line)| {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        fields
            .windows(2)
            .any(|w| w[0] == key.kind && w[1] == key.body)
            .then_some(n)
    })
}

/// The new authorized_keys: foreign lines kept where they were, gitmirror's block rebuilt.
fn render(existing: &str, entries: &[Entry], command: &Invocation) -> String {
    let (before, after) = foreign_lines(existing);
    let mut out = String::new();
    for (_, line) in &before {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(BLOCK_START);
    out.push('\n');
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| (a.role, &a.name).cmp(&(b.role, &b.name)));
    for e in sorted {
        out.push_str(&format!(
            "restrict,command=\"{} {} {}\" {} {}\n",
            command.as_str(),
            e.role.forced_verb(),
            e.name,
            e.key.to_line(),
            e.name
        ));
    }
    out.push_str(BLOCK_END);
    out.push('\n');
    for (_, line) in &after {
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMhhDJ/vW9nfxvqGDUSK5Y1vd8bUy3Me7kD3Tq/cIu8S alice@laptop";

    #[test]
    fn accepts_a_real_key() {
        let k = PublicKey::parse(&format!("{ED}\n")).unwrap();
        assert!(k.to_line().starts_with("ssh-ed25519 AAAA"));
        assert!(!k.to_line().contains("alice@laptop"));
    }

    #[test]
    fn refuses_tricks() {
        for text in [
            String::new(),
            format!("{ED}\n{ED}\n"),
            format!("{ED}\nssh-rsa AAAA"),
            format!("command=\"/bin/sh\" {ED}"),
            format!("restrict {ED}"),
            format!("no-pty,{ED}"),
            format!("{ED}\rcommand=x"),
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP".to_string(),
            "ssh-ed25519 not!base64".to_string(),
            // Valid base64, but the blob names another type.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMhhDJ/vW9nfxvqGDUSK5Y1vd8bUy3Me7kD3Tq/cIu8S"
                .to_string(),
            "-----BEGIN OPENSSH PRIVATE KEY-----".to_string(),
        ] {
            assert!(PublicKey::parse(&text).is_err(), "accepted {text:?}");
        }
    }

    #[test]
    fn render_keeps_foreign_lines_in_place() {
        let existing = format!(
            "# admin\nssh-rsa AAAA root@box\n{BLOCK_START}\nold line\n{BLOCK_END}\nfrom=\"x\" ssh-rsa BBBB other\n"
        );
        let entries = vec![Entry {
            role: Role::User,
            name: AccountName::parse("alice").unwrap(),
            key: PublicKey::parse(ED).unwrap(),
        }];
        let cmd = Invocation::new(Path::new("/usr/bin/gitmirror"), None).unwrap();
        let out = render(&existing, &entries, &cmd);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "# admin");
        assert_eq!(lines[1], "ssh-rsa AAAA root@box");
        assert_eq!(lines[2], BLOCK_START);
        assert!(
            lines[3]
                .starts_with("restrict,command=\"/usr/bin/gitmirror shell alice\" ssh-ed25519 ")
        );
        assert_eq!(lines[4], BLOCK_END);
        assert_eq!(lines[5], "from=\"x\" ssh-rsa BBBB other");
        assert!(!out.contains("old line"));
    }

    #[test]
    fn detects_unbalanced_markers() {
        let ok = format!("a\n{BLOCK_START}\nx\n{BLOCK_END}\nb\n");
        assert_eq!(unbalanced_markers(&ok), None);
        assert_eq!(unbalanced_markers("plain\n"), None);
        assert_eq!(
            unbalanced_markers(&format!("a\n{BLOCK_START}\nx\n")),
            Some(2)
        );
        assert_eq!(unbalanced_markers(&format!("{BLOCK_END}\n")), Some(1));
        assert_eq!(
            unbalanced_markers(&format!("{ok}{BLOCK_START}\n{BLOCK_END}\n")),
            Some(6)
        );
    }

    #[test]
    fn finds_key_in_foreign_lines() {
        let key = PublicKey::parse(ED).unwrap();
        let text = format!("# x\nno-pty {}\n", key.to_line());
        assert_eq!(foreign_line_with(&text, &key), Some(2));
        let inside = format!("{BLOCK_START}\n{}\n{BLOCK_END}\n", key.to_line());
        assert_eq!(foreign_line_with(&inside, &key), None);
    }
}
