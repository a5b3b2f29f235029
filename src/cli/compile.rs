//! `gitmirror compile`: applies `repos.toml` and prints one line per change.

use super::{Outcome, print};
use crate::admin::compile;
use crate::home::Home;

pub(super) fn run(home: &Home) -> Outcome {
    let r = compile::compile(home).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for repo in &r.created {
        out.push_str(&format!("created {repo}\n"));
    }
    for repo in &r.mirror_updated {
        out.push_str(&format!("mirror settings written for {repo}\n"));
    }
    for (repo, slaves) in &r.queued {
        let slaves: Vec<String> = slaves.iter().map(ToString::to_string).collect();
        out.push_str(&format!("queued {repo} for {}\n", slaves.join(", ")));
    }
    for repo in &r.mirror_removed {
        out.push_str(&format!(
            "mirror settings removed from {repo}: it is local now\n"
        ));
    }
    for repo in &r.mirror_by_hand {
        out.push_str(&format!(
            "{repo}: repos.toml gives no mirror settings; those set by hand in its git config are kept\n"
        ));
    }
    out.push_str(&format!(
        "gitmirror: compiled {} repos ({} created, hooks updated in {})\n",
        r.repos,
        r.created.len(),
        r.hooks_updated
    ));
    print(&out)
}
