//! Keeping what a change of master overwrites: each ref value that the first push from a new
//! master (or a promotion catching up) replaced with something that does not contain it is
//! kept under `refs/gitmirror/orphaned/<epoch>/<ref without refs/>`, so that no commit a
//! server accepted is lost silently, whatever the failover.

use std::path::Path;

use tracing::warn;

use crate::proto::{ORPHANED_NS, ORPHANED_PREFIX};

/// One ref a push or fetch changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overwrite {
    pub(crate) name: String,
    /// Its value before (zero when it was created).
    pub(crate) old: git2::Oid,
    /// Its value after (zero when it was deleted).
    pub(crate) new: git2::Oid,
}

/// Keeps each of `overwrites` whose new value does not contain the old one (a deletion, a
/// rewind, a ref moved to unrelated history) under the orphaned namespace for `epoch`.
/// Returns the names kept with a line for each (`ORPHANED: ...`, for the master and the log),
/// and the names that should have been kept and could not be.
pub(crate) fn keep_orphaned(path: &Path, epoch: u64, overwrites: &[Overwrite]) -> Kept {
    let mut out = Kept::default();
    let repo = match git2::Repository::open_bare(path) {
        Ok(r) => r,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot open the repo to keep orphaned refs");
            out.missed = overwrites
                .iter()
                .filter(|u| !u.old.is_zero())
                .map(|u| u.name.clone())
                .collect();
            return out;
        }
    };
    let (kept, lines, missed) = (&mut out.kept, &mut out.lines, &mut out.missed);
    for u in overwrites {
        if u.old.is_zero() {
            continue;
        }
        let contained = !u.new.is_zero()
            && (u.new == u.old || repo.graph_descendant_of(u.new, u.old).unwrap_or(false));
        if contained {
            continue;
        }
        let base = format!(
            "{ORPHANED_NS}{epoch}/{}",
            u.name.trim_start_matches("refs/")
        );
        let Some(name) = free_ref_name(&repo, &base) else {
            missed.push(u.name.clone());
            continue;
        };
        match repo.reference(
            &name,
            u.old,
            false,
            "gitmirror: orphaned by a change of master",
        ) {
            Ok(_) => {
                warn!(reference = %u.name, old = %u.old, kept = %name, "kept a ref a change of master overwrote");
                lines.push(format!(
                    "{ORPHANED_PREFIX}{} was {} here, kept as {name}",
                    u.name,
                    &u.old.to_string()[..12]
                ));
                kept.push(u.name.clone());
            }
            Err(e) => {
                warn!(reference = %u.name, error = %e, "cannot keep an orphaned ref");
                missed.push(u.name.clone());
            }
        }
    }
    out
}

/// What [`keep_orphaned`] did.
#[derive(Debug, Default)]
pub(crate) struct Kept {
    /// The refs whose old values were kept.
    pub(crate) kept: Vec<String>,
    /// A line for each (`ORPHANED: ...`).
    pub(crate) lines: Vec<String>,
    /// Refs whose old values should have been kept and could not be.
    pub(crate) missed: Vec<String>,
}

/// `base`, or `base.1`, `base.2`, ... : the first name no ref of `repo` has yet, so that a
/// kept ref never replaces another (`None` after a hundred tries).
pub(crate) fn free_ref_name(repo: &git2::Repository, base: &str) -> Option<String> {
    (0..100)
        .map(|n| {
            if n == 0 {
                base.to_string()
            } else {
                format!("{base}.{n}")
            }
        })
        .find(|n| repo.find_reference(n).is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_new_value_does_not_contain_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let a = repo.commit(None, &sig, &sig, "a", &tree, &[]).unwrap();
        let a_commit = repo.find_commit(a).unwrap();
        let b = repo
            .commit(None, &sig, &sig, "b", &tree, &[&a_commit])
            .unwrap();
        let other = repo.commit(None, &sig, &sig, "other", &tree, &[]).unwrap();
        let zero = git2::Oid::ZERO_SHA1;
        let w = |name: &str, old, new| Overwrite {
            name: name.into(),
            old,
            new,
        };
        let Kept { kept, lines, .. } = keep_orphaned(
            dir.path(),
            4,
            &[
                w("refs/heads/forward", a, b),
                w("refs/heads/rewound", b, a),
                w("refs/heads/replaced", a, other),
                w("refs/heads/deleted", b, zero),
                w("refs/heads/created", zero, b),
            ],
        );
        assert_eq!(
            kept,
            [
                "refs/heads/rewound",
                "refs/heads/replaced",
                "refs/heads/deleted"
            ]
        );
        assert_eq!(lines.len(), 3);
        let at = |n: &str| repo.find_reference(n).unwrap().target().unwrap();
        assert_eq!(at("refs/gitmirror/orphaned/4/heads/rewound"), b);
        assert_eq!(at("refs/gitmirror/orphaned/4/heads/replaced"), a);
        assert_eq!(at("refs/gitmirror/orphaned/4/heads/deleted"), b);
        assert!(
            repo.find_reference("refs/gitmirror/orphaned/4/heads/forward")
                .is_err()
        );
        // Kept again under the same epoch: a second name, the first never overwritten.
        keep_orphaned(dir.path(), 4, &[w("refs/heads/rewound", other, a)]);
        assert_eq!(at("refs/gitmirror/orphaned/4/heads/rewound"), b);
        assert_eq!(at("refs/gitmirror/orphaned/4/heads/rewound.1"), other);
    }
}
