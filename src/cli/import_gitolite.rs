//! `gitmirror import-gitolite --conf gitolite.conf --keydir keydir/ [--out DIR] [--partial]`:
//! a gitolite server's configuration as `repos.toml` and `keys/` (the admin repo's layout).
//! Prints one line per thing made; lists what cannot be carried over as `FILE:LINE: what`
//! and then writes nothing, unless `--partial`.

use std::path::Path;

use super::{Outcome, print};
use crate::admin::import_gitolite;

pub(super) fn run(conf: &Path, keydir: &Path, out: &Path, partial: bool) -> Outcome {
    let import = import_gitolite::prepare(conf, keydir).map_err(|e| e.to_string())?;
    let mut text = String::new();
    for n in &import.notes {
        text.push_str(&format!("note: {}: {}\n", n.loc, n.what));
    }
    // On stderr, one per line, whatever follows: what a partial import leaves out, or why a
    // full one is refused.
    for p in &import.problems {
        eprintln!("{}: {}", p.loc, p.what);
    }
    if !import.problems.is_empty() && !partial {
        print(&text)?;
        return Err(format!(
            "{} thing(s) above cannot be carried over; nothing was written (--partial writes the rest)",
            import.problems.len()
        ));
    }
    import.write(out).map_err(|e| e.to_string())?;
    let patterns = match import.patterns {
        0 => String::new(),
        n => format!(", {n} wild repo pattern(s)"),
    };
    text.push_str(&format!(
        "wrote {} ({} repos{patterns}, {} groups)\n",
        out.join("repos.toml").display(),
        import.repos,
        import.groups
    ));
    for line in &import.key_lines {
        text.push_str(line);
        text.push('\n');
    }
    if !import.problems.is_empty() {
        text.push_str(&format!(
            "partial: {} thing(s) listed on stderr were left out\n",
            import.problems.len()
        ));
    }
    print(&text)
}
