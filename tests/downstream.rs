//! Push mirrors (`[[repos.NAME.downstream]]`), against real remotes on this machine: a local
//! path, `git daemon` on the server's 127.0.0.x address, and a plain sshd account. Every push
//! the master accepts reaches them; refs the remote moved are kept (and reported) or
//! overwritten as configured; a ref the remote alone has is never deleted, one we deleted is;
//! a downstream that is down gets the push when it is back, as does a ref update no hook
//! announced; a slave never pushes to them, and a slave promoted to master does; a wrong
//! pinned host key is refused and reported; bad URLs are refused by compile.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gitmirror_testkit::*;

const WAIT: Duration = Duration::from_secs(60);

/// `git daemon` serving `base` with pushes allowed, run as `owner`'s account; killed (by pid)
/// on drop.
struct GitDaemon {
    child: Child,
}

impl GitDaemon {
    fn start(owner: &Server, base: &Path, addr: Ipv4Addr, port: u16) -> GitDaemon {
        let child = owner
            .user
            .command("git")
            .arg("daemon")
            .args(["--reuseaddr", "--export-all", "--enable=receive-pack"])
            .arg(format!("--base-path={}", base.display()))
            .arg(format!("--listen={addr}"))
            .arg(format!("--port={port}"))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("git daemon to listen", WAIT, || {
            TcpStream::connect((addr, port)).is_ok()
        });
        GitDaemon { child }
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(addr: Ipv4Addr) -> u16 {
    TcpListener::bind((addr, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `git ARGS` as `owner`'s account.
fn git_as(owner: &Server, args: &[&str]) -> String {
    run(owner
        .user
        .command("git")
        .args(["-c", "user.name=them", "-c", "user.email=them@example.com"])
        .args(args))
    .ok()
}

fn init_bare(owner: &Server, path: &Path) {
    git_as(owner, &["init", "-q", "--bare", path.to_str().unwrap()]);
}

/// The refs of the repo at `path` (read as `owner`).
fn refs_at(owner: &Server, path: &Path) -> BTreeMap<String, String> {
    let out = run(owner
        .user
        .command("git")
        .arg("--git-dir")
        .arg(path)
        .args(["for-each-ref", "--format=%(refname) %(objectname)"]));
    out.text()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, o)| (n.to_string(), o.to_string()))
        .collect()
}

/// A commit made on the remote behind our back, on top of `parent`.
fn commit_there(owner: &Server, path: &Path, parent: &str) -> String {
    let dir = path.to_str().unwrap();
    let tree = git_as(
        owner,
        &["--git-dir", dir, "rev-parse", &format!("{parent}^{{tree}}")],
    );
    git_as(
        owner,
        &[
            "--git-dir",
            dir,
            "commit-tree",
            tree.trim(),
            "-p",
            parent,
            "-m",
            "theirs",
        ],
    )
    .trim()
    .to_string()
}

/// The `downstreams` rows of `server`'s `status --json`, for `repo`.
fn downstream_rows(server: &Server, repo: &str) -> Vec<serde_json::Value> {
    let (v, _) = server.status();
    v["downstreams"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["repo"] == repo)
        .collect()
}

fn row(server: &Server, repo: &str, url: &str) -> Option<serde_json::Value> {
    downstream_rows(server, repo)
        .into_iter()
        .find(|r| r["url"] == url)
}

fn sha(c: &Client, dir: &str, rev: &str) -> String {
    c.git_in(dir, &["rev-parse", rev]).ok().trim().to_string()
}

#[test]
fn pushes_reach_downstreams_keeping_or_overwriting_what_diverged_and_the_slave_never_pushes() {
    let cluster = Cluster::new(&["server1", "server2"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    let (s1, s2) = (cluster.server("server1"), cluster.server("server2"));
    let local = s1.outside_dir("down").join("local.git");
    init_bare(s1, &local);
    let base = s1.home().join("gitd");
    let served = base.join("app.git");
    init_bare(s1, &served);
    let port = free_port(s1.addr);
    let _gitd = GitDaemon::start(s1, &base, s1.addr, port);
    let git_url = format!("git://{}:{port}/app.git", s1.addr);
    let local_url = local.display().to_string();
    cluster.set_rules(&format!(
        r#"
[repos.app]
"RW+" = ["alice"]
mirror.master = "server1"
mirror.slaves = ["server2"]

[[repos.app.downstream]]
url = "{local_url}"

[[repos.app.downstream]]
url = "{git_url}"
divergence = "overwrite"
"#
    ));

    // A first push: branches and a tag reach both.
    let c1 = alice.init_repo("w");
    alice.git_in("w", &["checkout", "-q", "-b", "feature"]).ok();
    let c2 = alice.commit("w", "f1");
    alice.git_in("w", &["branch", "gone"]).ok();
    alice.git_in("w", &["tag", "v1", &c1]).ok();
    let url = s1.url("app");
    let out = alice.git_in("w", &["push", &url, "main", "feature", "gone", "v1"]);
    out.ok();
    assert!(
        out.err().contains(&format!("===> {local_url} (downstream")),
        "{}",
        out.err()
    );
    let want: BTreeMap<String, String> = [
        ("refs/heads/main", c1.clone()),
        ("refs/heads/feature", c2.clone()),
        ("refs/heads/gone", c2.clone()),
        ("refs/tags/v1", c1.clone()),
    ]
    .into_iter()
    .map(|(n, o)| (n.to_string(), o))
    .collect();
    for path in [&local, &served] {
        wait_for("the first push on the downstreams", WAIT, || {
            refs_at(s1, path) == want
        });
    }

    // Behind our back: a ref only they have, and `feature` moved on both.
    let mut theirs = BTreeMap::new();
    for path in [&local, &served] {
        let dir = path.to_str().unwrap();
        git_as(
            s1,
            &["--git-dir", dir, "update-ref", "refs/heads/theirs", &c1],
        );
        let moved = commit_there(s1, path, &c2);
        git_as(
            s1,
            &["--git-dir", dir, "update-ref", "refs/heads/feature", &moved],
        );
        theirs.insert(dir.to_string(), moved);
    }

    // main moves, feature moves, gone is deleted.
    alice.git_in("w", &["checkout", "-q", "main"]).ok();
    let c3 = alice.commit("w", "m2");
    alice.git_in("w", &["checkout", "-q", "feature"]).ok();
    let c4 = alice.commit("w", "f2");
    alice
        .git_in("w", &["push", &url, "main", "feature", ":gone"])
        .ok();

    // keep: feature left at theirs and reported; the rest pushed; theirs never deleted.
    let kept = theirs[local.to_str().unwrap()].clone();
    wait_for("the second push on the local downstream", WAIT, || {
        let r = refs_at(s1, &local);
        r.get("refs/heads/main") == Some(&c3)
            && !r.contains_key("refs/heads/gone")
            && r.get("refs/heads/feature") == Some(&kept)
    });
    let r = refs_at(s1, &local);
    assert_eq!(r.get("refs/heads/theirs"), Some(&c1));
    assert_eq!(r.get("refs/tags/v1"), Some(&c1));
    wait_for("the divergence reported", WAIT, || {
        row(s1, "app", &local_url).is_some_and(|r| {
            r["state"] == "in sync" && r["diverged"].to_string().contains("refs/heads/feature")
        })
    });
    let text = s1.gitmirror(&["status"]).text();
    assert!(
        text.contains(&format!(
            "DIVERGED: app -> {local_url}: changed there, left alone: refs/heads/feature"
        )),
        "{text}"
    );

    // overwrite: feature forced to ours; theirs still never deleted.
    wait_for("the second push on the git:// downstream", WAIT, || {
        let r = refs_at(s1, &served);
        r.get("refs/heads/main") == Some(&c3)
            && !r.contains_key("refs/heads/gone")
            && r.get("refs/heads/feature") == Some(&c4)
    });
    assert_eq!(refs_at(s1, &served).get("refs/heads/theirs"), Some(&c1));
    let r = row(s1, "app", &git_url).unwrap();
    assert_eq!(r["diverged"], serde_json::json!([]), "{r}");

    // The slave has every push and never touched a downstream.
    cluster.wait_in_sync("app", "server1", &["server2"]);
    assert!(downstream_rows(s2, "app").is_empty());
    assert!(!s2.log().contains("downstream"), "{}", s2.log());
    assert!(
        !s2.home()
            .join("state/external/downstream/app.json")
            .exists(),
        "the slave queued downstream pushes"
    );

    // After a change of master, the new master pushes to them.
    let out = s2.gitmirror(&["promote", "app"]);
    assert!(
        out.text().contains("downstream(s) queued"),
        "{}",
        out.text()
    );
    alice.git_in("w", &["checkout", "-q", "main"]).ok();
    let c5 = alice.commit("w", "m3");
    alice.git_in("w", &["push", &s2.url("app"), "main"]).ok();
    wait_for(
        "the new master's push on the git:// downstream",
        WAIT,
        || refs_at(s1, &served).get("refs/heads/main") == Some(&c5),
    );
    assert!(row(s2, "app", &git_url).is_some());
    assert_eq!(refs_at(s1, &served).get("refs/heads/theirs"), Some(&c1));
}

#[test]
fn a_downstream_that_is_down_gets_the_push_when_it_is_back() {
    let s1 = Server::start("server1");
    s1.mirror_settings(
        "retry_initial_secs = 0.2\nretry_max_secs = 1\nalert_after_secs = 1\nrescan_secs = 1",
    );
    let alice = Client::new("alice");
    s1.add_user("alice", &alice.key);
    let base = s1.home().join("gitd");
    let served = base.join("app.git");
    init_bare(&s1, &served);
    let port = free_port(s1.addr);
    let git_url = format!("git://{}:{port}/app.git", s1.addr);
    s1.set_rules(&format!(
        "[repos.app]\n\"RW+\" = [\"alice\"]\n\n[[repos.app.downstream]]\nurl = \"{git_url}\"\n"
    ));
    let c1 = alice.init_repo("w");
    // Many tags: more than one `git push` carries.
    let tags: String = (0..450)
        .map(|i| format!("create refs/tags/t{i:03} {c1}\n"))
        .collect();
    let mut cmd = Command::new("git");
    cmd.current_dir(alice.dir.path().join("w"))
        .args(["update-ref", "--stdin"])
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), tags.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    alice
        .git_in("w", &["push", "-q", &s1.url("app"), "main", "--tags"])
        .ok();

    // Down: failing, retried, in git's own words, and an alert past alert_after_secs.
    wait_for("the downstream reported failing", WAIT, || {
        row(&s1, "app", &git_url).is_some_and(|r| {
            r["state"] == "failing"
                && r["attempts"].as_u64() >= Some(2)
                && r["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("unable to connect"))
        })
    });
    wait_for("status to alert", WAIT, || !s1.status().1);
    let out = s1.gitmirror(&["status"]);
    assert!(
        out.text()
            .contains(&format!("DOWNSTREAM: app -> {git_url}: behind for")),
        "{}",
        out.text()
    );
    assert!(
        out.err().contains("a downstream has been behind"),
        "{}",
        out.err()
    );

    // Back: the push arrives by itself.
    let _gitd = GitDaemon::start(&s1, &base, s1.addr, port);
    wait_for("the push after the downstream came back", WAIT, || {
        let r = refs_at(&s1, &served);
        r.get("refs/heads/main") == Some(&c1) && r.len() == 451
    });
    wait_for("status in sync", WAIT, || {
        row(&s1, "app", &git_url).is_some_and(|r| r["state"] == "in sync")
    });
    let r = row(&s1, "app", &git_url).unwrap();
    assert!(r["last_success"].as_f64().is_some(), "{r}");
    assert!(s1.status().1, "status still alerts");

    // A ref update no hook announced (an administrator's update-ref) goes at the next sweep.
    s1.git("app", &["update-ref", "refs/heads/side", &c1]).ok();
    wait_for("an unannounced ref update on the downstream", WAIT, || {
        refs_at(&s1, &served).get("refs/heads/side") == Some(&c1)
    });
}

#[test]
fn ssh_downstreams_need_their_pinned_host_key_and_bad_urls_are_refused() {
    let s1 = Server::start("server1");
    s1.mirror_settings("retry_initial_secs = 0.2\nretry_max_secs = 1");
    let alice = Client::new("alice");
    s1.add_user("alice", &alice.key);
    // A plain ssh account, its shell running git itself, that takes server1's own key.
    let plain = Server::start("plain");
    let key = std::fs::read_to_string(s1.home().join(".ssh/id_ed25519.pub")).unwrap();
    std::fs::write(plain.home().join(".ssh/authorized_keys"), key).unwrap();
    let (good, bad) = (plain.home().join("good.git"), plain.home().join("bad.git"));
    init_bare(&plain, &good);
    init_bare(&plain, &bad);
    let ssh_url = |p: &PathBuf| {
        format!(
            "ssh://{}@{}:{}{}",
            plain.user.name,
            plain.addr,
            plain.port,
            p.display()
        )
    };
    let host_key = std::fs::read_to_string(plain.sshd_dir.path().join("host_ed25519.pub"))
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let other = plain.sshd_dir.path().join("other_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other))
    .ok();
    let wrong_key = std::fs::read_to_string(other.with_extension("pub"))
        .unwrap()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");

    // Content pushed before any downstream is configured...
    let base_rules = "[repos.app]\n\"RW+\" = [\"alice\"]\n\n[repos.other]\n\"RW+\" = [\"alice\"]\n";
    s1.set_rules(base_rules);
    let c1 = alice.init_repo("w");
    alice.git_in("w", &["push", &s1.url("app"), "main"]).ok();
    alice.git_in("w", &["push", &s1.url("other"), "main"]).ok();

    // ...goes when compile adds them: with the right key it arrives; with a wrong one ssh
    // refuses, and status says so.
    let (good_url, bad_url) = (ssh_url(&good), ssh_url(&bad));
    s1.set_rules(&format!(
        "{base_rules}\n[[repos.app.downstream]]\nurl = \"{good_url}\"\nhost_key = \"{host_key}\"\n\n[[repos.other.downstream]]\nurl = \"{bad_url}\"\nhost_key = \"{wrong_key}\"\n"
    ));
    wait_for("the existing content on the ssh downstream", WAIT, || {
        refs_at(&plain, &good).get("refs/heads/main") == Some(&c1)
    });
    wait_for("the wrong host key reported", WAIT, || {
        row(&s1, "other", &bad_url).is_some_and(|r| {
            r["state"] == "failing"
                && r["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Host key verification failed"))
        })
    });
    assert!(refs_at(&plain, &bad).is_empty());
    // A later push goes the same way.
    let c2 = alice.commit("w", "two");
    alice.git_in("w", &["push", &s1.url("app"), "main"]).ok();
    wait_for("the second push on the ssh downstream", WAIT, || {
        refs_at(&plain, &good).get("refs/heads/main") == Some(&c2)
    });
    assert_eq!(sha(&alice, "w", "main"), c2);

    // Bad URLs: refused with file and line, the compiled rules untouched.
    let compiled = std::fs::read(s1.home().join("state/repos.compiled.index")).ok();
    for (url, why) in [
        (
            "https://bob:secret@example.com/app.git",
            "a password in the URL",
        ),
        (
            "https://bob@example.com/app.git",
            "credentials in the URL; use token_file",
        ),
        ("ext::sh", "not a transport"),
        ("ssh://git:pw@example.com/a.git", "a password in the URL"),
    ] {
        std::fs::write(
            s1.home().join("repos.toml"),
            format!(
                "[repos.app]\n\"RW+\" = [\"alice\"]\n\n[[repos.app.downstream]]\nurl = \"{url}\"\n"
            ),
        )
        .unwrap();
        let err = s1.gitmirror(&["compile"]).fails_with("repos.toml:5");
        assert!(err.contains(why), "{url}: {err}");
        assert!(!err.contains("secret") && !err.contains(":pw@"), "{err}");
    }
    assert_eq!(
        std::fs::read(s1.home().join("state/repos.compiled.index")).ok(),
        compiled
    );
}
