//! Keeps the layout `lib.rs` describes: imports between folders go one way only.
//!
//! Each top-level module has a level; a module may name another (`crate::x`) only if that one
//! sits on a lower level. A new module must be given a level here, which is the moment to
//! decide where it belongs.

use std::path::Path;

/// Top-level modules from the top of the house to its leaves.
const LEVELS: &[&[&str]] = &[
    &["cli"],
    &["serve"],
    &["admin"],
    &["daemon"],
    &["metrics"],
    &["external"],
    &["replicate"],
    &["repo", "ssh"],
    &["config"],
    &["invocation", "log", "progress"],
    &["home"],
    &["proto"],
    &["names", "fs", "text"],
];

fn level(module: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_between_folders_go_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .iter()
            .next()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".rs");
        if matches!(top, "lib" | "main" | "layout_tests") {
            continue;
        }
        let Some(from) = level(top) else {
            wrong.push(format!("{top}: not in LEVELS"));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == top {
                continue;
            }
            match level(&name) {
                Some(to) if to > from => {}
                _ => wrong.push(format!("{} names crate::{name}", rel.display())),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layout:\n{}",
        wrong.join("\n")
    );
}
