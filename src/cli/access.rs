//! `gitmirror access REPO USER PERM [REF]`: what the compiled rules decide, as `gitolite
//! access` answers it: exit 0 allowed, 1 denied, each with the rule that decided (file and
//! line), 2 when the question itself is wrong. The shells and the pre-receive hook decide
//! through the same [`Rules::decide`], so the answer is the server's.

use std::process::ExitCode;

use super::{Cmd, Config, fail};
use crate::admin::user_repos;
use crate::config::rules::Grant;
use crate::config::{Ask, RepoRoles, Rules};
use crate::home::Home;
use crate::names::{AccountName, RepoName};
use crate::repo::{Store, wild};

/// Answers one question.
pub(super) fn run(
    cmd: &Cmd,
    home: &Home,
    config: Config,
    repo: &str,
    user: &str,
    perm: &str,
    refname: Option<&str>,
) -> ExitCode {
    match decide(home, config, repo, user, perm, refname) {
        Ok((true, line)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Ok((false, line)) => {
            println!("{line}");
            ExitCode::FAILURE
        }
        Err(msg) => {
            fail(cmd, &msg);
            ExitCode::from(2)
        }
    }
}

fn decide(
    home: &Home,
    config: Config,
    repo: &str,
    user: &str,
    perm: &str,
    refname: Option<&str>,
) -> Result<(bool, String), String> {
    config.map_err(|e| e.to_string())?;
    let repo = RepoName::parse(repo).map_err(|e| format!("bad repo name: {e}"))?;
    let user = AccountName::parse(user).map_err(|e| format!("bad user name: {e}"))?;
    // `any`, as gitolite spells it: the repo as a whole.
    let refname = refname.filter(|r| *r != "any");
    // A short name is a branch, as in rules and as `gitolite access` takes it.
    let full = refname.map(crate::config::rules::full_ref);
    let refname = full.as_deref();
    if let Some(r) = refname
        && !git2::Reference::is_valid_name(r)
    {
        return Err(format!(
            "bad ref {r:?}: expected a ref name like refs/heads/main (or main), or any"
        ));
    }
    let ask = Ask::from_letter(perm, refname.is_some()).ok_or_else(|| {
        format!("bad permission {perm:?}: expected R, W, + (rewind), C (create) or D (delete)")
    })?;
    let rules = Rules::compiled_for(home, &repo).map_err(|e| e.to_string())?;
    let store = Store::new(home.repositories());
    let what = format!(
        "{} {} {repo} {user}",
        ask.letter(),
        refname.unwrap_or("any")
    );
    let d = if ask == Ask::CreateRepo {
        match user_repos::creation(&rules, &store, &user, &repo) {
            Ok(d) => d,
            Err(why) => return Ok((false, format!("{what}: DENIED: {why}"))),
        }
    } else {
        let roles = match store.find(&repo) {
            Some(path) => wild::roles(&path).map_err(|e| e.to_string())?,
            None => RepoRoles::default(),
        };
        rules.decide(&user, &repo, ask, refname, &roles)
    };
    let by = |g: &Grant| match g.line {
        // Compiled by a version that did not record lines.
        0 => format!("{} (line unknown: run gitmirror compile)", g.text()),
        line => format!("repos.toml:{line}: {}", g.text()),
    };
    Ok(match (&d.by, d.allowed) {
        (Some(g), true) => (true, format!("{what}: allowed by {}", by(g))),
        (Some(g), false) => (false, format!("{what}: DENIED by {}", by(g))),
        (None, _) => (false, format!("{what}: DENIED: no rule allows it")),
    })
}
