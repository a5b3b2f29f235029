//! `gitmirror trust-host REPO`: pins the host key of the ssh upstream (and ssh downstreams) of
//! REPO, as their hosts answer now: the administrator's explicit trust on first use. From
//! then on a different key fails every fetch and push, and is reported. A `host_key` in
//! `repos.toml` pins without asking.

use super::{Config, Outcome, print};
use crate::config::Rules;
use crate::config::external::{RemoteUrl, Transport};
use crate::external::remote::{known_hosts_name, pin_host_key, scan_host_key};
use crate::home::Home;
use crate::names::RepoName;

pub(super) fn run(home: &Home, config: Config, repo: &str) -> Outcome {
    config.map_err(|e| e.to_string())?;
    let repo = RepoName::parse(repo).map_err(|e| format!("bad repo name: {e}"))?;
    let rules = Rules::compiled_for(home, &repo).map_err(|e| e.to_string())?;
    let mut urls: Vec<RemoteUrl> = rules
        .upstream(&repo)
        .map(|u| u.url.clone())
        .into_iter()
        .chain(rules.downstreams(&repo).iter().map(|d| d.url.clone()))
        .filter(|u| u.transport == Transport::Ssh)
        .collect();
    urls.dedup_by(|a, b| a.host == b.host && a.port == b.port);
    if urls.is_empty() {
        return Err(format!("{repo} has no ssh upstream or downstream"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start: {e}"))?;
    let mut out = String::new();
    for url in urls {
        let Some(host) = url.host.as_deref() else {
            continue;
        };
        let key = runtime
            .block_on(scan_host_key(host, url.port))
            .map_err(|e| e.to_string())?;
        pin_host_key(&home.external_known_hosts(), host, url.port, &key)
            .map_err(|e| e.to_string())?;
        out.push_str(&format!(
            "pinned {}: {key}\n",
            known_hosts_name(host, url.port)
        ));
    }
    print(&out)
}
