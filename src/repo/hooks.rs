//! The hook scripts gitmirror installs, from `hooks/` in the source tree.
//!
//! Every push over ssh runs the set in the home (`core.hooksPath`); each repo also gets a copy,
//! for pushes made on the server's own disk. Peers' mirror pushes run their own set, without
//! the pre-receive checks that are for users.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::StoreError;
use crate::fs::{Context, ensure_dir, write_if_changed};
use crate::invocation::Invocation;
use crate::proto::HOOK_PLACEHOLDER;

/// The hooks gitmirror installs into every repo, from `hooks/` in the source tree.
/// [`HOOK_PLACEHOLDER`] is replaced by the [`Invocation`] of the compiling binary.
pub(super) const HOOKS: &[(&str, &str)] = &[
    ("pre-receive", include_str!("../../hooks/pre-receive")),
    ("post-receive", include_str!("../../hooks/post-receive")),
];

/// The hooks a peer's mirror push runs: no pre-receive, whose checks are for users.
const PEER_HOOKS: &[(&str, &str)] = &[("post-receive", include_str!("../../hooks/post-receive"))];

/// Installs gitmirror's hooks into the repo at `repo`, rewriting only those that differ.
/// Returns how many it wrote.
pub(crate) fn install_hooks(repo: &Path, invocation: &Invocation) -> Result<usize, StoreError> {
    write_hooks(&repo.join("hooks"), invocation)
}

/// Writes gitmirror's hook scripts into `dir`, rewriting only those that differ. Returns how
/// many it wrote.
pub(crate) fn write_hooks(dir: &Path, invocation: &Invocation) -> Result<usize, StoreError> {
    write_hook_set(dir, invocation, HOOKS, true)
}

/// Writes the hooks peers' pushes run into `dir` (see [`PEER_HOOKS`]).
pub(crate) fn write_peer_hooks(dir: &Path, invocation: &Invocation) -> Result<usize, StoreError> {
    write_hook_set(dir, invocation, PEER_HOOKS, true)
}

/// Whether every hook a user's push runs is in `dir` (the home's `hooks/`).
pub(crate) fn user_hooks_installed(dir: &Path) -> bool {
    installed(dir, HOOKS)
}

/// Whether every hook a peer's mirror push runs is in `dir`: without them a slave would take
/// the push but neither apply the master's HEAD nor keep refs that diverged.
pub(crate) fn peer_hooks_installed(dir: &Path) -> bool {
    installed(dir, PEER_HOOKS)
}

fn installed(dir: &Path, hooks: &[(&str, &str)]) -> bool {
    hooks.iter().all(|(name, _)| dir.join(name).is_file())
}

/// Writes `hooks` into `dir`: replacing live files atomically (`in_place`), or plainly into a
/// directory nobody uses yet.
pub(super) fn write_hook_set(
    dir: &Path,
    invocation: &Invocation,
    hooks: &[(&str, &str)],
    in_place: bool,
) -> Result<usize, StoreError> {
    ensure_dir(dir, 0o700)?;
    let mut written = 0;
    for (name, template) in hooks {
        let text = template.replace(HOOK_PLACEHOLDER, invocation.as_str());
        let path = dir.join(name);
        if in_place {
            if write_if_changed(&path, text.as_bytes(), 0o700)? {
                written += 1;
            }
        } else {
            fs::write(&path, text)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o700)))
                .at("cannot write", &path)?;
            written += 1;
        }
    }
    Ok(written)
}
