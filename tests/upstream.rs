//! Pull mirrors: a repo whose master fetches from an upstream (a local path, `git daemon`'s
//! git://, another server over ssh with its host key pinned), on a schedule and on demand;
//! slaves get the result by normal replication; users' pushes are refused naming the
//! upstream; a rewound upstream branch is kept or overwritten as configured; deletions are
//! pruned only when asked and never when most refs vanish at once; failures are reported in
//! the upstream's words, and the last run's log is kept.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use gitmirror_testkit::*;

struct World {
    cluster: Cluster,
    alice: Client,
    /// The upstream, a bare repo the server's account can read (in server1's home).
    up: PathBuf,
}

fn rules(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2"]

[repos.mirror]
RW = ["alice"]
upstream.url = "{upstream}"
{extra}
"#
    )
}

fn world(extra: &str) -> World {
    let cluster = Cluster::new(&["server1", "server2"]);
    let alice = Client::new("alice");
    cluster.add_user(&alice);
    let s1 = cluster.server("server1");
    let up = s1.outside_dir("up").join("proj.git");
    let w = World { cluster, alice, up };
    w.up_git(&[
        "init",
        "-q",
        "--bare",
        "-b",
        "trunk",
        w.up.to_str().unwrap(),
    ]);
    // The test deletes the upstream's default branch too.
    w.up_git(&[
        "--git-dir",
        w.up.to_str().unwrap(),
        "config",
        "receive.denyDeleteCurrent",
        "ignore",
    ]);
    let work = w.work();
    w.up_git(&[
        "clone",
        "-q",
        w.up.to_str().unwrap(),
        work.to_str().unwrap(),
    ]);
    w.up_commit("one");
    w.up_in(&[
        "push",
        "-q",
        "origin",
        "HEAD:refs/heads/trunk",
        "HEAD:refs/heads/b1",
        "HEAD:refs/heads/b2",
    ]);
    w.up_in(&["tag", "v1"]);
    w.up_in(&["push", "-q", "origin", "v1"]);
    w.set_rules(extra);
    w
}

impl World {
    fn s(&self, name: &str) -> &Server {
        self.cluster.server(name)
    }

    fn set_rules(&self, extra: &str) {
        self.cluster
            .set_rules(&rules(self.up.to_str().unwrap(), extra));
    }

    fn work(&self) -> PathBuf {
        self.s("server1").outside_dir("up").join("work")
    }

    /// git as server1's account (which owns the upstream).
    fn up_git(&self, args: &[&str]) {
        run(self.s("server1").user.command("git").args(args)).ok();
    }

    fn up_in(&self, args: &[&str]) -> String {
        let work = self.work();
        run(self
            .s("server1")
            .user
            .command("git")
            .arg("-C")
            .arg(&work)
            .args(args))
        .ok()
    }

    fn up_commit(&self, what: &str) -> String {
        self.up_in(&[
            "-c",
            "user.name=up",
            "-c",
            "user.email=up@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            what,
        ]);
        self.up_in(&["rev-parse", "HEAD"]).trim().to_string()
    }

    fn up_refs(&self) -> String {
        run(self
            .s("server1")
            .user
            .command("git")
            .arg("--git-dir")
            .arg(&self.up)
            .args(["for-each-ref", "--format=%(objectname) %(refname)"]))
        .ok()
    }

    fn mirror_refs(&self, server: &str) -> String {
        self.s(server)
            .git(
                "mirror",
                &["for-each-ref", "--format=%(objectname) %(refname)"],
            )
            .ok()
            .lines()
            .filter(|l| !l.contains(" refs/gitmirror/"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn fetch(&self) -> String {
        let out = self.s("server1").gitmirror(&["fetch", "mirror"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn status(&self) -> String {
        let out = self.s("server1").gitmirror(&["status"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

#[test]
fn a_pull_mirror_takes_its_upstream_and_its_slaves_follow() {
    let w = world("");
    let out = w.fetch();
    assert!(out.contains("mirror: fetched"), "{out}");
    assert_eq!(w.mirror_refs("server1"), w.up_refs());
    // HEAD follows the upstream's default branch.
    let head = w.s("server1").git("mirror", &["symbolic-ref", "HEAD"]).ok();
    assert_eq!(head.trim(), "refs/heads/trunk");
    // The slave gets the fetched state by normal replication.
    w.cluster.wait_in_sync("mirror", "server1", &["server2"]);
    // Only the master fetches.
    let out = w.s("server2").gitmirror(&["fetch", "mirror"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a pull mirror this server fetches"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A user's push is refused, naming the upstream, on the master and on the slave.
    w.alice.clone(w.s("server1"), "mirror", "m").ok();
    w.alice.commit("m", "mine");
    for s in ["server1", "server2"] {
        let url = w.s(s).url("mirror");
        let out = w
            .alice
            .git_in("m", &["push", url.as_str(), "HEAD:refs/heads/trunk"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("is a mirror of") || err.contains("mirrored from server1"),
            "{s}: {err}"
        );
    }
    // Nothing new upstream: a fetch changes nothing.
    let before = w.mirror_refs("server1");
    assert!(w.fetch().contains("0 refs updated"));
    assert_eq!(w.mirror_refs("server1"), before);
    // alice (RW) may have it fetched over ssh; at most once in ten seconds.
    w.up_commit("two");
    w.up_in(&["push", "-q", "origin", "HEAD:refs/heads/trunk"]);
    // The fetch above counts: too soon.
    let out = w.alice.ssh(w.s("server1"), "fetch mirror");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("try again in"));
}

#[test]
fn the_schedule_fetches_by_itself_and_failures_are_reported_in_the_upstreams_words() {
    let w = world("upstream.interval = \"1s\"");
    for s in &w.cluster.servers {
        s.mirror_settings("upstream_min_interval_secs = 1");
    }
    w.s("server1").stop_daemon();
    w.s("server1").gitmirror(&["request-push", "mirror"]);
    wait_for("the first scheduled fetch", Duration::from_secs(30), || {
        w.mirror_refs("server1") == w.up_refs()
    });
    let new = w.up_commit("scheduled");
    w.up_in(&["push", "-q", "origin", "HEAD:refs/heads/b1"]);
    wait_for("the next scheduled fetch", Duration::from_secs(30), || {
        w.mirror_refs("server1").contains(&new)
    });
    w.cluster.wait_in_sync("mirror", "server1", &["server2"]);
    // The upstream goes away: the failure is retried and shown in git's words.
    std::fs::rename(&w.up, w.up.with_extension("away")).unwrap();
    wait_for("the failure in status", Duration::from_secs(30), || {
        w.status().contains("UPSTREAM mirror <- ") && w.status().contains("FAILING")
    });
    let status = w.status();
    assert!(
        status.contains("does not appear to be a git repository"),
        "{status}"
    );
    let log = w
        .s("server1")
        .gitmirror(&["status", "mirror", "--log"])
        .ok();
    assert!(log.contains("failed: "), "{log}");
    // Back: the next retry succeeds by itself.
    std::fs::rename(w.up.with_extension("away"), &w.up).unwrap();
    wait_for("recovery", Duration::from_secs(30), || {
        let status = w.status();
        status.contains("UPSTREAM mirror <- ")
            && status.contains(": fetched ")
            && !status.contains("FAILING")
    });
}

#[test]
fn a_rewound_upstream_branch_is_kept_or_overwritten_and_deletions_are_guarded() {
    let w = world("");
    w.fetch();
    let old = w
        .s("server1")
        .git("mirror", &["rev-parse", "refs/heads/trunk"])
        .ok();
    // Upstream rewinds trunk (a new root) and moves b1 forward.
    w.up_in(&["checkout", "-q", "--orphan", "fresh"]);
    let rewound = w.up_commit("rewritten history");
    w.up_in(&["push", "-q", "--force", "origin", "HEAD:refs/heads/trunk"]);
    w.up_in(&["checkout", "-q", "trunk"]);
    w.up_in(&["reset", "-q", "--hard", "origin/b1"]);
    let b1 = w.up_commit("b1 moves on");
    w.up_in(&["push", "-q", "origin", "HEAD:refs/heads/b1"]);
    let out = w.fetch();
    assert!(out.contains("1 diverged"), "{out}");
    let here = |r: &str| {
        w.s("server1")
            .git("mirror", &["rev-parse", r])
            .ok()
            .trim()
            .to_string()
    };
    assert_eq!(here("refs/heads/trunk"), old.trim(), "kept ours");
    assert_eq!(here("refs/heads/b1"), b1, "the rest applied");
    assert!(
        w.status().contains("diverged refs/heads/trunk"),
        "{}",
        w.status()
    );
    // overwrite: taken, ours kept aside.
    w.set_rules("upstream.divergence = \"overwrite\"");
    w.fetch();
    assert_eq!(here("refs/heads/trunk"), rewound);
    let kept = w
        .s("server1")
        .git(
            "mirror",
            &[
                "for-each-ref",
                "--format=%(objectname)",
                "refs/gitmirror/diverged/",
            ],
        )
        .ok();
    assert!(kept.contains(old.trim()), "{kept}");
    // A branch deleted upstream stays without prune, goes with it.
    w.up_in(&["push", "-q", "origin", ":refs/heads/b2"]);
    w.fetch();
    assert!(w.mirror_refs("server1").contains("refs/heads/b2"));
    w.set_rules("upstream.divergence = \"overwrite\"\nupstream.prune = true");
    w.fetch();
    assert!(!w.mirror_refs("server1").contains("refs/heads/b2"));
    // An upstream that suddenly has nothing: nothing is deleted, and status says why.
    let before = w.mirror_refs("server1");
    for r in ["trunk", "b1"] {
        w.up_in(&["push", "-q", "origin", &format!(":refs/heads/{r}")]);
    }
    w.up_in(&["push", "-q", "origin", ":refs/tags/v1"]);
    let out = w.fetch();
    assert!(out.contains("deletions held back"), "{out}");
    assert_eq!(w.mirror_refs("server1"), before);
    assert!(w.status().contains("deletions held back"), "{}", w.status());
}

/// `git daemon` serving server1's `up/` directory on a free port of 127.0.0.1's range.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn git_and_ssh_upstreams_with_a_pinned_host_key() {
    let w = world("");
    // git://
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = w.s("server1").outside_dir("up");
    let child = w
        .s("server1")
        .user
        .command("git")
        .args([
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(&base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = GitDaemon { child, port };
    wait_for("git daemon", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", daemon.port)).is_ok()
    });
    w.cluster
        .set_rules(&rules(&format!("git://127.0.0.1:{port}/proj.git"), ""));
    let out = w.fetch();
    assert!(out.contains("mirror: fetched"), "{out}");
    assert_eq!(w.mirror_refs("server1"), w.up_refs());
    drop(daemon);

    // ssh: another gitmirror server holds the upstream; server1 reads it with its own key.
    let up = Server::start("upserver");
    let reader = Key {
        private: w.s("server1").home().join(".ssh/id_ed25519"),
        public: w.s("server1").home().join("server1.pub"),
    };
    up.add_user("mirrorbot", &reader);
    up.add_user("alice", &w.alice.key);
    up.set_rules("[repos.proj]\nR = [\"mirrorbot\"]\n\"RW+\" = [\"alice\"]\n");
    w.alice.init_repo("p");
    let sha = w.alice.commit("p", "over ssh");
    let url = up.url("proj");
    w.alice
        .git_in("p", &["push", url.as_str(), "HEAD:refs/heads/over-ssh"])
        .ok();
    let host_key = std::fs::read_to_string(up.sshd_dir.path().join("host_ed25519.pub")).unwrap();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    let ssh_url = format!("ssh://{}@{}:{}/proj.git", up.user.name, up.addr, up.port);
    let with_key = |key: &str| {
        w.cluster
            .set_rules(&rules(&ssh_url, &format!("upstream.host_key = \"{key}\"")));
    };
    // A wrong pinned key: refused, and said so.
    let other =
        std::fs::read_to_string(w.s("server2").sshd_dir.path().join("host_ed25519.pub")).unwrap();
    let other: Vec<&str> = other.split_whitespace().take(2).collect();
    with_key(&other.join(" "));
    let out = w.fetch();
    assert!(out.contains("fetch failed"), "{out}");
    assert!(out.to_lowercase().contains("host key"), "{out}");
    // Unpinned in repos.toml, the key known here still decides: the wrong one, refused.
    w.cluster.set_rules(&rules(&ssh_url, ""));
    let out = w.fetch();
    assert!(out.contains("fetch failed"), "{out}");
    // The administrator trusts what the host answers now (trust on first use, said).
    let out = w.s("server1").gitmirror(&["trust-host", "mirror"]).ok();
    assert!(out.contains(&host_key.join(" ")), "{out}");
    let out = w.fetch();
    assert!(out.contains("mirror: fetched"), "{out}");
    // Pinned in repos.toml: the same.
    with_key(&host_key.join(" "));
    let out = w.fetch();
    assert!(out.contains("mirror: fetched"), "{out}");
    let here = w
        .s("server1")
        .git("mirror", &["rev-parse", "refs/heads/over-ssh"])
        .ok();
    assert_eq!(here.trim(), sha);
    // A key of its own for this upstream, which knows only that key now.
    let id = w.s("server1").outside_dir("keys").join("upstream_ed25519");
    run(w
        .s("server1")
        .user
        .command("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&id))
    .ok();
    up.add_user(
        "idbot",
        &Key {
            private: id.clone(),
            public: id.with_extension("pub"),
        },
    );
    up.set_rules("[repos.proj]\nR = [\"idbot\"]\n\"RW+\" = [\"alice\"]\n");
    let out = w.fetch();
    assert!(
        out.contains("fetch failed"),
        "the server's own key still reads it: {out}"
    );
    w.cluster.set_rules(&rules(
        &ssh_url,
        &format!(
            "upstream.host_key = \"{}\"\nupstream.identity = \"{}\"",
            host_key.join(" "),
            id.display()
        ),
    ));
    let out = w.fetch();
    assert!(out.contains("mirror: fetched"), "{out}");
}

#[test]
fn credentials_in_a_url_are_refused_with_file_and_line() {
    let w = world("");
    let path = w.s("server1").home().join("repos.toml");
    std::fs::write(&path, rules("https://user:secret@example.com/a.git", "")).unwrap();
    let out = w.s("server1").gitmirror(&["compile"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("repos.toml:") && err.contains("password"),
        "{err}"
    );
    assert!(!err.contains("secret"), "the secret is echoed: {err}");
}

/// The test's HTTPS git server (tests/support/https_git.py), killed by pid.
struct HttpsGit {
    child: Child,
    port: u16,
}

impl Drop for HttpsGit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_https_upstream_takes_a_token_from_a_file_and_trusts_only_the_given_ca() {
    let w = world("");
    let tls = w.s("server1").home().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
    run(std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert))
    .ok();
    let (served, given) = (tls.join("server-token"), tls.join("token"));
    std::fs::write(&served, "s3cret-token\n").unwrap();
    std::fs::write(&given, "wrong-token\n").unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/https_git.py");
    let mut child = std::process::Command::new("python3")
        .arg(&script)
        .arg(w.up.parent().unwrap())
        .arg(&cert)
        .arg(&key)
        .arg(&served)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let port: u16 = first
        .trim()
        .trim_start_matches("listening ")
        .parse()
        .unwrap();
    let server = HttpsGit { child, port };
    let url = format!("https://127.0.0.1:{}/proj.git", server.port);
    let with = |extra: &str| w.cluster.set_rules(&rules(&url, extra));
    let creds = format!(
        "upstream.token_file = \"{}\"\nupstream.ca_file = \"{}\"",
        given.display(),
        cert.display()
    );
    // A wrong token: refused by the server, and the token is in nothing we print.
    with(&creds);
    let out = w.fetch();
    assert!(out.contains("fetch failed"), "{out}");
    let log = w
        .s("server1")
        .gitmirror(&["status", "mirror", "--log"])
        .ok();
    for text in [&out, &log, &w.status(), &w.s("server1").log()] {
        assert!(
            !text.contains("wrong-token") && !text.contains("s3cret"),
            "{text}"
        );
    }
    // Without the CA, the certificate is not trusted.
    std::fs::write(&given, "s3cret-token\n").unwrap();
    with(&format!("upstream.token_file = \"{}\"", given.display()));
    let out = w.fetch();
    assert!(out.contains("fetch failed"), "{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    // The right token, the right CA.
    with(&creds);
    let out = w.fetch();
    assert!(out.contains("mirror: fetched"), "{out}");
    assert_eq!(w.mirror_refs("server1"), w.up_refs());
    assert!(!w.s("server1").log().contains("s3cret"));
}

#[test]
fn patterns_that_narrow_or_reach_into_gitmirrors_namespace_and_paths_into_the_home() {
    let w = world("upstream.prune = true");
    w.fetch();
    // Four more branches upstream, so that deleting them is no longer "most refs".
    for b in ["c1", "c2", "c3", "c4", "c5"] {
        w.up_in(&["push", "-q", "origin", &format!("HEAD:refs/heads/{b}")]);
    }
    w.fetch();
    // Five of nine mirrored refs vanish upstream at once: more than half and more than three,
    // so nothing is deleted, and status says so.
    for b in ["c1", "c2", "c3", "c4", "c5"] {
        w.up_in(&["push", "-q", "origin", &format!(":refs/heads/{b}")]);
    }
    let before = w.mirror_refs("server1");
    let out = w.fetch();
    assert!(out.contains("deletions held back"), "{out}");
    assert_eq!(w.mirror_refs("server1"), before);
    // Three of them back: now the two gone are a minority, and are pruned.
    for b in ["c1", "c2", "c3"] {
        w.up_in(&["push", "-q", "origin", &format!("HEAD:refs/heads/{b}")]);
    }
    let out = w.fetch();
    assert!(!out.contains("deletions held back"), "{out}");
    assert!(!w.mirror_refs("server1").contains("refs/heads/c4"));
    // Narrowed to branches: tags are left as they are, and fetches still succeed.
    w.set_rules("upstream.prune = true\nupstream.refs = [\"refs/heads/*\"]");
    let out = w.fetch();
    assert!(out.contains("mirror: fetched"), "{out}");
    assert!(w.mirror_refs("server1").contains("refs/tags/v1"));
    w.up_in(&["tag", "v2"]);
    w.up_in(&["push", "-q", "origin", "v2"]);
    w.fetch();
    assert!(!w.mirror_refs("server1").contains("refs/tags/v2"));
    // An upstream holding refs/gitmirror/...: a pattern as wide as refs/* does not bring them.
    w.up_in(&[
        "push",
        "-q",
        "origin",
        "HEAD:refs/gitmirror/diverged/planted",
    ]);
    w.set_rules("upstream.refs = [\"refs/*\"]");
    let out = w.fetch();
    assert!(out.contains("mirror: fetched"), "{out}");
    let own = w
        .s("server1")
        .git("mirror", &["for-each-ref", "refs/gitmirror/diverged/"])
        .ok();
    assert!(!own.contains("planted"), "{own}");
    assert!(w.fetch().contains("mirror: fetched"), "the next fetch too");
    // A local path into this server's home (another repo here) is refused.
    let other = w.s("server1").repo_path("mirror");
    w.cluster.set_rules(&rules(other.to_str().unwrap(), ""));
    let out = w.fetch();
    assert!(out.contains("inside this server's home"), "{out}");
}
