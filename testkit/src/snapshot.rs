//! A server's disk before and after: for a refused request, or a command run again that has
//! nothing left to do, the tests check that not a file, a link nor a mode bit changed.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Every file under `root` with its contents (directories, symlinks and sockets recorded too),
/// except the log file, which the tests expect to grow.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if rel == Path::new("gitmirror.log") {
                continue;
            }
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.insert(rel, format!("dir {:o}", meta.mode()).into_bytes());
                walk(&p, root, out);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if !meta.is_file() {
                // A socket (the daemon's, ssh's control masters) or a fifo: its kind and mode.
                out.insert(
                    rel,
                    format!("{:?} {:o}", meta.file_type(), meta.mode()).into_bytes(),
                );
            } else {
                let mut v = fs::read(&p).unwrap();
                v.extend(format!(" mode {:o}", meta.mode()).bytes());
                out.insert(rel, v);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts two snapshots are equal, naming the paths that differ.
pub fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "changed on disk: {changed:?}");
}
