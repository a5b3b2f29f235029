//! Repos deleted, restored and renamed across three servers, each its own account behind its
//! own sshd: the master's command moves its copy and the daemon carries the same operation to
//! each slave, durably (a slave that is down gets it when it returns); compile neither
//! recreates a deleted repo nor leaves a renamed one's rules behind; unsafe requests are
//! refused and change nothing.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use gitmirror_testkit::*;

const RULES: &str = r#"
[repos."@all"]
mirror.master = "server1"
mirror.slaves = ["server2", "server3"]

[repos.gitmirror-admin]
"RW+" = ["alice"]

[repos.testing]
"RW+" = ["alice"]
R = ["bob"]

[repos.tools]
"RW+" = ["alice"]
"#;

struct World {
    cluster: Cluster,
    alice: Client,
    bob: Client,
}

const ALL: [&str; 3] = ["server1", "server2", "server3"];
const SLAVES: [&str; 2] = ["server2", "server3"];

/// Three servers, `testing` and `tools` pushed to server1 and mirrored to both slaves.
fn world() -> World {
    let cluster = Cluster::new(&ALL);
    let alice = Client::new("alice");
    let bob = Client::new("bob");
    cluster.add_user(&alice);
    cluster.add_user(&bob);
    cluster.set_rules(RULES);
    let w = World {
        cluster,
        alice,
        bob,
    };
    for repo in ["testing", "tools"] {
        w.alice.init_repo(repo);
        w.alice.commit(repo, "a");
        let url = w.s("server1").url(repo);
        w.alice.git_in(repo, &["push", url.as_str(), "main"]).ok();
        w.cluster.wait_in_sync(repo, "server1", &SLAVES);
        // Confirmed too: a delete is refused while a mirror push is still pending, and the
        // slave can hold the refs a moment before the master has recorded its answer.
        for slave in SLAVES {
            wait_for("the push recorded", Duration::from_secs(30), || {
                w.s("server1").slave_status(repo, slave)["state"] == "in sync"
            });
        }
    }
    w
}

impl World {
    fn s(&self, name: &str) -> &Server {
        self.cluster.server(name)
    }

    fn trash(&self, server: &str) -> String {
        self.s(server).gitmirror(&["trash", "list"]).ok()
    }

    /// `server` cut off from server1 (the master's daemon stopped, so that no connection from
    /// before the cut survives it).
    fn cut_off(&self, server: &str) {
        self.s(server).cut_off_from(&["server1"]);
        self.s("server1").stop_daemon();
    }

    /// Ends [`Self::cut_off`]; the master's next daemon connects afresh.
    fn heal(&self, server: &str) {
        self.s(server).heal();
        self.s("server1").stop_daemon();
    }

    fn wait_gone(&self, server: &str, repo: &str) {
        let s = self.s(server);
        let start = std::time::Instant::now();
        while s.repo_path(repo).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{repo} never left {server}; server1's log:\n{}",
                self.s("server1").log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Asserts success; returns stdout and stderr.
fn done(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", text(&out));
    text(&out)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The trash entry named in `deleted REPO: in the trash as ENTRY...`.
fn entry_of(t: &str) -> String {
    t.split("in the trash as ")
        .nth(1)
        .and_then(|rest| rest.split([';', '\n']).next())
        .unwrap_or_else(|| panic!("no trash entry in: {t}"))
        .trim()
        .to_string()
}

/// The first entry of `repo` in a `trash list`.
fn entry_of_list(list: &str, repo: &str) -> String {
    list.lines()
        .filter_map(|l| l.split('\t').next())
        .find(|e| e.starts_with(&format!("{repo}-")))
        .unwrap_or_else(|| panic!("no entry of {repo} in: {list}"))
        .to_string()
}

fn refs_of(path: &Path) -> String {
    let out = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(path)
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn delete_reaches_every_slave_compile_keeps_it_deleted_and_restore_brings_it_back() {
    let w = world();
    let before = w.s("server1").refs("testing");
    let before_refs = refs_of(&w.s("server1").repo_path("testing"));
    let out = done(w.s("server1").gitmirror(&["delete", "testing"]));
    let entry = entry_of(&out);
    assert!(out.contains("queued for server2, server3"), "{out}");
    for s in ALL {
        w.wait_gone(s, "testing");
        // Into the trash under the same name everywhere, with its content.
        let trashed = w
            .s(s)
            .home()
            .join(format!("repositories/.trash/{entry}.git"));
        wait_for(
            &format!("{entry} in {s}'s trash"),
            Duration::from_secs(30),
            || trashed.join("HEAD").exists(),
        );
        assert_eq!(refs_of(&trashed), before_refs, "{s}");
        assert!(w.trash(s).contains(&entry), "{s}: {}", w.trash(s));
    }
    // Users see it gone; the other repo is untouched.
    let clone = w.bob.clone(w.s("server2"), "testing", "gone");
    assert!(!clone.status.success());
    assert_eq!(w.s("server1").refs("tools"), w.s("server2").refs("tools"));
    // repos.toml still names it: compile on any server does not recreate it, and says so.
    for s in ALL {
        let out = done(w.s(s).gitmirror(&["compile"]));
        assert!(
            out.contains("testing: deleted (in the trash as"),
            "{s}: {out}"
        );
        assert!(!w.s(s).repo_path("testing").exists(), "{s} recreated it");
    }
    // Restored on the master: back everywhere, with the same refs.
    let out = done(w.s("server1").gitmirror(&["trash", "restore", &entry]));
    assert!(out.contains("restored"), "{out}");
    w.cluster.wait_in_sync("testing", "server1", &SLAVES);
    for s in ALL {
        assert_eq!(w.s(s).refs("testing"), before, "{s}");
        assert!(!w.trash(s).contains(&entry), "{s}: {}", w.trash(s));
    }
    // And it takes pushes and mirrors them again.
    w.alice.commit("testing", "b");
    let url = w.s("server1").url("testing");
    w.alice
        .git_in("testing", &["push", url.as_str(), "main"])
        .ok();
    w.cluster.wait_in_sync("testing", "server1", &SLAVES);
}

#[test]
fn rename_moves_every_copy_and_the_rules_follow_it() {
    let w = world();
    let before = w.s("server1").refs("tools");
    let out = done(w.s("server1").gitmirror(&["rename", "tools", "team/tools"]));
    assert!(out.contains("renamed tools to team/tools"), "{out}");
    for s in ALL {
        w.wait_gone(s, "tools");
        wait_for(
            &format!("team/tools on {s}"),
            Duration::from_secs(30),
            || w.s(s).repo_path("team/tools").exists(),
        );
        assert_eq!(w.s(s).refs("team/tools"), before, "{s}");
    }
    // The rules that named tools apply to team/tools: alice pushes to it, and the push
    // reaches the slaves under the new name.
    let url = w.s("server1").url("team/tools");
    w.alice.commit("tools", "b");
    w.alice
        .git_in("tools", &["push", url.as_str(), "main"])
        .ok();
    w.cluster.wait_in_sync("team/tools", "server1", &SLAVES);
    // A compile says what to edit, and creates no empty tools.
    let out = done(w.s("server2").gitmirror(&["compile"]));
    assert!(out.contains("tools: renamed to team/tools"), "{out}");
    assert!(!w.s("server2").repo_path("tools").exists());
    // Once repos.toml names the new name, the note is gone.
    let fixed = RULES.replace("[repos.tools]", "[repos.\"team/tools\"]");
    w.cluster.set_rules(&fixed);
    let out = done(w.s("server1").gitmirror(&["compile"]));
    assert!(!out.contains("renamed"), "{out}");
    // Renamed again and then deleted: nothing comes back under any of its names, and the
    // other repos are untouched.
    done(w.s("server1").gitmirror(&["rename", "team/tools", "t2"]));
    let out = done(w.s("server1").gitmirror(&["delete", "t2"]));
    let entry = entry_of(&out);
    for s in ALL {
        w.wait_gone(s, "team/tools");
        let trashed = w
            .s(s)
            .home()
            .join(format!("repositories/.trash/{entry}.git"));
        wait_for(&format!("{entry} on {s}"), Duration::from_secs(30), || {
            trashed.join("HEAD").exists()
        });
        done(w.s(s).gitmirror(&["compile"]));
        for gone in ["tools", "team/tools", "t2"] {
            assert!(!w.s(s).repo_path(gone).exists(), "{s} recreated {gone}");
        }
        assert!(w.s(s).repo_path("testing").exists());
    }
    done(
        w.s("server1")
            .gitmirror(&["trash", "restore", &entry, "--as", "team/tools"]),
    );
    w.cluster.wait_in_sync("team/tools", "server1", &SLAVES);
    // Taking its table out of repos.toml deletes nothing, anywhere.
    let without = fixed.replace("[repos.\"team/tools\"]\n\"RW+\" = [\"alice\"]\n", "");
    assert!(!without.contains("team/tools"), "{without}");
    w.cluster.set_rules(&without);
    for s in ALL {
        assert!(w.s(s).repo_path("team/tools").exists(), "{s}");
        assert_eq!(w.s(s).refs("team/tools"), w.s("server1").refs("team/tools"));
    }
}

#[test]
fn a_slave_that_was_down_gets_the_delete_when_it_returns() {
    let w = world();
    w.cut_off("server3");
    let out = done(w.s("server1").gitmirror(&["delete", "testing"]));
    let entry = entry_of(&out);
    w.wait_gone("server2", "testing");
    // server1 keeps the operation for server3 and says why it is not there yet.
    wait_for(
        "server1's trash list to show server3's failure",
        Duration::from_secs(30),
        || {
            let t = w.trash("server1");
            t.contains("not yet on server3: ") && !t.contains("not yet on server3: not tried yet")
        },
    );
    assert!(w.s("server3").repo_path("testing").exists());
    let status = w.s("server1").gitmirror(&["status"]);
    assert!(
        text(&status).contains(": delete testing (into the trash as")
            && text(&status).contains("not yet applied on server3")
            && text(&status).contains(" attempts, last: "),
        "{}",
        text(&status)
    );
    // Back, with the master's daemon restarted: the operation was on disk, and is sent.
    w.heal("server3");
    w.s("server1").gitmirror(&["request-push", "tools"]).ok();
    w.wait_gone("server3", "testing");
    assert!(w.trash("server3").contains(&entry));
    wait_for(
        "server1 to have nothing owed",
        Duration::from_secs(30),
        || !w.trash("server1").contains("not yet on"),
    );
}

#[test]
fn unsafe_requests_are_refused_and_change_nothing() {
    let w = world();
    let s1 = w.s("server1");
    let before: Vec<_> = ALL
        .iter()
        .map(|s| snapshot(&w.s(s).home().join("repositories")))
        .collect();
    let refused = |args: &[&str], why: &str| {
        let out = s1.gitmirror(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text(&out).contains(why), "{args:?}: {}", text(&out));
        assert_eq!(text(&out).trim().lines().count(), 1, "{}", text(&out));
    };
    refused(&["rename", "tools", "testing"], "testing exists already");
    refused(&["rename", "tools", "../x"], "bad repo name");
    refused(&["delete", "nothing"], "no repo nothing here");
    refused(&["delete", "gitmirror-admin"], "cannot be deleted");
    refused(&["trash", "restore", "testing"], "not a trash entry");
    refused(&["trash", "purge", "--older-than", "soon"], "--older-than");
    // Not the master: a slave refuses to delete its copy, naming the master.
    let out = w.s("server2").gitmirror(&["delete", "testing"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("mastered by server1"), "{}", text(&out));
    // A peer that is not the master cannot make a slave delete: server3 asks server2.
    let out = w.s("server3").ssh_as_peer(
        w.s("server2"),
        "store-op 0 trash testing testing-20261202T101500Z",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refuses to delete testing"),
        "{}",
        text(&out)
    );
    // Users: only administrators may delete over ssh.
    let out = w.bob.ssh(s1, "delete tools");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("bob may not delete repos"),
        "{}",
        text(&out)
    );
    for (i, s) in ALL.iter().enumerate() {
        let after = snapshot(&w.s(s).home().join("repositories"));
        assert_unchanged(&before[i], &after);
    }
    // Nor bring back a name that left, by naming something it lacks: server2's record of
    // the deleted testing stays, and its compile does not recreate it.
    done(w.s("server1").gitmirror(&["delete", "testing"]));
    w.wait_gone("server2", "testing");
    let out = w
        .s("server3")
        .ssh_as_peer(w.s("server2"), "store-op 0 rename nothing testing");
    assert!(text(&out).contains("nothing to do here"), "{}", text(&out));
    done(w.s("server2").gitmirror(&["compile"]));
    assert!(!w.s("server2").repo_path("testing").exists());
    // An administrator (RW+ on gitmirror-admin) may delete over ssh.
    done(w.s("server1").gitmirror(&[
        "trash",
        "restore",
        &entry_of_list(&w.trash("server1"), "testing"),
    ]));
    w.cluster.wait_in_sync("testing", "server1", &SLAVES);
    let out = w.alice.ssh(s1, "delete testing");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("deleted testing"), "{}", text(&out));
    w.wait_gone("server2", "testing");
    // A pending push to a slave blocks a delete unless forced.
    w.cut_off("server3");
    w.alice.commit("tools", "c");
    let url = w.s("server1").url("tools");
    w.alice
        .git_in("tools", &["push", url.as_str(), "main"])
        .ok();
    let out = w.s("server1").gitmirror(&["delete", "tools"]);
    assert!(!out.status.success());
    // (server2 may still be taking the push too.)
    let words = text(&out);
    assert!(
        words.contains("has mirror pushes pending for") && words.contains("server3"),
        "{words}"
    );
    assert!(w.s("server1").repo_path("tools").exists());
    // Forced, the delete goes ahead; server1's trash keeps the commit server3 never got, and
    // server3 trashes its older copy when it is back.
    let head = w.s("server1").refs("tools");
    let out = done(w.s("server1").gitmirror(&["delete", "tools", "--force"]));
    let entry = entry_of(&out);
    let kept = w
        .s("server1")
        .home()
        .join(format!("repositories/.trash/{entry}.git"));
    assert!(
        head.contains(&refs_of(&kept)),
        "{head} vs {}",
        refs_of(&kept)
    );
    w.wait_gone("server2", "tools");
    w.heal("server3");
    w.s("server1")
        .gitmirror(&["request-push", "gitmirror-admin"]);
    w.wait_gone("server3", "tools");
}

#[test]
fn a_slave_away_for_several_operations_applies_them_in_order_when_it_returns() {
    let w = world();
    let before = w.s("server1").refs("tools");
    w.cut_off("server3");
    // delete, restore, rename: each depends on the one before.
    let out = done(w.s("server1").gitmirror(&["delete", "tools"]));
    let entry = entry_of(&out);
    done(w.s("server1").gitmirror(&["trash", "restore", &entry]));
    done(w.s("server1").gitmirror(&["rename", "tools", "team/tools"]));
    w.cluster
        .wait_in_sync("team/tools", "server1", &["server2"]);
    // Meanwhile server3 compiles a repos.toml that names the new name already (an admin push
    // that reached it first): an empty team/tools appears there.
    w.s("server3")
        .set_rules(&RULES.replace("[repos.tools]", "[repos.\"team/tools\"]"));
    assert!(w.s("server3").repo_path("team/tools").exists());
    w.heal("server3");
    w.s("server1").gitmirror(&["request-push", "testing"]).ok();
    w.wait_gone("server3", "tools");
    w.cluster
        .wait_in_sync("team/tools", "server1", &["server3"]);
    assert_eq!(w.s("server3").refs("team/tools"), before);
    wait_for("nothing owed", Duration::from_secs(30), || {
        w.s("server1")
            .gitmirror(&["ops"])
            .ok()
            .contains("no operations owed")
    });
}

#[test]
fn purge_empties_the_trash_everywhere() {
    let w = world();
    let out = done(w.s("server1").gitmirror(&["delete", "tools"]));
    let entry = entry_of(&out);
    for s in SLAVES {
        wait_for(&format!("{entry} on {s}"), Duration::from_secs(30), || {
            w.trash(s).contains(&entry)
        });
    }
    // Not old enough: nothing goes.
    let out = done(
        w.s("server1")
            .gitmirror(&["trash", "purge", "--older-than", "1d"]),
    );
    assert!(out.contains("purged 0 trash entries"), "{out}");
    assert!(w.trash("server1").contains(&entry));
    let out = done(
        w.s("server1")
            .gitmirror(&["trash", "purge", "--older-than", "0s"]),
    );
    assert!(out.contains(&format!("purged {entry}")), "{out}");
    for s in ALL {
        wait_for(
            &format!("{entry} purged on {s}"),
            Duration::from_secs(30),
            || !w.trash(s).contains(&entry),
        );
        assert!(
            !w.s(s)
                .home()
                .join(format!("repositories/.trash/{entry}.git"))
                .exists()
        );
    }
}
