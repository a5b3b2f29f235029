//! `gitmirror import-manifest`: a `repo` manifest, its projects upstream as local bare repos,
//! imported as pull mirrors into a home made by `init`; run directly as root, no sshd. The
//! last test drives the real `repo` client (../shared/tools/git-repo.bundle) against the
//! mirrors.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gitmirror_testkit::*;

fn gm(home: &Path, args: &[&str]) -> Output {
    run(Command::new(&sandbox().bin)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent-home")
        .arg("--home")
        .arg(home)
        .args(args))
}

fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .args(args))
    .ok()
}

/// Upstream projects (bare repos with one commit on main) and a manifest repository, all
/// under `up/`, and a fresh server home; removed on drop with any daemon a compile started.
struct World {
    s: Scratch,
    home: PathBuf,
}

impl Drop for World {
    fn drop(&mut self) {
        stop_daemon_in(&self.home);
    }
}

impl World {
    fn new() -> World {
        let s = Scratch::new("manifest");
        let home = s.path().join("home");
        gm(&home, &["init", "--hostname", "server1"]).ok();
        // The admin's own text, which an import must keep.
        let rules = fs::read_to_string(home.join("repos.toml")).unwrap()
            + "\n# mirrors of the vendor tree\n[repos.\"@all\"]\nR = [\"@all\"]\n\n[repos.template]\nRW = [\"alice\"]\nupstream.url = \"/srv/nowhere.git\"\nupstream.interval = \"6h\"\n";
        fs::write(home.join("repos.toml"), rules).unwrap();
        let w = World { s, home };
        fs::create_dir_all(w.up()).unwrap();
        fs::create_dir_all(w.s.path().join("work")).unwrap();
        for p in ["a", "b", "tools/c", "d"] {
            w.upstream_project(p);
        }
        git(w.s.path(), &["init", "-q", "-b", "main", "work/manifest"]);
        git(
            w.s.path(),
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                w.manifest_url().to_str().unwrap(),
            ],
        );
        w
    }

    fn up(&self) -> PathBuf {
        self.s.path().join("up")
    }

    fn manifest_url(&self) -> PathBuf {
        self.up().join("platform/manifest.git")
    }

    fn upstream_project(&self, name: &str) {
        let work = self.s.path().join("work").join(name);
        fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        fs::write(work.join("README"), format!("{name}\n")).unwrap();
        git(&work, &["add", "README"]);
        git(&work, &["commit", "-q", "-m", &format!("{name}: first")]);
        let bare = self.up().join(format!("{name}.git"));
        git(
            self.s.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
    }

    /// Commits `files` (name, text) to the manifest repository upstream.
    fn publish(&self, files: &[(&str, &str)]) {
        let work = self.s.path().join("work/manifest");
        for (name, text) in files {
            fs::write(work.join(name), text).unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "manifest"]);
        git(
            &work,
            &[
                "push",
                "-q",
                self.manifest_url().to_str().unwrap(),
                "HEAD:refs/heads/main",
            ],
        );
    }

    fn rules(&self) -> String {
        fs::read_to_string(self.home.join("repos.toml")).unwrap()
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.home.join("repositories").join(format!("{name}.git"))
    }
}

/// A manifest whose remote fetches from ".." (the manifest repository's parent's parent, as
/// AOSP's), `projects` (name, groups) and an include of `extra.xml`, which brings `tools/c`.
fn manifest(projects: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<manifest>\n  <remote name=\"up\" fetch=\"..\" />\n  <default remote=\"up\" revision=\"main\" sync-j=\"4\" />\n",
    );
    for (name, groups) in projects {
        s.push_str(&format!(
            "  <project name=\"{name}\" path=\"src/{name}\" groups=\"{groups}\" />\n"
        ));
    }
    s.push_str("  <include name=\"extra.xml\" />\n  <remove-project name=\"gone\" optional=\"true\" />\n</manifest>\n");
    s
}

const EXTRA: &str = "<manifest>\n  <project name=\"tools/c\" path=\"tools/c\" groups=\"tools,notdefault\" />\n</manifest>\n";

#[test]
fn a_manifest_repository_becomes_a_pull_mirror_per_project_plus_itself() {
    let w = World::new();
    // default.xml a symlink to the release's manifest, as many manifest repositories have it.
    std::os::unix::fs::symlink("release.xml", w.s.path().join("work/manifest/default.xml"))
        .unwrap();
    w.publish(&[
        ("release.xml", &manifest(&[("a", "pdk"), ("b", "")])),
        ("extra.xml", EXTRA),
    ]);
    let before = w.rules();
    let url = w.manifest_url();
    let out = gm(
        &w.home,
        &[
            "import-manifest",
            url.to_str().unwrap(),
            "--groups",
            "all",
            "--prefix",
            "vendor",
        ],
    )
    .ok();
    let up = w.up().display().to_string();
    for (repo, from) in [
        ("vendor/a", format!("{up}/a")),
        ("vendor/b", format!("{up}/b")),
        ("vendor/tools/c", format!("{up}/tools/c")),
        ("vendor/platform/manifest", url.display().to_string()),
    ] {
        assert!(out.contains(&format!("added {repo} <- {from}\n")), "{out}");
        assert!(
            w.repo(repo).is_dir(),
            "compile did not create {repo}: {out}"
        );
    }
    assert!(out.contains("4 added, 0 kept"), "{out}");
    assert!(out.contains("created vendor/a"), "{out}");
    // The closing count (the rules' own template repo too); progress, off a terminal, is
    // plain lines on stderr.
    assert!(out.contains("import: 5 repos created, 0 failed\n"), "{out}");
    let text = w.rules();
    assert!(
        text.starts_with(&before),
        "the admin's text was not kept:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "[repos.\"vendor/a\"]\nupstream.url = \"{up}/a\"\n"
        )),
        "{text}"
    );

    // Again: everything is there already; nothing changes.
    let snap = snapshot(&w.home);
    let out = gm(
        &w.home,
        &[
            "import-manifest",
            url.to_str().unwrap(),
            "--groups",
            "all",
            "--prefix",
            "vendor",
        ],
    )
    .ok();
    assert!(out.contains("0 added, 4 kept"), "{out}");
    assert!(out.contains("kept vendor/b:"), "{out}");
    assert_unchanged(&snap, &snapshot(&w.home));
}

#[test]
fn groups_select_and_prefix_names_and_like_copies_the_rules() {
    let w = World::new();
    w.publish(&[
        ("default.xml", &manifest(&[("a", "pdk"), ("b", "")])),
        ("extra.xml", EXTRA),
    ]);
    let url = w.manifest_url();
    // The default groups: tools/c is notdefault.
    let snap = snapshot(&w.home);
    let out = gm(
        &w.home,
        &["import-manifest", url.to_str().unwrap(), "--print"],
    )
    .ok();
    assert!(out.contains("to add a <- "), "{out}");
    assert!(!out.contains("tools/c <- "), "{out}");
    assert!(out.contains("1 not in the groups"), "{out}");
    assert!(out.contains("[repos.\"platform/manifest\"]\n"), "{out}");
    assert_unchanged(&snap, &snapshot(&w.home));

    let out = gm(
        &w.home,
        &[
            "import-manifest",
            url.to_str().unwrap(),
            "--groups",
            "pdk,tools",
            "--prefix",
            "mirrors/aosp",
            "--like",
            "template",
        ],
    )
    .ok();
    assert!(out.contains("added mirrors/aosp/a <- "), "{out}");
    assert!(out.contains("added mirrors/aosp/tools/c <- "), "{out}");
    assert!(!out.contains("mirrors/aosp/b"), "{out}");
    assert!(out.contains("1 not in the groups"), "{out}");
    let text = w.rules();
    let up = w.up().display().to_string();
    assert!(
        text.contains(&format!(
            "[repos.\"mirrors/aosp/a\"]\nRW = [\"alice\"]\nupstream.url = \"{up}/a\"\nupstream.interval = \"6h\"\n"
        )),
        "{text}"
    );
    assert!(w.repo("mirrors/aosp/tools/c").is_dir());

    // A manifest file with an absolute fetch, read from disk with its include beside it.
    let dir = w.s.path().join("files");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("m.xml"),
        format!(
            "<manifest><remote name=\"o\" fetch=\"{}\"/><default remote=\"o\" revision=\"main\"/><project name=\"d\"/><include name=\"extra.xml\"/></manifest>",
            w.up().display()
        ),
    )
    .unwrap();
    fs::write(dir.join("extra.xml"), EXTRA).unwrap();
    let out = gm(
        &w.home,
        &[
            "import-manifest",
            dir.join("m.xml").to_str().unwrap(),
            "--prefix",
            "f",
        ],
    )
    .ok();
    assert!(
        out.contains(&format!("added f/d <- {}/d\n", w.up().display())),
        "{out}"
    );
    assert!(
        out.contains("1 added, 0 kept, 0 left the manifest, 1 not in the groups"),
        "{out}"
    );
}

#[test]
fn a_followed_manifest_that_gains_and_loses_projects_adds_and_reports_deleting_nothing() {
    let w = World::new();
    w.publish(&[
        ("default.xml", &manifest(&[("a", ""), ("b", "")])),
        ("extra.xml", EXTRA),
    ]);
    let url = w.manifest_url();
    let out = gm(
        &w.home,
        &[
            "import-manifest",
            url.to_str().unwrap(),
            "--prefix",
            "m",
            "--follow",
            "--manifest-branch",
            "main",
        ],
    )
    .ok();
    assert!(out.contains("3 added"), "{out}");
    assert!(
        w.rules().contains(
            "upstream.manifest = { file = \"default.xml\", branch = \"main\", prefix = \"m\" }"
        ),
        "{}",
        w.rules()
    );
    let out = gm(&w.home, &["fetch", "m/platform/manifest"]).ok();
    assert!(out.contains("m/platform/manifest: fetched"), "{out}");

    // Upstream, b leaves the manifest and d joins it; the manifest's mirror fetches that, and
    // the fetch engine imports it again and compiles, by itself.
    w.publish(&[("default.xml", &manifest(&[("a", ""), ("d", "")]))]);
    gm(&w.home, &["fetch", "m/platform/manifest"]).ok();
    let out = gm(&w.home, &["status", "m/platform/manifest", "--log"]).ok();
    assert!(
        out.contains(&format!("added m/d <- {}/d\n", w.up().display())),
        "{out}"
    );
    assert!(out.contains("left the manifest: m/b (kept;"), "{out}");
    assert!(
        out.contains("1 added, 2 kept, 1 left the manifest"),
        "{out}"
    );
    assert!(out.contains("compiled"), "{out}");
    assert!(w.repo("m/d").is_dir());
    assert!(w.repo("m/b").is_dir(), "b was deleted");
    assert!(w.rules().contains("[repos.\"m/b\"]"));

    // Nothing new: nothing written, b still reported.
    let snap = snapshot(&w.home);
    let out = gm(&w.home, &["import-manifest", "m/platform/manifest"]).ok();
    assert!(
        out.contains("0 added, 3 kept, 1 left the manifest"),
        "{out}"
    );
    assert_unchanged(&snap, &snapshot(&w.home));
}

#[test]
fn bad_manifests_and_sources_are_refused_with_one_line_and_nothing_changed() {
    let w = World::new();
    w.publish(&[
        ("default.xml", &manifest(&[("a", "")])),
        ("extra.xml", EXTRA),
    ]);
    let dir = w.s.path().join("bad");
    fs::create_dir_all(&dir).unwrap();
    let head = format!(
        "<manifest>\n<remote name=\"o\" fetch=\"{}\"/>\n<default remote=\"o\" revision=\"main\"/>\n",
        w.up().display()
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("notxml.xml", "this is not xml".into(), "notxml.xml: not XML"),
        (
            "remote.xml",
            format!("{head}<project name=\"a\" remote=\"nope\"/>\n</manifest>"),
            "remote.xml:4: project a: unknown remote nope",
        ),
        (
            "name.xml",
            format!("{head}<project name=\"a/../../etc\"/>\n</manifest>"),
            "name.xml:4: project a/../../etc: ",
        ),
        (
            "path.xml",
            format!("{head}<project name=\"a\" path=\"../x\"/>\n</manifest>"),
            "path.xml:4: project a: path \"../x\": has a .. component",
        ),
        (
            "loop.xml",
            format!("{head}<include name=\"loop.xml\"/>\n</manifest>"),
            "include loop: loop.xml -> loop.xml",
        ),
        (
            "relative.xml",
            "<manifest><remote name=\"o\" fetch=\"..\"/><default remote=\"o\" revision=\"main\"/><project name=\"a\"/></manifest>".into(),
            "is relative, and a manifest read from a file has no URL",
        ),
        (
            "scheme.xml",
            "<manifest><remote name=\"o\" fetch=\"ext::sh -c touch% /tmp/x\"/><default remote=\"o\" revision=\"main\"/><project name=\"a\"/></manifest>".into(),
            "project a: url ",
        ),
        (
            "remove.xml",
            format!("{head}<remove-project name=\"zz\"/>\n</manifest>"),
            "remove.xml:4: <remove-project> zz: no such project",
        ),
    ];
    let snap = snapshot(&w.home);
    for (file, text, want) in &cases {
        fs::write(dir.join(file), text).unwrap();
        let err = gm(
            &w.home,
            &["import-manifest", dir.join(file).to_str().unwrap()],
        )
        .fails_with(want);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("gitmirror: "), "{err}");
    }
    for (source, extra, want) in [
        (
            w.s.path().join("nowhere.git").display().to_string(),
            None,
            "cannot fetch HEAD",
        ),
        (
            "ext::sh -c id".to_string(),
            None,
            "neither a manifest file nor a repository URL",
        ),
        (
            "relative/path".to_string(),
            None,
            "neither a manifest file nor a repository URL",
        ),
        (
            w.manifest_url().display().to_string(),
            Some(["--manifest-file", "missing.xml"]),
            "missing.xml: no such file",
        ),
        (
            w.manifest_url().display().to_string(),
            Some(["--like", "nope"]),
            "--like nope: repos.toml has no table",
        ),
        (
            w.manifest_url().display().to_string(),
            Some(["--prefix", "../x"]),
            "--prefix \"../x\"",
        ),
    ] {
        let mut args = vec!["import-manifest", source.as_str()];
        args.extend(extra.iter().flatten());
        let err = gm(&w.home, &args).fails_with(want);
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert_unchanged(&snap, &snapshot(&w.home));
}

#[test]
fn where_the_admin_repo_is_in_charge_the_tables_are_printed_not_written() {
    let s = Scratch::new("manifest-admin");
    let home = s.path().join("home");
    let key = s.path().join("alice");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f"])
        .arg(&key))
    .ok();
    let pubkey = s.path().join("alice.pub");
    gm(
        &home,
        &[
            "init",
            "--hostname",
            "server1",
            "--admin",
            "alice",
            pubkey.to_str().unwrap(),
        ],
    )
    .ok();
    let _stop = World {
        s: Scratch::new("manifest-unused"),
        home: home.clone(),
    };
    let dir = s.path().join("m");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("default.xml"),
        "<manifest><remote name=\"o\" fetch=\"https://example.com/\"/><default remote=\"o\" revision=\"main\"/><project name=\"x/y\"/></manifest>",
    )
    .unwrap();
    let file = dir.join("default.xml");
    let snap = snapshot(&home);
    let err = gm(&home, &["import-manifest", file.to_str().unwrap()])
        .fails_with("comes from gitmirror-admin");
    assert!(err.contains("--print"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = gm(
        &home,
        &["import-manifest", file.to_str().unwrap(), "--print"],
    )
    .ok();
    assert!(
        out.contains("[repos.\"x/y\"]\nupstream.url = \"https://example.com/x/y\"\n"),
        "{out}"
    );
    assert_unchanged(&snap, &snapshot(&home));
}

/// The real `repo` client (git-repo v2.64, from ../shared/tools/git-repo.bundle) run with
/// python3, offline, in `dir` with a HOME of its own.
struct RepoTool {
    s: Scratch,
}

impl RepoTool {
    fn new() -> RepoTool {
        // Beside the checkout, as the workplace lays it out; or where GITMIRROR_REPO_BUNDLE
        // says; or the workplace's own copy, for a clone made elsewhere (CI's).
        let candidates: Vec<PathBuf> = std::env::var_os("GITMIRROR_REPO_BUNDLE")
            .map(PathBuf::from)
            .into_iter()
            .chain([
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/git-repo.bundle"),
                PathBuf::from("/work/shared/tools/git-repo.bundle"),
            ])
            .collect();
        let Some(bundle) = candidates.iter().find(|b| b.is_file()).cloned() else {
            panic!(
                "the repo client's bundle is in none of {candidates:?}: the test needs ../shared/tools beside the checkout (or GITMIRROR_REPO_BUNDLE)"
            );
        };
        let s = Scratch::new("repo-tool");
        let b = bundle.to_str().unwrap();
        git(
            s.path(),
            &["clone", "-q", "--bare", "-b", "stable", b, "git-repo.git"],
        );
        git(s.path(), &["clone", "-q", "-b", "stable", b, "git-repo"]);
        git(s.path(), &["config", "--global", "user.name", "t"]);
        git(
            s.path(),
            &["config", "--global", "user.email", "t@example.com"],
        );
        RepoTool { s }
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Output {
        self.run_env(dir, &[], args)
    }

    fn run_env(&self, dir: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
        fs::create_dir_all(dir).unwrap();
        run(Command::new("python3")
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.s.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(self.s.path().join("git-repo/repo"))
            .args(args))
    }

    /// `repo init` of `manifest_url`'s main branch, with the repo tool from the bundle.
    fn init_args(&self, manifest_url: &str, extra: &[&str]) -> Vec<String> {
        let repo_url = self.s.path().join("git-repo.git");
        let mut args = vec![
            "init".to_string(),
            format!("--repo-url={}", repo_url.display()),
            "--repo-rev=stable".into(),
            "--no-repo-verify".into(),
            "-u".into(),
            manifest_url.into(),
            "-b".into(),
            "main".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn init(&self, dir: &Path, manifest_url: &str, extra: &[&str]) -> Output {
        let args = self.init_args(manifest_url, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(dir, &args)
    }
}

/// The mirrors are filled by `gitmirror fetch`. Then the
/// upstream is moved away, so everything `repo` gets comes from the mirrors.
#[test]
fn a_real_repo_client_inits_and_syncs_against_the_mirrors() {
    let w = World::new();
    w.publish(&[
        ("default.xml", &manifest(&[("a", ""), ("b", "")])),
        ("extra.xml", EXTRA),
    ]);
    let url = w.manifest_url();
    gm(
        &w.home,
        &[
            "import-manifest",
            url.to_str().unwrap(),
            "--groups",
            "all",
            "--prefix",
            "aosp",
        ],
    )
    .ok();
    let up = w.up();
    // The pull mirrors take their upstreams (branches, tags, HEAD), as the schedule would
    // (one by one: the world's `template` has an upstream that does not exist).
    for repo in ["aosp/platform/manifest", "aosp/a", "aosp/b", "aosp/tools/c"] {
        let out = gm(&w.home, &["fetch", repo]).ok();
        assert!(out.contains(": fetched"), "{out}");
    }
    fs::rename(&up, w.s.path().join("up-away")).unwrap();

    let tool = RepoTool::new();
    let mirror_manifest = w.home.join("repositories/aosp/platform/manifest");
    let mirror_manifest = mirror_manifest.to_str().unwrap();
    // A checkout: fetch=".." from the manifest's mirror reaches the projects' mirrors.
    let checkout = w.s.path().join("checkout");
    tool.init(&checkout, mirror_manifest, &["-g", "all"]).ok();
    let out = tool.run(&checkout, &["sync", "-j", "2"]);
    assert!(
        out.status.success(),
        "repo sync: {}{}",
        out.text(),
        out.err()
    );
    assert_checked_out(
        &checkout,
        &[("src/a", "a"), ("src/b", "b"), ("tools/c", "tools/c")],
    );

    // A mirror of the mirror, laid out NAME.git as `repo init --mirror` does.
    let second = w.s.path().join("second");
    tool.init(&second, mirror_manifest, &["--mirror", "-g", "all"])
        .ok();
    let out = tool.run(&second, &["sync", "-j", "2"]);
    assert!(
        out.status.success(),
        "repo sync --mirror: {}{}",
        out.text(),
        out.err()
    );
    for name in ["a", "b", "tools/c"] {
        let git_dir = second.join(format!("{name}.git"));
        let log = git(&git_dir, &["log", "--format=%s", "main"]);
        assert_eq!(log, format!("{name}: first\n"));
    }
}

/// As above, through the server's sshd and alice's key: `repo init -u ssh://.../manifest.git`
/// and `repo sync` (fetch=".." reaching the projects' mirrors on the same server), the
/// mirrors filled by `gitmirror fetch --all` as server1's account.
#[test]
fn a_real_repo_client_syncs_from_the_server_over_ssh() {
    let server = Server::start("server1");
    let alice = Client::new("alice");
    server.add_user("alice", &alice.key);
    server.set_rules("[repos.\"@all\"]\nR = [\"alice\"]\n");
    let w = World::new();
    w.publish(&[
        ("default.xml", &manifest(&[("a", ""), ("b", "")])),
        ("extra.xml", EXTRA),
    ]);
    let url = w.manifest_url();
    // The upstreams belong to the account that fetches them, or git refuses them as dubious.
    run(Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", server.user.uid, server.user.gid))
        .arg(w.up()))
    .ok();
    let out = server
        .gitmirror(&["import-manifest", url.to_str().unwrap(), "--prefix", "aosp"])
        .ok();
    assert!(out.contains("3 added"), "{out}");
    let up = w.up();
    let fetched = server.gitmirror(&["fetch", "--all"]);
    let out = fetched.ok();
    assert_eq!(out.matches(": fetched").count(), 3, "{out}");
    assert!(out.ends_with("fetch: 3 succeeded, 0 failed\n"), "{out}");
    let err = fetched.err();
    assert!(
        err.starts_with("fetch: 1 succeeded, 0 failed so far\n"),
        "{err}"
    );
    fs::rename(&up, w.s.path().join("up-away")).unwrap();

    let tool = RepoTool::new();
    let checkout = w.s.path().join("over-ssh");
    let ssh = [("GIT_SSH_COMMAND", alice.ssh_command())];
    let args = tool.init_args(&server.url("aosp/platform/manifest"), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let init = tool.run_env(&checkout, &ssh, &args);
    assert!(
        init.status.success(),
        "repo init: {}{}",
        init.text(),
        init.err()
    );
    let sync = tool.run_env(&checkout, &ssh, &["sync", "-j", "2"]);
    assert!(
        sync.status.success(),
        "repo sync: {}{}",
        sync.text(),
        sync.err()
    );
    assert_checked_out(&checkout, &[("src/a", "a"), ("src/b", "b")]);
    // tools/c is notdefault, and not imported by default either.
    assert!(!checkout.join("tools/c").exists());
}

/// Each `(DIR, TEXT)`: the checkout's `DIR/README` holds `TEXT` and a newline, as the project
/// the test made upstream.
fn assert_checked_out(checkout: &std::path::Path, files: &[(&str, &str)]) {
    for (dir, text) in files {
        assert_eq!(
            fs::read_to_string(checkout.join(dir).join("README")).unwrap(),
            format!("{text}\n"),
            "{dir}"
        );
    }
}
