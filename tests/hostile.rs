//! Hostile clients against a real sshd: commands, repo names and environment variables that
//! must be refused with one clear line and leave the server's disk exactly as it was.

use std::fs;
use std::path::Path;
use std::process::Command;

use gitmirror_testkit::*;

fn server_with(users: &[&Client]) -> Server {
    let server = Server::start("server1");
    for c in users {
        server.add_user(&c.name, &c.key);
    }
    // alice may do anything to any repo, so each refusal below is the name or command check
    // itself, not a missing grant.
    server.set_rules("[repos.r]\n[repos.\"@all\"]\n\"RW+\" = [\"alice\"]\n");
    server
}

/// Asserts that `out` failed with exactly one line on stderr, starting with `FATAL:`.
fn one_line_refusal(out: &std::process::Output, what: &str) -> String {
    assert!(!out.status.success(), "{what}: accepted");
    let err = out.err();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: expected one line, got {err:?}");
    assert!(lines[0].starts_with("FATAL: "), "{what}: {err:?}");
    err
}

#[test]
fn hostile_commands_are_refused_and_change_nothing() {
    let alice = Client::new("alice");
    let server = server_with(&[&alice]);
    let marker = Scratch::new("marker");
    let touched = marker.path().join("x");
    let touch = format!(
        "git-upload-pack '--upload-pack=touch {}'",
        touched.display()
    );
    let commands = [
        "",
        "sh",
        "/bin/sh -i",
        "scp -t x",
        "git-upload-archive 'r'",
        "git-receive-pack 'r' 'x'",
        touch.as_str(),
        "git-upload-pack 'r'\nid",
        "git-upload-pack 'r';id",
        "git-upload-pack 'r'; id",
        "git-upload-pack '$(id)'",
        "git-upload-pack $(id)",
        "git-upload-pack `id`",
        "git-upload-pack 'r' && id",
        "git-upload-pack 'r' | id",
        "info; id",
        "git upload-pack 'r'",
        // Peers' verbs are not users'.
        "verify",
        "mirror-receive-pack 0 'r'",
    ];
    let before = snapshot(server.home());
    for cmd in commands {
        let out = alice.ssh(&server, cmd);
        let err = one_line_refusal(&out, &format!("{cmd:?}"));
        assert!(!err.contains("uid="), "{cmd:?} ran id: {err}");
        assert!(out.text().is_empty(), "{cmd:?} printed {:?}", out.text());
    }
    assert_unchanged(&before, &snapshot(server.home()));
    assert!(!touched.exists(), "--upload-pack option reached git");
    // Each refusal was logged as a decision.
    let log = server.log();
    assert!(
        log.matches("actor=alice").count() >= commands.len(),
        "{log}"
    );
    assert!(log.contains("decision=\"deny\""), "{log}");
}

#[test]
fn hostile_repo_names_are_refused_for_read_and_write() {
    let alice = Client::new("alice");
    let server = server_with(&[&alice]);
    // A symlink planted inside the store that points outside it must not be followed.
    let outside = Scratch::new("outside");
    run(Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(outside.path().join("secret.git")))
    .ok();
    std::os::unix::fs::symlink(
        outside.path().join("secret.git"),
        server.home().join("repositories/escape.git"),
    )
    .unwrap();
    let long = "a".repeat(5000);
    let names = [
        "../x",
        "a/../../x",
        "/etc",
        "//etc",
        "-x",
        "a//b",
        "r.git/config",
        "~root/x",
        "escape",
        ".",
        "..",
        long.as_str(),
    ];
    let before = snapshot(server.home());
    let outside_before = snapshot(outside.path());
    for verb in ["git-upload-pack", "git-receive-pack"] {
        for name in names {
            let out = alice.ssh(&server, &format!("{verb} '{name}'"));
            let shown: String = name.chars().take(20).collect();
            let err = one_line_refusal(&out, &format!("{verb} {shown}"));
            assert!(err.len() < 300, "message too long: {}", err.len());
        }
    }
    assert_unchanged(&before, &snapshot(server.home()));
    // A real push through the planted symlink is refused too.
    alice.init_repo("w");
    alice
        .git_in("w", &["push", &server.url("escape"), "main"])
        .fails_with("FATAL: escape: no such repo, or alice may not read it");
    assert_unchanged(&outside_before, &snapshot(outside.path()));
    assert!(
        !outside.path().join("secret.git/refs/heads/main").exists(),
        "a push went through the symlink"
    );
}

/// A shared library that, loaded into any process, records that process's executable.
fn build_preload(dir: &Path, log: &Path) -> std::path::PathBuf {
    let src = dir.join("evil.c");
    fs::write(
        &src,
        format!(
            r#"
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = '\n';
    int fd = open("{}", O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) {{ write(fd, exe, n + 1); close(fd); }}
}}
"#,
            log.display()
        ),
    )
    .unwrap();
    let so = dir.join("evil.so");
    let out = run(Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src));
    assert!(
        out.status.success(),
        "cc is needed for this test (apt-get install -y gcc): {}",
        out.err()
    );
    so
}

#[test]
fn client_environment_does_not_reach_git() {
    let alice = Client::new("alice");
    let server = server_with(&[&alice]);
    alice.init_repo("w");
    alice
        .git_in("w", &["push", "-q", &server.url("r"), "main"])
        .ok();

    let trap = Scratch::new("trap");
    fs::set_permissions(
        trap.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let loaded = trap.path().join("loaded-into");
    let so = build_preload(trap.path(), &loaded);
    // If GIT_CONFIG_PARAMETERS reached upload-pack, it would run this instead of pack-objects.
    let hook_marker = trap.path().join("hook-ran");
    let hook = trap.path().join("hook.sh");
    fs::write(
        &hook,
        format!("#!/bin/sh\ntouch {}\nexec \"$@\"\n", hook_marker.display()),
    )
    .unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // If GIT_DIR reached git, it would serve this other repo.
    let decoy = trap.path().join("decoy.git");
    run(Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&decoy))
    .ok();

    // ssh reads SetEnv from a config file, where the value's quotes survive intact.
    let ssh_config = trap.path().join("ssh_config");
    fs::write(
        &ssh_config,
        format!(
            "SetEnv LD_PRELOAD={} GIT_DIR=/etc GIT_NAMESPACE=trap GIT_CONFIG_PARAMETERS=\"'uploadpack.packobjectshook'='{}'\"\n",
            so.display(),
            hook.display()
        ),
    )
    .unwrap();
    let ssh_env = alice
        .ssh_command()
        .replace("-F /dev/null", &format!("-F {}", ssh_config.display()));
    let before = snapshot(server.home());
    let out = alice.git_env(
        ".",
        &["clone", "-q", &server.url("r"), "c"],
        &[("GIT_SSH_COMMAND", ssh_env.as_str())],
    );
    out.ok();
    assert!(
        alice.dir.path().join("c/README").exists(),
        "cloned the wrong repo"
    );
    assert!(!hook_marker.exists(), "GIT_CONFIG_PARAMETERS reached git");
    let processes = fs::read_to_string(&loaded).unwrap_or_default();
    // The variables did reach the server (sshd passed them, so the test means something)...
    assert!(
        processes.lines().any(|p| p.ends_with("/gitmirror")),
        "LD_PRELOAD never reached the server: {processes:?}"
    );
    // ...but no git process ran with them.
    assert!(
        !processes
            .lines()
            .any(|p| p.ends_with("/git") || p.contains("/git-core/")),
        "LD_PRELOAD reached git: {processes:?}"
    );
    assert_unchanged(&before, &snapshot(server.home()));
}

#[test]
fn hostile_keys_and_names_are_refused_and_change_nothing() {
    let alice = Client::new("alice");
    let server = server_with(&[&alice]);
    let good = fs::read_to_string(&alice.key.public).unwrap();
    let good = good.trim();
    let other = Client::new("other");
    let other_key = fs::read_to_string(&other.key.public).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "bob",
            format!("{good}\n{}", other_key.trim()),
            "exactly one line",
        ),
        ("bob", format!("no-pty {}", other_key.trim()), "options"),
        (
            "bob",
            format!("command=\"/bin/sh\" {}", other_key.trim()),
            "options",
        ),
        ("bob", "ssh-ed25519 AAAA-not-base64".to_string(), "base64"),
        ("bob", String::new(), "no key"),
        ("a;b", other_key.clone(), "bad name"),
        ("a b", other_key.clone(), "bad name"),
        ("-x", other_key.clone(), "bad name"),
        ("carl", good.to_string(), "already belongs to user alice"),
    ];
    let keyfile = server.sshd_dir.path().join("hostile.pub");
    let before = snapshot(server.home());
    for (name, text, needle) in &cases {
        fs::write(&keyfile, text).unwrap();
        // `--` so that "-x" reaches gitmirror's own name check rather than the option parser.
        let out = server.gitmirror(&["add-user", "--", name, keyfile.to_str().unwrap()]);
        let err = out.fails_with(needle);
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err:?}");
        assert!(err.starts_with("gitmirror: "), "{err:?}");
    }
    assert_unchanged(&before, &snapshot(server.home()));
}
