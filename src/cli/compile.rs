//! `gitmirror compile [--accept-config]`: applies `repos.toml` and prints one line per change.
//! Exits non-zero while a repo keeps a master `repos.toml` does not name (after a promotion),
//! each such repo on a line saying how to settle it.

use super::{Config, Outcome, print};
use crate::admin::admin_repo::{ADMIN_REPO, apply};
use crate::admin::compile::{self, CompileReport};
use crate::home::Home;

pub(super) fn run(home: &Home, config: Config, accept: bool) -> Outcome {
    let config = config.map_err(|e| e.to_string())?;
    let committed = apply::compile_committed(home, &config.hostname, accept).map_err(|e| {
        format!("{e} (compiling the admin repo's committed configuration; repos.toml was not used)")
    })?;
    let r = match committed {
        None => {
            let r = compile::compile(home, accept).map_err(|e| e.to_string())?;
            print(&render(&r))?;
            r
        }
        Some(c) => {
            let mut out = String::new();
            if let Some(kept) = &c.hand_edit {
                out.push_str(&format!(
                    "repos.toml had been edited by hand: it differs from {ADMIN_REPO} {}, which is \
                     what this server runs; the edit is kept in {} (commit it to {ADMIN_REPO} to apply it)\n",
                    c.commit,
                    kept.display()
                ));
            }
            out.push_str(&format!("compiled {ADMIN_REPO} {}\n", c.commit));
            for line in &c.lines {
                out.push_str(line);
                out.push('\n');
            }
            print(&out)?;
            c.report
        }
    };
    match r.disagreements.len() {
        0 => Ok(()),
        1 => Err(
            "1 repo keeps a master repos.toml does not name (see above); the rest is compiled"
                .to_string(),
        ),
        n => Err(format!(
            "{n} repos keep a master repos.toml does not name (see above); the rest is compiled"
        )),
    }
}

fn render(r: &CompileReport) -> String {
    r.lines().iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::compile::{Accepted, Disagreement};
    use crate::names::{AccountName, RepoName};
    use crate::repo::Mastership;

    fn server(s: &str) -> AccountName {
        AccountName::parse(s).unwrap()
    }

    fn promoted() -> Mastership {
        Mastership {
            master: server("server2"),
            slaves: vec![server("server1")],
            epoch: 1,
        }
    }

    #[test]
    fn a_disagreement_names_the_repo_both_masters_and_both_ways_out() {
        let report = CompileReport {
            disagreements: vec![
                Disagreement {
                    repo: RepoName::parse("testing").unwrap(),
                    current: promoted(),
                    configured: Some(server("server1")),
                },
                Disagreement {
                    repo: RepoName::parse("site/tools").unwrap(),
                    current: promoted(),
                    configured: None,
                },
            ],
            ..CompileReport::default()
        };
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            "testing: kept master server2 (epoch 1, since a promotion), but repos.toml names \
             server1: name server2 as its master in repos.toml, or run `gitmirror compile \
             --accept-config` to make server1 master at epoch 2"
        );
        assert!(
            lines[1].starts_with("site/tools: kept master server2 (epoch 1"),
            "{text}"
        );
        assert!(lines[1].contains("gives it no mirror settings"), "{text}");
        assert!(lines[1].contains("to make it local at epoch 2"), "{text}");
    }

    #[test]
    fn an_accepted_repo_says_what_it_was() {
        let report = CompileReport {
            accepted: vec![Accepted {
                repo: RepoName::parse("testing").unwrap(),
                was: promoted(),
                master: Some(server("server1")),
                epoch: 2,
            }],
            ..CompileReport::default()
        };
        assert!(
            render(&report).starts_with(
                "testing: master server1 at epoch 2 as repos.toml says (was master server2 at epoch 1)\n"
            ),
            "{}",
            render(&report)
        );
    }
}
