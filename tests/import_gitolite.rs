//! `gitmirror import-gitolite` against a real gitolite (Debian's gitolite3): gitolite set up
//! as an account of its own with a rich gitolite.conf, asked `gitolite access` for a matrix
//! of repos, users, permissions and refs; the same conf imported, compiled into a gitmirror
//! server, and asked `gitmirror access` for the same matrix. Every answer must agree.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gitmirror_testkit::*;

/// The gitolite program Debian installs.
const GITOLITE: &str = "/usr/bin/gitolite";

/// A gitolite server: its own account, set up with `gitolite setup -pk admin.pub`.
struct Gitolite {
    user: UnixUser,
    _root: Scratch,
}

impl Gitolite {
    fn setup(admin: &Key) -> Gitolite {
        assert!(
            Path::new(GITOLITE).exists(),
            "{GITOLITE} is missing: install gitolite3 (apt-get install -y gitolite3, or scripts/setup)"
        );
        let root = Scratch::new("gitolite");
        let user = UnixUser::create(&root.path().join("home"));
        let g = Gitolite { user, _root: root };
        let pk = g.user.home.join("admin.pub");
        fs::copy(&admin.public, &pk).unwrap();
        g.chown(&pk);
        g.gitolite(&["setup", "-pk", "admin.pub"]).ok();
        g
    }

    fn chown(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.user.uid), Some(self.user.gid)).unwrap();
    }

    fn gitolite(&self, args: &[&str]) -> Output {
        run(self.user.command(GITOLITE).args(args))
    }

    fn admin_dir(&self) -> PathBuf {
        self.user.home.join(".gitolite")
    }

    /// Writes `files` (paths relative to `.gitolite/`) and compiles, as a push to
    /// gitolite-admin would.
    fn install(&self, files: &[(&str, String)]) {
        for (rel, text) in files {
            let path = self.admin_dir().join(rel);
            let mut dirs = Vec::new();
            let mut d = path.parent().unwrap();
            while !d.exists() {
                dirs.push(d.to_path_buf());
                d = d.parent().unwrap();
            }
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            for d in dirs {
                self.chown(&d);
            }
            fs::write(&path, text).unwrap();
            self.chown(&path);
        }
        self.gitolite(&["compile"]).ok();
        self.gitolite(&["trigger", "POST_COMPILE"]).ok();
    }

    /// `gitolite access` for every (repo, user) in `pairs`, one process per perm and ref
    /// (its batch mode). `true` where allowed.
    fn access(&self, perm: &str, refname: &str, pairs: &[(&str, &str)]) -> Vec<bool> {
        let input: String = pairs.iter().map(|(r, u)| format!("{r} {u}\n")).collect();
        let mut child = self
            .user
            .command(GITOLITE)
            .args(["access", "%", "%", perm, refname])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = out.ok();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), pairs.len(), "gitolite access said:\n{text}");
        lines
            .iter()
            .zip(pairs)
            .map(|(line, (r, u))| {
                assert!(line.starts_with(&format!("{r}\t{u}\t")), "{line}");
                !line.contains("DENIED")
            })
            .collect()
    }

    /// May `user` create the (missing) repo `repo`: gitolite's `^C`, which needs GL_USER
    /// (the would-be creator).
    fn may_create(&self, repo: &str, user: &str) -> bool {
        run(self
            .user
            .command(GITOLITE)
            .env("GL_USER", user)
            .args(["access", "-q", repo, user, "^C"]))
        .status
        .success()
    }
}

/// `gitmirror access REPO USER PERM [REF]` on `server`: 0 allowed, 1 denied.
fn gm_access(server: &Server, repo: &str, user: &str, perm: &str, refname: &str) -> (bool, String) {
    let mut args = vec!["access", repo, user, perm];
    if refname != "any" {
        args.push(refname);
    }
    let out = server.gitmirror(&args);
    let said = format!("{}{}", out.text(), out.err()).trim().to_string();
    match out.status.code() {
        Some(0) => (true, said),
        Some(1) => (false, said),
        _ => panic!("gitmirror {args:?} failed: {said}"),
    }
}

/// Runs `gitmirror import-gitolite` as root (gitolite's files are its account's own).
fn import(conf: &Path, keydir: &Path, out: &Path, extra: &[&str]) -> Output {
    run(Command::new(&sandbox().bin)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", "/nonexistent-home")
        .arg("import-gitolite")
        .arg("--conf")
        .arg(conf)
        .arg("--keydir")
        .arg(keydir)
        .arg("--out")
        .arg(out)
        .args(extra))
}

/// The configuration under test. Line numbers matter to nothing here; order does.
fn main_conf() -> String {
    r#"# groups, nested (flattened when defined: @staff never sees carol, added to @devs later)
@admins    = admin
@devs      = alice bob
@leads     = alice
@staff     = @devs dave
@devs      = carol
@webapps   = web/site web/api
@mainline  = master release/
@shared    = testing web/site

include "teams/*.conf"

repo gitolite-admin
    RW+                             = @admins

repo @all
    R                               = auditor

repo testing
    RW+                             = @leads
    -   master                      = bob
    RW  refs/heads/dev/ refs/tags/v[0-9] = @devs
    -                               = eve
    R                               = eve @staff
    RWCD refs/heads/feature/        = dave
    RW+ personal/USER/              = @devs
    RW  @mainline                   = frank

repo @webapps
    option deny-rules = 1
    -   master                      = carol
    RW+                             = @leads
    RW                              = @staff
    -   refs/tags/                  = bob
    R                               = @all

repo @shared
    R                               = frank
    RW refs/heads/shared/           = grace

repo testing
    # named again after @shared, which applies to testing and frank: a group of its own
    -                               = frank
    RW+ refs/heads/hotfix/          = eve
    RW  refs/heads/shared/          = bob

repo users/CREATOR/..*
    C                               = @devs
    RW+                             = CREATOR
    RW                              = WRITERS
    R                               = READERS
    option mirror.master = server1
    option mirror.slaves = server2

repo scratch/..*
    # never names CREATOR: the creator gets only what the rules say
    C                               = @devs
    RW                              = @staff
    R                               = @all

repo @all
    # allowing rules only: joins @all's first table, as no deny rule's order changes
    R                               = gitweb
    option mirror.master = server1
    option mirror.slaves = server2 server3
    option mirror.redirectOK = all
"#
    .to_string()
}

fn team_conf() -> String {
    r#"@ops = frank grace
repo ops/tools
    RW+CD                           = grace
    # never decides (gitmirror refuses such a rule): left out, said as a note
    -   master                      = grace
    RW+                             = @ops
    RW                              = @devs
    -   refs/tags/                  = alice
    RW+ refs/tags/                  = @leads
    R                               = @all
    # another copies key: gitolite adds its slaves to those of @all's mirror.slaves
    option mirror.slaves-ops        = server4
"#
    .to_string()
}

#[test]
fn imported_rules_decide_as_gitolite_does() {
    let admin = Client::new("admin");
    let gl = Gitolite::setup(&admin.key);
    let users = [
        "admin", "alice", "bob", "carol", "dave", "eve", "frank", "grace", "auditor", "gitweb",
        "nobody",
    ];
    let mut files = vec![
        ("conf/gitolite.conf", main_conf()),
        ("conf/teams/ops.conf", team_conf()),
    ];
    let clients: Vec<Client> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| Client::new(n))
        .collect();
    let keys: Vec<(String, String)> = clients
        .iter()
        .map(|c| {
            (
                format!("keydir/people/{}.pub", c.name),
                fs::read_to_string(&c.key.public).unwrap(),
            )
        })
        .collect();
    let server2 = Client::new("server2");
    let mut key_files: Vec<(String, String)> = keys;
    key_files.push((
        "keydir/server-server2.pub".into(),
        fs::read_to_string(&server2.key.public).unwrap(),
    ));
    for (p, t) in &key_files {
        files.push((p.as_str(), t.clone()));
    }
    gl.install(&files);

    // The import, from gitolite's own files.
    let out_dir = Scratch::new("imported");
    let out = import(
        &gl.admin_dir().join("conf/gitolite.conf"),
        &gl.admin_dir().join("keydir"),
        out_dir.path(),
        &[],
    );
    let said = out.ok();
    assert!(
        said.contains("repos.toml (5 repos, 2 wild repo pattern(s),"),
        "{said}"
    );
    assert!(
        said.lines()
            .any(|l| l.starts_with("note: ")
                && l.contains("ops.conf:5: ops/tools: deny rule for grace")),
        "{said}"
    );
    for line in ["user admin: 1 key", "user alice: 1 key", "peer server2"] {
        assert!(
            said.lines().any(|l| l == line),
            "{line:?} missing in:\n{said}"
        );
    }
    assert_eq!(
        fs::read_to_string(out_dir.path().join("keys/peers/server2.pub"))
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
        fs::read_to_string(&server2.key.public)
            .unwrap()
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
    );
    let rules = fs::read_to_string(out_dir.path().join("repos.toml")).unwrap();
    // testing's last block could not join its first table without passing @shared's rule
    // for frank: it is a repo group of its own, after @shared.
    let shared = rules.find("[repos.\"@shared\"]").unwrap();
    let again = rules
        .find("[repos.\"@gitolite-line")
        .unwrap_or_else(|| panic!("no group for testing's second block:\n{rules}"));
    assert!(shared < again, "{rules}");
    assert_eq!(rules.matches("[repos.\"@all\"]").count(), 1, "{rules}");
    assert!(rules.contains("\"R = gitweb\""), "{rules}");

    let server = Server::start("server1");
    server.set_rules(&rules);
    // Mirror settings came through: every named repo is mastered here, with two slaves.
    let config = |repo: &str, key: &str| server.git(repo, &["config", key]).ok().trim().to_string();
    assert_eq!(config("testing", "gitolite.mirror.master"), "server1");
    assert_eq!(
        config("testing", "gitolite.mirror.slaves"),
        "server2 server3"
    );
    assert_eq!(
        config("ops/tools", "gitolite.mirror.slaves"),
        "server2 server3 server4"
    );
    // `mirror.redirectOK = all` on @all.
    assert!(rules.contains("mirror.redirect = true"), "{rules}");

    let repos = [
        "testing",
        "web/site",
        "web/api",
        "ops/tools",
        "gitolite-admin",
    ];
    let refs = [
        "any",
        "refs/heads/master",
        "refs/heads/release/1",
        "refs/heads/dev/x",
        "refs/heads/feature/y",
        "refs/heads/hotfix/z",
        "refs/heads/shared/s",
        "refs/heads/personal/alice/p",
        "refs/heads/personal/bob/p",
        "refs/tags/v1",
        "refs/tags/x",
    ];
    let pairs: Vec<(&str, &str)> = repos
        .iter()
        .flat_map(|r| users.iter().map(move |u| (*r, *u)))
        .collect();
    let mut mismatches = Vec::new();
    let mut cells = 0;
    let mut allowed = 0;
    for perm in ["R", "W", "+", "C", "D"] {
        for refname in refs {
            // Without a ref, C asks whether the user may create the repo: gitolite's ^C.
            let gl_perm = if perm == "C" && refname == "any" {
                "^C"
            } else {
                perm
            };
            let expected = gl.access(gl_perm, refname, &pairs);
            for ((repo, user), want) in pairs.iter().zip(expected) {
                cells += 1;
                allowed += usize::from(want);
                let (got, why) = gm_access(&server, repo, user, perm, refname);
                if got != want {
                    mismatches.push(format!(
                        "{repo} {user} {perm} {refname}: gitolite {}, gitmirror {} ({why})",
                        yes(want),
                        yes(got)
                    ));
                }
            }
        }
    }
    // Creating wild repos: the pattern's C rule, with CREATOR standing for the user.
    for name in ["users/alice/x", "users/bob/x", "users/eve/x", "other/x"] {
        for user in users {
            cells += 1;
            let want = gl.may_create(name, user);
            allowed += usize::from(want);
            let (got, why) = gm_access(&server, name, user, "C", "any");
            if got != want {
                mismatches.push(format!(
                    "{name} {user} ^C: gitolite {}, gitmirror {} ({why})",
                    yes(want),
                    yes(got)
                ));
            }
        }
    }
    // Wild repos, created on both sides by alice, who makes eve a reader and bob a writer;
    // carol's repo has no perms.
    let wild = [
        ("users/alice/proj", 0),
        ("users/carol/tool", 2),
        ("scratch/by-carol", 2),
        ("scratch/by-alice", 0),
    ];
    for (name, who) in wild {
        let c = &clients[who];
        run(gl
            .user
            .command(GITOLITE)
            .env("GL_USER", &c.name)
            .args(["create", name]))
        .ok();
        server.add_user(&c.name, &c.key);
        c.ssh(&server, &format!("create {name}")).ok();
    }
    for (role, user) in [("READERS", "eve"), ("WRITERS", "bob")] {
        let (name, c) = ("users/alice/proj", &clients[0]);
        run(gl
            .user
            .command(GITOLITE)
            .env("GL_USER", &c.name)
            .args(["perms", name, "+", role, user]))
        .ok();
        c.ssh(&server, &format!("perms {name} + {role} {user}"))
            .ok();
    }
    let wild_pairs: Vec<(&str, &str)> = wild
        .iter()
        .flat_map(|(r, _)| users.iter().map(move |u| (*r, *u)))
        .collect();
    for perm in ["R", "W", "+", "C", "D"] {
        for refname in refs {
            let gl_perm = if perm == "C" && refname == "any" {
                "^C"
            } else {
                perm
            };
            let expected = gl.access(gl_perm, refname, &wild_pairs);
            for ((repo, user), want) in wild_pairs.iter().zip(expected) {
                cells += 1;
                allowed += usize::from(want);
                let (got, why) = gm_access(&server, repo, user, perm, refname);
                let line = format!(
                    "{repo} {user} {perm} {refname}: gitolite {}, gitmirror {} ({why})",
                    yes(want),
                    yes(got)
                );
                if got != want {
                    mismatches.push(line);
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {cells} answers differ:\n{}\n\nrepos.toml:\n{rules}",
        mismatches.len(),
        mismatches.join("\n")
    );
    eprintln!("{cells} answers compared ({allowed} allowed by gitolite): all agree");
    // A matrix that gitolite answers all one way would prove nothing.
    assert!(
        allowed > cells / 5 && allowed < cells * 4 / 5,
        "{allowed} of {cells}"
    );
}

fn yes(b: bool) -> &'static str {
    if b { "allowed" } else { "denied" }
}

/// A conf directory of its own, readable by whoever runs the import.
fn conf_dir(files: &[(&str, &str)]) -> Scratch {
    let dir = Scratch::new("gitolite-conf");
    for (rel, text) in files {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
    }
    fs::create_dir_all(dir.path().join("keydir")).unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn what_cannot_be_carried_over_is_listed_and_nothing_written_unless_partial() {
    let dir = conf_dir(&[
        (
            "gitolite.conf",
            "repo foo\n    RW+ = alice\n    RW VREF/COUNT/5 = bob\n    - VREF/NAME/secret/ = bob\ninclude \"more.conf\"\n",
        ),
        (
            "more.conf",
            "repo bar\n    RW = carol\n    config hooks.mailinglist = x@y\n",
        ),
    ]);
    let conf = dir.path().join("gitolite.conf");
    let keydir = dir.path().join("keydir");
    let out = dir.path().join("out");
    let o = import(&conf, &keydir, &out, &[]);
    let err = o.fails_with("nothing was written");
    let listed: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("gitmirror:"))
        .collect();
    assert_eq!(listed.len(), 3, "{err}");
    assert!(
        listed[0].starts_with(&format!("{}:3: VREF/COUNT/5", conf.display())),
        "{err}"
    );
    assert!(
        listed[1].starts_with(&format!("{}:4: VREF/NAME/secret/", conf.display())),
        "{err}"
    );
    assert!(
        listed[2].starts_with(&format!(
            "{}:3: config hooks.mailinglist",
            dir.path().join("more.conf").display()
        )),
        "{err}"
    );
    assert!(!out.exists(), "written although refused");

    let o = import(&conf, &keydir, &out, &["--partial"]);
    let said = o.ok();
    assert!(said.contains("partial: 3 thing(s)"), "{said}");
    assert_eq!(o.err().lines().count(), 3, "{}", o.err());
    let rules = fs::read_to_string(out.join("repos.toml")).unwrap();
    assert!(rules.contains("\"RW+ = alice\""), "{rules}");
    assert!(rules.contains("\"RW = carol\""), "{rules}");
    assert!(!rules.contains("VREF"), "{rules}");
}

#[test]
fn a_conf_that_cannot_be_read_is_one_line_with_file_and_line() {
    let dir = conf_dir(&[(
        "gitolite.conf",
        "repo foo\n    RW+ = alice\n    RW master\n",
    )]);
    let conf = dir.path().join("gitolite.conf");
    let out = dir.path().join("out");
    let o = import(&conf, &dir.path().join("keydir"), &out, &[]);
    let err = o.fails_with(&format!("{}:3: ", conf.display()));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("expected"), "{err}");
    assert!(!out.exists());
}
